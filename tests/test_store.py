"""The store: every feature type round-trips, reads follow the documented rules.

References are numpy/scipy arrays held beside the store (a key's expected row is
computed from the written arrays by the documented rule: greatest event time, ties to
the later write).  Crash safety, concurrency, corruption, bad input and the model-based
test live in their own files (test_store_*.py).
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import mmfs
from mmfs.errors import (
    MemoryBudgetError,
    NotFoundError,
    ParameterError,
    ReadOnlyError,
    StoreClosedError,
)
from mmfs.schema import Sparse

SCHEMA = {
    "f32": mmfs.scalar("float32"),
    "f64": mmfs.scalar("float64"),
    "i64": mmfs.scalar("int64"),
    "flag": mmfs.scalar("bool"),
    "color": mmfs.category(),
    "emb": mmfs.dense(12),
    "half": mmfs.dense(5, "float16"),
    "q": mmfs.dense(7, "int8"),
    "bits": mmfs.dense(11, "bool"),
    "tags": mmfs.sparse(300),
}
COLORS = ["red", "green", "blue", "", "ünï"]


def make_values(rng: np.random.Generator, n: int) -> dict[str, Any]:
    return {
        "f32": rng.normal(size=n).astype(np.float32),
        "f64": rng.normal(size=n),
        "i64": rng.integers(-(2**62), 2**62, n),
        "flag": rng.random(n) < 0.5,
        "color": [None if rng.random() < 0.2 else COLORS[i] for i in rng.integers(0, 5, n)],
        "emb": rng.normal(size=(n, 12)).astype(np.float32),
        "half": rng.normal(size=(n, 5)),
        "q": rng.uniform(-3, 5, size=(n, 7)),
        "bits": rng.random((n, 11)) < 0.3,
        "tags": sp.random(n, 300, density=0.03, format="csr", rng=rng, dtype=np.float64),
    }


def take(values: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
    out = {}
    for name, v in values.items():
        out[name] = [v[i] for i in idx] if isinstance(v, list) else v[idx]
    return out


def check_batch(batch: mmfs.FeatureBatch, expected: dict[str, Any], found: np.ndarray) -> None:
    """Every feature of batch equals expected (rows of the written arrays) where found."""
    assert np.array_equal(batch.mask, ~found)
    f = found
    for name in ("f32", "f64", "i64", "flag"):
        assert np.array_equal(batch[name][f], np.asarray(expected[name])[f]), name
    assert np.isnan(batch["f32"][~f]).all()
    assert np.isnan(batch["f64"][~f]).all()
    assert (batch["i64"][~f] == 0).all()
    assert not batch["flag"][~f].any()
    colors = batch["color"]
    hit = np.flatnonzero(f)
    assert [colors[i] for i in hit] == [expected["color"][i] for i in hit]
    assert all(c is None for c in colors[~f])
    assert np.array_equal(batch["emb"][f], expected["emb"][f])
    assert np.isnan(batch["emb"][~f]).all()
    assert np.array_equal(batch["half"][f], expected["half"][f].astype(np.float16))
    assert np.array_equal(batch["bits"][f], expected["bits"][f])
    tags = batch["tags"]
    assert isinstance(tags, sp.csr_matrix)
    ref = expected["tags"].astype(np.float32).toarray()
    assert np.array_equal(tags.toarray()[f], ref[f])
    assert tags[~f].nnz == 0


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261127)


def test_every_feature_type_round_trips(tmp_path: Path, rng: np.random.Generator) -> None:
    n = 500
    keys = rng.permutation(10_000)[:n]
    values = make_values(rng, n)
    with mmfs.open(tmp_path / "s", segment_bytes=4096) as store:
        g = store.create_group("users", key="uid", schema=SCHEMA)
        assert g.write(keys, values) == n
        assert store.commit("load") == 1
        order = rng.permutation(n)
        probe = np.concatenate([keys[order], [10_001, -5]])
        batch = g.get(probe)
        found = np.r_[np.ones(n, bool), False, False]
        expected = take(values, np.r_[order, 0, 0])
        check_batch(batch, expected, found)
        # int8: within half a quantisation step of the value (the range is the data's)
        q = batch["q"][:n]
        lo, hi = values["q"].min(axis=0), values["q"].max(axis=0)
        step = (hi - lo) / 255
        assert np.all(np.abs(q - values["q"][order]) <= step / 2 + 1e-5 * np.abs(values["q"]).max())
        assert store.verify() == {"users": n}


def test_one_key_and_many_keys_agree(tmp_path: Path, rng: np.random.Generator) -> None:
    n = 100
    keys = np.arange(n) * 7
    values = make_values(rng, n)
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema=SCHEMA)
        g.write(keys, values)
        store.commit()
        many = g.get(keys)
        for i in (0, 17, 99):
            one = g.get(int(keys[i]))
            assert len(one) == 1
            check_batch(one, take(values, np.array([i])), np.array([True]))
            assert np.array_equal(one.to_numpy(), many.to_numpy()[i : i + 1], equal_nan=True)
        absent = g.get(3)
        assert absent.mask.tolist() == [True]
        assert np.isnan(absent["emb"]).all()


def test_str_keys(tmp_path: Path, rng: np.random.Generator) -> None:
    keys = [f"user-{i}-ü" for i in range(300)] + [""]
    x = rng.normal(size=(len(keys), 4)).astype(np.float32)
    with mmfs.open(tmp_path / "s", segment_bytes=4096) as store:
        g = store.create_group("g", key="name", key_type="str", schema={"x": mmfs.dense(4)})
        g.write(keys, {"x": x})
        store.commit()
        assert g.keys() == keys
        b = g.get(["user-5-ü", "nope", ""])
        assert np.array_equal(b["x"][[0, 2]], x[[5, 300]])
        assert b.mask.tolist() == [False, True, False]
        assert np.array_equal(g.get("user-7-ü")["x"][0], x[7])
        assert b.keys.tolist() == ["user-5-ü", "nope", ""]


def test_extreme_int_keys(tmp_path: Path) -> None:
    keys = np.array([-(2**63), 2**63 - 1, 0, -1], dtype=np.int64)
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"v": mmfs.scalar("int64")})
        g.write(keys, {"v": np.arange(4)})
        store.commit()
        assert g.get(keys)["v"].tolist() == [0, 1, 2, 3]
        assert g.get(2**63 - 1)["v"].tolist() == [1]
        assert g.get(2**64).mask.tolist() == [True]  # outside int64: simply absent
        assert np.asarray(g.keys()).tolist() == keys.tolist()


def test_latest_value_is_the_greatest_event_time(tmp_path: Path) -> None:
    t = np.datetime64("2026-01-01T00:00:00", "ns")
    hour = np.timedelta64(1, "h")
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"v": mmfs.scalar("float64")})
        g.write([1, 2, 3], {"v": [1.0, 2.0, 3.0]}, event_time=t)
        store.commit()
        # a late row with an older event time does not hide the newer fact
        g.write([1], {"v": [10.0]}, event_time=t - hour)
        # a tie goes to the later write
        g.write([2], {"v": [20.0]}, event_time=t)
        # a newer event time wins
        g.write([3], {"v": [30.0]}, event_time=t + hour)
        store.commit()
        b = g.get([1, 2, 3])
        assert b["v"].tolist() == [1.0, 20.0, 30.0]
        expected_t = np.array([t, t, t + hour], dtype="datetime64[ns]")
        assert np.array_equal(b.event_time, expected_t)


def test_duplicate_keys_in_one_write(tmp_path: Path) -> None:
    t0 = np.datetime64("2026-01-01", "ns")
    times = np.array([t0, t0, t0 + 5, t0 + 1, t0], dtype="datetime64[ns]")
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"v": mmfs.scalar("int64")})
        # key 7: equal times -> the last one; key 8: the greatest time wins
        g.write([7, 7, 8, 8, 9], {"v": [1, 2, 3, 4, 5]}, event_time=times)
        store.commit()
        assert g.get([7, 8, 9])["v"].tolist() == [2, 3, 5]
        assert len(g) == 3


def test_event_time_inputs(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"v": mmfs.scalar("float32")})
        aware = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        naive = dt.datetime(2026, 3, 1, 10)
        stamps = pd.Series(pd.to_datetime(["2026-03-01 12:00"]).tz_localize("Europe/Paris"))
        g.write([1], {"v": [1]}, event_time=aware)
        g.write([2], {"v": [1]}, event_time=naive)
        g.write([3], {"v": [1]}, event_time=stamps)
        g.write([4], {"v": [1]}, event_time=np.datetime64("2026-03-01T10", "h"))
        g.write([5], {"v": [1]}, event_time=[pd.Timestamp("2026-03-01 10:00:00.000000001")])
        g.write([6], {"v": [1]}, event_time=dt.date(2026, 3, 1))
        store.commit()
        t = g.get([1, 2, 3, 4, 5, 6]).event_time
        ten = np.datetime64("2026-03-01T10:00", "ns")
        assert t.tolist()[:4] == [ten.astype(object)] * 2 + [
            np.datetime64("2026-03-01T11:00", "ns").astype(object),
            ten.astype(object),
        ]
        assert t[4] == ten + np.timedelta64(1, "ns")
        assert t[5] == np.datetime64("2026-03-01", "ns")


def test_default_event_time_is_now(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"v": mmfs.scalar("float32")})
        before = np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None), "ns")
        g.write([1], {"v": [1]})
        store.commit()
        after = np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None), "ns")
        t = g.get(1).event_time[0]
        assert before - np.timedelta64(1, "s") <= t <= after + np.timedelta64(1, "s")


def test_nothing_is_visible_before_commit_and_rollback_forgets(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"v": mmfs.scalar("float64")})
        g.write([1, 2], {"v": [1.0, 2.0]})
        with pytest.raises(NotFoundError):
            mmfs.open(tmp_path / "s", mode="r")["g"]
        assert g.get([1, 2]).mask.all()  # the writer reads committed data too
        store.commit()
        g.write([1, 3], {"v": [10.0, 30.0]})
        assert g.get([1, 3])["v"][0] == 1.0
        store.rollback()
        store.commit()
        b = g.get([1, 2, 3])
        assert b["v"][:2].tolist() == [1.0, 2.0]
        assert b.mask.tolist() == [False, False, True]
        g.write([3], {"v": [3.0]})  # after a rollback, the next write reuses the room
        store.commit()
        assert g.get([1, 2, 3])["v"].tolist() == [1.0, 2.0, 3.0]
        assert store.verify() == {"g": 3}


def test_many_commits_across_segments(tmp_path: Path, rng: np.random.Generator) -> None:
    """Rows, pages and sparse elements cross many segment files; every commit is read
    back against a dict model, by a writer and by a reader that never reopens."""
    model: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with mmfs.open(tmp_path / "s", segment_bytes=4096) as store:
        g = store.create_group("g", schema={"e": mmfs.dense(20), "s": mmfs.sparse(2000)})
        store.commit()
        reader = mmfs.open(tmp_path / "s", mode="r")
        rg = reader["g"]
        for _ in range(25):
            n = int(rng.integers(1, 150))
            keys = rng.integers(0, 2000, n)
            e = rng.normal(size=(n, 20)).astype(np.float32)
            s = sp.random(n, 2000, density=0.02, format="csr", rng=rng, dtype=np.float32)
            g.write(keys, {"e": e, "s": s}, event_time=np.datetime64("2026-01-01", "ns"))
            for i, k in enumerate(keys.tolist()):
                model[k] = (e[i], s[i].toarray()[0])
            store.commit()
            probe = np.array([*sorted(model), 5000])
            for who in (g, rg):
                b = who.get(probe)
                assert b.mask.tolist() == [False] * len(model) + [True]
                assert np.array_equal(b["e"][:-1], np.stack([model[k][0] for k in sorted(model)]))
                assert np.array_equal(
                    b["s"].toarray()[:-1], np.stack([model[k][1] for k in sorted(model)])
                )
        assert len(rg) == len(model)
        assert reader.generation == store.generation
        reader.close()
        assert store.verify() == {"g": len(model)}


def test_to_numpy_layout(tmp_path: Path, rng: np.random.Generator) -> None:
    n = 50
    values = make_values(rng, n)
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema=SCHEMA)
        g.write(np.arange(n), values)
        store.commit()
        b = g.get(np.r_[np.arange(n), 99])
        x = b.to_numpy()
        assert x.dtype == np.float32
        codes = b.codes("color")
        expected = np.column_stack(
            [
                values["f32"],
                values["f64"].astype(np.float32),
                values["i64"].astype(np.float32),
                values["flag"],
                codes[:n],
                values["emb"],
                values["half"].astype(np.float16).astype(np.float32),
                b["q"][:n],
                values["bits"],
            ]
        ).astype(np.float32)
        assert np.array_equal(x[:n], expected)
        assert np.isnan(x[n]).all()
        assert codes[n] == -1
        # one code per distinct string, -1 for None
        colors = values["color"]
        for i in range(n):
            assert (codes[i] == -1) == (colors[i] is None)
            for j in range(n):
                if colors[i] is not None and colors[j] is not None:
                    assert (codes[i] == codes[j]) == (colors[i] == colors[j])
        with pytest.raises(ParameterError, match="sparse"):
            b.to_numpy(["tags"])
        x64 = b.to_numpy(["emb", "f64"], dtype=np.float64)
        assert np.array_equal(x64[:n], np.column_stack([values["emb"], values["f64"]]))


def test_float32_to_numpy_is_the_block(tmp_path: Path, rng: np.random.Generator) -> None:
    schema = {f"s{i}": mmfs.scalar("float32") for i in range(8)} | {"emb": mmfs.dense(128)}
    n = 40
    vals = {f"s{i}": rng.normal(size=n) for i in range(8)} | {"emb": rng.normal(size=(n, 128))}
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema=schema)
        g.write(np.arange(n), vals)
        store.commit()
        b = g.get(np.arange(n))
        x = b.to_numpy()
        assert np.shares_memory(x, b["emb"])  # no copy
        ref = np.column_stack([vals[f"s{i}"] for i in range(8)] + [vals["emb"]]).astype(np.float32)
        assert np.array_equal(x, ref)
        assert np.array_equal(np.asarray(b), ref)
        sel = g.get([3, 1000], ["emb", "s2"])
        y = sel.to_numpy()
        assert np.array_equal(y[0], np.r_[vals["emb"][3], vals["s2"][3]].astype(np.float32))
        assert np.isnan(y[1]).all()


def test_int8_range_and_clipping(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        q = mmfs.dense(3, "int8", range=(-1.0, [1.0, 2.0, 3.0]))
        g = store.create_group("g", schema={"q": q})
        x = np.array([[-1.0, 0.0, 3.0], [5.0, -7.0, 1.5], [0.5, 1.0, 0.0]])
        g.write([1, 2, 3], {"q": x})
        store.commit()
        got = g.get([1, 2, 3])["q"]
        hi = np.array([1.0, 2.0, 3.0])
        step = (hi + 1.0) / 255
        clipped = np.clip(x, -1.0, hi)
        assert np.all(np.abs(got - clipped) <= step / 2 + 1e-6)
        # parameters are fixed by the first write: a later write is quantised the same way
        g.write([4], {"q": [[0.5, 1.0, 0.0]]})
        store.commit()
        assert np.array_equal(g.get(4)["q"], got[2:3])


def test_int8_constant_dimension(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"q": mmfs.dense(2, "int8")})
        g.write([1, 2], {"q": [[4.0, 1.0], [4.0, 3.0]]})
        store.commit()
        got = g.get([1, 2])["q"]
        assert got[:, 0].tolist() == [4.0, 4.0]
        assert np.allclose(got[:, 1], [1.0, 3.0], atol=2 / 255)


def test_reader_sees_new_commits_without_reopening(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"v": mmfs.scalar("int64")})
        g.write([1], {"v": [1]})
        store.commit()
        reader = mmfs.open(tmp_path / "s", mode="r")
        rg = reader["g"]
        assert rg.get(1)["v"].tolist() == [1]
        for i in range(2, 6):
            g.write([1, i], {"v": [i, i]})
            store.commit()
            assert rg.get(1)["v"].tolist() == [i]  # one key
            assert rg.get([1, i])["v"].tolist() == [i, i]  # many keys
        assert reader.generation == store.generation == 5
        g2 = store.create_group("h", schema={"w": mmfs.scalar("float32")})
        g2.write([1], {"w": [0.5]})
        store.commit()
        assert reader.groups() == ["g", "h"]
        assert reader["h"].get(1)["w"].tolist() == [0.5]
        reader.close()


def test_groups_create_describe_drop(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        a = store.create_group("a", key="k", schema={"v": mmfs.scalar("float32")}, description="A")
        store.create_group("b", key="k", key_type="str", schema={"e": mmfs.dense(3)})
        assert store.groups() == ["a", "b"]
        assert "a" in store
        assert "zzz" not in store
        a.write([1, 2], {"v": [1, 2]})
        store.commit()
        d = a.describe()
        assert (d["key"], d["key_type"], d["keys"], d["rows"], d["description"]) == (
            "k", "int64", 2, 2, "A",
        )  # fmt: skip
        assert d["features"] == {"v": {"type": "scalar", "dtype": "float32"}}
        assert d["last_written"] is not None
        assert set(store.describe()["groups"]) == {"a", "b"}
        store.drop_group("a")
        assert store.groups() == ["b"]
        reader = mmfs.open(tmp_path / "s", mode="r")
        assert reader.groups() == ["a", "b"]  # until the commit
        store.commit()
        assert reader.groups() == ["b"]
        with pytest.raises(NotFoundError, match="no group 'a'"):
            store["a"]
        again = store.create_group("a", schema={"x": mmfs.dense(2)})
        again.write([1], {"x": [[1, 2]]})
        store.commit()
        assert reader["a"].get(1)["x"].tolist() == [[1.0, 2.0]]
        assert reader["a"].features == ["x"]
        # older versions still read the dropped group, until gc drops them
        assert len(os.listdir(tmp_path / "s" / "groups")) == 3
        assert store.gc()["bytes_freed"] > 0
        assert len(os.listdir(tmp_path / "s" / "groups")) == 2  # the old files are gone
        reader.close()


def test_store_and_group_pickle_as_read_only_handles(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"v": mmfs.scalar("int64")})
        g.write([1], {"v": [7]})
        store.commit()
        g2 = pickle.loads(pickle.dumps(g))
        assert g2.get(1)["v"].tolist() == [7]
        s2 = pickle.loads(pickle.dumps(store))
        assert s2.mode == "r"
        assert s2["g"].get(1)["v"].tolist() == [7]
        with pytest.raises(ReadOnlyError):
            s2["g"].write([2], {"v": [1]})
        s2.close()


def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    store = mmfs.open(tmp_path / "s")
    g = store.create_group("g", schema={"v": mmfs.scalar("int64")})
    g.write([1], {"v": [7]})
    store.commit()
    batch = g.get([1])
    store.close()
    store.close()
    assert batch["v"].tolist() == [7]  # a batch owns its memory
    with pytest.raises(StoreClosedError):
        g.get(1)
    with pytest.raises(StoreClosedError):
        store.commit()
    with mmfs.open(tmp_path / "s") as again:  # the lock was released
        assert again["g"].get(1)["v"].tolist() == [7]


def test_dev_shm_store(rng: np.random.Generator) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm on this machine")
    path = shm / f"mmfs-test-{os.getpid()}-{rng.integers(1 << 30)}"
    try:
        with mmfs.open(path) as store:
            g = store.create_group("g", schema={"e": mmfs.dense(8)})
            x = rng.normal(size=(10, 8)).astype(np.float32)
            g.write(np.arange(10), {"e": x})
            store.commit()
            with mmfs.open(path, mode="r") as reader:
                assert np.array_equal(reader["g"].get(np.arange(10))["e"], x)
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def test_memory_budget_refuses_before_writing(tmp_path: Path, rng: np.random.Generator) -> None:
    with mmfs.open(tmp_path / "s", memory_budget="1MiB") as store:
        assert store.budget is not None
        g = store.create_group("g", schema={"e": mmfs.dense(256)})
        small = rng.normal(size=(10, 256))
        g.write(np.arange(10), {"e": small})
        store.commit()
        before = sorted(p.name for p in (tmp_path / "s").rglob("*"))
        with pytest.raises(MemoryBudgetError, match="write") as info:
            g.write(np.arange(5000), {"e": rng.normal(size=(5000, 256))})
        assert "1 MiB limit" in str(info.value)
        store.commit()
        assert len(g) == 10  # nothing of the refused write
        assert np.array_equal(g.get(np.arange(10))["e"], small.astype(np.float32))
        with pytest.raises(MemoryBudgetError, match="get"):
            g.get(np.zeros(5000, dtype=np.int64))
        assert store.budget.in_use == 0
        g.write([10], {"e": small[:1]})  # still usable
        store.commit()
        assert sorted(p.name for p in (tmp_path / "s").rglob("*")) != before
        assert len(g) == 11


def test_read_only_store(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        store.create_group("g", schema={"v": mmfs.scalar("int64")})
        store.commit()
    with mmfs.open(tmp_path / "s", mode="r") as reader:
        with pytest.raises(ReadOnlyError):
            reader.create_group("h", schema={"v": mmfs.scalar("int64")})
        with pytest.raises(ReadOnlyError):
            reader.commit()
        with pytest.raises(ReadOnlyError):
            reader["g"].write([1], {"v": [1]})
        assert reader.refresh() == 1


def test_threads_do_not_change_results(tmp_path: Path, rng: np.random.Generator) -> None:
    n = 20_000
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"e": mmfs.dense(4), "v": mmfs.scalar("int64")})
        g.write(np.arange(n), {"e": rng.normal(size=(n, 4)), "v": np.arange(n)})
        store.commit()
        keys = rng.integers(-10, n + 10, 50_000)
        one = g.get(keys, n_threads=1)
        two = g.get(keys, n_threads=2)
        assert np.array_equal(one.to_numpy(), two.to_numpy(), equal_nan=True)
        assert np.array_equal(one["v"][~one.mask], keys[~one.mask])


def test_recovery_removes_leftovers(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "s"
    with mmfs.open(path, segment_bytes=4096) as store:
        g = store.create_group("g", schema={"e": mmfs.dense(30)})
        g.write(np.arange(10), {"e": rng.normal(size=(10, 30))})
        store.commit()
        files_before = sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))
        g.write(np.arange(10, 400), {"e": rng.normal(size=(390, 30))})  # never committed
    gdir = path / "groups" / "g0"
    (path / "manifest-000000000002.mmfs.tmp").write_bytes(b"half")
    (gdir / "dir-000000000007.mmfs").write_bytes(b"x")
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*")) != files_before
    with mmfs.open(path) as store:
        assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*")) == files_before
        assert len(store["g"]) == 10


def test_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("hello")
    with pytest.raises(mmfs.FormatError, match="not an mmfs store"):
        mmfs.open(tmp_path / "junk")
    with pytest.raises(mmfs.FormatError, match="not an mmfs store"):
        mmfs.open(tmp_path / "missing", mode="r")
    with pytest.raises(ParameterError, match="mode"):
        mmfs.open(tmp_path / "x", mode="w")  # type: ignore[arg-type]


def test_budget_evicts_decoded_categories_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = 20_000
    names = [f"city-{i:06d}" for i in range(n)]
    with mmfs.open(tmp_path / "s", memory_budget="4MiB") as store:
        g = store.create_group("g", schema={"city": mmfs.category(), "v": mmfs.scalar("int64")})
        g.write(np.arange(n), {"city": names, "v": np.arange(n)})
        store.commit()
        budget = store.budget
        assert budget is not None
        assert g.get([5, 7])["city"].tolist() == [names[5], names[7]]
        held = budget.in_use
        assert held > 1 << 20  # the decoded table is charged while cached
        with caplog.at_level("WARNING", logger="mmfs.budget"):
            big = g.get(np.arange(4 * n))
            with budget.charge(budget.limit - 1_000_000, "a big neighbour"):  # type: ignore[operator]
                pass
        assert "evicted" in caplog.text
        assert budget.in_use == 0
        assert big["v"][:3].tolist() == [0, 1, 2]
        assert g.get(9)["city"].tolist() == [names[9]]  # decoded again on demand
        store.close()
        assert budget.in_use == 0


def test_superseded_index_files_are_removed(tmp_path: Path) -> None:
    """Each commit that adds keys writes a new key index; the ones before the previous
    are deleted, and a reader holding an old generation keeps reading what it mapped."""
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"c": mmfs.category(), "v": mmfs.scalar("int64")})
        g.write([0], {"c": ["zero"], "v": [0]})
        store.commit()
        reader = mmfs.open(tmp_path / "s", mode="r")
        old = reader["g"].get([0, 1])
        gdir = tmp_path / "s" / "groups" / "g0"
        for i in range(1, 8):
            g.write([i], {"c": [f"c{i}"], "v": [i]})
            store.commit()
            names = [p.name for p in gdir.iterdir()]
            assert sum(n.startswith("kidx-") for n in names) <= 4  # two generations x 2 arrays
            assert sum(n.startswith("cat-") for n in names) <= 8
        assert old["c"].tolist() == ["zero", None]  # decoded from the mapping it holds
        assert reader["g"].get([0, 7])["c"].tolist() == ["zero", "c7"]
        assert store.verify() == {"g": 8}
        reader.close()


def test_schema_factories_are_not_shadowed_by_submodules() -> None:
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(mmfs.__path__, "mmfs."):
        importlib.import_module(info.name)
    for name in ("scalar", "category", "dense", "sparse", "open"):
        assert callable(getattr(mmfs, name)), name
    assert isinstance(mmfs.sparse(3), Sparse)


def test_drop_and_create_again_before_commit(tmp_path: Path) -> None:
    schema = {"x": mmfs.scalar("float64")}
    with mmfs.open(tmp_path / "s") as store:
        store.create_group("a", schema=schema).write([1], {"x": [1.0]})
        store.commit()
        reader = mmfs.open(tmp_path / "s", mode="r")
        store.drop_group("a")
        g = store.create_group("a", schema={"y": mmfs.dense(2)})
        assert len(g) == 0
        assert g.get([1]).mask.tolist() == [True]  # the new group, empty until committed
        assert store.describe("a")["keys"] == 0
        g.write([2], {"y": [[1.0, 2.0]]})
        assert reader["a"].get(1)["x"].tolist() == [1.0]  # readers keep the old one
        store.commit()
        assert reader["a"].features == ["y"]
        assert reader["a"].get([1, 2]).mask.tolist() == [True, False]
        assert np.asarray(g.keys()).tolist() == [2]
        reader.close()


def test_empty_get(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema=SCHEMA)
        g.write([1], make_values(np.random.default_rng(0), 1))
        store.commit()
        b = g.get([])
        assert len(b) == 0
        for name in SCHEMA:
            assert len(b[name]) == 0 if name != "tags" else b[name].shape == (0, 300)
        assert b.to_numpy().shape == (0, 1 + 1 + 1 + 1 + 1 + 12 + 5 + 7 + 11)


def test_to_numpy_of_large_float64_is_inf_without_warning(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"x": mmfs.scalar("float64")})
        g.write([1, 2], {"x": [1e300, -1e300]})
        store.commit()
        assert g.get([1, 2]).to_numpy()[:, 0].tolist() == [np.inf, -np.inf]


def test_batch_protocol_and_pandas_columns(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"uid": [10, 20, 30], "x": [1.5, 2.5, 3.5], "c": ["a", None, "b"]})
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group(
            "g", key="uid", schema={"x": mmfs.scalar("float64"), "c": mmfs.category()}
        )
        g.write(frame["uid"], {"x": frame["x"], "c": frame["c"]})
        store.commit()
        b = g.get(pd.Series([30, 99]))
        assert list(b) == ["x", "c"]
        assert "x" in b
        assert "nope" not in b
        assert repr(b) == "<FeatureBatch 2 keys x ['x', 'c'], 1 missing>"
        assert b.to_dict()["c"].tolist() == ["b", None]
        assert b.found.tolist() == [True, False]
        assert b.keys.tolist() == [30, 99]
        with pytest.raises(ParameterError, match="not in this batch"):
            b["nope"]
        with pytest.raises(ParameterError, match="float dtype"):
            b.to_numpy(dtype=np.int32)
        with pytest.raises(ParameterError, match="not a category"):
            b.codes("x")
