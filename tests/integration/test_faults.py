"""What real runs meet, with real processes: kill -9 and resume, signals, a dead Ray
worker under both drop-out policies, a full disk, two runs at once, a damaged cache.
Every test runs the `fedsilo` command as a user would and reads what it left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.conftest import CONFIGS
from tests.helpers import leftovers_of

pytestmark = pytest.mark.slow
VOLATILE = ("wall_time_s", "elapsed_s", "timing")


def _cmd(tmp_path: Path, cache_dir: Path, *sets: str, config: str = "smoke.toml") -> list:
    args = [sys.executable, "-m", "fedsilo.cli", "run", str(CONFIGS / config), "--set",
            f"output.dir={tmp_path / 'runs'}", "--set", f"simulation.cache_dir={cache_dir}"]
    for item in sets:
        args += ["--set", item]
    return args


def _fedsilo(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedsilo.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _rows(run: Path) -> list[dict]:
    """The metrics rows without what depends on the clock."""
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = {k: v for k, v in json.loads(line).items() if k not in VOLATILE}
        for inst in row["institutions"].values():
            inst.pop("train_time_s", None)
            inst.pop("ray_node", None)  # where it ran, not what it computed
        rows.append(row)
    return rows


def _same_run(a: Path, b: Path) -> None:
    assert _rows(a) == _rows(b)
    with np.load(a / "head.npz") as x, np.load(b / "head.npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for k in x.files:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _wait_for_rows(runs: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> Path:
    """The live run directory, once the checkpoint of round ``n`` is committed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        for run in runs.glob("*.incomplete") if runs.exists() else []:
            state = run / "checkpoint" / "state.json"
            try:
                if json.loads(state.read_text())["round"] >= n:
                    return run
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.05)
    raise AssertionError(f"no run reached {n} rounds (exit {proc.poll()})")


def _finished(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if "." not in p.name)


def _kill_and_resume(tmp_path: Path, cache_dir: Path, sets: tuple, after: int) -> Path:
    """Start a run, kill -9 its whole process group once ``after`` rounds are recorded,
    resume it; the finished run directory."""
    runs = tmp_path / "killed" / "runs"
    proc = subprocess.Popen(_cmd(tmp_path / "killed", cache_dir, *sets), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run = _wait_for_rows(runs, after, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, mid-round
    proc.wait(timeout=30)
    assert run.name.endswith(".incomplete") and (run / "lock").is_file()
    resumed = _fedsilo("resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming after round {after} of " in resumed.stdout
    time.sleep(0.5)
    assert leftovers_of(proc.pid) == [], "processes of the killed run outlived the resume"
    done = _finished(runs)[0]
    assert json.loads((done / "summary.json").read_text())["resumed_from_round"] == after
    return done


def test_fedavg_gives_the_same_result_whole_and_killed_and_resumed_even_with_a_damaged_cache(
        tmp_path, cache_dir):
    """Two processes, the second killed -9 and resumed, the feature cache damaged in
    between: the same rows and head, bit for bit (replies are summed in a fixed order; the
    damaged cache file is noticed by its checksum and encoded again)."""
    own_cache = tmp_path / "cache"
    # without the shared cache's features: every file left is one this run reads
    shutil.copytree(cache_dir, own_cache, ignore=shutil.ignore_patterns("ray", "state",
                                                                         "features"))
    whole = subprocess.run(_cmd(tmp_path / "whole", own_cache, "scenario.rounds=3"),
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    damaged = sorted((own_cache / "features").rglob("*.npz"))[0]
    damaged.write_bytes(damaged.read_bytes()[:200])
    resumed = _kill_and_resume(tmp_path, own_cache, ("scenario.rounds=3",), after=1)
    _same_run(_finished(tmp_path / "whole" / "runs")[0], resumed)
    assert damaged.stat().st_size > 200  # encoded again and stored whole


@pytest.mark.parametrize("sets", [
    ("strategy.name=fedadam",), ("strategy.name=scaffold", "train.optimizer=sgd"),
    ("privacy.dp=true",), ("personalize.method=ditto", "personalize.compare_local=false")],
    ids=["fedadam", "scaffold", "dp-sgd", "ditto"])
def test_kill_9_then_resume_ends_where_the_uninterrupted_run_ends(tmp_path, cache_dir, sets):
    """Server state (moments, control variate), each institution's own memory (SCAFFOLD's
    variate, DP-SGD's steps, Ditto's personal model, scored in every row) and the random
    states all come back."""
    sets = ("scenario.rounds=4", *sets)
    whole = subprocess.run(_cmd(tmp_path / "whole", cache_dir, *sets), cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    resumed = _kill_and_resume(tmp_path, cache_dir, sets, after=2)
    _same_run(_finished(tmp_path / "whole" / "runs")[0], resumed)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_within_seconds_and_it_can_be_resumed(tmp_path, cache_dir,
                                                                     sig, code):
    proc = subprocess.Popen(_cmd(tmp_path, cache_dir, "scenario.rounds=200"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(tmp_path / "runs", 1, proc)
    t0 = time.monotonic()
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert time.monotonic() - t0 < 20
    run = next((tmp_path / "runs").iterdir())
    assert run.name.endswith(".interrupted") and not (run / "lock").exists()
    assert err.strip().splitlines()[-1] == (
        f"fedsilo: interrupted by {signal.Signals(sig).name}; continue it with: fedsilo "
        f"resume {run.relative_to(tmp_path)}")
    time.sleep(0.5)
    assert leftovers_of(proc.pid) == []
    # a resume that would change the scenario is refused, naming the key
    changed = _fedsilo("resume", str(run), "--set", "scenario.rounds=3", cwd=tmp_path)
    assert changed.returncode == 2
    assert "scenario would change (scenario.rounds)" in changed.stderr


def _kill_a_worker_mid_run(tmp_path, cache_dir, *sets):
    proc = subprocess.Popen(_cmd(tmp_path, cache_dir, f"scenario.rounds={ROUNDS}", *sets),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_rows(tmp_path / "runs", 2, proc)
    actors = [p for p in psutil.Process(proc.pid).children(recursive=True)
              if "ClientAppActor" in p.name()]
    assert actors, "no Ray worker to kill"
    actors[0].kill()
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


# a smoke round takes a fraction of a second and a Ray worker seconds to restart: enough
# rounds that the killed worker's institutions are back well before the end
ROUNDS = 30


def test_a_killed_worker_with_skip_leaves_institutions_out_while_it_restarts(tmp_path,
                                                                            cache_dir):
    code, out, err = _kill_a_worker_mid_run(tmp_path, cache_dir, "strategy.on_failure=skip")
    assert code == 0, err[-2000:]
    run = _finished(tmp_path / "runs")[0]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    hit = [r for r in rows if r.get("dropped")]
    # the institutions of the killed worker miss what is sent to it while it restarts
    # (with evaluation riding on training, round r's training and round r-1's
    # evaluation per failed message): one round or a few, depending on the machine's load
    assert hit and hit[0]["round"] >= 3 and hit[-1]["round"] < ROUNDS, hit
    assert [r["round"] for r in hit] == list(range(hit[0]["round"],
                                                   hit[0]["round"] + len(hit)))
    # only the killed worker's institutions (4 institutions on 2 workers), for its death
    assert len({name for r in hit for name in r["dropped"]}) <= 2
    assert all(why.startswith(("training: ", "evaluation: ")) and "Actor" in why
               for r in hit for why in r["dropped"].values())
    for r in hit:
        assert f"round {r['round']:>3}/{ROUNDS}" in out and "dropped: " in out
    for r in rows[hit[-1]["round"]:]:  # every institution is back afterwards
        assert len(r["institutions"]) == 4 and all(
            v["accuracy"] is not None and v["train_loss"] is not None
            for v in r["institutions"].values())


def test_a_killed_worker_with_stop_fails_the_run_naming_the_institutions(tmp_path, cache_dir):
    code, _out, err = _kill_a_worker_mid_run(tmp_path, cache_dir)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("fedsilo: run failed: institution '")
    assert "failed in training (round" in last and "Actor" in last


def test_a_full_output_disk_is_one_line_and_exit_2(tmp_path, cache_dir):
    """A 48 KB file system as output.dir, in a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not available to make a small file system")
    out = tmp_path / "small"
    out.mkdir()
    script = (f"mount -t tmpfs -o size=48k tmpfs {out} && exec "
              + " ".join(f"'{a}'" for a in _cmd(tmp_path, cache_dir, f"output.dir={out}")))
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    if "mount" in proc.stderr and "permission" in proc.stderr.lower():
        pytest.skip(f"cannot mount a small file system here: {proc.stderr.strip()}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"fedsilo: output.dir: cannot write the run's files under "
                                f"'{out}': No space left on device")
    assert not any("Traceback" in ln for ln in lines)


def test_two_runs_at_once_in_the_same_directory_do_not_collide(tmp_path, cache_dir):
    procs = [subprocess.Popen(_cmd(tmp_path, cache_dir, "scenario.rounds=2"), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        _out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    a, b = _finished(tmp_path / "runs")
    assert a != b
    _same_run(a, b)
