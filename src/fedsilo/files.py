"""Durable, atomic writes: a reader, a resumed run or a node restarted after a power loss
never sees half a file.

Every file fedsilo keeps (summaries, checkpoints, an institution's memory, feature caches,
the privacy ledger, the app directory) is written to a temporary file in the same
directory, flushed to disk, renamed over the target and the rename itself synced.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def atomic_write(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, then put it in place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def write_json(path: Path, obj: Any) -> None:
    def dump(fh: IO) -> None:
        json.dump(obj, fh, indent=2, sort_keys=False)
        fh.write("\n")

    atomic_write(path, dump)


def write_lines(path: Path, lines: list[str]) -> None:
    """A whole file of lines (each without its newline)."""
    atomic_write(path, lambda fh: fh.writelines(line + "\n" for line in lines))


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An npz of ``arrays``."""
    atomic_write(path, lambda fh: np.savez(fh, **arrays), binary=True)


def append_line(path: Path, line: str) -> None:
    """Append one line and sync it (a log whose every line is kept: metrics rows, audit
    entries)."""
    with Path(path).open("a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def sync_dir(path: Path) -> None:
    """Make a rename in ``path`` survive a power loss."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
