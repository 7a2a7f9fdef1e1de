"""The attacks' results shown: text tables (``fedsilo attack``, ``fedsilo privacy``) and the
log-log ROC figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsilo.attacks.membership import federation_rocs
from fedsilo.results.summary import format_table


def membership_table(rep: dict) -> str:
    rows = [[name, v["members"], v["non_members"], v["auc"], v["tpr_at_0.01_fpr"],
             v["tpr_at_0.001_fpr"]]
            for name, v in [*rep["institutions"].items(),
                            ("ALL (federation)", rep["federation"])]]
    return (f"{rep['attack']}; threat model: {rep['threat_model']}\n"
            + format_table(rows, ["institution", "members", "non-members", "AUC",
                                  "TPR @ 1% FPR", "TPR @ 0.1% FPR"]))


def attack_table(report: dict) -> str:
    """Every attack in ``report`` as text."""
    from fedsilo.attacks.labels import label_table

    parts = []
    if "loss" in report:
        parts.append(membership_table(report["loss"]))
    if "lira" in report:
        parts.append(f"LiRA with {report['lira']['shadows']} shadow federations "
                     f"({report['lira']['shadow_training']})")
        parts += [membership_table(report["lira"][k]) for k in ("online", "offline")]
    if any(k in report for k in ("loss", "lira")):
        parts.append("TPR at 0.1% FPR needs at least 1,000 non-members to mean anything; "
                     "chance is AUC 0.5 and TPR equal to the FPR")
    if "labels" in report:
        parts.append(label_table(report["labels"]))
    if "canary" in report:
        c = report["canary"]
        parts.append(f"{c['attack']}: {c['canaries']} canaries at {c['institution']}, "
                     f"ranked among {c['references']} references: mean exposure "
                     f"{c['mean_exposure']:.2f} bits (at most {c['max_exposure']:.2f}; "
                     f"{c['chance_exposure']:.2f} for a canary not memorised); ranks "
                     f"{c['ranks']}"
                     + (f"; {c['held_out']} in the validation holdout, left out"
                        if c.get("held_out") else ""))
    if "dp_audit" in report:
        parts.append(audit_table(report["dp_audit"]))
    return "\n\n".join(parts)


def measured_table(report: dict) -> str:
    """The attacks' headline numbers in one table, for ``fedsilo privacy``."""
    audit = (report.get("dp_audit") or {}).get("attacks", {})
    rows = []
    for name, v in federation_rocs(report).items():
        bound = audit.get(name, {}).get("epsilon_lower_bound")
        rows.append([name, v["auc"], v["tpr_at_0.01_fpr"], v["tpr_at_0.001_fpr"],
                     "-" if bound is None else bound])
    parts = []
    if rows:
        parts.append(format_table(rows, ["membership attack", "AUC", "TPR @ 1% FPR",
                                         "TPR @ 0.1% FPR", "epsilon proven (95%)"]))
    lab = report.get("labels") or {}
    if "federation" in lab:
        f = lab["federation"]
        parts.append(f"label inference by the server: L1 error {f['first_round_l1']:.3f} "
                     f"in the first round, {f['mean_l1']:.3f} on average (0 exact, 2 "
                     f"disjoint)")
    elif "not_possible" in lab:
        parts.append(f"label inference by the server: not possible ({lab['not_possible']})")
    elif "aggregate_only" in lab:
        parts.append("label inference by the server: no institution's update held (SecAgg+); "
                     f"the summed counts to L1 error {lab['aggregate_only']['mean_l1']:.3f}")
    if "canary" in report:
        c = report["canary"]
        parts.append(f"canary exposure: {c['mean_exposure']:.2f} bits on average (at most "
                     f"{c['max_exposure']:.2f}, {c['chance_exposure']:.2f} by chance)")
    return "\n".join(parts)


def audit_table(a: dict) -> str:
    rows = [[name, v["epsilon_point_estimate"], v["epsilon_lower_bound"],
             "yes" if v["respects_bound"] else "NO"] for name, v in a["attacks"].items()]
    return (f"against the run's guarantee: epsilon {a['epsilon']:.3g}, delta "
            f"{a['delta']:.1e} ({a['guarantee']})\n"
            + format_table(rows, ["attack", "empirical epsilon", "lower bound (95%)",
                                  "within the bound"]))


def plot_roc(report: dict, path: Path) -> Path:
    """The membership attacks' ROCs on log-log axes: the federation's for each attack and,
    for the loss attack, each institution's."""
    curves = [(f"{k} (federation)", v) for k, v in federation_rocs(report).items()]
    if "loss" in report:
        curves += [(f"loss: {k}", v) for k, v in report["loss"]["institutions"].items()]
    return _plot_rocs(curves, path, "membership inference")


def plot_dp_bound(report: dict, path: Path) -> Path | None:
    """The attacks' federation ROCs beside the bound the run's (epsilon, delta) implies."""
    a = report.get("dp_audit")
    if not a:
        return None
    curves = [(f"{k} (federation)", v) for k, v in federation_rocs(report).items()]
    return _plot_rocs(curves, path, "attacks against the DP guarantee",
                      bound=(a["epsilon"], a["delta"]))


def _plot_rocs(curves: list[tuple[str, dict]], path: Path, title: str,
               bound: tuple[float, float] | None = None) -> Path:
    """ROCs on log-log axes with the chance line and, with ``bound`` (epsilon, delta),
    the highest TPR that (epsilon, delta)-DP allows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedsilo.attacks.audit import bound_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    grid = np.logspace(-4, 0, 200)
    if bound is not None:
        eps, delta = bound
        ax.plot(grid, bound_curve(eps, delta, grid), "r-", lw=1.5,
                label=f"({eps:.2f}, {delta:.0e})-DP bound")
    for name, v in curves:
        fpr, tpr = np.asarray(v["roc"]["fpr"]), np.asarray(v["roc"]["tpr"])
        keep = (fpr > 0) & (tpr > 0)
        whole = "federation" in name
        ax.plot(fpr[keep], tpr[keep], lw=2 if whole else 0.8, alpha=1 if whole else 0.6,
                label=f"{name} (AUC {v['auc']:.2f})")
    ax.plot(grid, grid, "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlabel="false-positive rate",
           ylabel="true-positive rate", xlim=(1e-4, 1), ylim=(1e-4, 1), title=title)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
