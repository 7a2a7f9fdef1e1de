"""DP-SGD: the accounting against an independent accountant, the noise actually added,
and the clipping of every example's gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsilo.config import PrivacySection, TrainSection
from fedsilo.privacy import dpsgd
from fedsilo.training.features import CachedFeatures
from tests.helpers import LinearHead, dp_sgd_epsilon


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), [
    (1.0, 0.1, 200, 1e-4), (0.8, 0.25, 60, 1e-3), (2.0, 0.05, 1000, 1e-5),
    (1.2, 0.65, 15, 2e-3), (1.864, 0.274, 140, 8.55e-4), (5.0, 0.01, 10000, 1e-6),
])
def test_epsilon_matches_an_independent_accountant_within_one_percent(sigma, q, steps,
                                                                       delta):
    ours = dpsgd.epsilon(sigma, q, steps, delta)
    theirs = dp_sgd_epsilon(sigma, q, steps, delta)
    assert ours == pytest.approx(theirs, rel=0.01)


def test_noise_for_a_target_epsilon_lands_just_under_it():
    sigma = dpsgd.noise_for_target(4.0, q=0.1, steps=300, delta=1e-5)
    assert dpsgd.epsilon(sigma, 0.1, 300, 1e-5) <= 4.0
    assert dpsgd.epsilon(sigma * 0.99, 0.1, 300, 1e-5) > 4.0 * 0.99


def test_plan_defaults_delta_below_one_over_n_and_samples_by_batch():
    p = dpsgd.plan(PrivacySection(dp=True), TrainSection(batch_size=32, local_epochs=2),
                   n=320, rounds=5)
    assert p.delta == pytest.approx(1 / 3200) and p.delta < 1 / 320
    assert p.sampling_rate == pytest.approx(0.1) and p.steps_per_round == 20


def test_the_noise_added_has_the_configured_standard_deviation():
    # zero features: every per-example gradient is 0, so an SGD step (lr 1) moves the
    # weights by exactly -noise / (q n)
    n, d, k = 50, 40, 25
    model = LinearHead(d, k)
    w0 = model.head.weight.detach().clone()
    plan = dpsgd.DPPlan(noise_multiplier=1.5, max_grad_norm=0.8, sampling_rate=0.2,
                        steps_per_round=1, delta=1e-5)
    t = TrainSection(optimizer="sgd", lr=1.0)
    draws = []
    for seed in range(8):
        model.head.weight.data.copy_(w0)
        dpsgd.dp_train(model, CachedFeatures({"pooled": torch.zeros(n, d)}),
                       np.zeros(n, dtype=np.int64), t, plan, seed, torch.device("cpu"))
        draws.append(((w0 - model.head.weight.detach()) * (0.2 * n)).ravel())
    noise = torch.cat(draws)  # 8 000 draws
    assert float(noise.std()) == pytest.approx(1.5 * 0.8, rel=0.05)
    assert abs(float(noise.mean())) < 0.05


def test_every_examples_gradient_is_clipped():
    # huge features, no noise to speak of, every example in the one step (q = 1): the
    # update is the mean of clipped gradients, so its norm is at most C; with one example
    # it is exactly C
    torch.manual_seed(0)
    d, k, c = 6, 3, 0.5
    t = TrainSection(optimizer="sgd", lr=1.0)
    for n in (1, 7):
        model = LinearHead(d, k)
        w0 = model.head.weight.detach().clone()
        x = torch.randn(n, d) * 1000
        plan = dpsgd.DPPlan(noise_multiplier=1e-9, max_grad_norm=c, sampling_rate=1.0,
                            steps_per_round=1, delta=1e-5)
        dpsgd.dp_train(model, CachedFeatures({"pooled": x}), np.arange(n) % k, t, plan, 0,
                       torch.device("cpu"))
        update = float((w0 - model.head.weight.detach()).norm())
        raw = torch.nn.functional.cross_entropy(x[:1] @ w0.T, torch.tensor([0]))
        assert update <= c + 1e-6
        if n == 1:
            assert update == pytest.approx(c, rel=1e-4) and float(raw) > 1.0


@pytest.mark.parametrize("scope", ["head", "top-k", "lora"])
def test_the_batched_clipped_sum_equals_the_one_by_one_reference(scope, tmp_path_factory):
    """One backward pass for the batch gives every example's clipped gradient, summed, as
    one backward pass per example does (dropout off so both see the same network)."""
    import copy

    from fedsilo.config import ModelSection
    from fedsilo.models import backbone as bb
    from fedsilo.models.scoped import Batch, ScopedModel

    ref = bb.resolve("tiny", str(tmp_path_factory.getbasetemp() / "tiny-cache"))
    tokenizer, backbone = bb.load(ref.location)
    model = ScopedModel(copy.deepcopy(backbone), tokenizer,
                        ModelSection(scope=scope, top_k=1, dropout=0.0, lora_dropout=0.0),
                        num_labels=5, seed=0)
    for module in model.modules():  # BERT's own dropout too: both passes see one network
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train_mode()
    params = list(model.trainable().values())
    texts = [f"my card {i} was {'stolen' if i % 2 else 'blocked'} at the branch"
             for i in range(9)]
    batch = Batch(texts=texts)
    y = torch.tensor([i % 5 for i in range(9)])
    for c in (1e-3, 0.5, 1e3):  # all clipped, some, none
        want, want_losses = dpsgd.clipped_sum_loop(model, params, batch, y, c)
        with dpsgd.per_example_gradients(model) as clipped_sum:
            got, losses = clipped_sum(model, params, batch, y, c)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
        assert losses == pytest.approx(want_losses, rel=1e-5)
    assert all(getattr(p, "grad_sample", None) is None for p in params)  # hooks gone
    logits = model.logits(batch)  # the model works as before outside the block
    assert logits.shape == (9, 5)


def test_dropout_draws_a_mask_per_example_in_the_batched_pass():
    """Two identical examples in one batch get different dropout masks, so different
    per-example gradients (one mask for the whole batch would make them equal)."""
    torch.manual_seed(0)
    model = LinearHead(50, 3)
    model.drop = torch.nn.Dropout(0.5)
    model.logits = lambda batch: model.head(model.drop(batch.pooled))
    model.forward = model.logits
    model.train()
    params = list(model.trainable().values())
    from fedsilo.models.scoped import Batch

    x = torch.ones(2, 50)
    with dpsgd.per_example_gradients(model) as clipped_sum:
        logits = model(Batch(pooled=x))
        per = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0]),
                                                reduction="none")
        per.sum().backward()
        g = params[0].grad_sample
        assert not torch.allclose(g[0], g[1])
    del clipped_sum
