"""From a scenario to each institution's private train/test split."""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import numpy as np

from fedsilo.config import ConfigError, DataSection, FederationSection, Scenario
from fedsilo.data import synthetic
from fedsilo.data.partition import split_indices, train_test_split


@dataclass(frozen=True)
class InstitutionData:
    """One silo: its name, kind and private splits (labels are ids into the label names)."""

    name: str
    kind: str
    train_texts: tuple[str, ...]
    train_labels: np.ndarray
    test_texts: tuple[str, ...]
    test_labels: np.ndarray

    def fingerprint(self) -> str:
        """A digest of this institution's data; part of every cache key built from it."""
        h = hashlib.sha256()
        for texts, labels in ((self.train_texts, self.train_labels),
                              (self.test_texts, self.test_labels)):
            h.update("\x00".join(texts).encode())
            h.update(np.asarray(labels, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class FederationData:
    labels: tuple[str, ...]
    institutions: tuple[InstitutionData, ...]

    def names(self) -> list[str]:
        return [i.name for i in self.institutions]

    def get(self, name: str) -> InstitutionData:
        for inst in self.institutions:
            if inst.name == name:
                return inst
        raise KeyError(name)

    def table(self) -> list[dict[str, object]]:
        """Examples per label per institution (train + test), one row per institution."""
        rows = []
        for inst in self.institutions:
            counts = np.bincount(np.concatenate([inst.train_labels, inst.test_labels]),
                                 minlength=len(self.labels))
            row: dict[str, object] = {"institution": inst.name, "kind": inst.kind,
                                      "train": len(inst.train_texts),
                                      "test": len(inst.test_texts)}
            row.update({lab: int(c) for lab, c in zip(self.labels, counts, strict=True)})
            rows.append(row)
        return rows


def build_federation(s: Scenario) -> FederationData:
    """Every institution's data for scenario ``s`` (memoised per process)."""
    return _build(s.data, s.federation, s.scenario.seed)


@functools.lru_cache(maxsize=4)
def _build(data: DataSection, fed: FederationSection, seed: int) -> FederationData:
    if data.source == "synthetic":
        texts, labels, insts, kinds = _synthetic_pool(data, fed, seed)
        label_names = synthetic.LABELS
    else:
        texts, labels, insts, kinds, label_names = _file_pool(data)
    label_ids = np.asarray([label_names.index(lab) for lab in labels], dtype=np.int64)

    groups: list[tuple[str, str, np.ndarray]] = []
    if data.partition == "natural":
        if insts is None:
            raise ConfigError(f"data.institution_column: column '{data.institution_column}' "
                              f"is not in '{data.source}'; it is needed for partition = "
                              f"'natural' (or use 'iid' or 'dirichlet')")
        names = list(dict.fromkeys(insts))  # order of first appearance
        inst_arr = np.asarray(insts)
        for name in names:
            rows = np.flatnonzero(inst_arr == name)
            groups.append((name, _kind_of(name, kinds, rows, data), rows))
    else:
        named = synthetic.institution_names(fed.banks, fed.hospitals)
        # enough rows that the train part keeps data.min_examples after the test cut
        min_rows = math.ceil(data.min_examples / (1 - data.test_fraction)) + 1
        parts = split_indices(label_ids.tolist(), len(named), data.partition, data.alpha,
                              seed, min_size=min_rows)
        groups = [(name, kind, rows) for (name, kind), rows in zip(named, parts, strict=True)]

    institutions = []
    for name, kind, rows in groups:
        tr, te = train_test_split(len(rows), data.test_fraction, seed, name)
        train_rows, test_rows = rows[tr], rows[te]
        if len(train_rows) < data.min_examples:
            raise ConfigError(f"data: institution '{name}' has {len(train_rows)} training "
                              f"examples, fewer than data.min_examples = "
                              f"{data.min_examples}")
        institutions.append(InstitutionData(
            name=name, kind=kind,
            train_texts=tuple(texts[i] for i in train_rows),
            train_labels=label_ids[train_rows],
            test_texts=tuple(texts[i] for i in test_rows),
            test_labels=label_ids[test_rows]))
    return FederationData(labels=tuple(label_names), institutions=tuple(institutions))


def _synthetic_pool(data: DataSection, fed: FederationSection, seed: int):
    syn = data.synthetic
    msgs = synthetic.generate(fed.banks, fed.hospitals, syn.size, seed,
                              size_spread=syn.size_spread, label_noise=syn.label_noise,
                              typo_rate=syn.typo_rate, kind_skew=syn.kind_skew)
    return ([m.text for m in msgs], [m.label for m in msgs], [m.institution for m in msgs],
            [m.kind for m in msgs])


def _file_pool(data: DataSection):
    from fedsilo.data.loaders import check_columns, read_table  # pandas: only for files

    df = check_columns(read_table(data.source), data.source, data.text_column,
                       data.label_column)
    texts = df[data.text_column].tolist()
    labels = df[data.label_column].tolist()
    label_names = tuple(sorted(set(labels)))
    if len(label_names) < 2:
        raise ConfigError(f"data.label_column: column '{data.label_column}' in "
                          f"'{data.source}' has fewer than 2 distinct labels")
    insts = (df[data.institution_column].astype(str).tolist()
             if data.institution_column in df.columns else None)
    kinds = (df[data.kind_column].astype(str).str.lower().tolist()
             if data.kind_column and data.kind_column in df.columns else None)
    return texts, labels, insts, kinds, label_names


def _kind_of(name: str, kinds: list[str] | None, rows: np.ndarray, data: DataSection) -> str:
    if kinds is not None:
        seen = {kinds[i] for i in rows}
        bad = seen - set(synthetic.KINDS)
        if bad or len(seen) != 1:
            raise ConfigError(f"data.kind_column: institution '{name}' must have one kind, "
                              f"'bank' or 'hospital', in column '{data.kind_column}'; "
                              f"found {sorted(seen)}")
        return seen.pop()
    low = name.lower()
    for kind in synthetic.KINDS:
        if kind in low:
            return kind
    raise ConfigError(f"data.kind_column: cannot tell whether institution '{name}' is a "
                      f"bank or a hospital; add a '{data.kind_column}' column or put "
                      f"'bank' or 'hospital' in its name")
