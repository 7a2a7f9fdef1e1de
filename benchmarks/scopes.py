"""What a round costs: the naive way against fedsilo's scopes, side by side in one run.

    python benchmarks/scopes.py --quick --json bench.json     # a few minutes on 2 CPU cores
    python benchmarks/scopes.py --json bench.json             # the default scenario's data

Part 1 runs the same scenario data, backbone (offline MiniLM) and machine four ways, each a
real `fedsilo run` (Flower simulation on Ray):
  (a) naive    the whole model trained and sent every round, every text re-encoded every
               epoch (as Flower's Hugging Face quickstart does it)
  (b) head     scope `head` without the cache (frozen backbone re-run on every batch)
  (c) cached   scope `head` with the frozen-prefix cache (fresh cache: round 1 encodes)
  (d) lora     scope `lora` (rank 8 on query/value) + head
(a) and (d) use one learning rate for every weight, without warm-up or early stopping.
It reports time to a target global accuracy (from launching the command, so start-up is
included), seconds per round after the first, bytes per round, and the peak resident
memory of the whole process tree (Ray workers included), with ratios against (a).

Part 2 scales the number of institutions (10, 100, 1000; small partitions; 10 sampled per
round) and reports peak memory and seconds per round.

With ``--hard`` it runs instead every scope at its defaults on configs/hard.toml (the
task a linear head on frozen features cannot learn well) and reports final accuracy and
macro-F1, points gained over ``head``, time to a macro-F1, seconds and bytes per round,
and the largest round-to-round fall of macro-F1; ``--stability ROUNDS`` adds the default
scenario at every scope.

    python benchmarks/scopes.py --hard --stability 10 --json hard.json

Part 3 profiles a cached round: where its time goes (client compute, aggregation,
checkpointing, and what is left: Flower/Ray messaging and serialisation).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fedsilo.results import format_table  # noqa: E402

# one learning rate for every weight, no warm-up and no early stopping, as measured before
# fedsilo had a rate per group of weights (docs/benchmarks.md's part 1 table)
ONE_RATE = ["train.warmup=0", "train.early_stopping=\"off\""]
VARIANTS = {  # name -> (description, --set overrides)
    "naive": ("(a) full model, no cache", ["model.scope=\"full\"", "model.cache=false",
                                          "train.lr=5e-5", "train.encoder_lr=5e-5",
                                          *ONE_RATE]),
    "head": ("(b) head, no cache", ["model.scope=\"head\"", "model.cache=false"]),
    "cached": ("(c) head + cache", ["model.scope=\"head\"", "model.cache=true"]),
    "lora": ("(d) lora r=8 + head", ["model.scope=\"lora\"", "model.cache=false",
                                     "train.lr=2e-3", "train.adapter_lr=2e-3", *ONE_RATE]),
}
# --hard: every scope at its defaults on configs/hard.toml
HARD_SCOPES = {"head": "head (cached)", "top-k": "top-k, k=2 (cached)", "lora": "lora r=8",
               "full": "full"}


class PeakRSS:
    """Samples the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int, every: float = 0.2):
        self.root = psutil.Process(pid)
        self.peak = 0
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run(sets: list[str], workdir: Path, cache_dir: Path,
        config: str = "configs/bank_hospital.toml") -> dict:
    """One `fedsilo run`; returns its summary, metrics rows, launch time and peak RSS."""
    out = workdir / "runs"
    cmd = [sys.executable, "-m", "fedsilo.cli", "run", str(ROOT / config),
           "--set", f"output.dir={out}", "--set", f"simulation.cache_dir={cache_dir}",
           "--set", "output.plot=false"]
    for s in sets:
        cmd += ["--set", s]
    launched = time.time()
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    sampler = PeakRSS(proc.pid)
    stdout, stderr = proc.communicate()
    peak = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run failed ({' '.join(sets)}): {stderr.strip()[-2000:]}")
    run_dir = max(out.iterdir(), key=lambda p: p.stat().st_mtime)
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"summary": summary, "rows": rows, "launched": launched, "peak_rss": peak,
            "stdout": stdout}


def time_to_target(r: dict, target: float, from_launch: bool = True) -> float | None:
    """Seconds until the end of the first round at ``target``: from launching the command
    (start-up included), or from the start of round 1 (training only)."""
    offset = r["summary"]["started_at"] - r["launched"] if from_launch else 0.0
    for row in r["rows"]:
        if row["global"]["accuracy"] >= target:
            return offset + row["elapsed_s"]
    return None


def part1(args, workdir: Path) -> dict:
    data = ["data.synthetic.size=100"] if args.quick else []
    # each variant runs until it reaches the target (scenario.target_accuracy) or this many
    rounds = ({"naive": 10, "head": 10, "cached": 12, "lora": 10} if args.quick
              else {"naive": 10, "head": 12, "cached": 12, "lora": 12})
    results = {}
    for name, (label, sets) in VARIANTS.items():
        print(f"part 1: {label}, {rounds[name]} rounds ...", flush=True)
        cache_dir = Path(tempfile.mkdtemp(prefix="cache-", dir=workdir))  # cold cache
        r = run(sets + data + [f"scenario.rounds={rounds[name]}",
                               f"scenario.target_accuracy={args.target}"], workdir, cache_dir)
        later = [row["wall_time_s"] for row in r["rows"][1:]]
        results[name] = {
            "label": label,
            "rounds": len(r["rows"]),
            "time_to_target_s": time_to_target(r, args.target),
            "train_time_to_target_s": time_to_target(r, args.target, from_launch=False),
            "startup_s": r["summary"].get("startup_s"),
            "final_accuracy": r["summary"]["final"]["global"]["accuracy"],
            "best_accuracy": r["summary"]["best"]["global"]["accuracy"],
            "first_round_s": r["rows"][0]["wall_time_s"],
            "s_per_round_after_first": sum(later) / len(later) if later else None,
            "bytes_per_round": r["summary"]["bytes"]["per_round_up"]
            + r["summary"]["bytes"]["per_round_down"],
            "peak_rss_mb": r["peak_rss"] / 2**20,
            "wall_time_s": r["summary"]["command_wall_time_s"],
            "rows": r["rows"],
        }
        print(f"  -> final acc {results[name]['final_accuracy']:.3f}, time to "
              f"{args.target}: {results[name]['time_to_target_s']}", flush=True)
    return results


def largest_drop(rows: list[dict]) -> float:
    """The largest fall of global macro-F1 from one round to the next (0 if none)."""
    f1 = [r["global"]["macro_f1"] for r in rows]
    return max([0.0] + [a - b for a, b in zip(f1, f1[1:], strict=False)])


def time_to_f1(r: dict, target: float) -> float | None:
    offset = r["summary"]["started_at"] - r["launched"]
    for row in r["rows"]:
        if row["global"]["macro_f1"] >= target:
            return offset + row["elapsed_s"]
    return None


def hard(args, workdir: Path) -> dict:
    """Every scope at its defaults on configs/hard.toml (and, with --stability, on the
    default scenario too): final scores, time to a macro-F1, cost, and stability."""
    cache_dir = Path(tempfile.mkdtemp(prefix="cache-", dir=workdir))  # shared: warm after 1
    out = {}
    for scope, label in HARD_SCOPES.items():
        if scope not in args.scopes:
            continue
        print(f"hard: {label}, {args.hard_rounds} rounds ...", flush=True)
        r = run([f"model.scope=\"{scope}\"", f"scenario.rounds={args.hard_rounds}"],
                workdir, cache_dir, config="configs/hard.toml")
        fin = r["summary"]["final"]["global"]
        later = [row["wall_time_s"] for row in r["rows"][1:]]
        out[scope] = {"label": label, "final_accuracy": fin["accuracy"],
                      "final_macro_f1": fin["macro_f1"],
                      "time_to_f1_s": time_to_f1(r, args.f1_target),
                      "s_per_round_after_first": sum(later) / len(later),
                      "bytes_per_round": r["summary"]["bytes"]["per_round_up"]
                      + r["summary"]["bytes"]["per_round_down"],
                      "largest_drop": largest_drop(r["rows"]),
                      "peak_rss_mb": r["peak_rss"] / 2**20,
                      "wall_time_s": r["summary"]["command_wall_time_s"],
                      "macro_f1_by_round": [row["global"]["macro_f1"] for row in r["rows"]]}
        print(f"  -> macro-F1 {fin['macro_f1']:.3f}, largest drop "
              f"{out[scope]['largest_drop']:.3f}", flush=True)
    stability = {}
    if args.stability:
        for scope in args.scopes:
            print(f"stability: default scenario, scope {scope}, {args.stability} rounds ...",
                  flush=True)
            r = run([f"model.scope=\"{scope}\"", f"scenario.rounds={args.stability}"],
                    workdir, cache_dir)
            stability[scope] = {"final_macro_f1": r["summary"]["final"]["global"]["macro_f1"],
                                "largest_drop": largest_drop(r["rows"])}
    return {"scopes": out, "stability": stability}


def print_hard(args, res: dict) -> None:
    base = res["scopes"].get("head")
    rows = []
    for v in res["scopes"].values():
        gain = "-" if base is None else \
            f"{100 * (v['final_macro_f1'] - base['final_macro_f1']):+.1f}"
        ttt = v["time_to_f1_s"]
        rows.append([v["label"], v["final_accuracy"], v["final_macro_f1"], gain,
                     f"{ttt:.0f}" if ttt is not None else f"> {v['wall_time_s']:.0f}",
                     v["s_per_round_after_first"], f"{v['bytes_per_round']:,}",
                     f"{100 * v['largest_drop']:.1f}", f"{v['peak_rss_mb']:.0f}"])
    print(f"\nconfigs/hard.toml, every scope at its defaults, {args.hard_rounds} rounds")
    print(format_table(rows, ["scope", "final acc", "macro-F1", "points vs head",
                              f"s to macro-F1 {args.f1_target}", "s/round", "bytes/round",
                              "largest drop (points)", "peak MB"]))
    if res["stability"]:
        print(f"\ndefault scenario, every scope at its defaults, {args.stability} rounds")
        print(format_table([[k, v["final_macro_f1"], f"{100 * v['largest_drop']:.1f}"]
                            for k, v in res["stability"].items()],
                           ["scope", "macro-F1", "largest drop (points)"]))


def part2(args, workdir: Path) -> dict:
    out = {}
    for n in (10, 100, 1000):
        print(f"part 2: {n} institutions ...", flush=True)
        banks = n * 3 // 5
        frac = min(1.0, 10 / n)
        sets = [f"federation.banks={banks}", f"federation.hospitals={n - banks}",
                "data.synthetic.size=20", "data.synthetic.size_spread=0.0",
                "data.min_examples=4", f"strategy.fraction_train={frac}",
                f"strategy.fraction_evaluate={frac}", "strategy.min_train_clients=10",
                "scenario.rounds=4"]
        cache_dir = Path(tempfile.mkdtemp(prefix="cache-", dir=workdir))
        r = run(sets, workdir, cache_dir)
        later = [row["wall_time_s"] for row in r["rows"][1:]]
        out[str(n)] = {"institutions": n, "peak_rss_mb": r["peak_rss"] / 2**20,
                       "s_per_round_after_first": sum(later) / len(later),
                       "startup_s": r["summary"].get("startup_s"),
                       "wall_time_s": r["summary"]["command_wall_time_s"]}
    return out


def profile(rows: list[dict], actors: int) -> dict:
    """Mean seconds per cached round (rounds after the first) by where they go."""
    later = rows[1:] or rows
    keys = ["training_phase_s", "evaluation_phase_s", "training_aggregate_s",
            "evaluation_aggregate_s", "client_train_s", "client_eval_s", "checkpoint_s"]
    mean = {k: sum(r["timing"].get(k, 0.0) for r in later) / len(later) for k in keys}
    wall = sum(r["wall_time_s"] for r in later) / len(later)
    compute = (mean["client_train_s"] + mean["client_eval_s"]) / actors
    aggregate = mean["training_aggregate_s"] + mean["evaluation_aggregate_s"]
    phases = mean["training_phase_s"] + mean["evaluation_phase_s"]
    return {"round_wall_s": wall,
            "client compute (train+eval, over parallel actors)": compute,
            "server aggregation": aggregate,
            "checkpoint + metrics": mean["checkpoint_s"],
            "Flower/Ray messaging, serialisation, scheduling": phases - compute,
            "other server work": wall - phases - aggregate - mean["checkpoint_s"],
            "detail": mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller data, fewer rounds")
    ap.add_argument("--target", type=float, default=0.8, help="target global accuracy")
    ap.add_argument("--json", type=Path, help="write the tables here as JSON")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--hard", action="store_true", help="only: every scope at its defaults "
                    "on configs/hard.toml")
    ap.add_argument("--hard-rounds", type=int, default=10)
    ap.add_argument("--f1-target", type=float, default=0.7,
                    help="--hard: the macro-F1 whose time is reported")
    ap.add_argument("--scopes", default="head,top-k,lora,full", type=lambda v: v.split(","))
    ap.add_argument("--stability", type=int, default=0, metavar="ROUNDS",
                    help="--hard: also run the default scenario at every scope")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fedsilo-bench-"))
    if args.hard:
        res = hard(args, workdir)
        print_hard(args, res)
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
            print(f"\nwritten: {args.json}")
        return
    res = part1(args, workdir)
    a = res["naive"]

    def ratio(x, y):
        return None if x is None or y is None or y == 0 else x / y

    rows = []
    for v in res.values():
        ttt, tt1 = v["time_to_target_s"], v["train_time_to_target_s"]
        rows.append([v["label"], v["final_accuracy"],
                     f"{ttt:.1f}" if ttt is not None else f"> {v['wall_time_s']:.0f}",
                     f"{tt1:.1f}" if tt1 is not None else "-",
                     v["s_per_round_after_first"], f"{v['bytes_per_round']:,}",
                     f"{v['peak_rss_mb']:.0f}",
                     _x(ratio(a["time_to_target_s"], ttt)),
                     _x(ratio(a["train_time_to_target_s"], tt1)),
                     _x(ratio(a["s_per_round_after_first"], v["s_per_round_after_first"])),
                     _x(ratio(a["bytes_per_round"], v["bytes_per_round"])),
                     _x(ratio(v["peak_rss_mb"], a["peak_rss_mb"]), "")])
    print(f"\nPart 1 ({'quick' if args.quick else 'full'}): target global accuracy "
          f"{args.target}; ratios are (a)/variant, memory variant/(a)")
    print(format_table(rows, ["variant", "final acc", "s to target", "from round 1",
                              "s/round", "bytes/round", "peak MB", "x sooner",
                              "x sooner (round 1)", "x faster rounds", "x fewer bytes",
                              "memory vs (a)"]))
    print("s to target: from launching `fedsilo run` (process start, imports, Ray, actors "
          "included); from round 1: training only. Start-up is "
          + ", ".join(f"{v['label'][:3]} {v['startup_s']:.1f}s" for v in res.values()))
    report = {"mode": "quick" if args.quick else "full", "target": args.target,
              "part1": {k: {kk: vv for kk, vv in v.items() if kk != "rows"}
                        for k, v in res.items()}}
    prof = profile(res["cached"]["rows"], actors=2)
    report["profile_cached_round"] = prof
    print("\nPart 3: where a cached round's time goes (mean of rounds after the first)")
    print(format_table([[k, v, f"{100 * v / prof['round_wall_s']:.0f}%"]
                        for k, v in prof.items() if k not in ("detail",)],
                       ["part", "seconds", "share"]))
    if not args.skip_scaling:
        scale = part2(args, workdir)
        base = scale["10"]["peak_rss_mb"]
        print("\nPart 2: scaling the number of institutions (10 sampled per round)")
        print(format_table([[v["institutions"], f"{v['peak_rss_mb']:.0f}",
                             _x(v["peak_rss_mb"] / base, ""), v["s_per_round_after_first"],
                             v["startup_s"]] for v in scale.values()],
                           ["institutions", "peak MB", "memory vs 10", "s/round",
                            "s before round 1"]))
        report["part2"] = scale
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwritten: {args.json}")


def _x(v: float | None, suffix: str = "x") -> str:
    return "-" if v is None else f"{v:.1f}{suffix}" if v < 100 else f"{v:,.0f}{suffix}"


if __name__ == "__main__":
    main()
