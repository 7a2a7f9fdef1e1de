"""What one institution's node does, free of Flower: find its data, train, evaluate.

The ClientApp (clients/app.py) is a thin shell around these functions. Everything heavy is
loaded once per process (one Ray actor serves many simulated institutions): the backbone,
the tokenizer and the feature cache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedsilo.config import ConfigError, Scenario
from fedsilo.data import FederationData, InstitutionData, build_federation
from fedsilo.models import backbone as bb
from fedsilo.training.features import (
    CachedFeatures,
    FeatureCache,
    FeatureSource,
    LiveFeatures,
    cache_key,
)


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("simulation.device: 'cuda' was asked for but torch sees no "
                              "CUDA device here")
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class SiloRuntime:
    ref: bb.BackboneRef
    tokenizer: object
    backbone: torch.nn.Module
    device: torch.device
    cache: FeatureCache


@functools.lru_cache(maxsize=2)
def _runtime(backbone: str, cache_dir: str, device: str) -> SiloRuntime:
    ref = bb.resolve(backbone, cache_dir)
    tokenizer, model = bb.load(ref.location)
    dev = resolve_device(device)
    model.to(dev)
    cache = FeatureCache(disk_dir=Path(cache_dir) / "features")
    return SiloRuntime(ref, tokenizer, model, dev, cache)


def runtime_for(s: Scenario) -> SiloRuntime:
    """This process's backbone, device and cache for scenario ``s`` (built once)."""
    return _runtime(s.model.backbone, str(Path(s.simulation.cache_dir).resolve()),
                    s.simulation.device)


def resolve_institution(s: Scenario, node_config: dict) -> tuple[FederationData,
                                                                  InstitutionData]:
    """The institution this node serves: named by ``institution`` in the node config (a
    deployment) or the ``partition-id`` index (a simulation)."""
    fed = build_federation(s)
    if "institution" in node_config:
        name = str(node_config["institution"])
        try:
            return fed, fed.get(name)
        except KeyError:
            raise ConfigError(f"node config: institution '{name}' is not in the scenario "
                              f"(known: {', '.join(fed.names())})") from None
    if "partition-id" not in node_config:
        raise ConfigError("node config: set 'institution' (or 'partition-id' in simulation)")
    pid = int(node_config["partition-id"])
    if not 0 <= pid < len(fed.institutions):
        raise ConfigError(f"node config: partition-id {pid} is out of range; the scenario "
                          f"has {len(fed.institutions)} institutions (set num-supernodes "
                          f"to {len(fed.institutions)})")
    return fed, fed.institutions[pid]


def features(s: Scenario, rt: SiloRuntime, inst: InstitutionData, split: str) -> FeatureSource:
    """The head's inputs for ``inst``'s ``split`` ('train' or 'test')."""
    texts = inst.train_texts if split == "train" else inst.test_texts
    m = s.model
    if not m.cache:
        return LiveFeatures(texts, rt.tokenizer, rt.backbone, m.max_length, m.pooling,
                            rt.device)
    from fedsilo.models import encode

    key = cache_key(rt.ref.identity, m.max_length, m.pooling, m.scope, inst.fingerprint(),
                    split)
    feats = rt.cache.get(inst.name, key, lambda: encode(texts, rt.tokenizer, rt.backbone,
                                                        m.max_length, m.pooling, rt.device))
    return CachedFeatures(feats)


def labels_of(inst: InstitutionData, split: str) -> np.ndarray:
    return inst.train_labels if split == "train" else inst.test_labels
