"""From a scenario to each institution's private train/test split."""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsilo.config import ConfigError, DataSection, FederationSection, Scenario
from fedsilo.console import warn
from fedsilo.data import roles, synthetic
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
    """Every institution's data for scenario ``s`` (memoised per process), with the
    canaries of ``attack.canaries`` in one institution's training split."""
    if s.attack.canaries:
        return _with_canaries(s.data, s.federation, s.scenario.seed, s.attack.canaries,
                              s.attack.canary_institution)
    return _build(s.data, s.federation, s.scenario.seed)


@functools.lru_cache(maxsize=4)
def _with_canaries(data: DataSection, fed: FederationSection, seed: int, count: int,
                   name: str) -> FederationData:
    from fedsilo.data import canaries

    return canaries.insert(_build(data, fed, seed), count, name, seed)


@functools.lru_cache(maxsize=4)
def _build(data: DataSection, fed: FederationSection, seed: int) -> FederationData:
    label_names, groups = _groups(data, fed, seed)
    institutions = [_institution(name, kind, texts, ids, data, seed)
                    for name, kind, texts, ids in groups]
    if data.source != "synthetic":
        for inst in institutions:
            check_splits(inst, label_names, data.source)
    return FederationData(labels=tuple(label_names), institutions=tuple(institutions))


def check_splits(inst: InstitutionData, labels: tuple[str, ...], where: str) -> None:
    """Warn about what makes an institution's test split a poor measure: labels seen in
    only one of its splits, and test texts that are also training texts."""
    train, test = set(inst.train_labels.tolist()), set(inst.test_labels.tolist())
    for name, only in (("training", train - test), ("test", test - train)):
        if only:
            shown = ", ".join(repr(labels[i]) for i in sorted(only)[:3])
            warn(f"institution '{inst.name}' ({where}): {len(only)} label(s) occur only in "
                 f"its {name} split ({shown}{', ...' if len(only) > 3 else ''})")
    twice = len(set(inst.test_texts) & set(inst.train_texts))
    if twice:
        warn(f"institution '{inst.name}' ({where}): {twice} test text(s) also appear in its "
             f"training split")


def institution_rows(s: Scenario) -> tuple[tuple[str, ...], list[tuple[str, str, list[str],
                                                                        np.ndarray]]]:
    """(label set, [(name, kind, texts, label ids)]): each institution's rows before its
    train/test cut, in the order the cut sees them."""
    return _groups(s.data, s.federation, s.scenario.seed)


def _groups(data: DataSection, fed: FederationSection, seed: int):
    if data.source == "synthetic":
        texts, labels, insts, kinds = _synthetic_pool(data, fed, seed)
        found = tuple(roles.task_labels(data.synthetic.task))
    else:
        texts, labels, insts, kinds, found = _file_pool(data)
    label_names = declared_labels(data, found, data.source)
    index = {lab: i for i, lab in enumerate(label_names)}
    label_ids = np.asarray([index[lab] for lab in labels], dtype=np.int64)

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
    return label_names, [(name, kind, [texts[i] for i in rows], label_ids[rows])
                         for name, kind, rows in groups]


def export_institutions(s: Scenario, out_dir: Path) -> list[Path]:
    """Write each institution's rows to ``out_dir/<institution>.csv`` (text, label, kind):
    the files a deployment's nodes would each hold, to try one on a single machine. A node
    given its file makes exactly the train/test split the simulation makes."""
    import pandas as pd

    labels, groups = institution_rows(s)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"OUT_DIR: '{out_dir}' already exists and is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, kind, texts, ids in groups:
        path = out_dir / f"{name}.csv"
        pd.DataFrame({"text": texts, "label": [labels[i] for i in ids],
                      "kind": [kind] * len(texts)}).to_csv(path, index=False)
        paths.append(path)
    return paths


def declared_labels(data: DataSection, found: tuple[str, ...], where: str) -> tuple[str, ...]:
    """The label set: ``data.labels`` when declared (every label in ``found`` must be in it),
    else the labels found."""
    declared = data.label_names()
    if not declared:
        for lab in found:
            if "," in lab:
                raise ConfigError(f"data.label_column: label {lab!r} in '{where}' contains a "
                                  f"comma, which data.labels cannot list")
        return found
    extra = [lab for lab in found if lab not in declared]
    if extra:
        raise ConfigError(f"data.labels: '{where}' has label {extra[0]!r}, which data.labels "
                          f"does not declare ({', '.join(declared)})")
    return tuple(declared)


def _institution(name: str, kind: str, texts: list[str], label_ids: np.ndarray,
                 data: DataSection, seed: int) -> InstitutionData:
    """An institution's rows cut into its private train and test splits."""
    tr, te = train_test_split(len(texts), data.test_fraction, seed, name)
    if len(tr) < data.min_examples:
        raise ConfigError(f"data: institution '{name}' has {len(tr)} training examples, "
                          f"fewer than data.min_examples = {data.min_examples}")
    return InstitutionData(name=name, kind=kind,
                           train_texts=tuple(texts[i] for i in tr),
                           train_labels=label_ids[tr],
                           test_texts=tuple(texts[i] for i in te),
                           test_labels=label_ids[te])


def load_institution(data: DataSection, name: str, kind: str | None, path: str,
                     seed: int) -> tuple[tuple[str, ...], InstitutionData]:
    """One institution's data from its own file (a deployed node): the file is read and
    nothing else. Its labels must be among ``data.labels``, which a deployment declares;
    an institution column, if the file has one, may name only this institution.
    Returns (the federation's label set, the institution)."""
    from fedsilo.data.loaders import check_columns, read_table

    if not data.label_names():
        raise ConfigError("data.labels: a deployed node needs the federation's label set "
                          "declared in the run config (data.labels = \"a,b,...\")")
    df = check_columns(read_table(path, key="data-path"), path, data.text_column,
                       data.label_column, data.institution_column)
    if data.institution_column in df.columns:
        others = sorted(set(df[data.institution_column].astype(str)) - {name})
        if others:
            raise ConfigError(f"data-path: '{path}' holds rows of other institutions "
                              f"({', '.join(others[:3])}); a node's file must hold only "
                              f"'{name}'s own rows")
    labels = df[data.label_column].tolist()
    label_names = declared_labels(data, tuple(sorted(set(labels))), path)
    index = {lab: i for i, lab in enumerate(label_names)}
    if kind is None:
        kinds = (df[data.kind_column].astype(str).str.lower().tolist()
                 if data.kind_column and data.kind_column in df.columns else None)
        kind = _kind_of(name, kinds, np.arange(len(df)), data)
    elif kind not in synthetic.KINDS:
        raise ConfigError(f"node config: kind must be 'bank' or 'hospital', got {kind!r}")
    inst = _institution(name, kind, df[data.text_column].tolist(),
                        np.asarray([index[lab] for lab in labels], dtype=np.int64), data, seed)
    check_splits(inst, label_names, path)
    return label_names, inst


def _synthetic_pool(data: DataSection, fed: FederationSection, seed: int):
    syn = data.synthetic
    total = fed.banks + fed.hospitals
    task = roles if syn.task == "roles" else synthetic
    msgs = task.generate(fed.banks, fed.hospitals, syn.size, seed,
                              size_spread=syn.size_spread, label_noise=syn.label_noise,
                              typo_rate=syn.typo_rate, kind_skew=syn.kind_skew,
                              progress=_progress if total >= LARGE else None)
    return ([m.text for m in msgs], [m.label for m in msgs], [m.institution for m in msgs],
            [m.kind for m in msgs])


LARGE = 1000  # institutions: building their data shows progress


def _progress(done: int, total: int) -> None:
    if done == 1 or done == total or done % max(1, total // 10) == 0:
        print(f"building the federation's data: {done}/{total} institutions", flush=True)


def _file_pool(data: DataSection):
    from fedsilo.data.loaders import check_columns, read_table  # pandas: only for files

    raw = read_table(data.source)
    df = check_columns(raw, data.source, data.text_column, data.label_column,
                       data.institution_column)
    if data.partition == "natural" and data.institution_column in raw.columns:
        gone = sorted(set(raw[data.institution_column].dropna().astype(str))
                      - set(df[data.institution_column].astype(str)))
        if gone:
            raise ConfigError(f"data: institution '{gone[0]}' has no row with a non-empty "
                              f"text and label in '{data.source}'")
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
