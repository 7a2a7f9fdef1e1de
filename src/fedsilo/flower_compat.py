"""The one place that touches Flower internals (pinned flwr==1.41.0).

``fedsilo run`` launches the ServerApp and ClientApp by reference, the way ``flwr run``
does, with the scenario as the run config that both apps read from their Context. Flower's
public ``run_simulation`` takes app objects and no run config, so the run is built here as
Flower's own simulation entry point builds it.
"""

from __future__ import annotations

from typing import Any

from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


def new_run(run_config: dict[str, Any]) -> Run:
    """A simulation Run whose override config is ``run_config`` (flat keys)."""
    from flwr.simulation.run_simulation import NOOP_FEDERATION_ID

    run_id = generate_rand_int_from_bytes(RUN_ID_NUM_BYTES)
    run = Run.create_empty(run_id=run_id)
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    run.override_config = dict(run_config)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    return run
