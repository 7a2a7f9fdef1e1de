"""Time to the final table of a second, identical run of the default scenario, and where
the time goes: this checkout with evaluation riding on training, the same with separate
evaluate messages, and (with ``--baseline REF``) an earlier commit of fedsilo, side by side.

    python benchmarks/startup.py                          # this checkout, both modes
    python benchmarks/startup.py --baseline 6e67009 --repeats 3 --json out.json

Every variant runs ``fedsilo run`` (the built-in default scenario: 5 institutions, 20
rounds, offline MiniLM, scope head) as a user would, once to fill the feature cache (not
measured) and then ``--repeats`` times, the variants taking turns so that the machine's
load falls on all of them alike. A baseline runs from a git worktree of REF (made and
removed here) with the same interpreter and the same cache directory. Printed per variant
(medians): seconds from launching the command to the final table and to its exit; before
round 1, and of that the server's wait for Ray, the actors and the handshake (actors
started, the ClientApp imported, each institution's data read); round 1; the later rounds;
and what follows the table (Ray's shutdown, leftover processes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fedsilo.results import format_table  # noqa: E402

TABLE_LINE = "ALL (union of test splits)"


def one_run(code: Path, out: Path, sets: list[str], cache_dir: Path) -> dict:
    """One ``fedsilo run`` of ``code``'s checkout; the timings of its output and files."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code / "src"), str(code)]))
    cmd = [sys.executable, "-m", "fedsilo.cli", "run", "--set", f"output.dir='{out}'",
           "--set", f"simulation.cache_dir='{cache_dir}'",
           *[x for s in sets for x in ("--set", s)]]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    t_table = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if t_table is None and TABLE_LINE in line:
            t_table = time.time()
    proc.wait()
    t_exit = time.time()
    if proc.returncode != 0 or t_table is None:
        raise SystemExit(f"benchmark: the run in {code} failed:\n{''.join(lines[-20:])}")
    run = next(p for p in out.iterdir() if p.is_dir())
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    st = summary.get("startup", {})
    first_round_at = summary["first_round_started_at"]
    return {
        "to_table_s": t_table - t0,
        "to_exit_s": t_exit - t0,
        "before_round_1_s": first_round_at - t0,
        "handshake_s": st.get("handshake_s", float("nan")),  # Ray, actors, handshake
        "round_1_s": rows[0]["wall_time_s"],
        "later_round_s": statistics.median(r["wall_time_s"] for r in rows[1:]),
        "after_table_s": t_exit - t_table,
        "accuracy": summary["final"]["global"]["accuracy"],
        "bytes_down": summary["bytes"]["down"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", help="a git commit of fedsilo to compare against")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedsilo-startup-"))
    cache_dir = (ROOT / ".fedsilo-cache").resolve()
    variants = {"with-training": (ROOT, ["strategy.evaluation='with-training'"]),
                "separate": (ROOT, ["strategy.evaluation='separate'"])}
    tree = None
    try:
        if args.baseline:
            tree = work / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                            args.baseline], check=True, capture_output=True)
            variants[f"baseline {args.baseline}"] = (tree, [])
        runs: dict[str, list[dict]] = {name: [] for name in variants}
        for i in range(args.repeats + 1):  # the first round of runs fills the cache
            for name, (code, sets) in variants.items():
                out = work / f"{name.replace(' ', '-')}-{i}"
                out.mkdir()
                result = one_run(code, out, sets, cache_dir)
                shutil.rmtree(out, ignore_errors=True)
                if i:
                    runs[name].append(result)
                    print(f"{name} run {i}: {result['to_table_s']:.1f}s to the table",
                          flush=True)
    finally:
        if tree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for name, rs in runs.items()}
    ref = f"baseline {args.baseline}" if args.baseline else "separate"
    header = ["variant", "to table s", "ratio", "to exit s", "before round 1 s",
              "Ray + handshake s", "round 1 s", "later round s", "ratio", "after table s",
              "accuracy", "bytes down"]
    table = [[name, f"{m['to_table_s']:.1f}", f"{m['to_table_s'] / med[ref]['to_table_s']:.2f}",
              f"{m['to_exit_s']:.1f}", f"{m['before_round_1_s']:.2f}",
              f"{m['handshake_s']:.2f}", f"{m['round_1_s']:.2f}", f"{m['later_round_s']:.3f}",
              f"{m['later_round_s'] / med[ref]['later_round_s']:.2f}",
              f"{m['after_table_s']:.1f}", f"{m['accuracy']:.3f}", f"{m['bytes_down']:,}"]
             for name, m in med.items()]
    print(f"\nsecond identical run of the default scenario, medians of {args.repeats} "
          f"(ratios against '{ref}'):")
    print(format_table(table, header))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": med}, indent=2))


if __name__ == "__main__":
    main()
