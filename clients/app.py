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
from pathlib import Path

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, KEY_NORM_BIT

from clients.secagg import secure_aggregation
from fedsilo import config
from fedsilo.faults import attack_update, flip_labels, flips_labels
from fedsilo.privacy.boundary import append_audit, check_reply, describe_reply
from fedsilo.privacy.central import clip_update
from fedsilo.privacy.dpsgd import dp_train
from fedsilo.privacy.dpsgd import plan as dp_plan
from fedsilo.silo import features, labels_of, resolve_institution, runtime_for
from fedsilo.training import TrainStats, evaluate, local_train
from fedsilo.training.scaffold import CONTROL_KEY, DELTA_C_KEY, STATE_KEY, client_variate


def boundary_guard(msg: Message, context: Context, call_next) -> Message:
    """Every reply passes here last: anything beyond the declared boundary is refused
    (fedsilo.privacy.boundary), and with ``output.audit`` the reply is recorded."""
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    problems = check_reply(msg, reply)
    scenario = config.from_flat(dict(context.run_config))
    if scenario.output.audit and scenario.output.run_dir:
        _, inst = resolve_institution(scenario, dict(context.node_config))
        entry = describe_reply(msg, reply) | {"round": _round_of(msg),
                                              "refused": problems}
        append_audit(Path(scenario.output.run_dir) / "audit" / f"{inst.name}.jsonl", entry)
    if problems:
        raise RuntimeError(f"reply refused at the privacy boundary: {'; '.join(problems)}")
    return reply


def _round_of(msg: Message) -> int:
    if "config" in msg.content:
        return int(msg.content["config"]["server-round"])
    return int(msg.metadata.group_id) if msg.metadata.group_id.isdigit() else 0


# boundary_guard sees exactly what leaves the node: with secure aggregation, masked vectors
app = ClientApp(mods=[boundary_guard, secure_aggregation])


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
    config = msg.content["config"]
    server_round = int(config["server-round"])
    with _as_institution(inst.name, inst.kind, f"training (round {server_round})"):
        if inst.name in scenario.faults.crashing() and \
                server_round >= scenario.faults.crash_from_round:
            raise RuntimeError("injected crash (faults.crash)")
        t0 = time.perf_counter()
        rt = runtime_for(scenario)
        model = rt.model(scenario.model, len(fed.labels))
        received = msg.content["arrays"]
        model.set_arrays(received)
        x = _numpy(received)
        seed = zlib.crc32(f"{scenario.scenario.seed}:{server_round}:{inst.name}".encode())
        malicious = inst.name in scenario.faults.attackers()
        labels = labels_of(inst, "train")
        if malicious and flips_labels(scenario.faults):
            labels = flip_labels(labels, len(fed.labels))
        scaffold = CONTROL_KEY in msg.content
        correction = None
        if scaffold:
            c = _numpy(msg.content[CONTROL_KEY])
            c_i = _numpy(context.state[STATE_KEY]) if STATE_KEY in context.state else \
                {k: np.zeros_like(v) for k, v in c.items()}
            correction = {k: torch.from_numpy(c[k] - c_i[k]) for k in c}
        source = features(scenario, rt, model, inst, "train")
        dp_metrics = {}
        if scenario.privacy.dp:
            stats, dp_metrics = _dp_round(scenario, context, model, source, labels, seed,
                                          rt.device)
        else:
            stats = local_train(model, source, labels, scenario.train, seed, rt.device,
                                prox_mu=float(config.get("proximal-mu", 0.0)),
                                correction=correction)
        y = _numpy(model.get_arrays())
        if malicious:
            y = attack_update(x, y, scenario.faults, seed)
        clip = {}
        if scenario.privacy.central.mode.startswith("client"):  # clipped on the node
            y, clip = _clip_update(x, y, float(config[KEY_CLIPPING_NORM]),
                                   scenario.privacy.central.mode == "client-adaptive")
        records = {}
        if scaffold:  # exactly what the protocol needs: the two deltas
            c_new = client_variate(c_i, c, x, y, stats.steps, scenario.train.lr)
            context.state[STATE_KEY] = _record(c_new)
            records["arrays"] = _record({k: y[k] - x[k] for k in x})
            records[DELTA_C_KEY] = _record({k: c_new[k] - c_i[k] for k in x})
        else:
            records["arrays"] = _record(y)
        records["metrics"] = MetricRecord({
            "num-examples": stats.examples, "institution-id": fed.names().index(inst.name),
            "train-loss": stats.loss, "train-loss-first-epoch": stats.first_loss,
            "steps": stats.steps, "train-time-s": time.perf_counter() - t0, **dp_metrics,
            **clip,
        })
    return Message(RecordDict(records), reply_to=msg)


def _dp_round(scenario, context: Context, model, source, labels, seed, device):
    """One round of DP-SGD, or none when it would exceed privacy.max_epsilon; the steps
    taken so far live in this node's state, so the accounting spans every round."""
    p = scenario.privacy
    dp = dp_plan(p, scenario.train, len(source), scenario.scenario.rounds)
    spent = int(context.state["dp"]["steps"]) if "dp" in context.state else 0
    stopped = p.max_epsilon > 0 and dp.epsilon_after(spent + dp.steps_per_round) > \
        p.max_epsilon
    if stopped:  # keeps the received weights, and weighs 0 in the aggregate
        stats = TrainStats(loss=0.0, first_loss=0.0, steps=0, examples=0)
    else:
        loss, steps = dp_train(model, source, labels, scenario.train, dp, seed, device)
        spent += steps
        stats = TrainStats(loss=loss, first_loss=loss, steps=steps, examples=len(source))
    context.state["dp"] = ConfigRecord({"steps": spent})
    return stats, {"dp-epsilon": dp.epsilon_after(spent), "dp-delta": dp.delta,
                   "dp-noise-multiplier": dp.noise_multiplier,
                   "dp-max-grad-norm": dp.max_grad_norm,
                   "dp-sampling-rate": dp.sampling_rate, "dp-steps": spent,
                   "dp-stopped": int(stopped)}


def _clip_update(x: dict, y: dict, norm: float, adaptive: bool) -> tuple[dict, dict]:
    """y with its update y - x clipped to L2 norm ``norm``; with adaptive clipping also the
    bit saying whether it was clipped (the server adapts the norm from these bits)."""
    clipped, bit = clip_update(x, y, norm)
    return clipped, ({KEY_NORM_BIT: int(bit)} if adaptive else {})


def _numpy(rec: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: np.array(v.numpy(), dtype=np.float32, copy=True) for k, v in rec.items()}


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.float32))
                        for k, v in arrays.items()})


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
