"""What an institution keeps between rounds, on its own side, and its copy on the
institution's own disk.

The node keeps its memory in its Flower node state (in memory) and, after every round that
changed it, also writes it to ``<cache dir>/state/<run>/<institution>/round-NNNN.npz``. A
resumed run (a new process, an empty node state) continues from that copy of the round
before, so SCAFFOLD's client variate, the DP-SGD steps spent and a personal model survive a
killed process.
The server never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsilo.arrays import Arrays
from fedsilo.files import save_arrays

# Snapshots kept per institution. With evaluation riding on training, round r-1's checkpoint
# is committed after the nodes trained round r, so a run killed just before round r's commit
# resumes from round r-1 while its nodes have already trained round r+1.
KEEP = 3


@dataclass
class Memory:
    """What an institution keeps between rounds, on its own side; never sent."""

    scaffold_variate: Arrays | None = None  # SCAFFOLD's c_i
    dp_steps: int | None = None  # DP-SGD steps taken in every round so far
    personal: Arrays | None = None  # personalize.method = 'ditto': the personal model
    round: int = 0  # the last round that updated it

    def empty(self) -> bool:
        return self.scaffold_variate is None and self.dp_steps is None and \
            self.personal is None


def snapshot_dir(cache_dir: str | Path, run_key: str, institution: str) -> Path:
    return Path(cache_dir) / "state" / run_key / institution


def store(directory: Path, memory: Memory) -> None:
    """Write ``memory`` after its round (atomically) and drop older snapshots."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"scaffold/{k}": v for k, v in (memory.scaffold_variate or {}).items()}
    arrays.update({f"personal/{k}": v for k, v in (memory.personal or {}).items()})
    if memory.dp_steps is not None:
        arrays["dp_steps"] = np.asarray(memory.dp_steps)
    save_arrays(directory / f"round-{memory.round:04d}.npz", arrays)
    for old in sorted(directory.glob("round-*.npz"))[:-KEEP]:
        old.unlink(missing_ok=True)


def restore(directory: Path, server_round: int) -> Memory | None:
    """The memory as it was after ``server_round``, or None if none was kept."""
    path = directory / f"round-{server_round:04d}.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        variate = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("scaffold/")}
        personal = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("personal/")}
        steps = int(z["dp_steps"]) if "dp_steps" in z.files else None
    return Memory(scaffold_variate=variate or None, dp_steps=steps, personal=personal or None,
                  round=server_round)


def restore_latest(directory: Path, server_round: int) -> Memory | None:
    """The memory after the last round up to ``server_round`` that updated it (an
    institution not sampled in some rounds keeps its memory of an earlier one)."""
    rounds = sorted(int(p.stem.split("-")[1]) for p in directory.glob("round-*.npz"))
    done = [r for r in rounds if r <= server_round]
    return restore(directory, done[-1]) if done else None
