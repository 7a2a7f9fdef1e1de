"""The ``fedsilo`` command.

    fedsilo run [CONFIG] [--set key=value ...]     run a scenario (default: bank_hospital)
    fedsilo resume RUN_DIR                         continue a killed or interrupted run
    fedsilo data [CONFIG] [--set key=value ...]    print the partition table, no training
    fedsilo config [CONFIG] [--set key=value ...]  print the resolved scenario as TOML
    fedsilo baseline [CONFIG] --mode local-only|centralized [--set ...]
                                                   the reference points, same data and budget
    fedsilo compare RUN_DIR... [--png FILE]        runs side by side, per institution
    fedsilo sweep [CONFIG|SWEEP_FILE] [--grid key=v1,v2 ...] [--set ...]
                                                   the cross product, one run after another
    fedsilo privacy RUN_DIR                        the run's privacy report again
    fedsilo attack RUN_DIR [--attack loss|lira|labels|canary|all] [--shadows N]
                                                   what an attacker learns from the run
    fedsilo report RUN_DIR...                      a self-contained HTML page
    fedsilo keys                                   list every config key with its default

Deployment (fedsilo.deploy.cli): certs, split, superlink, register, node, submit.

Exit codes: 0 success, 1 a run that failed, 2 bad input (config, data, arguments),
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsilo import config
from fedsilo.config import ConfigError
from fedsilo.console import shown


def _scenario_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="scenario TOML file (default: the built-in "
                   "bank_hospital scenario)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override one key, e.g. --set scenario.rounds=3")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedsilo", description="Federated fine-tuning of a "
                                "shared BERT head across banks and hospitals.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario on Flower's simulation runtime")
    _scenario_args(run)
    run.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    res = sub.add_parser("resume", help="continue a killed, interrupted or failed run from "
                         "its last checkpoint")
    res.add_argument("run", type=Path, metavar="RUN_DIR")
    res.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="refused if it changes the scenario")
    res.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    base = sub.add_parser("baseline", help="train local-only or centralized on the "
                          "scenario's data with the same budget")
    _scenario_args(base)
    base.add_argument("--mode", required=True, choices=("local-only", "centralized"))
    cmp_ = sub.add_parser("compare", help="compare finished runs per institution")
    cmp_.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    cmp_.add_argument("--png", type=Path, help="also write a bar chart here")
    rep = sub.add_parser("report", help="a self-contained HTML page of one run, or comparing "
                         "runs (a sweep directory counts as its runs)")
    rep.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    rep.add_argument("--out", type=Path, help="where to write the page (default: "
                     "RUN_DIR/report.html for one run, else ./report.html)")
    priv = sub.add_parser("privacy", help="print a finished run's privacy report")
    priv.add_argument("run", type=Path, metavar="RUN_DIR")
    att = sub.add_parser("attack", help="measure what an attacker learns from a finished "
                         "run (writes attacks.json and the plots into it)")
    att.add_argument("run", type=Path, metavar="RUN_DIR")
    att.add_argument("--attack", choices=("loss", "lira", "labels", "canary", "all"),
                     default="loss",
                     help="loss: the loss-threshold membership attack on the final model; "
                          "lira: LiRA with shadow federations (attack.shadows); labels: "
                          "label inference by the server (needs attack.server_view); "
                          "canary: canary exposure (needs attack.canaries); all: every one "
                          "the run allows (default: loss)")
    att.add_argument("--shadows", type=int, metavar="N",
                     help="LiRA: this many shadow federations instead of attack.shadows")
    sweep = sub.add_parser("sweep", help="run the cross product of a grid of values")
    _scenario_args(sweep)
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="one axis of the grid, e.g. --grid data.alpha=0.1,1,100")
    sweep.add_argument("--resume", type=Path, metavar="SWEEP_DIR",
                       help="continue an interrupted sweep: finished runs are kept")
    sweep.add_argument("--verbose", action="store_true")
    _scenario_args(sub.add_parser("data", help="print examples per label per institution"))
    _scenario_args(sub.add_parser("config", help="print the resolved scenario"))
    keys = sub.add_parser("keys", help="list every config key with its default")
    keys.add_argument("--markdown", action="store_true", help="as a Markdown table")
    from fedsilo.deploy.cli import add_parsers

    add_parsers(sub, _scenario_args)
    return p


def cmd_run(args: argparse.Namespace) -> int:
    from fedsilo.runner import simulate

    s = config.load(args.config, args.overrides)
    return _finished(lambda: simulate(s, verbose=args.verbose))


def cmd_resume(args: argparse.Namespace) -> int:
    from fedsilo.runner import resume

    return _finished(lambda: resume(args.run, args.overrides, verbose=args.verbose))


def _finished(start) -> int:
    """Run ``start`` (a simulation) and report its outcome: the final line, or why not."""
    from fedsilo.interrupt import Interrupted, leave_promptly
    from fedsilo.runner import RunFailed

    try:
        outcome = start()
    except RunFailed as exc:
        print(f"fedsilo: run failed: {exc}", file=sys.stderr)
        leave_promptly(1)
        return 1
    except Interrupted as exc:
        where = getattr(exc, "run_dir", None)
        hint = f"; continue it with: fedsilo resume {shown(where)}" if where else ""
        print(f"fedsilo: {exc}{hint}", file=sys.stderr)
        leave_promptly(exc.exit_code)
        return exc.exit_code
    sm = outcome.summary
    g = sm["final"]["global"]
    print(f"\nfinal ({sm['rounds']} rounds): accuracy {g['accuracy']:.3f}, macro-F1 "
          f"{g['macro_f1']:.3f} (round 1: {sm['first_round']['global']['accuracy']:.3f}); "
          f"wall time {sm['command_wall_time_s']:.1f}s, of which "
          f"{sm.get('startup_s', 0):.1f}s before round 1; bytes up {sm['bytes']['up']:,}, "
          f"down {sm['bytes']['down']:,}")
    print(f"results: {shown(outcome.run_dir)}/ (summary.json, metrics.jsonl, accuracy.png, "
          f"head.npz, checkpoint/)")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    import json

    from fedsilo.baselines import run_baseline
    from fedsilo.results.summary import final_table

    s = config.load(args.config, args.overrides)
    run_dir = run_baseline(s, args.mode)
    summary = json.loads((run_dir / "summary.json").read_text())
    print("\n" + final_table(summary))
    print(f"results: {shown(run_dir)}/")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from fedsilo.results.compare import compare

    print(compare(args.runs, args.png))
    if args.png:
        print(f"plot: {args.png}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from fedsilo.interrupt import Interrupted, leave_promptly
    from fedsilo.sweep import load_rows, resume_sweep, run_sweep

    if args.resume and (args.config or args.grid or args.overrides):
        raise ConfigError("sweep --resume: give only the sweep directory (a resumed sweep "
                          "keeps its plan)")
    try:
        sweep_dir = resume_sweep(args.resume, verbose=args.verbose) if args.resume else \
            run_sweep(args.config, args.grid, args.overrides, verbose=args.verbose)
    except Interrupted as exc:
        where = getattr(exc, "run_dir", None)
        hint = f"; continue it with: fedsilo sweep --resume {shown(where)}" if where else ""
        print(f"fedsilo: {exc}{hint}", file=sys.stderr)
        leave_promptly(exc.exit_code)
        return exc.exit_code
    print(f"sweep: {shown(sweep_dir)}/ (sweep.md, sweep.json, sweep.png, one run each)")
    failed = [r for r in load_rows(sweep_dir) if r.get("error")]
    if failed:
        print(f"fedsilo: {len(failed)} of the sweep's runs failed (see sweep.json)",
              file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fedsilo.report import write_report

    out = write_report(args.runs, args.out)
    print(f"report: {shown(out)}")
    return 0


def cmd_privacy(args: argparse.Namespace) -> int:
    from fedsilo.results.compare import load_summary
    from fedsilo.results.summary import privacy_table

    summary = load_summary(args.run)
    table = privacy_table(summary)
    print(table if table else (summary.get("privacy") or {}).get(
        "note", "no privacy report in this run"))
    attacks = args.run / "attacks.json"
    if attacks.is_file():
        import json

        from fedsilo.attacks.report import measured_table

        print(f"\nwhat the attacks measured (fedsilo attack; details in "
              f"{shown(attacks)}):\n{measured_table(json.loads(attacks.read_text()))}")
    else:
        print(f"\nno attack has been run against it: fedsilo attack {shown(args.run)} "
              f"--attack all")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from fedsilo.attacks.report import attack_table, plot_dp_bound, plot_roc
    from fedsilo.attacks.run import ATTACKS, possible, run_attacks

    if args.shadows is not None and args.shadows < 2:
        raise ConfigError(f"attack: --shadows must be at least 2, got {args.shadows}")
    which, why = possible(args.run) if args.attack == "all" else ([args.attack], {})
    report = run_attacks(args.run, which, shadows=args.shadows)
    written = ["attacks.json"]
    if any(k in report for k in ("loss", "lira")):
        plot_roc(report, args.run / "attack_roc.png")
        written.append("attack_roc.png")
    if plot_dp_bound(report, args.run / "attack_dp_bound.png"):
        written.append("attack_dp_bound.png")
    print(attack_table({k: v for k, v in report.items() if k in (*which, "dp_audit")}))
    for a in ATTACKS:
        if a in why:
            print(f"not run: {a} ({why[a]})")
    print(f"written: {shown(args.run)}/{', '.join(written)}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from fedsilo.data import build_federation
    from fedsilo.results.summary import format_table
    from fedsilo.runner import check_size

    s = config.load(args.config, args.overrides)
    check_size(s)
    fed = build_federation(s)
    rows = fed.table()
    header = list(rows[0].keys())
    total = ["ALL", "-"] + [sum(int(r[h]) for r in rows) for h in header[2:]]
    print(format_table([list(r.values()) for r in rows] + [total], header))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    print(config.to_toml(config.load(args.config, args.overrides)), end="")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    if args.markdown:
        print("| key | default | meaning |\n|---|---|---|")
    for key, default, help_text in config.describe():
        if args.markdown:
            print(f"| `{key}` | `{config.shown(default)}` | {help_text} |")
        else:
            print(f"{key} = {default!r}\n    {help_text}")
    return 0



def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from fedsilo.deploy.cli import HANDLERS

    handler = {"run": cmd_run, "resume": cmd_resume, "data": cmd_data, "config": cmd_config,
               "keys": cmd_keys, "baseline": cmd_baseline, "compare": cmd_compare,
               "sweep": cmd_sweep, "privacy": cmd_privacy, "attack": cmd_attack,
               "report": cmd_report,
               **HANDLERS}
    try:
        return handler[args.command](args)
    except ConfigError as exc:
        print(f"fedsilo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedsilo: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a read-only file system: one line, bad input
        from fedsilo.results.rundir import os_error

        print(f"fedsilo: {os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
