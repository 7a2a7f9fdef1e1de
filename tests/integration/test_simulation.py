"""Real Ray simulations through the `fedsilo` command: outcomes are checked, not exit codes.

Each test runs the CLI in a subprocess (as a user would), on the shipped configs shrunk
with --set, and then reads the run directory it left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedsilo.results.checkpoint import read_checkpoint
from tests.conftest import CONFIGS
from tests.helpers import leftovers_of

RAY_OR_FLOWER = ("raylet", "gcs_server", "plasma_store", "flower-superlink", "ray::",
                 "default_worker.py", "dashboard", "log_monitor.py", "monitor.py")
pytestmark = pytest.mark.slow


def fedsilo(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the command to its end; the result carries its ``pid`` (for leftovers_of)."""
    proc = subprocess.Popen([sys.executable, "-m", "fedsilo.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    done.pid = proc.pid
    return done


def run_scenario(tmp_path: Path, cache_dir: Path, config: str, *sets: str):
    proc = fedsilo("run", str(CONFIGS / config), "--set", f"output.dir={tmp_path / 'runs'}",
                   "--set", f"simulation.cache_dir={cache_dir}",
                   *[x for s in sets for x in ("--set", s)], cwd=tmp_path)
    time.sleep(0.5)
    assert leftovers_of(proc.pid) == [], "Ray or Flower processes outlived `fedsilo run`"
    runs = sorted((tmp_path / "runs").iterdir()) if (tmp_path / "runs").exists() else []
    return proc, runs


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, cache_dir):
    """One run of the shipped smoke scenario, with every client reply audited."""
    tmp_path = tmp_path_factory.mktemp("smoke")
    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "output.audit=true")
    return proc, runs


def test_smoke_scenario_trains_records_and_cleans_up(smoke):
    proc, runs = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(runs) == 1 and not runs[0].name.endswith((".failed", ".incomplete"))
    run = runs[0]
    # console: progress per round and the final table
    for r in range(1, 7):
        assert f"round {r:>3}/6" in proc.stdout
    assert "ALL (union of test splits)" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["rounds"] == 6 and [r["round"] for r in rows] == list(range(1, 7))
    names = {"bank-1", "bank-2", "hospital-1", "hospital-2"}
    assert set(summary["final"]["institutions"]) == names
    assert {v["kind"] for v in summary["final"]["institutions"].values()} == {"bank",
                                                                              "hospital"}
    # learning happened: train loss falls, accuracy well above chance (1/8)
    assert rows[-1]["global"]["train_loss"] < rows[0]["global"]["train_loss"]
    assert summary["final"]["global"]["accuracy"] > 2 / 8  # twice chance
    # the global numbers are those of the union of the institutions' test splits
    per = summary["final"]["institutions"].values()
    n = sum(v["test_examples"] for v in per)
    assert summary["final"]["global"]["test_examples"] == n
    acc = sum(v["accuracy"] * v["test_examples"] for v in per) / n
    assert summary["final"]["global"]["accuracy"] == pytest.approx(acc)
    # bytes: the head (64 -> 8 linear, float32) goes down once per round (the evaluation
    # of round r rides on round r+1's training message; the last round's goes down again)
    # and up once
    head_bytes = 4 * (64 * 8 + 8)
    assert [r["bytes_down"] for r in rows] == [head_bytes * 4] * 5 + [head_bytes * 4 * 2]
    assert rows[0]["bytes_up"] == head_bytes * 4
    assert summary["bytes"]["up"] == head_bytes * 4 * 6
    # artefacts
    head = np.load(run / "head.npz")
    assert head["head.out.weight"].shape == (8, 64)
    state, shared, strategy_state = read_checkpoint(run)
    assert state["round"] == 6 and state["seed"] == 42 and state["strategy"] == "fedavg"
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["round-0006.npz",
                                                                      "state.json"]
    np.testing.assert_array_equal(shared["head.out.weight"], head["head.out.weight"])
    assert strategy_state == {}  # FedAvg keeps no server state
    assert (run / "accuracy.png").stat().st_size > 5000
    assert "name = \"smoke\"" in (run / "config.toml").read_text()


def test_clients_send_only_the_shared_arrays_and_declared_metrics(smoke):
    """Every reply every institution sent, as recorded at the node's boundary."""
    from fedsilo import config
    from fedsilo.data import build_federation
    from fedsilo.protocol import EVAL_METRICS, INFO_KEYS, PERSONAL_METRICS, TRAIN_METRICS

    proc, runs = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs[0]
    fed = build_federation(config.load(run / "config.toml"))
    shared = {"head.out.weight": [[8, 64], "float32"], "head.out.bias": [[8], "float32"]}
    for inst in fed.institutions:
        entries = [json.loads(x) for x in
                   (run / "audit" / f"{inst.name}.jsonl").read_text().splitlines()]
        # one message per round: training messages 2-6 also evaluate the previous
        # round's global model; an evaluate message closes the run
        assert [e["type"] for e in entries] == ["query"] + ["train"] * 6 + ["evaluate"]
        assert all(e["refused"] == [] for e in entries)
        private = set(inst.train_texts) | set(inst.test_texts)
        for e in entries:
            strings = [v for rec in e["configs"].values() for v in rec.values()
                       if isinstance(v, str)]
            strings += [x for rec in e["configs"].values() for v in rec.values()
                        if isinstance(v, list) for x in v if isinstance(x, str)]
            assert not private & set(strings)  # no text leaves
            if e["type"] == "query":
                info = e["configs"]["info"]
                assert set(info) == INFO_KEYS and e["arrays"] == {} and e["metrics"] == {}
                assert info == {"institution": inst.name, "kind": inst.kind,
                                "num-train": len(inst.train_texts),
                                "num-test": len(inst.test_texts)}
                continue
            assert e["configs"] == {}
            evaluations = []
            if e["type"] == "train":  # the head's arrays, nothing else
                assert e["arrays"] == {"arrays": shared}
                m = e["metrics"]["metrics"]
                assert set(m) == TRAIN_METRICS and m["num-examples"] == len(inst.train_texts)
                first = e["round"] == 1
                assert list(e["metrics"]) == ["metrics"] if first else ["metrics",
                                                                        "evaluation"]
                evaluations = [] if first else [e["metrics"]["evaluation"]]
            else:
                assert e["arrays"] == {} and list(e["metrics"]) == ["metrics"]
                evaluations = [e["metrics"]["metrics"]]
            for m in evaluations:
                assert set(m) == EVAL_METRICS - PERSONAL_METRICS
                assert len(m["confusion"]) == 8 * 8
                assert sum(m["confusion"]) == len(inst.test_texts)  # counts, not labels
            # no per-example values: every list is the 8 x 8 confusion matrix
            assert all(len(v) == 64 for m in e["metrics"].values() for v in m.values()
                       if isinstance(v, list))


def test_evaluation_riding_on_training_gives_the_same_rows_as_separate_messages(
        tmp_path, cache_dir):
    """Half the institutions train each round and all evaluate: two of the four evaluations
    ride on training messages, two go alone. Every metric is the same as with an evaluate
    message after each round; only the bytes sent down and the timings differ."""
    rows = {}
    for mode in ("with-training", "separate"):
        (tmp_path / mode).mkdir()
        proc, runs = run_scenario(tmp_path / mode, cache_dir, "smoke.toml",
                                  "scenario.rounds=4", "strategy.fraction_train=0.5",
                                  f"strategy.evaluation='{mode}'")
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows[mode] = [json.loads(x) for x in (runs[0] / "metrics.jsonl").read_text()
                      .splitlines()]
    head_bytes = 4 * (64 * 8 + 8)
    down = {m: [r["bytes_down"] for r in rows[m]] for m in rows}
    assert down["separate"] == [head_bytes * (2 + 4)] * 4  # 2 train + 4 evaluate
    assert down["with-training"] == [head_bytes * (2 + 2)] * 3 + [head_bytes * (2 + 4)]

    def metrics(row):
        return {"global": row["global"], "bytes_up": row["bytes_up"],
                "institutions": {k: {f: v for f, v in inst.items()
                                     if f not in ("train_time_s", "ray_node")}
                                 for k, inst in row["institutions"].items()}}

    assert [metrics(r) for r in rows["with-training"]] == [metrics(r) for r in
                                                           rows["separate"]]
    assert all(len([i for i in r["institutions"].values() if i["train_examples"]]) == 2
               and len(r["institutions"]) == 4 for r in rows["separate"])


def test_default_scenario_with_real_minilm_learns(tmp_path, cache_dir):
    proc, runs = run_scenario(tmp_path, cache_dir, "bank_hospital.toml", "scenario.rounds=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((runs[0] / "summary.json").read_text())
    final = summary["final"]
    assert set(final["institutions"]) == {"bank-1", "bank-2", "bank-3", "hospital-1",
                                          "hospital-2"}
    assert final["global"]["accuracy"] > 0.75
    assert final["global"]["accuracy"] > summary["first_round"]["global"]["accuracy"]
    assert summary["model"]["shared_parameters"] == 384 * 8 + 8


def test_a_client_that_raises_fails_the_run_and_names_the_institution(tmp_path, cache_dir):
    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=2",
                              "faults.crash=hospital-1")
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert "institution 'hospital-1' (hospital) failed in training (round 1)" in err[0]
    assert "Traceback" not in proc.stderr
    assert len(runs) == 1 and runs[0].name.endswith(".failed")
    assert not (runs[0] / "summary.json").exists()
    assert "hospital-1" in (runs[0] / "error.txt").read_text()


@pytest.mark.parametrize(("sets", "expected"), [
    (["train.lrr=0.1"], "config: unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    (["scenario.rounds=many"], "config: 'scenario.rounds' must be an integer, got str 'many'"),
    (["data.source=missing.csv"], "data.source: file 'missing.csv' does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_no_run_directory(tmp_path, sets, expected):
    proc = fedsilo("run", "--set", f"output.dir={tmp_path / 'runs'}",
                   *[x for s in sets for x in ("--set", s)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"fedsilo: {expected}"
    assert not (tmp_path / "runs").exists()


def test_data_command_prints_the_partition_table(tmp_path):
    proc = fedsilo("data", str(CONFIGS / "bank_hospital.toml"), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["institution", "kind", "train", "test"]
    assert [ln.split()[0] for ln in lines[2:]] == ["bank-1", "bank-2", "bank-3", "hospital-1",
                                                    "hospital-2", "ALL"]



@pytest.mark.parametrize(("scope", "shared"), [
    # tiny BERT: hidden 64, intermediate 128, 2 layers; 8 labels
    ("top-k", 64 * 8 + 8 + (4 * (64 * 64 + 64) + 2 * 64 + 64 * 128 + 128 + 128 * 64 + 64
                            + 2 * 64)),
    ("lora", 64 * 8 + 8 + 2 * 2 * (64 * 8 + 8 * 64)),
])
def test_other_scopes_train_and_send_only_their_arrays(tmp_path, cache_dir, scope, shared):
    # the encoder's or the adapters' own rate and early stopping on held-out training rows
    # at their defaults (the smoke head's rate of 0.1 suits its pooled random features, not
    # a head on layers that train: 0.005 here)
    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=2",
                              f"model.scope=\"{scope}\"", "model.top_k=1", "train.lr=0.005")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["model"]["shared_parameters"] == shared
    assert summary["bytes"]["per_round_up"] == 4 * shared * 4  # 4 institutions, float32
    rows = [json.loads(x) for x in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["global"]["train_loss"]) for r in rows)
    first = rows[0]["institutions"]
    assert all(v["train_loss"] < 2.5 and v["train_examples"] > 0 for v in first.values())
    from fedsilo.config import load
    from fedsilo.data import build_federation

    fed = build_federation(load(CONFIGS / "smoke.toml"))
    sizes = {i.name: len(i.train_texts) for i in fed.institutions}
    for row in rows:
        for name, v in row["institutions"].items():
            stop = v["early_stopping"]
            assert stop["best_epoch"] in (0, 1, 2, 3) and np.isfinite(stop["validation_loss"])
            # a tenth of the training rows held out
            assert v["train_examples"] == sizes[name] - int(0.1 * sizes[name] + 0.5)


def test_dp_sgd_accounts_per_institution_and_stops_at_the_budget(tmp_path, cache_dir):
    from tests.helpers import dp_sgd_epsilon

    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=3",
                              "privacy.dp=true", "privacy.max_epsilon=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "record level, per institution" in proc.stdout
    run = runs[0]
    summary = json.loads((run / "summary.json").read_text())
    report = summary["privacy"]["institutions"]
    assert set(report) == {"bank-1", "bank-2", "hospital-1", "hospital-2"}
    stopped = {n for n, v in report.items() if v["stopped_by_budget"]}
    assert stopped and stopped != set(report)  # some stop, the run goes on with the rest
    for v in report.values():
        # the reported epsilon is what an independent accountant gives for the run's own
        # noise multiplier, sampling rate, steps and delta
        assert v["epsilon"] == pytest.approx(dp_sgd_epsilon(
            v["noise_multiplier"], v["sampling_rate"], v["steps"], v["delta"]), rel=0.01)
        assert v["epsilon"] <= 10
        n = round(32 / v["sampling_rate"])  # q = batch_size / n
        assert v["delta"] == pytest.approx(1 / (10 * n), rel=0.05) and v["delta"] < 1 / n
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    eps = {n: [r["institutions"][n]["privacy"]["epsilon"] for r in rows] for n in report}
    for n, series in eps.items():
        assert series == sorted(series)  # spent privacy only grows
        if n in stopped:  # a stopped institution no longer trains: weight 0, same epsilon
            last = rows[-1]["institutions"][n]
            assert last["train_examples"] == 0 and series[-1] == series[-2]
    proc = fedsilo("privacy", str(run), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0
    assert "bank-1" in proc.stdout and "accountant: RDP" in proc.stdout


def test_secure_aggregation_matches_fedavg_and_no_update_leaves_in_the_clear(
        tmp_path, cache_dir):
    from fedsilo.protocol import SECAGG_RECORD, TRAIN_METRICS

    # one round each: both start from the same head, so the institutions train the same
    # updates and the aggregates differ only by SecAgg+'s quantisation (later rounds would
    # start from heads 1e-6 apart, which AdamW at lr 0.1 can blow up coordinate-wise)
    (tmp_path / "plain").mkdir()
    _proc, plain_runs = run_scenario(tmp_path / "plain", cache_dir, "smoke.toml",
                                     "scenario.rounds=1")
    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=1",
                              "output.audit=true", "privacy.secagg.enabled=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs[0]
    plain = np.load(plain_runs[0] / "head.npz")
    secure = np.load(run / "head.npz")
    # per coordinate: at most one quantisation step (2 * 4.0 / 2^22) per institution, over
    # the sum of weights (train examples / the largest: 336 / 123), plus float32 rounding
    bound = 4 * (8.0 / 2 ** 22) / (336 / 123) + 1e-6
    for k in plain.files:
        np.testing.assert_allclose(secure[k], plain[k], rtol=0, atol=bound)
    assert not np.array_equal(secure["head.out.weight"], plain["head.out.weight"])
    # what each node sent in training: protocol records only, never an array
    for name in ("bank-1", "bank-2", "hospital-1", "hospital-2"):
        entries = [json.loads(x) for x in
                   (run / "audit" / f"{name}.jsonl").read_text().splitlines()]
        train = [e for e in entries if e["type"] == "train"]
        assert len(train) == 4  # the four protocol stages of the round
        for e in train:
            assert e["arrays"] == {} and e["refused"] == []
            assert list(e["configs"]) == [SECAGG_RECORD]
            if "masked_params" in e["configs"][SECAGG_RECORD]:
                assert set(e["metrics"]["metrics"]) == TRAIN_METRICS
            else:
                assert e["metrics"] == {}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["secagg"]["survived"] == 4 and r["secagg"]["dropped"] == {} for r in rows)
    assert all(r["bytes_up"] == 0 for r in rows)  # no arrays travel up
    assert all(r["secagg"]["bytes_up"] > 4 * 4 * (64 * 8 + 8) for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["privacy"]["secure_aggregation"]["shares"] == 4


def test_secure_aggregation_survives_a_dropout(tmp_path, cache_dir):
    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=3",
                              "privacy.secagg.enabled=true", "faults.crash=bank-2",
                              "faults.crash_from_round=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["secagg"]["dropped"] == {}
    for r in rows[1:]:
        assert list(r["secagg"]["dropped"]) == ["bank-2"] and r["secagg"]["survived"] == 3
        assert "bank-2" not in {n for n, v in r["institutions"].items()
                                if v["train_examples"]}
    assert "dropped: bank-2" in proc.stdout
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert len(summary["final"]["institutions"]) == 4  # it still evaluates


def test_institution_level_dp_with_secure_aggregation_reports_epsilon(tmp_path, cache_dir):
    from fedsilo.privacy import central
    from tests.helpers import gaussian_epsilon

    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=3",
                              "privacy.secagg.enabled=true",
                              "privacy.central.mode=client-fixed",
                              "privacy.central.noise_multiplier=0.8",
                              "privacy.central.clip_norm=0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs[0]
    server = json.loads((run / "summary.json").read_text())["privacy"]["server"]
    assert server["rounds"] == 3 and server["noise_multiplier"] == 0.8
    assert server["clipping_norm"] == 0.5 and server["sampled"] == 4
    assert server["epsilon"] == pytest.approx(gaussian_epsilon(0.8, 3, 1e-5), rel=0.01)
    assert server["epsilon"] == pytest.approx(central.epsilon(0.8, 3, 1e-5))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["central_dp"]["epsilon"] for r in rows] == sorted(
        r["central_dp"]["epsilon"] for r in rows)
    assert rows[0]["central_dp"]["noise_std"] == pytest.approx(0.8 * 0.5 / 4)
    proc = fedsilo("privacy", str(run), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0
    assert "institution level, at the server" in proc.stdout
    assert "no amplification" in proc.stdout and "secure aggregation: SecAgg+" in proc.stdout


def test_adaptive_clipping_and_the_server_budget_stop_the_run_early(tmp_path, cache_dir):
    from fedsilo.privacy import central

    z = 0.3  # adaptive clipping over 4 institutions needs z < 2 * 4 / 20
    budget = (central.epsilon(z, 2, 1e-5) + central.epsilon(z, 3, 1e-5)) / 2
    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=5",
                              "privacy.central.mode=server-adaptive",
                              f"privacy.central.noise_multiplier={z}",
                              "privacy.central.clip_norm=0.01",
                              f"privacy.central.max_epsilon={budget}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max_epsilon" in proc.stdout and "stopping" in proc.stdout
    run = runs[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["stopped_early"]
    assert summary["privacy"]["server"]["epsilon"] <= budget
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # every update is longer than 0.01: all clipped, so the norm grows toward the median
    assert rows[1]["central_dp"]["clipping_norm"] > rows[0]["central_dp"]["clipping_norm"]
