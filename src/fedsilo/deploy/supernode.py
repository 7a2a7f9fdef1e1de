"""``python -m fedsilo.deploy.supernode --poll S -- <flower-supernode arguments>``: Flower's
SuperNode, polling the SuperLink every S seconds at most (``fedsilo node`` starts it)."""

from __future__ import annotations

import argparse

from fedsilo.flower_compat import run_supernode


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m fedsilo.deploy.supernode")
    p.add_argument("--poll", type=float, required=True)
    p.add_argument("flower_args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    rest = args.flower_args[1:] if args.flower_args[:1] == ["--"] else args.flower_args
    run_supernode(rest, args.poll)


if __name__ == "__main__":
    main()
