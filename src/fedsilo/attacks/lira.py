"""LiRA, the likelihood-ratio membership attack (Carlini et al. 2022, "Membership
Inference Attacks From First Principles"), against a run's final shared model.

The attacker trains shadow federations the way the run trained (FedAvg over the same
institutions, the run's local training, DP-SGD when the run used it, from the same
initial weights), each on a random half of every institution's records (its training and
held-out records pooled). For each record it then knows how a model's confidence on it
(the logit-scaled probability of its label) is distributed when the record was trained
on (IN) and when it was not (OUT), and asks which the target model's confidence fits
better. Online LiRA compares the two Gaussians; offline LiRA uses only the OUT shadows
(no shadow needs the record). Both use one variance over all records (the fixed-variance
variant, reliable with few shadows).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedsilo.attacks.membership import THREAT_OUTSIDER, membership
from fedsilo.training.features import FeatureSource, Subset

if TYPE_CHECKING:
    from fedsilo.attacks.target import Target


@torch.no_grad()
def confidence(model, source: FeatureSource, labels: np.ndarray, device,
               batch_size: int = 256) -> np.ndarray:
    """Logit-scaled confidence log(p_y / (1 - p_y)) per record, computed stably."""
    model.to(device).eval()
    out = []
    for start in range(0, len(source), batch_size):
        idx = np.arange(start, min(start + batch_size, len(source)))
        z = model.logits(source.rows(idx)).double().cpu()
        y = torch.as_tensor(labels[idx], dtype=torch.long)
        right = z.gather(1, y[:, None]).squeeze(1)
        others = z.scatter(1, y[:, None], float("-inf")).logsumexp(1)
        out.append((right - others).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def train_shadow(s, model, pools: list[tuple[FeatureSource, np.ndarray]],
                 masks: list[np.ndarray], init: dict, shadow: int, device,
                 on_round=None) -> dict:
    """One shadow federation: ``s.scenario.rounds`` rounds of FedAvg, institution ``i``
    training on the rows ``masks[i]`` of its pool; the final arrays."""
    from fedsilo.privacy import dpsgd
    from fedsilo.training import holdout, local_train, round_seed

    shared = {k: np.asarray(v, dtype=np.float64) for k, v in init.items()}
    for rnd in range(1, s.scenario.rounds + 1):
        total, weight = None, 0
        for i, ((source, labels), mask) in enumerate(zip(pools, masks, strict=True)):
            idx = np.flatnonzero(mask)
            if not len(idx):
                continue
            model.set_arrays({k: v.astype(np.float32) for k, v in shared.items()})
            sub, y = Subset(source, idx), labels[idx]
            seed = round_seed(s.scenario.seed + 7919 * (shadow + 1), rnd, f"shadow-{i}")
            fixed = round_seed(s.scenario.seed + 7919 * (shadow + 1), 0, f"shadow-{i}")
            if s.privacy.dp:
                plan = dpsgd.plan(s.privacy, s.train, len(idx), s.scenario.rounds)
                dpsgd.dp_train(model, sub, y, s.train, plan, seed, device)
            else:
                val = holdout(len(idx), s.train.validation_share, fixed) \
                    if s.train.stops_early(s.model.scope) and s.strategy.name != "scaffold" \
                    else None
                local_train(model, sub, y, s.train, seed, device, validation=val)
            got = model.get_arrays()
            n = len(idx)
            total = {k: n * got[k].astype(np.float64) for k in got} if total is None else \
                {k: total[k] + n * got[k].astype(np.float64) for k in total}
            weight += n
        shared = {k: v / weight for k, v in total.items()}
        if on_round is not None:
            on_round(rnd)
    return {k: v.astype(np.float32) for k, v in shared.items()}


def scores(target: np.ndarray, shadow_conf: np.ndarray, inside: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """(online, offline) LiRA scores per record (higher: more likely a member).

    ``target``: the target model's confidence per record (N); ``shadow_conf``: each
    shadow's (K x N); ``inside``: whether the record was in the shadow's training half
    (K x N). A record no shadow trained on (or every shadow did) borrows the mean IN-OUT
    shift of the others."""
    from scipy.stats import norm

    n_in, n_out = inside.sum(0), (~inside).sum(0)
    mu_in = np.where(n_in > 0, (shadow_conf * inside).sum(0) / np.maximum(n_in, 1), np.nan)
    mu_out = np.where(n_out > 0, (shadow_conf * ~inside).sum(0) / np.maximum(n_out, 1),
                      np.nan)
    both = ~np.isnan(mu_in) & ~np.isnan(mu_out)
    shift = float(np.mean(mu_in[both] - mu_out[both])) if both.any() else 0.0
    mu_in = np.where(np.isnan(mu_in), mu_out + shift, mu_in)
    mu_out = np.where(np.isnan(mu_out), mu_in - shift, mu_out)
    sd_in = _pooled_sd(shadow_conf - mu_in, inside)
    sd_out = _pooled_sd(shadow_conf - mu_out, ~inside)
    online = norm.logpdf(target, mu_in, sd_in) - norm.logpdf(target, mu_out, sd_out)
    offline = norm.logcdf((target - mu_out) / sd_out)
    return online, offline


def _pooled_sd(residuals: np.ndarray, which: np.ndarray) -> float:
    """One standard deviation for all records: the residuals about each record's own
    mean, with a degree of freedom taken per record that has any."""
    dof = int(which.sum()) - int(which.any(0).sum())
    if dof <= 0:
        return 1.0
    return float(max(np.sqrt((residuals[which] ** 2).sum() / dof), 1e-6))


def run_shadows(s, model, pools, init: dict, count: int, device, progress=print
                ) -> tuple[np.ndarray, np.ndarray]:
    """(confidence K x N, inside K x N) of ``count`` shadow federations over the pooled
    records of every institution (concatenated in institution order), with progress and
    an estimate of the time left."""
    sizes = [len(src) for src, _ in pools]
    rng = np.random.default_rng([s.scenario.seed, 104729])
    conf, inside = [], []
    t0 = time.perf_counter()
    for k in range(count):
        masks = [rng.random(n) < 0.5 for n in sizes]

        def on_round(rnd: int, k: int = k) -> None:
            if rnd < s.scenario.rounds:
                return
            done = k + 1
            left = (time.perf_counter() - t0) / done * (count - done)
            progress(f"attack: LiRA shadow federation {k + 1}/{count} trained "
                     f"({s.scenario.rounds} rounds); about {left:.0f}s left")

        arrays = train_shadow(s, model, pools, masks, init, k, device, on_round)
        model.set_arrays(arrays)
        conf.append(np.concatenate([confidence(model, src, y, device) for src, y in pools]))
        inside.append(np.concatenate(masks))
    return np.stack(conf), np.stack(inside)


def _pools(t: Target):
    """Each institution's training and held-out records as one source (training first)."""
    from fedsilo.baselines import pooled_source
    from fedsilo.node.silo import features, labels_of

    s, fed, rt, model = t.scenario, t.federation, t.runtime, t.model
    pools, n_train = [], []
    for inst in fed.institutions:
        src = pooled_source([features(s, rt, model, inst, "train"),
                             features(s, rt, model, inst, "test")])
        pools.append((src, np.concatenate([labels_of(inst, "train"),
                                           labels_of(inst, "test")])))
        n_train.append(len(inst.train_texts))
    return pools, n_train


def lira_attack(t: Target, shadows: int, progress=print) -> dict:
    """Online and offline LiRA (fixed variance) with ``shadows`` shadow federations."""
    s, fed, rt, model = t.scenario, t.federation, t.runtime, t.model
    pools, n_train = _pools(t)
    model.set_arrays(t.final)
    target = np.concatenate([confidence(model, src, y, rt.device) for src, y in pools])
    progress(f"attack: LiRA, training {shadows} shadow federations ({s.scenario.rounds} "
             f"rounds each, FedAvg, on random halves of every institution's records)")
    conf, inside = run_shadows(s, model, pools, t.initial, shadows, rt.device, progress)
    online, offline = scores(target, conf, inside)
    out = {"shadows": shadows,
           "shadow_training": "FedAvg over the same institutions with the run's local "
                              "training" + (" (DP-SGD)" if s.privacy.dp else "")
                              + f"; the run's strategy: {s.strategy.name}"}
    from fedsilo.training import trained_rows

    for name, sc in (("online", online), ("offline", offline)):
        per, at = {}, 0
        for inst, (src, _), n in zip(fed.institutions, pools, n_train, strict=True):
            part = sc[at:at + len(src)]
            # members: the rows trained on (a validation holdout is neither)
            per[inst.name] = (part[:n][trained_rows(s, inst.name, n)], part[n:])
            at += len(src)
        out[name] = membership(per, f"LiRA {name}, fixed variance (Carlini et al. 2022)",
                               THREAT_OUTSIDER)
    return out
