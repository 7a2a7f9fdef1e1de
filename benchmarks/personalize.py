"""What each institution gains by personalising, on label-skewed federations.

    python benchmarks/personalize.py --json personalize.json
    python benchmarks/personalize.py --alphas 0.1 --rounds 5       # quicker

For each Dirichlet concentration alpha (the default scenario's synthetic corpus split over
``--institutions`` institutions by label, `data.partition = "dirichlet"`), it trains every
institution alone (`fedsilo baseline --mode local`) and runs the federation once per
personalisation method (`fedsilo run`, the same data, rounds and local training), then
prints each institution's accuracy on its own test split for local-only, the shared model
and each method's personal model, and per method: the mean accuracy of the model each
institution would use, how many institutions do worse than alone, and the worst gain.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fedsilo.results import format_table  # noqa: E402


def fedsilo(args: list[str], workdir: Path) -> Path:
    """Run a fedsilo command; the run directory it made."""
    out = workdir / "runs"
    before = set(out.iterdir()) if out.exists() else set()
    proc = subprocess.run([sys.executable, "-m", "fedsilo.cli", *args], cwd=workdir,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark: fedsilo {' '.join(args[:2])} failed: "
                         f"{proc.stderr.strip()[-2000:]}")
    made = [p for p in set(out.iterdir()) - before if "." not in p.name]
    return max(made, key=lambda p: p.stat().st_mtime)


def final(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())["final"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alphas", default="0.1,0.5", type=lambda v: [float(x) for x in
                                                                   v.split(",")])
    ap.add_argument("--institutions", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--methods", default="none,finetune,ditto", type=lambda v: v.split(","))
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="also set this for every run (e.g. personalize.lam=0.01)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fedsilo-personalize-"))
    banks = args.institutions * 3 // 5
    report = {}
    for alpha in args.alphas:
        sets = ["data.partition=\"dirichlet\"", f"data.alpha={alpha}",
                f"federation.banks={banks}", f"federation.hospitals={args.institutions - banks}",
                f"scenario.rounds={args.rounds}", f"output.dir={workdir / 'runs'}",
                f"simulation.cache_dir={workdir / 'cache'}", "output.plot=false",
                "personalize.compare_local=false", *args.sets]
        common = [x for s in sets for x in ("--set", s)]
        print(f"alpha {alpha}: local-only ...", flush=True)
        local = final(fedsilo(["baseline", "--mode", "local-only", *common], workdir))
        runs = {}
        for method in args.methods:
            print(f"alpha {alpha}: personalize.method = {method} ...", flush=True)
            runs[method] = final(fedsilo(["run", *common, "--set",
                                          f"personalize.method=\"{method}\""], workdir))
        names = list(local["institutions"])
        rows, used = [], {m: {} for m in args.methods}
        for n in names:
            alone = local["institutions"][n]["accuracy"]
            row = [n, local["institutions"][n]["test_examples"], alone,
                   runs[args.methods[0]]["institutions"][n]["accuracy"]]
            for m in args.methods:
                inst = runs[m]["institutions"][n]
                acc = (inst.get("personal") or inst)["accuracy"]
                used[m][n] = acc
                if m != "none":
                    row.append(acc)
            rows.append(row)
        header = ["institution", "test", "local-only", "shared"] + [
            f"{m}" for m in args.methods if m != "none"]
        print(f"\nalpha {alpha}: accuracy on each institution's own test split")
        print(format_table(rows, header))
        summary = []
        local_acc = {n: local["institutions"][n]["accuracy"] for n in names}
        summary.append(["local-only", sum(local_acc.values()) / len(names), "-", "-"])
        for m in args.methods:
            gains = {n: used[m][n] - local_acc[n] for n in names}
            worst = min(gains, key=gains.get)
            summary.append([m if m != "none" else "shared (none)",
                            sum(used[m].values()) / len(names),
                            sum(g < 0 for g in gains.values()),
                            f"{worst} {100 * gains[worst]:+.1f}"])
        print(format_table(summary, ["model each institution uses", "mean accuracy",
                                     "worse than alone", "worst gain (points)"]))
        report[str(alpha)] = {"local": local_acc, "used": used,
                              "summary": [[str(c) for c in r] for r in summary]}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
