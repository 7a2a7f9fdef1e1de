"""Robust aggregation under one attacking institution, every placement, side by side.

    python benchmarks/robustness.py --json robustness.json     # about 10 min on 2 cores
    python benchmarks/robustness.py --strategies fedavg,krum --behaviour sign_flip
    python benchmarks/robustness.py --strategies krum --seeds 1,2,3,42   # paired over seeds

For each strategy it runs the default scenario once clean and once with each institution in
turn as the attacker (`faults.malicious`, `faults.behaviour`, `faults.scale`), each a real
`fedsilo run`, and prints per strategy: the clean run's final accuracy, the attacked runs'
final accuracy per attacker, the mean and the largest drop against clean, the worst
institution's accuracy, and for Krum/MultiKrum in how many rounds the attacker's update
was kept (`selected_rounds` in summary.json). With several seeds (each a different
synthetic corpus, split and initialisation) every seed gets its own clean run and five
attacked runs, and a last line per strategy averages the drops over seeds and placements.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from scopes import run  # noqa: E402

from fedsilo.results import format_table  # noqa: E402

INSTITUTIONS = ["bank-1", "bank-2", "bank-3", "hospital-1", "hospital-2"]


def final(r: dict, attacker: str | None) -> dict:
    sm = r["summary"]
    insts = sm["final"]["institutions"]
    kept = sm.get("selected_rounds", {})
    return {"accuracy": sm["final"]["global"]["accuracy"],
            "macro_f1": sm["final"]["global"]["macro_f1"],
            "worst": min(v["accuracy"] for v in insts.values()),
            "attacker_kept": kept.get(attacker) if attacker else None,
            "rounds": sm["rounds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", default="fedavg,fedmedian,krum,multikrum")
    ap.add_argument("--behaviour", default="scale",
                    choices=("scale", "sign_flip", "noise", "label_flip",
                             "label_flip_scale"))
    ap.add_argument("--scale", type=float, default=100.0)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seeds", default="42", help="comma-separated scenario seeds")
    ap.add_argument("--json", type=Path, help="write the measurements here")
    args = ap.parse_args()
    common = [f"scenario.rounds={args.rounds}", f"faults.behaviour=\"{args.behaviour}\"",
              f"faults.scale={args.scale}"]
    seeds = [int(x) for x in args.seeds.split(",")]
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in args.strategies.split(","):
            for seed in seeds:
                sets = common + [f"strategy.name=\"{name}\"", f"scenario.seed={seed}"]
                print(f"{name}, seed {seed}: clean ...", flush=True)
                res = {"clean": final(run(sets, workdir, workdir / "cache"), None)}
                for inst in INSTITUTIONS:
                    print(f"{name}, seed {seed}: {inst} attacks ...", flush=True)
                    res[inst] = final(run(sets + [f"faults.malicious=\"{inst}\""], workdir,
                                          workdir / "cache"), inst)
                out[f"{name} seed {seed}"] = res
    rows = []
    every: dict[str, list[float]] = {}
    for label, res in out.items():
        clean = res["clean"]["accuracy"]
        attacked = [res[i]["accuracy"] for i in INSTITUTIONS]
        drops = [clean - a for a in attacked]
        every.setdefault(label.split(" seed ")[0], []).extend(drops)
        kept = [res[i]["attacker_kept"] for i in INSTITUTIONS]
        rows.append([label, f"{clean:.3f}"] + [f"{a:.3f}" for a in attacked]
                    + [f"{statistics.mean(drops) * 100:+.1f}", f"{max(drops) * 100:+.1f}",
                       f"{min(res[i]['worst'] for i in INSTITUTIONS):.3f}",
                       "-" if kept[0] is None else
                       f"{sum(kept)}/{args.rounds * len(INSTITUTIONS)}"])
    print(f"\nfinal global accuracy, one attacker ({args.behaviour}"
          f"{f' x{args.scale:g}' if 'scale' in args.behaviour else ''}):")
    print(format_table(rows, ["strategy", "clean"] + [f"{i} attacks" for i in INSTITUTIONS]
                       + ["mean drop (pts)", "max drop (pts)", "worst inst acc",
                          "attacker kept"]))
    if len(seeds) > 1:
        print("\nover seeds and placements:")
        print(format_table([[name, len(d), f"{statistics.mean(d) * 100:+.1f}",
                             f"{statistics.stdev(d) * 100:.1f}", f"{min(d) * 100:+.1f}",
                             f"{max(d) * 100:+.1f}"] for name, d in every.items()],
                           ["strategy", "runs", "mean drop (pts)", "sd", "min", "max"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
