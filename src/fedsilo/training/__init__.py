"""Local training and evaluation (one screen each), and what they share.

If you look for one institution's whole round (attacks, FedProx, SCAFFOLD, DP-SGD, clipping,
the reply), it is ``round.py``; the loops it calls are here; DP-SGD's loop is
``fedsilo.privacy.dpsgd``; the frozen-prefix cache is ``features.py``.
"""

from __future__ import annotations

import math
import zlib
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
    examples: int  # the rows trained on
    best_epoch: int | None = None  # with a validation split: the local epoch kept (0: none)
    validation_loss: float | None = None  # and its loss on the validation split


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


def param_groups(model: ScopedModel, t: TrainSection) -> list[dict]:
    """The trainable weights by learning rate: the head at ``train.lr``; encoder layers
    (scopes top-k and full) at ``train.encoder_lr``; LoRA adapters at ``train.adapter_lr``.
    Scope head has one group."""
    head, encoder = [], []
    for name, p in model.trainable().items():
        (head if name.startswith("head.") else encoder).append(p)
    groups = [{"params": head, "lr": t.lr, "warmup": False}]
    if encoder:
        lr = t.adapter_lr if model.scope == "lora" else t.encoder_lr
        groups.append({"params": encoder, "lr": lr, "warmup": True})
    return groups


def make_optimizer(model: ScopedModel, t: TrainSection) -> torch.optim.Optimizer:
    """The local optimiser ``train.optimizer`` over ``model``'s trainable weights, one
    learning rate per group (plain and DP training)."""
    groups = param_groups(model, t)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)


def warmup(opt: torch.optim.Optimizer, t: TrainSection, steps: int
           ) -> torch.optim.lr_scheduler.LambdaLR:
    """Encoder and adapter learning rates rise linearly over the first ``train.warmup``
    share of the round's ``steps`` (each round starts a fresh optimiser, so its first
    steps have no moment estimates yet); the head's stays constant. Call ``step()``
    after every optimiser step."""
    ramp = _ramp(t, steps)

    def factor(g: dict):
        if not g["warmup"] or ramp == 0:
            return lambda step: 1.0
        return lambda step: min(1.0, (step + 1) / ramp)

    return torch.optim.lr_scheduler.LambdaLR(opt, [factor(g) for g in opt.param_groups])


def _ramp(t: TrainSection, steps: int) -> int:
    return max(1, math.ceil(t.warmup * steps)) if t.warmup > 0 else 0


def lr_sum(t: TrainSection, scope: str, name: str, steps: int) -> float:
    """The sum of the learning rates that weight ``name`` was stepped with over a round of
    ``steps`` local steps (SCAFFOLD's K * lr when every step has the same size)."""
    if name.startswith("head.") or scope == "head":
        return steps * t.lr
    lr = t.adapter_lr if scope == "lora" else t.encoder_lr
    ramp = _ramp(t, steps)
    return lr * sum(min(1.0, (i + 1) / ramp) if ramp else 1.0 for i in range(steps))


def holdout(n: int, share: float, seed: int) -> np.ndarray:
    """The rows of an institution's training split held out for validation: the same in
    every round (``seed`` names the institution, not the round), at least one row and
    never all of them; empty when ``share`` is 0."""
    if share <= 0 or n < 2:
        return np.zeros(0, dtype=np.int64)
    k = min(n - 1, max(1, int(share * n + 0.5)))  # (`round` here is the submodule)
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def trained_rows(s, name: str, n: int) -> np.ndarray:
    """The rows of institution ``name``'s ``n`` training examples its local training steps
    on: all of them, or all but the validation holdout when plain local training stops
    early (DP-SGD and SCAFFOLD never hold rows out)."""
    rows = np.arange(n)
    if s.train.stops_early(s.model.scope) and not s.privacy.dp and \
            s.strategy.name != "scaffold":
        rows = np.setdiff1d(rows, holdout(n, s.train.validation_share,
                                          round_seed(s.scenario.seed, 0, name)))
    return rows


def local_train(model: ScopedModel, source: FeatureSource, labels: np.ndarray,
                t: TrainSection, seed: int, device: torch.device, prox_mu: float = 0.0,
                correction: dict[str, torch.Tensor] | None = None,
                validation: np.ndarray | None = None,
                anchor_to: dict[str, np.ndarray] | None = None) -> TrainStats:
    """Train ``model``'s trainable scope in place for ``t.local_epochs`` local passes.

    ``prox_mu`` > 0 adds FedProx's proximal term mu/2 * ||w - w_global||^2, with w_global
    the weights at the start of the call, or ``anchor_to`` (arrays by name; Ditto pulls a
    personal model towards the shared one). ``correction`` (SCAFFOLD's c - c_i, by parameter
    name) is added to every gradient before the step. ``validation`` (row indices of
    ``source``) is held out of training: the loss on it is measured before the first
    epoch and after each one, training stops at the first epoch that does not lower it,
    and the weights of the best epoch (possibly the received ones) are kept.
    """
    model.to(device)
    model.train_mode()
    named = model.trainable()
    params = list(named.values())
    anchor = None
    if prox_mu > 0:
        anchor = [p.detach().clone() for p in params] if anchor_to is None else \
            [torch.as_tensor(np.asarray(anchor_to[n], dtype=np.float32)).to(device)
             for n in named]
    corr = [correction[n].to(device) for n in named] if correction is not None else None
    rows = np.arange(len(source))
    if validation is not None and len(validation):
        rows = np.setdiff1d(rows, validation)
    else:
        validation = None
    opt = make_optimizer(model, t)
    sched = warmup(opt, t, t.local_epochs * math.ceil(len(rows) / t.batch_size))
    torch.manual_seed(seed)  # dropout masks
    order_rng = np.random.default_rng(seed)  # batch order
    y_all = torch.as_tensor(labels, dtype=torch.long)
    best = None
    if validation is not None:
        best = (_loss_on(model, source, y_all, validation, device), 0,
                [p.detach().clone() for p in params])
        model.train_mode()
    epoch_losses, steps = [], 0
    for epoch in range(1, t.local_epochs + 1):
        perm = order_rng.permutation(len(source)) if validation is None else \
            order_rng.permutation(rows)
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
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            steps += 1
        epoch_losses.append(total / max(count, 1))
        if best is not None:
            val = _loss_on(model, source, y_all, validation, device)
            model.train_mode()
            if val >= best[0]:
                break  # no better than the best so far: stop, keep the best
            best = (val, epoch, [p.detach().clone() for p in params])
    kept = None
    if best is not None:
        with torch.no_grad():
            for p, b in zip(params, best[2], strict=True):
                p.copy_(b)
        kept = best[1]
    return TrainStats(loss=epoch_losses[-1], first_loss=epoch_losses[0], steps=steps,
                      examples=len(rows), best_epoch=kept,
                      validation_loss=None if best is None else best[0])


@torch.no_grad()
def _loss_on(model: ScopedModel, source: FeatureSource, y_all: torch.Tensor,
             idx: np.ndarray, device: torch.device, batch_size: int = 128) -> float:
    """Mean cross-entropy of ``model`` (in eval mode) on rows ``idx`` of ``source``."""
    model.eval()
    total = 0.0
    for start in range(0, len(idx), batch_size):
        part = idx[start:start + batch_size]
        logits = model.logits(source.rows(part)).float().cpu()
        total += float(nn.functional.cross_entropy(logits, y_all[torch.as_tensor(part)],
                                                   reduction="sum"))
    return total / len(idx)


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
