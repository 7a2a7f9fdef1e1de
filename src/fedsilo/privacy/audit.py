"""What (epsilon, delta)-DP promises a membership attack, and what an attack proves.

Under (epsilon, delta)-DP, any test that tells a member from a non-member has
``TPR <= e^epsilon * FPR + delta`` and ``1 - FPR <= e^epsilon * (1 - TPR) + delta`` at every
threshold. An attack's ROC that crosses that line at some threshold proves the guarantee
does not hold; conversely each point gives a lower bound on the epsilon the training can
have (Jagielski et al. 2020, Nasr et al. 2021). The rates are estimates from finitely many
records, so the bound uses Clopper-Pearson intervals: a lower bound on TPR and an upper
bound on FPR, so that chance alone does not produce a violation. The best of many
thresholds is taken, so each threshold's intervals are at 1 - 0.05 / (number of
thresholds) (Bonferroni): with 95% confidence every threshold's bound holds at once, the
best one included.

This reads the attack over many records at once, as audits of DP training do; the formal
guarantee is per record, so the empirical epsilon is a measurement, not a proof about one
record.
"""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95


def _clopper_pearson(k: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided (lower, upper) bounds on a rate with ``k`` successes of ``n``."""
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    lo = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
    hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return np.nan_to_num(lo), np.nan_to_num(hi, nan=1.0)


def epsilon_lower_bound(fpr: np.ndarray, tpr: np.ndarray, members: int, non_members: int,
                        delta: float, confidence: float = CONFIDENCE) -> dict:
    """The largest epsilon the ROC proves, at ``confidence`` (over all its thresholds
    together) and as a point estimate."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    alpha = (1 - confidence) / max(len(fpr), 1)  # Bonferroni over the thresholds
    tp, fp = np.round(tpr * members), np.round(fpr * non_members)
    # a true rate can be lower than the measured TPR and higher than the measured FPR:
    # both make the proven epsilon smaller
    tpr_lo, _ = _clopper_pearson(tp, members, alpha)
    _, fpr_hi = _clopper_pearson(fp, non_members, alpha)
    return {"confidence": confidence,
            "epsilon_lower_bound": _best(tpr_lo, fpr_hi, delta),
            "epsilon_point_estimate": _best(tpr, fpr, delta)}


def _best(tpr: np.ndarray, fpr: np.ndarray, delta: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        one = np.log((tpr - delta) / fpr)
        two = np.log((1 - delta - fpr) / (1 - tpr))
    vals = np.concatenate([one[(tpr > delta) & (fpr > 0)],
                           two[(1 - delta - fpr > 0) & (tpr < 1)]])
    vals = vals[np.isfinite(vals)]
    return float(max(0.0, vals.max())) if vals.size else 0.0


def respects(bound_epsilon: float, delta: float, audit: dict) -> bool:
    """Whether the attack stays within the (epsilon, delta) guarantee at every threshold
    (at the audit's confidence)."""
    return audit["epsilon_lower_bound"] <= bound_epsilon + 1e-9


def bound_curve(epsilon: float, delta: float, fpr: np.ndarray) -> np.ndarray:
    """The highest TPR (epsilon, delta)-DP allows at each FPR (both inequalities)."""
    e = math.exp(min(epsilon, 700.0))
    return np.minimum.reduce([np.ones_like(fpr), e * fpr + delta,
                              1 - (1 - delta - fpr) / e])


def plot_bound(curves: dict[str, dict], epsilon: float, delta: float, path, title: str):
    """The attacks' ROCs beside the line (epsilon, delta)-DP allows, on log-log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    grid = np.logspace(-4, 0, 200)
    ax.plot(grid, bound_curve(epsilon, delta, grid), "r-", lw=1.5,
            label=f"({epsilon:.2f}, {delta:.0e})-DP bound")
    ax.plot(grid, grid, "k--", lw=0.8, label="chance")
    for name, v in curves.items():
        fpr, tpr = np.asarray(v["roc"]["fpr"]), np.asarray(v["roc"]["tpr"])
        keep = (fpr > 0) & (tpr > 0)
        ax.plot(fpr[keep], tpr[keep], lw=1.2, label=f"{name} (AUC {v['auc']:.2f})")
    ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1),
           xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
