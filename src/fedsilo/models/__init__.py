"""Backbone + head, and (de)serialising the shared part.

If you look for the trainable head, it is ``Head``; for turning texts into pooled
features through the frozen backbone, ``encode``; for what travels between server and
clients, ``head_to_arrays`` / ``arrays_to_head``.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from torch import nn

from fedsilo.config import ModelSection


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


def build_head(m: ModelSection, in_dim: int, num_labels: int, seed: int) -> Head:
    """A freshly initialised head; the same seed gives the same weights everywhere."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    head = Head(in_dim, num_labels, m.head_hidden, m.dropout)
    torch.random.set_rng_state(gen_state)
    return head


def head_to_arrays(head: nn.Module) -> ArrayRecord:
    """The head's weights as the ArrayRecord that travels (and nothing else)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v.detach().cpu().numpy()))
                        for k, v in head.state_dict().items()})


def arrays_to_head(arrays: ArrayRecord, head: nn.Module) -> None:
    """Load received weights into ``head``; shapes and names must match exactly."""
    state = {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in arrays.items()}
    head.load_state_dict(state, strict=True)


def arrays_nbytes(arrays: ArrayRecord) -> int:
    """Payload bytes of an ArrayRecord (the arrays' data, without framing)."""
    return int(sum(v.numpy().nbytes for v in arrays.values()))


@torch.no_grad()
def encode(texts: list[str] | tuple[str, ...], tokenizer, backbone: nn.Module, max_length: int,
           pooling: str, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """Pooled outputs of the frozen backbone for ``texts``: float32 (len(texts), hidden)."""
    outs = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start:start + batch_size])
        tok = tokenizer(batch, padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)
        hidden = backbone(input_ids=tok["input_ids"],
                          attention_mask=tok["attention_mask"]).last_hidden_state
        if pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        outs.append(pooled.float().cpu())
    if not outs:
        return torch.zeros((0, backbone.config.hidden_size))
    return torch.cat(outs)
