"""The one door to Flower's internals (pinned flwr==1.41.0).

Everything fedsilo uses from Flower that is not part of its public API (``flwr.app``,
``flwr.serverapp``, ``flwr.clientapp``, ``flwr.client.mod``, the names ``flwr.common``
exports) is imported here and nowhere else; a test fails when the installed Flower moves
any of it (tests/unit/test_layering.py::test_flower_compat_still_finds_every_internal),
and another that no module imports Flower's internals directly. Each group says what
public API would replace it once Flower has one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np

# -- launching the apps by reference with a run config (fedsilo run) -----------------------
# Flower's public ``run_simulation`` takes app objects and no run config; its CLI path
# (``flwr run``) builds a Run with the override config and calls ``_run_simulation``.
# Replace with a public "run these app references with this run config" once one exists.
from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES

# -- secure aggregation (SecAgg+) ------------------------------------------------------------
# Flower's SecAggPlusWorkflow drives only legacy strategies; fedsilo's Message-API strategy
# (strategies/secagg.py) runs the server's side with Flower's own primitives, and the node
# side hands Flower's secaggplus_mod a legacy FitRes. Replace with a Message-API SecAgg+
# strategy wrapper once Flower ships one.
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_extract,
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.compat.common.recorddict_compat import fitres_to_recorddict
from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes

# -- Krum's selection, to record whose updates it kept --------------------------------------
# Replace when Krum/MultiKrum report their selection in the aggregated metrics.
from flwr.serverapp.strategy.multikrum import select_multikrum

# -- institution-level DP: the config and metric keys Flower's DP wrappers use --------------
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, KEY_NORM_BIT
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = [
    "KEY_CLIPPING_NORM", "KEY_NORM_BIT", "RECORD_KEY_CONFIGS", "Key", "Stage",
    "bytes_to_private_key", "bytes_to_public_key", "combine_shares", "dequantize",
    "factor_extract", "fitres_to_recorddict", "generate_shared_key", "get_parameters_shape",
    "new_run", "parameters_addition", "parameters_mod", "parameters_subtraction",
    "pseudo_rand_gen", "run_simulation_by_reference", "select_multikrum", "set_task_identity",
    "control_client", "start_run", "run_status", "stream_logs", "stop_run", "register_node",
    "flower_error", "serve_clientapp_tasks", "fab_components", "run_supernode",
    "faster_object_pulls", "parse_flower_command", "keep_sigterm_handler",
    "strategy_chain", "strategy_state", "restore_strategy_state", "dp_wrapper_settings",
]


def new_run(run_config: dict[str, Any]) -> Run:
    """A simulation Run whose override config is ``run_config`` (flat keys)."""
    from flwr.simulation.run_simulation import NOOP_FEDERATION_ID

    run_id = generate_rand_int_from_bytes(RUN_ID_NUM_BYTES)
    run = Run.create_empty(run_id=run_id)
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    run.override_config = dict(run_config)
    set_task_identity(task_id=1, run_id=run_id, node_id=SUPERLINK_NODE_ID)
    return run


def set_task_identity(task_id: int, run_id: int, node_id: int) -> None:
    """Flower stamps every Message with the current task's identity; outside a Flower
    process (a test building messages by hand) it must be set first."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = task_id, run_id, node_id


def run_simulation_by_reference(run_config: dict[str, Any], num_supernodes: int,
                                backend_config: dict, server_app: str, client_app: str,
                                app_dir: str, verbose: bool) -> None:
    """Run the ServerApp and ClientApps named by ``module:attribute`` on Flower's
    simulation runtime, both reading ``run_config`` from their Context (what ``flwr run``
    does for a local simulation)."""
    from flwr.app import Context, RecordDict
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.telemetry import EventType

    run = new_run(run_config)
    ctx = Context(run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(),
                  run_config=dict(run_config))
    _run_simulation(num_supernodes=num_supernodes,
                    exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
                    backend_config=backend_config, client_app_attr=client_app,
                    server_app_attr=server_app, server_app_context=ctx, app_dir=app_dir,
                    run=run, verbose_logging=verbose, is_app=True)


def init_ray_as_flower(init_args: dict[str, Any]) -> None:
    """Start Ray exactly as Flower's Ray backend would (``RayBackend.init_ray``: the
    driver's sys.path as the workers' PYTHONPATH, no dashboard), so that the backend, which
    only starts Ray when none is up, finds it running."""
    import os
    import sys

    import ray

    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
             **{"include_dashboard": False, **init_args})


def lazy_internals() -> list[object]:
    """The internals imported only when used (Ray, the Control API): for the compat test."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import (
        ListRunsRequest,
        RegisterNodeRequest,
        StartRunRequest,
        StopRunRequest,
        StreamLogsRequest,
    )
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.simulation.run_simulation import NOOP_FEDERATION_ID, _run_simulation
    from flwr.supercore.constant import TaskType
    from flwr.supercore.control import ControlHttpClient
    from flwr.supercore.error import FlowerError
    from flwr.supercore.fab import Fab
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.inflatable import inflatable_utils
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.telemetry import EventType
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    for fn in (inflatable_utils.pull_objects,
               inflatable_utils.pull_and_inflate_object_from_tree):
        assert {"initial_backoff", "backoff_cap"} <= set(fn.__kwdefaults__), fn
    assert "time.sleep(" in __import__("inspect").getsource(
        start_client_internal.start_client_internal), "the SuperNode no longer polls"
    import ray._private.utils as ray_utils
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    assert callable(ray_utils.set_sigterm_handler)
    init_ray = __import__("inspect").getsource(RayBackend.init_ray)
    assert "if not ray.is_initialized():" in init_ray, "Flower's backend starts its own Ray"
    assert '"PYTHONPATH": pythonpath' in init_ray, "Flower starts Ray another way"
    return [AcquireTaskRequest, TaskType.CLIENT_APP, HeartbeatSender,
            make_task_heartbeat_fn_http, RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor, RuntimeHttpClient, start_client_internal.time,
            flower_supernode, pull_task_input, push_message, push_task_output,
            NOOP_FEDERATION_ID, _run_simulation, EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            build_fab_from_disk, fab_to_proto, user_config_to_proto, ListRunsRequest,
            RegisterNodeRequest, StartRunRequest, StopRunRequest, StreamLogsRequest,
            ControlHttpClient, FlowerError, Fab, public_key_to_bytes]


# -- submitting a run to a SuperLink and following it (fedsilo submit, fedsilo register) ---
# Flower's CLI (`flwr run`, `flwr ls`, `flwr log`, `flwr supernode register`) does this
# through its Control API client; these are the same calls, made from Python so that
# `fedsilo submit` can wait for the outcome and read the log as it comes. Replace with a
# public Control API client once Flower has one.
def control_client(superlink: str, ca: str | None):
    """A client of the SuperLink's Control API at ``host:port`` (TLS against ``ca``;
    ``ca=None``: plain HTTP)."""
    from flwr.supercore.control import ControlHttpClient

    return ControlHttpClient.from_server_address(server_address=superlink,
                                                 insecure=ca is None, root_certificates=ca,
                                                 interceptors=[])


def start_run(client, app_dir: str, run_config: dict[str, Any]) -> int:
    """Submit the Flower app in ``app_dir`` with ``run_config``; the run's id."""
    import hashlib
    from pathlib import Path

    from flwr.cli.build import build_fab_from_disk
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import StartRunRequest
    from flwr.supercore.fab import Fab

    content = build_fab_from_disk(Path(app_dir))
    fab = Fab(hashlib.sha256(content).hexdigest(), content, {})
    res = client.StartRun(StartRunRequest(fab=fab_to_proto(fab),
                                          override_config=user_config_to_proto(run_config)))
    return int(res.run_id)


def run_status(client, run_id: int) -> tuple[str, str, str]:
    """(status, sub-status, details) of a run: 'pending' | 'starting' | 'running' |
    'finished', then 'completed' | 'failed' | 'stopped'."""
    from flwr.proto.control_pb2 import ListRunsRequest

    run = client.ListRuns(ListRunsRequest(run_id=run_id)).run_dict[run_id]
    return run.status.status, run.status.sub_status, run.status.details


def stream_logs(client, run_id: int, after: float = 0.0):
    """(text, timestamp) chunks of the ServerApp's log from ``after`` on; the stream ends
    when the run has finished."""
    from flwr.proto.control_pb2 import StreamLogsRequest

    for res in client.StreamLogs(StreamLogsRequest(run_id=run_id, after_timestamp=after)):
        yield res.log_output, res.latest_timestamp


def stop_run(client, run_id: int) -> None:
    from flwr.proto.control_pb2 import StopRunRequest

    client.StopRun(StopRunRequest(run_id=run_id))


def register_node(client, public_key_openssh: bytes, name: str) -> int:
    """Register a node's OpenSSH EC public key under ``name`` (``flwr supernode
    register``); the node id the SuperLink gives it."""
    from cryptography.hazmat.primitives import serialization
    from flwr.proto.control_pb2 import RegisterNodeRequest

    key = serialization.load_ssh_public_key(public_key_openssh)
    res = client.RegisterNode(RegisterNodeRequest(public_key=bytes_of_public_key(key),
                                                  name=name))
    return int(res.node_id)


def bytes_of_public_key(key) -> bytes:
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    return public_key_to_bytes(key)


def flower_error(exc: Exception) -> str | None:
    """The SuperLink's own one-line reason for a failed Control API call, if it gave one."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        try:
            from flwr.supercore.error import FlowerError

            return str(FlowerError.from_json(exc.response.text))
        except Exception:  # noqa: BLE001 - fall back to the HTTP status
            return f"HTTP {exc.response.status_code}"
    return None


# -- a deployed node's long-lived ClientApp process (fedsilo node) -------------------------
# Flower 1.41 starts one `flwr-clientapp` process per message (it imports torch, reads the
# data and loads the model again each time) and its SuperNode waits a fixed 3 s between
# polls of the SuperLink. fedsilo's node instead runs the SuperNode with
# `--isolation process` and serves the ClientApp tasks itself, in one process that keeps
# the model and the feature cache (the same calls `flwr-clientapp` makes, without the exit
# at the end), and runs the SuperNode with a shorter poll. Replace with Flower's own
# long-lived ClientApp and a configurable poll interval once Flower has them.
def serve_clientapp_tasks(runtime_address: str, app, should_stop, poll_s: float = 0.02,
                          accept=None) -> None:
    """Acquire ClientApp tasks from the SuperNode's runtime API at ``runtime_address`` and
    run each with ``app`` in this process, until ``should_stop()``. ``accept(fab)``, if
    given, returns None for a FAB this process may run, or the reason it may not."""
    import time

    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    faster_object_pulls()
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker())
    try:
        while not should_stop():
            res = client.AcquireTask(AcquireTaskRequest(
                supported_task_types=[TaskType.CLIENT_APP]))
            if res.HasField("task") and res.token:
                _run_clientapp_task(runtime_address, res.token, app, accept)
            else:
                time.sleep(poll_s)
    finally:
        client.close()


def _run_clientapp_task(runtime_address: str, token: str, app, accept) -> None:
    """One message: what `flwr-clientapp` does, in this process."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                      RuntimeTokenHttpInterceptor(token)],
        retry_invoker=make_simple_http_retry_invoker())
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    message = context = reply = None
    sub_status, details = SubStatus.FAILED, "ClientApp task failed"
    try:
        message, context, _run, fab = pull_task_input(client)
        refused = accept(fab) if accept is not None else None
        if refused:
            raise PermissionError(refused)
        reply = app(message=message, context=context)
        sub_status, details = SubStatus.COMPLETED, ""
    except Exception as ex:  # noqa: BLE001 - the server gets it as an error reply
        details = str(type(ex)) + ":<'" + str(ex) + "'>"  # Flower's own wording
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                            reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            push_task_output(client=client, context=context, sub_status=sub_status,
                             details=details)
            heartbeat.stop()
            client.close()


def fab_components(fab) -> dict[str, str]:
    """The ``[tool.flwr.app.components]`` a FAB declares (which apps it would run)."""
    import io
    import tomllib
    import zipfile

    with zipfile.ZipFile(io.BytesIO(fab.content)) as z:
        project = tomllib.loads(z.read("pyproject.toml").decode())
    return dict(project["tool"]["flwr"]["app"]["components"])


def faster_object_pulls(initial_backoff: float = 0.02, backoff_cap: float = 0.5) -> None:
    """A message's content may arrive just after the message; Flower then retries the pull
    after 1 s, doubling up to 10 s. Retry after ``initial_backoff`` instead, up to
    ``backoff_cap`` (in this process). Replace when Flower makes the backoff configurable."""
    from flwr.supercore.inflatable import inflatable_utils

    for fn in (inflatable_utils.pull_objects,
               inflatable_utils.pull_and_inflate_object_from_tree):
        fn.__kwdefaults__["initial_backoff"] = initial_backoff
        fn.__kwdefaults__["backoff_cap"] = backoff_cap


def run_supernode(argv: list[str], poll_s: float) -> None:
    """Flower's `flower-supernode` with ``argv``, waiting at most ``poll_s`` wherever it
    waits (its fixed 3 s between polls of the SuperLink, 0.5 s for a reply)."""
    import sys
    import time

    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    class _Clock:
        def __getattr__(self, name: str):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            time.sleep(min(seconds, poll_s))

    start_client_internal.time = _Clock()
    faster_object_pulls()
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


# -- Flower's own argument parsers, to check every command line fedsilo builds or documents -
def parse_flower_command(argv: list[str]) -> dict[str, Any]:
    """Parse a `flower-superlink`, `flower-supernode` or `flwr ...` command line with the
    installed Flower's own parser (argparse or click); raise ValueError if it refuses it."""
    prog, args = argv[0], argv[1:]
    if prog in ("flower-superlink", "flower-supernode"):
        if prog == "flower-superlink":
            from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink as make
        else:
            from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode as make
        parser = make()
        parser.exit_on_error = False

        def refuse(message: str):
            raise ValueError(f"{prog}: {message}")

        parser.error = refuse
        try:
            return vars(parser.parse_args(args))
        except SystemExit as exc:
            raise ValueError(f"{prog} refused {args}") from exc
    if prog == "flwr":
        import click
        import typer.main
        from flwr.cli.app import app

        command, ctx, rest = typer.main.get_command(app), None, list(args)
        try:
            while True:
                ctx = command.make_context(prog if ctx is None else rest[0],
                                           rest if ctx is None else rest[1:], parent=ctx,
                                           resilient_parsing=False)
                if not isinstance(command, click.Group):
                    return dict(ctx.params)
                rest = [*ctx.protected_args, *ctx.args]
                command = command.get_command(ctx, rest[0])
                if command is None:
                    raise ValueError(f"flwr has no command {rest[0]!r}")
        except click.ClickException as exc:
            raise ValueError(f"flwr: {exc.format_message()}") from exc
    if prog == "flwr-node-config":  # the value of --node-config on its own
        from flwr.common.config import parse_config_args

        return dict(parse_config_args(args))
    raise ValueError(f"not a Flower command: {prog}")


# -- Ray (the simulation runtime's engine) and signals ---------------------------------------
# `ray.init` replaces the process's SIGTERM handler with one that exits at once (and its
# C++ core installs a crash handler that aborts on SIGTERM), so a `fedsilo run` stopped by
# `timeout`, systemd or Kubernetes would end in a crash dump instead of stopping its run
# cleanly with exit 143. Within `keep_sigterm_handler()` Ray leaves the handler alone; the
# crash handler is off through RAY_DISABLE_FAILURE_SIGNAL_HANDLER (runner.scratch_env).
# Replace once Ray lets a driver keep its own handler.
@contextmanager
def keep_sigterm_handler():
    import ray._private.utils as ray_utils

    original = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = original


# -- a strategy's state in a checkpoint, one function per family ---------------------------
# Flower's strategies keep their server-side state in attributes (FedOpt's moments, FedAvgM's
# momentum and its own copy of the weights, the DP wrappers' clipping norm) and offer no
# API to save or restore it. These are the only places fedsilo names those attributes (a
# test holds it). Replace once Flower's strategies can be checkpointed.
def strategy_chain(strategy) -> list:
    """``strategy`` and every strategy it wraps, outermost first (fedsilo's wrappers keep
    theirs in ``inner``, Flower's DP wrappers in ``strategy``)."""
    chain, seen = [], strategy
    while seen is not None and all(seen is not s for s in chain):
        chain.append(seen)
        seen = seen.__dict__.get("inner") or seen.__dict__.get("strategy")
    return chain


def _fedopt_state(s) -> dict[str, np.ndarray]:
    return {f"{attr}/{k}": np.asarray(v) for attr in ("m_t", "v_t")
            for k, v in (getattr(s, attr, None) or {}).items()}


def _restore_fedopt(s, groups: dict[str, dict[str, np.ndarray]]) -> None:
    for attr in ("m_t", "v_t"):
        if attr in groups:
            setattr(s, attr, groups[attr])


def _fedavgm_state(s) -> dict[str, np.ndarray]:
    from flwr.app import ArrayRecord

    momentum, current = s.momentum_vector, s.current_arrays
    if momentum is None or not isinstance(current, ArrayRecord):
        return {}
    out = {f"momentum/{k}": np.asarray(v)
           for k, v in zip(current.keys(), momentum, strict=True)}
    out.update({f"current/{k}": v.numpy() for k, v in current.items()})
    return out


def _restore_fedavgm(s, groups: dict[str, dict[str, np.ndarray]]) -> None:
    from flwr.app import Array, ArrayRecord

    if "momentum" in groups:
        s.current_arrays = ArrayRecord({k: Array(np.asarray(v))
                                        for k, v in groups["current"].items()})
        s.momentum_vector = [groups["momentum"][k] for k in groups["current"]]


def _DP_WRAPPERS() -> tuple[type, type]:  # noqa: N802 - a constant, imported late
    from flwr.serverapp.strategy.dp_adaptive_clipping import DifferentialPrivacyAdaptiveBase
    from flwr.serverapp.strategy.dp_fixed_clipping import DifferentialPrivacyFixedClippingBase

    return DifferentialPrivacyAdaptiveBase, DifferentialPrivacyFixedClippingBase


def strategy_state(strategy) -> tuple[dict[str, np.ndarray], dict]:
    """(named arrays, JSON scalars): the server-side state of every strategy in
    ``strategy``'s chain that a resumed run needs. fedsilo's own strategies give theirs
    through ``checkpoint_state()``."""
    from flwr.serverapp.strategy import FedAvgM
    from flwr.serverapp.strategy.fedopt import FedOpt

    arrays: dict[str, np.ndarray] = {}
    scalars: dict = {}
    for s in strategy_chain(strategy):
        if isinstance(s, FedOpt):
            arrays.update(_fedopt_state(s))
        if isinstance(s, FedAvgM):
            arrays.update(_fedavgm_state(s))
        if isinstance(s, _DP_WRAPPERS()):
            scalars["clipping_norm"] = float(s.clipping_norm)
        if hasattr(type(s), "checkpoint_state"):  # looked up on the class: not delegated
            more_arrays, more_scalars = s.checkpoint_state()
            arrays.update(more_arrays)
            scalars.update(more_scalars)
    return arrays, scalars


def restore_strategy_state(strategy, arrays: dict[str, np.ndarray], scalars: dict) -> None:
    """Put back what ``strategy_state`` saved."""
    from flwr.serverapp.strategy import FedAvgM
    from flwr.serverapp.strategy.fedopt import FedOpt

    groups: dict[str, dict[str, np.ndarray]] = {}
    for name, v in arrays.items():
        group, key = name.split("/", 1)
        groups.setdefault(group, {})[key] = v
    for s in strategy_chain(strategy):
        if isinstance(s, FedOpt):
            _restore_fedopt(s, groups)
        if isinstance(s, FedAvgM):
            _restore_fedavgm(s, groups)
        if isinstance(s, _DP_WRAPPERS()) and "clipping_norm" in scalars:
            s.clipping_norm = float(scalars["clipping_norm"])
        if hasattr(type(s), "restore_checkpoint_state"):
            s.restore_checkpoint_state(groups, scalars)


def dp_wrapper_settings(strategy) -> dict:
    """The clipping norm and noise that the DP wrapper in ``strategy``'s chain uses now
    (and, for adaptive clipping, the noise on the count of unclipped updates)."""
    adaptive, _fixed = _DP_WRAPPERS()
    for s in strategy_chain(strategy):
        if isinstance(s, _DP_WRAPPERS()):
            out = {"clipping_norm": float(s.clipping_norm),
                   "noise_multiplier": float(s.noise_multiplier),
                   "num_sampled": int(s.num_sampled_clients)}
            if isinstance(s, adaptive):
                out["clipped_count_std"] = float(s.clipped_count_stddev)
            return out
    return {}
