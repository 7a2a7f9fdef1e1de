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


def dp_audit(summary: dict, report: dict) -> dict | None:
    """For a DP run: each membership attack's federation ROC against the bound the run's
    epsilon implies, and the epsilon the attack proves."""
    from fedsilo.attacks.membership import federation_rocs

    priv = summary.get("privacy") or {}
    insts, server = priv.get("institutions") or {}, priv.get("server")
    if insts:
        eps = max(v["epsilon"] for v in insts.values())
        delta = max(v["delta"] for v in insts.values())
        guarantee = "record level (DP-SGD), the largest institution's epsilon"
    elif server:
        eps, delta = server["epsilon"], server["delta"]
        guarantee = ("institution level (central DP): it bounds each record too, since a "
                     "record changes only its institution's update")
    else:
        return None
    if not federation_rocs(report):
        return None
    out = {"epsilon": eps, "delta": delta, "guarantee": guarantee, "attacks": {}}
    for name, fedr in federation_rocs(report).items():
        got = epsilon_lower_bound(fedr["roc"]["fpr"], fedr["roc"]["tpr"],
                                        fedr["members"], fedr["non_members"], delta)
        got["respects_bound"] = respects(eps, delta, got)
        out["attacks"][name] = got
    return out
