"""What secure aggregation and institution-level DP cost, side by side in one run.

    python benchmarks/secagg.py --json secagg.json            # the default scenario
    python benchmarks/secagg.py --institutions 20 --rounds 5  # more institutions

Each variant is a real `fedsilo run` of the default scenario (offline MiniLM, scope head,
cached features) on the same machine, one after the other:
  plain      FedAvg, arrays in the clear
  secagg     SecAgg+ (privacy.secagg.enabled), all institutions share with all
  secagg+dp  SecAgg+ with institution-level DP, clipped on the nodes (client-fixed)
It prints, per variant: final global accuracy, seconds per round after the first (round 1
also encodes every text), the share of a round the protocol's key stages take, bytes sent
up and down per round (arrays in the clear, or the protocol's records: keys, encrypted
shares, masked vectors), and the ratios against plain.
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

VARIANTS = {
    "plain": [],
    "secagg": ["privacy.secagg.enabled=true"],
    "secagg+dp": ["privacy.secagg.enabled=true", "privacy.central.mode=\"client-fixed\"",
                  "privacy.central.noise_multiplier=0.5", "privacy.central.clip_norm=0.5"],
}


def measure(r: dict) -> dict:
    later = r["rows"][1:]
    s_round = statistics.mean(x["wall_time_s"] for x in later)
    if "secagg" in r["rows"][0]:
        up = statistics.mean(x["secagg"]["bytes_up"] for x in later)
        down = statistics.mean(x["secagg"]["bytes_down"] + x["bytes_down"] for x in later)
        keys = statistics.mean(x["secagg"]["keys_s"] + x["secagg"]["unmask_s"]
                               for x in later)
    else:
        up = statistics.mean(x["bytes_up"] for x in later)
        down = statistics.mean(x["bytes_down"] for x in later)
        keys = 0.0
    return {"accuracy": r["summary"]["final"]["global"]["accuracy"],
            "macro_f1": r["summary"]["final"]["global"]["macro_f1"],
            "s_per_round": s_round, "protocol_s_per_round": keys, "bytes_up": up,
            "bytes_down": down, "epsilon": ((r["summary"]["privacy"] or {}).get("server")
                                            or {}).get("epsilon")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--institutions", type=int, default=0,
                    help="banks + hospitals (0 = the default scenario's 3 + 2)")
    ap.add_argument("--json", type=Path, help="write the measurements here")
    args = ap.parse_args()
    common = [f"scenario.rounds={args.rounds}"]
    if args.institutions:
        banks = args.institutions // 2
        common += [f"federation.banks={banks}",
                   f"federation.hospitals={args.institutions - banks}",
                   "data.synthetic.size=60"]
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cache = workdir / "cache"
        for name, sets in VARIANTS.items():
            print(f"running {name} ...", flush=True)
            out[name] = measure(run(common + sets, workdir, cache))
    base = out["plain"]
    rows = [[name, f"{m['accuracy']:.3f}", f"{m['s_per_round']:.2f}",
             f"{m['s_per_round'] / base['s_per_round']:.1f}x",
             f"{m['protocol_s_per_round']:.2f}", f"{m['bytes_up']:,.0f}",
             f"{m['bytes_up'] / base['bytes_up']:.1f}x", f"{m['bytes_down']:,.0f}",
             f"{m['bytes_down'] / base['bytes_down']:.1f}x",
             "-" if m["epsilon"] is None else f"{m['epsilon']:.2f}"]
            for name, m in out.items()]
    print(format_table(rows, ["variant", "final acc", "s/round", "vs plain",
                              "key+unmask s", "bytes up/round", "vs plain",
                              "bytes down/round", "vs plain", "epsilon"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
