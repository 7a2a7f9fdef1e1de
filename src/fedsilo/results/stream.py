"""The run's records as lines of the ServerApp's log, and the run directory rebuilt from them.

In a deployment the ServerApp runs on the SuperLink's host; whoever submitted the run is
elsewhere and hears from it only through Flower's log stream. With ``run.stream`` (set
by ``fedsilo submit``) the ServerApp prints, besides its progress lines, one line per
record: the resolved config, every metrics row, the summary, and the final shared arrays
(as npz, base64, in chunks). ``RunRebuilder`` reads those lines on the submitting machine
and writes the same files a local run directory holds.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np

from fedsilo.files import save_arrays
from fedsilo.results.runlog import RunLog

PREFIX = "@fedsilo "
CHUNK = 48_000  # base64 characters per line of the arrays


def emit(kind: str, data) -> None:
    """Print one record line (only the ServerApp calls this, with ``run.stream``: fedsilo.facts)."""
    print(PREFIX + json.dumps({"kind": kind, "data": data}), flush=True)


def emit_arrays(arrays: dict[str, np.ndarray]) -> None:
    """The final shared arrays, as an npz file in base64 chunks."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    text = base64.b64encode(buf.getvalue()).decode()
    chunks = [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]
    for i, chunk in enumerate(chunks):
        emit("arrays", {"part": i, "of": len(chunks), "b64": chunk})


def parse(line: str) -> tuple[str, object] | None:
    """(kind, data) of a record line; None for any other line."""
    start = line.find(PREFIX)
    if start < 0:
        return None
    try:
        record = json.loads(line[start + len(PREFIX):])
    except json.JSONDecodeError:
        return None
    return record.get("kind"), record.get("data")


class RunRebuilder:
    """Writes a run directory from record lines, as they arrive."""

    def __init__(self, run_dir: Path, plot: bool = True, tensorboard: bool = False):
        self.run_dir, self.plot = run_dir, plot
        self.log = RunLog(run_dir, tensorboard=tensorboard)
        self.summary: dict | None = None
        self._parts: dict[int, str] = {}
        self._of = 0

    def feed(self, line: str) -> bool:
        """Take one log line; True if it was a record."""
        parsed = parse(line)
        if parsed is None:
            return False
        kind, data = parsed
        if kind == "config":
            (self.run_dir / "config.toml").write_text(data)
        elif kind == "row":
            self.log.append(data)
        elif kind == "summary":
            self.summary = data
        elif kind == "arrays":
            self._parts[data["part"]] = data["b64"]
            self._of = data["of"]
        return True

    def complete(self) -> bool:
        return self.summary is not None and len(self._parts) == self._of > 0

    def finish(self) -> dict:
        """Write head.npz, summary.json and the plot; the summary."""
        blob = base64.b64decode("".join(self._parts[i] for i in range(self._of)))
        with np.load(io.BytesIO(blob)) as z:
            save_arrays(self.run_dir / "head.npz", {k: z[k] for k in z.files})
        return self.log.finish(self.summary, plot=self.plot)
