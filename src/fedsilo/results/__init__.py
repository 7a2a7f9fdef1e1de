"""What a run leaves behind, and how it is shown.

A run directory ``runs/<scenario>-<timestamp>/`` holds:
- ``config.toml``: the resolved scenario (every key);
- ``metrics.jsonl``: one JSON object per round (per institution and global);
- ``checkpoint/``: the shared arrays, strategy state, round and seeds after the last round;
- ``head.npz``: the final shared head; ``summary.json``; ``accuracy.png``;
- ``flower.log``: the framework's own log.

``fedsilo run`` writes into ``<name>.incomplete`` and renames it when the run succeeded,
or to ``<name>.failed`` (with ``error.txt``) when it did not, so a directory without a
suffix is always a finished result.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.config import Scenario
from fedsilo.results.rows import read_rows

INCOMPLETE, FAILED, INTERRUPTED = ".incomplete", ".failed", ".interrupted"
RESUMABLE = (INCOMPLETE, INTERRUPTED, FAILED)
LOCK = "lock"  # a live run's owner: {"pid", "host", "started"}


def new_run_dir(s: Scenario) -> Path:
    """A fresh ``<output.dir>/<scenario>-<timestamp>.incomplete`` directory, made with
    ``mkdir`` so that two runs started at once never share one."""
    from fedsilo.config import ConfigError

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


def final_name(run_dir: Path, failed: bool, interrupted: bool = False) -> Path:
    stem = run_dir.name.removesuffix(INCOMPLETE)
    suffix = INTERRUPTED if interrupted else FAILED if failed else ""
    return run_dir.with_name(stem + suffix)


def reopen_run_dir(run_dir: Path) -> Path:
    """A resumable run directory renamed back to ``<name>.incomplete``."""
    stem = run_dir.name
    for suffix in RESUMABLE:
        stem = stem.removesuffix(suffix)
    live = run_dir.with_name(stem + INCOMPLETE)
    if live != run_dir:
        run_dir.rename(live)
    (live / "error.txt").unlink(missing_ok=True)
    return live


def check_lock(run_dir: Path) -> None:
    """A ConfigError if a live process owns ``run_dir``; a stale lock (its owner was
    killed) is removed."""
    import socket

    import psutil

    from fedsilo.config import ConfigError

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
    import socket

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
    from fedsilo.config import ConfigError

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


def os_error(exc: OSError):
    """An operating-system error while a run writes its files, as one ConfigError line."""
    from fedsilo.config import ConfigError

    where = f" '{exc.filename}'" if exc.filename else ""
    return ConfigError(f"cannot write{where}: {exc.strerror or exc}")


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically and durably: a reader, or a run resumed after a power loss,
    never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an npz atomically and durably (temporary file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def _sync_dir(path: Path) -> None:
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


def stage_checkpoint(run_dir: Path, server_round: int, arrays: dict[str, np.ndarray],
                     strategy_arrays: dict[str, np.ndarray]) -> str:
    """Write the arrays of the checkpoint after ``server_round``
    (``checkpoint/round-NNNN.npz``: the shared arrays under ``shared/``, the strategy's
    state under ``strategy/``); it counts only once ``commit_checkpoint`` points to it."""
    ckpt = run_dir / "checkpoint"
    ckpt.mkdir(exist_ok=True)
    name = f"round-{server_round:04d}.npz"
    save_arrays(ckpt / name, {**{f"shared/{k}": v for k, v in arrays.items()},
                              **{f"strategy/{k}": v for k, v in strategy_arrays.items()}})
    return name


def commit_checkpoint(run_dir: Path, server_round: int, name: str, state: dict) -> None:
    """Make the staged checkpoint the run's: ``checkpoint/state.json`` (round, seeds,
    random states, which file) is replaced last, so a kill at any point leaves a complete
    earlier or later checkpoint, never a mix. Older array files are removed."""
    ckpt = run_dir / "checkpoint"
    write_json(ckpt / "state.json", {**state, "round": server_round, "file": name})
    for old in ckpt.glob("round-*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)


def write_checkpoint(run_dir: Path, server_round: int, arrays: dict[str, np.ndarray],
                     strategy_arrays: dict[str, np.ndarray], state: dict) -> None:
    """Stage and commit the checkpoint after ``server_round`` in one go."""
    name = stage_checkpoint(run_dir, server_round, arrays, strategy_arrays)
    commit_checkpoint(run_dir, server_round, name, state)


def read_checkpoint(run_dir: Path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(state, shared arrays, strategy arrays) of a run's last checkpoint."""
    ckpt = run_dir / "checkpoint"
    state = json.loads((ckpt / "state.json").read_text())
    with np.load(ckpt / state["file"]) as z:
        shared = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("shared/")}
        strat = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("strategy/")}
    return state, shared, strat


class RunLog:
    """The two records every run directory holds, written the same way for federated runs,
    baselines and deployed runs: ``metrics.jsonl`` (one row per round, appended as each
    round ends) and ``summary.json`` (written atomically at the end)."""

    def __init__(self, run_dir: Path, fresh: bool = True, tensorboard: bool = False):
        from fedsilo.results.tracking import TensorBoard

        self.run_dir = run_dir
        self.rows: list[dict] = []
        self.tb = TensorBoard(run_dir) if tensorboard else None
        if fresh:
            (run_dir / "metrics.jsonl").write_text("")

    def append(self, row: dict) -> None:
        self.rows.append(row)
        with (self.run_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self.tb is not None:
            self.tb.row(row)

    def keep_until(self, server_round: int) -> list[dict]:
        """A resumed run: the rows up to ``server_round`` (the checkpoint's), rewritten;
        rows of rounds after it were never committed."""
        path = self.run_dir / "metrics.jsonl"
        self.rows[:] = [r for r in read_rows(self.run_dir) if r["round"] <= server_round]
        fd, tmp = tempfile.mkstemp(dir=self.run_dir, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in self.rows)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        if self.tb is not None:  # the event files again, without the rounds undone
            import shutil

            self.tb.close()
            shutil.rmtree(self.tb.dir, ignore_errors=True)
            for row in self.rows:
                self.tb.row(row)
        return self.rows

    def finish(self, summary: dict, plot: bool) -> dict:
        """Write ``summary`` (see ``summarise``) and, with ``plot``, accuracy.png."""
        if self.tb is not None:
            self.tb.close()
        write_json(self.run_dir / "summary.json", summary)
        if plot:
            plot_accuracy(self.run_dir, self.rows)
        return summary


def summarise(rows: list[dict], **extra: Any) -> dict:
    """The summary fields every run has, from its metrics rows: final, best and first
    round; ``extra`` adds what a kind of run knows besides."""
    last = rows[-1]
    best = max(rows, key=lambda r: r["global"]["accuracy"])
    final = {"round": last["round"], "global": last["global"],
             "institutions": last["institutions"]}
    if "personal" in last:
        final["personal"] = last["personal"]
    return {"status": "completed", "rounds": len(rows), "final": final,
            "best": {"round": best["round"], "global": best["global"]},
            "first_round": {"global": rows[0]["global"]}, **extra}


def format_table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain aligned text table."""
    cells = [[_fmt(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def final_table(summary: dict) -> str:
    """Accuracy and macro-F1 per institution and for the federation (final round); with a
    personalisation method, each institution's own model beside the shared one."""
    final = summary["final"]
    own = "personal" in final
    rows = []
    for name, r in final["institutions"].items():
        row = [name, r["kind"], r["test_examples"], r["accuracy"], r["macro_f1"]]
        if own:
            p = r.get("personal") or {}
            row += [p.get("accuracy", "-"), p.get("macro_f1", "-")]
        rows.append(row)
    g = final["global"]
    label = "ALL (union of test splits)" if "note" not in g else "ALL (mean, federation test)"
    rows.append([label, "-", g.get("test_examples", "-"), g["accuracy"], g["macro_f1"]]
                + ([final["personal"]["accuracy"], final["personal"]["macro_f1"]]
                   if own else []))
    header = ["institution", "kind", "test", "accuracy", "macro-F1"]
    if own:
        header = ["institution", "kind", "test", "shared acc", "shared F1", "personal acc",
                  "personal F1"]
    return format_table(rows, header)


def privacy_table(summary: dict) -> str | None:
    """The privacy report: per institution (DP-SGD), the server's mechanism (institution-
    level DP) and secure aggregation; None when the run used none of them."""
    priv = summary.get("privacy") or {}
    insts, server, sa = priv.get("institutions") or {}, priv.get("server"), \
        priv.get("secure_aggregation")
    parts = []
    if insts:
        rows = [[n, v["epsilon"], f"{v['delta']:.2e}", v["noise_multiplier"],
                 v["max_grad_norm"], v["sampling_rate"], v["steps"],
                 "yes" if v["stopped_by_budget"] else "no"] for n, v in insts.items()]
        first = next(iter(insts.values()))
        parts.append("record level, per institution:\n"
                     + format_table(rows, ["institution", "epsilon", "delta", "noise",
                                           "clip C", "sampling q", "steps", "budget spent"])
                     + f"\nmechanism: {first['mechanism']}\naccountant: {first['accountant']}")
    if server:
        row = [["server", server["epsilon"], f"{server['delta']:.2e}",
                server["noise_multiplier"], server["clipping_norm"],
                f"{server['sampled']}/{server['population']}", server["rounds"]]]
        parts.append("institution level, at the server:\n"
                     + format_table(row, ["mechanism", "epsilon", "delta", "noise",
                                          "clip C", "sampled", "rounds"])
                     + f"\nmechanism: {server['mechanism']}\naccountant: "
                     f"{server['accountant']}\nassumptions: {server['assumptions']}")
    if sa:
        parts.append(f"secure aggregation: {sa['protocol']}; {sa['shares']} shares, "
                     f"threshold {sa['threshold']}, updates clipped to +-{sa['clip_range']} "
                     f"and quantised to {sa['quantization_bits']} bits; "
                     f"{sa['rounds_with_dropouts']} rounds with dropouts")
    return "\n\n".join(parts) if parts else None


def plot_accuracy(run_dir: Path, rows: list[dict], max_lines: int = 10) -> Path | None:
    """accuracy.png: accuracy against rounds, overall and per institution.

    Up to ``max_lines`` institutions get a line each (banks solid, hospitals dashed); with
    more, each kind gets its median and a band from its worst to its best institution.
    """
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = [r["round"] for r in rows]
    kinds = {n: v.get("kind") for r in rows for n, v in r["institutions"].items()}

    def acc(name: str) -> list[float]:
        values = [r["institutions"].get(name, {}).get("accuracy") for r in rows]
        return [np.nan if v is None else v for v in values]

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if len(kinds) <= max_lines:
        for name, kind in kinds.items():
            ax.plot(rounds, acc(name), "--" if kind == "hospital" else "-", marker="o",
                    markersize=3, linewidth=1.2, label=name)
        title = "accuracy per institution (banks solid, hospitals dashed)"
    else:
        for kind, color in (("bank", "tab:blue"), ("hospital", "tab:red")):
            names = [n for n, k in kinds.items() if k == kind]
            if not names:
                continue
            ys = np.array([acc(n) for n in names])
            ax.fill_between(rounds, np.nanmin(ys, 0), np.nanmax(ys, 0), color=color,
                            alpha=0.15, label=f"{kind}s: worst to best ({len(names)})")
            ax.plot(rounds, np.nanmedian(ys, 0), color=color, linewidth=1.5,
                    label=f"{kind}s: median")
        title = f"accuracy of {len(kinds)} institutions"
    ax.plot(rounds, [r["global"]["accuracy"] for r in rows], color="black", linewidth=2.5,
            label="global (union of test splits)")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title)
    fig.tight_layout()
    path = run_dir / "accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
