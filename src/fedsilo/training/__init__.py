"""Local training and evaluation (one screen each), and what they share.

If you look for one institution's whole round (attacks, FedProx, SCAFFOLD, DP-SGD, clipping,
the reply), it is ``round.py``; the loops it calls are here; DP-SGD's loop is
``fedsilo.privacy.dpsgd``; the frozen-prefix cache is ``features.py``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsilo.config import TrainSection
from fedsilo.metrics import scores_from_confusion
from fedsilo.models.scoped import ScopedModel
from fedsilo.training.features import FeatureSource


@dataclass
class TrainStats:
    loss: float  # mean loss over the last epoch
    first_loss: float  # mean loss over the first epoch
    steps: int
    examples: int


@dataclass
class EvalStats:
    loss: float
    accuracy: float
    macro_f1: float
    confusion: np.ndarray  # [true, predicted] counts
    examples: int


def round_seed(scenario_seed: int, server_round: int, owner: str) -> int:
    """The seed of ``owner``'s training in ``server_round`` (dropout masks, batch order,
    DP noise): the same for every run of a scenario, different per round and institution."""
    return zlib.crc32(f"{scenario_seed}:{server_round}:{owner}".encode())


def make_optimizer(params: Iterable[torch.nn.Parameter], t: TrainSection
                   ) -> torch.optim.Optimizer:
    """The local optimiser ``train.optimizer`` over ``params`` (plain and DP training)."""
    params = list(params)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)


def local_train(model: ScopedModel, source: FeatureSource, labels: np.ndarray,
                t: TrainSection, seed: int, device: torch.device, prox_mu: float = 0.0,
                correction: dict[str, torch.Tensor] | None = None) -> TrainStats:
    """Train ``model``'s trainable scope in place for ``t.local_epochs`` local passes.

    ``prox_mu`` > 0 adds FedProx's proximal term mu/2 * ||w - w_global||^2, with w_global
    the weights at the start of the call. ``correction`` (SCAFFOLD's c - c_i, by parameter
    name) is added to every gradient before the step.
    """
    model.to(device)
    model.train_mode()
    named = model.trainable()
    params = list(named.values())
    anchor = [p.detach().clone() for p in params] if prox_mu > 0 else None
    corr = [correction[n].to(device) for n in named] if correction is not None else None
    opt = make_optimizer(params, t)
    torch.manual_seed(seed)  # dropout masks
    order_rng = np.random.default_rng(seed)  # batch order
    y_all = torch.as_tensor(labels, dtype=torch.long)
    epoch_losses, steps = [], 0
    for _ in range(t.local_epochs):
        perm = order_rng.permutation(len(source))
        total, count = 0.0, 0
        for start in range(0, len(perm), t.batch_size):
            idx = perm[start:start + t.batch_size]
            y = y_all[torch.as_tensor(idx)].to(device)
            loss = nn.functional.cross_entropy(model.logits(source.rows(idx)), y)
            objective = loss
            if anchor is not None:
                objective = loss + prox_mu / 2 * sum(
                    ((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
            opt.zero_grad(set_to_none=True)
            objective.backward()
            if corr is not None:
                for p, c in zip(params, corr, strict=True):
                    p.grad.add_(c)
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            steps += 1
        epoch_losses.append(total / max(count, 1))
    return TrainStats(loss=epoch_losses[-1], first_loss=epoch_losses[0], steps=steps,
                      examples=len(source))


@torch.no_grad()
def evaluate(model: ScopedModel, source: FeatureSource, labels: np.ndarray, num_labels: int,
             device: torch.device, batch_size: int = 128) -> EvalStats:
    """Loss, accuracy, macro-F1 and the confusion matrix of ``model`` on local data."""
    model.to(device).eval()
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    total = 0.0
    y_all = torch.as_tensor(labels, dtype=torch.long)
    for start in range(0, len(source), batch_size):
        idx = np.arange(start, min(start + batch_size, len(source)))
        logits = model.logits(source.rows(idx)).float().cpu()
        y = y_all[idx]
        total += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        np.add.at(confusion, (y.numpy(), logits.argmax(1).numpy()), 1)
    n = int(confusion.sum())
    acc, f1 = scores_from_confusion(confusion)
    return EvalStats(loss=total / max(n, 1), accuracy=acc, macro_f1=f1, confusion=confusion,
                     examples=n)
