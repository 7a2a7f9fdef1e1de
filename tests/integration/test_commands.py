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
                          "train.lr=0.1", "output.mlflow=true"), cwd=tmp_path)
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
    # training (round 1's evaluation rides on round 2's training message and costs no
    # bytes: twice FedAvg's bytes down)
    fedavg = json.loads((sweep_dir / rows[0]["run"] / "metrics.jsonl").read_text()
                        .splitlines()[0])
    assert scaffold["bytes_up"] == 2 * fedavg["bytes_up"]
    assert scaffold["bytes_down"] == 2 * fedavg["bytes_down"]
    # the server control variate is in the checkpoint, one array per shared array
    from fedsilo.results.checkpoint import read_checkpoint

    _, shared, strategy_state = read_checkpoint(sweep_dir / rows[1]["run"])
    assert sorted(strategy_state) == sorted(f"control/{k}" for k in shared)
    c = np.concatenate([v.ravel() for v in strategy_state.values()])
    assert np.isfinite(c).all() and np.abs(c).max() > 0  # updated from the clients' deltas
    assert (sweep_dir / "sweep.md").read_text().count("\n") == 4
    assert (sweep_dir / "sweep.png").stat().st_size > 5000
    # every run of the sweep writes the TensorBoard layout of a run
    for r in rows:
        assert {p.name for p in (sweep_dir / r["run"] / "tb").iterdir()} == {
            "server", "bank-1", "bank-2", "hospital-1", "hospital-2"}
    # MLflow: one parent for the sweep, a child per grid point, grandchildren per institution
    runs = _mlflow_runs(tmp_path / "runs", "smoke")
    parent = [r for r in runs if r.data.tags["mlflow.runName"] == sweep_dir.name]
    assert len(parent) == 1
    points = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert sorted(p.data.tags["mlflow.runName"] for p in points) == sorted(
        r["run"] for r in rows)
    for point in points:
        children = [r for r in runs
                    if r.data.tags.get("mlflow.parentRunId") == point.info.run_id]
        assert len(children) == 4
    # a report of the sweep overlays its runs and shows its table
    proc = fedsilo("report", str(sweep_dir), "--out", str(tmp_path / "sweep.html"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "sweep.html").read_text()
    assert "2 runs" in page and "final macro-F1" in page and rows[1]["run"] in page


def _mlflow_runs(output_dir, experiment):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{output_dir / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_a_bad_grid_value_fails_before_any_run(tmp_path):
    proc = fedsilo("sweep", "--grid", "strategy.name=fedavg,fedmagic",
                   "--set", f"output.dir={tmp_path / 'runs'}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "'strategy.name' must be one of" in proc.stderr and "fedmagic" in proc.stderr
    assert not (tmp_path / "runs").exists()


class _Tables(__import__("html.parser").parser.HTMLParser):
    """The cells of every table of a page, by table id; and every URL the page loads."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.urls: list[str] = []
        self._table = self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        for key in ("src", "href"):
            if key in a:
                self.urls.append(a[key])

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())


def test_tensorboard_mlflow_and_the_report_hold_the_runs_numbers(tmp_path, cache_dir):
    from fedsilo.results.tracking import read_tensorboard

    proc = fedsilo("run", str(CONFIGS / "smoke.toml"),
                   *_sets(tmp_path, cache_dir, "output.mlflow=true"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next((tmp_path / "runs").glob("smoke-*"))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # TensorBoard's own reader gives back exactly the rows' numbers, step = round
    tb = read_tensorboard(run)
    assert set(tb) == {"server", "bank-1", "bank-2", "hospital-1", "hospital-2"}
    for tag, key in (("accuracy", "accuracy"), ("macro_f1", "macro_f1"), ("loss", "loss")):
        assert [s for s, _ in tb["server"][tag]] == [1, 2, 3]
        np.testing.assert_allclose([v for _, v in tb["server"][tag]],
                                   [r["global"][key] for r in rows], rtol=1e-6)
        for name in ("bank-1", "hospital-2"):
            np.testing.assert_allclose([v for _, v in tb[name][tag]],
                                       [r["institutions"][name][key] for r in rows], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in tb["server"]["bytes_up"]],
                               [r["bytes_up"] for r in rows])
    # MLflow: the run with its config as parameters, a child per institution, artifacts
    import mlflow

    runs = _mlflow_runs(tmp_path / "runs", "smoke")
    parent = next(r for r in runs if r.data.tags["mlflow.runName"] == run.name)
    assert parent.data.params["scenario.rounds"] == "3"
    assert parent.data.params["strategy.name"] == "fedavg"
    client = mlflow.MlflowClient()
    history = client.get_metric_history(parent.info.run_id, "accuracy")
    assert [m.step for m in history] == [r["round"] for r in rows]
    assert [m.value for m in history] == pytest.approx([r["global"]["accuracy"] for r in rows])
    children = {r.data.tags["mlflow.runName"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"bank-1", "bank-2", "hospital-1", "hospital-2"}
    bank = client.get_metric_history(children["bank-1"].info.run_id, "accuracy")
    assert [m.value for m in bank] == pytest.approx(
        [r["institutions"]["bank-1"]["accuracy"] for r in rows])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.json", "metrics.jsonl", "config.toml", "head.npz"} <= artifacts
    # the report: one page, nothing loaded from anywhere, the per-institution table
    proc = fedsilo("report", str(run), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = _Tables()
    page.feed((run / "report.html").read_text())
    assert page.urls and all(u.startswith("data:image/png;base64,") for u in page.urls)
    table = page.tables["institutions"]
    summary = json.loads((run / "summary.json").read_text())
    for name, v in summary["final"]["institutions"].items():
        cells = next(r for r in table if r and r[0] == name)
        assert cells[1:] == [v["kind"], str(v["test_examples"]), f"{v['accuracy']:.3f}",
                             f"{v['macro_f1']:.3f}"]
