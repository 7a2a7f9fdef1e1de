"""What an attacker learns: membership inference against a finished run.

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

from pathlib import Path

import numpy as np
import torch
from torch import nn

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


def loss_attack(run_dir: Path, progress=print) -> dict:
    """The loss-threshold membership attack against ``run_dir``'s final shared model."""
    from fedsilo import config, results
    from fedsilo.config import ConfigError
    from fedsilo.data import build_federation
    from fedsilo.silo import features, labels_of, runtime_for

    run_dir = Path(run_dir)
    for name in ("config.toml", "head.npz"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"attack: '{run_dir}' is not a finished run directory (no "
                              f"{name})")
    s = config.load(run_dir / "config.toml")
    if s.personalize.method == "split":
        raise ConfigError("attack: the final shared model of a 'split' run has no output "
                          "layer (each institution keeps its own); attacking it needs one")
    fed = build_federation(s)
    rt = runtime_for(s)
    model = rt.model(s.model, len(fed.labels), seed=s.scenario.seed)
    with np.load(run_dir / "head.npz") as z:
        model.set_arrays({k: z[k] for k in z.files})
    per, members, others = {}, [], []
    for i, inst in enumerate(fed.institutions, start=1):
        progress(f"attack: loss threshold, institution {i}/{len(fed.institutions)} "
                 f"({inst.name})")
        inside = -per_record_loss(model, features(s, rt, model, inst, "train"),
                                  labels_of(inst, "train"), rt.device)
        outside = -per_record_loss(model, features(s, rt, model, inst, "test"),
                                   labels_of(inst, "test"), rt.device)
        per[inst.name] = summarise(inside, outside)
        members.append(inside)
        others.append(outside)
    report = {"attack": "loss threshold (Yeom et al. 2018)", "threat_model": THREAT_OUTSIDER,
              "institutions": per,
              "federation": summarise(np.concatenate(members), np.concatenate(others))}
    results.write_json(run_dir / "attacks.json", report)
    return report


def attack_table(report: dict) -> str:
    from fedsilo.results import format_table

    rows = [[name, v["members"], v["non_members"], v["auc"], v["tpr_at_0.01_fpr"],
             v["tpr_at_0.001_fpr"]]
            for name, v in [*report["institutions"].items(),
                            ("ALL (federation)", report["federation"])]]
    note = ("TPR at 0.1% FPR needs at least 1,000 non-members to mean anything; chance is "
            "AUC 0.5 and TPR equal to the FPR")
    return (f"{report['attack']}; threat model: {report['threat_model']}\n"
            + format_table(rows, ["institution", "members", "non-members", "AUC",
                                  "TPR @ 1% FPR", "TPR @ 0.1% FPR"]) + "\n" + note)


def plot_roc(report: dict, path: Path) -> Path:
    """The federation's and each institution's ROC on log-log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, v in [("federation", report["federation"]), *report["institutions"].items()]:
        fpr, tpr = np.asarray(v["roc"]["fpr"]), np.asarray(v["roc"]["tpr"])
        keep = (fpr > 0) & (tpr > 0)
        ax.plot(fpr[keep], tpr[keep], lw=2 if name == "federation" else 1,
                label=f"{name} (AUC {v['auc']:.2f})")
    grid = np.logspace(-4, 0, 50)
    ax.plot(grid, grid, "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlabel="false-positive rate",
           ylabel="true-positive rate", xlim=(1e-4, 1), ylim=(1e-4, 1),
           title="membership inference (loss threshold)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

