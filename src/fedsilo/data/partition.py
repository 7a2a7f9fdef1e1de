"""Split a pooled dataset over institutions with flwr-datasets partitioners."""

from __future__ import annotations

import warnings

import numpy as np

from fedsilo.config import ConfigError


def split_indices(labels: list[int], num_institutions: int, how: str, alpha: float,
                  seed: int, min_size: int) -> list[np.ndarray]:
    """Row indices held by each institution under an ``iid`` or ``dirichlet`` split."""
    from datasets import Dataset  # slow to import: only splits that need it pay
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner

    ds = Dataset.from_dict({"row": list(range(len(labels))), "label": list(labels)})
    ds = ds.shuffle(seed=seed)  # IidPartitioner shards contiguously: row order must not leak
    partitioner: Partitioner
    if how == "iid":
        partitioner = IidPartitioner(num_partitions=num_institutions)
    elif how == "dirichlet":
        partitioner = DirichletPartitioner(num_partitions=num_institutions,
                                           partition_by="label", alpha=alpha,
                                           min_partition_size=min_size,
                                           self_balancing=False, shuffle=True, seed=seed)
    else:  # natural splits never come here
        raise ValueError(how)
    partitioner.dataset = ds
    try:
        with warnings.catch_warnings():  # its retries warn at length; the outcome is ours
            warnings.simplefilter("ignore")
            return [np.asarray(partitioner.load_partition(i)["row"], dtype=np.int64)
                    for i in range(num_institutions)]
    except ValueError as exc:
        raise ConfigError(
            f"data.alpha: cannot split {len(labels)} examples over {num_institutions} "
            f"institutions with at least {min_size} each (Dirichlet alpha={alpha}): "
            f"{str(exc).splitlines()[0]}") from None


def train_test_split(n: int, test_fraction: float, seed: int, key: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle of ``range(n)`` cut into (train, test); ``key`` names the owner."""
    rng = np.random.default_rng([seed, *key.encode()])
    order = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    if n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])
