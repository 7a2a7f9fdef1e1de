"""Local training on every scope: the cache gives the same updates as the live path, its
key changes with everything that changes the cached outputs, only the scope's arrays
travel, and losses fall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsilo import config
from fedsilo.config import ConfigError
from fedsilo.node import silo
from fedsilo.training import evaluate, local_train
from fedsilo.training.features import FeatureCache, cache_key

SMOKE = "configs/smoke.toml"


@pytest.fixture()
def scenario(cache_dir):
    return config.load(SMOKE, [f"simulation.cache_dir={cache_dir}"])


def _train(s, pid=1, seed=5):
    labels, inst = silo.resolve_institution(s, {"partition-id": pid})
    rt = silo.runtime_for(s)
    model = rt.model(s.model, len(labels), seed=1)
    start = model.get_arrays()
    model.set_arrays(start)  # every round starts from the received arrays
    stats = local_train(model, silo.features(s, rt, model, inst, "train"), inst.train_labels,
                        s.train, seed=seed, device=torch.device("cpu"))
    after = model.get_arrays()
    model.set_arrays(start)  # leave the per-process model as it was for the next test
    return start, after, stats


@pytest.mark.parametrize("scope", ["head", "top-k"])
def test_cached_and_uncached_paths_give_the_same_update(scenario, scope):
    # plain SGD: an update is lr x gradient, so float noise stays float noise (Adam divides
    # by the root of tiny second moments and can blow a 1e-9 gradient up to a full step)
    s = scenario.replace(**{"model.scope": scope, "model.top_k": 1,
                            "train.optimizer": "sgd", "train.lr": 0.1})
    _, cached, s1 = _train(s)
    _, live, s2 = _train(s.replace(**{"model.cache": False}))
    assert s1.steps == s2.steps > 0
    assert set(cached.keys()) == set(live.keys())
    for k in cached.keys():
        np.testing.assert_allclose(cached[k], live[k], rtol=1e-4, atol=2e-5)
    assert s1.loss == pytest.approx(s2.loss, rel=1e-4)


def test_only_the_scope_travels(scenario):
    sizes = {}
    for scope in ("head", "top-k", "lora", "full"):
        s = scenario.replace(**{"model.scope": scope, "model.top_k": 1})
        start, after, _ = _train(s)
        names = set(start.keys())
        sizes[scope] = sum(v.size for v in start.values())
        if scope == "head":
            assert names == {"head.out.weight", "head.out.bias"}
        if scope == "top-k":  # the last of the tiny BERT's 2 layers, and the head
            assert all(n.startswith(("head.", "backbone.encoder.layer.1.")) for n in names)
        if scope == "lora":
            assert all(n.startswith("head.") or "lora_" in n for n in names)
        # something trained in every scope
        assert any(not np.array_equal(start[k], after[k]) for k in names)
    assert sizes["head"] == 64 * 8 + 8
    assert sizes["head"] < sizes["lora"] < sizes["top-k"] < sizes["full"]
    # LoRA r=8 on query and value of 2 layers: 2 layers * 2 modules * (64*8 + 8*64)
    assert sizes["lora"] - sizes["head"] == 2 * 2 * (64 * 8 + 8 * 64)


def test_top_k_larger_than_the_backbone_is_a_config_error(scenario):
    s = scenario.replace(**{"model.scope": "top-k", "model.top_k": 5})
    with pytest.raises(ConfigError, match=r"^model.top_k: 5 is more than the backbone's 2"):
        silo.runtime_for(s).model(s.model, 8)


def test_unknown_lora_target_is_a_config_error(scenario):
    s = scenario.replace(**{"model.scope": "lora", "model.lora_targets": "query,qkv_proj"})
    with pytest.raises(ConfigError, match="model.lora_targets: no module named 'qkv_proj'"):
        silo.runtime_for(s).model(s.model, 8)


def test_cache_key_changes_with_everything_that_changes_outputs(scenario):
    _, inst = silo.resolve_institution(scenario, {"partition-id": 0})
    base = dict(backbone_identity="dir:abc", max_length=32, pooling="mean", scope="head",
                data_fingerprint=inst.fingerprint(), split="train")
    k0 = cache_key(**base)
    for change in ({"max_length": 64}, {"backbone_identity": "dir:def"}, {"pooling": "cls"},
                   {"split": "test"}, {"data_fingerprint": "0" * 16}, {"scope": "top-2"}):
        assert cache_key(**{**base, **change}) != k0, change
    assert cache_key(**base) == k0


def test_a_new_max_length_or_backbone_is_encoded_again(scenario):
    labels, inst = silo.resolve_institution(scenario, {"partition-id": 0})
    rt = silo.runtime_for(scenario)
    model = rt.model(scenario.model, len(labels))
    silo.features(scenario, rt, model, inst, "train")
    misses = rt.cache.misses
    silo.features(scenario, rt, model, inst, "train")
    assert rt.cache.misses == misses  # hit
    shorter = scenario.replace(**{"model.max_length": 8})  # truncates most texts
    m8 = rt.model(shorter.model, len(labels))
    f8 = silo.features(shorter, rt, m8, inst, "train")
    assert rt.cache.misses == misses + 1
    f32 = silo.features(scenario, rt, model, inst, "train")
    assert not torch.allclose(f32.stored["pooled"], f8.stored["pooled"])
    # another backbone (MiniLM) has another identity and width: never the tiny cache
    mini = scenario.replace(**{"model.backbone": "minilm"})
    rt_mini = silo.runtime_for(mini)
    assert rt_mini.ref.identity != rt.ref.identity
    feats = silo.features(mini, rt_mini, rt_mini.model(mini.model, 8), inst, "train")
    assert feats.stored["pooled"].shape[1] == 384


def test_top_k_cache_holds_token_states_and_mask(scenario):
    s = scenario.replace(**{"model.scope": "top-k", "model.top_k": 1})
    labels, inst = silo.resolve_institution(s, {"partition-id": 0})
    rt = silo.runtime_for(s)
    feats = silo.features(s, rt, rt.model(s.model, 8), inst, "train")
    n = len(inst.train_texts)
    assert feats.stored["hidden"].shape[0] == n and feats.stored["hidden"].shape[2] == 64
    assert feats.stored["mask"].shape == feats.stored["hidden"].shape[:2]
    batch = feats.rows(np.arange(4))
    assert batch.hidden.shape[1] == int(batch.mask.sum(1).max())  # padding columns dropped


def test_disk_cache_survives_a_new_process_cache(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"pooled": torch.arange(6, dtype=torch.float32).reshape(3, 2)}

    FeatureCache(disk_dir=tmp_path).get("bank-1", "k", compute)
    again = FeatureCache(disk_dir=tmp_path).get("bank-1", "k", compute)
    assert len(calls) == 1 and torch.equal(again["pooled"], compute()["pooled"])
    assert (tmp_path / "bank-1" / "k.npz").is_file()


def test_memory_cache_is_bounded():
    cache = FeatureCache(max_bytes=1000)
    for i in range(10):
        cache.get("x", f"k{i}", lambda: {"pooled": torch.zeros(100)})  # 400 bytes each
    assert cache.nbytes() <= 1000 and len(cache) == 2


def test_local_training_lowers_the_loss_and_beats_chance(scenario):
    s = scenario.replace(**{"train.local_epochs": 30})
    labels, inst = silo.resolve_institution(s, {"partition-id": 2})
    rt = silo.runtime_for(s)
    _, after, stats = _train(s, pid=2)
    assert stats.loss < 0.8 * stats.first_loss
    model = rt.model(s.model, len(labels), seed=1)
    model.set_arrays(after)
    train_eval = evaluate(model, silo.features(s, rt, model, inst, "train"),
                          inst.train_labels, 8, torch.device("cpu"))
    assert train_eval.accuracy > 2 / 8  # chance is 1/8
    assert train_eval.confusion.sum() == len(inst.train_texts)
