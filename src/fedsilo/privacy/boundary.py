"""The boundary: exactly what an institution's node may send, checked on every reply.

The names are those of fedsilo.protocol. A reply may carry only
- to a query (the handshake): a ConfigRecord ``info`` with INFO_KEYS;
- to a training message: the shared arrays it received (same names, shapes, float dtype;
  SCAFFOLD's variate delta too) and a MetricRecord ``metrics`` with TRAIN_METRICS; when the
  message asked for it (EVALUATE_FIRST), also a MetricRecord ``evaluation`` as below;
- to an evaluation message: a MetricRecord ``metrics`` with EVAL_METRICS, whose confusion
  matrix has one count per (true, predicted) label pair;
- to a message of the secure-aggregation protocol: only that stage's protocol record
  (public keys, encrypted key shares, the masked vector, key shares for unmasking), plus the
  training metrics with the masked vector; no arrays at all.
Anything else (a text, token ids, features, labels, an extra record) is refused before it
leaves the node.
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import Message

from fedsilo.protocol import (
    ARRAYS,
    CONFIG,
    CONFUSIONS,
    EVAL_METRICS,
    EVALUATE_FIRST,
    EVALUATION,
    INFO,
    INFO_KEYS,
    METRICS,
    SCAFFOLD_DELTA_C,
    SECAGG_RECORD,
    TRAIN_DECLARED,
)

SECAGG_STAGE_KEYS = ({"pk1", "pk2"}, {"dsts", "ctxts"}, {"masked_params"},
                     {"nids", "shares"})


def check_reply(received: Message, reply: Message) -> list[str]:
    """What in ``reply`` is not allowed out (empty when the reply is within bounds)."""
    kind = received.metadata.message_type.split(".")[0]
    c = reply.content
    problems: list[str] = []
    arrays, metrics, configs = (dict(c.array_records), dict(c.metric_records),
                                dict(c.config_records))
    if kind == "query":
        if set(configs) != {INFO} or arrays or metrics:
            problems.append(f"query reply records {sorted(c.keys())} != ['{INFO}']")
        elif set(configs[INFO].keys()) != INFO_KEYS:
            problems.append(f"handshake keys {sorted(configs[INFO].keys())}")
        return problems
    if kind == "train" and SECAGG_RECORD in received.content.config_records:
        return _check_secagg_reply(received, arrays, metrics, configs)
    if configs:
        problems.append(f"config records {sorted(configs)} in a {kind} reply")
    expected_metrics = {METRICS: TRAIN_DECLARED if kind == "train" else EVAL_METRICS}
    settings = received.content.config_records.get(CONFIG)
    if kind == "train" and settings is not None and settings.get(EVALUATE_FIRST, False):
        expected_metrics[EVALUATION] = EVAL_METRICS
    if set(metrics) != set(expected_metrics):
        problems.append(f"metric records {sorted(metrics)} (expected "
                        f"{sorted(expected_metrics)})")
    else:
        for name, declared in expected_metrics.items():
            extra = set(metrics[name].keys()) - declared
            if extra:
                problems.append(f"undeclared metrics {sorted(extra)}")
            for key in CONFUSIONS if declared is EVAL_METRICS else ():
                if key in metrics[name]:
                    n = len(metrics[name][key])
                    if int(round(n ** 0.5)) ** 2 != n:
                        problems.append(f"{key} of {n} values is not a label x label "
                                        f"matrix")
    sent = received.content.array_records.get(ARRAYS)
    if kind == "evaluate":
        if arrays:
            problems.append(f"array records {sorted(arrays)} in an evaluate reply")
        return problems
    expected = {k: (tuple(v.shape), v.dtype) for k, v in sent.items()} if sent else {}
    for name, rec in arrays.items():
        if name not in (ARRAYS, SCAFFOLD_DELTA_C):
            problems.append(f"undeclared array record '{name}'")
            continue
        got = {k: (tuple(v.shape), v.dtype) for k, v in rec.items()}
        if set(got) != set(expected):
            problems.append(f"'{name}' holds arrays {sorted(set(got) ^ set(expected))[:3]} "
                            f"that the shared part does not")
        for k, (shape, _dtype) in got.items():
            if k in expected and shape != expected[k][0]:
                problems.append(f"'{name}/{k}' has shape {shape}, the shared part "
                                f"{expected[k][0]}")
    if ARRAYS not in arrays:
        problems.append(f"no '{ARRAYS}' record in a train reply")
    return problems


def _check_secagg_reply(received: Message, arrays: dict, metrics: dict,
                        configs: dict) -> list[str]:
    problems: list[str] = []
    if arrays:
        problems.append(f"array records {sorted(arrays)} in a secure-aggregation reply")
    if set(configs) != {SECAGG_RECORD}:
        problems.append(f"config records {sorted(configs)} in a secure-aggregation reply")
        return problems
    keys = set(configs[SECAGG_RECORD].keys())
    if keys not in SECAGG_STAGE_KEYS:
        problems.append(f"secure-aggregation record holds {sorted(keys)}, not one stage's "
                        f"protocol values")
    if keys == {"masked_params"}:
        sent = received.content.array_records.get(ARRAYS)
        n = len(configs[SECAGG_RECORD]["masked_params"])
        if sent is not None and n != len(sent) + 1:
            problems.append(f"masked vector of {n} arrays for {len(sent)} shared arrays")
        if set(metrics) != {METRICS}:
            problems.append(f"metric records {sorted(metrics)} (expected ['{METRICS}'])")
        elif extra := set(metrics[METRICS].keys()) - TRAIN_DECLARED:
            problems.append(f"undeclared metrics {sorted(extra)}")
    elif metrics:
        problems.append(f"metric records {sorted(metrics)} in a key-exchange reply")
    return problems


def describe_reply(received: Message, reply: Message) -> dict:
    """The whole reply as an auditor sees it: every metric and config value, and each
    array's name, shape and dtype."""
    c = reply.content
    return {
        "type": received.metadata.message_type,
        "arrays": {r: {k: [list(v.shape), str(v.dtype)] for k, v in rec.items()}
                   for r, rec in c.array_records.items()},
        "metrics": {r: dict(rec) for r, rec in c.metric_records.items()},
        "configs": {r: {k: _plain(v) for k, v in rec.items()}
                    for r, rec in c.config_records.items()},
    }


def _plain(value):
    """A config value for the audit log; bytes (keys, ciphertexts, masked vectors) by size."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return f"<{len(value)} bytes>" if isinstance(value, bytes) else value


def append_audit(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(entry) + "\n")
