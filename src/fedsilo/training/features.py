"""Where the model's inputs come from: raw texts, or the frozen prefix's cached outputs.

With ``model.cache = true`` and a scope whose bottom is frozen (``head``, ``top-k``), each
institution runs its texts through the frozen prefix once; later rounds and epochs train
from the stored outputs. The cache lives in the process's memory (bounded by
``model.cache_max_mb``, least recently used out first) and on the institution's own disk
under ``<simulation.cache_dir>/features/<institution>/``. Its key holds everything that
changes the outputs: backbone identity, max length, pooling, scope (and k) and the data.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fedsilo.files import save_arrays
from fedsilo.models.scoped import Batch


class FeatureSource(Protocol):
    def __len__(self) -> int: ...

    def rows(self, idx: np.ndarray) -> Batch: ...


class CachedFeatures:
    """Frozen-prefix outputs computed once, sliced per batch."""

    def __init__(self, stored: dict[str, torch.Tensor]):
        self.stored = stored

    def __len__(self) -> int:
        return next(iter(self.stored.values())).shape[0]

    def rows(self, idx: np.ndarray) -> Batch:
        i = torch.as_tensor(idx)
        if "pooled" in self.stored:
            return Batch(pooled=self.stored["pooled"][i])
        mask = self.stored["mask"][i]
        width = int(mask.sum(1).max())  # drop columns that are padding for the whole batch
        return Batch(hidden=self.stored["hidden"][i, :width], mask=mask[:, :width])


class LiveFeatures:
    """Texts handed to the model as they are: the backbone runs on every batch."""

    def __init__(self, texts):
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def rows(self, idx: np.ndarray) -> Batch:
        return Batch(texts=[self.texts[i] for i in idx])


class Subset:
    """Some rows of another source (a shadow model's random half of the records)."""

    def __init__(self, source: FeatureSource, idx: np.ndarray):
        self.source, self.idx = source, np.asarray(idx, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.idx)

    def rows(self, idx: np.ndarray) -> Batch:
        return self.source.rows(self.idx[np.asarray(idx, dtype=np.int64)])


def compute_prefix(model, texts, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Run ``model``'s frozen prefix over every text once (the cache's payload).

    Texts go through in order of length, so a batch pads to similar lengths and little
    compute is spent on padding; rows come back in the original order.
    """
    lengths = [len(ids) for ids in model.tokenizer(list(texts), truncation=True,
                                                   max_length=model.max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    back = torch.as_tensor(np.argsort(order))
    parts = [model.prefix([texts[i] for i in order[s:s + batch_size]])
             for s in range(0, len(texts), batch_size)]
    if parts[0].pooled is not None:
        return {"pooled": torch.cat([p.pooled for p in parts])[back]}
    width = max(p.mask.shape[1] for p in parts)

    def pad(t: torch.Tensor) -> torch.Tensor:
        extra = width - t.shape[1]
        if extra == 0:
            return t
        shape = (t.shape[0], extra, *t.shape[2:])
        return torch.cat([t, torch.zeros(shape, dtype=t.dtype)], dim=1)

    return {"hidden": torch.cat([pad(p.hidden) for p in parts])[back],
            "mask": torch.cat([pad(p.mask) for p in parts])[back]}


def cache_key(backbone_identity: str, max_length: int, pooling: str, scope: str,
              data_fingerprint: str, split: str) -> str:
    parts = [backbone_identity, str(max_length), pooling, scope, data_fingerprint, split]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _nbytes(value: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in value.values())


class FeatureCache:
    """A bounded in-memory LRU in front of an optional on-disk store."""

    def __init__(self, max_bytes: int = 1024 * 2**20, disk_dir: Path | None = None):
        self.max_bytes = max_bytes
        self.disk_dir = disk_dir
        self._mem: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.hits = self.misses = 0

    def nbytes(self) -> int:
        return sum(_nbytes(v) for v in self._mem.values())

    def __len__(self) -> int:
        return len(self._mem)

    def _put(self, key: str, value: dict[str, torch.Tensor]) -> None:
        self._mem[key] = value
        self._mem.move_to_end(key)
        while len(self._mem) > 1 and self.nbytes() > self.max_bytes:
            self._mem.popitem(last=False)

    def get(self, owner: str, key: str, compute) -> dict[str, torch.Tensor]:
        """The payload under ``key``, computing and storing it on a miss."""
        if key in self._mem:
            self._mem.move_to_end(key)
            self.hits += 1
            return self._mem[key]
        path = None if self.disk_dir is None else self.disk_dir / owner / f"{key}.npz"
        value = _load(path) if path is not None and path.is_file() else None
        if value is not None:
            self.hits += 1
        else:
            self.misses += 1
            value = compute()
            if path is not None:
                _save(path, value)
        self._put(key, value)
        return value


CHECKSUM = "__sha256__"


def _digest(arrays: dict[str, np.ndarray]) -> np.ndarray:
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _save(path: Path, value: dict[str, torch.Tensor]) -> None:
    """Write the payload with its checksum, atomically."""
    arrays = {k: v.numpy() for k, v in value.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_arrays(path, {**arrays, CHECKSUM: _digest(arrays)})


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    """The payload on disk, or None (with a warning) when the file is damaged: cut short,
    not an npz, or its checksum does not match; it is then encoded again."""
    from fedsilo.console import warn

    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != CHECKSUM}
            stored = z[CHECKSUM] if CHECKSUM in z.files else None
    except Exception as exc:  # noqa: BLE001 - any unreadable file: encode again
        why = f"unreadable ({type(exc).__name__})"
    else:
        if stored is not None and np.array_equal(stored, _digest(arrays)):
            return {k: torch.from_numpy(v) for k, v in arrays.items()}
        why = "its checksum does not match" if stored is not None else "it has no checksum"
    warn(f"feature cache '{path}' is damaged ({why}); encoding the texts again")
    path.unlink(missing_ok=True)
    return None
