"""Large federations on one Ray node against a Ray cluster, side by side in one run.

    python benchmarks/cluster.py                   # 100 and 1000 institutions
    python benchmarks/cluster.py --sizes 100 --json out.json

For each size (small partitions, 10 institutions sampled per round, 4 rounds, the default
backbone and scope) the same scenario runs
  (a) single node   `fedsilo run` with its private Ray instance (every CPU of the machine)
  (b) cluster       `fedsilo run --set simulation.ray_address=...` on a Ray cluster of
                    --nodes nodes with --cpus-per-node CPUs each (`ray start`, on this
                    machine unless --address names one that runs already)
and reports seconds per round after the first, and the peak resident memory of the driver
and of each Ray node (its raylet and the workers it started).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).parent))

from scopes import run  # noqa: E402

from fedsilo.cluster import LocalCluster  # noqa: E402
from fedsilo.results import format_table  # noqa: E402


class NodeMemory:
    """Peak RSS of each Ray node's process tree (found by its raylet), sampled."""

    def __init__(self, cluster: LocalCluster, every: float = 0.3):
        self.cluster, self.every = cluster, every
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for raylet in [p for p in self.cluster.processes() if p.name() == "raylet"]:
                try:
                    node = next(a.split("=", 1)[1][:12] for a in raylet.cmdline()
                                if a.startswith("--node_id="))
                    tree = [raylet, *raylet.children(recursive=True)]
                    rss = sum(_rss(p) for p in tree)
                except (psutil.Error, StopIteration):
                    continue
                self.peak[node] = max(self.peak.get(node, 0), rss)
            self._stop.wait(self.every)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peak


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except psutil.Error:
        return 0


def scenario(n: int) -> list[str]:
    banks = n * 3 // 5
    frac = min(1.0, 10 / n)
    return [f"federation.banks={banks}", f"federation.hospitals={n - banks}",
            "data.synthetic.size=20", "data.synthetic.size_spread=0.0",
            "data.min_examples=4", f"strategy.fraction_train={frac}",
            f"strategy.fraction_evaluate={frac}", "strategy.min_train_clients=10",
            "scenario.rounds=4"]


def measure(label: str, n: int, r: dict, nodes: dict[str, int] | None) -> dict:
    later = [row["wall_time_s"] for row in r["rows"][1:]]
    return {"variant": label, "institutions": n, "s_per_round": sum(later) / len(later),
            "peak_rss_mb": r["peak_rss"] / 2**20,
            "node_rss_mb": {k: v / 2**20 for k, v in (nodes or {}).items()},
            "accuracy": r["summary"]["final"]["global"]["accuracy"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100,1000")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cpus-per-node", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="fedsilo-cluster-") as tmp:
        work = Path(tmp)
        for n in sizes:
            print(f"{n} institutions, single node ...", flush=True)
            r = run(scenario(n), work, work / f"cache-single-{n}")
            results.append(measure("(a) single node", n, r, None))
        with LocalCluster(nodes=args.nodes, cpus=args.cpus_per_node) as cluster:
            for n in sizes:
                print(f"{n} institutions, {args.nodes}-node cluster ...", flush=True)
                sampler = NodeMemory(cluster)
                r = run([*scenario(n), f"simulation.ray_address={cluster.address}"], work,
                        work / f"cache-cluster-{n}")
                results.append(measure(f"(b) cluster, {args.nodes} nodes", n, r,
                                       sampler.stop()))
            alive = len(cluster.alive())
    rows = []
    for r in results:
        nodes = ", ".join(f"{v:.0f}" for v in r["node_rss_mb"].values()) or "-"
        rows.append([r["variant"], r["institutions"], f"{r['s_per_round']:.2f}",
                     f"{r['peak_rss_mb']:.0f}", nodes, r["accuracy"]])
    print("\n" + format_table(rows, ["variant", "institutions", "s/round after",
                                     "peak RSS, driver + own Ray (MB)",
                                     "peak RSS per Ray node (MB)", "final acc"]))
    print(f"\nthe cluster was still up after the runs: {alive} of {args.nodes} nodes alive")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
