"""The row-minimum levels of history runs, against numpy brute force.

A version reads the shared history runs below its own row count; `last_below` finds a
slot's last entry older than that count by climbing and descending levels of minima of
64-entry blocks instead of walking every newer entry.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmfs._kernels import _store


def brute_levels(rows: np.ndarray) -> np.ndarray:
    out = []
    level = rows
    while level.shape[0] > 1:
        pad = (-level.shape[0]) % 64
        blocks = np.concatenate([level, np.full(pad, np.iinfo(np.int64).max)]).reshape(-1, 64)
        level = blocks.min(axis=1)
        out.append(level)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


@pytest.mark.parametrize("m", [0, 1, 2, 63, 64, 65, 4095, 4096, 4097, 262_145])
def test_min_levels(m: int) -> None:
    rows = np.random.default_rng(m).permutation(m).astype(np.int64)
    np.testing.assert_array_equal(_store.min_levels(rows), brute_levels(rows))


@pytest.mark.parametrize("m", [1, 64, 100, 5000, 300_000])
@pytest.mark.parametrize("shape", ["random", "sorted", "young tail"])
def test_last_below_matches_brute_force(m: int, shape: str) -> None:
    rng = np.random.default_rng(m)
    if shape == "random":
        rows = rng.permutation(m).astype(np.int64)
    elif shape == "sorted":  # event times in write order: a version's rows come first
        rows = np.arange(m, dtype=np.int64)
    else:  # a few old rows, then a long run of newer ones
        rows = np.arange(m, dtype=np.int64)
        rows[: m // 3] = rng.permutation(m // 3)
        rows[m // 3 :] += m
    mins = _store.min_levels(rows)
    for _ in range(300):
        lo = int(rng.integers(0, m))
        p = int(rng.integers(lo, m))
        limit = int(rng.integers(-1, 2 * m + 1))
        hits = np.flatnonzero(rows[lo : p + 1] < limit)
        want = lo + int(hits[-1]) if hits.shape[0] else -1
        assert _store.last_below_py(rows, mins, lo, p, limit) == want, (lo, p, limit)


def test_last_below_refuses_bad_bounds() -> None:
    rows = np.arange(10, dtype=np.int64)
    with pytest.raises(ValueError, match="lo <= p"):
        _store.last_below_py(rows, _store.min_levels(rows), 5, 3, 1)


@pytest.mark.parametrize("n_slots", [0, 1, 5, 2047, 2048, 4_194_305, 2**33])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_slot_order_is_a_stable_sort_with_absent_keys_first(n_slots: int, n_threads: int) -> None:
    rng = np.random.default_rng(n_slots)
    slots = rng.integers(-1, n_slots + 3, 200_000)
    times = rng.integers(-(2**62), 2**62, 200_000)
    key = np.where((slots >= 0) & (slots < n_slots), slots + 1, 0)
    want = np.argsort(key, kind="stable")
    order, ss, st = _store.slot_order(slots, n_slots, times, n_threads)
    np.testing.assert_array_equal(order, want)
    np.testing.assert_array_equal(ss, key[want] - 1)
    np.testing.assert_array_equal(st, times[want])
    assert _store.slot_order(slots, n_slots)[2] is None
    order, ss, st = _store.slot_order(np.zeros(0, np.int64), n_slots, np.zeros(0, np.int64))
    assert order.shape == ss.shape == (0,)
    assert st is not None
    assert st.shape == (0,)
