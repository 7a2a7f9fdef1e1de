"""FedAvg weighting and the loud-failure bookkeeping, checked by hand on small arrays."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Error, Message, MessageType, MetricRecord, RecordDict

from fedsilo.config import Scenario
from strategies import ClientFailure, RoundLedger, aggregate_evaluate_metrics, build_strategy
from tests.helpers import reply as _reply

ROSTER = {10: {"institution": "bank-1", "kind": "bank"},
          11: {"institution": "bank-2", "kind": "bank"},
          12: {"institution": "hospital-1", "kind": "hospital"}}


def _strategy():
    return build_strategy(Scenario(), RoundLedger(ROSTER), num_nodes=3)


def test_fedavg_weights_by_true_number_of_examples(flower_identity):
    w = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[0.0, 0.0], [0.0, 8.0]]),
         np.array([[10.0, -2.0], [1.0, 1.0]])]
    b = [np.array([1.0]), np.array([3.0]), np.array([2.0])]
    n = [30, 10, 60]
    replies = [_reply(node, {"out.weight": w[i], "out.bias": b[i]},
                      {"num-examples": n[i], "train-loss": 1.0})
               for i, node in enumerate(ROSTER)]
    arrays, _ = _strategy().aggregate_train(1, replies)
    # by hand: (30*w0 + 10*w1 + 60*w2) / 100
    expected_w = np.array([[(30 * 1 + 0 + 600) / 100, (60 + 0 - 120) / 100],
                           [(90 + 0 + 60) / 100, (120 + 80 + 60) / 100]])
    expected_b = np.array([(30 * 1 + 10 * 3 + 60 * 2) / 100])  # 1.8
    np.testing.assert_allclose(arrays["out.weight"].numpy(), expected_w)
    np.testing.assert_allclose(arrays["out.bias"].numpy(), expected_b)


def test_ledger_records_per_institution_metrics_and_bytes(flower_identity):
    s = _strategy()
    replies = [_reply(node, {"w": np.ones(5, dtype=np.float32)},
                      {"num-examples": 4, "train-loss": 0.5})
               for node, info in ROSTER.items()]
    s.aggregate_train(3, replies)
    assert set(s.ledger.train[3]) == {"bank-1", "bank-2", "hospital-1"}
    assert s.ledger.bytes_up[3] == 3 * 5 * 4


def test_a_client_error_names_the_institution_and_stops_the_round(flower_identity):
    s = _strategy()
    good = _reply(10, {"w": np.ones(2)}, {"num-examples": 1,
                                          "train-loss": 0.1})
    sent = Message(RecordDict(), message_type=MessageType.TRAIN, dst_node_id=11)
    wrapped = ("<class 'ray.exceptions.RayTaskError'>:<'ray::ClientAppActor.run()\n  File x\n"
               "Exception ClientAppException occurred. Message: institution 'bank-2' (bank) "
               "failed in training (round 2): ValueError: boom'>")
    bad = Message(Error(code=1, reason=wrapped), reply_to=sent)
    with pytest.raises(ClientFailure) as err:
        s.aggregate_train(2, [good, bad])
    assert str(err.value) == ("institution 'bank-2' (bank) failed in training (round 2): "
                              "ValueError: boom")


def test_an_unwrapped_error_is_attributed_by_node_id(flower_identity):
    s = _strategy()
    sent = Message(RecordDict(), message_type=MessageType.TRAIN, dst_node_id=12)
    bad = Message(Error(code=1, reason="actor died"), reply_to=sent)
    with pytest.raises(ClientFailure, match="institution 'hospital-1' failed in training "
                                            r"\(round 1\): actor died"):
        s.aggregate_train(1, [bad])


def test_a_missing_reply_is_a_failure(flower_identity):
    s = _strategy()
    s.ledger.sent[(4, "training")] = [10, 11]
    good = _reply(10, {"w": np.ones(2)}, {"num-examples": 1,
                                          "train-loss": 0.1})
    with pytest.raises(ClientFailure, match="'bank-2' sent no training reply in round 4"):
        s.aggregate_train(4, [good])


def test_global_metrics_come_from_summed_confusion_matrices():
    # bank: 3 right of 4; hospital: 1 right of 2 (2 labels)
    recs = [RecordDict({"m": MetricRecord({"confusion": [2, 1, 0, 1], "loss": 0.5,
                                           "num-examples": 4})}),
            RecordDict({"m": MetricRecord({"confusion": [0, 1, 0, 1], "loss": 2.0,
                                           "num-examples": 2})})]
    g = aggregate_evaluate_metrics(recs, "num-examples")
    assert g["accuracy"] == pytest.approx(4 / 6)
    # summed confusion [[2,2],[0,2]]: F1(label0) = 4/6, F1(label1) = 4/6
    assert g["macro-f1"] == pytest.approx(4 / 6)
    assert g["loss"] == pytest.approx((0.5 * 4 + 2.0 * 2) / 6)
    assert g["num-examples"] == 6


def test_short_reason_drops_rays_traceback():
    from strategies import short_reason

    reason = ("<class 'ray.exceptions.RayTaskError'>:<'ray::ClientAppActor.run()\n"
              "  File \"x.py\", line 3, in run\n    raise\n"
              "fedsilo.config.ConfigError: node config: partition-id 5 is out of range'>")
    assert short_reason(reason) == ("fedsilo.config.ConfigError: node config: partition-id 5 "
                                    "is out of range")
