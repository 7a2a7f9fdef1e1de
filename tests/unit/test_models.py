"""The head, what travels, and the locally built tiny BERT (never downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsilo.config import ConfigError, ModelSection
from fedsilo.models import arrays_nbytes, arrays_to_head, build_head, encode, head_to_arrays
from fedsilo.models import backbone as bb


def test_head_round_trips_through_arrays_exactly():
    head = build_head(ModelSection(head_hidden=16), in_dim=12, num_labels=5, seed=3)
    arrays = head_to_arrays(head)
    assert set(arrays.keys()) == {"hidden.weight", "hidden.bias", "out.weight", "out.bias"}
    other = build_head(ModelSection(head_hidden=16), in_dim=12, num_labels=5, seed=99)
    arrays_to_head(arrays, other)
    for (k1, v1), (k2, v2) in zip(head.state_dict().items(), other.state_dict().items(),
                                  strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    assert arrays_nbytes(arrays) == 4 * (12 * 16 + 16 + 16 * 5 + 5)


def test_same_seed_same_head_and_global_rng_untouched():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = build_head(ModelSection(), 8, 3, seed=1)
    after = torch.rand(1)
    b = build_head(ModelSection(), 8, 3, seed=1)
    assert torch.equal(a.out.weight, b.out.weight)
    assert torch.equal(before, after)


def test_loading_arrays_of_the_wrong_shape_fails():
    head = build_head(ModelSection(), 8, 3, seed=1)
    with pytest.raises(RuntimeError):
        arrays_to_head(head_to_arrays(build_head(ModelSection(), 8, 4, seed=1)), head)


def test_tiny_bert_is_built_locally_and_encodes(cache_dir):
    ref = bb.resolve("tiny", str(cache_dir))
    assert ref.hidden_size == 64 and (cache_dir / "tiny-bert-v1" / "tokenizer.json").is_file()
    tok, model = bb.load(ref.location)
    feats = encode(["my card was stolen", "I need an appointment with Dr. Kim"], tok, model,
                   32, "mean", torch.device("cpu"))
    assert feats.shape == (2, 64) and torch.isfinite(feats).all()
    assert not torch.allclose(feats[0], feats[1])
    # the WordPiece vocabulary knows the domain: few unknown tokens
    ids = tok("please freeze my debit card")["input_ids"]
    assert tok.unk_token_id not in ids
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


def test_mean_pooling_ignores_padding(cache_dir):
    ref = bb.resolve("tiny", str(cache_dir))
    tok, model = bb.load(ref.location)
    alone = encode(["short text"], tok, model, 32, "mean", torch.device("cpu"))
    padded = encode(["short text", "a much longer text that forces padding of the first"],
                    tok, model, 32, "mean", torch.device("cpu"))
    np.testing.assert_allclose(alone[0].numpy(), padded[0].numpy(), atol=1e-5)
