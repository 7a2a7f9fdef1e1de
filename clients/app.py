"""The ClientApp: one institution's node. It resolves its institution and data, trains the
shared part (the scope) on its private split, evaluates, and replies with that part's arrays
and metrics.

Only the shared arrays and declared metrics leave the node: no texts, token ids, features
or labels.
"""

from __future__ import annotations

import time
import zlib
from contextlib import contextmanager

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsilo import config
from fedsilo.silo import features, labels_of, resolve_institution, runtime_for
from fedsilo.training import evaluate, local_train

app = ClientApp()


class InstitutionFailure(RuntimeError):
    """An error inside one institution's client, carrying its name to the server."""


@contextmanager
def _as_institution(name: str, kind: str, stage: str):
    try:
        yield
    except InstitutionFailure:
        raise
    except Exception as exc:
        raise InstitutionFailure(f"institution '{name}' ({kind}) failed in {stage}: "
                                 f"{type(exc).__name__}: {exc}") from exc


def _setup(context: Context):
    scenario = config.from_flat(dict(context.run_config))
    fed, inst = resolve_institution(scenario, dict(context.node_config))
    torch.set_num_threads(max(1, int(scenario.simulation.cpus_per_client)))
    return scenario, fed, inst


@app.query()
def describe(msg: Message, context: Context) -> Message:
    """The handshake: which institution this node is, and the label set it trains on."""
    scenario, fed, inst = _setup(context)
    info = ConfigRecord({"institution": inst.name, "kind": inst.kind,
                         "index": fed.names().index(inst.name), "labels": list(fed.labels),
                         "num-train": len(inst.train_texts), "num-test": len(inst.test_texts)})
    return Message(RecordDict({"info": info}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    scenario, fed, inst = _setup(context)
    server_round = int(msg.content["config"]["server-round"])
    with _as_institution(inst.name, inst.kind, f"training (round {server_round})"):
        if inst.name in scenario.faults.crashing() and \
                server_round >= scenario.faults.crash_from_round:
            raise RuntimeError("injected crash (faults.crash)")
        t0 = time.perf_counter()
        rt = runtime_for(scenario)
        model = rt.model(scenario.model, len(fed.labels))
        model.set_arrays(msg.content["arrays"])
        index = fed.names().index(inst.name)
        seed = zlib.crc32(f"{scenario.scenario.seed}:{server_round}:{inst.name}".encode())
        stats = local_train(model, features(scenario, rt, model, inst, "train"),
                            labels_of(inst, "train"), scenario.train, seed, rt.device)
        metrics = MetricRecord({
            "num-examples": stats.examples, "institution-id": index,
            "train-loss": stats.loss, "train-loss-first-epoch": stats.first_loss,
            "steps": stats.steps, "train-time-s": time.perf_counter() - t0,
        })
        reply = RecordDict({"arrays": model.get_arrays(), "metrics": metrics})
    return Message(reply, reply_to=msg)


@app.evaluate()
def evaluate_head(msg: Message, context: Context) -> Message:
    scenario, fed, inst = _setup(context)
    server_round = int(msg.content["config"]["server-round"])
    with _as_institution(inst.name, inst.kind, f"evaluation (round {server_round})"):
        t0 = time.perf_counter()
        rt = runtime_for(scenario)
        model = rt.model(scenario.model, len(fed.labels))
        model.set_arrays(msg.content["arrays"])
        stats = evaluate(model, features(scenario, rt, model, inst, "test"),
                         labels_of(inst, "test"), len(fed.labels), rt.device)
        metrics = MetricRecord({
            "num-examples": stats.examples, "institution-id": fed.names().index(inst.name),
            "loss": stats.loss, "accuracy": stats.accuracy, "macro-f1": stats.macro_f1,
            "confusion": [int(v) for v in stats.confusion.ravel()],
            "eval-time-s": time.perf_counter() - t0,
        })
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
