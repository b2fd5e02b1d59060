"""Versions: every commit is a version, readable forever by id or tag, in O(1).

The reference is a dict model of every version's snapshot (key -> values), built from
the same writes; every pinned read must equal it, byte for byte, after any later writes.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import mmfs
from mmfs.errors import NotFoundError, ParameterError

SCHEMA = {
    "v": mmfs.scalar("float64"),
    "e": mmfs.dense(4),
    "c": mmfs.category(),
    "s": mmfs.sparse(50),
}
T0 = np.datetime64("2026-01-01T00:00:00", "ns")


def write_round(
    g: mmfs.FeatureGroup, rng: np.random.Generator, model: dict[int, tuple], t: np.datetime64
) -> None:
    n = int(rng.integers(1, 40))
    keys = rng.integers(0, 120, n)
    v = rng.normal(size=n)
    e = rng.normal(size=(n, 4)).astype(np.float32)
    c = [f"c{i}" for i in rng.integers(0, 6, n)]
    s = sp.random(n, 50, density=0.1, format="csr", rng=rng, dtype=np.float32)
    g.write(keys, {"v": v, "e": e, "c": c, "s": s}, event_time=t)
    for i, k in enumerate(keys.tolist()):  # equal event times: the later row wins
        model[k] = (v[i], e[i], c[i], s[i].toarray()[0])


def check(batch: mmfs.FeatureBatch, keys: np.ndarray, snapshot: dict[int, tuple]) -> None:
    found = np.array([k in snapshot for k in keys.tolist()])
    assert np.array_equal(batch.found, found)
    rows = [snapshot[k] for k in keys.tolist() if k in snapshot]
    if rows:
        assert np.array_equal(batch["v"][found], np.array([r[0] for r in rows]))
        assert np.array_equal(batch["e"][found], np.stack([r[1] for r in rows]))
        assert batch["c"][found].tolist() == [r[2] for r in rows]
        assert np.array_equal(batch["s"].toarray()[found], np.stack([r[3] for r in rows]))
    assert np.isnan(batch["v"][~found]).all()


def test_every_version_reads_as_it_was(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    snapshots: dict[int, dict[int, tuple]] = {}
    model: dict[int, tuple] = {}
    probe = np.arange(-5, 130)
    with mmfs.open(tmp_path / "s", segment_bytes=4096) as store:
        g = store.create_group("g", schema=SCHEMA)
        snapshots[store.commit("empty group")] = {}
        for i in range(20):
            write_round(g, rng, model, T0)
            v = store.commit(f"round {i}", tags=[f"r{i}"] if i % 3 == 0 else None)
            snapshots[v] = dict(model)
            pinned = rng.choice(sorted(snapshots))  # an older version, after this commit
            check(g.get(probe, version=int(pinned)), probe, snapshots[int(pinned)])
        reader = mmfs.open(tmp_path / "s", mode="r")
        before = {v: g.get(probe, version=v).to_numpy().tobytes() for v in snapshots}
        # late data: old event times, written after; pinned versions must not move
        write_round(g, rng, model, T0 - np.timedelta64(1, "D"))
        store.commit("late")
        for v, snap in snapshots.items():
            b = reader["g"].get(probe, version=v)
            check(b, probe, snap)
            assert b.to_numpy().tobytes() == before[v]
            for k in (3, 77, 500):
                one = reader["g"].get(k, version=v)
                assert one.found[0] == (k in snap)
        by_tag = reader["g"].get(probe, version="r9").to_numpy()
        by_id = g.get(probe, version=store.version("r9")).to_numpy()
        assert by_tag.tobytes() == by_id.tobytes()
        reader.close()


def test_versions_and_tags(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"x": mmfs.scalar("int64")})
        g.write([1], {"x": [1]})
        v1 = store.commit("first", tags="prod")
        g.write([1], {"x": [2]})
        v2 = store.commit("second", tags=["a", "b", "a"])
        listed = store.versions()
        assert [v.id for v in listed] == [0, v1, v2]
        assert [v.message for v in listed] == ["create store", "first", "second"]
        assert [v.tags for v in listed] == [(), ("prod",), ("a", "b")]
        assert all(a.created <= b.created for a, b in itertools.pairwise(listed))
        assert store.version("prod") == v1
        assert store.version("b") == v2
        assert store.version(v1) == v1
        with pytest.raises(NotFoundError, match="tagged 'nope'"):
            store.version("nope")
        with pytest.raises(NotFoundError, match="versions 0 to 2"):
            store.version(9)
        with pytest.raises(ParameterError, match="int id or a str tag"):
            store.version(1.5)  # type: ignore[arg-type]
        g.write([1], {"x": [3]})
        with pytest.raises(ParameterError, match="already names version 1"):
            store.commit("again", tags=["prod"])
        assert store.generation == v2  # the refused commit changed nothing
        assert g.get(1, version="prod")["x"].tolist() == [1]
        assert g.get(1, version="a")["x"].tolist() == [2]
        v3 = store.commit("third")
        assert g.get(1)["x"].tolist() == [3]
        assert store.versions()[-1].id == v3
        with pytest.raises(NotFoundError):
            g.get(1, version=v3 + 1)


def test_version_of_a_group_created_later_or_dropped(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        a = store.create_group("a", schema={"x": mmfs.scalar("int64")})
        a.write([1], {"x": [1]})
        v1 = store.commit()
        b = store.create_group("b", schema={"x": mmfs.scalar("int64")})
        b.write([1], {"x": [1]})
        store.commit()
        with pytest.raises(NotFoundError, match="has no group 'b'"):
            b.get(1, version=v1)
        a.write([1], {"x": [5]})
        store.commit()
        store.drop_group("a")
        store.commit()
        new_a = store.create_group("a", schema={"x": mmfs.scalar("int64")})
        new_a.write([1], {"x": [7]})
        store.commit()
        # Versions keep reading the group they named, dropped or not, until gc drops them
        assert new_a.get(1, version=v1)["x"].tolist() == [1]
        assert new_a.get(1)["x"].tolist() == [7]
    with mmfs.open(tmp_path / "s", mode="r") as reader:
        assert reader["a"].get([1], version=v1)["x"].tolist() == [1]
        assert reader["a"].get([1])["x"].tolist() == [7]


def test_keys_added_later_are_absent_from_older_versions(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", key="k", key_type="str", schema={"x": mmfs.scalar("int64")})
        g.write(["a"], {"x": [1]})
        v1 = store.commit()
        g.write(["b", "a"], {"x": [2, 3]})
        v2 = store.commit()
        assert g.get(["a", "b"], version=v1).to_dict()["x"].tolist() == [1, 0]
        assert g.get(["a", "b"], version=v1).mask.tolist() == [False, True]
        assert g.get("b", version=v1).mask.tolist() == [True]
        assert g.get(["a", "b"], version=v2)["x"].tolist() == [3, 2]
        assert store.diff(v1, v2) == {"g": ["a", "b"]}
        assert store.diff(v2, v2) == {"g": []}


def test_diff_equals_the_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    snapshots: dict[int, dict[int, tuple]] = {}
    model: dict[int, tuple] = {}
    with mmfs.open(tmp_path / "s", segment_bytes=4096) as store:
        g = store.create_group("g", schema=SCHEMA)
        for _ in range(8):
            write_round(g, rng, model, T0)
            snapshots[store.commit()] = dict(model)
        versions = sorted(snapshots)
        for a in versions:
            for b in versions:
                sa, sb = snapshots[a], snapshots[b]
                expected = sorted(
                    k for k in set(sa) | set(sb)
                    if k not in sa or k not in sb or sa[k][0] != sb[k][0]
                )  # fmt: skip
                got = store.diff(a, b)["g"]
                assert sorted(np.asarray(got).tolist()) == expected


def test_many_pinned_versions(tmp_path: Path) -> None:
    """More pinned versions than the snapshot cache holds: evicted ones reopen."""
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"x": mmfs.scalar("int64")})
        vs = []
        for i in range(40):
            g.write([i % 7], {"x": [i]})
            vs.append(store.commit())
        for _ in range(2):
            for i, v in enumerate(vs):
                assert g.get(i % 7, version=v)["x"].tolist() == [i]


@pytest.mark.parametrize("seed", range(4))
def test_old_versions_read_the_shared_history(tmp_path: Path, seed: int) -> None:
    """Every version reads the newest history runs below its own row count: long
    histories of few keys, late rows with old event times and merged runs, checked at
    every version and many event times against a brute-force model of the writes."""
    rng = np.random.default_rng(seed)
    keys_all: list[np.ndarray] = []
    times_all: list[np.ndarray] = []
    counts: dict[int, int] = {}
    with mmfs.open(tmp_path / "s", durability="none") as store:
        g = store.create_group("g", schema={"x": mmfs.scalar("int64")})
        written = 0
        for _ in range(30):
            n = int(rng.integers(1, 400))
            keys = rng.integers(0, 3, n)  # thousands of entries per key and run
            t = rng.integers(0, 60, n)  # old and new event times mixed, many ties
            g.write(keys, {"x": np.arange(written, written + n)}, event_time=T0 + t * SECOND)
            keys_all.append(keys)
            times_all.append(t)
            written += n
            counts[store.commit()] = written
        assert len(store._groups["g"].history) < 30  # runs were merged
        keys_w = np.concatenate(keys_all)
        times_w = np.concatenate(times_all)
        probe_keys = np.repeat(np.arange(4), 8)  # key 3 is never written
        probe_t = np.tile([-1, 0, 7, 30, 31, 59, 60, 10**6], 4)
        for v, count in counts.items():
            got = g.get(probe_keys, version=v, as_of=T0 + probe_t * SECOND)
            latest = g.get(np.arange(4), version=v)
            for i, (k, tq) in enumerate(zip(probe_keys.tolist(), probe_t.tolist(), strict=True)):
                hit = np.flatnonzero((keys_w[:count] == k) & (times_w[:count] <= tq))
                if hit.shape[0] == 0:
                    assert got.mask[i], (v, k, tq)
                    continue
                best = hit[np.lexsort((hit, times_w[hit]))[-1]]  # latest time, then write
                assert not got.mask[i], (v, k, tq)
                assert got["x"][i] == best, (v, k, tq)
            for k in range(4):
                hit = np.flatnonzero(keys_w[:count] == k)
                if hit.shape[0]:
                    assert latest["x"][k] == hit[np.lexsort((hit, times_w[hit]))[-1]]
                else:
                    assert latest.mask[k]


SECOND = np.timedelta64(1, "s")


def test_gc_keeps_the_newest_tagged_and_named_versions(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s", durability="none") as store:
        g = store.create_group("g", schema={"x": mmfs.scalar("int64")})
        ids = []
        for i in range(8):
            g.write([1, 2], {"x": [i, 10 * i]}, event_time=T0 + i * SECOND)
            ids.append(store.commit(f"c{i}", tags=["gold"] if i == 2 else None))
        with pytest.raises(ParameterError, match="keep"):
            store.gc(keep=0)
        with pytest.raises(NotFoundError):
            store.gc(also=["no-such-tag"])
        reader = mmfs.open(tmp_path / "s", mode="r")
        assert reader["g"].get([1], version=ids[3])["x"].tolist() == [3]  # now cached
        out = store.gc(keep=2, also=[ids[4]])
        with pytest.raises(NotFoundError):  # the reader hears of the gc through HEAD
            reader["g"].get([1], version=ids[3])
        assert reader["g"].get([1], version=ids[4])["x"].tolist() == [4]
        reader.close()
        kept = [v.id for v in store.versions()]
        assert kept == [ids[2], ids[4], ids[6], ids[7]]
        assert sorted(out["dropped"]) == sorted(set(range(ids[-1] + 1)) - set(kept))
        for v in out["dropped"]:
            with pytest.raises(NotFoundError):
                g.get(1, version=v)
        assert g.get([1, 2], version="gold")["x"].tolist() == [2, 20]
        assert g.get([1, 2], version=ids[4])["x"].tolist() == [4, 40]
        # what the newest version knows is untouched: every row, as of any time
        for i in range(8):
            assert g.get(1, as_of=T0 + i * SECOND)["x"].tolist() == [i]
        sizes = [os.stat(tmp_path / "s" / f"manifest-{v:012d}.mmfs").st_size for v in ids[4:7:2]]
        assert store.gc(keep=1) == {"dropped": [ids[4], ids[6]], "bytes_freed": sum(sizes)}
        assert [v.id for v in store.versions()] == [ids[2], ids[7]]


def test_gc_reclaims_a_dropped_group_beside_a_reader_that_still_reads_it(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s", durability="none") as store:
        a = store.create_group("a", schema={"x": mmfs.dense(64)})
        a.write(np.arange(500), {"x": np.ones((500, 64))})
        v1 = store.commit()
        reader = mmfs.open(tmp_path / "s", mode="r")
        pinned = reader["a"].get(np.arange(500), version=v1)  # maps the group's files
        store.drop_group("a")
        store.commit()
        with mmfs.open(tmp_path / "s", mode="r") as other:  # still there for old versions
            old_a = other.group("a", version=v1)
            np.testing.assert_array_equal(old_a.get([7])["x"], 1.0)
            assert old_a.features == ["x"]
            with pytest.raises(NotFoundError):
                other["a"]
        out = store.gc()
        assert v1 in out["dropped"]
        assert out["bytes_freed"] >= 500 * 64 * 4
        assert os.listdir(tmp_path / "s" / "groups") == []
        np.testing.assert_array_equal(pinned["x"], 1.0)  # the reader's batch is intact
        with pytest.raises(NotFoundError):
            reader.group("a", version=v1)
        reader.close()
        # the next commit's manifest no longer lists the dropped group's files
        store.commit()
    with mmfs.open(tmp_path / "s") as store:
        assert store.groups() == []
        assert os.listdir(tmp_path / "s" / "groups") == []


def test_a_reader_pins_the_newest_version_through_its_live_snapshot(tmp_path: Path) -> None:
    """A many-key read of the newest version in a reader takes the live snapshot's page
    table (not the history); it must keep reading that version after later commits, and
    agree with the history path byte for byte (a tagged older version takes it)."""
    rng = np.random.default_rng(5)
    keys = np.arange(200)
    with mmfs.open(tmp_path / "s", durability="none") as writer:
        g = writer.create_group("g", key="id", schema={"x": mmfs.scalar("float64")})
        first = rng.normal(size=200)
        g.write(keys, {"x": first}, event_time=T0)
        v1 = writer.commit(tags=["one"])
        reader = mmfs.open(tmp_path / "s", mode="r")
        pinned = reader.group("g", version=v1)
        before = pinned.get(keys).to_numpy().tobytes()
        assert reader["g"].get(keys).to_numpy().tobytes() == before
        assert np.array_equal(pinned.get(keys)["x"], first)
        g.write(keys[::2], {"x": rng.normal(size=100)}, event_time=T0)
        v2 = writer.commit()
        for _ in range(2):  # the live snapshot moved on; v1 is read through the history
            assert pinned.get(keys).to_numpy().tobytes() == before
            assert reader["g"].get(keys, version="one").to_numpy().tobytes() == before
        newest = reader["g"].get(keys, version=v2)
        assert newest.to_numpy().tobytes() == reader["g"].get(keys).to_numpy().tobytes()
        assert not np.array_equal(newest["x"], first)
        reader.close()
