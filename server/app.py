"""The ServerApp, read top to bottom: scenario -> roster of institutions -> initial head ->
strategy -> rounds (train, evaluate, record, checkpoint) -> summary."""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedsilo import config, results
from fedsilo.models import Head
from fedsilo.models import backbone as bb
from fedsilo.models.scoped import ScopedModel
from server.record import RunRecorder, TargetReached, _say
from strategies import ClientFailure, RoundLedger, build_strategy, short_reason
from strategies.central_dp import PrivacyBudgetSpent

app = ServerApp()


def handshake(grid: Grid, s: config.Scenario, wait_s: float = 60.0) -> dict[int, dict]:
    """Ask every node which institution it serves; return node id -> its description."""
    expected = config.known_institutions(s)
    deadline = time.monotonic() + wait_s
    nodes = list(grid.get_node_ids())
    while expected is not None and len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(1.0)
        nodes = list(grid.get_node_ids())
    if expected is not None and len(nodes) != expected:
        raise ClientFailure(f"the scenario has {expected} institutions but {len(nodes)} "
                            f"nodes are connected")
    msgs = [Message(RecordDict(), message_type=MessageType.QUERY, dst_node_id=n)
            for n in nodes]
    roster: dict[int, dict] = {}
    problems, answered = [], set()
    for reply in grid.send_and_receive(msgs, timeout=s.strategy.round_timeout_s):
        node = reply.metadata.src_node_id
        answered.add(node)
        if reply.has_error():
            problems.append(f"node {node} could not start: {short_reason(reply.error.reason)}")
        else:
            roster[node] = dict(reply.content["info"])
    problems += [f"node {n} did not answer the handshake"
                 for n in sorted(set(nodes) - answered)]
    if problems:
        raise ClientFailure("; ".join(problems))
    names = [info["institution"] for info in roster.values()]
    if len(set(names)) != len(names):
        raise ClientFailure(f"two nodes serve the same institution: {sorted(names)}")
    labels = {tuple(info["labels"]) for info in roster.values()}
    if len(labels) != 1:
        raise ClientFailure("institutions disagree on the label set")
    return dict(sorted(roster.items(), key=lambda kv: kv[1]["index"]))


def initial_arrays(s: config.Scenario, num_labels: int) -> ArrayRecord:
    """The shared part at round 0: pretrained weights where they train, a seeded head (and
    seeded LoRA adapters)."""
    ref = bb.resolve(s.model.backbone, str(Path(s.simulation.cache_dir).resolve()))
    if s.model.scope == "head":  # the backbone stays frozen: its weights are not needed
        with torch.random.fork_rng():
            torch.manual_seed(s.scenario.seed)  # as ScopedModel seeds its head
            head = Head(ref.hidden_size, num_labels, s.model.head_hidden, s.model.dropout)
        return ArrayRecord({f"head.{k}": Array(v.detach().numpy().copy())
                            for k, v in head.state_dict().items()})
    tokenizer, backbone = bb.load(ref.location)
    # the scope unfreezes or wraps weights: work on a copy of the process's frozen backbone
    model = ScopedModel(copy.deepcopy(backbone), tokenizer, s.model, num_labels,
                        seed=s.scenario.seed)
    arrays = model.get_arrays()
    del model
    return arrays


@app.main()
def main(grid: Grid, context: Context) -> None:
    s = config.from_flat(dict(context.run_config))
    if s.output.run_dir:  # `fedsilo run` made it, and finalises it after checking the outcome
        run(grid, s, Path(s.output.run_dir))
        return
    # `flwr run`: this app owns the directory and finalises it
    with results.RunDirectory(results.new_run_dir(s).resolve()) as rd:
        run(grid, s, rd.path)
    _say(f"results: {rd.final}")


def run(grid: Grid, s: config.Scenario, run_dir: Path) -> None:
    """All rounds of scenario ``s``, recorded in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    random.seed(s.scenario.seed)  # Flower samples institutions with the global `random`
    # the scenario as a user re-runs it: without this run's directory
    (run_dir / "config.toml").write_text(config.to_toml(s.replace(**{"output.run_dir": ""})))

    t0 = time.time()
    roster = handshake(grid, s)
    labels = list(next(iter(roster.values()))["labels"])
    t_handshake = time.time()
    _say(f"{len(roster)} institutions: " + ", ".join(
        f"{i['institution']} ({i['kind']}, {i['num-train']} train / {i['num-test']} test)"
        for i in roster.values()))

    initial = initial_arrays(s, len(labels))
    startup = {"server_started_at": t0, "handshake_s": t_handshake - t0,
               "initial_arrays_s": time.time() - t_handshake}

    ledger = RoundLedger(roster)
    recorder = RunRecorder(s, run_dir, ledger, labels, startup)
    strategy = build_strategy(s, ledger, num_nodes=len(roster),
                              max_weight=max(int(i["num-train"]) for i in roster.values()))
    np.random.seed(s.scenario.seed)  # Flower's DP wrappers draw their noise from numpy
    strategy.on_round_start = recorder.on_round_start
    recorder.strategy = strategy
    try:
        result = strategy.start(grid=grid, initial_arrays=initial,
                                num_rounds=s.scenario.rounds,
                                timeout=s.strategy.round_timeout_s, train_config=ConfigRecord(),
                                evaluate_config=ConfigRecord(),
                                evaluate_fn=recorder.on_round_end)
        final = result.arrays
    except TargetReached:
        final = recorder.last_arrays
    except PrivacyBudgetSpent as exc:
        if recorder.last_arrays is None:
            raise
        _say(f"privacy budget: {exc}: stopping")
        recorder.stopped_early = True
        final = recorder.last_arrays
    summary = recorder.finish(final)
    _say("\n" + results.final_table(summary))
    privacy = results.privacy_table(summary)
    if privacy:
        _say("\nprivacy:\n" + privacy)
