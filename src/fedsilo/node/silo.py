"""One institution's node, free of Flower: which institution it is, its data, and this
process's backbone, device and cache.

The ClientApp (clients/app.py) builds a ``Silo`` for every message and hands it to the
round (fedsilo.node.round). Everything heavy is loaded once per process (one Ray actor
serves many simulated institutions): the backbone, the scoped model and the cache. Every
round loads the received shared arrays into the model before using it, so institutions
served by the same actor never see each other's weights.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedsilo.config import ConfigError, ModelSection, Scenario
from fedsilo.data import InstitutionData, build_federation
from fedsilo.data.federation import load_institution
from fedsilo.models import backbone as bb
from fedsilo.models.scoped import ScopedModel
from fedsilo.training.features import (
    CachedFeatures,
    FeatureCache,
    FeatureSource,
    LiveFeatures,
    cache_key,
    compute_prefix,
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
    device: torch.device
    cache: FeatureCache
    scratch: Path  # the node's own scratch directory (feature cache, kept memory)
    models: dict = field(default_factory=dict)

    def model(self, m: ModelSection, num_labels: int, seed: int = 0) -> ScopedModel:
        """The scoped model for ``m`` (built once per process and scope)."""
        key = (dataclasses.replace(m, cache=True, cache_max_mb=1), num_labels, seed)
        if key not in self.models:
            if m.scope == "head":  # frozen: loaded only if a text must be encoded
                self.models[key] = ScopedModel(
                    functools.partial(bb.load, self.ref.location), None, m, num_labels,
                    seed, hidden_size=self.ref.hidden_size).to(self.device)
                return self.models[key]
            tokenizer, backbone = bb.load(self.ref.location)
            # trainable weights: never touch the process's shared frozen copy
            self.models[key] = ScopedModel(copy.deepcopy(backbone), tokenizer, m, num_labels,
                                           seed).to(self.device)
        return self.models[key]


@functools.lru_cache(maxsize=2)
def _runtime(backbone: str, cache_dir: str, device: str, cache_mb: int) -> SiloRuntime:
    ref = bb.resolve(backbone, cache_dir)
    cache = FeatureCache(max_bytes=cache_mb * 2**20, disk_dir=Path(cache_dir) / "features")
    return SiloRuntime(ref, resolve_device(device), cache, Path(cache_dir))


def runtime_for(s: Scenario, cache_dir: str | None = None) -> SiloRuntime:
    """This process's backbone, device and cache for scenario ``s`` (built once), with
    scratch under ``cache_dir`` (default ``simulation.cache_dir``)."""
    return _runtime(s.model.backbone, str(Path(cache_dir or s.simulation.cache_dir).resolve()),
                    s.simulation.device, s.model.cache_max_mb)


NODE_KEYS = {"institution", "kind", "data-path", "cache-dir", "partition-id",
             "num-partitions"}


def resolve_institution(s: Scenario, node_config: dict) -> tuple[tuple[str, ...],
                                                                  InstitutionData]:
    """(the federation's label set, the institution this node serves).

    A deployed node is started with its institution's name and its own data file
    (``--node-config 'institution="bank-a" data-path="/srv/bank-a.csv"'``) and reads that
    file only. In a simulation the node is a ``partition-id`` (or an ``institution`` name)
    of the scenario's data.
    """
    unknown = sorted(set(node_config) - NODE_KEYS)
    if unknown:
        raise ConfigError(f"node config: unknown key '{unknown[0]}' (known: "
                          f"{', '.join(sorted(NODE_KEYS - {'num-partitions'}))})")
    if "data-path" in node_config:
        if s.attack.canaries:
            raise ConfigError("attack.canaries: canaries are inserted by a simulation only; "
                              "a deployed node reads its own file unchanged (set it to 0)")
        if "institution" not in node_config:
            raise ConfigError("node config: 'data-path' needs 'institution' (the name this "
                              "node's data belongs to)")
        return _own_data(s.data, str(node_config["institution"]),
                         node_config.get("kind"), str(node_config["data-path"]),
                         s.scenario.seed)
    fed = build_federation(s)
    if "institution" in node_config:
        name = str(node_config["institution"])
        try:
            return fed.labels, fed.get(name)
        except KeyError:
            raise ConfigError(f"node config: institution '{name}' is not in the scenario "
                              f"(known: {', '.join(fed.names())}); a deployed node also "
                              f"names its own file with 'data-path'") from None
    if "partition-id" not in node_config:
        raise ConfigError("node config: set 'institution' and 'data-path' (a deployment) or "
                          "'partition-id' (a simulation)")
    pid = int(node_config["partition-id"])
    if not 0 <= pid < len(fed.institutions):
        raise ConfigError(f"node config: partition-id {pid} is out of range; the scenario "
                          f"has {len(fed.institutions)} institutions (set num-supernodes "
                          f"to {len(fed.institutions)})")
    return fed.labels, fed.institutions[pid]


def _own_data(data, name: str, kind, path: str, seed: int):
    """A deployed node's own file, read once per process while it is unchanged."""
    try:
        st = Path(path).expanduser().stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None  # read_table says what is wrong with the path
    return _read_own_data(data, name, None if kind is None else str(kind), path, seed, stamp)


@functools.lru_cache(maxsize=4)
def _read_own_data(data, name, kind, path, seed, _stamp):
    return load_institution(data, name, kind, path, seed)


@dataclass
class Silo:
    """One institution as its node sees it: the scenario's shared facts, its own data and
    this process's runtime."""

    scenario: Scenario
    institution: InstitutionData
    labels: tuple[str, ...]  # the federation's label set, in label-id order
    runtime: SiloRuntime

    @property
    def name(self) -> str:
        return self.institution.name

    def model(self) -> ScopedModel:
        """This process's scoped model for the scenario (its arrays are set per round)."""
        return self.runtime.model(self.scenario.model, len(self.labels))

    def inputs(self, model: ScopedModel, split: str) -> FeatureSource:
        """The model's inputs for this institution's ``split`` ('train' or 'test')."""
        return features(self.scenario, self.runtime, model, self.institution, split)

    def targets(self, split: str) -> np.ndarray:
        """Label ids of this institution's ``split``."""
        return labels_of(self.institution, split)

    def describe(self) -> dict:
        """The handshake's answer: only what the server needs (who, and how many)."""
        inst = self.institution
        return {"institution": inst.name, "kind": inst.kind,
                "num-train": len(inst.train_texts), "num-test": len(inst.test_texts)}


def silo_for(s: Scenario, node_config: dict, cache_dir: str | None = None) -> Silo:
    """The institution this node serves, with this process's runtime for ``s``. A node's
    ``cache-dir`` puts its feature cache (and built models) on its own disk; otherwise
    ``cache_dir`` (default ``simulation.cache_dir``)."""
    labels, inst = resolve_institution(s, node_config)
    torch.set_num_threads(max(1, int(s.simulation.cpus_per_client)))
    where = str(node_config.get("cache-dir", cache_dir or s.simulation.cache_dir))
    return Silo(s, inst, labels, runtime_for(s, where))


def ray_node() -> tuple[int, str] | None:
    """(a number for the Ray node this process runs on, "<ip> (<node id>)"), or None
    outside Ray. The number is the node id's first 48 bits: a metric value."""
    import sys

    if "ray" not in sys.modules:  # a deployed node never imports Ray
        return None
    import ray

    if not ray.is_initialized():
        return None
    node = ray.get_runtime_context().get_node_id()
    return int(node[:12], 16), f"{ray.util.get_node_ip_address()} ({node[:12]})"


def scope_tag(m: ModelSection) -> str:
    return f"top-{m.top_k}" if m.scope == "top-k" else m.scope


def features(s: Scenario, rt: SiloRuntime, model: ScopedModel, inst: InstitutionData,
             split: str) -> FeatureSource:
    """The model's inputs for ``inst``'s ``split`` ('train' or 'test')."""
    texts = inst.train_texts if split == "train" else inst.test_texts
    m = s.model
    if not (m.cache and model.cacheable):
        return LiveFeatures(texts)
    key = cache_key(rt.ref.identity, m.max_length, m.pooling, scope_tag(m),
                    inst.fingerprint(), split)
    return CachedFeatures(rt.cache.get(inst.name, key, lambda: compute_prefix(model, texts)))


def labels_of(inst: InstitutionData, split: str) -> np.ndarray:
    return inst.train_labels if split == "train" else inst.test_labels
