"""Institution-level DP at the server: the accounting against an independent accountant,
the noise actually added, clipping (server and client side, fixed and adaptive), the
budget stop, and the settings it refuses."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
)

from fedsilo.config import ConfigError, Scenario
from fedsilo.privacy import central
from strategies import RoundLedger, build_strategy
from strategies.central_dp import PrivacyBudgetSpent
from tests.helpers import FakeGrid, gaussian_epsilon, reply, roster

pytestmark = pytest.mark.usefixtures("flower_identity")
NODES = [11, 12, 13, 14, 15]
ROSTER = roster(NODES)


def _strategy(mode: str, **sets):
    s = Scenario().replace(**{"privacy.central.mode": mode, **sets})
    return s, build_strategy(s, RoundLedger(ROSTER), num_nodes=len(NODES))


def _replies(x: dict, updates: list[dict], bits: list[int] | None = None) -> list[Message]:
    out = []
    for i, (n, u) in enumerate(zip(NODES, updates, strict=True)):
        metrics = {"num-examples": 10 * (i + 1), "train-loss": 1.0}
        if bits is not None:
            metrics["norm_bit"] = bits[i]
        out.append(reply(n, {k: x[k] + u[k] for k in x}, metrics, dtype=np.float32))
    return out


def _round(strategy, x: dict, updates: list[dict], bits=None, server_round: int = 1):
    arrays = ArrayRecord({k: Array(v.astype(np.float32)) for k, v in x.items()})
    msgs = list(strategy.configure_train(server_round, arrays, ConfigRecord(),
                                         FakeGrid(NODES)))
    new, _ = strategy.aggregate_train(server_round, _replies(x, updates, bits))
    return msgs, {k: new[k].numpy().astype(np.float64) - x[k] for k in x}


@pytest.mark.parametrize(("z", "rounds", "delta"), [
    (0.8, 1, 1e-5), (1.0, 20, 1e-5), (2.0, 20, 1e-3), (4.0, 200, 1e-6), (10.0, 50, 1e-5)])
def test_epsilon_matches_an_independent_accountant_within_one_percent(z, rounds, delta):
    ours = central.epsilon(z, rounds, delta)
    theirs = gaussian_epsilon(z, rounds, delta)
    assert ours == pytest.approx(theirs, rel=0.01)


def test_the_noise_on_the_mean_has_std_z_c_over_m():
    z, c = 1.3, 0.5
    _s, strategy = _strategy("server-fixed", **{"privacy.central.noise_multiplier": z,
                                                "privacy.central.clip_norm": c})
    np.random.seed(0)
    x = {"w": np.zeros(200_000)}
    zero = [{"w": np.zeros(200_000)} for _ in NODES]  # nothing to average: only noise
    _msgs, delta = _round(strategy, x, zero)
    want = z * c / len(NODES)
    assert delta["w"].std() == pytest.approx(want, rel=0.01)
    assert abs(delta["w"].mean()) < 5 * want / np.sqrt(200_000)


def test_server_side_clipping_bounds_each_update_and_weighs_all_equally():
    c = 1.0
    _s, strategy = _strategy("server-fixed", **{"privacy.central.noise_multiplier": 1e-9,
                                                "privacy.central.clip_norm": c})
    rng = np.random.default_rng(1)
    x = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    updates = [{k: rng.normal(0, s, v.shape) for k, v in x.items()}
               for s in (0.01, 0.1, 1.0, 5.0, 50.0)]
    _msgs, delta = _round(strategy, x, updates)
    clipped = []
    for u in updates:
        norm = np.sqrt(sum((v ** 2).sum() for v in u.values()))
        clipped.append({k: v * min(1.0, c / norm) for k, v in u.items()})
    for k in x:  # by hand: the plain mean of the clipped updates (weights ignored)
        want = np.mean([u[k] for u in clipped], axis=0)
        np.testing.assert_allclose(delta[k], want, atol=1e-5)


def _clip_update(x, y, norm: float, adaptive: bool):
    """The node's clipping step of a training round, on ``y`` trained from ``x``."""
    from types import SimpleNamespace

    from fedsilo.node.round import Instruction, Memory, RoundState, clip_on_node

    mode = "client-adaptive" if adaptive else "client-fixed"
    silo = SimpleNamespace(scenario=Scenario().replace(**{
        "privacy.central.mode": mode, "privacy.central.clipped_count_std": 1.0}))
    st = RoundState(silo, Instruction(1, x, clip_norm=norm), Memory(), seed=0, trained=y)
    clip_on_node(st)
    return st.trained, st.metrics


def test_client_side_clipping_on_the_node():
    rng = np.random.default_rng(2)
    x = {"w": rng.normal(size=(6, 5)).astype(np.float32), "b": np.zeros(5, np.float32)}
    big = {k: v + rng.normal(0, 3.0, v.shape).astype(np.float32) for k, v in x.items()}
    y, bit = _clip_update(x, big, 0.7, adaptive=True)
    norm = np.sqrt(sum(((y[k] - x[k]).astype(np.float64) ** 2).sum() for k in x))
    assert norm == pytest.approx(0.7, rel=1e-4) and bit == {"norm_bit": 1}
    small = {k: v + 1e-3 for k, v in x.items()}
    y, bit = _clip_update(x, small, 0.7, adaptive=True)
    assert bit == {"norm_bit": 0}
    np.testing.assert_allclose(y["w"], small["w"])
    _y, bit = _clip_update(x, big, 0.7, adaptive=False)
    assert bit == {}


def test_client_side_modes_send_the_norm_to_the_nodes():
    _s, strategy = _strategy("client-fixed", **{"privacy.central.clip_norm": 0.3})
    msgs, _ = _round(strategy, {"w": np.zeros(4)}, [{"w": np.ones(4) * 0.01}] * 5)
    assert all(m.content["config"]["clipping_norm"] == 0.3 for m in msgs)


def test_adaptive_clipping_moves_the_norm_toward_the_quantile():
    sets = {"privacy.central.noise_multiplier": 0.1, "privacy.central.clip_norm": 1.0}
    _s, strategy = _strategy("server-adaptive", **sets)
    x = {"w": np.zeros(10)}
    _round(strategy, x, [{"w": np.full(10, 10.0)}] * 5)  # every update clipped
    assert strategy.inner.clipping_norm > 1.0
    _s, strategy = _strategy("server-adaptive", **sets)
    _round(strategy, x, [{"w": np.full(10, 1e-4)}] * 5)  # none clipped
    assert strategy.inner.clipping_norm < 1.0


def test_epsilon_is_reported_per_round_and_the_budget_stops_the_next_round():
    z, delta = 2.0, 1e-5
    budget = (central.epsilon(z, 2, delta) + central.epsilon(z, 3, delta)) / 2
    _s, strategy = _strategy("server-fixed", **{"privacy.central.noise_multiplier": z,
                                                "privacy.central.max_epsilon": budget})
    x = {"w": np.zeros(4)}
    for r in (1, 2):
        _round(strategy, x, [{"w": np.ones(4) * 0.01}] * 5, server_round=r)
        assert strategy.ledger.central_dp[r]["epsilon"] == pytest.approx(
            central.epsilon(z, r, delta))
    with pytest.raises(PrivacyBudgetSpent, match="max_epsilon"):
        _round(strategy, x, [{"w": np.ones(4) * 0.01}] * 5, server_round=3)
    report = strategy.account.report(1.0, z, None)
    assert report["rounds"] == 2 and report["accounted_sampling_rate"] == 1.0
    assert "no amplification" in report["assumptions"]


@pytest.mark.parametrize("sets,field", [
    ({"privacy.central.mode": "server-fixed", "strategy.name": "fedadam"},
     "privacy.central.mode"),
    ({"privacy.central.mode": "server-adaptive", "privacy.central.noise_multiplier": 1.0},
     "privacy.central.noise_multiplier"),
    ({"privacy.central.mode": "everywhere"}, "privacy.central.mode"),
])
def test_bad_central_dp_settings_name_the_field(sets, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        Scenario().replace(**sets)


def test_a_budget_below_one_round_is_refused_before_the_run():
    from fedsilo.privacy import check_scenario

    s = Scenario().replace(**{"privacy.central.mode": "server-fixed",
                              "privacy.central.max_epsilon": 0.01})
    with pytest.raises(ConfigError, match=r"privacy\.central\.max_epsilon"):
        check_scenario(s)


@pytest.mark.slow  # a fresh interpreter: the import must happen for the first time
def test_accounting_leaves_the_root_logger_alone():
    """Opacus' import adds a root handler; left there it prints every library's debug log
    (Flower's, Ray's) on the console of a sweep."""
    import subprocess
    import sys

    code = ("import logging; from fedsilo.privacy.central import epsilon; "
            "epsilon(1.0, 3, 1e-5); assert logging.getLogger().handlers == [], "
            "logging.getLogger().handlers")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_servers_view_is_each_reply_as_received_before_its_own_clipping():
    """With attack.server_view the server keeps each institution's output-layer change as
    it arrived (the server clips it only afterwards), and skips one that did not train."""
    _s, strategy = _strategy("server-fixed", **{"privacy.central.clip_norm": 0.01,
                                                "attack.server_view": True})
    rng = np.random.default_rng(2)
    x = {"head.out.weight": rng.normal(size=(3, 4)), "head.out.bias": rng.normal(size=3)}
    updates = [{k: rng.normal(0, 1.0, v.shape) for k, v in x.items()} for _ in NODES]
    arrays = ArrayRecord({k: Array(v.astype(np.float32)) for k, v in x.items()})
    list(strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid(NODES)))
    replies = _replies(x, updates)
    replies[-1] = reply(NODES[-1], {k: x[k] for k in x},
                        {"num-examples": 0, "train-loss": 0.0}, dtype=np.float32)
    strategy.aggregate_train(1, replies)
    view = strategy.ledger.server_view[1]
    assert sorted(view["replies"]) == [ROSTER[n]["institution"] for n in NODES[:-1]]
    for i, n in enumerate(NODES[:-1]):
        got = view["replies"][ROSTER[n]["institution"]]
        sent = x["head.out.bias"].astype(np.float32).astype(np.float64)
        want = (x["head.out.bias"] + updates[i]["head.out.bias"]).astype(np.float32) - sent
        np.testing.assert_allclose(got["update"], want, atol=1e-6)  # unclipped
        assert got["examples"] == 10 * (i + 1) and len(got["logits"]) == 3
    assert "aggregate" not in view
