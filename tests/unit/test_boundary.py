"""The privacy boundary refuses anything but the shared arrays and declared metrics."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from fedsilo.privacy.boundary import check_reply

pytestmark = pytest.mark.usefixtures("flower_identity")
SHARED = {"head.out.weight": np.zeros((8, 4), np.float32),
          "head.out.bias": np.zeros(8, np.float32)}
TRAIN_M = {"num-examples": 3, "train-loss": 1.0,
           "train-loss-first-epoch": 2.0, "steps": 1, "train-time-s": 0.1}


def _arrays(d):
    return ArrayRecord({k: Array(v) for k, v in d.items()})


def _train_msg():
    return Message(RecordDict({"arrays": _arrays(SHARED),
                               "config": ConfigRecord({"server-round": 1})}),
                   message_type=MessageType.TRAIN, dst_node_id=1)


def _reply(sent, records):
    return Message(RecordDict(records), reply_to=sent)


def test_an_honest_train_reply_passes():
    sent = _train_msg()
    reply = _reply(sent, {"arrays": _arrays(SHARED), "metrics": MetricRecord(TRAIN_M)})
    assert check_reply(sent, reply) == []


@pytest.mark.parametrize(("extra", "problem"), [
    ({"texts": ConfigRecord({"t": ["my card was stolen"]})}, "config records ['texts']"),
    ({"features": _arrays({"x": np.zeros((3, 4), np.float32)})},
     "undeclared array record 'features'"),
])
def test_extra_records_are_refused(extra, problem):
    sent = _train_msg()
    reply = _reply(sent, {"arrays": _arrays(SHARED), "metrics": MetricRecord(TRAIN_M),
                          **extra})
    assert any(problem in p for p in check_reply(sent, reply))


def test_arrays_beyond_the_shared_part_or_reshaped_are_refused():
    sent = _train_msg()
    token_ids = {**SHARED, "token_ids": np.arange(12, dtype=np.float32)}
    reply = _reply(sent, {"arrays": _arrays(token_ids), "metrics": MetricRecord(TRAIN_M)})
    assert any("token_ids" in p for p in check_reply(sent, reply))
    reshaped = {**SHARED, "head.out.bias": np.zeros(9, np.float32)}
    reply = _reply(sent, {"arrays": _arrays(reshaped), "metrics": MetricRecord(TRAIN_M)})
    assert any("has shape (9,)" in p for p in check_reply(sent, reply))


def test_undeclared_metrics_are_refused():
    sent = _train_msg()
    leaky = MetricRecord({**TRAIN_M, "labels": [1, 0, 2]})
    reply = _reply(sent, {"arrays": _arrays(SHARED), "metrics": leaky})
    assert check_reply(sent, reply) == ["undeclared metrics ['labels']"]


def test_handshake_carries_only_the_declared_keys():
    sent = Message(RecordDict(), message_type=MessageType.QUERY, dst_node_id=1)
    info = {"institution": "bank-1", "kind": "bank", "num-train": 3, "num-test": 1}
    assert check_reply(sent, _reply(sent, {"info": ConfigRecord(info)})) == []
    leaky = ConfigRecord({**info, "sample": "my card was stolen"})
    assert check_reply(sent, _reply(sent, {"info": leaky})) != []
    where = ConfigRecord({**info, "data-path": "/srv/bank-1/messages.csv"})
    assert check_reply(sent, _reply(sent, {"info": where})) != []  # never where data lives


def test_evaluate_reply_with_arrays_is_refused():
    sent = Message(RecordDict({"arrays": _arrays(SHARED),
                               "config": ConfigRecord({"server-round": 1})}),
                   message_type=MessageType.EVALUATE, dst_node_id=1)
    m = MetricRecord({"num-examples": 1, "loss": 1.0, "accuracy": 1.0,
                      "macro-f1": 1.0, "confusion": [1, 0, 0, 0], "eval-time-s": 0.1})
    assert check_reply(sent, _reply(sent, {"metrics": m})) == []
    bad = _reply(sent, {"metrics": m, "arrays": _arrays(SHARED)})
    assert check_reply(sent, bad) == ["array records ['arrays'] in an evaluate reply"]
