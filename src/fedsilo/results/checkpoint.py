"""The checkpoint a run can be resumed from: ``checkpoint/round-NNNN.npz`` (the shared
arrays under ``shared/``, the strategy's state under ``strategy/``) and
``checkpoint/state.json`` (round, seeds, random states, which array file), committed after
the round's metrics row so that the committed checkpoint's round always has its row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedsilo.files import save_arrays, write_json


def stage_checkpoint(run_dir: Path, server_round: int, arrays: dict[str, np.ndarray],
                     strategy_arrays: dict[str, np.ndarray]) -> str:
    """Write the arrays of the checkpoint after ``server_round``; they count only once
    ``commit_checkpoint`` points to them."""
    ckpt = run_dir / "checkpoint"
    ckpt.mkdir(exist_ok=True)
    name = f"round-{server_round:04d}.npz"
    save_arrays(ckpt / name, {**{f"shared/{k}": v for k, v in arrays.items()},
                              **{f"strategy/{k}": v for k, v in strategy_arrays.items()}})
    return name


def commit_checkpoint(run_dir: Path, server_round: int, name: str, state: dict) -> None:
    """Make the staged checkpoint the run's: ``state.json`` is replaced last, so a kill at
    any point leaves a complete earlier or later checkpoint, never a mix. Older array files
    are removed."""
    ckpt = run_dir / "checkpoint"
    write_json(ckpt / "state.json", {**state, "round": server_round, "file": name})
    for old in ckpt.glob("round-*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / "checkpoint" / "state.json").is_file()


def read_checkpoint(run_dir: Path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(state, shared arrays, strategy arrays) of a run's last checkpoint."""
    ckpt = run_dir / "checkpoint"
    state = json.loads((ckpt / "state.json").read_text())
    with np.load(ckpt / state["file"]) as z:
        shared = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("shared/")}
        strat = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("strategy/")}
    return state, shared, strat
