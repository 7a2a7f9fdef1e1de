"""IID and Dirichlet splits over institutions, and per-institution train/test splits."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.config import ConfigError, load
from fedsilo.data import build_federation, synthetic
from fedsilo.data.partition import split_indices, train_test_split

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # flwr-datasets retries


def _labels(n: int = 1000, k: int = 5, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, k, n).tolist()


def _mean_tv(labels: list[int], parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each part's label mix and the global one."""
    lab = np.asarray(labels)
    k = lab.max() + 1
    glob = np.bincount(lab, minlength=k) / len(lab)
    return float(np.mean([0.5 * np.abs(np.bincount(lab[p], minlength=k) / len(p) - glob).sum()
                          for p in parts]))


def _assert_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    allrows = np.concatenate(parts)
    assert len(allrows) == n
    assert np.array_equal(np.sort(allrows), np.arange(n))


@pytest.mark.parametrize("n, k", [(1000, 5), (103, 4), (10, 10), (7, 3)])
def test_iid_disjoint_covering_near_equal(n, k):
    labels = _labels(n)
    parts = split_indices(labels, k, "iid", alpha=0.5, seed=1, min_size=1)
    assert len(parts) == k
    _assert_disjoint_cover(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(p.dtype == np.int64 for p in parts)


def test_iid_label_mix_close_to_global_on_shuffled_labels():
    labels = _labels(2000, 5)
    parts = split_indices(labels, 4, "iid", alpha=0.5, seed=0, min_size=1)
    assert _mean_tv(labels, parts) < 0.05


def test_dirichlet_disjoint_covering():
    labels = _labels()
    parts = split_indices(labels, 5, "dirichlet", alpha=0.5, seed=3, min_size=10)
    assert len(parts) == 5
    _assert_disjoint_cover(parts, len(labels))
    assert min(len(p) for p in parts) >= 10


def test_dirichlet_small_alpha_skews_labels_more():
    labels = _labels()
    skewed = split_indices(labels, 5, "dirichlet", alpha=0.1, seed=0, min_size=10)
    flat = split_indices(labels, 5, "dirichlet", alpha=100.0, seed=0, min_size=10)
    tv_skewed, tv_flat = _mean_tv(labels, skewed), _mean_tv(labels, flat)
    assert tv_skewed > 0.25
    assert tv_flat < 0.08
    assert tv_skewed > 4 * tv_flat
    # large alpha also gives near-equal sizes
    sizes = [len(p) for p in flat]
    assert max(sizes) < 1.3 * min(sizes)


def test_dirichlet_deterministic_by_seed():
    labels = _labels()
    a = split_indices(labels, 5, "dirichlet", alpha=0.3, seed=5, min_size=10)
    b = split_indices(labels, 5, "dirichlet", alpha=0.3, seed=5, min_size=10)
    c = split_indices(labels, 5, "dirichlet", alpha=0.3, seed=6, min_size=10)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_impossible_split_names_alpha():
    labels = [0, 1, 2] * 10
    with pytest.raises(ConfigError) as exc:
        split_indices(labels, 10, "dirichlet", alpha=0.5, seed=0, min_size=10)
    msg = str(exc.value)
    assert msg.startswith("data.alpha:")
    assert "30 examples" in msg and "10 institutions" in msg and "at least 10" in msg
    assert "\n" not in msg


def test_unknown_split_rejected():
    with pytest.raises(ValueError):
        split_indices([0, 1], 2, "natural", alpha=0.5, seed=0, min_size=1)


@pytest.mark.parametrize("n, frac", [(100, 0.2), (57, 0.3), (10, 0.5), (1000, 0.05),
                                     (33, 0.9)])
def test_train_test_split_disjoint_covering_fraction(n, frac):
    train, test = train_test_split(n, frac, seed=1, key="bank-1")
    assert len(np.intersect1d(train, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    assert len(test) == round(n * frac)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)  # sorted


def test_train_test_split_small_n_keeps_both_sides():
    train, test = train_test_split(5, 0.01, seed=0, key="x")
    assert (len(train), len(test)) == (4, 1)
    train, test = train_test_split(5, 0.9, seed=0, key="x")
    assert (len(train), len(test)) == (1, 4)
    train, test = train_test_split(2, 0.5, seed=0, key="x")
    assert (len(train), len(test)) == (1, 1)


def test_train_test_split_deterministic_and_keyed():
    a = train_test_split(200, 0.2, seed=3, key="bank-1")
    b = train_test_split(200, 0.2, seed=3, key="bank-1")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    other_key = train_test_split(200, 0.2, seed=3, key="bank-2")
    other_seed = train_test_split(200, 0.2, seed=4, key="bank-1")
    assert not np.array_equal(a[1], other_key[1])
    assert not np.array_equal(a[1], other_seed[1])


def test_build_federation_dirichlet_ten_institutions():
    s = load(None, ["data.partition=dirichlet", "federation.banks=5",
                    "federation.hospitals=5", "data.synthetic.size=200"])
    fed = build_federation(s)
    assert fed.names() == [f"bank-{i}" for i in range(1, 6)] + \
        [f"hospital-{i}" for i in range(1, 6)]
    assert [i.kind for i in fed.institutions] == ["bank"] * 5 + ["hospital"] * 5
    assert fed.labels == synthetic.LABELS
    for inst in fed.institutions:
        assert len(inst.train_texts) >= s.data.min_examples
        assert len(inst.test_texts) >= 1
    pool = synthetic.generate(5, 5, 200, s.scenario.seed, size_spread=0.5, label_noise=0.04,
                              typo_rate=0.06, kind_skew=0.8)
    total = sum(len(i.train_texts) + len(i.test_texts) for i in fed.institutions)
    assert total == len(pool)
    held = sorted(t for i in fed.institutions for t in i.train_texts + i.test_texts)
    assert held == sorted(m.text for m in pool)
    # the same scenario built again (a fresh, equal object) gives the same data
    again = build_federation(load(None, ["data.partition=dirichlet", "federation.banks=5",
                                         "federation.hospitals=5",
                                         "data.synthetic.size=200"]))
    assert [i.fingerprint() for i in again.institutions] == \
        [i.fingerprint() for i in fed.institutions]


def test_build_federation_natural_synthetic():
    s = load(None, ["data.synthetic.size=60"])
    fed = build_federation(s)
    assert fed.names() == ["bank-1", "bank-2", "bank-3", "hospital-1", "hospital-2"]
    for inst in fed.institutions:
        n = len(inst.train_texts) + len(inst.test_texts)
        assert len(inst.test_texts) == round(n * s.data.test_fraction)
        assert inst.train_labels.dtype == np.int64
        assert inst.train_labels.max() < len(fed.labels)


@pytest.mark.parametrize("partition", ["natural", "iid"])
def test_too_large_min_examples_names_institution(partition):
    s = load(None, [f"data.partition={partition}", "data.synthetic.size=40",
                    "data.synthetic.size_spread=0", "data.min_examples=500"])
    with pytest.raises(ConfigError) as exc:
        build_federation(s)
    msg = str(exc.value)
    assert "institution 'bank-1'" in msg
    assert "data.min_examples = 500" in msg
    assert "32 training examples" in msg


def test_too_large_min_examples_dirichlet_names_alpha():
    s = load(None, ["data.partition=dirichlet", "data.synthetic.size=40",
                    "data.min_examples=500"])
    with pytest.raises(ConfigError, match=r"^data\.alpha:"):
        build_federation(s)


def test_iid_split_does_not_follow_row_order():
    # rows sorted by label: a contiguous shard would give each institution one label
    labels = [lab for lab in range(4) for _ in range(50)]
    parts = split_indices(labels, 4, "iid", alpha=1.0, seed=3, min_size=1)
    for part in parts:
        held = {labels[i] for i in part}
        assert held == {0, 1, 2, 3}
