"""Reading a run directory's metrics rows (imported by every module that reads them)."""

from __future__ import annotations

import json
from pathlib import Path


def read_rows(run_dir: Path) -> list[dict]:
    """A run directory's metrics rows (``metrics.jsonl``), one per round; none if absent."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] \
        if path.is_file() else []
