"""Backbone + head, and (de)serialising the shared part.

If you look for the trainable head, it is ``Head``; for the scopes (what trains and
travels) and the frozen prefix that can be cached, ``scoped.ScopedModel``; for where a
backbone comes from, ``backbone.resolve``.
"""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """The shared, trainable classifier on the backbone's pooled output."""

    def __init__(self, in_dim: int, num_labels: int, hidden: int = 0, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(in_dim, hidden) if hidden else None
        self.out = nn.Linear(hidden or in_dim, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        if self.hidden is not None:
            x = self.dropout(torch.relu(self.hidden(x)))
        return self.out(x)

