"""Launch a scenario on Flower's simulation runtime (Ray backend) and check its outcome.

Flower and Ray exit cleanly even when every client failed, so this module checks the
result itself: the ServerApp's own failure, a summary that is missing or short of rounds,
or an institution absent from it all make the run fail loudly. Whatever happens, no Ray or
Flower process outlives the call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

from fedsilo import config
from fedsilo.config import ConfigError, Scenario
from fedsilo.console import shown
from fedsilo.facts import DEFAULTS as FACT_DEFAULTS
from fedsilo.facts import RunFacts, run_config
from fedsilo.files import write_json, write_text
from fedsilo.results.rundir import (
    INCOMPLETE,
    RESUMABLE,
    RunDirectory,
    check_lock,
    check_writable,
    new_run_dir,
    reopen_run_dir,
)

SERVER_APP = "server.app:app"
CLIENT_APP = "clients.app:app"
# Ray puts unix sockets under its temp dir; their paths must stay under 108 bytes.
_RAY_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_1234567/sockets/plasma_store")


class RunFailed(RuntimeError):
    """The simulation ran but did not produce a complete, sound result."""


@dataclass
class RunOutcome:
    run_dir: Path
    summary: dict


def preflight(s: Scenario):
    """Fail before anything starts: bad data, unloadable backbone, missing device."""
    from fedsilo.data import build_federation
    from fedsilo.models import backbone as bb
    from fedsilo.node.silo import resolve_device
    from fedsilo.privacy import check_scenario
    from fedsilo.results.tracking import check_mlflow

    check_scenario(s)
    check_size(s)
    check_mlflow(s)
    cache = Path(s.simulation.cache_dir).resolve()
    fed = build_federation(s)
    ref = bb.resolve(s.model.backbone, str(cache))
    device = resolve_device(s.simulation.device)
    if s.model.scope in ("top-k", "lora"):  # depth and module names, before Ray starts
        import copy

        from fedsilo.models.scoped import ScopedModel

        tokenizer, backbone = bb.load(ref.location)
        ScopedModel(copy.deepcopy(backbone), tokenizer, s.model, 2, seed=0)
    for key, names in (("faults.crash", s.faults.crashing()),
                       ("faults.malicious", s.faults.attackers()),
                       ("federation.institutions", set(s.federation.names()))):
        missing = names - set(fed.names())
        if missing:
            raise ConfigError(f"config: '{key}' names unknown institutions: "
                              f"{', '.join(sorted(missing))}")
    if s.federation.institutions and set(s.federation.names()) != set(fed.names()):
        left = sorted(set(fed.names()) - set(s.federation.names()))
        raise ConfigError(f"config: 'federation.institutions' leaves out institutions of the "
                          f"data: {', '.join(left)}")
    commas = [n for n in fed.names() if "," in n]
    if commas:
        raise ConfigError(f"data.institution_column: institution name {commas[0]!r} contains "
                          f"a comma, which federation.institutions cannot list")
    return fed, ref, device


# one example's text and label (~300 B, held by the driver and by every Ray actor) and its
# cached features (1.5 KB with MiniLM's 384 dimensions), measured on the synthetic corpus
BYTES_PER_EXAMPLE = 3_000
EXAMPLES_PER_SECOND = 150_000  # synthetic examples generated per second on one core


def check_size(s: Scenario) -> None:
    """Refuse, before minutes of silent work, a synthetic federation that cannot fit in
    this machine's memory; announce one that takes a while to build."""
    import psutil

    if s.data.source != "synthetic":
        return
    institutions = s.federation.banks + s.federation.hospitals
    examples = institutions * s.data.synthetic.size
    need = examples * BYTES_PER_EXAMPLE
    have = psutil.virtual_memory().available
    if need > 0.8 * have:
        raise ConfigError(f"config: 'federation.banks' + 'federation.hospitals' = "
                          f"{institutions:,} institutions of ~{s.data.synthetic.size} "
                          f"examples need about {need / 2**30:.1f} GB, more than the "
                          f"{have / 2**30:.1f} GB this machine has free (lower them, or "
                          f"data.synthetic.size)")
    if examples > 1_000_000:
        print(f"fedsilo: a large federation: {institutions:,} institutions, ~{examples:,} "
              f"examples, about {need / 2**30:.1f} GB; building its data takes about "
              f"{examples / EXAMPLES_PER_SECOND:.0f} s", flush=True)


def run_facts(s: Scenario, fed, run_dir: Path, resume: bool = False) -> RunFacts:
    """What the apps are told about this run besides the scenario: its directory, and what
    the server would otherwise have to read from the data (the institutions to wait for,
    the label set), as in a deployment; the cache directory as an absolute path (on a Ray
    cluster, the same path on every node's own disk)."""
    return RunFacts(dir=str(run_dir), resume=resume, institutions=",".join(fed.names()),
                    labels=",".join(fed.labels),
                    cache_dir=str(Path(s.simulation.cache_dir).resolve()))


def scratch_env(cache_dir: Path) -> dict[str, str]:
    """Keep Flower's, torch's and matplotlib's scratch under the cache directory.

    Hugging Face's cache (HF_HOME) is left alone: a hub model is downloaded once into the
    user's own cache and found there by every later run, online or not.
    """
    env = {"FLWR_HOME": str(cache_dir / "flwr"),
           "TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "torchinductor"),
           "MPLCONFIGDIR": str(cache_dir / "matplotlib"),
           "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
           "RAY_DEDUP_LOGS": "0", "TOKENIZERS_PARALLELISM": "false",
           # SIGTERM stops the run cleanly (exit 143) instead of Ray's crash handler
           "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"}
    return env


_RAY_TMP_PREFIX, _RAY_TMP_OWNER = "fedsilo-ray-", "owner.pid"


def ray_temp_dir(cache_dir: Path) -> tuple[Path, bool]:
    """(Ray's temp dir, whether to delete it afterwards)."""
    preferred = cache_dir / "ray"
    if len(str(preferred)) + _RAY_SOCKET_SUFFIX < 107:
        return preferred, False
    tmp = Path(tempfile.mkdtemp(prefix=_RAY_TMP_PREFIX))
    (tmp / _RAY_TMP_OWNER).write_text(str(os.getpid()))
    return tmp, True


def _remove_orphaned_ray_dirs() -> None:
    """Temporary Ray directories of runs whose owner died (kill -9 leaves them)."""
    import psutil

    for tmp in Path(tempfile.gettempdir()).glob(f"{_RAY_TMP_PREFIX}*"):
        with contextlib.suppress(OSError, ValueError):
            owner = int((tmp / _RAY_TMP_OWNER).read_text())
            if owner != os.getpid() and not psutil.pid_exists(owner):
                shutil.rmtree(tmp, ignore_errors=True)


def write_app_dir(cache_dir: Path) -> Path:
    """A Flower app directory whose pyproject holds every default of the scenario and of a
    run's facts (Flower refuses run-config keys that its app does not declare)."""
    import tomli_w

    app_dir = cache_dir / "app"
    app_dir.mkdir(parents=True, exist_ok=True)
    project = {"project": {"name": "fedsilo-app", "version": "0.1.0"},
               "tool": {"flwr": {"app": {"publisher": "fedsilo",
                                         "components": {"serverapp": SERVER_APP,
                                                        "clientapp": CLIENT_APP},
                                         "config": {**config.DEFAULTS,
                                                    **FACT_DEFAULTS}}}}}
    text = tomli_w.dumps(project)
    target = app_dir / "pyproject.toml"
    if not target.is_file() or target.read_text() != text:  # runs may share the cache dir
        write_text(target, text)
    return app_dir


class _QuietFileHandler(logging.FileHandler):
    """flower.log: a full or read-only disk stops the log quietly (the run itself then
    reports the disk in one line) instead of printing a traceback per record."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.setLevel(logging.CRITICAL + 1)


def _flower_logging(log_file: Path, verbose: bool) -> logging.Handler:
    logger = logging.getLogger("flwr")
    for h in logger.handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)
    fh = _QuietFileHandler(log_file)
    fh.setLevel(logging.DEBUG)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(fh)
    return fh


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while seen.__cause__ is not None and isinstance(seen, RuntimeError) and \
            "Ending simulation" in str(seen):
        seen = seen.__cause__
    return seen


RUN_TOKEN = "FEDSILO_RUN_TOKEN"


def _ours(token: str) -> list:
    """Processes that inherited this run's token: Ray's raylet, GCS, agents and workers,
    including any that a shutdown orphaned or that were started while it ran."""
    import psutil

    found = []
    for p in psutil.process_iter():
        if p.pid == os.getpid():
            continue
        with contextlib.suppress(psutil.Error):
            if p.environ().get(RUN_TOKEN) == token:
                found.append(p)
    return found


def kill_leftovers(token: str, grace: float = 0.3, timeout: float = 10.0) -> list[str]:
    """Stop every process this run started, and wait until they are gone. They get
    ``grace`` seconds to exit on SIGTERM (Ray's idle workers take seconds to tear down,
    and by now the run has written everything it keeps), then SIGKILL."""
    import psutil

    names: list[str] = []
    for _ in range(5):
        procs = _ours(token) + psutil.Process().children(recursive=True)
        if not procs:
            break
        for p in procs:
            with contextlib.suppress(psutil.Error):
                names.append(p.name())
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=timeout)
    return names


def simulate(s: Scenario, verbose: bool = False, mlflow_parent: str | None = None
             ) -> RunOutcome:
    """Run scenario ``s`` to the end; raise ConfigError, RunFailed or Interrupted.
    ``mlflow_parent``: the MLflow run this one belongs under (a sweep's)."""
    t0 = time.time()
    procs = RunProcesses(s, verbose)  # Ray starts while the inputs are checked
    try:
        fed, _ref, device = preflight(s)
        check_writable(s)
        nodes = connect_ray(s, verbose)
        run_dir = new_run_dir(s).resolve()
    except BaseException:
        procs.stop()
        raise
    facts = run_facts(s, fed, run_dir)
    return _simulate_in(run_dir, s, facts, fed, device, t0, verbose, nodes, procs,
                        mlflow_parent)


def resume(run_dir: Path, overrides: list[str] | None = None,
           verbose: bool = False) -> RunOutcome:
    """Continue a run that was killed, interrupted or failed from its last checkpoint; it
    ends as the uninterrupted run would have."""
    t0 = time.time()
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not (run_dir / "config.toml").is_file():
        raise ConfigError(f"resume: '{run_dir}' is not a run directory (no config.toml)")
    if not run_dir.name.endswith(RESUMABLE):
        raise ConfigError(f"resume: '{run_dir}' finished already (only a directory ending "
                          f"{', '.join(RESUMABLE)} can be resumed)")
    check_lock(run_dir)
    if not (run_dir / "checkpoint" / "state.json").is_file():
        raise ConfigError(f"resume: '{run_dir}' has no checkpoint (it stopped before round "
                          f"1 ended); start it again with `fedsilo run "
                          f"{run_dir / 'config.toml'}`")
    saved = config.load(run_dir / "config.toml")
    wanted = config.load(run_dir / "config.toml", overrides)
    changed = sorted(k for k, v in wanted.flat().items() if saved.flat()[k] != v)
    if changed:
        raise ConfigError(f"resume: the scenario would change ({', '.join(changed)}); a "
                          f"resumed run continues the same scenario")
    procs = RunProcesses(saved, verbose)
    try:
        fed, _ref, device = preflight(saved)
        check_writable(saved)
        nodes = connect_ray(saved, verbose)
        live = reopen_run_dir(run_dir.resolve())
    except BaseException:
        procs.stop()
        raise
    facts = run_facts(saved, fed, live, resume=True)
    return _simulate_in(live, saved, facts, fed, device, t0, verbose, nodes, procs)


def connect_ray(s: Scenario, verbose: bool) -> list[dict] | None:
    """With ``simulation.ray_address``: connect to the existing cluster now and check it
    (one clear line if it cannot serve the run), before any directory is made; Flower's
    Ray backend then reuses the connection. Without: make sure no cluster is attached by
    accident. Returns the cluster's alive nodes, or None for a private instance."""
    from fedsilo.cluster import attach, private_instance
    from fedsilo.flower_compat import keep_sigterm_handler

    if not s.simulation.ray_address:
        private_instance()
        return None
    os.environ.update(scratch_env(Path(s.simulation.cache_dir).resolve()))
    pythonpath = os.pathsep.join([*sys.path, os.environ.get("PYTHONPATH", "")])
    with keep_sigterm_handler():
        return attach(s, pythonpath, verbose)


class RunProcesses:
    """The processes of one run: every one of them inherits the run's token (so that
    all are found and stopped afterwards, whatever happened), and a private Ray instance
    is started at once, in the background, while the command checks its inputs (Flower's
    Ray backend uses a Ray that is already up)."""

    def __init__(self, s: Scenario, verbose: bool):
        self.cache_dir = Path(s.simulation.cache_dir).resolve()
        os.environ.update(scratch_env(self.cache_dir))
        kill_orphans()
        self.token = os.environ[RUN_TOKEN] = uuid.uuid4().hex
        os.environ[RUN_OWNER] = str(os.getpid())
        self.ray_tmp, self.ray_tmp_is_temporary = ray_temp_dir(self.cache_dir)
        self.handler = None
        self._error: BaseException | None = None
        self._thread = None
        self._up, self._done = threading.Event(), threading.Event()
        if not s.simulation.ray_address:
            self._thread = threading.Thread(target=self._start_ray, name="fedsilo-ray-start",
                                            args=(ray_init_args(s, self.ray_tmp, verbose),),
                                            daemon=True)
            self._thread.start()

    def _start_ray(self, init_args: dict) -> None:
        from fedsilo.cluster import private_instance
        from fedsilo.flower_compat import init_ray_as_flower, keep_sigterm_handler

        try:
            private_instance()
            with keep_sigterm_handler():
                init_ray_as_flower(init_args)
        except BaseException as exc:  # noqa: BLE001 - raised in the main thread by ready()
            self._error = exc
        finally:
            self._up.set()
        # Ray's processes die with the thread that started them (their parent-death
        # signal is tied to it): this thread lives until the run is over
        self._done.wait()

    def ready(self) -> None:
        """Wait until Ray is up (raise what stopped it)."""
        if self._thread is not None:
            self._up.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Ray down, every process of the run gone, logs closed."""
        if self._thread is not None:
            self._up.wait()
        _stop_everything(self.token, self.handler,
                         self.ray_tmp if self.ray_tmp_is_temporary else None)
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def ray_init_args(s: Scenario, ray_tmp: Path, verbose: bool) -> dict:
    init_args = {"_temp_dir": str(ray_tmp), "include_dashboard": False,
                 "logging_level": logging.DEBUG if verbose else logging.ERROR,
                 "log_to_driver": verbose}
    if s.simulation.num_cpus:
        init_args["num_cpus"] = s.simulation.num_cpus
    return init_args


def _simulate_in(run_dir: Path, s: Scenario, facts: RunFacts, fed, device, t0: float,
                 verbose: bool, nodes: list[dict] | None, procs: RunProcesses,
                 mlflow_parent: str | None = None) -> RunOutcome:
    """Launch the run in ``run_dir`` (``.incomplete``), check its outcome, finalise it."""
    from fedsilo import interrupt

    t_preflight = time.time()
    cache_dir = procs.cache_dir
    try:
        with RunDirectory(run_dir, describe=_describe_failure) as rd, \
                interrupt.stop_on_signals():
            try:
                procs.handler = _flower_logging(run_dir / "flower.log", verbose)
                procs.ready()
                _launch(s, facts, fed, device, run_dir, procs.ray_tmp, verbose, nodes)
                summary = check_outcome(s, run_dir, fed.names())
                summary["command_wall_time_s"] = time.time() - t0
                if summary.get("first_round_started_at"):
                    summary["startup_s"] = summary["first_round_started_at"] - t0
                    st = summary.setdefault("startup", {})
                    st["preflight_s"] = t_preflight - t0
                    if "server_started_at" in st:  # Ray and the simulation runtime
                        st["runtime_start_s"] = st["server_started_at"] - t_preflight
                write_json(run_dir / "summary.json", summary)
            finally:
                procs.stop()
    except BaseException as exc:  # noqa: BLE001 - reported in one line, then re-raised
        cause = _root_cause(exc)
        if isinstance(cause, interrupt.Interrupted | KeyboardInterrupt):
            raise _interrupted(cause, rd.final) from None
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, OSError) and _is_input(cause):
            raise ConfigError(f"output.dir: cannot write the run's files under "
                              f"'{s.output.dir}': {cause.strerror or cause} (the run stopped "
                              f"in {shown(rd.final)})") from None
        raise RunFailed(f"{cause} (details: {shown(rd.final)}/flower.log)") from cause
    _forget_node_memory(cache_dir, run_dir)
    if s.personalize.method != "none" and s.personalize.compare_local:
        compare_with_local(s, rd.final)
    from fedsilo.results.tracking import track

    track(rd.final, s, mlflow_parent)
    return RunOutcome(rd.final, json.loads((rd.final / "summary.json").read_text()))


def compare_with_local(s: Scenario, run_dir: Path) -> dict:
    """Train every institution alone (the local-only baseline, same rounds and training),
    print what each one gains by joining, and keep it in the run's ``gains.json`` and
    summary."""
    from fedsilo.baselines import run_baseline
    from fedsilo.results.compare import gains_table, personal_gains

    print("\npersonalisation: training each institution alone for comparison (local-only "
          "baseline) ...", flush=True)
    local_dir = run_baseline(s.replace(**{"output.mlflow": False}), "local-only")
    summary = json.loads((run_dir / "summary.json").read_text())
    gains = personal_gains(summary, json.loads((local_dir / "summary.json").read_text()))
    gains["local_baseline"] = local_dir.name
    write_json(run_dir / "gains.json", gains)
    summary["gains"] = {"local_baseline": local_dir.name, "losers": gains["losers"]}
    write_json(run_dir / "summary.json", summary)
    print("\nwhat each institution gains by joining (its own test split; gain: the model it "
          f"uses, personal, against local-only)\n{gains_table(gains)}", flush=True)
    return gains


def _interrupted(cause: BaseException, where: Path | None):
    from fedsilo import interrupt

    signum = cause.signum if isinstance(cause, interrupt.Interrupted) else 2
    exc = interrupt.Interrupted(signum)
    exc.run_dir = where
    return exc


def _is_input(exc: BaseException) -> bool:
    """A ConfigError, or an operating-system error about the user's directories (full,
    read-only, not writable): bad input, not a failed run."""
    import errno

    return isinstance(exc, ConfigError) or getattr(exc, "errno", None) in (
        errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
        errno.EDQUOT)


def _forget_node_memory(cache_dir: Path, run_dir: Path) -> None:
    """A finished run's institutions no longer need their kept memory (a simulation keeps
    it under the machine's cache directory)."""
    key = run_dir.name.removesuffix(INCOMPLETE)
    shutil.rmtree(cache_dir / "state" / key, ignore_errors=True)


RUN_OWNER = "FEDSILO_RUN_OWNER"


def kill_orphans() -> list[str]:
    """Processes left behind by runs whose owner died (kill -9 of `fedsilo run`): Ray's
    raylet, GCS and workers carry the dead owner's pid. Live runs are left alone."""
    import psutil

    orphans = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ValueError):
            env = p.environ()
            owner = int(env.get(RUN_OWNER, "0"))
            if RUN_TOKEN in env and owner and owner != os.getpid() and \
                    not psutil.pid_exists(owner):
                orphans.append(p)
    names = []
    for p in orphans:
        with contextlib.suppress(psutil.Error):
            names.append(p.name())
            p.kill()
    psutil.wait_procs(orphans, timeout=10)
    _remove_orphaned_ray_dirs()
    return names


def _launch(s: Scenario, facts: RunFacts, fed, device, run_dir: Path, ray_tmp: Path,
            verbose: bool, nodes: list[dict] | None) -> None:
    """The ServerApp and ClientApps by reference, on Flower's simulation runtime."""
    from fedsilo.flower_compat import keep_sigterm_handler, run_simulation_by_reference

    app_dir = write_app_dir(Path(s.simulation.cache_dir).resolve())
    gpus = s.simulation.gpus_per_client if device.type == "cuda" else 0.0
    # a Ray actor that dies (killed, out of memory) is restarted: with
    # strategy.on_failure = 'skip' its institutions miss only the round it died in
    backend_config = {"client_resources": {"num_cpus": s.simulation.cpus_per_client,
                                           "num_gpus": gpus, "max_restarts": -1},
                      "init_args": ray_init_args(s, ray_tmp, verbose)}
    where = "" if nodes is None else \
        f" on the Ray cluster at {s.simulation.ray_address} ({len(nodes)} nodes)"
    print(f"fedsilo: {s.scenario.name}: {len(fed.institutions)} institutions, "
          f"{s.scenario.rounds} rounds, backbone '{s.model.backbone}', scope "
          f"'{s.model.scope}', device {device.type}{where}; run directory {run_dir.name}",
          flush=True)
    with keep_sigterm_handler():
        run_simulation_by_reference(run_config(s, facts),
                                    num_supernodes=len(fed.institutions),
                                    backend_config=backend_config, server_app=SERVER_APP,
                                    client_app=CLIENT_APP, app_dir=str(app_dir),
                                    verbose=verbose)


def _stop_everything(token: str, handler, ray_tmp: Path | None) -> None:
    """Whatever happened: Ray down, every process of the run gone, logs closed."""
    with contextlib.suppress(Exception):
        import ray

        if ray.is_initialized():
            ray.shutdown()
    kill_leftovers(token)
    os.environ.pop(RUN_TOKEN, None)
    os.environ.pop(RUN_OWNER, None)
    if handler is not None:
        logging.getLogger("flwr").removeHandler(handler)
        handler.close()
    if ray_tmp is not None:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _describe_failure(exc: BaseException) -> str:
    from fedsilo import interrupt

    cause = _root_cause(exc)
    if isinstance(cause, interrupt.Interrupted | KeyboardInterrupt):
        return str(cause) or "interrupted"
    if isinstance(cause, ConfigError):  # says all there is to say
        return f"{type(cause).__name__}: {cause}"
    where = "".join(traceback.format_exception(cause))  # for a report: where it came from
    return f"{type(cause).__name__}: {cause}\n\n{where}"



def check_outcome(s: Scenario, run_dir: Path, names: list[str]) -> dict:
    """The run's summary, if the run really finished; RunFailed otherwise."""
    path = run_dir / "summary.json"
    if not path.is_file():
        raise RunFailed("the server finished without writing summary.json")
    summary = json.loads(path.read_text())
    if summary.get("rounds") != s.scenario.rounds and not summary.get("stopped_early"):
        raise RunFailed(f"{summary.get('rounds')} of {s.scenario.rounds} rounds completed")
    got = summary["final"]["institutions"]
    absent = [n for n in names if n not in got or got[n].get("accuracy") is None]
    if absent and s.strategy.fraction_evaluate >= 1.0 and s.strategy.on_failure == "stop":
        raise RunFailed(f"no final evaluation from: {', '.join(absent)}")
    if absent and s.strategy.on_failure == "skip":
        print(f"fedsilo: left out of the final round (strategy.on_failure = 'skip'): "
              f"{', '.join(absent)}", flush=True)
    return summary
