"""Every strategy's aggregate, computed by hand on small arrays and compared."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
)

from fedsilo.config import ConfigError, Scenario, TrainSection
from fedsilo.faults import attack_update, flip_labels, flips_labels
from fedsilo.protocol import SCAFFOLD_DELTA_C
from fedsilo.training import scaffold as sc
from strategies import RoundLedger, build_strategy
from tests.helpers import FakeGrid, LinearHead, reply, roster

pytestmark = pytest.mark.usefixtures("flower_identity")
ROSTER = roster([10 + i for i in range(5)])


def _reply(node: int, w: np.ndarray, n: int, extra: dict | None = None) -> Message:
    return reply(node, {"w": w}, {"num-examples": n, "train-loss": 1.0},
                 {k: {"w": v} for k, v in (extra or {}).items()}, dtype=np.float32)


def _strategy(name: str, **sets):
    s = Scenario().replace(**{"strategy.name": name, "train.optimizer": "sgd", **sets})
    return build_strategy(s, RoundLedger(ROSTER), num_nodes=5)


# five updates of a 3-vector; the last one is an outlier
W = [np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]), np.array([0.0, 4.0, 3.0]),
     np.array([1.5, 2.5, 2.0]), np.array([100.0, -100.0, 50.0])]
N = [10, 20, 30, 20, 20]
X0 = np.array([1.0, 1.0, 1.0])  # the global model before the round


def _aggregate(strategy, server_round=1, weights=W):
    replies = [_reply(10 + i, w, N[i]) for i, w in enumerate(weights)]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return arrays["w"].numpy()


def _fedavg(weights=W):
    return sum(w * n for w, n in zip(weights, N, strict=True)) / sum(N)


def test_fedavg_and_fedprox_aggregate_the_weighted_mean():
    np.testing.assert_allclose(_aggregate(_strategy("fedavg")), _fedavg(), rtol=1e-6)
    np.testing.assert_allclose(_aggregate(_strategy("fedprox")), _fedavg(), rtol=1e-6)


def test_fedprox_sends_mu_to_clients():
    st = _strategy("fedprox", **{"strategy.proximal_mu": 0.3})
    assert st.inner.proximal_mu == 0.3


def test_fedmedian_is_the_coordinatewise_median():
    np.testing.assert_allclose(_aggregate(_strategy("fedmedian")), [1.5, 2.0, 3.0])


def test_fedtrimmedavg_cuts_beta_from_each_end():
    got = _aggregate(_strategy("fedtrimmedavg", **{"strategy.trim_beta": 0.2}))
    # sorted per coordinate, drop 1 of 5 at each end, mean of the middle 3
    by_hand = [np.mean(sorted(w[j] for w in W)[1:4]) for j in range(3)]
    np.testing.assert_allclose(got, by_hand, rtol=1e-6)


def test_krum_picks_the_update_closest_to_its_neighbours():
    # f = 1 malicious: score = sum of squared distances to the n - f - 2 = 2 nearest others
    def score(i):
        d = sorted(float(((W[i] - W[j]) ** 2).sum()) for j in range(5) if j != i)
        return sum(d[:2])

    best = min(range(5), key=score)
    strategy = _strategy("krum")
    np.testing.assert_allclose(_aggregate(strategy), W[best], rtol=1e-6)
    assert strategy.ledger.selected[1] == [f"inst-{best}"]  # recorded: whom it kept


def test_multikrum_averages_the_best_scored_updates():
    def score(i):
        d = sorted(float(((W[i] - W[j]) ** 2).sum()) for j in range(5) if j != i)
        return sum(d[:2])

    keep = sorted(range(5), key=score)[:3]
    by_hand = sum(W[i] * N[i] for i in keep) / sum(N[i] for i in keep)
    strategy = _strategy("multikrum", **{"strategy.krum_select": 3})
    np.testing.assert_allclose(_aggregate(strategy), by_hand, rtol=1e-6)
    assert strategy.ledger.selected[1] == sorted(f"inst-{i}" for i in keep)
    assert "inst-4" not in strategy.ledger.selected[1]  # the outlier is rejected


def _start(strategy, x0: np.ndarray, server_round: int):
    """Let a server-optimiser strategy see the global model it sends (as in a round)."""
    strategy.configure_train(server_round, ArrayRecord({"w": Array(x0.astype(np.float32))}),
                             ConfigRecord(), FakeGrid(ROSTER))
    strategy.ledger.sent.clear()  # these tests reply for a subset on purpose


def test_fedavgm_applies_server_momentum_over_rounds():
    st = _strategy("fedavgm", **{"strategy.server_lr": 1.0, "strategy.server_momentum": 0.5})
    x = X0.copy()
    momentum = np.zeros(3)
    ups = [W[:4], [w + 1 for w in W[:4]]]
    for r, weights in enumerate(ups, start=1):
        _start(st, x, r)
        got = _aggregate(st, r, weights)
        avg = sum(w * n for w, n in zip(weights, N[:4], strict=True)) / sum(N[:4])
        pseudo_grad = x - avg
        momentum = pseudo_grad if r == 1 else 0.5 * momentum + pseudo_grad
        x = x - 1.0 * momentum
        np.testing.assert_allclose(got, x, rtol=1e-5)


def test_fedadam_follows_the_adam_update_on_the_pseudo_gradient():
    eta, tau, b1, b2 = 0.1, 1e-3, 0.9, 0.99
    st = _strategy("fedadam", **{"strategy.eta": eta, "strategy.tau": tau,
                                 "strategy.beta_1": b1, "strategy.beta_2": b2})
    x = X0.copy()
    m = np.zeros(3)
    v = np.zeros(3)
    for r in (1, 2):
        _start(st, x, r)
        got = _aggregate(st, r, W[:4])
        delta = sum(w * n for w, n in zip(W[:4], N[:4], strict=True)) / sum(N[:4]) - x
        m = b1 * m + (1 - b1) * delta
        v = b2 * v + (1 - b2) * delta**2
        # Flower's bias correction counts t = round + 1 (Adam proper would use t = round)
        eta_t = eta * np.sqrt(1 - b2 ** (r + 1)) / (1 - b1 ** (r + 1))
        x = x + eta_t * m / (np.sqrt(v) + tau)
        np.testing.assert_allclose(got, x, rtol=1e-4)


def test_scaffold_server_step_by_hand():
    x = {"w": np.array([1.0, 1.0])}
    c = {"w": np.array([0.1, -0.1])}
    dy = [{"w": np.array([0.2, 0.0])}, {"w": np.array([0.4, -0.2])}]
    dc = [{"w": np.array([1.0, 1.0])}, {"w": np.array([-1.0, 3.0])}]
    new_x, new_c = sc.server_update(x, c, dy, dc, server_lr=0.5, num_total=4)
    np.testing.assert_allclose(new_x["w"], [1.0 + 0.5 * 0.3, 1.0 + 0.5 * -0.1])
    np.testing.assert_allclose(new_c["w"], [0.1 + (2 / 4) * 0.0, -0.1 + (2 / 4) * 2.0])


def test_scaffold_client_variate_is_option_ii():
    c_i = {"w": np.array([0.5])}
    c = {"w": np.array([0.2])}
    x = {"w": np.array([1.0])}
    y = {"w": np.array([0.4])}
    got = sc.client_variate(c_i, c, x, y, steps=3, lr=0.1)
    np.testing.assert_allclose(got["w"], [0.5 - 0.2 + (1.0 - 0.4) / (3 * 0.1)])


def test_scaffold_strategy_sends_c_and_applies_deltas():
    st = _strategy("scaffold", **{"strategy.server_lr": 1.0})
    x0 = np.array([1.0, 2.0, 3.0])
    _start(st, x0, 1)
    dys = [np.array([0.1, 0.2, 0.3]), np.array([-0.1, 0.0, 0.1])]
    dcs = [np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])]
    replies = [_reply(10 + i, dys[i], N[i], {SCAFFOLD_DELTA_C: dcs[i]}) for i in range(2)]
    arrays, _ = st.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), x0 + (dys[0] + dys[1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(st.inner.control["w"], (2 / 5) * (dcs[0] + dcs[1]) / 2, rtol=1e-6)


def test_scaffold_needs_sgd():
    with pytest.raises(ConfigError, match="'strategy.name' = 'scaffold' needs "
                                          "'train.optimizer' = 'sgd'"):
        Scenario().replace(**{"strategy.name": "scaffold"})


def test_fedprox_term_is_mu_over_two_times_the_squared_norm():
    """One SGD step with mu > 0 moves w by lr * (grad + mu * (w - w_global))."""
    from fedsilo.training import local_train
    from fedsilo.training.features import CachedFeatures

    torch.manual_seed(0)
    a, b = LinearHead(2, 2), LinearHead(2, 2)
    b.load_state_dict(a.state_dict())
    x = torch.tensor([[1.0, -1.0]])
    feats = CachedFeatures({"pooled": x})
    labels = np.array([1])
    # a: plain SGD; b: with the proximal term. At the first step w == w_global, so the
    # term's gradient is zero and both agree; the second step shows the difference.
    t2 = TrainSection(local_epochs=2, batch_size=1, lr=0.1, optimizer="sgd")
    w0 = a.head.weight.detach().clone()
    local_train(a, feats, labels, t2, 0, torch.device("cpu"))
    local_train(b, feats, labels, t2, 0, torch.device("cpu"), prox_mu=2.0)
    # replay b by hand
    w = w0.clone().requires_grad_(True)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(x @ w.T, torch.tensor(labels))
        loss = loss + 2.0 / 2 * ((w - w0) ** 2).sum()
        (g,) = torch.autograd.grad(loss, w)
        w = (w - 0.1 * g).detach().requires_grad_(True)
    torch.testing.assert_close(b.head.weight, w.detach())
    assert not torch.allclose(a.head.weight, b.head.weight)


def test_attacks_transform_the_update_as_documented():
    from fedsilo.config import FaultsSection

    x = {"w": np.array([1.0, 1.0])}
    y = {"w": np.array([2.0, 0.5])}
    scale = attack_update(x, y, FaultsSection(behaviour="scale", scale=100.0), 0)
    np.testing.assert_allclose(scale["w"], [101.0, -49.0])
    flip = attack_update(x, y, FaultsSection(behaviour="sign_flip"), 0)
    np.testing.assert_allclose(flip["w"], [0.0, 1.5])
    noise = attack_update({"w": np.zeros(20000)}, {"w": np.ones(20000)},
                          FaultsSection(behaviour="noise", noise_std=2.0), 0)
    assert abs(noise["w"].std() - 2.0) < 0.05 and abs(noise["w"].mean()) < 0.05
    np.testing.assert_array_equal(flip_labels(np.array([0, 3, 7]), 8), [7, 4, 0])
    # boosted poisoning: trained on flipped labels (the client's part), then scaled
    boosted = FaultsSection(behaviour="label_flip_scale", scale=100.0)
    np.testing.assert_allclose(attack_update(x, y, boosted, 0)["w"], [101.0, -49.0])
    assert flips_labels(boosted) and flips_labels(FaultsSection(behaviour="label_flip"))
    assert not flips_labels(FaultsSection(behaviour="scale"))
    assert attack_update(x, y, FaultsSection(behaviour="label_flip"), 0) is y


def test_fedprox_puts_mu_in_every_training_message():
    st = _strategy("fedprox", **{"strategy.proximal_mu": 0.3})
    msgs = list(st.configure_train(1, ArrayRecord({"w": Array(X0.astype(np.float32))}),
                                   ConfigRecord(), FakeGrid(ROSTER)))
    assert len(msgs) == 5
    assert all(m.content["config"]["proximal-mu"] == 0.3 for m in msgs)


def test_fedadam_keeps_the_dtype_it_sent_and_its_state_is_checkpointable():
    st = _strategy("fedadam")
    x = X0.copy()
    for r in (1, 2, 3):
        _start(st, x, r)
        replies = [_reply(10 + i, w, N[i]) for i, w in enumerate(W[:4])]
        arrays, _ = st.aggregate_train(r, replies)
        assert arrays["w"].numpy().dtype == np.float32  # Flower's step size is float64
        x = arrays["w"].numpy()
    state = st.state()
    assert sorted(state) == ["m_t/w", "v_t/w"] and state["v_t/w"].shape == (3,)
    momentum = _strategy("fedavgm")
    _start(momentum, X0, 1)
    momentum.aggregate_train(1, [_reply(10 + i, w, N[i]) for i, w in enumerate(W[:4])])
    assert sorted(momentum.state()) == ["current/w", "momentum/w"]
    assert _strategy("fedavg").state() == {}


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad", "fedavgm", "scaffold"])
def test_a_restored_strategy_continues_exactly_as_the_original(name):
    """What a checkpoint keeps is enough: round 3 after restoring the state saved after
    round 2 gives the same global arrays, bit for bit."""
    def rounds(st, first, last, x):
        for r in range(first, last + 1):
            _start(st, x, r)
            extra = {SCAFFOLD_DELTA_C: [w * 0.1 for w in W]} if name == "scaffold" else {}
            replies = [_reply(10 + i, w * (1 + r / 10), N[i],
                              {k: v[i] for k, v in extra.items()}) for i, w in enumerate(W[:4])]
            arrays, _ = st.aggregate_train(r, replies)
            x = arrays["w"].numpy()
        return x

    original = _strategy(name)
    x2 = rounds(original, 1, 2, X0.copy())
    saved, scalars = original.state(), original.scalars()
    x3 = rounds(original, 3, 3, x2)
    restored = _strategy(name)
    restored.restore(saved, scalars)
    np.testing.assert_array_equal(rounds(restored, 3, 3, x2), x3)


def test_scaffold_client_correction_by_hand():
    """With correction c - c_i, each SGD step is w <- w - lr * (grad + c - c_i)."""
    from fedsilo.training import local_train
    from fedsilo.training.features import CachedFeatures

    torch.manual_seed(0)
    model = LinearHead(2, 3)
    w0 = model.head.weight.detach().clone()
    x = torch.tensor([[0.5, -1.0], [2.0, 1.0]])
    labels = np.array([2, 0])
    corr = torch.tensor([[0.1, -0.2], [0.0, 0.3], [-0.4, 0.05]])
    t = TrainSection(local_epochs=3, batch_size=2, lr=0.05, optimizer="sgd")
    stats = local_train(model, CachedFeatures({"pooled": x}), labels, t, 0,
                        torch.device("cpu"), correction={"head.weight": corr})
    w = w0.clone()
    for _ in range(3):
        w.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(x @ w.T, torch.tensor(labels))
        (g,) = torch.autograd.grad(loss, w)
        w = (w - 0.05 * (g + corr)).detach()
    torch.testing.assert_close(model.head.weight.detach(), w)
    assert stats.steps == 3
