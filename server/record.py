"""The server's record of a run: one metrics row, checkpoint and progress line per round,
then the summary, the final head and the plot."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fedsilo.arrays import from_record
from fedsilo.config import Scenario
from fedsilo.files import save_arrays
from fedsilo.flower_compat import dp_wrapper_settings
from fedsilo.metrics import confusion_from_flat, scores_from_confusion
from fedsilo.protocol import RAY_NODE
from fedsilo.results import rows, stream
from fedsilo.results.checkpoint import commit_checkpoint, stage_checkpoint
from fedsilo.results.runlog import RunLog
from fedsilo.results.summary import summarise
from strategies import RoundLedger, Tracked, aggregate_evaluate_metrics


def _say(text: str) -> None:
    print(text, flush=True, file=sys.stdout)


def _node(value) -> str | None:
    """The Ray node that ran an institution (the first 12 hex digits of its id)."""
    return None if value is None else format(int(value), "012x")


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def restore_random_states(state: dict) -> None:
    """Put back the random states a checkpoint saved (see RunRecorder._state)."""
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy_random"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


class TargetReached(Exception):
    """Raised after the round whose global accuracy reached scenario.target_accuracy."""


class RunRecorder:
    """Per round: the metrics row, the checkpoint and the progress line; at the end: the
    summary, the final head and the plot."""

    def __init__(self, s: Scenario, run_dir: Path, ledger: RoundLedger, labels: list[str],
                 strategy: Tracked, startup: dict | None = None, resumed_from: int = 0,
                 stream: bool = False):
        self.s, self.run_dir, self.ledger, self.labels = s, run_dir, ledger, labels
        self.strategy = strategy  # its state goes into every checkpoint
        self.stream = stream  # print the records for `fedsilo submit` (fedsilo.facts)
        self.startup = dict(startup or {})
        self.t_start = time.perf_counter()
        self.t_round = self.t_start
        self.started_at = time.time()
        self.first_round_started: float | None = None
        self.first_round_started_at: float | None = None
        self.log = RunLog(run_dir, fresh=not resumed_from,
                                  tensorboard=s.output.tensorboard)
        self.rows = self.log.rows
        self.resumed_from = resumed_from
        if resumed_from:  # the rows of the rounds the checkpoint holds
            self.log.keep_until(resumed_from)
        self.last_arrays: ArrayRecord | None = None
        self.stopped_early = False

    # -- per round --------------------------------------------------------------------
    def on_round_start(self, server_round: int, num_nodes: int) -> None:
        if self.first_round_started is None:
            self.first_round_started = time.perf_counter()
            self.first_round_started_at = time.time()
            cache = "encoding their data once (cached afterwards)" if self.s.model.cache \
                else "encoding their data"
            _say(f"round {server_round}/{self.s.scenario.rounds}: {num_nodes} institutions "
                 f"training, {cache}...")

    def on_round_end(self, server_round: int, arrays: ArrayRecord) -> None:
        """After each round's aggregation and evaluation: the checkpoint's arrays, the
        metrics row, then the checkpoint's commit (so the committed checkpoint's round
        always has its row), and the progress line."""
        t0 = time.perf_counter()
        staged = stage_checkpoint(self.run_dir, server_round, from_record(arrays),
                                          self.strategy.state())
        now = time.perf_counter()
        row = self._row(server_round, now - self.t_round)
        row["timing"]["checkpoint_s"] = now - t0
        self.t_round = now
        self.log.append(row)
        commit_checkpoint(self.run_dir, server_round, staged, self._state())
        if self.stream:
            stream.emit("row", row)
        self._progress(row)
        self.last_arrays = arrays
        g = row["global"]
        target = self.s.scenario.target_accuracy
        if target > 0 and g["accuracy"] >= target and server_round < self.s.scenario.rounds:
            self.stopped_early = True
            _say(f"target accuracy {target} reached in round {server_round}: stopping")
            raise TargetReached()

    def _row(self, server_round: int, wall: float) -> rows.RoundRow:
        """The round's metrics row from what the ledger holds (fedsilo.results.rows maps
        the wire's names to the row's)."""
        from fedsilo.privacy.dpsgd import ACCOUNTANT, MECHANISM

        train = self.ledger.train.get(server_round, {})
        evals = self.ledger.evaluate.get(server_round, {})
        kinds = {i["institution"]: i["kind"] for i in self.ledger.roster.values()}
        attackers = self.s.faults.attackers()
        insts = {}
        for name in sorted(set(train) | set(evals), key=list(kinds).index):
            e, t = evals.get(name, {}), train.get(name, {})
            insts[name] = rows.institution_row(
                kinds[name], t, e, _node(t.get(RAY_NODE, e.get(RAY_NODE))),
                self.s.faults.behaviour if name in attackers else None,
                dp_names=(MECHANISM, ACCOUNTANT))
        if evals:
            g = aggregate_evaluate_metrics(
                [RecordDict({"m": MetricRecord(v)}) for v in evals.values()], "num-examples")
        else:
            g = {"accuracy": float("nan"), "macro-f1": float("nan"), "loss": float("nan"),
                 "num-examples": 0}
        n_train = sum(t["num-examples"] for t in train.values())
        train_loss = (sum(t["train-loss"] * t["num-examples"] for t in train.values())
                      / n_train) if n_train else None
        personal = None
        own = [e for e in evals.values() if "personal-confusion" in e]
        if own:  # every institution's own model on its own test split, confusions summed
            acc, f1 = scores_from_confusion(sum(
                confusion_from_flat(list(e["personal-confusion"]),
                                    int(round(len(e["personal-confusion"]) ** 0.5)))
                for e in own))
            personal = {"accuracy": acc, "macro_f1": f1, "institutions": len(own)}
        timing = dict(self.ledger.timing.get(server_round, {}))
        timing["client_train_s"] = sum(t.get("train-time-s", 0.0) for t in train.values())
        timing["client_eval_s"] = sum(e.get("eval-time-s", 0.0) for e in evals.values())
        book = self.ledger
        return rows.round_row(
            server_round, rows.global_row(g, train_loss), insts,
            bytes_up=book.bytes_up.get(server_round, 0),
            bytes_down=book.bytes_down.get(server_round, 0), wall_time_s=wall,
            elapsed_s=time.perf_counter() - self.t_start, timing=timing,
            personal=personal, secagg=book.secagg.get(server_round),
            central_dp=book.central_dp.get(server_round),
            selected=book.selected.get(server_round), dropped=book.dropped.get(server_round),
            server_view=book.server_view.get(server_round))

    def _state(self) -> dict:
        """What the checkpoint keeps besides arrays: the scenario's identity, the random
        states that sample institutions (Python's) and draw the server's DP noise
        (numpy's), and the strategy's scalar state."""
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return {"rounds": self.s.scenario.rounds, "seed": self.s.scenario.seed,
                "strategy": self.s.strategy.name, "labels": self.labels,
                "random": _jsonable(random.getstate()),
                "numpy_random": [kind, keys.tolist(), int(pos), int(has_gauss),
                                 float(cached)],
                "strategy_scalars": self.strategy.scalars()}

    def _progress(self, row: dict) -> None:
        r, total = row["round"], self.s.scenario.rounds
        later = [x["wall_time_s"] for x in self.rows[1:]]  # round 1 also encodes: not typical
        if later:
            eta = f"ETA {(total - r) * float(np.mean(later)):.0f}s"
        else:
            eta = "ETA 0s" if r == total else "ETA after round 2"
        g = row["global"]
        tl = f"{g['train_loss']:.3f}" if g["train_loss"] is not None else "-"
        worst = min((v["accuracy"] for v in row["institutions"].values()
                     if v["accuracy"] is not None), default=float("nan"))
        notes = ""
        if "central_dp" in row:
            notes += f"  eps {row['central_dp'].get('epsilon', 0.0):.2f}"
        dropped = {**(row.get("secagg") or {}).get("dropped", {}), **row.get("dropped", {})}
        if dropped:
            notes += f"  dropped: {', '.join(sorted(dropped))}"
        _say(f"round {r:>3}/{total}  acc {g['accuracy']:.3f}  macro-F1 {g['macro_f1']:.3f}  "
             f"worst inst acc {worst:.3f}  test loss {g['loss']:.3f}  train loss {tl}  "
             f"{row['wall_time_s']:.1f}s  {eta}{notes}")

    def _selection(self) -> dict:
        """Krum/MultiKrum: in how many rounds each institution's update was kept."""
        rounds = [r["selected"] for r in self.rows if "selected" in r]
        if not rounds:
            return {}
        names = [i["institution"] for i in self.ledger.roster.values()]
        return {"selected_rounds": {n: sum(n in kept for kept in rounds) for n in names}}

    def _privacy(self) -> dict:
        """Per institution, the accounting from the last round it reported; the server
        mechanism's; and secure aggregation's parameters and cost."""
        p = self.s.privacy
        last: dict[str, dict] = {}
        for row in self.rows:
            for name, v in row["institutions"].items():
                if "privacy" in v:
                    last[name] = v["privacy"]
        out: dict = {"institutions": last, "server": None, "secure_aggregation": None}
        account = self.strategy.account
        if account is not None:
            used = [r["central_dp"] for r in self.rows if "central_dp" in r]
            out["server"] = account.report(
                clip_norm=used[-1]["clipping_norm"] if used else p.central.clip_norm,
                update_noise_multiplier=used[-1]["update_noise_multiplier"] if used
                else p.central.noise_multiplier,
                clipped_count_std=dp_wrapper_settings(self.strategy).get("clipped_count_std"))
        if p.secagg.enabled:
            rounds = [r["secagg"] for r in self.rows if "secagg" in r]
            out["secure_aggregation"] = {
                "protocol": "SecAgg+ (Flower's secaggplus_mod on each node)",
                "shares": rounds[-1]["shares"] if rounds else None,
                "threshold": rounds[-1]["threshold"] if rounds else None,
                "clip_range": p.secagg.clip_range,
                "quantization_bits": p.secagg.quantization_bits,
                "rounds_with_dropouts": sum(1 for r in rounds if r["dropped"]),
                "mean_bytes_up": float(np.mean([r["bytes_up"] for r in rounds]))
                if rounds else 0.0,
                "mean_bytes_down": float(np.mean([r["bytes_down"] for r in rounds]))
                if rounds else 0.0}
        if not (last or out["server"] or out["secure_aggregation"]):
            out["note"] = ("no differential privacy or secure aggregation (privacy.dp = "
                           "false, privacy.central.mode = 'off', privacy.secagg.enabled = "
                           "false)")
        return out

    # -- end of run -------------------------------------------------------------------
    def finish(self, arrays: ArrayRecord) -> dict:
        wall = time.perf_counter() - self.t_start
        final = from_record(arrays)
        save_arrays(self.run_dir / "head.npz", final)
        before = (self.first_round_started or self.t_start) - self.t_start
        summary = summarise(
            self.rows,
            stopped_early=self.stopped_early,
            scenario=self.s.scenario.name,
            wall_time_s=wall,
            started_at=self.started_at,
            first_round_started_at=self.first_round_started_at,
            before_first_round_s=before,
            startup=self.startup,
            first_round_s=self.rows[0]["wall_time_s"],
            bytes={"up": sum(r["bytes_up"] for r in self.rows),
                   "down": sum(r["bytes_down"] for r in self.rows),
                   "per_round_up": self.rows[-1]["bytes_up"],
                   "per_round_down": self.rows[-1]["bytes_down"]},
            model={"backbone": self.s.model.backbone, "scope": self.s.model.scope,
                   "shared_parameters": int(sum(v.size for v in final.values()))},
            labels=self.labels,
            strategy={"name": self.s.strategy.name},
            malicious={n: self.s.faults.behaviour for n in sorted(self.s.faults.attackers())},
            resumed_from_round=self.resumed_from or None,
            **self._selection(),
            privacy=self._privacy())
        if self.stream:
            stream.emit("summary", summary)
            stream.emit_arrays(final)
        return self.log.finish(summary, plot=self.s.output.plot)
