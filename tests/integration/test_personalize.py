"""Personalised runs end to end: real simulations whose nodes keep their own models,
report them beside the shared one, and end with each institution's gain against training
alone (a real local-only baseline)."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_simulation import run_scenario

pytestmark = pytest.mark.slow
SHARED_HEAD = 64 * 8 + 8  # the smoke head: what travels, personalised or not


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_ditto_scores_every_personal_model_every_round_and_sends_only_the_shared_head(
        tmp_path, cache_dir):
    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=3",
                              "personalize.method=\"ditto\"", "output.audit=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next(r for r in runs if "-local-" not in r.name)
    local = next(r for r in runs if "-local-" in r.name)  # the local-only baseline it ran
    summary = json.loads((run / "summary.json").read_text())
    assert summary["bytes"]["per_round_up"] == 4 * SHARED_HEAD * 4  # 4 institutions, float32
    for row in _rows(run):
        assert row["personal"]["institutions"] == 4
        for v in row["institutions"].values():
            assert 0 <= v["personal"]["accuracy"] <= 1
    final = summary["final"]
    assert any(v["personal"]["accuracy"] != v["accuracy"]
               for v in final["institutions"].values())
    # what the audit saw leave each node: the shared head only, and the personal model's
    # scores (never its weights)
    shared = {"head.out.weight": [[8, 64], "float32"], "head.out.bias": [[8], "float32"]}
    for name in final["institutions"]:
        entries = [json.loads(x) for x in
                   (run / "audit" / f"{name}.jsonl").read_text().splitlines()]
        assert all(e["refused"] == [] for e in entries)
        assert all(e["arrays"] == {"arrays": shared} for e in entries if e["type"] == "train")
        scored = [m for e in entries for k, m in e["metrics"].items()
                  if k in ("evaluation", "metrics") and "accuracy" in m]
        assert len(scored) == 3 and all("personal-accuracy" in m for m in scored)
    # the gain table, against the local-only models trained here
    gains = json.loads((run / "gains.json").read_text())
    local_final = json.loads((local / "summary.json").read_text())["final"]["institutions"]
    for name, g in gains["institutions"].items():
        assert g["local"]["accuracy"] == local_final[name]["accuracy"]
        assert g["gain_accuracy"] == pytest.approx(
            final["institutions"][name]["personal"]["accuracy"] - g["local"]["accuracy"])
    # TensorBoard holds the personal scores round by round, from the same rows
    from fedsilo.results.tracking import read_tensorboard

    tb = read_tensorboard(run)
    assert [v for _, v in tb["server"]["personal_accuracy"]] == pytest.approx(
        [r["personal"]["accuracy"] for r in _rows(run)])
    assert [v for _, v in tb["bank-1"]["personal_accuracy"]] == pytest.approx(
        [r["institutions"]["bank-1"]["personal"]["accuracy"] for r in _rows(run)])
    assert "what each institution gains by joining" in proc.stdout
    assert ("no institution does worse than training alone" in proc.stdout) == (
        gains["losers"] == [])
    assert "personal acc" in proc.stdout


def test_finetune_scores_a_personal_model_after_the_last_round_only(tmp_path, cache_dir):
    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=2",
                              "personalize.method=\"finetune\"",
                              "personalize.compare_local=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r.name for r in runs if "-local-" in r.name] == []
    rows = _rows(runs[0])
    assert "personal" not in rows[0] and rows[-1]["personal"]["institutions"] == 4
    # fine-tuning on its own data lowers each institution's test loss below the shared one
    assert sum(v["personal"]["loss"] < v["loss"] for v in rows[-1]["institutions"].values()) \
        >= 3


def test_split_never_sends_or_stores_the_private_layer(tmp_path, cache_dir):
    import numpy as np

    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=2",
                              "personalize.method=\"split\"", "model.head_hidden=16",
                              "personalize.compare_local=false", "output.audit=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs[0]
    body = 64 * 16 + 16  # head.hidden: what is shared
    summary = json.loads((run / "summary.json").read_text())
    assert summary["bytes"]["per_round_up"] == 4 * body * 4
    with np.load(run / "head.npz") as z:  # the server's final model: the body only
        assert sorted(z.files) == ["head.hidden.bias", "head.hidden.weight"]
    for name in summary["final"]["institutions"]:
        for e in (json.loads(x) for x in
                  (run / "audit" / f"{name}.jsonl").read_text().splitlines()):
            if e["type"] == "train":
                assert set(e["arrays"]["arrays"]) == {"head.hidden.weight",
                                                      "head.hidden.bias"}
    assert all(r["personal"]["institutions"] == 4 for r in _rows(run))


def test_ditto_under_dp_sgd_reports_both_models_steps_in_one_epsilon(tmp_path, cache_dir):
    from tests.helpers import dp_sgd_epsilon

    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=2",
                              "privacy.dp=true", "personalize.method=\"ditto\"",
                              "personalize.epochs=1", "personalize.compare_local=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((runs[0] / "summary.json").read_text())["privacy"]["institutions"]
    for v in report.values():
        q = v["sampling_rate"]
        shared, personal = round(3 / q), round(1 / q)  # smoke: 3 local epochs; 1 personal
        assert v["steps"] == 2 * (shared + personal)
        assert v["epsilon"] == pytest.approx(dp_sgd_epsilon(
            v["noise_multiplier"], q, v["steps"], v["delta"]), rel=0.01)
    assert all(r["personal"]["institutions"] == 4 for r in _rows(runs[0]))
