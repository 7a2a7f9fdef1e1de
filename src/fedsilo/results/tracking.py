"""Watching and comparing runs in the tools people already use.

- **TensorBoard** (``output.tensorboard``, on by default): every run directory gets
  ``tb/server/`` (the federation's numbers) and ``tb/<institution>/`` (each institution's),
  one point per round, written as each round ends, from the metrics rows the run records
  anyway: nothing new crosses the wire. Federated runs, baselines and every run of a sweep
  write the same layout, so ``tensorboard --logdir runs`` overlays them all.
- **MLflow** (``output.mlflow``): when a run has finished, one MLflow run per scenario with
  the flattened config as parameters and the federation's metrics per round, a child run
  per institution with its metrics, and the run directory's files as artifacts; a sweep is
  one parent run with a child per grid point. The tracking URI is ``output.mlflow_uri``, by
  default a local SQLite file ``<output.dir>/mlflow.db`` (no server, no network).
"""

from __future__ import annotations

import os
from pathlib import Path

SERVER = "server"
# (tag, where in a metrics row): what the federation-wide writer records each round
GLOBAL_SCALARS = (("accuracy", ("global", "accuracy")), ("macro_f1", ("global", "macro_f1")),
                  ("loss", ("global", "loss")), ("train_loss", ("global", "train_loss")),
                  ("worst_accuracy", ("global", "worst_accuracy")),
                  ("bytes_up", ("bytes_up",)), ("bytes_down", ("bytes_down",)),
                  ("round_time_s", ("wall_time_s",)),
                  ("epsilon_institution_level", ("central_dp", "epsilon")),
                  ("personal_accuracy", ("personal", "accuracy")),
                  ("personal_macro_f1", ("personal", "macro_f1")))
INSTITUTION_SCALARS = (("accuracy", ("accuracy",)), ("macro_f1", ("macro_f1",)),
                       ("loss", ("loss",)), ("train_loss", ("train_loss",)),
                       ("train_time_s", ("train_time_s",)),
                       ("epsilon_record_level", ("privacy", "epsilon")),
                       ("federation_accuracy", ("federation_accuracy",)),
                       ("personal_accuracy", ("personal", "accuracy")))


def _get(row: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(row, dict) or row.get(key) is None:
            return None
        row = row[key]
    return float(row) if isinstance(row, int | float) and not isinstance(row, bool) else None


def server_scalars(row: dict) -> dict[str, float]:
    """The federation's numbers of one metrics row, by tag (the largest record-level
    epsilon of any institution included)."""
    out = {tag: v for tag, path in GLOBAL_SCALARS if (v := _get(row, path)) is not None}
    spent = [v for inst in row.get("institutions", {}).values()
             if (v := _get(inst, ("privacy", "epsilon"))) is not None]
    if spent:
        out["epsilon_record_level_max"] = max(spent)
    return out


def institution_scalars(inst: dict) -> dict[str, float]:
    return {tag: v for tag, path in INSTITUTION_SCALARS if (v := _get(inst, path)) is not None}


class TensorBoard:
    """One event-file writer per name under ``<run dir>/tb/``, written round by round."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir / "tb"
        self._writers: dict = {}

    def _writer(self, name: str):
        if name not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[name] = SummaryWriter(log_dir=str(self.dir / name))
        return self._writers[name]

    def row(self, row: dict) -> None:
        step = int(row["round"])
        for tag, value in server_scalars(row).items():
            self._writer(SERVER).add_scalar(tag, value, step)
        for name, inst in row.get("institutions", {}).items():
            for tag, value in institution_scalars(inst).items():
                self._writer(name).add_scalar(tag, value, step)
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def read_tensorboard(run_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Name -> tag -> [(step, value)], read back with TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for sub in sorted(p for p in (run_dir / "tb").iterdir() if p.is_dir()):
        acc = EventAccumulator(str(sub), size_guidance={"scalars": 0})
        acc.Reload()
        out[sub.name] = {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
                         for tag in acc.Tags()["scalars"]}
    return out


# -- MLflow ----------------------------------------------------------------------------------
def mlflow_uri(output_dir: str, uri: str) -> str:
    return uri or f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def _mlflow(output_dir: str, uri: str, experiment: str):
    """MLflow, pointed at ``uri`` and ``experiment`` (made with its artifacts beside the
    database when new), quiet and offline."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import logging

    import mlflow

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(mlflow_uri(output_dir, uri))
    if mlflow.get_experiment_by_name(experiment) is None:
        artifacts = Path(output_dir).resolve() / "mlflow-artifacts"
        mlflow.create_experiment(experiment, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(experiment)
    return mlflow


def log_run_to_mlflow(run_dir: Path, flat_config: dict, output_dir: str, uri: str,
                      experiment: str, parent: str | None = None) -> str:
    """One finished run directory as an MLflow run (a child of ``parent`` if given) with
    a child per institution; its id."""

    mlflow = _mlflow(output_dir, uri, experiment)
    from fedsilo.results.rows import read_rows

    rows = read_rows(run_dir)
    tags = {"fedsilo.run_dir": str(run_dir)}
    with mlflow.start_run(run_name=run_dir.name, tags=tags, parent_run_id=parent,
                          nested=parent is not None) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flat_config.items()})
        for row in rows:
            mlflow.log_metrics(server_scalars(row), step=int(row["round"]))
        names = sorted({n for r in rows for n in r.get("institutions", {})})
        for name in names:
            with mlflow.start_run(run_name=name, nested=True,
                                  tags={"fedsilo.institution": name}):
                for row in rows:
                    inst = row.get("institutions", {}).get(name)
                    if inst is not None:
                        mlflow.log_metrics(institution_scalars(inst), step=int(row["round"]))
        mlflow.log_artifacts(str(run_dir))
        return run.info.run_id


def start_mlflow_parent(name: str, output_dir: str, uri: str, experiment: str,
                        params: dict) -> str:
    """A parent MLflow run (a sweep), left open for children to name; its id."""
    mlflow = _mlflow(output_dir, uri, experiment)
    run = mlflow.start_run(run_name=name)
    mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
    mlflow.end_run()
    return run.info.run_id


def check_mlflow(s) -> None:
    """With ``output.mlflow``: the tracking store answers and the experiment exists (made
    now if new); a ConfigError naming the URI otherwise. Called before the run starts."""
    from fedsilo.config import ConfigError

    if not s.output.mlflow:
        return
    try:
        _mlflow(s.output.dir, s.output.mlflow_uri, experiment_of(s))
    except Exception as exc:  # noqa: BLE001 - any store error, in one line
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else \
            type(exc).__name__
        raise ConfigError(f"output.mlflow_uri: cannot use MLflow at "
                          f"'{mlflow_uri(s.output.dir, s.output.mlflow_uri)}': {reason}") \
            from None


def experiment_of(s) -> str:
    return s.output.mlflow_experiment or s.scenario.name


def track(run_dir: Path, s, parent: str | None = None) -> str | None:
    """Log a finished run to MLflow when ``output.mlflow`` asks for it; the run's id."""
    if not s.output.mlflow:
        return None
    import tomllib

    from fedsilo.config import flatten

    flat = flatten(tomllib.loads((run_dir / "config.toml").read_text())) \
        if (run_dir / "config.toml").is_file() else s.flat()
    return log_run_to_mlflow(run_dir, flat, s.output.dir, s.output.mlflow_uri,
                             experiment_of(s), parent)
