"""Secure aggregation: the SecAgg+ protocol end to end, in process.

The server side is strategies/secagg.py on Flower's FedAvg; each node runs the real
node-side mods of clients/app.py (the boundary check, then clients/secagg.py around
Flower's secaggplus_mod) in front of a train handler that returns known weights. Only the
transport is replaced: ``LocalGrid`` hands each message to its node in this process.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)

from clients.boundary import boundary_guard
from clients.secagg import secure_aggregation
from fedsilo.config import ConfigError, Scenario
from strategies import RoundLedger, build_strategy
from strategies.secagg import SecAggFailure, share_counts
from tests.helpers import roster

pytestmark = pytest.mark.usefixtures("flower_identity")
SHAPES = {"head.weight": (8, 16), "head.bias": (8,)}
NODES = [101, 102, 103, 104, 105]
WEIGHTS = {101: 120, 102: 45, 103: 300, 104: 80, 105: 210}


def _scenario(**sets) -> Scenario:
    return Scenario().replace(**{"privacy.secagg.enabled": True, **sets})


class LocalGrid:
    """Delivers every message to its node's mod chain in this process; records what the
    server receives. ``fail`` maps node -> the protocol stage in which it raises."""

    def __init__(self, s: Scenario, updates: dict[int, dict[str, np.ndarray]],
                 fail: dict[int, str] | None = None):
        self.s, self.updates, self.fail = s, updates, fail or {}
        self.contexts = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(),
                                    run_config=s.flat()) for n in NODES}
        self.received: list[Message] = []

    def get_node_ids(self):
        return list(NODES)

    def _train(self, msg: Message, context: Context) -> Message:
        nid = msg.metadata.dst_node_id
        received = msg.content["arrays"]
        trained = {k: received[k].numpy() + self.updates[nid][k] for k in received.keys()}
        return Message(RecordDict({
            "arrays": ArrayRecord({k: Array(v.astype(np.float32)) for k, v in trained.items()}),
            "metrics": MetricRecord({"num-examples": WEIGHTS[nid],
                                     "train-loss": 0.5})}), reply_to=msg)

    def send_and_receive(self, messages, timeout=None):
        out = []
        for msg in messages:
            nid = msg.metadata.dst_node_id
            stage = msg.content.config_records["secaggplus_configs"].get("stage")

            def handler(m, ctx, nid=nid, stage=stage):
                if self.fail.get(nid) == stage:
                    raise RuntimeError(f"node {nid} lost in {stage}")
                return secure_aggregation(m, ctx, self._train)
            try:
                reply = boundary_guard(msg, self.contexts[nid], handler)
            except RuntimeError as exc:
                reply = Message(Error(code=1, reason=str(exc)), reply_to=msg)
            self.received.append(reply)
            out.append(reply)
        return out


def _run_round(s: Scenario, fail=None, seed=0):
    rng = np.random.default_rng(seed)
    updates = {n: {k: rng.normal(0, 0.05, shape) for k, shape in SHAPES.items()}
               for n in NODES}
    x = {k: rng.normal(0, 0.3, shape).astype(np.float32) for k, shape in SHAPES.items()}
    ledger = RoundLedger(roster(NODES))
    strategy = build_strategy(s, ledger, num_nodes=len(NODES),
                              max_weight=max(WEIGHTS.values()))
    grid = LocalGrid(s, updates, fail)
    arrays = ArrayRecord({k: Array(v) for k, v in x.items()})
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), grid))
    replies = grid.send_and_receive(msgs)
    new, _metrics = strategy.aggregate_train(1, replies)
    return x, updates, {k: new[k].numpy() for k in new.keys()}, grid, ledger


def _weighted_mean(updates, nodes, uniform=False):
    w = {n: 1.0 if uniform else WEIGHTS[n] for n in nodes}
    return {k: sum(w[n] * updates[n][k] for n in nodes) / sum(w.values()) for k in SHAPES}


def test_secure_sum_equals_fedavg_within_quantisation():
    s = _scenario()
    x, updates, new, _grid, ledger = _run_round(s)
    want = _weighted_mean(updates, NODES)
    # per coordinate each node's quantisation error is at most one step of 2 * clip / 2^bits
    step = 2 * s.privacy.secagg.clip_range / 2 ** s.privacy.secagg.quantization_bits
    bound = step * len(NODES) / (sum(WEIGHTS.values()) / max(WEIGHTS.values()))
    for k in SHAPES:
        err = np.abs((new[k].astype(np.float64) - x[k]) - want[k]).max()
        assert err <= bound + 1e-6, (k, err, bound)  # + float32 rounding of the result
        assert np.abs(want[k]).max() > 100 * bound  # the check is not trivially true
    report = ledger.secagg[1]
    assert report["survived"] == 5 and report["dropped"] == {}
    assert report["bytes_up"] > 0 and report["bytes_down"] > 0


def test_server_never_holds_an_individual_update():
    s = _scenario()
    _x, updates, _new, grid, _ledger = _run_round(s)
    assert grid.received, "no replies"
    for reply in grid.received:
        assert not reply.has_error()
        assert not list(reply.content.array_records), "an array left a node in the clear"
    masked = {}
    for reply in grid.received:
        rec = reply.content.config_records["secaggplus_configs"]
        if "masked_params" in rec:
            from flwr.common import bytes_to_ndarray

            vec = [bytes_to_ndarray(b) for b in rec["masked_params"]]
            masked[reply.metadata.src_node_id] = np.concatenate(
                [v.ravel() for v in vec[1:]]).astype(np.float64)
    assert sorted(masked) == NODES
    for nid, vec in masked.items():
        truth = np.concatenate([updates[nid][k].ravel() for k in SHAPES])
        corr = np.corrcoef(vec, truth)[0, 1]
        assert abs(corr) < 0.25, (nid, corr)  # masks look uniform: nothing of the update
        # masked values spread over the whole 32-bit ring, not around the quantised update
        assert vec.min() < 2 ** 28 and vec.max() > 2 ** 32 - 2 ** 28


def test_a_dropout_after_key_sharing_is_recovered():
    s = _scenario()
    x, updates, new, _grid, ledger = _run_round(s, fail={103: "collect_masked_vectors"})
    survivors = [n for n in NODES if n != 103]
    want = _weighted_mean(updates, survivors)
    for k in SHAPES:
        assert np.abs((new[k].astype(np.float64) - x[k]) - want[k]).max() < 1e-4
    assert list(ledger.secagg[1]["dropped"]) == ["inst-2"]
    assert ledger.secagg[1]["survived"] == 4


def test_two_neighbours_dropping_after_key_sharing_are_recovered():
    """Only the masks a dropped node shared with survivors are in the sum; those it shared
    with another dropped node never were, and must not be removed."""
    s = _scenario(**{"privacy.secagg.threshold": 2.0, "privacy.secagg.shares": 5.0})
    x, updates, new, _grid, ledger = _run_round(
        s, fail={102: "collect_masked_vectors", 104: "collect_masked_vectors"})
    want = _weighted_mean(updates, [101, 103, 105])
    for k in SHAPES:
        assert np.abs((new[k].astype(np.float64) - x[k]) - want[k]).max() < 1e-4
    assert sorted(ledger.secagg[1]["dropped"]) == ["inst-1", "inst-3"]


@pytest.mark.parametrize("stage", ["setup", "share_keys", "unmask"])
def test_a_dropout_in_any_other_stage_is_recovered(stage):
    x, updates, new, _grid, ledger = _run_round(_scenario(), fail={104: stage})
    # before masking: it is simply not in the sum; while unmasking: its vector is in the
    # sum and the others' shares remove its mask
    survivors = NODES if stage == "unmask" else [n for n in NODES if n != 104]
    want = _weighted_mean(updates, survivors)
    for k in SHAPES:
        assert np.abs((new[k].astype(np.float64) - x[k]) - want[k]).max() < 1e-4
    assert list(ledger.secagg[1]["dropped"]) == ["inst-3"]


def test_too_many_dropouts_stop_the_run_naming_them():
    s = _scenario(**{"privacy.secagg.threshold": 4.0, "privacy.secagg.shares": 5.0})
    with pytest.raises(SecAggFailure, match="inst-1.*inst-3|inst-3.*inst-1"):
        _run_round(s, fail={102: "collect_masked_vectors", 104: "collect_masked_vectors"})


def test_uniform_weights_under_institution_level_dp():
    s = _scenario(**{"privacy.central.mode": "client-fixed",
                     "privacy.central.noise_multiplier": 1e-6,
                     "privacy.central.clip_norm": 100.0})
    x, updates, new, _grid, ledger = _run_round(s)
    want = _weighted_mean(updates, NODES, uniform=True)
    for k in SHAPES:
        assert np.abs((new[k].astype(np.float64) - x[k]) - want[k]).max() < 1e-4
    assert ledger.central_dp[1]["epsilon"] > 0


def test_share_counts_follow_flower():
    s = _scenario().privacy.secagg
    assert share_counts(s, 5) == (5, 3)
    assert share_counts(s.__class__(shares=0.5, threshold=0.6), 10) == (5, 3)
    assert share_counts(s.__class__(shares=3.0, threshold=2.0), 10) == (3, 2)


@pytest.mark.parametrize("sets,field", [
    ({"strategy.name": "krum"}, "privacy.secagg.enabled"),
    ({"privacy.central.mode": "server-fixed"}, "privacy.central.mode"),
    ({"privacy.secagg.shares": 2.5}, "privacy.secagg.shares"),
    ({"privacy.secagg.shares": 4.0, "privacy.secagg.threshold": 4.0},
     "privacy.secagg.threshold"),
    ({"privacy.secagg.quantization_bits": 30}, "privacy.secagg.quantization_bits"),
])
def test_bad_secagg_settings_name_the_field(sets, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        _scenario(**sets)
