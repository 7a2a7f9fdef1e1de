"""Backbone + head with a trainable scope, and the frozen prefix that can be cached.

Scopes (``model.scope``):
- ``head``: the backbone is frozen; only the head trains and travels. The frozen prefix is
  the whole backbone and its cached output is one pooled vector per text.
- ``top-k``: the last ``model.top_k`` encoder layers and the head train and travel; the
  frozen prefix (embeddings and the layers below) is cached as token states + mask.
- ``lora``: LoRA adapters (PEFT) on ``model.lora_targets`` of every layer, plus the head;
  only adapters and head travel. Nothing is frozen below the adapters: no cache.
- ``full``: every weight trains and travels (the costly reference). No cache.

Every scope presents the same small interface to the training loop: ``logits(batch)`` for
a batch of either cached prefix outputs or raw texts, ``get_arrays``/``set_arrays`` for the
trainable part only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsilo.arrays import Arrays
from fedsilo.config import ConfigError, ModelSection
from fedsilo.models import Head


@dataclass
class Batch:
    """What the model reads for a batch: texts, or the cached frozen prefix's outputs."""

    texts: list[str] | None = None
    pooled: torch.Tensor | None = None  # scope head: (B, H)
    hidden: torch.Tensor | None = None  # scope top-k: (B, T, H)
    mask: torch.Tensor | None = None  # scope top-k: (B, T)


class ScopedModel(nn.Module):
    """``backbone`` may be a function returning (tokenizer, backbone) for scope ``head``,
    whose frozen backbone is only needed to compute features: it is then loaded the first
    time a text has to be encoded, never when every feature comes from the cache."""

    def __init__(self, backbone, tokenizer, m: ModelSection, num_labels: int,
                 seed: int, hidden_size: int | None = None):
        super().__init__()
        self.scope, self.pooling, self.max_length = m.scope, m.pooling, m.max_length
        self._tokenizer = tokenizer
        self._load = None
        if callable(backbone) and not isinstance(backbone, nn.Module):
            if m.scope != "head" or hidden_size is None:
                raise ValueError("a backbone loaded on demand needs scope 'head' and its "
                                 "hidden size")
            self._load, self._m, backbone = backbone, m, None
        hidden = backbone.config.hidden_size if backbone is not None else hidden_size
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.head = Head(hidden, num_labels, m.head_hidden, m.dropout)
            if backbone is not None:
                self.backbone, self.n_frozen = _apply_scope(backbone, m)
        finally:
            torch.random.set_rng_state(gen_state)

    @property
    def backbone_loaded(self) -> bool:
        return self._load is None

    @property
    def tokenizer(self):
        self._ensure_backbone()
        return self._tokenizer

    def _ensure_backbone(self) -> None:
        """Load a backbone given as a function (scope ``head``: frozen, in eval mode)."""
        if self._load is None:
            return
        self._tokenizer, backbone = self._load()
        device = next(self.head.parameters()).device
        self.backbone, self.n_frozen = _apply_scope(backbone, self._m)
        self.backbone.to(device).eval()
        self._load = None

    # -- the shared part ---------------------------------------------------------------
    def trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def get_arrays(self) -> Arrays:
        """A copy of the trainable part (what travels), by parameter name."""
        return {n: p.detach().cpu().numpy().copy() for n, p in self.trainable().items()}

    @torch.no_grad()
    def set_arrays(self, arrays: Arrays) -> None:
        params = self.trainable()
        if set(arrays.keys()) != set(params):
            extra = sorted(set(arrays.keys()) - set(params))[:3]
            missing = sorted(set(params) - set(arrays.keys()))[:3]
            raise ValueError(f"received arrays do not match scope '{self.scope}': "
                             f"unexpected {extra}, missing {missing}")
        for name, p in params.items():
            value = torch.from_numpy(np.array(arrays[name], copy=True))
            if value.shape != p.shape:
                raise ValueError(f"array '{name}' has shape {tuple(value.shape)}, expected "
                                 f"{tuple(p.shape)}")
            p.copy_(value.to(p.device))

    # -- modes -------------------------------------------------------------------------
    def train_mode(self) -> None:
        """Dropout where weights train; the frozen prefix stays deterministic."""
        self.eval()
        self.head.train()
        if self.scope in ("lora", "full"):
            self.backbone.train()
        elif self.scope == "top-k":
            for layer in self._layers()[self.n_frozen:]:
                layer.train()

    # -- the frozen prefix ---------------------------------------------------------------
    @property
    def cacheable(self) -> bool:
        return self.scope in ("head", "top-k")

    def _bert(self) -> nn.Module:
        return self.backbone.base_model.model if self.scope == "lora" else self.backbone

    def _layers(self) -> nn.ModuleList:
        return self._bert().encoder.layer

    def _tokenize(self, texts: list[str]):
        device = next(self.parameters()).device
        return self.tokenizer(list(texts), padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt").to(device)

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)

    def _run_layers(self, hidden: torch.Tensor, mask: torch.Tensor, layers) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        mask4 = create_bidirectional_mask(config=self._bert().config, inputs_embeds=hidden,
                                          attention_mask=mask)
        for layer in layers:
            hidden = layer(hidden, mask4)
        return hidden

    @torch.no_grad()
    def prefix(self, texts: list[str]) -> Batch:
        """The frozen prefix's outputs for ``texts`` (what the cache stores)."""
        tok = self._tokenize(texts)
        if self.scope == "head":
            out = self.backbone(input_ids=tok["input_ids"],
                                attention_mask=tok["attention_mask"]).last_hidden_state
            return Batch(pooled=self._pool(out, tok["attention_mask"]).float().cpu())
        bert = self._bert()
        hidden = bert.embeddings(input_ids=tok["input_ids"])
        hidden = self._run_layers(hidden, tok["attention_mask"],
                                  self._layers()[:self.n_frozen])
        return Batch(hidden=hidden.float().cpu(), mask=tok["attention_mask"].cpu())

    def forward(self, batch: Batch) -> torch.Tensor:
        """The logits (so that hooks on the module, such as DP-SGD's, see the pass)."""
        return self.logits(batch)

    def logits(self, batch: Batch) -> torch.Tensor:
        device = next(self.parameters()).device
        if batch.texts is not None and self.scope in ("lora", "full"):
            tok = self._tokenize(batch.texts)
            out = self.backbone(input_ids=tok["input_ids"],
                                attention_mask=tok["attention_mask"]).last_hidden_state
            return self.head(self._pool(out, tok["attention_mask"]))
        if batch.texts is not None:  # head / top-k without the cache
            batch = self.prefix(batch.texts)
        if batch.pooled is not None:
            return self.head(batch.pooled.to(device))
        mask = batch.mask.to(device)
        hidden = self._run_layers(batch.hidden.to(device), mask,
                                  self._layers()[self.n_frozen:])
        return self.head(self._pool(hidden, mask))


def _apply_scope(backbone: nn.Module, m: ModelSection) -> tuple[nn.Module, int]:
    """Freeze and wrap ``backbone`` for scope ``m.scope``; return it and the frozen depth."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if m.scope in ("top-k", "lora") and layers is None:
        raise ConfigError(f"model.scope: '{m.scope}' needs a BERT-style encoder "
                          f"(encoder.layer); this backbone has none")
    depth = len(layers) if layers is not None else 0
    if m.scope == "head":
        return backbone, depth
    if m.scope == "full":
        for p in backbone.parameters():
            p.requires_grad_(True)
        pooler = getattr(backbone, "pooler", None)
        if pooler is not None:  # unused: the head reads the pooled token states
            for p in pooler.parameters():
                p.requires_grad_(False)
        return backbone, 0
    if m.scope == "top-k":
        if m.top_k > depth:
            raise ConfigError(f"model.top_k: {m.top_k} is more than the backbone's "
                              f"{depth} layers")
        for layer in layers[depth - m.top_k:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        return backbone, depth - m.top_k
    from peft import LoraConfig, get_peft_model

    targets = [t.strip() for t in m.lora_targets.split(",") if t.strip()]
    names = {n.rsplit(".", 1)[-1] for n, _ in backbone.named_modules()}
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise ConfigError(f"model.lora_targets: no module named {unknown[0]!r} in the "
                          f"backbone")
    cfg = LoraConfig(r=m.lora_r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                     target_modules=targets, bias="none")
    return get_peft_model(backbone, cfg), depth
