"""A real deployment on loopback: a TLS SuperLink with node authentication and a state
database, one SuperNode per institution (each with only its own CSV, in its own directory,
on its own port), and runs submitted with `fedsilo submit`.

Every process is started by the `fedsilo` command as a user would, in its own process
group, and stopped at the end whatever happened. Outcomes are read from the run directory
`fedsilo submit` writes, never from exit codes alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.synthetic import LABELS
from fedsilo.deploy.loopback import Loopback, fedsilo
from fedsilo.ports import free_port
from tests.conftest import CONFIGS, ROOT

pytestmark = pytest.mark.slow
INSTITUTIONS = ["bank-1", "bank-2", "hospital-1"]
SITE = '''
import os, sys
_log = os.environ.get("FEDSILO_TEST_OPEN_LOG")
if _log:
    def _opened(event, args):
        if event == "open" and isinstance(args[0], str) and args[0].endswith(".csv"):
            fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(fd, (args[0] + "\\n").encode())
            os.close(fd)
    sys.addaudithook(_opened)
'''


@pytest.fixture(scope="module")
def federation(tmp_path_factory, cache_dir):
    """A SuperLink and three registered institutions' nodes, each on its own file; every
    node records which CSV files its processes open."""
    root = tmp_path_factory.mktemp("deployment")
    out = fedsilo("split", str(CONFIGS / "smoke.toml"), "all-data", cwd=root)
    assert out.returncode == 0, out.stderr
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    opened = {"PYTHONPATH": str(site), "FEDSILO_TEST_OPEN_LOG": "{host}/opened.log"}
    with Loopback(root, INSTITUTIONS, root / "all-data", extra_keys=("rogue", "bad-bank"),
                  cache_dir=cache_dir, node_env=opened) as lb:
        yield lb


def submit(fed: Loopback, *sets: str) -> subprocess.CompletedProcess:
    shared = [f"federation.institutions={','.join(INSTITUTIONS)}",
              f'data.labels="{",".join(LABELS)}"', "scenario.rounds=2",
              # nobody may read data.source in a deployment: it does not exist
              f"data.source={fed.root / 'no-such-data.csv'}"]
    return fed.submit(CONFIGS / "smoke.toml", [*shared, *sets], timeout=400)


def run_dirs(fed: Loopback) -> list[Path]:
    return sorted((fed.root / "runs").iterdir())


def test_a_deployed_run_completes_and_equals_the_simulated_one(federation, tmp_path, cache_dir):
    fed = federation
    proc = submit(fed, f"simulation.cache_dir={cache_dir / 'server'}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = [d for d in run_dirs(fed) if not d.name.endswith((".failed", ".incomplete"))][-1]
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["final"]["institutions"]) == set(INSTITUTIONS)
    assert summary["rounds"] == 2 and summary["final"]["global"]["accuracy"] > 1.5 / 8
    assert "institution" in proc.stdout and "ALL (union of test splits)" in proc.stdout
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert (run / "accuracy.png").stat().st_size > 5000
    # each node opened its own file and nothing else
    for name in INSTITUTIONS:
        host = fed.host(name)
        opened = set((host / "opened.log").read_text().split())
        assert opened == {str(host / "messages.csv")}, (name, opened)
    # the same data simulated on one machine (a natural split of the three files) gives
    # the same result
    pooled = pd.concat([pd.read_csv(fed.host(n) / "messages.csv")
                        .assign(institution=n) for n in INSTITUTIONS])
    pooled.to_csv(tmp_path / "pooled.csv", index=False)
    sim = fedsilo("run", str(CONFIGS / "smoke.toml"), "--set", "scenario.rounds=2",
                  "--set", f"data.source={tmp_path / 'pooled.csv'}", "--set",
                  f'data.labels="{",".join(LABELS)}"', "--set",
                  f"output.dir={tmp_path / 'runs'}", "--set",
                  f"simulation.cache_dir={cache_dir}", cwd=tmp_path, timeout=600)
    assert sim.returncode == 0, sim.stderr[-3000:]
    sim_run = next((tmp_path / "runs").iterdir())
    sim_summary = json.loads((sim_run / "summary.json").read_text())
    assert sim_summary["final"]["global"] == pytest.approx(summary["final"]["global"])
    deployed, simulated = np.load(run / "head.npz"), np.load(sim_run / "head.npz")
    for k in deployed.files:
        np.testing.assert_allclose(deployed[k], simulated[k], rtol=0, atol=1e-6)


def test_secure_aggregation_and_dp_sgd_work_deployed(federation):
    """The privacy features across real processes: each node keeps its own DP-SGD account
    between rounds (in its node state), and the server learns only the masked sum."""
    proc = submit(federation, "privacy.secagg.enabled=true", "privacy.dp=true",
                  "privacy.noise_multiplier=1.0", "strategy.name=fedprox")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = [d for d in run_dirs(federation) if not d.name.endswith((".failed",
                                                                   ".incomplete"))][-1]
    summary = json.loads((run / "summary.json").read_text())
    privacy = summary["privacy"]
    assert set(privacy["institutions"]) == set(INSTITUTIONS)
    steps = {n: v["steps"] for n, v in privacy["institutions"].items()}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    first = {n: v["privacy"]["steps"] for n, v in rows[0]["institutions"].items()}
    assert all(steps[n] == 2 * first[n] > 0 for n in INSTITUTIONS)  # accounted over rounds
    assert privacy["secure_aggregation"]["rounds_with_dropouts"] == 0
    assert all(r["secagg"]["survived"] == len(INSTITUTIONS) for r in rows)
    assert all(r["bytes_up"] == 0 for r in rows)  # no array left any node in the clear


def test_a_node_whose_key_was_never_registered_is_refused(federation):
    fed = federation
    host = fed.root / "hosts" / "rogue"
    host.mkdir(parents=True, exist_ok=True)
    (host / "messages.csv").write_bytes((fed.root / "all-data" / "bank-1.csv").read_bytes())
    proc = fedsilo("node", "--superlink", fed.link, "--ca", "../../certs/ca.crt", "--key",
                   "../../certs/nodes/rogue", "--institution", "bank-1", "--data",
                   "messages.csv", "--port", str(free_port()), cwd=host, timeout=120,
                   env=fed.env)
    assert proc.returncode == 1
    assert "key is not registered" in proc.stderr.strip().splitlines()[-1]


def test_a_node_without_tls_is_refused(federation):
    fed = federation
    proc = fedsilo("node", "--superlink", fed.link, "--insecure", "--institution",
                   "bank-1", "--data", str(fed.host("bank-1") / "messages.csv"),
                   "--port", str(free_port()), cwd=fed.root, timeout=60, env=fed.env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"fedsilo: --insecure: the SuperLink at {fed.link} "
                                   f"speaks TLS; start the node with --ca (the federation's "
                                   f"ca.crt)")


def test_a_missing_institution_fails_within_the_wait_naming_it(federation):
    t0 = time.monotonic()
    proc = submit(federation, f"federation.institutions={','.join(INSTITUTIONS)},hospital-9",
                  "federation.wait_s=8")
    assert proc.returncode == 1
    assert time.monotonic() - t0 < 120
    last = proc.stderr.strip().splitlines()[-1]
    assert "no node of institution 'hospital-9' connected within federation.wait_s = 8 s" \
        in last, proc.stderr


def test_a_node_with_an_undeclared_label_fails_the_handshake_naming_the_file(federation):
    fed = federation
    host = fed.host("bad-bank")
    host.mkdir(parents=True, exist_ok=True)
    rows = pd.read_csv(fed.root / "all-data" / "bank-2.csv")
    rows.loc[rows.index[:3], "label"] = "mortgage"
    rows.to_csv(host / "messages.csv", index=False)
    fed.register("bad-bank")
    node = fed.start_node("bad-bank", host / "messages.csv")
    try:
        proc = submit(fed, f"federation.institutions={','.join(INSTITUTIONS)},bad-bank")
    finally:
        fed.stop(node)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "institution 'bad-bank'" in last and "failed in the handshake" in last
    assert str(host / "messages.csv") in last and "'mortgage'" in last


def test_a_run_that_fails_on_the_server_makes_submit_exit_nonzero(federation):
    proc = submit(federation, "model.backbone=./no-such-backbone")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "finished as 'failed'" in last and "no-such-backbone" in last
    failed = [d for d in run_dirs(federation) if d.name.endswith(".failed")]
    assert failed and (failed[-1] / "error.txt").is_file()


def test_the_documented_flwr_run_works_on_a_fresh_flower_home(tmp_path, cache_dir):
    """docs/deployment.md: the same apps under Flower's own CLI, local simulation."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text((CONFIGS / "smoke.toml").read_text() + f"""
[output]
dir = "{tmp_path / 'runs'}"

[simulation]
cache_dir = "{cache_dir}"
""")
    home = tmp_path / "flwr-home"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               FLWR_HOME=str(home), FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
               HF_HUB_OFFLINE="1", FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
    try:
        proc = subprocess.run(["flwr", "run", ".", "local", "--run-config", str(scenario),
                               "--federation-config", "num-supernodes=4", "--stream"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs = list((tmp_path / "runs").iterdir())
        assert len(runs) == 1 and not runs[0].name.endswith((".failed", ".incomplete"))
        summary = json.loads((runs[0] / "summary.json").read_text())
        assert summary["rounds"] == 6 and len(summary["final"]["institutions"]) == 4
    finally:
        _stop_local_superlink(home)


def _stop_local_superlink(home: Path) -> None:
    """`flwr run` leaves a local SuperLink running in the background: stop it."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(home) in " ".join(p.info["cmdline"] or []):
                p.kill()
        except psutil.Error:
            pass
