"""Membership inference against real runs: an overfit federation leaks, and the attack's
files are written where the run is."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_simulation import fedsilo, run_scenario

pytestmark = pytest.mark.slow


def test_the_loss_attack_finds_the_members_of_an_overfit_federation(tmp_path, cache_dir):
    # few examples, many local epochs, a hidden layer in the head, noisy labels
    proc, runs = run_scenario(tmp_path, cache_dir, "bank_hospital.toml", "scenario.rounds=3",
                              "train.local_epochs=30", "model.head_hidden=256",
                              "data.synthetic.size=60", "federation.banks=2",
                              "federation.hospitals=2", "data.synthetic.label_noise=0.2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs[0]
    out = fedsilo("attack", str(run), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((run / "attacks.json").read_text())
    fed = report["federation"]
    assert fed["auc"] > 0.65 and fed["tpr_at_0.01_fpr"] > 0.01
    assert fed["members"] == sum(v["members"] for v in report["institutions"].values())
    assert (run / "attack_roc.png").stat().st_size > 5000
    assert "ALL (federation)" in out.stdout and "threat model: outsider" in out.stdout
    bad = fedsilo("attack", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        f"fedsilo: attack: '{tmp_path / 'nowhere'}' is not a finished run directory (no "
        f"config.toml)")
