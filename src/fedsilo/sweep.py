"""Sweeps: the cross product of a grid of config values, run one after another.

A sweep is given on the command line (``--grid key=v1,v2``) or as a sweep file::

    base = "../bank_hospital.toml"        # a scenario file, relative to this file
    [set]                                 # overrides applied to every run
    "data.partition" = "dirichlet"
    [grid]                                # the cross product of these
    "data.alpha" = [0.1, 0.5, 1.0, 100.0]
    "strategy.name" = ["fedavg", "fedprox", "scaffold", "fedadam"]

Every run goes into ``<output.dir>/sweep-<name>-<timestamp>/``, which also gets
``sweep.json`` (one row per run), ``sweep.md`` (the table) and ``sweep.png``. Like a run
directory it is ``.incomplete`` while the sweep runs and ``.failed`` if it stopped.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from pathlib import Path
from typing import Any

from fedsilo import config
from fedsilo.config import ConfigError
from fedsilo.files import write_json
from fedsilo.results.rundir import (
    INCOMPLETE,
    RESUMABLE,
    RunDirectory,
    check_lock,
    new_run_dir,
    reopen_run_dir,
)
from fedsilo.results.summary import format_table


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid '{item}': expected key=v1,v2,...")
        key, raw = item.split("=", 1)
        grid[key.strip()] = [config.parse_override(f"{key}={v}")[1] for v in raw.split(",")]
    return grid


def read_sweep_file(path: Path) -> tuple[str | None, dict[str, Any], dict[str, list[Any]]]:
    """(base scenario file, fixed overrides, grid) of a sweep file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"sweep file '{path}' is not valid TOML: {exc}") from None
    unknown = set(raw) - {"base", "set", "grid"}
    if unknown:
        raise ConfigError(f"sweep file '{path}': unknown key '{sorted(unknown)[0]}' (use "
                          f"base, [set], [grid])")
    for key, kind in (("base", str), ("set", dict), ("grid", dict)):
        if key in raw and not isinstance(raw[key], kind):
            what = "a file name" if kind is str else "a table"
            raise ConfigError(f"sweep file '{path}': '{key}' must be {what}")
    base = str((path.parent / raw["base"]).resolve()) if "base" in raw else None
    grid = raw.get("grid", {})
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep file '{path}': grid '{key}' must be a non-empty list")
    return base, dict(raw.get("set", {})), grid


def is_sweep_file(path: str | None) -> bool:
    if not path or not Path(path).is_file():
        return False
    try:
        return "grid" in tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False


def plan(path: str | None, grid_args: list[str], overrides: list[str]):
    """The base scenario and the list of flat overrides, one per run (all validated)."""
    fixed: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    base = path
    if is_sweep_file(path):
        base, fixed, grid = read_sweep_file(Path(path))
    grid.update(parse_grid(grid_args))
    if not grid:
        raise ConfigError("sweep: nothing to sweep (give --grid key=v1,v2 or a sweep file "
                          "with a [grid] table)")
    # precedence: base file < the sweep file's [set] < --set on the command line
    flat = {**(config.read_toml(base) if base else {}), **fixed}
    for item in overrides:
        key, value = config.parse_override(item)
        flat[key] = value
    flat = config.from_flat(flat).flat()
    combos = [dict(zip(grid, values, strict=True))
              for values in itertools.product(*grid.values())]
    from fedsilo.privacy import check_scenario

    for combo in combos:  # validate every run before the first starts
        check_scenario(config.from_flat({**flat, **combo}))
    return config.from_flat(flat), combos


def run_sweep(path: str | None, grid_args: list[str], overrides: list[str],
              verbose: bool = False) -> Path:
    """Run every combination; the sweep directory is finalised like a run directory."""
    base, combos = plan(path, grid_args, overrides)
    if base.output.mlflow:  # one store and one experiment for all its runs
        from fedsilo.results.tracking import experiment_of, mlflow_uri

        base = base.replace(**{"output.mlflow_uri": mlflow_uri(base.output.dir,
                                                               base.output.mlflow_uri),
                               "output.mlflow_experiment": experiment_of(base)})
    sweep_dir = new_run_dir(base.replace(
        **{"scenario.name": f"sweep-{base.scenario.name}"}))
    parent = _mlflow_parent(base, sweep_dir)
    write_json(sweep_dir / "sweep.json", {"base": base.flat(), "grid": combos,
                                                  "rows": [], "mlflow_parent": parent})
    return _in(sweep_dir, base, combos, verbose, parent)


def _mlflow_parent(base, sweep_dir: Path) -> str | None:
    """With output.mlflow: the sweep's parent MLflow run (its grid points are children)."""
    if not base.output.mlflow:
        return None
    from fedsilo.results.tracking import check_mlflow, experiment_of, start_mlflow_parent

    check_mlflow(base)
    return start_mlflow_parent(sweep_dir.name.removesuffix(INCOMPLETE),
                               base.output.dir, base.output.mlflow_uri, experiment_of(base),
                               base.flat())


def _in(sweep_dir: Path, base, combos: list[dict], verbose: bool,
        parent: str | None = None) -> Path:
    """Run the sweep in its directory; an interruption names the directory to resume."""
    from fedsilo.interrupt import Interrupted

    rd = RunDirectory(sweep_dir)
    try:
        with rd:
            _run_all(base, combos, sweep_dir, verbose, parent)
    except Interrupted as exc:
        exc.run_dir = rd.final
        raise
    return rd.final


def resume_sweep(sweep_dir: Path, verbose: bool = False) -> Path:
    """Continue an interrupted or failed sweep: finished runs are kept, the interrupted
    one is resumed, the rest are run."""
    sweep_dir = Path(sweep_dir)
    saved = sweep_dir / "sweep.json"
    if not saved.is_file() or "base" not in json.loads(saved.read_text()):
        raise ConfigError(f"sweep --resume: '{sweep_dir}' is not a sweep directory that can "
                          f"be resumed (no sweep.json with its plan)")
    if not sweep_dir.name.endswith(RESUMABLE):
        raise ConfigError(f"sweep --resume: '{sweep_dir}' finished already")
    check_lock(sweep_dir)
    plan_ = json.loads(saved.read_text())
    base = config.from_flat(plan_["base"])
    live = reopen_run_dir(sweep_dir.resolve())
    return _in(live, base, plan_["grid"], verbose, plan_.get("mlflow_parent"))


def _run_name(base, i: int) -> str:
    return f"{base.scenario.name}-{i:03d}"


def _run_all(base, combos: list[dict], sweep_dir: Path, verbose: bool,
             parent: str | None = None) -> None:
    from fedsilo.runner import RunFailed, resume, simulate

    rows = []
    for i, combo in enumerate(combos, start=1):
        name = "_".join(f"{k.split('.')[-1]}={v}" for k, v in combo.items())
        s = base.replace(**{**combo, "output.dir": str(sweep_dir),
                            "scenario.name": _run_name(base, i)})
        row: dict[str, Any] = {**combo}
        done, unfinished = _earlier(sweep_dir, s.scenario.name)
        try:
            if done is not None:
                print(f"\nsweep run {i}/{len(combos)}: {name}: finished earlier "
                      f"({done.name})", flush=True)
                summary = json.loads((done / "summary.json").read_text())
                row.update(_outcome(done, summary))
            else:
                print(f"\nsweep run {i}/{len(combos)}: {name}", flush=True)
                outcome = resume(unfinished, verbose=verbose) if unfinished is not None \
                    else simulate(s, verbose=verbose, mlflow_parent=parent)
                row.update(_outcome(outcome.run_dir, outcome.summary))
        except (RunFailed, ConfigError) as exc:
            row.update(run=None, error=str(exc))
            print(f"sweep run {i} failed: {exc}", flush=True)
        rows.append(row)
        write_json(sweep_dir / "sweep.json", {"base": base.flat(), "grid": combos,
                                                      "rows": rows, "mlflow_parent": parent})
    table = sweep_table(rows)
    (sweep_dir / "sweep.md").write_text(table + "\n")
    print("\n" + table)
    plot_sweep(rows, sweep_dir / "sweep.png")
    if any(k in r for r in rows for k in EPSILONS):
        plot_privacy_utility(rows, sweep_dir / "privacy_utility.png")


def _earlier(sweep_dir: Path, name: str) -> tuple[Path | None, Path | None]:
    """(the finished run of ``name`` in this sweep, or its resumable one), if any."""
    mine = sorted(p for p in sweep_dir.glob(f"{name}-*") if p.is_dir())
    done = [p for p in mine if not p.name.endswith(RESUMABLE)]
    unfinished = [p for p in mine if p.name.endswith(RESUMABLE)
                  and (p / "checkpoint" / "state.json").is_file()]
    return (done[-1] if done else None), (unfinished[-1] if unfinished else None)


def _outcome(run_dir: Path, sm: dict) -> dict:
    """A sweep row's results from a run's summary."""
    accs = [v["accuracy"] for v in sm["final"]["institutions"].values()
            if v.get("accuracy") is not None]
    row = {"run": run_dir.name, "accuracy": sm["final"]["global"]["accuracy"],
           "macro_f1": sm["final"]["global"]["macro_f1"],
           "worst_accuracy": min(accs) if accs else None}
    spent = [v["epsilon"] for v in (sm.get("privacy") or {}).get("institutions", {}).values()]
    if spent:  # the weakest guarantee in the federation
        row["max_epsilon"] = max(spent)
    server = (sm.get("privacy") or {}).get("server")
    if server:  # institution-level DP at the server
        row["server_epsilon"] = server["epsilon"]
    return row


# epsilon columns: record level (DP-SGD, the largest over institutions) and institution
# level (DP-FedAvg at the server)
EPSILONS = {"max_epsilon": "epsilon (max inst)", "server_epsilon": "epsilon (inst level)"}
RESULT_KEYS = ("run", "accuracy", "macro_f1", "worst_accuracy", *EPSILONS, "error")


def sweep_table(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k not in RESULT_KEYS]
    eps = [k for k in EPSILONS if any(k in r for r in rows)]
    body = [[r[k] for k in keys] + [r.get("macro_f1", "failed"), r.get("worst_accuracy", "-"),
                                    r.get("accuracy", "-")]
            + [r.get(k, "-") for k in eps] for r in rows]
    return format_table(body, keys + ["final macro-F1", "worst inst acc",
                                               "final acc"] + [EPSILONS[k] for k in eps])


def plot_privacy_utility(rows: list[dict], path: Path) -> Path:
    """Final macro-F1 against epsilon: record level (the largest any institution spent)
    and institution level, whichever the sweep has."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in EPSILONS.items():
        pts = sorted((r[key], r["macro_f1"]) for r in rows
                     if r.get(key) is not None and r.get("macro_f1") is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.legend()
    ax.set_xlabel("epsilon")
    ax.set_ylabel("final global macro-F1")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(rows: list[dict], path: Path) -> Path | None:
    """Final macro-F1 against the first grid key, one line per value of the others."""
    keys = [k for k in rows[0] if k not in RESULT_KEYS]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, rest = keys[0], keys[1:]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        label = ", ".join(f"{k}={r[k] if r[k] != '' else '(none)'}" for k in rest)
        groups.setdefault(label or "runs", []).append(r)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = list(dict.fromkeys(r[x_key] for r in rows))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    for label, rs in groups.items():
        pts = [(r[x_key], r.get("macro_f1")) for r in rs if r.get("macro_f1") is not None]
        if not pts:
            continue
        px = [p[0] if numeric else xs.index(p[0]) for p in pts]
        ax.plot(px, [p[1] for p in pts], marker="o", label=label)
    if numeric and min(xs) > 0 and max(xs) / min(xs) > 50:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_xlabel(x_key)
    ax.set_ylabel("final global macro-F1")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_rows(sweep_dir: Path) -> list[dict]:
    return json.loads((sweep_dir / "sweep.json").read_text())["rows"]
