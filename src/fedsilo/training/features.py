"""Where the head's inputs come from: the frozen backbone, live or through a private cache.

With ``model.cache = true`` each institution runs its texts through the frozen backbone once;
later rounds and epochs train from the stored pooled features. The cache lives in the
process's memory (bounded, least recently used out first) and on the institution's own
disk under ``<simulation.cache_dir>/features/<institution>/``. Its key holds everything that
changes the features: backbone identity, max length, pooling, scope and the data itself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fedsilo.models import encode


class FeatureSource(Protocol):
    def __len__(self) -> int: ...

    def rows(self, idx: np.ndarray) -> torch.Tensor: ...


class CachedFeatures:
    """Features computed once, indexed per batch."""

    def __init__(self, features: torch.Tensor):
        self.features = features

    def __len__(self) -> int:
        return self.features.shape[0]

    def rows(self, idx: np.ndarray) -> torch.Tensor:
        return self.features[torch.as_tensor(idx)]


class LiveFeatures:
    """Features computed through the backbone for every batch (no cache)."""

    def __init__(self, texts, tokenizer, backbone, max_length: int, pooling: str,
                 device: torch.device):
        self.texts, self.tokenizer, self.backbone = texts, tokenizer, backbone
        self.max_length, self.pooling, self.device = max_length, pooling, device

    def __len__(self) -> int:
        return len(self.texts)

    def rows(self, idx: np.ndarray) -> torch.Tensor:
        batch = [self.texts[i] for i in idx]
        return encode(batch, self.tokenizer, self.backbone, self.max_length, self.pooling,
                      self.device, batch_size=max(1, len(batch)))


def cache_key(backbone_identity: str, max_length: int, pooling: str, scope: str,
              data_fingerprint: str, split: str) -> str:
    parts = [backbone_identity, str(max_length), pooling, scope, data_fingerprint, split]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


class FeatureCache:
    """A bounded in-memory LRU in front of an optional on-disk store."""

    def __init__(self, max_bytes: int = 512 * 2**20, disk_dir: Path | None = None):
        self.max_bytes = max_bytes
        self.disk_dir = disk_dir
        self._mem: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def _bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._mem.values())

    def _put(self, key: str, value: torch.Tensor) -> None:
        self._mem[key] = value
        self._mem.move_to_end(key)
        while len(self._mem) > 1 and self._bytes() > self.max_bytes:
            self._mem.popitem(last=False)

    def _disk_path(self, owner: str, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / owner / f"{key}.npy"

    def get(self, owner: str, key: str, compute) -> torch.Tensor:
        """The features under ``key``, computing and storing them on a miss."""
        if key in self._mem:
            self._mem.move_to_end(key)
            self.hits += 1
            return self._mem[key]
        path = self._disk_path(owner, key)
        if path is not None and path.is_file():
            value = torch.from_numpy(np.load(path))
            self.hits += 1
        else:
            self.misses += 1
            value = compute()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
                with os.fdopen(fd, "wb") as fh:
                    np.save(fh, value.numpy())
                os.replace(tmp, path)
        self._put(key, value)
        return value
