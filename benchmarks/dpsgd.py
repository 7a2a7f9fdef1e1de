"""DP-SGD's per-example gradients: one backward pass per example against one per batch,
side by side in one run, for each scope on the offline MiniLM.

    python benchmarks/dpsgd.py                 # head, top-k, lora; 5 steps each
    python benchmarks/dpsgd.py --steps 10 --json out.json

Both ways take exactly the same steps (same sampled examples, same clipping norm, noise of
the same seed) on one institution of the default scenario, the way a DP-SGD round trains
(fedsilo.privacy.dpsgd.dp_train), and print seconds per step and the speed-up.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fedsilo import config  # noqa: E402
from fedsilo.config import PrivacySection  # noqa: E402
from fedsilo.models import backbone as bb  # noqa: E402
from fedsilo.models.scoped import ScopedModel  # noqa: E402
from fedsilo.node.silo import features, runtime_for  # noqa: E402
from fedsilo.privacy import dpsgd  # noqa: E402
from fedsilo.results import format_table  # noqa: E402

SCOPES = {"head": {"scope": "head"}, "top-k": {"scope": "top-k", "top_k": 2},
          "lora": {"scope": "lora"}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--scopes", default="head,top-k,lora")
    p.add_argument("--cache-dir", default=".fedsilo-cache")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    for name in args.scopes.split(","):
        s = config.Scenario().replace(**{f"model.{k}": v for k, v in SCOPES[name].items()},
                                      **{"simulation.cache_dir": args.cache_dir})
        from fedsilo.data import build_federation

        inst = build_federation(s).institutions[2]
        rt = runtime_for(s)
        tokenizer, backbone = bb.load(rt.ref.location)
        model = ScopedModel(copy.deepcopy(backbone), tokenizer, s.model, 8, seed=0)
        source = features(s, rt, model, inst, "train")
        plan = dpsgd.plan(PrivacySection(dp=True), s.train, len(source), s.scenario.rounds)
        plan.steps_per_round = args.steps
        start = {k: v.detach().clone() for k, v in model.trainable().items()}
        timings = {}
        for way, clip in (("loop", dpsgd.clipped_sum_loop), ("batched", None)):
            with torch.no_grad():
                for k, v in model.trainable().items():
                    v.copy_(start[k])
            t0 = time.perf_counter()
            dpsgd.dp_train(model, source, inst.train_labels, s.train, plan, seed=1,
                           device=torch.device("cpu"), clipped_sum=clip)
            timings[way] = (time.perf_counter() - t0) / args.steps
        print(f"{name}: {timings['loop']:.3f} s/step one by one, {timings['batched']:.3f} "
              f"s/step batched", flush=True)
        results.append({"scope": name, "examples": len(source),
                        "expected_batch": plan.sampling_rate * len(source),
                        "loop_s_per_step": timings["loop"],
                        "batched_s_per_step": timings["batched"],
                        "speedup": timings["loop"] / timings["batched"]})
    print("\n" + format_table(
        [[r["scope"], r["examples"], f"{r['expected_batch']:.0f}",
          f"{r['loop_s_per_step']:.3f}", f"{r['batched_s_per_step']:.3f}",
          f"{r['speedup']:.1f}x"] for r in results],
        ["scope", "train examples", "batch (expected)", "one by one (s/step)",
         "batched (s/step)", "speed-up"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
