"""Local training on the frozen backbone: the cache gives the same updates as the live path,
its key changes with everything that changes the features, and losses fall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsilo import config, silo
from fedsilo.models import build_head, head_to_arrays
from fedsilo.training import evaluate, local_train
from fedsilo.training.features import CachedFeatures, FeatureCache, cache_key

SMOKE = "configs/smoke.toml"


@pytest.fixture()
def scenario(cache_dir):
    return config.load(SMOKE, [f"simulation.cache_dir={cache_dir}"])


def _train_once(s, inst, rt):
    fed, _ = silo.resolve_institution(s, {"partition-id": 0})
    head = build_head(s.model, rt.ref.hidden_size, len(fed.labels), seed=1)
    stats = local_train(head, silo.features(s, rt, inst, "train"), inst.train_labels,
                        s.train, seed=5, device=torch.device("cpu"))
    return head_to_arrays(head), stats


def test_cached_and_uncached_paths_give_the_same_update(scenario):
    _, inst = silo.resolve_institution(scenario, {"partition-id": 1})
    rt = silo.runtime_for(scenario)
    cached, s1 = _train_once(scenario, inst, rt)
    live_s = scenario.replace(**{"model.cache": False})
    live, s2 = _train_once(live_s, inst, silo.runtime_for(live_s))
    assert s1.steps == s2.steps > 0
    for k in cached.keys():
        np.testing.assert_allclose(cached[k].numpy(), live[k].numpy(), rtol=1e-4, atol=1e-5)
    assert s1.loss == pytest.approx(s2.loss, rel=1e-4)


def test_cache_key_changes_with_everything_that_changes_features(scenario, cache_dir):
    _, inst = silo.resolve_institution(scenario, {"partition-id": 0})
    base = dict(backbone_identity="dir:abc", max_length=32, pooling="mean", scope="head",
                data_fingerprint=inst.fingerprint(), split="train")
    k0 = cache_key(**base)
    for change in ({"max_length": 64}, {"backbone_identity": "dir:def"}, {"pooling": "cls"},
                   {"split": "test"}, {"data_fingerprint": "0" * 16}):
        assert cache_key(**{**base, **change}) != k0, change
    assert cache_key(**base) == k0


def test_a_new_max_length_or_backbone_is_encoded_again(scenario, cache_dir):
    _, inst = silo.resolve_institution(scenario, {"partition-id": 0})
    rt = silo.runtime_for(scenario)
    silo.features(scenario, rt, inst, "train")
    misses = rt.cache.misses
    silo.features(scenario, rt, inst, "train")
    assert rt.cache.misses == misses  # hit
    shorter = scenario.replace(**{"model.max_length": 8})  # truncates most texts
    f8 = silo.features(shorter, rt, inst, "train")
    assert rt.cache.misses == misses + 1
    f32 = silo.features(scenario, rt, inst, "train")
    assert not torch.allclose(f32.features, f8.features)
    # another backbone (MiniLM) has another identity and hidden size: never the tiny cache
    mini = scenario.replace(**{"model.backbone": "minilm"})
    rt_mini = silo.runtime_for(mini)
    assert rt_mini.ref.identity != rt.ref.identity
    assert silo.features(mini, rt_mini, inst, "train").features.shape[1] == 384


def test_disk_cache_survives_a_new_process_cache(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6, dtype=torch.float32).reshape(3, 2)

    FeatureCache(disk_dir=tmp_path).get("bank-1", "k", compute)
    again = FeatureCache(disk_dir=tmp_path).get("bank-1", "k", compute)
    assert len(calls) == 1 and torch.equal(again, compute())
    assert (tmp_path / "bank-1" / "k.npy").is_file()


def test_memory_cache_is_bounded():
    cache = FeatureCache(max_bytes=1000)
    for i in range(10):
        cache.get("x", f"k{i}", lambda: torch.zeros(100))  # 400 bytes each
    assert cache._bytes() <= 1000 and len(cache._mem) == 2


def test_local_training_lowers_the_loss_and_beats_chance(scenario):
    _, inst = silo.resolve_institution(scenario, {"partition-id": 2})
    rt = silo.runtime_for(scenario)
    s = scenario.replace(**{"train.local_epochs": 30})
    arrays, stats = _train_once(s, inst, rt)
    assert stats.loss < 0.8 * stats.first_loss
    head = build_head(s.model, rt.ref.hidden_size, 8, seed=1)
    from fedsilo.models import arrays_to_head

    arrays_to_head(arrays, head)
    train_eval = evaluate(head, CachedFeatures(silo.features(s, rt, inst, "train").features),
                          inst.train_labels, 8, torch.device("cpu"))
    assert train_eval.accuracy > 2 / 8  # chance is 1/8
    assert train_eval.confusion.sum() == len(inst.train_texts)
