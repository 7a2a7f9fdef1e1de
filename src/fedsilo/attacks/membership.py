"""Membership inference against a finished run's final shared model: the ROC maths and
the loss-threshold attack.

Threat model (a), the outsider: it holds the run's final shared model (``head.npz``, what
the federation publishes) and a record, and asks whether the record was in some
institution's training data. The loss-threshold attack (Yeom et al. 2018) calls a record
a member when the model's loss on it is low; its score is minus the loss. Members are each
institution's training records, non-members its held-out test records (the same
distribution, never trained on). Reported per institution and for the federation: the
AUC, and the true-positive rate at 1% and 0.1% false positives with the number of
non-members (below 1,000 non-members, a 0.1% rate is not measurable: fewer than one false
positive). The ROC arithmetic is written here and checked against scikit-learn's in the
tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from fedsilo.attacks.target import Target

FPR_LEVELS = (0.01, 0.001)
THREAT_OUTSIDER = ("outsider with the final shared model: members are an institution's "
                   "training records, non-members its held-out test records")


def roc(member_scores: np.ndarray, nonmember_scores: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) of calling a record a member when its
    score is at least a threshold, over every threshold (ties move together), starting at
    (0, 0) and ending at (1, 1)."""
    scores = np.concatenate([member_scores, nonmember_scores]).astype(np.float64)
    member = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    order = np.argsort(-scores, kind="stable")
    scores, member = scores[order], member[order]
    tp, fp = np.cumsum(member), np.cumsum(1 - member)
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]  # end of each tie
    tpr = np.r_[0.0, tp[last] / max(len(member_scores), 1)]
    fpr = np.r_[0.0, fp[last] / max(len(nonmember_scores), 1)]
    return fpr, tpr


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """The highest true-positive rate at a false-positive rate of at most ``level``."""
    ok = fpr <= level + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def summarise(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict:
    fpr, tpr = roc(member_scores, nonmember_scores)
    out = {"members": int(len(member_scores)), "non_members": int(len(nonmember_scores)),
           "auc": auc(fpr, tpr)}
    for level in FPR_LEVELS:
        out[f"tpr_at_{level:g}_fpr"] = tpr_at(fpr, tpr, level)
    out["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return out


@torch.no_grad()
def per_record_loss(model, source, labels: np.ndarray, device, batch_size: int = 256
                    ) -> np.ndarray:
    model.to(device).eval()
    y = torch.as_tensor(labels, dtype=torch.long)
    out = []
    for start in range(0, len(source), batch_size):
        idx = np.arange(start, min(start + batch_size, len(source)))
        logits = model.logits(source.rows(idx)).float().cpu()
        out.append(nn.functional.cross_entropy(logits, y[idx], reduction="none").numpy())
    return np.concatenate(out) if out else np.zeros(0)


def membership(per: dict[str, tuple[np.ndarray, np.ndarray]], name: str,
               threat: str) -> dict:
    """Per-institution and federation summaries of membership scores (members, others)."""
    return {"attack": name, "threat_model": threat,
            "institutions": {k: summarise(a, b) for k, (a, b) in per.items()},
            "federation": summarise(np.concatenate([a for a, _ in per.values()]),
                                    np.concatenate([b for _, b in per.values()]))}


def loss_attack(t: Target, progress=print) -> dict:
    """The loss-threshold membership attack against the final shared model."""
    from fedsilo.node.silo import features, labels_of
    from fedsilo.training import trained_rows

    s, fed, rt, model = t.scenario, t.federation, t.runtime, t.model
    model.set_arrays(t.final)
    per = {}
    for i, inst in enumerate(fed.institutions, start=1):
        progress(f"attack: loss threshold, institution {i}/{len(fed.institutions)} "
                 f"({inst.name})")
        inside = -per_record_loss(model, features(s, rt, model, inst, "train"),
                                  labels_of(inst, "train"), rt.device)
        inside = inside[trained_rows(s, inst.name, len(inside))]  # never the holdout
        outside = -per_record_loss(model, features(s, rt, model, inst, "test"),
                                   labels_of(inst, "test"), rt.device)
        per[inst.name] = (inside, outside)
    return membership(per, "loss threshold (Yeom et al. 2018)", THREAT_OUTSIDER)


def federation_rocs(report: dict) -> dict[str, dict]:
    out = {}
    if "loss" in report:
        out["loss"] = report["loss"]["federation"]
    for kind in ("online", "offline"):
        if "lira" in report:
            out[f"LiRA {kind}"] = report["lira"][kind]["federation"]
    return out
