"""Edges of versioning and training sets: damaged history, races with a writer, small
API corners.  Each test fails if its path misbehaves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import mmfs
import mmfs._kernels._store
from mmfs import store as store_mod
from mmfs.errors import CorruptStoreError, NotFoundError, ParameterError
from mmfs.group import hist_name, hmin_name
from mmfs.storage import fileformat as ff

T0 = np.datetime64("2026-01-01", "ns")
SEC = np.timedelta64(1, "s")


def build(path: Path, commits: int = 3, n: int = 40) -> mmfs.Store:
    store = mmfs.open(path, durability="none")
    g = store.create_group("g", schema={"x": mmfs.scalar("int64"), "s": mmfs.sparse(6)})
    rng = np.random.default_rng(0)
    for c in range(commits):
        keys = rng.integers(0, 20, n)
        s = sp.random(n, 6, density=0.3, format="csr", rng=rng, dtype=np.float32)
        g.write(
            keys, {"x": np.arange(n) + 100 * c, "s": s}, event_time=T0 + rng.integers(0, 9, n) * SEC
        )
        store.commit()
    return store


# --------------------------------------------------------------------------- training sets


def test_training_set_small_api(tmp_path: Path) -> None:
    with build(tmp_path / "s") as store:
        entity = {"id": np.arange(5), "event_time": np.full(5, T0 + 4 * SEC), "w": np.ones(5)}
        ts = store.training_set(entity, ["g.x", "g.s"])
        assert repr(ts) == "<TrainingSet 5 rows x ['g.x', 'g.s']>"
        assert ts.columns == ["id", "event_time", "w", "g.x", "g.s"]
        assert ts["w"] is entity["w"]
        assert ts.batch("g").names == ("x", "s")
        with pytest.raises(ParameterError, match="neither"):
            ts["nope"]
        np.testing.assert_array_equal(
            ts.to_numpy()[:, 0], np.where(ts.mask[:, 0], np.nan, ts["g.x"])
        )
        only_sparse = store.training_set(entity, ["g.s"])
        assert only_sparse.to_numpy().shape == (5, 0)
        frame = only_sparse.to_pandas()
        for i in range(5):  # one 1 x 6 CSR row per entity row
            np.testing.assert_array_equal(frame["g.s"][i].toarray(), ts["g.s"][i].toarray())
        with pytest.raises(ParameterError, match="chunk_rows"):
            store.training_batches(entity, ["g.x"], chunk_rows=0)  # at the call, not later
        parts = list(store.training_batches(entity, ["g.x"], chunk_rows=2))
        assert [len(p) for p in parts] == [2, 2, 1]
        np.testing.assert_array_equal(np.concatenate([p["g.x"] for p in parts]), ts["g.x"])
        with pytest.raises(ParameterError, match="1-D"):
            store.training_set({"id": np.arange(2), "event_time": np.full((2, 1), T0)}, ["g.x"])


def test_training_set_reads_the_newest_commit_in_a_reader(tmp_path: Path) -> None:
    with build(tmp_path / "s", commits=1) as writer:
        reader = mmfs.open(tmp_path / "s", mode="r")
        entity = pd.DataFrame({"id": [1], "event_time": [T0 + 100 * SEC]})
        before = reader.training_set(entity, ["g.x"])["g.x"]
        writer["g"].write([1], {"x": [-5], "s": sp.csr_matrix((1, 6))}, event_time=T0 + 50 * SEC)
        writer.commit()
        assert reader.training_set(entity, ["g.x"])["g.x"].tolist() == [-5]
        assert before.tolist() != [-5]
        reader.close()


@pytest.mark.parametrize("n", [3, 3000])  # the binary-search and the merge paths
def test_as_of_reads_report_a_history_entry_naming_another_keys_row(tmp_path: Path, n: int) -> None:
    with build(tmp_path / "s", commits=1) as store:
        meta = store._groups["g"]
        ((gen, j, _m),) = meta.history
        d = tmp_path / "s" / "groups" / f"g{meta.id}"
        run = np.array(ff.open_array(d / hist_name(gen, j), "VTAB"))
        first, last = run[2, 0], run[2, -1]
        run[2, 0], run[2, -1] = last, first  # rows swapped between two keys' entries
        for path, arr in (
            (hist_name(gen, j), run),
            (hmin_name(gen, j), mmfs._kernels._store.min_levels(run[2])),
        ):
            (d / path).unlink()
            ff.write_array_file(d / path, np.ascontiguousarray(arr), "VTAB", durable=False)
        store._drop_snaps()
        keys = np.full(n, store["g"].keys()[run[0, -1]])  # the last entry's key
        entity = {"id": keys, "event_time": np.full(n, T0 + 10**6 * SEC)}
        with pytest.raises(CorruptStoreError, match="corrupt"):
            store.training_set(entity, ["g.x"])
        with pytest.raises(CorruptStoreError, match="corrupt"):
            store["g"].get(keys, as_of=T0 + 10**6 * SEC)


# --------------------------------------------------------------------------- versions


def test_many_pinned_versions_beyond_the_cache(tmp_path: Path) -> None:
    """More pinned versions than the snapshot cache holds: evicted ones reopen, and
    their read counts are kept."""
    with mmfs.open(tmp_path / "s", durability="none") as store:
        g = store.create_group("g", schema={"x": mmfs.scalar("int64")})
        vs = []
        for i in range(store_mod._MAX_PINNED + 6):
            g.write([i % 7], {"x": [i]})
            vs.append(store.commit())
        for _ in range(2):
            for i, v in enumerate(vs):
                assert g.get(i % 7, version=v)["x"].tolist() == [i]
        assert len(store._pinned) == store_mod._MAX_PINNED
        assert store.read_counts("g")["x"]["calls"] == 2 * len(vs)


def test_a_pinned_snapshot_retries_when_a_commit_removed_its_files(
    tmp_path: Path, monkeypatch: Any
) -> None:
    with build(tmp_path / "s") as writer:
        reader = mmfs.open(tmp_path / "s", mode="r")
        real = store_mod._Snapshot  # pyright: ignore[reportPrivateImportUsage]
        calls = {"n": 0}

        def flaky(*args: Any, **kw: Any) -> Any:
            if kw.get("index_meta") is None:  # a live snapshot: not the one under test
                return real(*args, **kw)
            calls["n"] += 1
            if calls["n"] == 1:
                raise FileNotFoundError(2, "gone", "hist-x")
            return real(*args, **kw)

        monkeypatch.setattr(store_mod, "_Snapshot", flaky)
        assert reader["g"].get([1], version=2).found.shape == (1,)  # retried after a reload
        assert calls["n"] == 2
        calls["n"] = 0
        with pytest.raises(CorruptStoreError, match="missing"):  # the writer: no newer one
            writer["g"].get([1], version=1)
        gone = tmp_path / "s" / "manifest-000000000001.mmfs"
        gone.unlink()  # as store.gc would
        calls["n"] = 0
        reader._pinned.clear()
        reader._manifests.pop(1, None)
        with pytest.raises(NotFoundError):
            reader["g"].get([1], version=1)
        reader.close()


def test_a_dropped_version_read_from_a_cached_manifest(tmp_path: Path, monkeypatch: Any) -> None:
    with build(tmp_path / "s") as store:
        store._manifest(1)  # cached
        real = store_mod._Snapshot  # pyright: ignore[reportPrivateImportUsage]

        def gone(*args: Any, **kw: Any) -> Any:
            (tmp_path / "s" / "manifest-000000000001.mmfs").unlink(missing_ok=True)
            raise FileNotFoundError(2, "gone", "hist-x")

        monkeypatch.setattr(store_mod, "_Snapshot", gone)
        with pytest.raises(NotFoundError, match="dropped"):
            store["g"].get([1], version=1)
        monkeypatch.setattr(store_mod, "_Snapshot", real)
        with pytest.raises(NotFoundError, match="is gone"):
            store._newest_meta(12345)


def test_diff_skips_groups_not_in_both_and_sees_corruption(
    tmp_path: Path, monkeypatch: Any
) -> None:
    with build(tmp_path / "s") as store:
        store.create_group("h", schema={"y": mmfs.scalar("float32")})
        store["h"].write([1], {"y": [1.0]})
        v = store.commit()
        assert set(store.diff(1, v)) == {"g"}
        assert all(len(k) == 0 for k in store.diff(v, v).values())
        snap = store._version_snapshot("g", 3)
        monkeypatch.setattr(type(snap), "row_slots", lambda self, rows: np.full(rows.shape, 10**6))
        with pytest.raises(CorruptStoreError, match="slot out of range"):
            store.diff(1, 3)


def test_diff_of_a_dropped_version_that_was_read_before_the_gc(tmp_path: Path) -> None:
    """diff(v, w) of a version gc dropped is NotFoundError even when v was read (and its
    manifest cached) before, and no group is in both (found by test_versions_model)."""
    with mmfs.open(tmp_path / "s") as s:
        g = s.create_group("g", key="id", schema={"x": mmfs.scalar()})
        g.write([0], {"x": [1.0]})
        s.commit()  # version 1
        g.write([0], {"x": [2.0]})
        s.commit()  # version 2
        assert s.diff(1, 0) == {}  # version 0 has no group: nothing to compare
        s.gc(keep=1, also=[0])
        assert [v.id for v in s.versions()] == [0, 2]
        with pytest.raises(mmfs.NotFoundError, match="no version 1"):
            s.diff(1, 0)
        with pytest.raises(mmfs.NotFoundError, match="no version 1"):
            s.diff(2, 1)


def test_diff_reports_a_corrupt_history(tmp_path: Path, monkeypatch: Any) -> None:
    with build(tmp_path / "s") as store:
        snap = store._version_snapshot("g", 3)
        table = snap.table

        class Bad:
            def asof_rows(self, *a: Any) -> int:
                return 1

            def __getattr__(self, name: str) -> Any:
                return getattr(table, name)

        monkeypatch.setattr(snap, "table", Bad())
        with pytest.raises(CorruptStoreError, match="history run is corrupt"):
            store.diff(1, 3)
        monkeypatch.setattr(snap, "table", table)


def test_verify_finds_a_row_in_two_history_runs(tmp_path: Path) -> None:
    with build(tmp_path / "s", commits=1, n=100) as store:
        store["g"].write([1], {"x": [1], "s": sp.csr_matrix((1, 6))}, event_time=T0)
        store.commit()
        meta = store._groups["g"]
        assert len(meta.history) == 2
        d = tmp_path / "s" / "groups" / f"g{meta.id}"
        (g0, j0, _), (g1, j1, _) = meta.history
        first = np.array(ff.open_array(d / hist_name(g0, j0), "VTAB"))
        second = np.array(ff.open_array(d / hist_name(g1, j1), "VTAB"))
        second[:, 0] = first[:, 0]  # a row of the first run, listed again; one row lost
        second = np.ascontiguousarray(second[:, np.lexsort((second[2], second[1], second[0]))])
        for path, arr in (
            (hist_name(g1, j1), second),
            (hmin_name(g1, j1), mmfs._kernels._store.min_levels(second[2])),
        ):
            (d / path).unlink()
            ff.write_array_file(d / path, arr, "VTAB", durable=False)
        store._drop_snaps()
        with pytest.raises(CorruptStoreError, match="every row once"):
            store.verify()


@pytest.mark.parametrize(
    "damage", ["order", "row", "record", "missing", "minima", "shape", "min-shape"]
)
def test_verify_finds_a_damaged_history_run(tmp_path: Path, damage: str) -> None:
    with build(tmp_path / "s") as store:
        meta = store._groups["g"]
        gen, j, _m = meta.history[0]
        d = tmp_path / "s" / "groups" / f"g{meta.id}"
        run = np.array(ff.open_array(d / hist_name(gen, j), "VTAB"))
        mins = np.array(ff.open_array(d / hmin_name(gen, j), "VTAB"))
        if damage == "order":
            run[:, [0, -1]] = run[:, [-1, 0]]
        elif damage == "row":
            run[2, 0] = 10**9
        elif damage == "record":
            run[1, 0] += 1
        elif damage == "missing":
            run[2, 1] = run[2, 0]
            run[:, :2] = run[:, np.lexsort((run[2, :2], run[1, :2], run[0, :2]))]
        elif damage == "minima":
            mins[0] += 1
        elif damage == "shape":
            run = run[:, :-1]
        else:
            mins = mins[:-1]
        for path, arr in ((hist_name(gen, j), run), (hmin_name(gen, j), mins)):
            (d / path).unlink()
            ff.write_array_file(d / path, np.ascontiguousarray(arr), "VTAB", durable=False)
        store._drop_snaps()
        with pytest.raises(CorruptStoreError):
            store.verify()


def test_version_listing_hides_manifests_beyond_head(tmp_path: Path) -> None:
    with build(tmp_path / "s") as store:
        src = tmp_path / "s" / "manifest-000000000003.mmfs"
        doc = ff.read_json_file(src, "MNFT")
        doc["generation"] = 4
        ff.write_json_file(
            tmp_path / "s" / "manifest-000000000004.mmfs", doc, "MNFT", durable=False
        )
        assert [v.id for v in store.versions()] == [0, 1, 2, 3]  # HEAD still says 3


def test_group_bound_to_a_version(tmp_path: Path) -> None:
    with build(tmp_path / "s") as store:
        old = store.group("g", version=1)
        assert "FeatureGroup 'g'" in repr(old)
        np.testing.assert_array_equal(
            old.get(np.arange(20))["x"], store["g"].get(np.arange(20), version=1)["x"]
        )
        with pytest.raises(NotFoundError, match="no group 'zz'"):
            store.group("zz", version=1)


def test_a_training_set_larger_than_the_budget_streams(tmp_path: Path) -> None:
    """The whole result is charged to the memory budget first (MemoryBudgetError, the
    store as it was); training_batches streams it in chunks that fit, with the same
    values."""
    n, n_features = 60_000, 16
    schema = {f"f{i}": mmfs.scalar("float32") for i in range(n_features)}
    rng = np.random.default_rng(5)
    with mmfs.open(tmp_path / "s", durability="none") as store:
        g = store.create_group("g", schema=schema)
        g.write(np.arange(n), {f: rng.random(n, dtype=np.float32) for f in schema}, event_time=T0)
        store.commit()
    entity = {"id": rng.integers(0, n, 3 * n), "event_time": np.full(3 * n, T0 + SEC)}
    feats = [f"g.{f}" for f in schema]
    with mmfs.open(tmp_path / "s", mode="r", memory_budget="2MiB") as small:
        with pytest.raises(mmfs.MemoryBudgetError, match=r"result of g\.training_set\(\)"):
            small.training_set(entity, feats)  # 3n x 64 B = 11.5 MB of output
        parts = [
            p.to_numpy().copy() for p in small.training_batches(entity, feats, chunk_rows=8192)
        ]
    with mmfs.open(tmp_path / "s", mode="r") as big:
        whole = big.training_set(entity, feats).to_numpy()
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_as_of_reads_missing_raise_and_a_stale_reader(tmp_path: Path) -> None:
    with build(tmp_path / "s", commits=1) as writer:
        reader = mmfs.open(tmp_path / "s", mode="r")
        with pytest.raises(NotFoundError, match="not found"):
            reader["g"].get(np.array([1, 10**9]), as_of=T0 + 100 * SEC, missing="raise")
        before = reader["g"].get(1, as_of=T0 + 100 * SEC)
        writer["g"].write([1], {"x": [-7], "s": sp.csr_matrix((1, 6))}, event_time=T0 + 50 * SEC)
        writer.commit()
        after = reader["g"].get(1, as_of=T0 + 100 * SEC)  # the one-key path reloads
        assert after["x"].tolist() == [-7]
        assert before["x"].tolist() != [-7]
        reader.close()


def test_read_counts_survive_plan_eviction(tmp_path: Path) -> None:
    names = [f"f{i}" for i in range(12)]
    with mmfs.open(tmp_path / "s", durability="none") as store:
        g = store.create_group("g", schema={n: mmfs.scalar("float32") for n in names})
        g.write([1], {n: [1.0] for n in names})
        store.commit()
        selections = [names[i : i + k] for k in range(1, 12) for i in range(12 - k)]
        assert len(selections) > 64  # more plans than a snapshot keeps
        for sel in selections:
            g.get([1, 2], sel)
        counts = store.read_counts("g")
        for n in names:
            calls = sum(n in sel for sel in selections)
            assert counts[n] == {"calls": calls, "keys": 2 * calls}
