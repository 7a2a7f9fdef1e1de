"""The ClientApp: one institution's node, as a thin Flower adapter.

Each handler reads the message, hands it to the institution's round (fedsilo.node.round)
and writes the reply. Only the shared arrays and declared metrics leave the node (the mods
in clients/boundary.py and clients/secagg.py see every reply last): no texts, token ids,
features or labels.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.boundary import boundary_guard
from clients.secagg import secure_aggregation
from clients.state import personal_model, recall, remember
from fedsilo import protocol
from fedsilo.arrays import from_record, to_record
from fedsilo.facts import cache_dir
from fedsilo.facts import read as read_facts
from fedsilo.node import memory
from fedsilo.node.round import Instruction, run_evaluation, run_training
from fedsilo.node.silo import Silo, ray_node, silo_for

# boundary_guard sees exactly what leaves the node: with secure aggregation, masked vectors
app = ClientApp(mods=[boundary_guard, secure_aggregation])


class InstitutionFailure(RuntimeError):
    """An error inside one institution's client, carrying its name to the server."""


@contextmanager
def failing_as(name: str, kind: str, stage: str):
    """Any error in ``stage`` names the institution (and the Ray node it ran on), so the
    server can say who failed where."""
    try:
        yield
    except Exception as exc:
        node = ray_node()
        where = f" on Ray node {node[1]}" if node else ""
        raise InstitutionFailure(f"institution '{name}' ({kind}) failed in {stage}{where}: "
                                 f"{type(exc).__name__}: {exc}") from exc


def _with_node(metrics: dict) -> dict:
    node = ray_node()
    return metrics if node is None else {**metrics, protocol.RAY_NODE: node[0]}


def _kept(silo: Silo, settings) -> Path:
    """Where this institution keeps its memory of the run the message names."""
    return memory.snapshot_dir(silo.runtime.scratch, str(settings.get(protocol.RUN_KEY,
                                                                      "run")), silo.name)


def _personal(silo: Silo, context: Context, kept, server_round: int):
    """The personal model (personalize.method 'ditto') or private output layer ('split')
    as round ``server_round`` left it."""
    if silo.scenario.personalize.method not in ("ditto", "split") or server_round < 1:
        return None
    return personal_model(context.state, kept, server_round)


def _silo(context: Context) -> Silo:
    """This node's institution for the message's run (the scenario is read once per
    process and run config: fedsilo.facts.read)."""
    s, facts = read_facts(dict(context.run_config))
    return silo_for(s, dict(context.node_config), cache_dir(s, facts))


@app.query()
def describe(msg: Message, context: Context) -> Message:
    """The handshake: which institution this node serves and how many examples it holds;
    any problem with its data is reported here, before round 1."""
    node = dict(context.node_config)
    name = node.get("institution", f"partition {node.get('partition-id', '?')}")
    with failing_as(str(name), str(node.get("kind", "kind unknown")), "the handshake"):
        info = ConfigRecord(_silo(context).describe())
    return Message(RecordDict({protocol.INFO: info}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    silo = _silo(context)
    settings = msg.content[protocol.CONFIG]
    server_round = int(settings[protocol.SERVER_ROUND])
    kept = _kept(silo, settings)
    evaluated = None
    if settings.get(protocol.EVALUATE_FIRST, False):  # the previous round's global model
        with failing_as(silo.name, silo.institution.kind,
                        f"evaluation (round {server_round - 1})"):
            evaluated = run_evaluation(silo, from_record(msg.content[protocol.ARRAYS]),
                                       _personal(silo, context, kept, server_round - 1))
    with failing_as(silo.name, silo.institution.kind, f"training (round {server_round})"):
        ins = Instruction(
            server_round=server_round,
            arrays=from_record(msg.content[protocol.ARRAYS], np.float32),
            proximal_mu=float(settings.get(protocol.PROXIMAL_MU, 0.0)),
            control=from_record(msg.content[protocol.SCAFFOLD_CONTROL], np.float32)
            if protocol.SCAFFOLD_CONTROL in msg.content else None,
            clip_norm=float(settings[protocol.CLIPPING_NORM])
            if protocol.CLIPPING_NORM in settings else None)
        mem = recall(context.state, kept, server_round, silo)
        reply = run_training(silo, ins, mem)
        remember(context.state, kept, mem)
    records = RecordDict({protocol.ARRAYS: to_record(reply.arrays, np.float32)})
    if reply.scaffold_delta_c is not None:
        records[protocol.SCAFFOLD_DELTA_C] = to_record(reply.scaffold_delta_c, np.float32)
    records[protocol.METRICS] = MetricRecord(_with_node(reply.metrics))
    if evaluated is not None:
        records[protocol.EVALUATION] = MetricRecord(_with_node(evaluated))
    return Message(records, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    silo = _silo(context)
    settings = msg.content[protocol.CONFIG]
    server_round = int(settings[protocol.SERVER_ROUND])
    kept = _kept(silo, settings)
    with failing_as(silo.name, silo.institution.kind, f"evaluation (round {server_round})"):
        metrics = run_evaluation(
            silo, from_record(msg.content[protocol.ARRAYS]),
            _personal(silo, context, kept, server_round),
            finetune=silo.scenario.personalize.method == "finetune"
            and bool(settings.get(protocol.FINAL, False)))
    return Message(RecordDict({protocol.METRICS: MetricRecord(_with_node(metrics))}),
                   reply_to=msg)
