"""The membership attack's ROC arithmetic, checked against scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from fedsilo.privacy.attacks import auc, roc, summarise, tpr_at


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_and_auc_match_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    members = np.round(rng.normal(0.5, 1.0, 300), 1)  # rounded: many ties
    others = np.round(rng.normal(0.0, 1.0, 700), 1)
    fpr, tpr = roc(members, others)
    y = np.r_[np.ones(300), np.zeros(700)]
    s = np.r_[members, others]
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert auc(fpr, tpr) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    for level in (0.01, 0.001, 0.1):
        assert tpr_at(fpr, tpr, level) == pytest.approx(ref_tpr[ref_fpr <= level].max())


def test_perfect_chance_and_reversed_attacks():
    perfect = summarise(np.array([2.0, 3.0, 4.0]), np.array([-1.0, 0.0, 1.0]))
    assert perfect["auc"] == 1.0 and perfect["tpr_at_0.001_fpr"] == 1.0
    same = summarise(np.zeros(50), np.zeros(50))
    assert same["auc"] == 0.5 and same["tpr_at_0.01_fpr"] == 0.0
    reversed_ = summarise(np.array([-1.0, 0.0]), np.array([1.0, 2.0]))
    assert reversed_["auc"] == 0.0
    assert perfect["members"] == 3 and perfect["non_members"] == 3
