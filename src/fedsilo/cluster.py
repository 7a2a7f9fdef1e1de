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
    _probe(address)
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


def _probe(address: str, timeout: float = 5.0) -> None:
    """HOST:PORT must answer at once (Ray itself retries an unreachable address for a
    minute)."""
    import socket

    if address == "auto":
        return  # Ray finds the local cluster, or says at once that there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"simulation.ray_address: '{address}' is neither 'auto' nor "
                          f"HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except OSError as exc:
        raise ConfigError(f"simulation.ray_address: no Ray cluster answers at '{address}' "
                          f"({exc.strerror or exc}); start one with `ray start --head` or "
                          f"fix the address") from None


def _check_room(s: Scenario, nodes: list[dict]) -> None:
    from fedsilo.node.silo import resolve_device

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


class LocalCluster:
    """A Ray cluster of ``nodes`` nodes on this machine (a head and nodes joined to it,
    ``cpus`` CPUs each, their own temp dirs and free ports), started with `ray start` as on
    real hosts: to try `simulation.ray_address` on one machine, and for the tests and the
    benchmark. Leaving the ``with`` block stops exactly the processes it started."""

    def __init__(self, nodes: int = 2, cpus: int = 1):
        import tempfile

        self.nodes, self.cpus = nodes, cpus
        # Ray's unix sockets live under the temp dir: keep its path short
        self.root = tempfile.mkdtemp(prefix="fsrc-", dir="/tmp")
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        self.env.pop("RAY_ADDRESS", None)
        self.address = ""
        self._taken: set[int] = set()  # every port given to a node so far

    def _port(self) -> int:
        """A free port that no node of this cluster was given (nor a worker range)."""
        from fedsilo.ports import free_port

        while True:
            port = free_port()
            if port not in self._taken:
                self._taken.add(port)
                return port

    def _worker_ports(self, n: int = 61) -> int:
        """The first of ``n`` consecutive free ports, none given to a node before."""
        import socket

        for _ in range(100):
            base = self._port()
            span = range(base, base + n)
            if span.stop > 65535 or self._taken & set(span[1:]):
                continue
            try:
                for port in span[1:]:
                    with socket.socket() as sock:
                        sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            self._taken.update(span)
            return base
        raise RuntimeError(f"no {n} consecutive free ports for Ray's workers")

    def __enter__(self) -> LocalCluster:
        import time

        try:
            port = self._port()
            self.address = f"127.0.0.1:{port}"
            self._start(["--head", "--port", str(port), "--include-dashboard=false",
                         "--ray-client-server-port", str(self._port())], "n0")
            for i in range(1, self.nodes):
                self._start(["--address", self.address], f"n{i}")
            end = time.monotonic() + 60
            while len(self.alive()) < self.nodes:
                if time.monotonic() > end:
                    raise RuntimeError("the Ray nodes did not join within 60 s")
                time.sleep(1)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self, args: list[str], name: str) -> None:
        import subprocess

        p = [self._port() for _ in range(6)] + [self._worker_ports()]
        cmd = [str(_ray_cli()), "start", *args, "--num-cpus", str(self.cpus),
               "--disable-usage-stats", "--temp-dir", f"{self.root}/{name}",
               "--node-manager-port", str(p[0]), "--object-manager-port", str(p[1]),
               "--runtime-env-agent-port", str(p[2]), "--dashboard-agent-listen-port",
               str(p[3]), "--dashboard-agent-grpc-port", str(p[4]), "--metrics-export-port",
               str(p[5]), "--min-worker-port", str(p[6]), "--max-worker-port",
               str(p[6] + 60)]  # 61 ports, none of them given to anything else
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=self.env)
        if out.returncode != 0:
            raise RuntimeError(f"ray start failed: {out.stderr.strip()[-500:]}")

    def alive(self) -> list[str]:
        """The ids of the cluster's alive nodes (asked from a separate process)."""
        import json
        import subprocess

        code = (f"import ray, json; ray.init(address={self.address!r}, "
                f"logging_level='ERROR'); print(json.dumps([n['NodeID'] for n in "
                f"ray.nodes() if n['Alive']]))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, env=self.env)
        if out.returncode != 0:
            return []
        return json.loads(out.stdout.strip().splitlines()[-1])

    def processes(self) -> list:
        """This cluster's processes (found by its temp dir)."""
        import psutil

        found = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if self.root in " ".join(p.info["cmdline"] or []):
                    found.append(p)
            except psutil.Error:
                pass
        return found

    def stop(self) -> None:
        import shutil

        import psutil

        procs = self.processes()
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=20)
        shutil.rmtree(self.root, ignore_errors=True)


def _ray_cli():
    from pathlib import Path

    return Path(sys.executable).parent / "ray"
