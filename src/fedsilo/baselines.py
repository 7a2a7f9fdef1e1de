"""The two reference points every federated result is read against.

- local-only: each institution trains alone on its own training split;
- centralized: all institutions' training data pooled (what a real federation cannot do).

Both use exactly the scenario's data, backbone, scope, optimiser and seeds, and the same
budget as the federation: ``scenario.rounds`` rounds of ``train.local_epochs`` passes over
each example (a fresh optimiser each round, as a client gets), evaluated after every round
on the same test splits. They run in this process (no Ray) and write run directories like
federated runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fedsilo.config import Scenario
from fedsilo.data import build_federation
from fedsilo.metrics import scores_from_confusion
from fedsilo.node.silo import features, runtime_for
from fedsilo.results.rows import BaselineRow
from fedsilo.results.rundir import RunDirectory, new_run_dir
from fedsilo.results.runlog import RunLog
from fedsilo.results.summary import summarise
from fedsilo.training import evaluate, holdout, local_train, round_seed
from fedsilo.training.features import CachedFeatures, FeatureSource, LiveFeatures

MODES = ("local-only", "centralized")


def pooled_source(sources: list[FeatureSource]) -> FeatureSource:
    """Several institutions' inputs as one source (for centralized training)."""
    if len(sources) == 1:
        return sources[0]
    if isinstance(sources[0], LiveFeatures):
        return LiveFeatures([t for src in sources for t in src.texts])
    stored = [src.stored for src in sources]  # type: ignore[attr-defined]
    if "pooled" in stored[0]:
        return CachedFeatures({"pooled": torch.cat([p["pooled"] for p in stored])})
    return CachedFeatures(_pad_cat(stored, max(p["mask"].shape[1] for p in stored)))


def _pad_cat(parts: list[dict[str, torch.Tensor]], width: int) -> dict[str, torch.Tensor]:
    out = {}
    for k in ("hidden", "mask"):
        padded = []
        for p in parts:
            t = p[k]
            extra = width - t.shape[1]
            if extra:
                t = torch.cat([t, torch.zeros((t.shape[0], extra, *t.shape[2:]),
                                              dtype=t.dtype)], 1)
            padded.append(t)
        out[k] = torch.cat(padded)
    return out


def run_baseline(s: Scenario, mode: str) -> Path:
    """Train and evaluate baseline ``mode``; return its finished run directory."""
    t0 = time.time()
    fed = build_federation(s)
    rt = runtime_for(s)
    run_dir = new_run_dir(s.replace(**{"scenario.name": f"{s.scenario.name}-{mode}"}))
    with RunDirectory(run_dir) as rd:
        from fedsilo.config import to_toml

        (run_dir / "config.toml").write_text(to_toml(s))
        log = RunLog(run_dir, tensorboard=s.output.tensorboard)
        num_labels = len(fed.labels)
        model = rt.model(s.model, num_labels, seed=s.scenario.seed)
        start = model.get_arrays()
        test = {i.name: features(s, rt, model, i, "test") for i in fed.institutions}
        train = {i.name: features(s, rt, model, i, "train") for i in fed.institutions}

        def scores(arrays) -> dict[str, dict]:
            model.set_arrays(arrays)
            out = {}
            for inst in fed.institutions:
                ev = evaluate(model, test[inst.name], inst.test_labels, num_labels, rt.device)
                out[inst.name] = {"kind": inst.kind, "accuracy": ev.accuracy,
                                  "macro_f1": ev.macro_f1, "loss": ev.loss,
                                  "test_examples": ev.examples, "confusion": ev.confusion}
            return out

        def union(per: dict[str, dict]) -> dict:
            conf = sum(v["confusion"] for v in per.values())
            acc, f1 = scores_from_confusion(conf)
            return {"accuracy": acc, "macro_f1": f1, "test_examples": int(conf.sum())}

        if mode == "centralized":
            owners = {"pooled": [i for i in fed.institutions]}
        else:
            owners = {i.name: [i] for i in fed.institutions}
        weights = {o: start for o in owners}
        for r in range(1, s.scenario.rounds + 1):
            t_round = time.perf_counter()
            losses = {}
            for owner, insts in owners.items():
                model.set_arrays(weights[owner])
                source = pooled_source([train[i.name] for i in insts])
                labels = np.concatenate([i.train_labels for i in insts])
                validation = None  # held out as in a federated round (train.early_stopping)
                if s.train.stops_early(s.model.scope):
                    validation = holdout(len(source), s.train.validation_share,
                                         round_seed(s.scenario.seed, 0, owner))
                stats = local_train(model, source, labels, s.train,
                                    round_seed(s.scenario.seed, r, owner), rt.device,
                                    validation=validation)
                weights[owner] = model.get_arrays()
                losses[owner] = stats.loss
            row = _row(r, mode, owners, weights, scores, union, losses)
            row["wall_time_s"] = time.perf_counter() - t_round
            log.append(row)
            g = row["global"]
            print(f"{mode} round {r:>3}/{s.scenario.rounds}  acc {g['accuracy']:.3f}  "
                  f"macro-F1 {g['macro_f1']:.3f}", flush=True)
        log.finish(summarise(
            log.rows, mode=mode, scenario=s.scenario.name, wall_time_s=time.time() - t0,
            labels=list(fed.labels),
            model={"backbone": s.model.backbone, "scope": s.model.scope}), plot=s.output.plot)
    from fedsilo.results.tracking import track

    track(rd.final, s)
    return rd.final


def _row(r, mode, owners, weights, scores, union, losses) -> BaselineRow:
    """A baseline's round row (fedsilo.results.rows.BaselineRow)."""
    if mode == "centralized":
        per = scores(weights["pooled"])
        g = union(per)
        insts = {n: {k: v for k, v in d.items() if k != "confusion"} for n, d in per.items()}
        g["train_loss"] = losses["pooled"]
        return {"round": r, "global": g, "institutions": insts}
    insts = {}
    for owner in owners:
        per = scores(weights[owner])  # this institution's model on every test split
        own = per[owner]
        fedwide = union(per)
        insts[owner] = {"kind": own["kind"], "accuracy": own["accuracy"],
                        "macro_f1": own["macro_f1"], "test_examples": own["test_examples"],
                        "federation_accuracy": fedwide["accuracy"],
                        "federation_macro_f1": fedwide["macro_f1"],
                        "train_loss": losses[owner]}
    mean = {k: float(np.mean([v[f"federation_{k}"] for v in insts.values()]))
            for k in ("accuracy", "macro_f1")}
    return {"round": r, "institutions": insts,
            "global": {**mean, "note": "mean over institutions of each one's model on the "
                                       "federation-wide test set",
                       "worst_accuracy": min(v["federation_accuracy"]
                                             for v in insts.values())}}
