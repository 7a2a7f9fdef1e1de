"""What real runs meet, without processes: damaged caches, holes in data files, unwritable
directories, oversized scenarios, the drop-out policy, kept memory, locks."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pandas as pd
import pytest
import torch

from fedsilo.config import ConfigError, Scenario
from fedsilo.results.rundir import RunDirectory, check_lock, check_writable
from fedsilo.training.features import FeatureCache
from strategies import ClientFailure, RoundLedger
from tests.helpers import reply, roster

pytestmark = pytest.mark.usefixtures("flower_identity")


# -- the feature cache ------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_cache_file_is_detected_and_encoded_again(tmp_path, capsys, damage):
    calls = []
    features = torch.arange(12, dtype=torch.float32).reshape(3, 4)

    def compute():
        calls.append(1)
        return {"pooled": features.clone()}

    FeatureCache(disk_dir=tmp_path).get("bank-1", "k", compute)
    path = tmp_path / "bank-1" / "k.npz"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":  # a bit of the stored features, not of the zip's structure
        raw = np.load(path)["pooled"].tobytes()
        at = bytes(data).index(raw) + 5
        data[at] ^= 0xFF
    else:
        data = bytearray(b"not an npz at all")
    path.write_bytes(bytes(data))
    capsys.readouterr()
    value = FeatureCache(disk_dir=tmp_path).get("bank-1", "k", compute)
    assert len(calls) == 2  # encoded again
    torch.testing.assert_close(value["pooled"], features)
    err = capsys.readouterr().err
    assert f"feature cache '{path}' is damaged" in err and "encoding the texts again" in err
    # the repaired file is read from now on
    again = FeatureCache(disk_dir=tmp_path).get("bank-1", "k", lambda: pytest.fail("encoded"))
    torch.testing.assert_close(again["pooled"], features)


# -- holes in a data file ---------------------------------------------------------------------
def _scenario(tmp_path, rows: dict, **sets) -> Scenario:
    path = tmp_path / "data.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return Scenario().replace(**{"data.source": str(path), "data.min_examples": 2, **sets})


def test_empty_and_blank_texts_are_dropped_with_a_count_per_institution(tmp_path, capsys):
    from fedsilo.data import build_federation

    texts = [f"message {i}" for i in range(40)]
    texts[3], texts[5], texts[30] = "", "   ", "\t"
    s = _scenario(tmp_path, {"text": texts, "label": ["a", "b"] * 20,
                             "institution": ["bank-1"] * 20 + ["bank-2"] * 20})
    fed = build_federation(s)
    assert sum(len(i.train_texts) + len(i.test_texts) for i in fed.institutions) == 37
    err = capsys.readouterr().err
    assert "dropped 3 rows whose text or label is empty or only whitespace (bank-1: 2, " \
           "bank-2: 1)" in err


def test_an_institution_with_only_blank_texts_is_an_error_naming_it(tmp_path):
    from fedsilo.data import build_federation

    s = _scenario(tmp_path, {"text": ["ok"] * 20 + [" "] * 5, "label": ["a", "b"] * 12 + ["a"],
                             "institution": ["bank-1"] * 20 + ["hospital-9"] * 5})
    with pytest.raises(ConfigError, match="institution 'hospital-9' has no row with a "
                                          "non-empty text and label in '.*data.csv'"):
        build_federation(s)


def test_labels_in_one_split_and_texts_in_both_are_warned_about(tmp_path, capsys):
    from fedsilo.data import build_federation

    texts = [f"t{i}" for i in range(30)] + ["same"] * 10
    labels = ["a"] * 20 + ["b"] * 19 + ["rare"]
    s = _scenario(tmp_path, {"text": texts, "label": labels, "institution": ["bank-1"] * 40},
                  **{"data.test_fraction": 0.3})
    build_federation(s)
    err = capsys.readouterr().err
    assert "institution 'bank-1'" in err and "label(s) occur only in its" in err
    assert "test text(s) also appear in its training split" in err


# -- directories, sizes ---------------------------------------------------------------------
def test_an_unwritable_output_dir_is_one_line_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    s = Scenario().replace(**{"output.dir": str(blocker / "runs")})
    with pytest.raises(ConfigError, match=r"output.dir: cannot write to '.*a-file/runs'"):
        check_writable(s)
    s = Scenario().replace(**{"simulation.cache_dir": str(blocker / "cache"),
                              "output.dir": str(tmp_path / "runs")})
    with pytest.raises(ConfigError, match=r"simulation.cache_dir: cannot write to"):
        check_writable(s)


def test_a_federation_beyond_the_machine_is_refused_before_any_work():
    from fedsilo.runner import check_size

    with pytest.raises(ConfigError, match=r"100,002 institutions .* need about [0-9.]+ GB, "
                                          r"more than the [0-9.]+ GB this machine has free"):
        check_size(Scenario().replace(**{"federation.banks": 100_000}))
    check_size(Scenario())  # the default is fine


# -- the drop-out policy ----------------------------------------------------------------------
def _round(ledger, policy_min, failing: set[int], nodes=(10, 11, 12, 13)):
    from flwr.app import Error, Message, MessageType, RecordDict

    replies = []
    for n in nodes:
        if n in failing:
            sent = Message(RecordDict(), message_type=MessageType.TRAIN, dst_node_id=n)
            replies.append(Message(Error(code=2, reason="boom"), reply_to=sent))
        else:
            replies.append(reply(n, {"w": np.ones(2)}, {"num-examples": 3}))
    ledger.sent[(1, "training")] = list(nodes)
    return ledger.check(1, "training", replies, skip_below=policy_min)


def test_skip_leaves_a_failed_institution_out_of_the_round_and_says_why():
    ledger = RoundLedger(roster([10, 11, 12, 13]))
    ok = _round(ledger, 2, failing={11})
    assert [m.metadata.src_node_id for m in ok] == [10, 12, 13]
    assert ledger.dropped[1] == {"inst-1": "training: boom"}


def test_skip_below_the_minimum_stops_naming_everyone_who_failed():
    ledger = RoundLedger(roster([10, 11, 12, 13]))
    with pytest.raises(ClientFailure, match=r"institution 'inst-1' failed.*institution "
                                            r"'inst-2' failed.*institution 'inst-3' failed.*"
                                            r"only 1 replied, fewer than strategy.min_replies"):
        _round(ledger, 2, failing={11, 12, 13})


def test_stop_stops_at_the_first_failure():
    with pytest.raises(ClientFailure, match="institution 'inst-1' failed in training"):
        _round(RoundLedger(roster([10, 11, 12, 13])), None, failing={11})


def test_skip_with_institution_level_dp_is_refused():
    with pytest.raises(ConfigError, match="'strategy.on_failure' = 'skip' cannot be used"):
        Scenario().replace(**{"strategy.on_failure": "skip",
                              "privacy.central.mode": "server-fixed"})


# -- kept memory, locks -------------------------------------------------------------------------
def test_an_institutions_memory_survives_on_its_disk_by_round(tmp_path):
    from fedsilo.node import memory

    d = memory.snapshot_dir(tmp_path, "run-1", "bank-1")
    for r in (1, 2, 3, 4):
        memory.store(d, memory.Memory(scaffold_variate={"w": np.full(3, r, np.float32)},
                                      dp_steps=10 * r, round=r))
    assert sorted(p.name for p in d.iterdir()) == ["round-0002.npz", "round-0003.npz",
                                                    "round-0004.npz"]
    back = memory.restore(d, 2)
    assert back.dp_steps == 20 and back.round == 2
    np.testing.assert_array_equal(back.scaffold_variate["w"], np.full(3, 2, np.float32))
    assert memory.restore(d, 1) is None


def test_a_live_run_is_told_from_a_dead_one(tmp_path):
    run = tmp_path / "x.incomplete"
    run.mkdir()
    with RunDirectory(run):
        with pytest.raises(ConfigError, match="still going"):
            check_lock(run)
    (tmp_path / "y.incomplete").mkdir()
    (tmp_path / "y.incomplete" / "lock").write_text(json.dumps(
        {"pid": 2**22 + 12345, "host": socket.gethostname(), "started": 0}))
    check_lock(tmp_path / "y.incomplete")  # its owner is gone: stale
    assert not (tmp_path / "y.incomplete" / "lock").exists()
    assert os.path.isdir(tmp_path / "x")  # finished: renamed, lock gone
    assert not (tmp_path / "x" / "lock").exists()


def test_temporary_ray_dirs_of_dead_runs_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from fedsilo import runner

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    mine, _ = runner.ray_temp_dir(tmp_path / ("x" * 120))  # too long for Ray's sockets
    orphan, _ = runner.ray_temp_dir(tmp_path / ("x" * 120))
    (orphan / "owner.pid").write_text(dead.stdout.strip())
    live, _ = runner.ray_temp_dir(tmp_path / ("x" * 120))
    (live / "owner.pid").write_text(str(os.getppid()))
    runner.kill_orphans()
    assert mine.is_dir() and live.is_dir() and not orphan.exists()


# -- leaving after a stopped run --------------------------------------------------------------
@pytest.mark.parametrize("stuck", [True, False])
def test_a_thread_left_behind_does_not_keep_a_stopped_command_alive(tmp_path, stuck):
    """A non-daemon thread that never ends (a runtime worker waiting for a dead actor) would
    make Python wait forever after the command's last line; one that ends in time does not
    cut the exit short (its output is kept)."""
    import subprocess
    import sys
    import time

    code = ("import threading, time\n"
            "from fedsilo.interrupt import leave_promptly\n"
            f"wait = threading.Event().wait if {stuck} else (lambda: time.sleep(0.3))\n"
            "threading.Thread(target=lambda: (wait(), print('thread ended', flush=True)))"
            ".start()\n"
            "print('last line')\n"
            "leave_promptly(143, grace=0.5)\n"
            "raise SystemExit(7)\n")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert time.monotonic() - t0 < 30
    if stuck:
        assert (done.returncode, done.stdout) == (143, "last line\n")
    else:
        assert (done.returncode, done.stdout) == (7, "last line\nthread ended\n")
