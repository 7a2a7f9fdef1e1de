"""User data files: CSV, JSONL, Parquet and saved Hugging Face datasets."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from fedsilo.config import ConfigError, load
from fedsilo.data import build_federation
from fedsilo.data.loaders import check_columns, read_table

LABELS = ["billing", "fraud", "visit", "records"]
SIZES = {"First Bank": 60, "St Mary Hospital": 48, "savings-bank-2": 41}
KINDS = {"First Bank": "bank", "St Mary Hospital": "hospital", "savings-bank-2": "Bank"}


def _table() -> pd.DataFrame:
    rng = random.Random(0)
    rows = []
    for inst, n in SIZES.items():
        for i in range(n):
            lab = LABELS[(i + rng.randrange(2)) % len(LABELS)]
            rows.append({"text": f"message {i} from {inst} about {lab} #{rng.randrange(10**6)}",
                         "label": lab, "institution": inst, "kind": KINDS[inst]})
    return pd.DataFrame(rows)


def _write(df: pd.DataFrame, path, fmt: str):
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    elif fmt == "parquet":
        df.to_parquet(path, index=False)
    elif fmt == "hf":
        Dataset.from_pandas(df, preserve_index=False).save_to_disk(str(path))
    else:
        raise ValueError(fmt)
    return path


SUFFIX = {"csv": "t.csv", "jsonl": "t.jsonl", "parquet": "t.parquet", "hf": "t_hf"}


def _scenario(path, *extra: str):
    return load(None, [f"data.source={path}", *extra])


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tables")
    df = _table()
    return {fmt: _write(df, d / SUFFIX[fmt], fmt) for fmt in SUFFIX}


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_read_table_each_format(files, fmt):
    df = read_table(str(files[fmt]))
    expected = _table()
    assert len(df) == len(expected)
    assert set(df.columns) >= {"text", "label", "institution", "kind"}
    assert df["text"].tolist() == expected["text"].tolist()
    assert df["label"].tolist() == expected["label"].tolist()


def test_same_federation_from_every_format(files):
    feds = {fmt: build_federation(_scenario(path)) for fmt, path in files.items()}
    ref = feds["csv"]
    assert ref.names() == list(SIZES)
    assert ref.labels == tuple(sorted(LABELS))
    assert [i.kind for i in ref.institutions] == ["bank", "hospital", "bank"]
    for inst in ref.institutions:
        total = len(inst.train_texts) + len(inst.test_texts)
        assert total == SIZES[inst.name]
        assert len(inst.test_texts) == round(SIZES[inst.name] * 0.2)
        assert len(inst.train_labels) == len(inst.train_texts)
        assert len(inst.test_labels) == len(inst.test_texts)
        assert all(inst.name in t for t in inst.train_texts + inst.test_texts)
    for fmt, fed in feds.items():
        assert fed.names() == ref.names(), fmt
        assert fed.labels == ref.labels, fmt
        assert [i.kind for i in fed.institutions] == [i.kind for i in ref.institutions]
        assert [(len(i.train_texts), len(i.test_texts)) for i in fed.institutions] == \
            [(len(i.train_texts), len(i.test_texts)) for i in ref.institutions], fmt
        # the very same rows end up in the very same splits
        assert [i.fingerprint() for i in fed.institutions] == \
            [i.fingerprint() for i in ref.institutions], fmt


def test_labels_match_file(files):
    fed = build_federation(_scenario(files["parquet"]))
    df = _table()
    for inst in fed.institutions:
        expected = dict(zip(df["text"], df["label"], strict=True))
        for text, lab in zip(inst.train_texts, inst.train_labels, strict=True):
            assert fed.labels[lab] == expected[text]
    table = fed.table()
    assert [r["institution"] for r in table] == list(SIZES)
    assert sum(r["train"] + r["test"] for r in table) == len(df)
    for lab in LABELS:
        assert sum(r[lab] for r in table) == int((df["label"] == lab).sum())


def test_dataset_dict_directory_is_concatenated(tmp_path):
    df = _table()
    half = len(df) // 2
    dd = DatasetDict({"train": Dataset.from_pandas(df.iloc[:half], preserve_index=False),
                      "test": Dataset.from_pandas(df.iloc[half:], preserve_index=False)})
    dd.save_to_disk(str(tmp_path / "dd"))
    out = read_table(str(tmp_path / "dd"))
    assert len(out) == len(df)
    assert sorted(out["text"]) == sorted(df["text"])


def test_custom_column_names(tmp_path):
    df = _table().rename(columns={"text": "body", "label": "intent", "institution": "org",
                                  "kind": "sector"})
    path = _write(df, tmp_path / "renamed.csv", "csv")
    s = _scenario(path, "data.text_column=body", "data.label_column=intent",
                  "data.institution_column=org", "data.kind_column=sector")
    fed = build_federation(s)
    assert fed.names() == list(SIZES)
    assert fed.labels == tuple(sorted(LABELS))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(ConfigError) as exc:
        build_federation(_scenario(path))
    msg = _one_line(exc)
    assert "data.source" in msg and str(path) in msg and "does not exist" in msg


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "table.txt"
    path.write_text("text,label\na,b\n")
    with pytest.raises(ConfigError) as exc:
        build_federation(_scenario(path))
    msg = _one_line(exc)
    assert "unsupported type" in msg and str(path) in msg


def test_missing_label_column(files):
    with pytest.raises(ConfigError) as exc:
        build_federation(_scenario(files["csv"], "data.label_column=category"))
    msg = _one_line(exc)
    assert "data.label_column" in msg
    assert "'category'" in msg
    assert str(files["csv"]) in msg


def test_missing_text_column(files):
    with pytest.raises(ConfigError) as exc:
        build_federation(_scenario(files["jsonl"], "data.text_column=body"))
    msg = _one_line(exc)
    assert "data.text_column" in msg and "'body'" in msg


def test_missing_institution_column_with_natural_partition(tmp_path):
    df = _table().drop(columns=["institution"])
    path = _write(df, tmp_path / "noinst.csv", "csv")
    with pytest.raises(ConfigError) as exc:
        build_federation(_scenario(path))
    msg = _one_line(exc)
    assert "data.institution_column" in msg and "'institution'" in msg
    # an iid split does not need the column
    fed = build_federation(_scenario(path, "data.partition=iid", "federation.banks=2",
                                     "federation.hospitals=1"))
    assert fed.names() == ["bank-1", "bank-2", "hospital-1"]
    assert sum(len(i.train_texts) + len(i.test_texts) for i in fed.institutions) == len(df)


@pytest.mark.parametrize("name, content", [
    ("bad.parquet", b"this is not a parquet file at all\n" * 4),
    ("bad.jsonl", b'{"text": "a", "label": \n{{{ not json\n'),
])
def test_unparseable_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        build_federation(_scenario(path))
    msg = _one_line(exc)
    assert msg.startswith("data.source: cannot read")
    assert str(path) in msg


def test_directory_that_is_not_a_dataset(tmp_path):
    d = tmp_path / "plain_dir"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError) as exc:
        build_federation(_scenario(d))
    msg = _one_line(exc)
    assert "data.source" in msg and "not a saved Hugging Face dataset" in msg


def test_single_label_rejected(tmp_path):
    df = _table()
    df["label"] = "only"
    path = _write(df, tmp_path / "one.csv", "csv")
    with pytest.raises(ConfigError) as exc:
        build_federation(_scenario(path))
    assert "data.label_column" in _one_line(exc)


def test_kind_inferred_from_names(tmp_path):
    df = _table().drop(columns=["kind"])
    path = _write(df, tmp_path / "nokind.parquet", "parquet")
    fed = build_federation(_scenario(path))
    assert {i.name: i.kind for i in fed.institutions} == {
        "First Bank": "bank", "St Mary Hospital": "hospital", "savings-bank-2": "bank"}


def test_kind_not_inferable_names_institution(tmp_path):
    df = _table().drop(columns=["kind"])
    df.loc[df["institution"] == "St Mary Hospital", "institution"] = "Acme Clinic"
    path = _write(df, tmp_path / "acme.csv", "csv")
    with pytest.raises(ConfigError) as exc:
        build_federation(_scenario(path))
    msg = _one_line(exc)
    assert "'Acme Clinic'" in msg
    assert "data.kind_column" in msg


def test_bad_kind_value_names_institution(tmp_path):
    df = _table()
    df.loc[df["institution"] == "First Bank", "kind"] = "insurer"
    path = _write(df, tmp_path / "badkind.csv", "csv")
    with pytest.raises(ConfigError) as exc:
        build_federation(_scenario(path))
    msg = _one_line(exc)
    assert "'First Bank'" in msg and "insurer" in msg


def test_check_columns_drops_incomplete_rows_and_casts():
    df = pd.DataFrame({"text": ["a", None, "c", 5], "label": ["x", "y", None, 7]})
    out = check_columns(df, "mem", "text", "label")
    assert out["text"].tolist() == ["a", "5"]
    assert out["label"].tolist() == ["x", "7"]
    assert len(df) == 4  # the input is left alone
    with pytest.raises(ConfigError, match="has no rows"):
        check_columns(pd.DataFrame({"text": [None], "label": ["x"]}), "mem", "text", "label")
