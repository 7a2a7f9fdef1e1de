"""``fedsilo attack``: which attacks a finished run allows, and running them.

Each attack reads the run as a ``Target`` (``target.py``). Results go into the run's
``attacks.json``; each attack adds its part, and a DP run's membership attacks are held
against its bound.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedsilo.attacks.target import load_target
from fedsilo.config import ConfigError
from fedsilo.files import write_json

ATTACKS = ("loss", "lira", "labels", "canary")


def possible(run_dir: Path) -> tuple[list[str], dict[str, str]]:
    """(the attacks a run allows, why each other one is not run): the membership and
    canary attacks need an output layer in the shared model, labels a server view,
    canary canaries."""
    from fedsilo import config

    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        return list(ATTACKS), {}  # run_attacks says what is wrong
    s = config.load(run_dir / "config.toml")
    why = {}
    if s.personalize.method == "split":
        for a in ("loss", "lira", "canary"):
            why[a] = "the shared model of a 'split' run has no output layer"
    if not s.attack.server_view:
        why["labels"] = "the run kept no server view (attack.server_view = true)"
    if not s.attack.canaries:
        why.setdefault("canary", "the run holds no canaries (attack.canaries > 0)")
    return [a for a in ATTACKS if a not in why], why


def run_attacks(run_dir: Path, which: list[str], shadows: int | None = None,
                progress=print) -> dict:
    """Run the ``which`` attacks against ``run_dir`` and add their results to its
    ``attacks.json`` (results of other attacks already there are kept)."""
    from fedsilo.attacks.audit import dp_audit
    from fedsilo.attacks.canary import canary_exposure
    from fedsilo.attacks.labels import label_attack, read_rows
    from fedsilo.attacks.lira import lira_attack
    from fedsilo.attacks.membership import loss_attack

    run_dir = Path(run_dir)
    t = load_target(run_dir)
    outsider = [a for a in which if a in ("loss", "lira", "canary")]
    if outsider and t.scenario.personalize.method == "split":
        raise ConfigError("attack: the final shared model of a 'split' run has no output "
                          "layer (each institution keeps its own); the loss, LiRA and "
                          "canary attacks need one")
    path = run_dir / "attacks.json"
    report = {}
    if path.is_file():
        try:
            report = json.loads(path.read_text())
        except ValueError:
            raise ConfigError(f"attack: '{path}' is damaged (not JSON); move it away to "
                              f"start the attacks' record afresh") from None
    if "attack" in report:  # a file of the loss attack alone: its result is the loss part
        report = {"loss": {k: report.pop(k) for k in ("attack", "threat_model",
                                                     "institutions", "federation")
                           if k in report}, **report}
    if "loss" in which:
        report["loss"] = loss_attack(t, progress)
    if "lira" in which:
        report["lira"] = lira_attack(t, shadows or t.scenario.attack.shadows, progress)
    if "labels" in which:
        progress("attack: label inference from what the server received")
        report["labels"] = label_attack(t.scenario, t.federation, read_rows(run_dir))
    if "canary" in which:
        report["canary"] = canary_exposure(t, progress)
    audit = dp_audit(json.loads((run_dir / "summary.json").read_text()), report)
    if audit:
        report["dp_audit"] = audit
    write_json(path, report)
    return report
