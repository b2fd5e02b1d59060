"""Deletes: ``group.delete(keys, event_time=)`` writes tombstones, and every read path
honours them -- get, as_of, versions, training sets, iter_batches, keys/len, diff,
searches, alter_group, reopen, verify -- checked against pandas and exact references."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

import mmfs
from mmfs.errors import CorruptStoreError, NotFoundError

T0 = np.datetime64("2026-01-01T00:00:00", "ns")


def at(seconds: Any) -> Any:
    return T0 + np.asarray(seconds, dtype=np.int64) * np.timedelta64(1, "s")


def _group(tmp_path: Any, key_type: str = "int64") -> tuple[mmfs.Store, Any]:
    st = mmfs.open(str(tmp_path / "s"))
    g = st.create_group(
        "g", key="id", key_type=key_type,
        schema={"x": mmfs.scalar("float32"), "v": mmfs.dense(3), "c": mmfs.category()},
    )  # fmt: skip
    return st, g


def _values(x: Any) -> dict[str, Any]:
    x = np.asarray(x, dtype=np.float32)
    return {"x": x, "v": np.repeat(x[:, None], 3, axis=1), "c": [f"c{int(v)}" for v in x]}


def test_delete_hides_keys_from_reads_at_and_after_its_time(tmp_path) -> None:
    st, g = _group(tmp_path)
    g.write([1, 2, 3], _values([10, 20, 30]), event_time=at(0))
    v1 = st.commit()
    assert g.delete([2, 99, 2], event_time=at(10)) == 2  # 99 was never written
    assert len(g) == 3  # not before the commit
    v2 = st.commit()
    batch = g.get([1, 2, 3])
    np.testing.assert_array_equal(batch.mask, [False, True, False])
    np.testing.assert_array_equal(batch["x"], [10, np.nan, 30])
    assert batch["c"].tolist() == ["c10", None, "c30"]
    assert np.isnat(batch.event_time[1])
    with pytest.raises(NotFoundError):
        g.get([1, 2], missing="raise")
    assert g.get(2).mask.tolist() == [True]  # the one-key path
    assert len(g) == 2
    assert np.asarray(g.keys()).tolist() == [1, 3]
    # event time: before the tombstone the old row, from it on nothing
    np.testing.assert_array_equal(
        g.get([2, 2, 2], as_of=at([9, 10, 11]))["x"], [20, np.nan, np.nan]
    )
    assert g.get(2, as_of=at(9))["x"].tolist() == [20]
    assert g.get(2, as_of=at(10)).mask.tolist() == [True]  # the one-key as_of path
    # versions: before the commit the key is there, the delete's version pins it deleted
    np.testing.assert_array_equal(g.get([1, 2, 3], version=v1)["x"], [10, 20, 30])
    np.testing.assert_array_equal(g.get([1, 2, 3], version=v2)["x"], [10, np.nan, 30])
    assert len(st.group("g", version=v1)) == 3
    assert np.asarray(st.group("g", version=v1).keys()).tolist() == [1, 2, 3]
    assert np.asarray(st.diff(v1, v2)["g"]).tolist() == [2]
    assert [b.keys.tolist() for b in g.iter_batches()] == [[1, 3]]
    assert [b.keys.tolist() for b in g.iter_batches(version=v1)] == [[1, 2, 3]]
    assert [b.keys.tolist() for b in g.iter_batches(version=v2, batch_size=2)] == [[1], [3]]
    # as_of walks every key ever written (missing where it had no value then)
    got = [b["x"].tolist() for b in g.iter_batches(as_of=at(9))]
    assert got == [[10.0, 20.0, 30.0]]
    assert st.describe("g")["keys"] == 2
    assert st.verify() == {"g": 3}
    st.close()


def test_greatest_event_time_wins_between_writes_and_deletes(tmp_path) -> None:
    st, g = _group(tmp_path)
    g.write([1, 2, 3, 4], _values([1, 2, 3, 4]), event_time=at(5))
    st.commit()
    g.delete([1, 2, 3, 4], event_time=at(10))
    st.commit()
    g.write([1], _values([11]), event_time=at(9))  # older than the tombstone: stays deleted
    g.write([2], _values([12]), event_time=at(11))  # newer: back
    g.write([3], _values([13]), event_time=at(10))  # a tie, written later: back
    st.commit()
    g.delete([4], event_time=at(3))  # older than the key's row: no effect on the latest
    st.commit()
    np.testing.assert_array_equal(g.get([1, 2, 3, 4])["x"], [np.nan, 12, 13, np.nan])
    assert np.asarray(g.keys()).tolist() == [2, 3]
    # as of 9.5 key 1 holds its late row, key 4 its first one (the tombstone at 3 is older)
    np.testing.assert_array_equal(g.get([1, 4], as_of=at(9))["x"], [11, 4])
    np.testing.assert_array_equal(g.get([4, 4], as_of=at([3, 4]))["x"], [np.nan, np.nan])
    # in one batch: a delete then a write at the same time, and the other way round
    g.delete([5], event_time=at(1))  # never written: ignored
    g.write([6, 7], _values([6, 7]), event_time=at(20))
    g.delete([6, 7], event_time=at(20))
    g.write([7], _values([77]), event_time=at(20))
    st.commit()
    np.testing.assert_array_equal(g.get([5, 6, 7])["x"], [np.nan, np.nan, 77])
    assert len(g) == 3
    st.close()
    # a writer opened again knows when each key was deleted
    st = mmfs.open(str(tmp_path / "s"))
    g = st["g"]
    g.write([1, 4], _values([21, 24]), event_time=at([9, 11]))
    st.commit()
    np.testing.assert_array_equal(g.get([1, 4])["x"], [np.nan, 24])
    assert st.verify() == {"g": 6}
    st.close()


def test_rollback_and_pending_keys(tmp_path) -> None:
    st, g = _group(tmp_path, "str")
    g.write(["a", "b"], _values([1, 2]))
    st.commit()
    g.delete("a")
    st.rollback()
    st.commit()
    np.testing.assert_array_equal(g.get(["a", "b"])["x"], [1, 2])
    g.write(["c"], _values([3]), event_time=at(0))  # written and deleted before a commit
    assert g.delete(["c", "zz"], event_time=at(1)) == 1
    assert g.delete([]) == 0
    st.commit()
    assert g.keys() == ["a", "b"]
    assert g.get("c").mask.tolist() == [True]
    assert [list(b.keys) for b in g.iter_batches(batch_size=3)] == [["a", "b"]]
    assert g.delete(iter(["b"])) == 1
    st.commit()
    assert g.keys() == ["a"]
    assert [list(b.keys) for b in g.iter_batches(batch_size=1)] == [["a"]]
    st.close()


def test_training_set_equals_merge_asof_with_tombstones(tmp_path) -> None:
    """A tombstone is a row whose value is missing: merge_asof over the history with
    tombstone rows as NaN gives the same answer."""
    rng = np.random.default_rng(3)
    st, g = _group(tmp_path)
    hist = []
    seq = 0
    for load in range(4):
        keys = rng.choice(np.arange(50), 40)
        times = rng.integers(0, 100, 40)
        x = rng.integers(0, 1000, 40).astype(np.float32)
        g.write(keys, _values(x), event_time=at(times))
        dead = rng.choice(np.arange(60), 8)
        dead_t = rng.integers(0, 100, 8)
        g.delete(dead, event_time=at(dead_t))
        st.commit(f"load {load}")
        for k, t, v in zip(keys, times, x, strict=True):
            hist.append((k, t, seq, v))
            seq += 1
        known = {h[0] for h in hist}
        for k, t in zip(dead, dead_t, strict=True):
            if k in known:
                hist.append((k, t, seq, np.nan))
                seq += 1
    ent = pd.DataFrame(
        {"id": rng.choice(np.arange(60), 500), "event_time": at(rng.integers(-5, 110, 500))}
    )
    ttl = datetime.timedelta(seconds=40)
    ts = st.training_set(ent, ["g.x"], ttl=ttl).to_pandas()
    h = pd.DataFrame(hist, columns=["id", "t", "seq", "want"]).sort_values(["t", "seq"])
    h["event_time"] = at(h["t"].to_numpy())
    want = pd.merge_asof(
        ent.reset_index().sort_values("event_time"), h[["id", "event_time", "want"]],
        on="event_time", by="id", direction="backward", tolerance=ttl,
    ).sort_values("index")  # fmt: skip
    np.testing.assert_array_equal(ts["g.x"].to_numpy(), want["want"].to_numpy(np.float32))
    st.close()


def test_searches_skip_deleted_keys(tmp_path) -> None:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((400, 8)).astype(np.float32)
    keys = np.arange(400, dtype=np.int64)
    st = mmfs.open(str(tmp_path / "s"))
    g = st.create_group("items", key="id", schema={"emb": mmfs.dense(8)})
    g.write(keys, {"emb": X})
    st.commit()
    g.create_index("emb", "lsh", "euclidean", bits=64)
    v1 = st.commit()
    gone = keys[::3]
    g.delete(gone)
    v2 = st.commit()
    live = np.setdiff1d(keys, gone)
    Q = X[:20] + 0.01
    for kind in ("lsh", "exact", "kdtree"):
        if kind != "lsh":
            g.create_index("emb", kind, "euclidean")
            st.commit()
        got, dist = g.search("emb", Q, k=5, candidates=400)
        idx, want = mmfs.knn(X[live], Q, 5)
        np.testing.assert_array_equal(got, live[idx], err_msg=kind)
        np.testing.assert_allclose(dist, want, rtol=1e-5, err_msg=kind)
        got, _ = g.search("emb", Q, k=5, version=v1, candidates=400)
        np.testing.assert_array_equal(got, mmfs.knn(X, Q, 5)[0], err_msg=kind)
        got, _ = g.search("emb", Q, k=5, version=v2, candidates=400)
        np.testing.assert_array_equal(got, live[idx], err_msg=kind)
        # a boolean filter has one entry per key with a value, in keys() order
        mask = np.zeros(len(g), dtype=bool)
        mask[::2] = True
        got, _ = g.search("emb", Q, k=5, filter=mask, candidates=400)
        sel = live[::2]
        np.testing.assert_array_equal(got, sel[mmfs.knn(X[sel], Q, 5)[0]], err_msg=kind)
    st.close()


def test_alter_group_keeps_deletes_and_a_reader_sees_them(tmp_path) -> None:
    st, g = _group(tmp_path)
    g.write([1, 2, 3], _values([1, 2, 3]), event_time=at(0))
    g.delete([2], event_time=at(5))
    v1 = st.commit()
    st.alter_group("g", add={"y": mmfs.scalar("int64")})
    st.commit()
    g = st["g"]
    np.testing.assert_array_equal(g.get([1, 2, 3])["x"], [1, np.nan, 3])
    np.testing.assert_array_equal(g.get([2, 2], as_of=at([4, 5]))["x"], [2, np.nan])
    assert len(g) == 2
    np.testing.assert_array_equal(g.get([1, 2, 3], version=v1)["x"], [1, np.nan, 3])
    g.delete([3])
    st.commit()
    code = (
        "import sys, mmfs; s = mmfs.open(sys.argv[1], mode='r'); g = s['g'];"
        "print(len(g), g.keys().tolist(), g.get([1, 2, 3]).mask.tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True, text=True,
        check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout.split("\n")[0]  # fmt: skip
    assert out == "1 [1] [False, True, True]"
    st.close()


def _manifest_bytes(path: Any) -> bytes:
    """The newest manifest file of the store at path, as stored."""
    names = sorted(n for n in os.listdir(path) if n.startswith("manifest-"))
    with open(os.path.join(path, names[-1]), "rb") as f:
        return f.read()


def test_a_wrong_deleted_count_is_corruption(tmp_path) -> None:
    st, g = _group(tmp_path)
    g.write([1, 2], _values([1, 2]))
    g.delete([2])
    st.commit()
    st.close()
    raw = _manifest_bytes(tmp_path / "s")
    assert b'"n_deleted": 1' in raw or b'"n_deleted":1' in raw
    st = mmfs.open(str(tmp_path / "s"), mode="r")
    meta = st._snapshot("g").meta
    assert meta.n_deleted == 1
    st.close()
    # the store checks the count against the page table when a writer opens
    from mmfs.store import _parse_group

    doc = json.loads(json.dumps(meta.to_json()))
    doc["n_deleted"] = 3
    with pytest.raises(CorruptStoreError, match="inconsistent counts"):
        _parse_group("g", doc, "test")
    doc["n_deleted"] = -1
    with pytest.raises(CorruptStoreError, match="n_deleted"):
        _parse_group("g", doc, "test")
    del doc["n_deleted"]
    assert _parse_group("g", doc, "test").n_deleted == 0  # manifests before deletes


def test_deleted_keys_that_disagree_with_the_page_table_are_corruption(tmp_path) -> None:
    from mmfs.group import _deletion_times

    st, g = _group(tmp_path)
    g.write([1, 2, 3], _values([1, 2, 3]))
    g.delete([2])
    st.commit()
    snap = st._snapshot("g")
    np.testing.assert_array_equal(snap.live_slots(), [0, 2])
    with pytest.raises(CorruptStoreError, match="tombstone"):
        _deletion_times(snap, np.array([0], dtype=np.int64))  # a live key's latest row
    snap.meta.n_deleted = 0  # the manifest's count, damaged in memory
    with pytest.raises(CorruptStoreError, match="1 keys without a row, the manifest says 0"):
        st.verify()
    with pytest.raises(CorruptStoreError):
        list(g.iter_batches())
    st.rollback()  # the writer's state is made again from the snapshot
    with pytest.raises(CorruptStoreError, match="the manifest says 0 deleted"):
        g.write([4], _values([4]))
    st.close()
