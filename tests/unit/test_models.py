"""The scoped model, what travels, and the locally built tiny BERT (never downloaded)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedsilo.arrays import nbytes, to_record
from fedsilo.config import ConfigError, ModelSection
from fedsilo.models import backbone as bb
from fedsilo.models.scoped import Batch, ScopedModel


@pytest.fixture(scope="module")
def tiny(cache_dir):
    ref = bb.resolve("tiny", str(cache_dir))
    return ref, *bb.load(ref.location)


def _model(tiny, seed=3, **m):
    _, tok, backbone = tiny
    return ScopedModel(copy.deepcopy(backbone), tok, ModelSection(**m), num_labels=5,
                       seed=seed)


def test_arrays_round_trip_exactly(tiny):
    a = _model(tiny, head_hidden=16)
    arrays = a.get_arrays()
    assert set(arrays.keys()) == {"head.hidden.weight", "head.hidden.bias",
                                  "head.out.weight", "head.out.bias"}
    b = _model(tiny, seed=99, head_hidden=16)
    assert not torch.equal(a.head.out.weight, b.head.out.weight)
    b.set_arrays(arrays)
    for k, v in a.trainable().items():
        assert torch.equal(v, b.trainable()[k])
    assert nbytes(to_record(arrays)) == 4 * (64 * 16 + 16 + 16 * 5 + 5)


def test_same_seed_same_init_and_global_rng_untouched(tiny):
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = _model(tiny, seed=1, scope="lora")
    after = torch.rand(1)
    b = _model(tiny, seed=1, scope="lora")
    for (k, v), w in zip(a.get_arrays().items(), b.get_arrays().values(), strict=True):
        np.testing.assert_array_equal(v, w, err_msg=k)
    assert torch.equal(before, after)


def test_arrays_of_another_scope_or_shape_are_refused(tiny):
    head = _model(tiny)
    with pytest.raises(ValueError, match="do not match scope 'head'"):
        head.set_arrays(_model(tiny, scope="top-k", top_k=1).get_arrays())
    other = ScopedModel(copy.deepcopy(tiny[2]), tiny[1], ModelSection(), 7, seed=0)
    with pytest.raises(ValueError, match="has shape"):
        head.set_arrays(other.get_arrays())


def test_tiny_bert_is_built_locally_and_encodes(tiny, cache_dir):
    ref, tok, _ = tiny
    assert ref.hidden_size == 64
    assert (cache_dir / "tiny-bert-v2" / "tokenizer.json").is_file()
    pooled = _model(tiny).prefix(["my card was stolen", "I need an appointment"]).pooled
    assert pooled.shape == (2, 64) and torch.isfinite(pooled).all()
    assert not torch.allclose(pooled[0], pooled[1])
    # the WordPiece vocabulary knows the domain: no unknown tokens here
    assert tok.unk_token_id not in tok("please freeze my debit card")["input_ids"]
    # built once: a second resolve reuses the directory and identity
    assert bb.resolve("tiny", str(cache_dir)).identity == ref.identity


def test_minilm_resolves_offline_to_a_bert():
    ref = bb.resolve("minilm", "unused")
    assert ref.hidden_size == 384 and ref.identity.startswith("dir:")


def test_bad_backbones_are_config_errors_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"^model.backbone: directory './nope' does not"):
        bb.resolve("./nope", str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        bb.resolve(str(tmp_path / "empty"), str(tmp_path))


def test_an_unreachable_hub_id_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        bb.resolve("some-org/some-bert-that-is-not-cached", "unused")
    msg = str(err.value)
    assert msg.startswith("model.backbone: cannot load 'some-org/some-bert-that-is-not-cached'")
    assert "\n" not in msg


def test_mean_pooling_ignores_padding(tiny):
    m = _model(tiny)
    alone = m.prefix(["short text"]).pooled
    padded = m.prefix(["short text", "a much longer text that forces padding of the first"])
    np.testing.assert_allclose(alone[0].numpy(), padded.pooled[0].numpy(), atol=1e-5)


def test_server_initial_head_equals_the_scoped_models_head(tiny, cache_dir):
    """The server skips loading the backbone for scope 'head'; the arrays must not change."""
    from fedsilo import config
    from server.app import initial_arrays

    s = config.load("configs/smoke.toml", [f"simulation.cache_dir={cache_dir}"])
    fast = initial_arrays(s, 8)
    full = ScopedModel(copy.deepcopy(tiny[2]), tiny[1], s.model, 8, seed=s.scenario.seed)
    ref = full.get_arrays()
    assert sorted(fast.keys()) == sorted(ref.keys())
    for k in ref.keys():
        np.testing.assert_array_equal(fast[k].numpy(), ref[k])


def test_a_head_model_loads_its_frozen_backbone_only_when_a_text_is_encoded(tiny):
    ref, tok, backbone = tiny
    calls = []

    def load():
        calls.append(1)
        return tok, copy.deepcopy(backbone)

    lazy = ScopedModel(load, None, ModelSection(), num_labels=5, seed=3,
                       hidden_size=ref.hidden_size)
    eager = _model(tiny)
    for k, v in eager.get_arrays().items():  # same head without any backbone
        np.testing.assert_array_equal(v, lazy.get_arrays()[k], err_msg=k)
    lazy.train_mode()  # the head trains; nothing else is touched
    lazy.eval()
    pooled = Batch(pooled=torch.randn(3, ref.hidden_size))
    torch.testing.assert_close(lazy.logits(pooled), eager.eval().logits(pooled))
    assert calls == [] and not lazy.backbone_loaded
    texts = ["my card was stolen", "I need an appointment"]
    torch.testing.assert_close(lazy.prefix(texts).pooled, eager.prefix(texts).pooled)
    assert calls == [1] and lazy.backbone_loaded
    assert not any(p.requires_grad for p in lazy.backbone.parameters())
    lazy.prefix(texts)
    assert calls == [1]  # once
    with pytest.raises(ValueError, match="scope 'head'"):
        ScopedModel(load, None, ModelSection(scope="lora"), 5, seed=0, hidden_size=64)
