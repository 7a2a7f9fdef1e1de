"""What an attacker learns from real runs: an overfit federation leaks to the loss attack,
LiRA and its canaries; DP-SGD at a small epsilon keeps every attack within its bound and
hides the canaries; the server reads labels off one SGD step, and under SecAgg+ holds no
institution's update to read them from."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_simulation import fedsilo, run_scenario

pytestmark = pytest.mark.slow

# few examples, many local epochs, a hidden layer in the head, noisy labels
OVERFIT = ("scenario.rounds=3", "train.local_epochs=30", "model.head_hidden=256",
           "data.synthetic.size=60", "federation.banks=2", "federation.hospitals=2",
           "data.synthetic.label_noise=0.2", "attack.canaries=8")


def _attacked(tmp_path, cache_dir, *sets, attack="all", shadows=4):
    proc, runs = run_scenario(tmp_path, cache_dir, "bank_hospital.toml", *OVERFIT, *sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = fedsilo("attack", str(runs[0]), "--attack", attack, "--shadows", str(shadows),
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return runs[0], json.loads((runs[0] / "attacks.json").read_text()), out


@pytest.fixture(scope="module")
def overfit(tmp_path_factory, cache_dir):
    return _attacked(tmp_path_factory.mktemp("overfit"), cache_dir)


def test_an_overfit_federation_leaks_to_the_loss_attack_lira_and_its_canaries(overfit):
    run, report, out = overfit
    loss = report["loss"]["federation"]
    assert loss["auc"] > 0.65 and loss["tpr_at_0.01_fpr"] > 0.01
    assert loss["members"] == sum(v["members"] for v in report["loss"]["institutions"].values())
    online = report["lira"]["online"]["federation"]
    assert online["auc"] > 0.75 and online["tpr_at_0.01_fpr"] > 0.01
    assert online["auc"] > loss["auc"]  # the stronger attack
    assert report["lira"]["offline"]["federation"]["auc"] > 0.65
    assert report["lira"]["shadows"] == 4
    canary = report["canary"]
    assert canary["institution"] == "bank-1" and len(canary["ranks"]) == 8
    assert canary["mean_exposure"] > 4  # at most log2(1001) = 9.97; 1.44 not memorised
    assert canary["chance_exposure"] == pytest.approx(1.44, abs=0.01)
    assert "dp_audit" not in report  # no DP, no bound
    assert (run / "attack_roc.png").stat().st_size > 5000
    for text in ("ALL (federation)", "threat model: outsider", "LiRA online",
                 "LiRA with 4 shadow federations", "shadow federation 4/4 trained",
                 "about", "canary exposure", "not run: labels (the run kept no server view"):
        assert text in out.stdout + out.stderr, text
    # the privacy report shows the attacks beside epsilon (none here)
    priv = fedsilo("privacy", str(run), cwd=run.parent)
    assert priv.returncode == 0 and "LiRA online" in priv.stdout


def test_dp_sgd_at_a_small_epsilon_stays_within_its_bound_and_hides_the_canaries(
        tmp_path, cache_dir, overfit):
    run, report, out = _attacked(tmp_path, cache_dir, "privacy.dp=true",
                                 "privacy.target_epsilon=1", shadows=2)
    audit = report["dp_audit"]
    assert audit["epsilon"] == pytest.approx(1.0, abs=0.01)
    assert set(audit["attacks"]) == {"loss", "LiRA online", "LiRA offline"}
    for name, a in audit["attacks"].items():
        assert a["respects_bound"] and a["epsilon_lower_bound"] <= 1.0, name
    assert report["lira"]["shadow_training"].endswith("(DP-SGD); the run's strategy: fedavg")
    assert (run / "attack_dp_bound.png").stat().st_size > 5000
    assert "within the bound" in out.stdout
    # the same attack proves far more than epsilon 1 against the run without DP
    from fedsilo.attacks.audit import epsilon_lower_bound

    lira = overfit[1]["lira"]["online"]["federation"]
    undefended = epsilon_lower_bound(lira["roc"]["fpr"], lira["roc"]["tpr"],
                                     lira["members"], lira["non_members"],
                                     audit["delta"])
    # the audit has power: it would refuse a claim of epsilon 0.5 for the run without DP
    # (with 33 non-members no more than about 1 can be proven at 95% over all thresholds)
    assert undefended["epsilon_lower_bound"] > 0.5
    assert undefended["epsilon_point_estimate"] > 2.5
    # more noise, less exposure
    assert report["canary"]["mean_exposure"] < overfit[1]["canary"]["mean_exposure"] - 2
    # the run's HTML page carries the attacks, their ROC and the bound
    page = fedsilo("report", str(run), cwd=tmp_path)
    assert page.returncode == 0, page.stderr[-2000:]
    text = (run / "report.html").read_text()
    assert "<h2>Attacks</h2>" in text and "within the bound" in text
    assert "alt='attack_roc'" in text and "alt='attack_dp_bound'" in text


LABELS = ("scenario.rounds=2", "train.optimizer=sgd", "train.local_epochs=1",
          "train.batch_size=4096", "attack.server_view=true")


def test_the_server_reads_each_institutions_labels_off_one_sgd_step(tmp_path, cache_dir):
    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", *LABELS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = fedsilo("attack", str(runs[0]), "--attack", "labels", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rep = json.loads((runs[0] / "attacks.json").read_text())["labels"]
    assert len(rep["institutions"]) == 4 and rep["rounds"] == 2
    for name, v in rep["institutions"].items():
        first = v["rounds"][0]
        assert first["round"] == 1 and first["l1"] < 0.05 and first["top1"], name
        assert sum(first["recovered"]) == pytest.approx(sum(v["true"]), abs=0.1)
    assert "caveat" not in rep and "L1 error, first round" in out.stdout


def test_under_secagg_the_server_holds_no_institutions_update_to_attack(tmp_path,
                                                                       cache_dir):
    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", *LABELS,
                              "privacy.secagg.enabled=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # what the server held: masked vectors, then only their aggregate
        assert row["server_view"]["replies"] == {}
        assert row["server_view"]["aggregate"]["institutions"] == 4
    out = fedsilo("attack", str(runs[0]), "--attack", "labels", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rep = json.loads((runs[0] / "attacks.json").read_text())["labels"]
    assert rep["institutions"] == {} and "federation" not in rep
    assert "no institution's own labels can be attacked" in rep["aggregate_only"]["note"]
    assert rep["aggregate_only"]["mean_l1"] < 0.1  # the federation's summed counts leak
    assert "no institution's own labels can be attacked" in out.stdout


def test_attacks_that_the_run_does_not_allow_are_refused_in_one_line(tmp_path, cache_dir):
    proc, runs = run_scenario(tmp_path, cache_dir, "smoke.toml", "scenario.rounds=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for attack, why in (("labels", "kept no server view; run it with attack.server_view"),
                        ("canary", "holds no canaries; run it with attack.canaries")):
        out = fedsilo("attack", str(runs[0]), "--attack", attack, cwd=tmp_path)
        assert out.returncode == 2 and why in out.stderr.strip().splitlines()[-1]
        assert "Traceback" not in out.stderr
    bad = fedsilo("attack", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        f"fedsilo: attack: '{tmp_path / 'nowhere'}' is not a finished run directory (no "
        f"config.toml)")
    shadows = fedsilo("attack", str(runs[0]), "--attack", "lira", "--shadows", "1",
                      cwd=tmp_path)
    assert shadows.returncode == 2 and "--shadows must be at least 2" in shadows.stderr
