"""Sweep planning: grids from the command line and from sweep files, validated up front."""

from __future__ import annotations

import pytest

from fedsilo.config import ConfigError
from fedsilo.sweep import parse_grid, plan, read_sweep_file, sweep_table
from tests.conftest import CONFIGS


def test_grid_values_are_typed_like_overrides():
    grid = parse_grid(["data.alpha=0.1,1,100", "strategy.name=fedavg,krum",
                       "faults.malicious=,bank-2", "model.cache=true,false"])
    assert grid == {"data.alpha": [0.1, 1, 100], "strategy.name": ["fedavg", "krum"],
                    "faults.malicious": ["", "bank-2"], "model.cache": [True, False]}


def test_the_shipped_sweep_file_plans_sixteen_valid_runs():
    base, combos = plan(str(CONFIGS / "sweeps" / "alpha_strategy.toml"), [], [])
    assert len(combos) == 16
    assert base.data.partition == "dirichlet" and base.train.optimizer == "sgd"
    assert {c["strategy.name"] for c in combos} == {"fedavg", "fedprox", "scaffold",
                                                    "fedadam"}
    assert sorted({c["data.alpha"] for c in combos}) == [0.1, 0.5, 1.0, 100.0]


def test_command_line_grid_extends_a_scenario():
    base, combos = plan(str(CONFIGS / "smoke.toml"), ["scenario.seed=1,2,3"],
                        ["scenario.rounds=2"])
    assert base.scenario.rounds == 2 and [c["scenario.seed"] for c in combos] == [1, 2, 3]


@pytest.mark.parametrize(("grid", "message"), [
    ([], "sweep: nothing to sweep"),
    (["train.lrr=1,2"], "config: unknown key 'train.lrr'"),
    (["strategy.name=scaffold"], "needs 'train.optimizer' = 'sgd'"),
    (["alpha"], "--grid 'alpha': expected key=v1,v2"),
])
def test_bad_grids_fail_before_any_run(grid, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        plan(None, grid, [])


def test_a_sweep_file_with_an_unknown_table_is_named(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[grid]\n"data.alpha" = [1.0]\n[extra]\nx = 1\n')
    with pytest.raises(ConfigError, match="unknown key 'extra'"):
        read_sweep_file(f)
    f.write_text('[grid]\n"data.alpha" = []\n')
    with pytest.raises(ConfigError, match="grid 'data.alpha' must be a non-empty list"):
        read_sweep_file(f)


def test_table_marks_failed_runs():
    rows = [{"strategy.name": "fedavg", "run": "r1", "accuracy": 0.9, "macro_f1": 0.88,
             "worst_accuracy": 0.8},
            {"strategy.name": "krum", "run": None, "error": "boom"}]
    text = sweep_table(rows)
    assert "0.880" in text and "failed" in text


def test_the_privacy_utility_sweep_plans_five_dp_runs():
    base, combos = plan(str(CONFIGS / "sweeps" / "privacy_utility.toml"), [], [])
    assert base.privacy.dp and [c["privacy.noise_multiplier"] for c in combos] == [
        0.5, 1.0, 2.0, 4.0, 8.0]


def test_table_shows_epsilon_when_runs_were_private():
    rows = [{"privacy.noise_multiplier": 1.0, "run": "r", "accuracy": 0.8, "macro_f1": 0.7,
             "worst_accuracy": 0.6, "max_epsilon": 3.25}]
    text = sweep_table(rows)
    assert "epsilon (max inst)" in text and "3.250" in text


def test_the_institution_level_sweep_plans_server_dp_runs_and_shows_its_epsilon(tmp_path):
    from fedsilo.sweep import plot_privacy_utility

    base, combos = plan(str(CONFIGS / "sweeps" / "central_privacy_utility.toml"), [], [])
    assert base.privacy.central.mode == "server-fixed" and not base.privacy.dp
    assert [c["privacy.central.noise_multiplier"] for c in combos] == [0.1, 0.3, 0.5, 1.0,
                                                                       2.0]
    rows = [{"privacy.central.noise_multiplier": z, "run": "r", "accuracy": 0.8,
             "macro_f1": f, "worst_accuracy": 0.6, "server_epsilon": e}
            for z, f, e in ((0.5, 0.7, 50.125), (1.0, 0.5, 12.5))]
    text = sweep_table(rows)
    assert "epsilon (inst level)" in text and "50.125" in text
    assert "epsilon (max inst)" not in text
    assert plot_privacy_utility(rows, tmp_path / "pu.png").stat().st_size > 5000
