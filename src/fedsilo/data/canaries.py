"""Canaries (Carlini et al. 2019, "The Secret Sharer"): records of random text with a
random label, inserted into one institution's training data, and fresh reference canaries
drawn the same way but never trained on. How far a canary's loss ranks below its
references' measures how much the model memorised it.
"""

from __future__ import annotations

import dataclasses
import random
import string

import numpy as np

from fedsilo.config import ConfigError

WORDS_PER_CANARY = 8


def draw(count: int, num_labels: int, seed: int, stream: str) -> tuple[tuple[str, ...],
                                                                     np.ndarray]:
    """``count`` canaries (texts, label ids) from random stream ``stream``."""
    rng = random.Random(f"canary:{stream}:{seed}")
    texts, labels = [], []
    for _ in range(count):
        words = ("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))
                 for _ in range(WORDS_PER_CANARY))
        texts.append(" ".join(words))
        labels.append(rng.randrange(num_labels))
    return tuple(texts), np.asarray(labels, dtype=np.int64)


def holder(fed, name: str) -> str:
    """The institution that holds the canaries (``name``, or the first one)."""
    if not name:
        return fed.institutions[0].name
    if name not in fed.names():
        raise ConfigError(f"config: 'attack.canary_institution' names '{name}', which is not "
                          f"in the scenario (known: {', '.join(fed.names())})")
    return name


def insert(fed, count: int, name: str, seed: int):
    """``fed`` with ``count`` canaries appended to the training split of institution
    ``name`` (or the first one)."""
    who = holder(fed, name)
    texts, labels = draw(count, len(fed.labels), seed, "inserted")
    out = []
    for inst in fed.institutions:
        if inst.name == who:
            inst = dataclasses.replace(
                inst, train_texts=inst.train_texts + texts,
                train_labels=np.concatenate([inst.train_labels, labels]))
        out.append(inst)
    return dataclasses.replace(fed, institutions=tuple(out))


def references(count: int, num_labels: int, seed: int) -> tuple[tuple[str, ...], np.ndarray]:
    """The fresh reference canaries, never in anyone's data."""
    return draw(count, num_labels, seed, "reference")
