"""The attacks' arithmetic: ROC against scikit-learn, LiRA's scores, the DP audit against
exact binomial intervals and the bound, label recovery from a real training step, canaries.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from fedsilo.attacks.membership import auc, roc, summarise, tpr_at


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


# -- LiRA ---------------------------------------------------------------------------------------
def test_lira_separates_in_from_out_and_is_at_chance_without_a_difference():
    from fedsilo.attacks.lira import scores

    rng = np.random.default_rng(0)
    n, k = 400, 8
    inside = rng.random((k, n)) < 0.5
    base = rng.normal(0, 2, n)  # each record's own difficulty
    shift = 1.5  # a record trained on is this much more confident
    shadow = base + shift * inside + rng.normal(0, 0.3, (k, n))
    member = np.arange(n) < n // 2
    target = base + shift * member + rng.normal(0, 0.3, n)
    online, offline = scores(target, shadow, inside)
    for sc in (online, offline):
        assert summarise(sc[member], sc[~member])["auc"] > 0.95
    # no effect of training: at chance (within sampling error)
    online, offline = scores(base + rng.normal(0, 0.3, n), base + rng.normal(0, 0.3, (k, n)),
                             inside)
    for sc in (online, offline):
        assert abs(summarise(sc[member], sc[~member])["auc"] - 0.5) < 0.1


def test_lira_borrows_the_shift_for_a_record_no_shadow_trained_on():
    from fedsilo.attacks.lira import scores

    inside = np.array([[True, False, False], [False, True, False]])
    shadow = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    online, _ = scores(np.array([3.0, 0.0, 3.0]), shadow, inside)
    assert np.isfinite(online).all()
    assert online[2] > 0 > online[1]  # record 2 has only OUT shadows: IN = OUT + 3


def test_confidence_is_the_logit_of_the_labels_probability():
    import torch

    from fedsilo.attacks.lira import confidence

    class Fixed:
        def to(self, _):
            return self

        def eval(self):
            return self

        def logits(self, batch):
            return torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])

    class Two:
        def __len__(self):
            return 2

        def rows(self, idx):
            return idx

    got = confidence(Fixed(), Two(), np.array([0, 1]), "cpu")
    p = torch.softmax(Fixed().logits(None).double(), 1).numpy()
    want = [np.log(p[0, 0] / (1 - p[0, 0])), np.log(p[1, 1] / (1 - p[1, 1]))]
    np.testing.assert_allclose(got, want, rtol=1e-9)


# -- the DP audit -------------------------------------------------------------------------------
def test_clopper_pearson_matches_scipys_exact_interval():
    from scipy.stats import binomtest

    from fedsilo.attacks.audit import _clopper_pearson

    for k, n in ((0, 30), (3, 30), (30, 30), (17, 1000)):
        lo, hi = _clopper_pearson(np.array([k]), n, 0.05)
        ref = binomtest(k, n).proportion_ci(0.95, method="exact")
        assert lo[0] == pytest.approx(ref.low, abs=1e-9)
        assert hi[0] == pytest.approx(ref.high, abs=1e-9)


def test_the_audit_proves_epsilon_for_randomised_response_and_nothing_at_chance():
    """Randomised response with epsilon 2: a member answers 1 with e^2/(1+e^2), a
    non-member with 1/(1+e^2): the best test has exactly TPR = e^2 FPR. With many records
    the point estimate is 2 and the 95% bound a little below; at chance both are ~0."""
    from fedsilo.attacks.audit import bound_curve, epsilon_lower_bound, respects

    eps, n = 2.0, 20000
    rng = np.random.default_rng(1)
    p = np.exp(eps) / (1 + np.exp(eps))
    members = (rng.random(n) < p).astype(float)
    others = (rng.random(n) < 1 - p).astype(float)
    fpr, tpr = roc(members, others)
    got = epsilon_lower_bound(fpr, tpr, n, n, delta=0.0)
    assert got["epsilon_point_estimate"] == pytest.approx(eps, abs=0.1)
    assert eps - 0.2 < got["epsilon_lower_bound"] < eps
    assert respects(eps, 0.0, got) and not respects(1.0, 0.0, got)
    chance = roc(rng.random(n), rng.random(n))
    assert epsilon_lower_bound(*chance, n, n, delta=0.0)["epsilon_lower_bound"] < 0.05
    grid = np.array([0.0, 0.01, 0.5, 1.0])
    np.testing.assert_allclose(bound_curve(1.0, 1e-3, grid),
                               np.minimum(1, np.minimum(np.e * grid + 1e-3,
                                                        1 - (1 - 1e-3 - grid) / np.e)))


# -- label inference --------------------------------------------------------------------------
@pytest.mark.parametrize("hidden", [0, 32])
def test_one_sgd_step_gives_the_label_counts_away(hidden, cache_dir):
    """One institution's real round (one full-batch SGD step from the shared model): the
    server's estimate from the output layer's update is near the true histogram; guessing a
    uniform prediction instead is far off."""
    from fedsilo import config
    from fedsilo.attacks.labels import histogram_error, recover_counts, step_size_sum
    from fedsilo.data import build_federation
    from fedsilo.node.silo import features, runtime_for
    from fedsilo.training import local_train
    from strategies.view import mean_input_logits
    from tests.conftest import CONFIGS

    s = config.load(CONFIGS / "smoke.toml", ["train.optimizer=sgd", "train.local_epochs=1",
                                             "train.batch_size=4096",
                                             f"model.head_hidden={hidden}",
                                             f"simulation.cache_dir={cache_dir}"])
    fed = build_federation(s)
    rt = runtime_for(s)
    model = rt.model(s.model, len(fed.labels), seed=s.scenario.seed)
    for inst in fed.institutions:
        sent = model.get_arrays()
        local_train(model, features(s, rt, model, inst, "train"), inst.train_labels, s.train,
                    0, rt.device)
        got = model.get_arrays()
        model.set_arrays(sent)
        n = len(inst.train_labels)
        db = got["head.out.bias"] - sent["head.out.bias"]
        dw = got["head.out.weight"] - sent["head.out.weight"]
        true = np.bincount(inst.train_labels, minlength=len(fed.labels))
        logits = mean_input_logits(sent["head.out.weight"], sent["head.out.bias"], dw, db)
        est = recover_counts(db, n, step_size_sum(s, n), logits)
        assert est.sum() == pytest.approx(n)
        assert histogram_error(est, true)["l1"] < 0.05, (inst.name, est, true)
        assert histogram_error(est, true)["top1"]
        blind = recover_counts(db, n, step_size_sum(s, n))
        assert histogram_error(blind, true)["l1"] > 0.1


# -- canaries -------------------------------------------------------------------------------------
def test_canaries_go_into_one_institutions_training_split_only():
    from fedsilo import config
    from fedsilo.config import ConfigError
    from fedsilo.data import build_federation, canaries
    from tests.conftest import CONFIGS

    plain = build_federation(config.load(CONFIGS / "smoke.toml"))
    s = config.load(CONFIGS / "smoke.toml", ["attack.canaries=5",
                                             "attack.canary_institution=hospital-1"])
    fed = build_federation(s)
    texts, labels = canaries.draw(5, len(fed.labels), s.scenario.seed, "inserted")
    for a, b in zip(plain.institutions, fed.institutions, strict=True):
        assert a.test_texts == b.test_texts
        if b.name == "hospital-1":
            assert b.train_texts == a.train_texts + texts
            assert b.train_labels[-5:].tolist() == labels.tolist()
        else:
            assert b.train_texts == a.train_texts
    refs, _ = canaries.references(100, len(fed.labels), s.scenario.seed)
    assert not set(refs) & set(texts) and len(set(refs)) == 100
    with pytest.raises(ConfigError, match="'attack.canary_institution' names 'bank-9'"):
        build_federation(s.replace(**{"attack.canary_institution": "bank-9"}))


def test_label_inference_says_when_the_output_layer_never_left_the_institutions():
    from fedsilo import config
    from fedsilo.attacks.labels import label_attack, label_table
    from fedsilo.data import build_federation
    from tests.conftest import CONFIGS

    s = config.load(CONFIGS / "smoke.toml", ["personalize.method=split",
                                             "model.head_hidden=16"])
    rows = [{"round": r, "server_view": {"replies": {}, "output_layer_shared": False}}
            for r in (1, 2)]
    rep = label_attack(s, build_federation(s), rows)
    assert rep["institutions"] == {} and "never receives it" in rep["not_possible"]
    assert "not possible: the output layer is private" in label_table(rep)


def test_a_deployed_node_refuses_canaries(tmp_path):
    from fedsilo import config
    from fedsilo.config import ConfigError
    from fedsilo.node.silo import resolve_institution
    from tests.conftest import CONFIGS

    s = config.load(CONFIGS / "smoke.toml", ["attack.canaries=3"])
    with pytest.raises(ConfigError, match="attack.canaries: canaries are inserted by a "
                                          "simulation only"):
        resolve_institution(s, {"institution": "bank-a",
                                "data-path": str(tmp_path / "bank-a.csv")})


def test_members_are_the_rows_trained_on_and_unmemorised_canaries_score_log2_e():
    from fedsilo.attacks.canary import chance_exposure
    from fedsilo.config import Scenario
    from fedsilo.training import holdout, round_seed, trained_rows

    s = Scenario().replace(**{"model.scope": "top-k"})  # stops early: a holdout
    held = holdout(50, s.train.validation_share, round_seed(s.scenario.seed, 0, "bank-1"))
    assert len(held) == 5
    assert sorted(set(trained_rows(s, "bank-1", 50)) | set(held)) == list(range(50))
    for plain in (Scenario(), s.replace(**{"privacy.dp": True}),
                  s.replace(**{"strategy.name": "scaffold", "train.optimizer": "sgd"})):
        assert trained_rows(plain, "bank-1", 50).tolist() == list(range(50))
    # a canary ranked uniformly among R + 1 candidates: mean exposure about log2(e)
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 1002, 200000)
    assert chance_exposure(1001) == pytest.approx(np.mean(np.log2(1001) - np.log2(ranks)),
                                                  abs=0.01)
    assert chance_exposure(1001) == pytest.approx(np.log2(np.e), abs=0.01)
