"""Small stand-ins shared by unit tests."""

from __future__ import annotations

import torch


class LinearHead(torch.nn.Module):
    """A bias-free linear head with the interface the training loops expect of a model
    (trainable, train_mode, logits on a batch of pooled features)."""

    def __init__(self, d_in: int, num_labels: int):
        super().__init__()
        self.head = torch.nn.Linear(d_in, num_labels, bias=False)

    def trainable(self):
        return dict(self.named_parameters())

    def train_mode(self):
        self.train()

    def logits(self, batch):
        return self.head(batch.pooled)
