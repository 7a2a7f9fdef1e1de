"""A run directory's life: made fresh, locked while a run works in it, renamed when it
ends.

``fedsilo run`` writes into ``<name>.incomplete`` and renames it when the run succeeded,
to ``<name>.interrupted`` when it was stopped (Ctrl-C, SIGTERM; resumable) or to
``<name>.failed`` (with ``error.txt``) when it did not succeed, so a directory without a
suffix is always a finished result.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

from fedsilo.config import ConfigError, Scenario

INCOMPLETE, FAILED, INTERRUPTED = ".incomplete", ".failed", ".interrupted"
RESUMABLE = (INCOMPLETE, INTERRUPTED, FAILED)
LOCK = "lock"  # a live run's owner: {"pid", "host", "started"}


def new_run_dir(s: Scenario) -> Path:
    """A fresh ``<output.dir>/<scenario>-<timestamp>.incomplete`` directory, made with
    ``mkdir`` so that two runs started at once never share one."""
    root = Path(s.output.dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"output.dir: '{root}' exists and is not a directory")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{s.scenario.name}-{stamp}"
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        name = base if i == 0 else f"{base}-{i}"
        if any((root / (name + suf)).exists() for suf in ("", *RESUMABLE)):
            continue
        path = root / (name + INCOMPLETE)
        try:
            path.mkdir()
        except FileExistsError:  # another run took the name a moment ago
            continue
        return path
    raise RuntimeError(f"cannot find a free run directory name under '{root}'")


def stem(run_dir: Path) -> str:
    """The run's name without any suffix (the same while it runs, after it failed and once
    it is resumed)."""
    name = Path(run_dir).name
    for suffix in RESUMABLE:
        name = name.removesuffix(suffix)
    return name


def final_name(run_dir: Path, failed: bool, interrupted: bool = False) -> Path:
    stem_ = run_dir.name.removesuffix(INCOMPLETE)
    suffix = INTERRUPTED if interrupted else FAILED if failed else ""
    return run_dir.with_name(stem_ + suffix)


def reopen_run_dir(run_dir: Path) -> Path:
    """A resumable run directory renamed back to ``<name>.incomplete``."""
    live = run_dir.with_name(stem(run_dir) + INCOMPLETE)
    if live != run_dir:
        run_dir.rename(live)
    (live / "error.txt").unlink(missing_ok=True)
    return live


def check_lock(run_dir: Path) -> None:
    """A ConfigError if a live process owns ``run_dir``; a stale lock (its owner was
    killed) is removed."""
    import psutil

    path = run_dir / LOCK
    if not path.is_file():
        return
    try:
        owner = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        owner = {}
    pid, host = int(owner.get("pid", 0) or 0), owner.get("host")
    if host == socket.gethostname() and pid and psutil.pid_exists(pid):
        try:
            alive = abs(psutil.Process(pid).create_time() - owner.get("started", 0)) < 2
        except psutil.Error:
            alive = False
        if alive:
            raise ConfigError(f"'{run_dir}' belongs to a run that is still going (process "
                              f"{pid}); stop it first")
    if host not in (None, socket.gethostname()):
        raise ConfigError(f"'{run_dir}' is locked by a run on host '{host}' (remove "
                          f"{path} if that run is gone)")
    path.unlink(missing_ok=True)


def _lock(run_dir: Path) -> None:
    import psutil

    me = psutil.Process()
    (run_dir / LOCK).write_text(json.dumps({"pid": me.pid, "host": socket.gethostname(),
                                            "started": me.create_time()}))


class RunDirectory:
    """A run directory that holds a lock while the work in it goes on and is renamed when
    it ends: to its final name when the ``with`` block succeeds, to ``<name>.interrupted``
    when it was stopped (Ctrl-C, SIGTERM: resumable), to ``<name>.failed`` (with
    ``error.txt``) when it raised. ``final`` is the new path either way; ``describe`` words
    the failure for error.txt."""

    def __init__(self, path: Path, describe=None):
        self.path = path
        self.final: Path | None = None
        self.describe = describe or (lambda exc: f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> RunDirectory:
        _lock(self.path)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        from fedsilo.interrupt import Interrupted

        stopped = exc is not None and _caused_by(exc, (Interrupted, KeyboardInterrupt))
        self.final = final_name(self.path, failed=exc is not None, interrupted=stopped)
        if exc is not None:
            try:
                (self.path / "error.txt").write_text(self.describe(exc) + "\n")
            except OSError:  # a full disk: the directory's name says it failed
                (self.path / "error.txt").unlink(missing_ok=True)
        (self.path / LOCK).unlink(missing_ok=True)
        self.path.rename(self.final)
        return False


def _caused_by(exc: BaseException, kinds: tuple) -> bool:
    seen = exc
    while seen is not None:
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def check_writable(s: Scenario) -> None:
    """A ConfigError naming ``output.dir`` or ``simulation.cache_dir`` when a run could not
    write there (not a directory, no permission, a read-only or full file system)."""
    for key, where in (("output.dir", s.output.dir),
                       ("simulation.cache_dir", s.simulation.cache_dir)):
        path = Path(where)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True)
            with probe:
                probe.write(b"x" * 4096)
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            raise ConfigError(f"{key}: cannot write to '{where}': "
                              f"{exc.strerror or exc}") from None


def os_error(exc: OSError) -> ConfigError:
    """An operating-system error while a run writes its files, as one ConfigError line."""
    where = f" '{exc.filename}'" if exc.filename else ""
    return ConfigError(f"cannot write{where}: {exc.strerror or exc}")
