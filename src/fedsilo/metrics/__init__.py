"""Scores computed from confusion matrices, so that per-institution counts add up exactly
to the federation-wide test set (the union of the institutions' test splits)."""

from __future__ import annotations

import numpy as np


def scores_from_confusion(confusion: np.ndarray) -> tuple[float, float]:
    """(accuracy, macro-F1) from a [true, predicted] count matrix.

    Macro-F1 averages over the labels that occur in the truth or the predictions, as
    scikit-learn's ``f1_score(average="macro")`` does by default.
    """
    c = np.asarray(confusion, dtype=np.float64)
    n = c.sum()
    if n == 0:
        return 0.0, 0.0
    tp = np.diag(c)
    support = c.sum(1)
    predicted = c.sum(0)
    present = (support + predicted) > 0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(tp.sum() / n), float(f1[present].mean())


def confusion_from_flat(values: list[int] | list[float], num_labels: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(num_labels, num_labels)
