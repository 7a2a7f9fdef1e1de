"""Running a simulation on a Ray cluster that already exists (``simulation.ray_address``).

Before Flower starts its actors, ``attach`` connects this process to the cluster and checks
what would otherwise fail later and obscurely: that the address answers, that every node
runs the same Ray, Python, Flower and fedsilo as this machine, and that some node has room
for one institution's actor. Flower's Ray backend then uses this connection. At the end
the run only disconnects: the cluster and its processes are never stopped.
"""

from __future__ import annotations

import os
import sys

from fedsilo.config import ConfigError, Scenario


def attach(s: Scenario, pythonpath: str, verbose: bool) -> list[dict]:
    """Connect to the cluster at ``simulation.ray_address``; the alive nodes."""
    import logging

    import ray

    address = s.simulation.ray_address
    try:
        ray.init(address=address, logging_level=logging.DEBUG if verbose else logging.ERROR,
                 log_to_driver=verbose, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    except (ConnectionError, TimeoutError) as exc:
        raise ConfigError(f"simulation.ray_address: no Ray cluster answers at '{address}' "
                          f"({_first_line(exc)}); start one with `ray start --head` or fix "
                          f"the address") from None
    except RuntimeError as exc:
        if "version" in str(exc).lower():
            raise ConfigError(f"simulation.ray_address: the cluster at '{address}' runs "
                              f"another Ray or Python than this machine (Ray "
                              f"{ray.__version__}, Python {sys.version.split()[0]}): "
                              f"{_first_line(exc)}; use the same environment on every "
                              f"node") from None
        raise
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        _check_room(s, nodes)
        _check_versions(nodes)
    except BaseException:
        ray.shutdown()
        raise
    return nodes


def _check_room(s: Scenario, nodes: list[dict]) -> None:
    from fedsilo.silo import resolve_device

    cpus = s.simulation.cpus_per_client
    gpus = s.simulation.gpus_per_client if resolve_device(s.simulation.device).type == \
        "cuda" else 0.0
    fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= cpus
            and (gpus == 0 or n["Resources"].get("GPU", 0) >= gpus)]
    if not fits:
        have = ", ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPUs, "
                         f"{n['Resources'].get('GPU', 0):g} GPUs" for n in nodes)
        want = f"{cpus:g} CPUs" + (f" and {gpus:g} GPU" if gpus else "")
        raise ConfigError(f"simulation.cpus_per_client: no node of the Ray cluster has room "
                          f"for one institution's actor ({want}; the nodes have {have}); "
                          f"lower simulation.cpus_per_client or gpus_per_client")


def _check_versions(nodes: list[dict]) -> None:
    """Flower and fedsilo on every node as on this machine (Ray checks its own and
    Python's when connecting)."""
    import flwr
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import fedsilo

    @ray.remote(num_cpus=0)
    def versions() -> tuple[str, str]:
        import flwr as f

        import fedsilo as fs

        return f.__version__, fs.__version__

    ours = (flwr.__version__, fedsilo.__version__)
    refs = {n["NodeManagerAddress"] + f" ({n['NodeID'][:12]})": versions.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
        for n in nodes}
    for where, ref in refs.items():
        try:
            theirs = ray.get(ref, timeout=120)
        except Exception as exc:  # noqa: BLE001 - a node that cannot import us
            raise ConfigError(f"simulation.ray_address: Ray node {where} cannot run fedsilo "
                              f"({_first_line(exc)}); install the same environment and code "
                              f"on every node") from None
        if theirs != ours:
            raise ConfigError(f"simulation.ray_address: Ray node {where} has Flower "
                              f"{theirs[0]} and fedsilo {theirs[1]}, this machine Flower "
                              f"{ours[0]} and fedsilo {ours[1]}; use the same environment "
                              f"on every node")


def private_instance() -> None:
    """A run without ``ray_address`` never attaches to a cluster by accident."""
    os.environ.pop("RAY_ADDRESS", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
