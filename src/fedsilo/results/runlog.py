"""The two records every run directory holds, written the same way for federated runs,
baselines and deployed runs: ``metrics.jsonl`` (one row per round, appended and synced as
each round ends) and ``summary.json`` (written atomically at the end), with TensorBoard's
event files beside them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fedsilo.files import append_line, write_json, write_lines
from fedsilo.results.rows import read_rows


class RunLog:
    def __init__(self, run_dir: Path, fresh: bool = True, tensorboard: bool = False):
        from fedsilo.results.tracking import TensorBoard

        self.run_dir = run_dir
        self.rows: list[dict] = []
        self.tb = TensorBoard(run_dir) if tensorboard else None
        if fresh:
            (run_dir / "metrics.jsonl").write_text("")

    def append(self, row: dict) -> None:
        self.rows.append(row)
        append_line(self.run_dir / "metrics.jsonl", json.dumps(row))
        if self.tb is not None:
            self.tb.row(row)

    def keep_until(self, server_round: int) -> list[dict]:
        """A resumed run: the rows up to ``server_round`` (the checkpoint's), rewritten;
        rows of rounds after it were never committed."""
        self.rows[:] = [r for r in read_rows(self.run_dir) if r["round"] <= server_round]
        write_lines(self.run_dir / "metrics.jsonl", [json.dumps(r) for r in self.rows])
        if self.tb is not None:  # the event files again, without the rounds undone
            self.tb.close()
            shutil.rmtree(self.tb.dir, ignore_errors=True)
            for row in self.rows:
                self.tb.row(row)
        return self.rows

    def finish(self, summary: dict, plot: bool) -> dict:
        """Write ``summary`` (see ``results.summary.summarise``) and, with ``plot``,
        accuracy.png."""
        from fedsilo.results.plots import plot_accuracy

        if self.tb is not None:
            self.tb.close()
        write_json(self.run_dir / "summary.json", summary)
        if plot:
            plot_accuracy(self.run_dir, self.rows)
        return summary
