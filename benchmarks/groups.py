"""The benchmark groups' data, shared by the benchmark files: random distinct keys
(:func:`distinct_keys`), a group written in chunks (:func:`write_group`), and the next
pre-drawn key set at each call (:func:`cycler`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

import mmfs

WRITE_CHUNK = 100_000  # keys per write() while building a group


def distinct_keys(rng: np.random.Generator, n: int) -> np.ndarray:
    """n distinct random int64 keys in [0, 2**62), in random order, drawn from ``rng``."""
    keys = np.unique(rng.integers(0, 2**62, size=n + n // 100 + 16, dtype=np.int64))
    keys = rng.permutation(keys)[:n]
    assert keys.shape == (n,)
    return keys


def write_group(
    store: mmfs.Store, schema: dict[str, Any], keys: np.ndarray, columns: dict[str, Any],
    *, chunk: int = WRITE_CHUNK,
) -> Any:  # fmt: skip
    """Create group "g" (int64 key "id", ``schema``) in ``store`` and write ``columns``
    (feature -> the values of every key, in the order of ``keys``) ``chunk`` keys a write;
    return the group (uncommitted)."""
    g = store.create_group("g", key="id", schema=schema)
    for a in range(0, keys.shape[0], chunk):
        part = slice(a, a + chunk)
        g.write(keys[part], {name: col[part] for name, col in columns.items()})
    return g


def cycler(pool: list[Any]) -> Callable[[], Any]:
    """The next item of pool at each call, starting after pool[0] (the checked one)."""
    return itertools.cycle(pool[1:] + pool[:1]).__next__
