"""What an attacker learns under each protection, and how DP-SGD's noise trades accuracy
for leakage.

    python benchmarks/attacks.py --table --json attacks-table.json      # docs table
    python benchmarks/attacks.py --noise --png noise.png                 # noise sweep
    python benchmarks/attacks.py --table --rounds 5 --shadows 4          # quicker

``--table``: the default scenario (configs/bank_hospital.toml, with ``attack.canaries``
canaries at bank-1 and the server's view kept) once per protection: none, DP-SGD at two
epsilons, central DP (institution level, clipping at the server), SecAgg+. Each run is
attacked with every attack (`fedsilo attack RUN --attack all`): the loss attack, LiRA with
``--shadows`` shadow federations, label inference by the server and canary exposure.

``--noise``: the deliberately overfit federation (few examples, many local epochs, a
hidden layer in the head) with DP-SGD at each noise multiplier of ``--sigmas`` (0: no
DP), attacked by the loss attack and LiRA; one figure with macro-F1, the attacks' AUC and
epsilon against the noise multiplier.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fedsilo.attacks.audit import epsilon_lower_bound  # noqa: E402
from fedsilo.results import format_table  # noqa: E402

OVERFIT = ["scenario.rounds=3", "train.local_epochs=30", "model.head_hidden=256",
           "data.synthetic.size=60", "federation.banks=2", "federation.hospitals=2",
           "data.synthetic.label_noise=0.2"]
PROTECTIONS = {
    "no protection": [],
    "DP-SGD, epsilon 8": ["privacy.dp=true", "privacy.target_epsilon=8"],
    "DP-SGD, epsilon 1": ["privacy.dp=true", "privacy.target_epsilon=1"],
    "central DP (server-fixed, noise 1)": ["privacy.central.mode=server-fixed",
                                           "privacy.central.noise_multiplier=1.0",
                                           "privacy.central.clip_norm=1.0"],
    "SecAgg+": ["privacy.secagg.enabled=true"],
}


def fedsilo(args: list[str], workdir: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "fedsilo.cli", *args], cwd=workdir,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark: fedsilo {' '.join(args[:2])} failed: "
                         f"{proc.stderr.strip()[-2000:]}")
    return proc


def run_and_attack(sets: list[str], workdir: Path, attack: str, shadows: int,
                   config: str = "bank_hospital.toml") -> dict:
    out = workdir / "runs"
    before = set(out.iterdir()) if out.exists() else set()
    args = ["run", str(ROOT / "configs" / config), "--set", f"output.dir={out}",
            "--set", f"simulation.cache_dir={ROOT / '.fedsilo-cache'}"]  # encoded once
    for s in sets:
        args += ["--set", s]
    t0 = time.perf_counter()
    fedsilo(args, workdir)
    run = next(p for p in set(out.iterdir()) - before if "." not in p.name)
    t1 = time.perf_counter()
    fedsilo(["attack", str(run), "--attack", attack, "--shadows", str(shadows)], workdir)
    summary = json.loads((run / "summary.json").read_text())
    return {"run": run.name, "summary": summary, "run_s": t1 - t0,
            "attack_s": time.perf_counter() - t1,
            "attacks": json.loads((run / "attacks.json").read_text())}


def epsilon_of(summary: dict) -> tuple[float | None, str]:
    priv = summary.get("privacy") or {}
    if priv.get("institutions"):
        return max(v["epsilon"] for v in priv["institutions"].values()), "record"
    if priv.get("server"):
        return priv["server"]["epsilon"], "institution"
    return None, "-"


def table(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="fedsilo-attacks-"))
    common = ["attack.server_view=true", f"attack.canaries={args.canaries}",
              f"scenario.rounds={args.rounds}", *args.sets]
    rows, report = [], {}
    for name, sets in PROTECTIONS.items():
        print(f"benchmark: {name} ...", flush=True)
        r = run_and_attack(common + sets, workdir, "all", args.shadows)
        a = r["attacks"]
        eps, level = epsilon_of(r["summary"])
        lab = a.get("labels", {})
        label_err = lab["federation"]["first_round_l1"] if "federation" in lab else \
            f"sum only: {lab['aggregate_only']['mean_l1']:.3f}"
        audit = a.get("dp_audit", {}).get("attacks", {}).get("LiRA online", {})
        rows.append([name, r["summary"]["final"]["global"]["macro_f1"],
                     "-" if eps is None else f"{eps:.2f} ({level})",
                     a["loss"]["federation"]["auc"], a["lira"]["online"]["federation"]["auc"],
                     a["lira"]["online"]["federation"]["tpr_at_0.01_fpr"],
                     a["lira"]["offline"]["federation"]["auc"],
                     audit.get("epsilon_lower_bound", "-"), label_err,
                     a["canary"]["mean_exposure"]])
        report[name] = {"sets": sets, **r}
        print(f"benchmark: {name}: run {r['run_s']:.0f}s, attacks {r['attack_s']:.0f}s",
              flush=True)
    members = a["loss"]["federation"]["members"]
    others = a["loss"]["federation"]["non_members"]
    print(f"\ndefault scenario, {args.rounds} rounds, {args.canaries} canaries at bank-1, "
          f"LiRA with {args.shadows} shadow federations; {members} members, {others} "
          f"non-members")
    print(format_table(rows, ["protection", "macro-F1", "epsilon", "loss AUC",
                              "LiRA online AUC", "LiRA TPR@1%FPR", "LiRA offline AUC",
                              "eps lower bound", "label L1 (round 1)",
                              "canary exposure"]))
    return report


def noise(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="fedsilo-attacks-"))
    points = []
    for sigma in args.sigmas:
        sets = OVERFIT + (["privacy.dp=true", f"privacy.noise_multiplier={sigma}"]
                          if sigma > 0 else []) + args.sets
        print(f"benchmark: noise multiplier {sigma} ...", flush=True)
        r = run_and_attack(sets + ["scenario.rounds=3"], workdir, "lira", args.shadows)
        fedsilo(["attack", str(workdir / "runs" / r["run"]), "--attack", "loss"], workdir)
        a = json.loads((workdir / "runs" / r["run"] / "attacks.json").read_text())
        eps, _ = epsilon_of(r["summary"])
        lira = a["lira"]["online"]["federation"]
        proven = epsilon_lower_bound(lira["roc"]["fpr"], lira["roc"]["tpr"], lira["members"],
                                     lira["non_members"], 1e-5)
        points.append({"sigma": sigma, "macro_f1": r["summary"]["final"]["global"]["macro_f1"],
                       "epsilon": eps, "loss_auc": a["loss"]["federation"]["auc"],
                       "lira_auc": lira["auc"], "lira_tpr_1pct": lira["tpr_at_0.01_fpr"],
                       "lira_epsilon_point": proven["epsilon_point_estimate"],
                       "lira_epsilon_proven": proven["epsilon_lower_bound"]})
    print(format_table([[p["sigma"], p["macro_f1"], "inf" if p["epsilon"] is None else
                         p["epsilon"], p["loss_auc"], p["lira_auc"], p["lira_tpr_1pct"],
                         p["lira_epsilon_point"], p["lira_epsilon_proven"]]
                        for p in points],
                       ["noise multiplier", "macro-F1", "epsilon", "loss AUC",
                        "LiRA online AUC", "LiRA TPR@1%FPR", "LiRA empirical eps",
                        "proven (95%, delta 1e-5)"]))
    if args.png:
        plot(points, args.png)
        print(f"written: {args.png}")
    return {"points": points}


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p["sigma"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [p["macro_f1"] for p in points], "o-", label="macro-F1")
    ax.plot(x, [p["loss_auc"] for p in points], "s--", label="loss attack AUC")
    ax.plot(x, [p["lira_auc"] for p in points], "^--", label="LiRA online AUC")
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.set(xlabel="DP-SGD noise multiplier (0: no DP)", ylabel="macro-F1 / AUC",
           ylim=(0, 1))
    ax2 = ax.twinx()
    eps = [p["epsilon"] if p["epsilon"] is not None else math.nan for p in points]
    ax2.plot(x, eps, "kx:", label="epsilon")
    ax2.set(ylabel="epsilon (record level)", yscale="log")
    lines = ax.get_legend_handles_labels()
    more = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center right")
    ax.set_title("overfit federation: accuracy, leakage and epsilon")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--noise", action="store_true")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--shadows", type=int, default=16)
    ap.add_argument("--canaries", type=int, default=10)
    ap.add_argument("--sigmas", default="0,0.5,1,2,4",
                    type=lambda v: [float(x) for x in v.split(",")])
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--png", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (args.table or args.noise):
        ap.error("choose --table, --noise or both")
    out = {}
    if args.table:
        out["table"] = table(args)
    if args.noise:
        out["noise"] = noise(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
