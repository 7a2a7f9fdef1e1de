"""The ServerApp, read top to bottom: scenario -> roster of institutions -> initial shared
arrays -> strategy -> rounds (train, evaluate, record, checkpoint) -> summary."""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedsilo import config
from fedsilo.arrays import to_record
from fedsilo.data import shared_labels
from fedsilo.facts import RunFacts, cache_dir, expected_institutions
from fedsilo.facts import read as read_facts
from fedsilo.flower_compat import faster_object_pulls
from fedsilo.interrupt import Interrupted
from fedsilo.models import Head
from fedsilo.models import backbone as bb
from fedsilo.models.scoped import ScopedModel
from fedsilo.privacy import check_scenario
from fedsilo.protocol import FINAL, PRIVATE_PREFIX, RUN_KEY
from fedsilo.results import stream
from fedsilo.results.checkpoint import read_checkpoint
from fedsilo.results.rundir import FAILED, INCOMPLETE, RunDirectory, new_run_dir
from fedsilo.results.summary import final_table, privacy_table
from server import fused
from server.handshake import handshake
from server.record import RunRecorder, TargetReached, _say, restore_random_states
from server.transport import FastGrid, exchange
from strategies import RoundLedger, Tracked, build_strategy
from strategies.central_dp import PrivacyBudgetSpent

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    s, facts = read_facts(dict(context.run_config))
    check_scenario(s)
    if facts.dir:  # `fedsilo run` made it, and finalises it after checking the outcome
        try:
            run(grid, s, facts, Path(facts.dir))
        except Interrupted:
            return  # stopped by a signal: `fedsilo run` reports it and cleans up
        return
    # `flwr run`: this app owns the directory and finalises it
    with RunDirectory(new_run_dir(s).resolve()) as rd:
        run(grid, s, facts, rd.path)
    _say(f"results: {rd.final}")


def run(grid: Grid, s: config.Scenario, facts: RunFacts, run_dir: Path) -> None:
    """All rounds of scenario ``s`` (or, with ``facts.resume``, the rounds after the run's
    last checkpoint), recorded in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    resumed = read_checkpoint(run_dir) if facts.resume else None
    random.seed(s.scenario.seed)  # Flower samples institutions with the global `random`
    resolved = config.to_toml(s)  # the scenario as a user re-runs it
    if resumed is None:
        (run_dir / "config.toml").write_text(resolved)
    if facts.stream:
        stream.emit("config", resolved)

    t0 = time.time()
    faster_object_pulls()  # replies are pulled as soon as their content is there
    labels = list(shared_labels(s, facts.label_names()))
    roster = handshake(FastGrid(grid), s, *expected_institutions(s, facts))
    # sample by institution name, never by the (random) node ids
    grid = FastGrid(grid, order={n: i["institution"] for n, i in roster.items()})
    t_handshake = time.time()
    _say(f"{len(roster)} institutions: " + ", ".join(
        f"{i['institution']} ({i['kind']}, {i['num-train']} train / {i['num-test']} test)"
        for i in roster.values()))

    ledger = RoundLedger(roster)
    strategy = build_strategy(s, ledger, num_nodes=len(roster),
                              max_weight=max(int(i["num-train"]) for i in roster.values()))
    np.random.seed(s.scenario.seed)  # Flower's DP wrappers draw their noise from numpy
    if resumed is None:
        arrays, first = initial_arrays(s, len(labels), cache_dir(s, facts)), 1
    else:
        state, shared, strategy_arrays = resumed
        arrays, first = to_record(shared), int(state["round"]) + 1
        strategy.restore(strategy_arrays, state.get("strategy_scalars", {}))
        restore_random_states(state)
        _say(f"resuming after round {state['round']} of {s.scenario.rounds}")
    startup = {"server_started_at": t0, "handshake_s": t_handshake - t0,
               "initial_arrays_s": time.time() - t_handshake}
    recorder = RunRecorder(s, run_dir, ledger, labels, strategy, startup,
                           resumed_from=first - 1, stream=facts.stream)
    try:
        final = run_rounds(grid, strategy, recorder, arrays, s, first, run_dir.name)
    except TargetReached:
        final = recorder.last_arrays
    except PrivacyBudgetSpent as exc:
        if recorder.last_arrays is None:
            raise
        _say(f"privacy budget: {exc}: stopping")
        recorder.stopped_early = True
        final = recorder.last_arrays
    summary = recorder.finish(final)
    _say("\n" + final_table(summary))
    privacy = privacy_table(summary)
    if privacy:
        _say("\nprivacy:\n" + privacy)


def run_rounds(grid: Grid, strategy: Tracked, recorder: RunRecorder, arrays: ArrayRecord,
               s: config.Scenario, first: int, run_key: str) -> ArrayRecord:
    """Rounds ``first``..N: train the sampled institutions and aggregate, evaluate,
    record. ``run_key`` names the run to the nodes (where they keep their memory).

    With evaluation riding on training (server/fused.py), round r's messages also evaluate
    round r-1's global arrays, so round r-1 is recorded once round r's replies are in; the
    last round gets an evaluation of its own."""
    timeout = s.strategy.round_timeout_s
    key = run_key.removesuffix(INCOMPLETE).removesuffix(FAILED)
    pending = None  # with evaluation riding on training: the round awaiting its evaluation

    def evaluate_alone(server_round: int, last: bool = False) -> None:
        evaluate_round(grid, strategy, recorder, arrays, server_round, timeout, ConfigRecord(
            {RUN_KEY: key, FINAL: last or server_round == s.scenario.rounds}))

    for r in range(first, s.scenario.rounds + 1):
        try:
            msgs = list(strategy.configure_train(r, arrays, ConfigRecord({RUN_KEY: key}),
                                                 grid))
        except PrivacyBudgetSpent:
            if pending is not None:
                evaluate_alone(pending, last=True)
            raise
        recorder.on_round_start(r, len(msgs))
        riders: dict = {}
        if pending is not None:
            evals = strategy.configure_evaluate(
                pending, arrays, ConfigRecord(), grid,
                riding={m.metadata.dst_node_id for m in msgs})
            msgs, riders = fused.fuse(msgs, list(evals))
        replies = exchange(grid, msgs, timeout)
        if pending is not None:
            replies, evaluated = fused.split(replies, riders)
            strategy.stop_if_training_failed(r, replies)
            strategy.aggregate_evaluate(pending, evaluated)
            recorder.on_round_end(pending, arrays)
        new, _ = strategy.aggregate_train(r, replies)
        if new is not None:
            arrays = new
        if fused.fuses(s):
            pending = r
        else:
            evaluate_alone(r)
    if pending is not None:
        evaluate_alone(pending)
    return arrays


def evaluate_round(grid: Grid, strategy: Tracked, recorder: RunRecorder,
                   arrays: ArrayRecord, server_round: int, timeout: float,
                   settings: ConfigRecord | None = None) -> None:
    """Evaluate round ``server_round``'s global ``arrays`` with evaluate messages, and
    record the round."""
    msgs = strategy.configure_evaluate(server_round, arrays, settings or ConfigRecord(), grid)
    strategy.aggregate_evaluate(server_round, exchange(grid, msgs, timeout))
    recorder.on_round_end(server_round, arrays)


def initial_arrays(s: config.Scenario, num_labels: int, cache: str | None = None
                   ) -> ArrayRecord:
    """The shared part at round 0: pretrained weights where they train, a seeded head (and
    seeded LoRA adapters); a built backbone ('tiny') is kept under ``cache``."""
    ref = bb.resolve(s.model.backbone, str(Path(cache or s.simulation.cache_dir).resolve()))
    if s.model.scope == "head":  # the backbone stays frozen: its weights are not needed
        with torch.random.fork_rng():
            torch.manual_seed(s.scenario.seed)  # as ScopedModel seeds its head
            head = Head(ref.hidden_size, num_labels, s.model.head_hidden, s.model.dropout)
        return to_record(_shared_only(s, {f"head.{k}": v.detach().numpy().copy()
                                          for k, v in head.state_dict().items()}))
    tokenizer, backbone = bb.load(ref.location)
    # the scope unfreezes or wraps weights: work on a copy of the process's frozen backbone
    model = ScopedModel(copy.deepcopy(backbone), tokenizer, s.model, num_labels,
                        seed=s.scenario.seed)
    arrays = to_record(_shared_only(s, model.get_arrays()))
    del model
    return arrays


def _shared_only(s: config.Scenario, arrays: dict) -> dict:
    """Without what stays at the institutions (personalize.method = 'split': the output
    layer)."""
    split = s.personalize.method == "split"
    return {k: v for k, v in arrays.items() if not (split and k.startswith(PRIVATE_PREFIX))}
