"""Accuracy and macro-F1 from confusion matrices agree with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from fedsilo.metrics import confusion_from_flat, scores_from_confusion

K = 6


def _confusion(y_true, y_pred, k: int = K) -> np.ndarray:
    c = np.zeros((k, k), dtype=np.int64)
    np.add.at(c, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return c


def _sk(y_true, y_pred) -> tuple[float, float]:
    return (accuracy_score(y_true, y_pred),
            f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_confusion_helper_matches_sklearn():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, K, 300), rng.integers(0, K, 300)
    assert np.array_equal(_confusion(t, p), confusion_matrix(t, p, labels=list(range(K))))


@pytest.mark.parametrize("seed", range(8))
def test_random_labels_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    y_true = rng.integers(0, K, n)
    # mostly right, partly random, so scores are far from both 0 and 1
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, K, n))
    acc, f1 = scores_from_confusion(_confusion(y_true, y_pred))
    sk_acc, sk_f1 = _sk(y_true, y_pred)
    assert acc == pytest.approx(sk_acc, abs=1e-12)
    assert f1 == pytest.approx(sk_f1, abs=1e-12)
    assert 0.3 < acc < 0.95


def test_label_never_predicted():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, K, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, K, 200))
    y_pred[y_pred == 2] = 3  # label 2 occurs in the truth but is never predicted
    assert 2 in y_true and 2 not in y_pred
    acc, f1 = scores_from_confusion(_confusion(y_true, y_pred))
    sk_acc, sk_f1 = _sk(y_true, y_pred)
    assert acc == pytest.approx(sk_acc, abs=1e-12)
    assert f1 == pytest.approx(sk_f1, abs=1e-12)


def test_label_predicted_but_absent_from_truth():
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, K - 1, 200)  # label 5 never occurs in the truth
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, K, 200))
    assert 5 not in y_true and 5 in y_pred
    acc, f1 = scores_from_confusion(_confusion(y_true, y_pred))
    sk_acc, sk_f1 = _sk(y_true, y_pred)
    assert acc == pytest.approx(sk_acc, abs=1e-12)
    assert f1 == pytest.approx(sk_f1, abs=1e-12)


def test_label_in_neither_truth_nor_predictions_is_ignored():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 2])
    # a confusion matrix with room for 6 labels, of which 3 never occur
    acc, f1 = scores_from_confusion(_confusion(y_true, y_pred, k=6))
    sk_acc, sk_f1 = _sk(y_true, y_pred)
    assert acc == pytest.approx(5 / 7)
    assert acc == pytest.approx(sk_acc)
    # per label: 0 -> 2*1/(2+2)=0.5, 1 -> 2*2/(2+3)=0.8, 2 -> 2*2/(3+2)=0.8
    assert f1 == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert f1 == pytest.approx(sk_f1)


def test_perfect_and_empty():
    assert scores_from_confusion(np.diag([3, 0, 5])) == (1.0, 1.0)
    assert scores_from_confusion(np.zeros((4, 4), dtype=np.int64)) == (0.0, 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_summed_institution_confusions_match_pooled_sklearn(seed):
    rng = np.random.default_rng(100 + seed)
    # two institutions with different label mixes and sizes
    t1 = rng.choice(K, 150, p=[0.4, 0.3, 0.1, 0.1, 0.1, 0.0])
    p1 = np.where(rng.random(150) < 0.8, t1, rng.integers(0, K, 150))
    t2 = rng.choice(K, 60, p=[0.05, 0.05, 0.2, 0.2, 0.2, 0.3])
    p2 = np.where(rng.random(60) < 0.5, t2, rng.integers(0, K, 60))
    c = _confusion(t1, p1) + _confusion(t2, p2)
    acc, f1 = scores_from_confusion(c)
    sk_acc, sk_f1 = _sk(np.concatenate([t1, t2]), np.concatenate([p1, p2]))
    assert acc == pytest.approx(sk_acc, abs=1e-12)
    assert f1 == pytest.approx(sk_f1, abs=1e-12)
    # and the pooled macro-F1 is not just the mean of the institutions' macro-F1s
    mean_f1 = (scores_from_confusion(_confusion(t1, p1))[1]
               + scores_from_confusion(_confusion(t2, p2))[1]) / 2
    assert abs(mean_f1 - f1) > 1e-6


def test_confusion_from_flat_round_trips():
    rng = np.random.default_rng(5)
    c = _confusion(rng.integers(0, K, 100), rng.integers(0, K, 100))
    flat = [float(v) for v in c.ravel()]  # as carried in a Flower metrics record
    back = confusion_from_flat(flat, K)
    assert back.dtype == np.int64
    assert np.array_equal(back, c)
    assert scores_from_confusion(back) == scores_from_confusion(c)
