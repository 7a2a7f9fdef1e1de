"""Baselines, comparison and sweeps through the `fedsilo` command, on the smoke scenario."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import CONFIGS
from tests.integration.test_simulation import fedsilo

pytestmark = pytest.mark.slow


def _sets(tmp_path, cache_dir, *extra):
    out = ["--set", f"output.dir={tmp_path / 'runs'}", "--set",
           f"simulation.cache_dir={cache_dir}", "--set", "scenario.rounds=3"]
    for e in extra:
        out += ["--set", e]
    return out


def test_baselines_then_compare(tmp_path, cache_dir):
    smoke = str(CONFIGS / "smoke.toml")
    for mode in ("centralized", "local-only"):
        proc = fedsilo("baseline", smoke, "--mode", mode, *_sets(tmp_path, cache_dir),
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert f"{mode} round   3/3" in proc.stdout
    runs = sorted((tmp_path / "runs").iterdir())
    assert [r.name.split("-2")[0] for r in runs] == ["smoke-centralized", "smoke-local-only"]
    central = json.loads((runs[0] / "summary.json").read_text())
    local = json.loads((runs[1] / "summary.json").read_text())
    assert central["mode"] == "centralized" and local["mode"] == "local-only"
    # same budget: rounds x local_epochs passes, same test splits
    assert central["rounds"] == local["rounds"] == 3
    n_test = sum(v["test_examples"] for v in central["final"]["institutions"].values())
    assert central["final"]["global"]["test_examples"] == n_test
    for name, v in local["final"]["institutions"].items():
        assert 0 <= v["federation_accuracy"] <= 1 and v["kind"] in ("bank", "hospital")
        assert v["test_examples"] == central["final"]["institutions"][name]["test_examples"]
    mean = sum(v["federation_accuracy"] for v in local["final"]["institutions"].values()) / 4
    assert local["final"]["global"]["accuracy"] == pytest.approx(mean)

    png = tmp_path / "compare.png"
    proc = fedsilo("compare", str(runs[0]), str(runs[1]), "--png", str(png), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[1] centralized" in proc.stdout and "[2] local-only" in proc.stdout
    for line in ("bank-1", "hospital-2", "ALL (federation-wide test)", "worst institution",
                 "spread (best - worst)"):
        assert line in proc.stdout
    assert png.stat().st_size > 5000
    worst = [ln for ln in proc.stdout.splitlines() if ln.startswith("worst institution")][0]
    accs = [v["accuracy"] for v in central["final"]["institutions"].values()]
    assert f"{min(accs):.3f}" in worst


def test_compare_names_a_directory_that_is_not_a_run(tmp_path):
    proc = fedsilo("compare", str(tmp_path), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"fedsilo: compare: '{tmp_path}' is not a finished run "
                                   f"directory (no summary.json)")
    failed = tmp_path / "x-20260101-000000.failed"
    failed.mkdir()
    (failed / "summary.json").write_text("{}")
    proc = fedsilo("compare", str(failed), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "is not a finished run (it ended '.failed')" in proc.stderr


def test_sweep_runs_the_grid_including_scaffold(tmp_path, cache_dir):
    proc = fedsilo("sweep", str(CONFIGS / "smoke.toml"),
                   "--grid", "strategy.name=fedavg,scaffold",
                   *_sets(tmp_path, cache_dir, "scenario.rounds=2", "train.optimizer=\"sgd\"",
                          "train.lr=0.1"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = next((tmp_path / "runs").glob("sweep-smoke-*"))
    rows = json.loads((sweep_dir / "sweep.json").read_text())["rows"]
    assert [r["strategy.name"] for r in rows] == ["fedavg", "scaffold"]
    for r in rows:  # (a random tiny BERT and 2 rounds of SGD: the protocol is tested below)
        assert (sweep_dir / r["run"] / "summary.json").is_file()
        assert np.isfinite(r["macro_f1"]) and r["accuracy"] > 0
    scaffold = json.loads((sweep_dir / rows[1]["run"] / "metrics.jsonl").read_text()
                          .splitlines()[0])
    # SCAFFOLD gets two deltas back (twice FedAvg's bytes up) and sends c beside x for
    # training, not for evaluation (1.5 times FedAvg's bytes down)
    fedavg = json.loads((sweep_dir / rows[0]["run"] / "metrics.jsonl").read_text()
                        .splitlines()[0])
    assert scaffold["bytes_up"] == 2 * fedavg["bytes_up"]
    assert scaffold["bytes_down"] * 2 == 3 * fedavg["bytes_down"]
    # the server control variate is in the checkpoint, one array per shared array
    from fedsilo.results import read_checkpoint

    _, shared, strategy_state = read_checkpoint(sweep_dir / rows[1]["run"])
    assert sorted(strategy_state) == sorted(f"control/{k}" for k in shared)
    c = np.concatenate([v.ravel() for v in strategy_state.values()])
    assert np.isfinite(c).all() and np.abs(c).max() > 0  # updated from the clients' deltas
    assert (sweep_dir / "sweep.md").read_text().count("\n") == 4
    assert (sweep_dir / "sweep.png").stat().st_size > 5000


def test_a_bad_grid_value_fails_before_any_run(tmp_path):
    proc = fedsilo("sweep", "--grid", "strategy.name=fedavg,fedmagic",
                   "--set", f"output.dir={tmp_path / 'runs'}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "'strategy.name' must be one of" in proc.stderr and "fedmagic" in proc.stderr
    assert not (tmp_path / "runs").exists()
