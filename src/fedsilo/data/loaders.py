"""Read a user's own data: CSV, JSONL, Parquet, or a saved Hugging Face dataset directory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedsilo.config import ConfigError
from fedsilo.console import warn

SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet",
            ".pq": "parquet"}


def read_table(source: str, key: str = "data.source") -> pd.DataFrame:
    """The rows of ``source`` as a DataFrame; a bad file is a ConfigError naming it (and
    ``key``, the setting that named the file)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"{key}: file '{source}' does not exist")
    try:
        if path.is_dir():
            return _read_hf_dir(path)
        kind = SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise ConfigError(f"{key}: '{source}' has an unsupported type "
                              f"(use .csv, .jsonl, .parquet or a saved dataset directory)")
        if kind == "csv":
            return pd.read_csv(path)
        if kind == "jsonl":
            return pd.read_json(path, lines=True)
        return pd.read_parquet(path)
    except ConfigError:
        raise
    except Exception as exc:  # a parser error of any library, reported as one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{key}: cannot read '{source}': {first}") from None


def _read_hf_dir(path: Path) -> pd.DataFrame:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except FileNotFoundError:
        raise ConfigError(f"data.source: '{path}' is a directory but not a saved Hugging "
                          f"Face dataset (save one with Dataset.save_to_disk)") from None
    if isinstance(ds, DatasetDict):
        parts = [d.to_pandas() for d in ds.values()]
        return pd.concat(parts, ignore_index=True)
    assert isinstance(ds, Dataset)
    return ds.to_pandas()


def check_columns(df: pd.DataFrame, source: str, text: str, label: str,
                  institution: str | None = None) -> pd.DataFrame:
    """Keep rows with a non-blank text and a label; name the missing column otherwise.
    Dropped rows are counted in a warning (per institution when the file names them)."""
    for key, col in (("data.text_column", text), ("data.label_column", label)):
        if col not in df.columns:
            have = ", ".join(map(str, df.columns))
            raise ConfigError(f"{key}: column '{col}' is not in '{source}' "
                              f"(columns: {have})")
    blank = df[text].isna() | df[label].isna() | \
        df[text].astype(str).str.strip().eq("") | df[label].astype(str).str.strip().eq("")
    if blank.all():
        raise ConfigError(f"data.source: '{source}' has no rows with both a non-empty "
                          f"'{text}' and a '{label}'")
    if blank.any():
        if institution and institution in df.columns:
            counts = df.loc[blank, institution].astype(str).value_counts().sort_index()
            where = " (" + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ")"
        else:
            where = ""
        warn(f"'{source}': dropped {int(blank.sum())} rows whose text or label is empty or "
             f"only whitespace{where}")
    df = df.loc[~blank].copy()
    df[text] = df[text].astype(str)
    df[label] = df[label].astype(str).str.strip()
    return df
