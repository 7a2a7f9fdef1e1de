"""Fault injection and adversarial institutions, for testing robust aggregation.

Behaviours of a malicious institution (``faults.malicious`` + ``faults.behaviour``):
- ``label_flip``: trains honestly on wrong labels (label y becomes num_labels - 1 - y);
- ``sign_flip``: sends x - (y - x), the negated update;
- ``scale``: sends x + scale * (y - x), the update blown up by ``faults.scale``;
- ``noise``: sends x + N(0, noise_std^2) noise in place of an update;
- ``label_flip_scale``: trains on wrong labels and sends that update blown up by
  ``faults.scale`` (a boosted poisoning, or model-replacement, attack).
Here x is the global model the institution received and y what it trained.
"""

from __future__ import annotations

import numpy as np

from fedsilo.config import FaultsSection

Arrays = dict[str, np.ndarray]


def flip_labels(labels: np.ndarray, num_labels: int) -> np.ndarray:
    return (num_labels - 1 - np.asarray(labels)).astype(np.int64)


def flips_labels(f: FaultsSection) -> bool:
    """Whether a malicious institution trains on wrong labels."""
    return f.behaviour in ("label_flip", "label_flip_scale")


def attack_update(x: Arrays, y: Arrays, f: FaultsSection, seed: int) -> Arrays:
    """What a malicious institution sends instead of its honest weights ``y``."""
    if f.behaviour == "sign_flip":
        return {k: x[k] - (y[k] - x[k]) for k in x}
    if f.behaviour in ("scale", "label_flip_scale"):
        return {k: x[k] + f.scale * (y[k] - x[k]) for k in x}
    if f.behaviour == "noise":
        rng = np.random.default_rng(seed)
        return {k: x[k] + rng.normal(0.0, f.noise_std, size=x[k].shape).astype(x[k].dtype)
                for k in x}
    return y  # label_flip attacks through the data, not the update
