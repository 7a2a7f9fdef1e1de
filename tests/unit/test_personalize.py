"""Personalisation: Ditto's personal model and local fine-tuning stay on the node (kept in
its memory, never in a reply), are scored beside the shared model, and the gain table
compares each institution with training alone."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from fedsilo import config
from fedsilo.config import ConfigError
from fedsilo.node import memory, silo
from fedsilo.node.memory import Memory
from fedsilo.node.round import Instruction, run_evaluation, run_training
from fedsilo.privacy.boundary import check_reply
from fedsilo.results.compare import gains_table, personal_gains

SMOKE = "configs/smoke.toml"


def _silo(cache_dir, *sets):
    s = config.load(SMOKE, [f"simulation.cache_dir={cache_dir}", *sets])
    labels, inst = silo.resolve_institution(s, {"partition-id": 1})
    return silo.Silo(s, inst, labels, silo.runtime_for(s))


def _start(node):
    return {k: v.copy() for k, v in node.model().get_arrays().items()}


def _distance(a, b):
    return float(np.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))


def test_ditto_keeps_a_personal_model_beside_an_unchanged_shared_update(cache_dir):
    plain = _silo(cache_dir)
    w = _start(plain)
    sent = run_training(plain, Instruction(1, w), Memory()).arrays
    ditto = _silo(cache_dir, "personalize.method=\"ditto\"", "personalize.lam=0.0")
    mem = Memory()
    reply = run_training(ditto, Instruction(1, w), mem)
    for k in sent:  # what travels is exactly what it would be without personalisation
        np.testing.assert_array_equal(reply.arrays[k], sent[k], err_msg=k)
    assert set(mem.personal) == set(w) and _distance(mem.personal, w) > 0
    # lambda pulls the personal model towards the shared one
    pulled = Memory()
    run_training(_silo(cache_dir, "personalize.method=\"ditto\"", "personalize.lam=50.0"),
                 Instruction(1, w), pulled)
    assert _distance(pulled.personal, w) < 0.5 * _distance(mem.personal, w)
    # round 2 continues the personal model from the memory, not from the new shared one
    before = {k: v.copy() for k, v in mem.personal.items()}
    run_training(ditto, Instruction(2, reply.arrays), mem)
    assert _distance(mem.personal, before) > 0 and mem.round == 2


def test_the_personal_model_survives_on_the_nodes_disk_exactly(tmp_path):
    mem = Memory(personal={"head.out.weight": np.random.default_rng(0).normal(
        size=(8, 64)).astype(np.float32)}, round=3)
    memory.store(tmp_path, mem)
    back = memory.restore(tmp_path, 3)
    np.testing.assert_array_equal(back.personal["head.out.weight"],
                                  mem.personal["head.out.weight"])
    assert Memory().empty() and not Memory(personal={"x": np.zeros(1)}).empty()


def test_evaluation_scores_the_personal_model_beside_the_shared_one(cache_dir):
    node = _silo(cache_dir, "personalize.method=\"finetune\"", "personalize.epochs=3")
    w = _start(node)
    same = run_evaluation(node, w, personal=w)
    assert same["personal-accuracy"] == same["accuracy"]
    assert same["personal-confusion"] == same["confusion"]
    assert "personal-accuracy" not in run_evaluation(node, w)
    tuned = run_evaluation(node, w, finetune=True)  # trained further on its own data
    assert tuned["accuracy"] == same["accuracy"]  # the shared model is scored as sent
    assert tuned["personal-loss"] < tuned["loss"]
    assert tuned["personal-accuracy"] > tuned["accuracy"]


def test_personal_metrics_may_leave_a_node_and_personal_arrays_may_not(flower_identity):
    shared = {"head.out.weight": np.zeros((2, 4), np.float32)}
    ev = Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in shared.items()}),
                             "config": ConfigRecord({"server-round": 1})}),
                 message_type=MessageType.EVALUATE, dst_node_id=1)
    metrics = {"num-examples": 4, "loss": 1.0, "accuracy": 0.5, "macro-f1": 0.5,
               "confusion": [1, 1, 1, 1], "personal-loss": 0.5, "personal-accuracy": 0.75,
               "personal-macro-f1": 0.7, "personal-confusion": [2, 0, 1, 1]}
    assert check_reply(ev, Message(RecordDict({"metrics": MetricRecord(metrics)}),
                                   reply_to=ev)) == []
    bad = {**metrics, "personal-confusion": [2, 0, 1]}
    assert any("personal-confusion of 3 values" in p for p in check_reply(
        ev, Message(RecordDict({"metrics": MetricRecord(bad)}), reply_to=ev)))
    tr = Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in shared.items()}),
                             "config": ConfigRecord({"server-round": 1})}),
                 message_type=MessageType.TRAIN, dst_node_id=1)
    leak = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in shared.items()}),
                       "personal": ArrayRecord({k: Array(v) for k, v in shared.items()}),
                       "metrics": MetricRecord({"num-examples": 3, "train-loss": 1.0,
                                                "train-loss-first-epoch": 1.0, "steps": 1,
                                                "train-time-s": 0.1})})
    assert any("'personal'" in p for p in check_reply(tr, Message(leak, reply_to=tr)))


def test_finetune_with_dp_sgd_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="'personalize.method' = 'finetune' cannot be used "
                                          "with 'privacy.dp'"):
        config.load(SMOKE, ["personalize.method=\"finetune\"", "privacy.dp=true"])


def test_ditto_under_dp_sgd_spends_its_personal_steps_in_the_same_budget(cache_dir):
    from fedsilo.privacy import dpsgd
    from tests.helpers import dp_sgd_epsilon

    node = _silo(cache_dir, "privacy.dp=true", "privacy.target_epsilon=4.0",
                 "personalize.method=\"ditto\"", "personalize.epochs=1")
    s, n = node.scenario, len(node.institution.train_texts)
    plan = dpsgd.plan(s.privacy, s.train, n, s.scenario.rounds, personal_epochs=1)
    shared_only = dpsgd.plan(s.privacy, s.train, n, s.scenario.rounds)
    assert plan.steps_per_round == shared_only.steps_per_round
    assert plan.personal_steps_per_round == round(1 / plan.sampling_rate) > 0
    # the noise is calibrated to every step on the records, the personal ones included
    assert plan.noise_multiplier > shared_only.noise_multiplier
    assert plan.epsilon_after(s.scenario.rounds * plan.all_steps_per_round) <= 4.0
    w = _start(node)
    mem = Memory()
    reply = run_training(node, Instruction(1, w), mem)
    m = reply.metrics
    assert m["dp-steps"] == mem.dp_steps == plan.all_steps_per_round
    assert m["dp-epsilon"] == pytest.approx(dp_sgd_epsilon(
        m["dp-noise-multiplier"], m["dp-sampling-rate"], m["dp-steps"], m["dp-delta"]),
        rel=0.01)
    assert set(mem.personal) == set(w) and _distance(mem.personal, w) > 0
    assert _distance(reply.arrays, mem.personal) > 0  # two models, one budget


def _summary(insts, personal=True):
    return {"final": {"institutions": {
        n: {"kind": "bank", "accuracy": a, "macro_f1": a - 0.1,
            **({"personal": {"accuracy": p, "macro_f1": p - 0.1}} if personal else {})}
        for n, (a, p) in insts.items()}}}


def test_the_gain_table_names_who_would_have_done_better_alone():
    run = _summary({"bank-1": (0.70, 0.80), "bank-2": (0.74, 0.76)})
    local = _summary({"bank-1": (0.60, None), "bank-2": (0.79, None)}, personal=False)
    g = personal_gains(run, local)
    assert g["institutions"]["bank-1"]["gain_accuracy"] == pytest.approx(0.20)
    assert g["institutions"]["bank-2"]["gain_accuracy"] == pytest.approx(-0.03)
    assert g["losers"] == ["bank-2"]
    text = gains_table(g)
    assert "1 of 2 institutions would have done better alone: bank-2 (worst: bank-2, " \
           "-3.0 points" in text
    better = personal_gains(_summary({"bank-1": (0.7, 0.8), "bank-2": (0.7, 0.8)}), local)
    assert "no institution does worse than training alone (least gain: bank-2, +1.0 points" \
        in gains_table(better)


def test_split_sends_the_body_and_keeps_its_own_output_layer(cache_dir):
    node = _silo(cache_dir, "personalize.method=\"split\"", "model.head_hidden=16")
    body = {k: v for k, v in _start(node).items() if not k.startswith("head.out.")}
    assert set(body) == {"head.hidden.weight", "head.hidden.bias"}
    mem = Memory()
    reply = run_training(node, Instruction(1, body), mem)
    assert set(reply.arrays) == set(body)  # the private layer never travels
    assert set(mem.personal) == {"head.out.weight", "head.out.bias"}
    first = {k: v.copy() for k, v in mem.personal.items()}
    run_training(node, Instruction(2, reply.arrays), mem)  # continues its own layer
    assert _distance(mem.personal, first) > 0
    # the institution's model is the shared body with its own layer, scored as both
    scored = run_evaluation(node, reply.arrays, personal=mem.personal)
    assert scored["accuracy"] == scored["personal-accuracy"]
    # a fresh private layer is seeded per institution: the same in every process
    again = Memory()
    run_training(node, Instruction(1, body), again)
    np.testing.assert_array_equal(again.personal["head.out.weight"],
                                  first["head.out.weight"])


@pytest.mark.parametrize("sets, message", [
    ((), "set 'model.head_hidden' > 0 or 'model.scope'"),
    (("model.head_hidden=8", "strategy.name=\"scaffold\"", "train.optimizer=\"sgd\""),
     "cannot be used with 'strategy.name' = 'scaffold'")])
def test_split_needs_something_to_share_and_no_scaffold(sets, message):
    with pytest.raises(ConfigError, match=message):
        config.load(SMOKE, ["personalize.method=\"split\"", *sets])


def test_an_institution_not_sampled_for_rounds_keeps_its_memory(tmp_path, cache_dir):
    from clients.state import personal_model, recall, remember

    node = _silo(cache_dir, "personalize.method=\"ditto\"")
    own = {"head.out.weight": np.arange(4, dtype=np.float32).reshape(2, 2)}
    state = RecordDict()
    remember(state, tmp_path, Memory(personal=own, round=2))
    for got in (recall(state, tmp_path, 5, node),  # not sampled in rounds 3 and 4
                recall(RecordDict(), tmp_path, 5, node)):  # resumed: from its own disk
        assert got.round == 2
        np.testing.assert_array_equal(got.personal["head.out.weight"],
                                      own["head.out.weight"])
    np.testing.assert_array_equal(personal_model(RecordDict(), tmp_path, 4)[
        "head.out.weight"], own["head.out.weight"])
    assert recall(RecordDict(), tmp_path / "never", 5, node).empty()  # never trained
