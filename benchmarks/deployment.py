"""What a deployed round costs against the same round simulated, side by side in one run.

    python benchmarks/deployment.py                       # default scenario, 10 rounds
    python benchmarks/deployment.py --flower-default      # also Flower's process per message
    python benchmarks/deployment.py --config configs/smoke.toml --rounds 6 --json out.json

The same scenario (data, seed, backbone, strategy) runs
  (a) simulated   `fedsilo run` (Flower's simulation runtime, institutions as Ray actors)
  (b) deployed    on loopback: a TLS SuperLink with node authentication and one
                  `fedsilo node` per institution (its own file, a long-lived ClientApp
                  process), submitted with `fedsilo submit`
  (c) deployed, Flower's default (with --flower-default): the same, but every message
                  starts a fresh ClientApp process (`fedsilo node --process-per-message`)
and reports seconds per round after the first (the cached rounds: round 1 also encodes
each institution's texts), with the ratio against (a), and the final accuracy of each,
which must be the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fedsilo import config  # noqa: E402
from fedsilo.deploy.loopback import Loopback, fedsilo  # noqa: E402
from fedsilo.results import format_table  # noqa: E402


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def finished(runs: Path) -> Path:
    done = [d for d in sorted(runs.iterdir()) if not d.name.endswith((".failed",
                                                                       ".incomplete"))]
    if not done:
        raise SystemExit(f"no finished run under {runs}")
    return done[-1]


def measure(name: str, run_dir: Path) -> dict:
    rows = rows_of(run_dir)
    later = [r["wall_time_s"] for r in rows[1:]]
    return {"variant": name, "first_round_s": rows[0]["wall_time_s"],
            "s_per_round": statistics.median(later), "rounds": len(rows),
            "accuracy": rows[-1]["global"]["accuracy"],
            "macro_f1": rows[-1]["global"]["macro_f1"]}


def simulated(cfg: str | None, sets: list[str], work: Path, cache: Path) -> dict:
    args = ["run", *([cfg] if cfg else [])]
    for item in [*sets, f"output.dir={work / 'sim-runs'}", f"simulation.cache_dir={cache}"]:
        args += ["--set", item]
    out = fedsilo(*args, cwd=work, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"simulated run failed: {out.stderr.strip()}")
    return measure("(a) simulated", finished(work / "sim-runs"))


def deployed(name: str, cfg: str | None, sets: list[str], work: Path, cache: Path,
             poll_s: float, per_message: bool) -> dict:
    root = work / name.split()[0].strip("()")
    root.mkdir()
    out = fedsilo("split", *([cfg] if cfg else []), *_sets(sets), "data", cwd=root)
    if out.returncode != 0:
        raise SystemExit(f"export failed: {out.stderr.strip()}")
    names = sorted(p.stem for p in (root / "data").glob("*.csv"))
    s = config.load(cfg, sets)
    labels = s.data.label_names() or list(_labels(cfg, sets))
    with Loopback(root, names, root / "data", poll_s=poll_s, cache_dir=cache,
                  process_per_message=per_message) as lb:
        proc = lb.submit(Path(cfg) if cfg else ROOT / "configs" / "bank_hospital.toml",
                         [*sets, f"federation.institutions={','.join(names)}",
                          f'data.labels="{",".join(labels)}"',
                          f"simulation.cache_dir={cache / 'server'}"], timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(f"deployed run failed: {proc.stderr.strip()}")
    return measure(name, finished(root / "runs"))


def _sets(sets: list[str]) -> list[str]:
    return [x for item in sets for x in ("--set", item)]


def _labels(cfg, sets) -> tuple[str, ...]:
    from fedsilo.data import build_federation

    return build_federation(config.load(cfg, sets)).labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="scenario file (default: the default scenario)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--poll", type=float, default=0.1, help="fedsilo node --poll (seconds)")
    p.add_argument("--flower-default", action="store_true",
                   help="also run Flower's process-per-message node (slow)")
    p.add_argument("--flower-rounds", type=int, default=3,
                   help="rounds of the process-per-message variant")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    sets = [f"scenario.rounds={args.rounds}"]
    with tempfile.TemporaryDirectory(prefix="fedsilo-bench-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        results = [simulated(args.config, sets, work, cache)]
        print(f"simulated: {results[-1]['s_per_round']:.2f} s per round", flush=True)
        results.append(deployed("(b) deployed, fedsilo node", args.config, sets, work, cache,
                                args.poll, per_message=False))
        print(f"deployed: {results[-1]['s_per_round']:.2f} s per round", flush=True)
        if args.flower_default:
            results.append(deployed("(c) deployed, process per message", args.config,
                                    [f"scenario.rounds={args.flower_rounds}"], work, cache,
                                    args.poll, per_message=True))
    base = results[0]["s_per_round"]
    table = format_table(
        [[r["variant"], r["rounds"], f"{r['first_round_s']:.2f}", f"{r['s_per_round']:.2f}",
          f"{r['s_per_round'] / base:.1f}x", r["accuracy"], r["macro_f1"]] for r in results],
        ["variant", "rounds", "round 1 (s)", "s/round after", "vs simulated", "final acc",
         "final macro-F1"])
    print("\n" + table)
    print(f"\nnode poll interval {args.poll} s; machine: {_machine()}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "poll_s": args.poll}, indent=2))


def _machine() -> str:
    import os
    import platform

    return f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"


if __name__ == "__main__":
    sys.exit(main())
