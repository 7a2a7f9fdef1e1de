"""Record-level differential privacy inside one institution: DP-SGD with honest accounting.

Each step samples every local training example independently with probability
q = train.batch_size / n (Poisson sampling, which the accounting assumes), clips each
example's gradient over the trainable scope to L2 norm ``privacy.max_grad_norm`` (C), sums,
adds Gaussian noise N(0, (sigma * C)^2) to every coordinate, and divides by the expected
batch size q * n. A round runs round(local_epochs / q) such steps. The privacy spent is
accounted with Renyi DP for the sampled Gaussian mechanism (Opacus' compute_rdp) over
every step the institution has taken in every round, at delta = ``privacy.delta`` (default
1 / (10 n), below 1/n).
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsilo.config import PrivacySection, TrainSection
from fedsilo.training import make_optimizer, warmup

MECHANISM = ("DP-SGD: Poisson sampling, per-example clipping, Gaussian noise "
             "(record level, per institution)")
# Integer orders only: there, Opacus' RDP of the sampled Gaussian and Google's
# dp_accounting agree to 1e-14; at fractional orders they differ by up to ~2%, and the
# integer-order bound is the conservative (larger) one.
ORDERS = [*range(2, 64), 80, 128, 256, 512]
ACCOUNTANT = ("RDP of the sampled Gaussian mechanism (Opacus compute_rdp), integer orders "
              "2-63, 80, 128, 256, 512")


def epsilon(noise_multiplier: float, q: float, steps: int, delta: float) -> float:
    """(epsilon at ``delta``) after ``steps`` sampled Gaussian steps."""
    if steps == 0:
        return 0.0
    compute_rdp, get_privacy_spent = _opacus_rdp()
    rdp = compute_rdp(q=q, noise_multiplier=noise_multiplier, steps=steps, orders=ORDERS)
    eps, _ = get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)
    return float(eps)


@functools.lru_cache(maxsize=1)
def _opacus_rdp():
    """Opacus' RDP functions. Importing opacus adds a handler to the root logger (a
    ``basicConfig``), which would print every library's debug log; it is taken off again."""
    root = logging.getLogger()
    before = list(root.handlers)
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
    return compute_rdp, get_privacy_spent


@functools.lru_cache(maxsize=256)  # asked again by each institution every round
def noise_for_target(target_epsilon: float, q: float, steps: int, delta: float) -> float:
    """The smallest noise multiplier (to 0.1%) whose epsilon after ``steps`` is <= target."""
    lo, hi = 0.05, 1.0
    while epsilon(hi, q, steps, delta) > target_epsilon:
        hi *= 2
        if hi > 1e4:
            raise ValueError(f"privacy.target_epsilon {target_epsilon} is out of reach")
    while hi - lo > 1e-3 * hi:
        mid = (lo + hi) / 2
        if epsilon(mid, q, steps, delta) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass
class DPPlan:
    """What one institution's DP-SGD does, fixed for the whole run."""

    noise_multiplier: float
    max_grad_norm: float
    sampling_rate: float
    steps_per_round: int
    delta: float
    personal_steps_per_round: int = 0  # personalize.method = 'ditto': the personal model's

    @property
    def all_steps_per_round(self) -> int:
        """Every DP-SGD step a round takes on the institution's records."""
        return self.steps_per_round + self.personal_steps_per_round

    def personal(self) -> DPPlan:
        """The plan of the personal model's training (same noise, sampling and clip)."""
        return DPPlan(self.noise_multiplier, self.max_grad_norm, self.sampling_rate,
                      self.personal_steps_per_round, self.delta)

    def epsilon_after(self, steps: int) -> float:
        return epsilon(self.noise_multiplier, self.sampling_rate, steps, self.delta)


def plan(p: PrivacySection, t: TrainSection, n: int, rounds: int,
         personal_epochs: int = 0) -> DPPlan:
    """The institution's plan: q from the batch size, sigma given or derived from the
    target epsilon over all its rounds, the personal model's steps (``personal_epochs``
    per round) included."""
    q = min(1.0, t.batch_size / n)
    steps = max(1, round(t.local_epochs / q))
    personal = max(1, round(personal_epochs / q)) if personal_epochs else 0
    delta = p.delta if p.delta > 0 else 1.0 / (10 * n)
    sigma = p.noise_multiplier
    if p.target_epsilon > 0:
        sigma = noise_for_target(p.target_epsilon, q, (steps + personal) * rounds, delta)
    return DPPlan(sigma, p.max_grad_norm, q, steps, delta, personal)


def dp_train(model, source, labels: np.ndarray, t: TrainSection, dp: DPPlan, seed: int,
             device: torch.device, clipped_sum=None, prox_mu: float = 0.0,
             anchor_to: dict[str, np.ndarray] | None = None) -> tuple[float, int]:
    """One round of DP-SGD on ``model``'s trainable scope; returns (mean loss, steps).
    ``prox_mu`` > 0 adds prox_mu * (w - anchor) to each privatised gradient (Ditto's pull
    towards ``anchor_to``: it reads no record, so it costs no privacy).

    Each step's per-example gradients come from one batched backward pass
    (``clipped_sum_batched``; ``clipped_sum_loop`` is the one-example-at-a-time
    reference)."""
    model.to(device)
    model.train_mode()
    named = model.trainable()
    params = list(named.values())
    opt = make_optimizer(model, t)
    sched = warmup(opt, t, dp.steps_per_round)
    anchor = [torch.as_tensor(np.asarray(anchor_to[k], dtype=np.float32)).to(device)
              for k in named] if prox_mu > 0 and anchor_to is not None else None
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) % (2**63))
    torch.manual_seed(seed)
    n = len(source)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    losses: list[float] = []
    with per_example_gradients(model) as batched:
        clip = clipped_sum or batched
        for _ in range(dp.steps_per_round):
            idx = np.flatnonzero(rng.random(n) < dp.sampling_rate)
            if len(idx):
                summed, step_losses = clip(model, params, source.rows(idx),
                                           y_all[torch.as_tensor(idx)].to(device),
                                           dp.max_grad_norm)
                losses.extend(step_losses)
            else:
                summed = [torch.zeros_like(p) for p in params]
            expected = dp.sampling_rate * n
            for i, (p, s) in enumerate(zip(params, summed, strict=True)):
                noise = torch.normal(0.0, dp.noise_multiplier * dp.max_grad_norm,
                                     size=p.shape, generator=gen).to(device)
                p.grad = (s + noise) / expected
                if anchor is not None:
                    p.grad.add_(prox_mu * (p.detach() - anchor[i]))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    return (float(np.mean(losses)) if losses else math.nan), dp.steps_per_round


class per_example_gradients:  # noqa: N801 - a context manager, used as a function
    """Within the block, ``model`` records each example's gradient in one backward pass
    (Opacus' GradSampleModule hooks); the block yields the clipping function that uses
    them. Hooks and per-example gradients are removed on leaving. Dropout, where the scope
    trains with it, draws an independent mask for every example, as it does one example
    at a time."""

    def __init__(self, model):
        self.model = model
        self.gsm = None

    def __enter__(self):
        GradSampleModule = _opacus_grad_sample()  # noqa: N806 - Opacus' class
        self.gsm = GradSampleModule(self.model, batch_first=True, loss_reduction="sum")
        return self.clipped_sum

    def __exit__(self, *exc) -> None:
        self.gsm._close()
        for p in self.model.parameters():
            p.grad_sample = None

    def clipped_sum(self, model, params, batch, y: torch.Tensor, max_norm: float):
        return clipped_sum_batched(self.gsm, params, batch, y, max_norm)


def clipped_sum_batched(gsm, params, batch, y: torch.Tensor, max_norm: float
                        ) -> tuple[list[torch.Tensor], list[float]]:
    """The sum over the batch of each example's gradient clipped to L2 norm
    ``max_norm`` (over all trainable arrays), from one forward and backward pass; and
    the examples' losses."""
    per = nn.functional.cross_entropy(gsm(batch), y, reduction="none")
    with warnings.catch_warnings():  # the frozen encoder's inputs need no gradient: fine
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        per.sum().backward()
    grads = [p.grad_sample for p in params]
    b = per.shape[0]
    norms = torch.sqrt(sum((g.reshape(b, -1).float() ** 2).sum(1) for g in grads))
    factor = torch.clamp(max_norm / (norms + 1e-12), max=1.0)
    summed = [torch.einsum("b,b...->...", factor.to(g.dtype), g) for g in grads]
    for p in params:
        p.grad_sample = None
        p.grad = None
    return summed, per.detach().tolist()


def clipped_sum_loop(model, params, batch_rows, y: torch.Tensor, max_norm: float
                     ) -> tuple[list[torch.Tensor], list[float]]:
    """The reference: one example at a time (a backward pass each)."""
    from fedsilo.models.scoped import Batch

    summed = [torch.zeros_like(p) for p in params]
    losses = []
    for i in range(len(y)):
        row = _row(batch_rows, i, Batch)
        loss = nn.functional.cross_entropy(model.logits(row), y[i:i + 1])
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
        scale = min(1.0, max_norm / (float(norm) + 1e-12))
        for s, g in zip(summed, grads, strict=True):
            s.add_(g, alpha=scale)
        losses.append(float(loss.detach()))
    return summed, losses


def _row(batch, i: int, cls):
    """Example ``i`` of a batch, as a batch of one."""
    if batch.texts is not None:
        return cls(texts=[batch.texts[i]])
    if batch.pooled is not None:
        return cls(pooled=batch.pooled[i:i + 1])
    return cls(hidden=batch.hidden[i:i + 1], mask=batch.mask[i:i + 1])


@functools.lru_cache(maxsize=1)
def _opacus_grad_sample():
    """Opacus' GradSampleModule (its import adds a root log handler: removed again)."""
    root = logging.getLogger()
    before = list(root.handlers)
    from opacus import GradSampleModule

    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
    return GradSampleModule
