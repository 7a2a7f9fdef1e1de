"""Shared arrays as the library handles them (a dict of named numpy arrays), and the one
conversion to and from Flower's ``ArrayRecord``."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

Arrays = dict[str, np.ndarray]


def from_record(rec: ArrayRecord, dtype: np.dtype | type | None = None) -> Arrays:
    """A private, writable copy of every array in ``rec`` (cast to ``dtype`` if given)."""
    return {k: np.array(v.numpy(), dtype=dtype, copy=True) for k, v in rec.items()}


def to_record(arrays: Arrays, dtype: np.dtype | type | None = None) -> ArrayRecord:
    """``arrays`` as an ArrayRecord, in their order (cast to ``dtype`` if given)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=dtype))
                        for k, v in arrays.items()})


def nbytes(rec: ArrayRecord) -> int:
    """Payload bytes of an ArrayRecord (the arrays' data, without framing)."""
    return int(sum(v.numpy().nbytes for v in rec.values()))
