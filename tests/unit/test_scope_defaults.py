"""Defaults that work for every scope: a learning rate per group of weights, warm-up of
the encoder's rate, early stopping on validation rows held out of the training split, and
the hard synthetic task on which encoder weights must train."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import torch

from fedsilo import config
from fedsilo.config import ConfigError
from fedsilo.data import roles
from fedsilo.node import silo
from fedsilo.training import (
    holdout,
    local_train,
    lr_sum,
    make_optimizer,
    warmup,
)
from fedsilo.training.features import CachedFeatures

SMOKE = "configs/smoke.toml"


@pytest.fixture()
def scenario(cache_dir):
    return config.load(SMOKE, [f"simulation.cache_dir={cache_dir}"])


def _model(s, scope, **extra):
    s = s.replace(**{"model.scope": scope, "model.top_k": 1, **extra})
    return s, silo.runtime_for(s).model(s.model, 8, seed=1)


@pytest.mark.parametrize("scope, encoder_lr", [("head", None), ("top-k", 0.0002),
                                                ("lora", 0.001), ("full", 0.0002)])
def test_the_head_and_the_encoder_weights_have_their_own_rates(scenario, scope, encoder_lr):
    s, model = _model(scenario, scope)
    opt = make_optimizer(model, s.train)
    head = {id(p) for n, p in model.trainable().items() if n.startswith("head.")}
    assert opt.param_groups[0]["lr"] == s.train.lr == 0.1
    assert {id(p) for p in opt.param_groups[0]["params"]} == head
    if encoder_lr is None:
        assert len(opt.param_groups) == 1
        return
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == encoder_lr
    others = {id(p) for p in opt.param_groups[1]["params"]}
    assert others and not others & head
    assert len(head) + len(others) == len(model.trainable())


def test_warmup_ramps_the_encoder_rate_and_leaves_the_head_alone(scenario):
    s, model = _model(scenario, "top-k", **{"train.warmup": 0.25})
    opt = make_optimizer(model, s.train)
    sched = warmup(opt, s.train, steps=8)  # a ramp of 2 steps
    seen = []
    for _ in range(4):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [h for h, _ in seen] == [0.1] * 4
    assert [e for _, e in seen] == pytest.approx([0.0001, 0.0002, 0.0002, 0.0002])
    # SCAFFOLD's K * lr: the rates actually used, summed (1/2 + 1 + 1 + ... of 8 steps)
    assert lr_sum(s.train, "top-k", "backbone.encoder.layer.1.x", 8) == \
        pytest.approx(0.0002 * 7.5)
    assert lr_sum(s.train, "top-k", "head.out.weight", 8) == 8 * 0.1


def test_the_validation_rows_are_fixed_disjoint_and_never_everything():
    a, b = holdout(200, 0.1, seed=7), holdout(200, 0.1, seed=7)
    assert np.array_equal(a, b) and len(a) == 20 and len(set(a.tolist())) == 20
    assert not np.array_equal(a, holdout(200, 0.1, seed=8))
    assert len(holdout(3, 0.5, seed=1)) == 2  # 1.5 rounds to 2, leaves one to train on
    assert len(holdout(2, 0.5, seed=1)) == 1 and len(holdout(1, 0.5, seed=1)) == 0
    assert len(holdout(10, 0.0, seed=1)) == 0


def _separable(n=240, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return CachedFeatures({"pooled": x}), y.numpy()


def _head_model(scenario, dim=16):
    from fedsilo.models.scoped import ScopedModel

    def never():
        raise AssertionError("the backbone is not needed for cached features")

    return ScopedModel(never, None, scenario.model, num_labels=4, seed=0, hidden_size=dim)


def test_early_stopping_keeps_the_received_weights_when_training_only_hurts(scenario):
    source, y = _separable()
    model = _head_model(scenario)
    val = holdout(len(source), 0.2, seed=3)
    s = scenario.replace(**{"train.lr": 0.05, "train.local_epochs": 3})
    local_train(model, source, y, s.train, 1, torch.device("cpu"))  # a good model first
    good = model.get_arrays()
    noisy = y.copy()  # training rows relabelled at random, validation rows left true
    rest = np.setdiff1d(np.arange(len(y)), val)
    noisy[rest] = np.random.default_rng(0).integers(0, 4, len(rest))
    stats = local_train(model, source, noisy, s.train, 2, torch.device("cpu"),
                        validation=val)
    assert stats.best_epoch == 0 and stats.examples == len(rest)
    assert stats.steps == -(-len(rest) // s.train.batch_size)  # stopped after one epoch
    for k, v in model.get_arrays().items():
        np.testing.assert_array_equal(v, good[k], err_msg=k)  # sent back unchanged
    # without validation rows the same call trains all epochs on everything
    plain = local_train(model, source, noisy, s.train, 2, torch.device("cpu"))
    assert plain.best_epoch is None and plain.examples == len(y)


def test_early_stopping_keeps_the_best_epoch_and_its_loss(scenario):
    source, y = _separable()
    model = _head_model(scenario)
    s = scenario.replace(**{"train.lr": 0.05, "train.local_epochs": 3})
    val = holdout(len(source), 0.25, seed=3)
    stats = local_train(model, source, y, s.train, 1, torch.device("cpu"), validation=val)
    assert stats.best_epoch >= 1  # clean labels: training helps
    model.eval()
    logits = model.logits(source.rows(val))
    measured = float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(y[val])))
    assert measured == pytest.approx(stats.validation_loss, rel=1e-5)


def _bag_of_words_accuracy(msgs) -> float:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    x = CountVectorizer(ngram_range=(1, 1)).fit_transform([m.text for m in msgs])
    y = [m.label for m in msgs]
    return float(cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=3).mean())


def test_the_roles_task_defeats_a_bag_of_words_that_solves_the_intents_task():
    from fedsilo.data import synthetic

    hard = roles.generate(2, 2, 300, seed=3, size_spread=0.0)
    easy = synthetic.generate(2, 2, 300, seed=3, size_spread=0.0)
    assert hard == roles.generate(2, 2, 300, seed=3, size_spread=0.0)
    counts = Counter(m.label for m in hard)
    assert set(counts) == set(roles.LABELS) and min(counts.values()) > 0.15 * len(hard)
    easy_acc, hard_acc = _bag_of_words_accuracy(easy), _bag_of_words_accuracy(hard)
    assert easy_acc > 0.8 and hard_acc < 0.6, (easy_acc, hard_acc)  # 0.84 and 0.49 here
    # negation words appear under every label; order decides who acted
    for label in roles.LABELS:
        assert any(re.search(r"\bnot\b", m.text) for m in hard if m.label == label)


def test_the_roles_task_is_reachable_from_config(scenario):
    s = scenario.replace(**{"data.synthetic.task": "roles"})
    from fedsilo.data import build_federation, shared_labels

    fed = build_federation(s)
    assert tuple(fed.labels) == roles.LABELS == shared_labels(s)
    with pytest.raises(ConfigError, match=r"'data.synthetic.task' must be one of"):
        scenario.replace(**{"data.synthetic.task": "riddles"})
    with pytest.raises(ConfigError, match=r"'train.early_stopping' must be one of"):
        scenario.replace(**{"train.early_stopping": "sometimes"})
