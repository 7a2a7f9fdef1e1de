"""A real two-node Ray cluster on this machine (a head and a second node joined to it, one
CPU each, their own temp dirs and ports): a run attaches to it and uses both nodes, leaves
it running, and a run without `simulation.ray_address` never attaches to it by accident."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from fedsilo.cluster import LocalCluster
from tests.conftest import CONFIGS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(nodes=2, cpus=1) as c:
        yield c


def _run(tmp_path: Path, cache_dir: Path, env: dict, *sets: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "fedsilo.cli", "run", str(CONFIGS / "smoke.toml"),
            "--set", "scenario.rounds=2", "--set", f"output.dir={tmp_path / 'runs'}",
            "--set", f"simulation.cache_dir={cache_dir}"]
    for item in sets:
        args += ["--set", item]
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=env)


def _ray_nodes_used(tmp_path: Path) -> set[str]:
    run = next(p for p in (tmp_path / "runs").iterdir() if "." not in p.name)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {v["ray_node"] for r in rows for v in r["institutions"].values()}


def test_a_run_on_the_cluster_uses_both_nodes_and_leaves_it_running(cluster, tmp_path,
                                                                    cache_dir):
    nodes = cluster.alive()
    raylets = {p.pid for p in cluster.processes() if "raylet" in p.name()}
    proc = _run(tmp_path, cache_dir, cluster.env,
                f"simulation.ray_address={cluster.address}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"on the Ray cluster at {cluster.address} (2 nodes)" in proc.stdout
    assert _ray_nodes_used(tmp_path) == {n[:12] for n in nodes}  # both nodes ran some
    # the cluster is still there, whole: the run only disconnected
    assert sorted(cluster.alive()) == sorted(nodes)
    assert raylets and all(psutil.pid_exists(pid) for pid in raylets)


def test_without_an_address_a_stray_cluster_is_left_alone(cluster, tmp_path, cache_dir):
    nodes = cluster.alive()
    stray = dict(cluster.env, RAY_ADDRESS=cluster.address)
    proc = _run(tmp_path, cache_dir, stray)
    assert proc.returncode == 0, proc.stderr[-3000:]
    used = _ray_nodes_used(tmp_path)
    assert len(used) == 1 and not used & {n[:12] for n in nodes}  # its own instance
    assert sorted(cluster.alive()) == sorted(nodes)


@pytest.mark.parametrize("sets,message", [
    (("simulation.ray_address=127.0.0.1:1",),
     "fedsilo: simulation.ray_address: no Ray cluster answers at '127.0.0.1:1'"),
    (("simulation.cpus_per_client=4",),
     "fedsilo: simulation.cpus_per_client: no node of the Ray cluster has room for one "
     "institution's actor (4 CPUs"),
])
def test_a_cluster_that_cannot_serve_the_run_is_one_line(cluster, tmp_path, cache_dir, sets,
                                                        message):
    sets = (f"simulation.ray_address={cluster.address}", *sets)
    proc = _run(tmp_path, cache_dir, cluster.env, *sets)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message), proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
