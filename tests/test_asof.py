"""As-of reads: each key's latest fact at an event time, against pandas.merge_asof.

Reference: every row ever written, in write order, as a DataFrame; ``merge_asof(...,
by=key, direction="backward", allow_exact_matches=True)`` on a right side sorted by
(event time, write order) picks, per key, the last row with time <= t, which is the
documented rule (greatest event time, ties to the later write).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mmfs
from mmfs.errors import CorruptStoreError

T0 = np.datetime64("2026-01-01T00:00:00", "ns")
HOUR = np.timedelta64(3600 * 10**9, "ns")


def reference(written: pd.DataFrame, keys: np.ndarray, times: np.ndarray) -> pd.DataFrame:
    right = written.sort_values(["t", "order"], kind="stable")
    left = pd.DataFrame({"k": keys, "t": times, "pos": np.arange(keys.shape[0])})
    merged = pd.merge_asof(
        left.sort_values("t", kind="stable"), right, on="t", by="k",
        direction="backward", allow_exact_matches=True,
    )  # fmt: skip
    return merged.sort_values("pos")


def build(
    path: Path, rng: np.random.Generator, commits: int
) -> tuple[mmfs.Store, pd.DataFrame, list[int]]:
    store = mmfs.open(path, segment_bytes=4096)
    g = store.create_group("g", schema={"v": mmfs.scalar("float64"), "e": mmfs.dense(3)})
    frames, rows_at = [], []
    order = 0
    for _ in range(commits):
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(1, 60))
            keys = rng.integers(0, 40, n)
            times = T0 + rng.integers(0, 48, n) * HOUR  # many ties, late facts
            v = rng.normal(size=n)
            g.write(keys, {"v": v, "e": np.repeat(v[:, None], 3, axis=1)}, event_time=times)
            frames.append(
                pd.DataFrame(
                    {"k": keys, "t": times, "tw": times, "v": v, "order": order + np.arange(n)}
                )
            )
            order += n
        store.commit()
        rows_at.append(order)
    return store, pd.concat(frames, ignore_index=True), rows_at


def test_as_of_equals_merge_asof(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    store, written, _ = build(tmp_path / "s", rng, 25)
    g = store["g"]
    assert len(store._groups["g"].history) < 10  # runs are merged: O(log rows) of them
    for _ in range(30):
        keys = rng.integers(-2, 45, 50)
        t = T0 + rng.integers(-2, 52, 50) * HOUR
        ref = reference(written, keys, t)
        b = g.get(keys, as_of=t)
        expect_found = ref["v"].notna().to_numpy()
        assert np.array_equal(b.found, expect_found)
        assert np.array_equal(b["v"][expect_found], ref["v"].to_numpy()[expect_found])
        e_ref = ref["v"].to_numpy()[expect_found].astype(np.float32)
        assert np.array_equal(b["e"][:, 2][expect_found], e_ref)
        assert np.array_equal(b.event_time[expect_found], ref["tw"].to_numpy()[expect_found])
        one = g.get(int(keys[0]), as_of=t[0])  # one time for one key
        assert one.found[0] == expect_found[0]
    # far in the future: the latest fact, which is what a plain read returns
    keys = np.arange(40)
    late = g.get(keys, as_of=T0 + 1000 * HOUR)
    now = g.get(keys)
    assert np.array_equal(late.to_numpy(), now.to_numpy(), equal_nan=True)
    store.close()


def test_as_of_combines_with_version(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    store, written, rows_at = build(tmp_path / "s", rng, 12)
    g = store["g"]
    reader = mmfs.open(tmp_path / "s", mode="r")
    for version in range(1, 13):  # version v = commit v (generation 0 created the store)
        known = pd.DataFrame(written[written["order"] < rows_at[version - 1]])
        keys = rng.integers(0, 42, 40)
        t = T0 + rng.integers(0, 50, 40) * HOUR
        ref = reference(known, keys, t)
        for who in (g, reader["g"]):
            b = who.get(keys, as_of=t, version=version)
            found = ref["v"].notna().to_numpy()
            assert np.array_equal(b.found, found)
            assert np.array_equal(b["v"][found], ref["v"].to_numpy()[found])
    reader.close()
    store.close()


def test_as_of_accepts_event_time_inputs(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", key="name", key_type="str", schema={"v": mmfs.scalar("int64")})
        g.write(["a", "a"], {"v": [1, 2]}, event_time=[T0, T0 + HOUR])
        store.commit()
        assert g.get("a", as_of=pd.Timestamp("2026-01-01 00:30", tz="UTC"))["v"].tolist() == [1]
        assert g.get(["a", "b"], as_of=T0 + HOUR)["v"].tolist() == [2, 0]
        assert g.get(["a"], as_of=T0 - HOUR).mask.tolist() == [True]
        with pytest.raises(mmfs.ParameterError, match="integers and strings are refused"):
            g.get("a", as_of=5)
        with pytest.raises(mmfs.DimensionError):
            g.get(["a", "a"], as_of=[T0, T0, T0])
        with pytest.raises(mmfs.NotFoundError, match="not found"):
            g.get("a", as_of=T0 - HOUR, missing="raise")
        assert g.get("a", as_of=T0, features=["v"]).to_dict()["v"].tolist() == [1]


def test_one_key_as_of_matches_many(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    store, _written, _ = build(tmp_path / "s", rng, 6)
    g = store["g"]
    for k in [-1, 0, 7, 39, 2**64]:
        for h in [-1, 0, 5, 30, 60]:
            t = T0 + h * HOUR
            one = g.get(k, as_of=t)
            many = g.get([k], as_of=t) if k < 2**63 else one
            assert np.array_equal(one.to_numpy(), many.to_numpy(), equal_nan=True)
            assert one.found.tolist() == many.found.tolist()
    store.close()


def test_history_survives_reopen_and_rollback(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"v": mmfs.scalar("int64")})
        g.write([1], {"v": [1]}, event_time=T0)
        store.commit()
        g.write([1], {"v": [2]}, event_time=T0 - HOUR)
        store.rollback()
        g.write([1], {"v": [3]}, event_time=T0 + HOUR)
        store.commit()
    with mmfs.open(tmp_path / "s", mode="r") as reader:
        g = reader["g"]
        assert g.get([1, 1, 1], as_of=[T0 - HOUR, T0, T0 + HOUR])["v"].tolist() == [0, 1, 3]
        assert reader.verify() == {"g": 1}


def test_corrupt_history_is_reported(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"v": mmfs.scalar("int64")})
        g.write([1, 2], {"v": [1, 2]}, event_time=T0)
        store.commit()
    run = next((tmp_path / "s" / "groups" / "g0").glob("hist-*.mmfs"))
    from mmfs.storage.fileformat import open_array, write_array_file

    arr = np.array(open_array(run, "VTAB"))
    arr[2] = arr[2][::-1]  # each key's entry now names the other key's row
    write_array_file(run, arr, "VTAB")
    with mmfs.open(tmp_path / "s", mode="r") as reader:
        assert reader["g"].get([1, 2])["v"].tolist() == [1, 2]  # plain reads: page table
        with pytest.raises(CorruptStoreError):
            reader["g"].get([1, 2], as_of=T0)
        with pytest.raises(CorruptStoreError):
            reader["g"].get(1, as_of=T0)  # the one-key path checks the same way


@pytest.mark.parametrize("n_threads", [1, 2])
def test_sorted_merge_equals_the_per_key_search(tmp_path: Path, n_threads: int) -> None:
    """Batches of >= 2,048 keys take the sorted merge (slot_order + merge_step); smaller
    ones a binary search per key.  The same answers over long histories (the merge step
    bisects past 16 entries of a slot), sparse requests (it gallops past 16 entries of
    other slots), absent keys and as_of times before, among and after the rows."""
    rng = np.random.default_rng(5)
    store = mmfs.open(tmp_path / "s")
    g = store.create_group("g", schema={"v": mmfs.scalar("float64")})
    n_keys = 6000
    for _ in range(3):  # three commits: several history runs
        long = rng.choice(n_keys, 40, replace=False)  # keys of long histories
        keys = np.concatenate([rng.integers(0, n_keys, 8000), np.repeat(long, 60)])
        times = T0 + rng.integers(0, 500, keys.shape[0]) * HOUR
        g.write(keys, {"v": rng.normal(size=keys.shape[0])}, event_time=times)
        store.commit()
    for n, span in ((5000, n_keys + 50), (2500, 40_000)):  # dense; sparse with absent keys
        keys = rng.integers(-5, span, n)
        t = T0 + rng.integers(-10, 520, n) * HOUR
        merged = g.get(keys, as_of=t, n_threads=n_threads)
        one_by_one = [g.get(keys[a : a + 1000], as_of=t[a : a + 1000]) for a in range(0, n, 1000)]
        want = np.concatenate([b["v"] for b in one_by_one])
        found = np.concatenate([b.found for b in one_by_one])
        assert found.any()
        assert not found.all()
        np.testing.assert_array_equal(merged.found, found)
        np.testing.assert_array_equal(merged["v"], want)
    store.close()
