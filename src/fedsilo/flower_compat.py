"""The one door to Flower's internals (pinned flwr==1.41.0).

Everything fedsilo uses from Flower that is not part of its public API (``flwr.app``,
``flwr.serverapp``, ``flwr.clientapp``, ``flwr.client.mod``, the names ``flwr.common``
exports) is imported here and nowhere else; a test fails when the installed Flower moves
any of it (tests/unit/test_flower_compat.py), and another that no module imports Flower's
internals directly. Each group says what public API would replace it once Flower has one.
"""

from __future__ import annotations

from typing import Any

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


def lazy_internals() -> list[object]:
    """The internals imported only when used (they pull in Ray): for the compat test."""
    from flwr.simulation.run_simulation import NOOP_FEDERATION_ID, _run_simulation
    from flwr.supercore.telemetry import EventType

    return [NOOP_FEDERATION_ID, _run_simulation, EventType.PYTHON_API_RUN_SIMULATION_LEAVE]
