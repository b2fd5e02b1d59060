"""Batch reads: ``group.get`` of many keys, ``iter_batches``, ``out=`` and the conversions
of a :class:`~mmfs.FeatureBatch` (numpy, pandas, Arrow, torch).

Every expectation is computed from what was written: a dict model holds each key's rows
(event time, write order, values as numpy/scipy arrays) and applies the documented rules
(the current row is the one with the greatest event time, ties to the later write; as of
t, the greatest event time <= t).  Where a value has no exact reference (int8 vectors,
category codes) the batch is compared with one-key reads or checked for consistency.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp

import mmfs
from mmfs.budget import parse_budget, process_memory
from mmfs.errors import (
    MemoryBudgetError,
    MissingDependencyError,
    NotFoundError,
    ParameterError,
)

SCHEMA = {
    "f32": mmfs.scalar("float32"),
    "f64": mmfs.scalar("float64"),
    "i64": mmfs.scalar("int64"),
    "flag": mmfs.scalar("bool"),
    "color": mmfs.category(),
    "emb": mmfs.dense(6),
    "half": mmfs.dense(3, "float16"),
    "bits": mmfs.dense(10, "bool"),
    "q": mmfs.dense(4, "int8", range=(-4.0, 4.0)),
    "tags": mmfs.sparse(40),
}
NAMES = list(SCHEMA)
COLORS = ["red", "green", "blue", "", "ünï"]
Q_STEP = 8.0 / 255  # the int8 quantisation step of range (-4, 4)
T0 = np.datetime64("2026-01-01T00:00:00", "ns")
HOUR = np.timedelta64(3_600_000_000_000, "ns")
#: (shape after the key axis, dtype, fill for a missing key) of the exactly stored features
EXACT: dict[str, tuple[tuple[int, ...], Any, Any]] = {
    "f32": ((), np.float32, np.nan),
    "f64": ((), np.float64, np.nan),
    "i64": ((), np.int64, 0),
    "flag": ((), np.bool_, False),
    "emb": ((6,), np.float32, np.nan),
    "half": ((3,), np.float16, np.nan),
    "bits": ((10,), np.bool_, False),
    "tags": ((40,), np.float32, 0.0),
}

Key = int | str
Row = dict[str, Any]


# --------------------------------------------------------------------------- reference


def make_values(rng: np.random.Generator, n: int) -> dict[str, Any]:
    return {
        "f32": rng.normal(size=n).astype(np.float32),
        "f64": rng.normal(size=n),
        "i64": rng.integers(-(2**62), 2**62, n),
        "flag": rng.random(n) < 0.5,
        "color": [None if rng.random() < 0.2 else COLORS[i] for i in rng.integers(0, 5, n)],
        "emb": rng.normal(size=(n, 6)).astype(np.float32),
        "half": rng.normal(size=(n, 3)),  # float64 in, float16 stored
        "bits": rng.random((n, 10)) < 0.4,
        "q": rng.uniform(-3.9, 3.9, size=(n, 4)),
        "tags": sp.random(n, 40, density=0.1, format="csr", rng=rng, dtype=np.float32),
    }


def row_of(values: dict[str, Any], i: int) -> Row:
    """Row i of a write, as a reader should see it (float16 vectors rounded)."""
    return {
        "f32": values["f32"][i],
        "f64": values["f64"][i],
        "i64": values["i64"][i],
        "flag": values["flag"][i],
        "color": values["color"][i],
        "emb": values["emb"][i],
        "half": values["half"][i].astype(np.float16),
        "bits": values["bits"][i],
        "q": values["q"][i],
        "tags": values["tags"][i].toarray()[0],
    }


@dataclass
class Model:
    """Every row written per key: (event time ns, write order, values)."""

    rows: dict[Key, list[tuple[int, int, Row]]] = field(default_factory=dict)
    first: list[Key] = field(default_factory=list)  # keys in order of first write
    seq: int = 0

    def write(self, g: mmfs.FeatureGroup, keys: list[Any], values: dict[str, Any], t: Any) -> None:
        assert g.write(keys, values, event_time=t) == len(keys)
        ts = np.broadcast_to(np.asarray(t, dtype="datetime64[ns]").astype(np.int64), (len(keys),))
        for i, k in enumerate(keys):
            if k not in self.rows:
                self.rows[k] = []
                self.first.append(k)
            self.seq += 1
            self.rows[k].append((int(ts[i]), self.seq, row_of(values, i)))

    def copy(self) -> Model:
        return Model({k: list(v) for k, v in self.rows.items()}, list(self.first), self.seq)

    def latest(self, k: Key) -> Row | None:
        rows = self.rows.get(k)
        return max(rows, key=lambda r: r[:2])[2] if rows else None

    def as_of(self, k: Key, t: Any) -> Row | None:
        tn = int(np.asarray(t, dtype="datetime64[ns]").astype(np.int64))
        rows = [r for r in self.rows.get(k, []) if r[0] <= tn]
        return max(rows, key=lambda r: r[:2])[2] if rows else None


def ref_array(name: str, rows: Sequence[Row | None]) -> np.ndarray:
    shape, dtype, fill = EXACT[name]
    out = np.full((len(rows), *shape), fill, dtype=dtype)
    for i, r in enumerate(rows):
        if r is not None:
            out[i] = r[name]
    return out


def check_codes(codes: np.ndarray, strings: Sequence[str | None]) -> None:
    """Category codes: -1 exactly where there is no value, one code per distinct str."""
    assert codes.dtype == np.int32
    by_str: dict[str, int] = {}
    for c, s in zip(codes.tolist(), strings, strict=True):
        if s is None:
            assert c == -1
        else:
            assert c >= 0
            assert by_str.setdefault(s, c) == c
    assert len(set(by_str.values())) == len(by_str)


def check_batch(
    batch: mmfs.FeatureBatch, rows: Sequence[Row | None], names: Sequence[str] = NAMES
) -> None:
    """Every feature of batch equals the reference rows (None: the key is missing)."""
    found = np.array([r is not None for r in rows], dtype=bool)
    assert len(batch) == len(rows)
    assert batch.names == tuple(names)
    assert np.array_equal(batch.mask, ~found)
    assert np.array_equal(batch.found, found)
    for name in names:
        got = batch[name]
        if name == "color":
            assert got.dtype == object
            assert got.tolist() == [None if r is None else r["color"] for r in rows]
            check_codes(batch.codes(name), got.tolist())
        elif name == "q":  # int8: within half a step of what was written, NaN where missing
            assert got.dtype == np.float32
            assert got.shape == (len(rows), 4)
            assert np.isnan(got[~found]).all()
            ref = np.array([r["q"] for r in rows if r is not None]).reshape(-1, 4)
            assert np.all(np.abs(got[found] - ref) <= Q_STEP / 2 + 1e-5)
        elif name == "tags":
            assert sp.issparse(got)
            assert got.format == "csr"
            assert got.shape == (len(rows), 40)
            assert got.dtype == np.float32
            assert np.array_equal(got.toarray(), ref_array(name, rows))
            assert got[np.flatnonzero(~found)].nnz == 0
        else:
            ref = ref_array(name, rows)
            assert got.dtype == ref.dtype, name
            assert got.shape == ref.shape, name
            assert np.array_equal(got, ref, equal_nan=ref.dtype.kind == "f"), name


def ref_matrix(
    batch: mmfs.FeatureBatch, rows: Sequence[Row | None], dtype: Any = np.float32
) -> np.ndarray:
    """The to_numpy() the documentation promises: every non-sparse feature in request
    order, float32, categories as their codes, bools 0/1, missing keys all NaN."""
    cols = []
    for name in batch.names:
        if name == "tags":
            continue
        if name == "color":
            cols.append(batch.codes(name).astype(dtype)[:, None])
        elif name == "q":
            cols.append(np.asarray(batch["q"], dtype=dtype))
        else:
            a = ref_array(name, rows).astype(dtype)
            cols.append(a.reshape(len(rows), -1))
    out = np.concatenate(cols, axis=1) if cols else np.empty((len(rows), 0), dtype)
    out[[r is None for r in rows]] = np.nan
    return out


def same_batches(parts: Sequence[mmfs.FeatureBatch], whole: mmfs.FeatureBatch) -> None:
    """The concatenation of parts equals whole, byte for byte, feature by feature."""
    assert sum(len(p) for p in parts) == len(whole)
    assert all(p.names == whole.names for p in parts)
    assert np.array_equal(np.concatenate([p.mask for p in parts]), whole.mask)
    assert np.concatenate([p.keys for p in parts]).tolist() == whole.keys.tolist()
    for name in whole.names:
        w = whole[name]
        if sp.issparse(w):
            got = sp.csr_matrix(sp.vstack([p[name] for p in parts]))
            assert np.array_equal(got.indptr, w.indptr)
            assert np.array_equal(got.indices, w.indices)
            assert got.data.tobytes() == w.data.tobytes()
        elif w.dtype == object:
            assert np.concatenate([p[name] for p in parts]).tolist() == w.tolist()
        else:
            got = np.concatenate([p[name] for p in parts])
            assert got.dtype == w.dtype
            assert got.tobytes() == w.tobytes(), name
    if any(not sp.issparse(whole[n]) for n in whole.names):
        got = np.concatenate([p.to_numpy() for p in parts])
        assert got.tobytes() == whole.to_numpy().tobytes()


def same_bytes(a: mmfs.FeatureBatch, b: mmfs.FeatureBatch) -> None:
    same_batches([a], b)


# --------------------------------------------------------------------------- fixtures


@dataclass
class Loaded:
    store: mmfs.Store
    g: mmfs.FeatureGroup
    model: Model
    version: int  # the one commit of the fixture
    absent: list[Any]  # keys never written
    rng: np.random.Generator

    def probe(self, n_found: int = 80, n_absent: int = 15, n_dup: int = 20) -> list[Any]:
        """Written keys, missing keys and repeats, in random order."""
        written = self.model.first
        pick = self.rng.choice(len(written), n_found, replace=False)
        keys = [written[i] for i in pick]
        keys += self.absent[:n_absent]
        keys += [keys[i] for i in self.rng.integers(0, len(keys), n_dup)]
        return [keys[i] for i in self.rng.permutation(len(keys))]


def fill(model: Model, g: mmfs.FeatureGroup, rng: np.random.Generator, keys: list[Any]) -> None:
    """Writes with updates, late data, ties across writes and a key repeated in a write."""
    model.write(g, keys[:200], make_values(rng, 200), T0)
    model.write(g, keys[100:240], make_values(rng, 140), T0 + 2 * HOUR)
    model.write(g, keys[50:150], make_values(rng, 100), T0 + HOUR)  # late for 100..149
    model.write(g, keys[120:130], make_values(rng, 10), T0 + 2 * HOUR)  # ties: later wins
    dup = [keys[0], keys[1], keys[0], keys[2], keys[1]]
    model.write(g, dup, make_values(rng, 5), T0 + 2 * HOUR)  # repeats: the last one wins
    times = T0 + rng.integers(0, 4, 30) * HOUR  # one time per key
    model.write(g, keys[200:230], make_values(rng, 30), times)


@pytest.fixture
def mixed(tmp_path: Path) -> Iterator[Loaded]:
    """An int64-keyed group of every feature type, 240 keys written, one commit."""
    rng = np.random.default_rng(20260101)
    raw = np.unique(rng.integers(-(2**62), 2**62, 400))
    keys = [int(k) for k in rng.permutation(raw)]
    keys[3:3] = [0, -1, 2**63 - 1, -(2**63)]  # the extremes are keys like any other
    with mmfs.open(tmp_path / "s", segment_bytes=4096, durability="none") as store:
        g = store.create_group("users", key="uid", schema=SCHEMA)
        model = Model()
        fill(model, g, rng, keys[:240])
        version = store.commit("load")
        yield Loaded(store, g, model, version, keys[240:], rng)


@pytest.fixture
def words(tmp_path: Path) -> Iterator[Loaded]:
    """The same, keyed by str."""
    rng = np.random.default_rng(7)
    keys = [f"user-{i}-ü" if i % 3 else f"u{i}" for i in rng.permutation(400).tolist()]
    with mmfs.open(tmp_path / "w", segment_bytes=4096, durability="none") as store:
        g = store.create_group("people", key="name", key_type="str", schema=SCHEMA)
        model = Model()
        fill(model, g, rng, keys[:240])
        version = store.commit("load")
        yield Loaded(store, g, model, version, keys[240:], rng)


# --------------------------------------------------------------------------- get


@pytest.mark.parametrize("as_array", [False, True], ids=["list", "ndarray"])
def test_get_equals_the_reference_for_every_feature_type(mixed: Loaded, as_array: bool) -> None:
    """Keys in random order, repeated and missing: each feature equals the latest written
    values (NaN / 0 / False / None / an empty sparse row where missing)."""
    probe = mixed.probe()
    request: Any = np.array(probe, dtype=np.int64) if as_array else probe
    batch = mixed.g.get(request)
    rows = [mixed.model.latest(k) for k in probe]
    assert any(r is None for r in rows)
    assert len(set(probe)) < len(probe)
    check_batch(batch, rows)
    assert batch.keys.dtype == np.int64
    assert batch.keys.tolist() == probe
    # a selection, in the order asked
    some = ["tags", "emb", "color", "f64", "bits"]
    check_batch(mixed.g.get(request, some), rows, some)
    check_batch(mixed.g.get(request, "i64"), rows, ["i64"])


def test_str_keys_equal_the_reference(words: Loaded) -> None:
    probe = words.probe()
    batch = words.g.get(probe)
    check_batch(batch, [words.model.latest(k) for k in probe])
    assert batch.keys.dtype == object
    assert batch.keys.tolist() == probe
    as_array = words.g.get(np.array(probe, dtype=object), ["f64", "tags"])
    check_batch(as_array, [words.model.latest(k) for k in probe], ["f64", "tags"])


@pytest.mark.parametrize("which", ["mixed", "words"])
def test_batch_rows_equal_one_key_reads(request: pytest.FixtureRequest, which: str) -> None:
    """Row i of a batch equals ``get(key_i)`` (the one-key path), int8 included."""
    data: Loaded = request.getfixturevalue(which)
    probe = data.probe(n_found=40, n_absent=8, n_dup=8)
    batch = data.g.get(probe)
    matrix = batch.to_numpy()
    for i, k in enumerate(probe):
        one = data.g.get(k)
        assert len(one) == 1
        assert one.mask.tolist() == [batch.mask[i]]
        assert one.keys.tolist() == [k]
        for name in NAMES:
            a, b = one[name], batch[name]
            if sp.issparse(a):
                assert np.array_equal(a.toarray()[0], b[i].toarray()[0])
            elif a.dtype == object:
                assert a.tolist() == [b[i]]
            else:
                assert a.shape == (1, *b.shape[1:])
                assert a.dtype == b.dtype
                assert np.array_equal(a[0], b[i], equal_nan=a.dtype.kind == "f")
        assert one.to_numpy()[0].tobytes() == matrix[i].tobytes()


@pytest.mark.parametrize("kind", ["list", "ndarray"])
@pytest.mark.parametrize("which", ["mixed", "words"])
@pytest.mark.parametrize("as_of", [None, T0 + HOUR], ids=["latest", "as_of"])
def test_empty_requests(request: pytest.FixtureRequest, which: str, kind: str, as_of: Any) -> None:
    """No keys: a batch of length 0 whose every view has 0 rows."""
    data: Loaded = request.getfixturevalue(which)
    dtype = np.int64 if which == "mixed" else object
    keys: Any = [] if kind == "list" else np.array([], dtype=dtype)
    batch = data.g.get(keys, as_of=as_of)
    assert len(batch) == 0
    assert batch.mask.shape == (0,)
    assert batch.keys.shape == (0,)
    check_batch(batch, [])
    width = sum(t.width for n, t in SCHEMA.items() if n != "tags")
    assert batch.to_numpy().shape == (0, width)
    assert np.asarray(batch).shape == (0, width)
    frame = batch.to_pandas()
    assert frame.shape == (0, len(NAMES))
    assert list(frame.columns) == NAMES
    arrow_names = [n for n in NAMES if n != "bits"]  # bits: see the dense bool test
    rb = data.g.get(keys, arrow_names, as_of=as_of).to_arrow()
    assert (rb.num_rows, rb.num_columns) == (0, len(arrow_names))
    only_f32 = data.g.get(keys, ["f32", "emb"], as_of=as_of)
    assert only_f32.to_numpy().shape == (0, 7)
    assert list(data.g.iter_batches(keys, batch_size=4)) == []


def test_version_pinned_after_later_writes_and_commits(mixed: Loaded) -> None:
    """A read of an old version sees exactly that version, whatever came after: updates,
    new keys, late data, another commit and uncommitted writes."""
    store, g, rng = mixed.store, mixed.g, mixed.rng
    models = {mixed.version: mixed.model.copy()}
    model = mixed.model
    keys = model.first + mixed.absent
    model.write(g, keys[0:300:2], make_values(rng, 150), T0 + 3 * HOUR)
    model.write(g, keys[1:100:3], make_values(rng, 33), T0 - HOUR)  # late data
    v2 = store.commit("second", tags="two")
    models[v2] = model.copy()
    model.write(g, keys[5:330:4], make_values(rng, 82), T0 + 5 * HOUR)
    v3 = store.commit("third")
    models[v3] = model.copy()
    g.write(keys[:60], make_values(rng, 60), event_time=T0 + 9 * HOUR)  # not committed
    probe = mixed.probe(n_found=100, n_absent=60)
    for v, m in models.items():
        batch = g.get(probe, version=v)
        check_batch(batch, [m.latest(k) for k in probe])
        for k in probe[:12]:
            check_batch(g.get(k, version=v), [m.latest(k)])
    check_batch(g.get(probe, version="two"), [models[v2].latest(k) for k in probe])
    check_batch(g.get(probe), [models[v3].latest(k) for k in probe])  # the newest commit


@pytest.mark.parametrize("which", ["mixed", "words"])
def test_a_reader_reads_a_pinned_version_alike_before_and_after_later_commits(
    request: pytest.FixtureRequest, which: str
) -> None:
    """In a reader, a many-key read of the newest version may take the live snapshot
    rather than the history: every feature must equal the reference either way, before
    and after the writer commits updates and late data."""
    data: Loaded = request.getfixturevalue(which)
    name, old = data.g.name, data.model.copy()
    probe = data.probe()
    want = [old.latest(k) for k in probe]
    with mmfs.open(data.store.path, mode="r") as reader:
        pinned = reader.group(name, version=data.version)
        first = pinned.get(probe)
        check_batch(first, want)
        same_bytes(reader[name].get(probe, version=data.version), first)
        same_bytes(reader[name].get(probe), first)
        raw = np.empty(len(probe) * first.row_bytes, dtype=np.uint8)
        same_bytes(pinned.get(probe, out=raw), first)
        with pytest.raises(NotFoundError):
            pinned.get(probe, missing="raise")
        keys = data.model.first[::2] + data.absent[:20]
        data.model.write(data.g, keys, make_values(data.rng, len(keys)), T0 + 3 * HOUR)
        late = data.model.first[1::2]
        data.model.write(data.g, late, make_values(data.rng, len(late)), T0 - HOUR)
        data.store.commit("after")
        for _ in range(2):
            same_bytes(pinned.get(probe), first)
            same_bytes(reader[name].get(probe, version=data.version), first)
        for k in probe[:10]:
            check_batch(pinned.get(k), [old.latest(k)])
        parts = list(pinned.iter_batches(probe, batch_size=20))
        same_batches(parts, first)
        check_batch(reader[name].get(probe), [data.model.latest(k) for k in probe])


def test_as_of_one_time_and_one_per_key(mixed: Loaded) -> None:
    """as_of: each key's row with the greatest event time <= t, ties to the later write;
    one time for all keys, one per key, one key; small batches and the sorted path
    (>= 2048 keys, with repeats)."""
    g, model, rng = mixed.g, mixed.model, mixed.rng
    probe = mixed.probe()
    ns = np.timedelta64(1, "ns")
    times = [T0 - ns, T0, T0 + HOUR // 2, T0 + HOUR, T0 + HOUR + ns, T0 + 2 * HOUR, T0 + 9 * HOUR]
    for t in times:
        check_batch(g.get(probe, as_of=t), [model.as_of(k, t) for k in probe])
        for k in probe[:6]:
            check_batch(g.get(k, as_of=t), [model.as_of(k, t)])
    per_key = T0 + rng.integers(-1, 5, len(probe)) * (HOUR // 2)
    rows = [model.as_of(k, t) for k, t in zip(probe, per_key, strict=True)]
    check_batch(g.get(probe, as_of=per_key), rows)
    assert any(r is None for r in rows)
    big = [probe[i] for i in rng.integers(0, len(probe), 2500)]
    big_t = T0 + rng.integers(-1, 5, len(big)) * (HOUR // 2)
    big_rows = [model.as_of(k, t) for k, t in zip(big, big_t, strict=True)]
    check_batch(g.get(big, as_of=big_t), big_rows)
    check_batch(g.get(np.array(big), as_of=times[3]), [model.as_of(k, times[3]) for k in big])
    # combined with a version: what v knew about the facts as of t
    before = model.copy()
    model.write(g, model.first[:100], make_values(rng, 100), T0 + HOUR // 2)
    mixed.store.commit("more")
    t = T0 + HOUR
    check_batch(g.get(probe, as_of=t, version=mixed.version), [before.as_of(k, t) for k in probe])
    check_batch(g.get(probe, as_of=t), [model.as_of(k, t) for k in probe])


def test_as_of_with_str_keys(words: Loaded) -> None:
    probe = words.probe()
    per_key = T0 + words.rng.integers(-1, 5, len(probe)) * (HOUR // 2)
    rows = [words.model.as_of(k, t) for k, t in zip(probe, per_key, strict=True)]
    check_batch(words.g.get(probe, as_of=per_key), rows)


@pytest.mark.parametrize("which", ["mixed", "words"])
def test_missing_raise(request: pytest.FixtureRequest, which: str) -> None:
    data: Loaded = request.getfixturevalue(which)
    g = data.g
    written, absent = data.model.first, data.absent
    found = written[:30]
    check_batch(g.get(found, missing="raise"), [data.model.latest(k) for k in found])
    check_batch(g.get(found[0], missing="raise"), [data.model.latest(found[0])])
    with pytest.raises(NotFoundError, match="1 of 31 keys not found") as info:
        g.get([*found[:20], absent[0], *found[20:]], missing="raise")
    assert repr(absent[0]) in str(info.value) or str(absent[0]) in str(info.value)
    with pytest.raises(NotFoundError):
        g.get(absent[0], missing="raise")
    with pytest.raises(NotFoundError):
        g.get(np.array(absent[:3]), ["f32"], missing="raise")
    with pytest.raises(NotFoundError):  # every key written, none by then
        g.get(found, as_of=T0 - HOUR, missing="raise")
    with pytest.raises(NotFoundError):
        g.get(found[0], as_of=T0 - HOUR, missing="raise")
    with pytest.raises(ParameterError):
        g.get(found, missing="zero")


# --------------------------------------------------------------------------- threads

BIG_SCHEMA = {
    "x": mmfs.scalar("float32"),
    "n": mmfs.scalar("int64"),
    "c": mmfs.category(),
    "e": mmfs.dense(8),
    "s": mmfs.sparse(64),
}


@dataclass
class Big:
    g: mmfs.FeatureGroup
    str_keys: bool  # the group's keys are f"k{key}"
    keys: np.ndarray  # written, sorted (as int64)
    first: dict[str, Any]  # the values of the write at T0 (one row per key of keys)
    second: dict[str, Any]  # the values of the write at T0 + 2h
    updated: np.ndarray  # for each of keys, whether the second write has it (its row there)


def big_values(rng: np.random.Generator, n: int) -> dict[str, Any]:
    return {
        "x": rng.normal(size=n).astype(np.float32),
        "n": rng.integers(-(10**12), 10**12, n),
        "c": np.array([f"c{i}" for i in rng.integers(0, 50, n)], dtype=object),
        "e": rng.normal(size=(n, 8)).astype(np.float32),
        "s": sp.random(n, 64, density=0.05, format="csr", rng=rng, dtype=np.float32),
    }


@pytest.fixture(params=["int64", "str"])
def big(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Big]:
    """30,000 keys written at T0, half of them again at T0 + 2h."""
    str_keys = request.param == "str"
    rng = np.random.default_rng(99)
    keys = np.sort(rng.choice(10**9, 30_000, replace=False).astype(np.int64))
    first = big_values(rng, keys.size)
    order = rng.permutation(keys.size)
    upd = np.sort(order[:15_000])  # positions in keys of the keys written again
    second = big_values(rng, upd.size)
    updated = np.full(keys.size, -1, dtype=np.int64)
    updated[upd] = np.arange(upd.size)
    with mmfs.open(tmp_path / "big", durability="none") as store:
        g = store.create_group("big", key_type=request.param, schema=BIG_SCHEMA)
        as_keys = big_keys if str_keys else lambda k: k
        g.write(as_keys(keys[order]), {k: v[order] for k, v in first.items()}, event_time=T0)
        g.write(as_keys(keys[upd]), second, event_time=T0 + 2 * HOUR)
        store.commit()
        yield Big(g, str_keys, keys, first, second, updated)


def big_keys(keys: np.ndarray) -> np.ndarray:
    return np.array([f"k{k}" for k in keys.tolist()], dtype=object)


def big_reference(big: Big, probe: np.ndarray, times: np.ndarray | None) -> dict[str, Any]:
    """Values of probe (latest, or as of per-key times), NaN/0/None/empty where missing."""
    pos = np.minimum(np.searchsorted(big.keys, probe), big.keys.size - 1)
    known = big.keys[pos] == probe
    j = np.where(known, big.updated[pos], -1)
    t2 = (T0 + 2 * HOUR) if times is None else times
    use2 = known & (j >= 0) & (t2 >= T0 + 2 * HOUR)
    use1 = known & ~use2 & ((T0 if times is None else times) >= T0)
    out: dict[str, Any] = {"found": use1 | use2}
    for name in BIG_SCHEMA:
        a, b = big.first[name], big.second[name]
        if name == "s":
            a, b = a.toarray(), b.toarray()
        if name == "c":
            val = np.full(probe.size, None, dtype=object)
        else:
            fill_value = np.nan if a.dtype.kind == "f" and name != "s" else 0
            val = np.full((probe.size, *a.shape[1:]), fill_value, dtype=a.dtype)
        val[use1] = a[pos[use1]]
        val[use2] = b[j[use2]]
        out[name] = val
    return out


@pytest.mark.parametrize("path", ["latest", "as_of"])
def test_results_identical_for_any_thread_count(big: Big, path: str) -> None:
    """40,000 keys (parallel from 2,048; as_of >= 2048 takes the sorted path): every
    thread count gives the same bytes, and they equal the reference."""
    rng = np.random.default_rng(5)
    probe = np.concatenate(
        [
            rng.permutation(big.keys),
            rng.integers(10**9, 2 * 10**9, 5_000),  # never written
            rng.choice(big.keys, 5_000),  # repeats
        ]
    )
    probe = probe[rng.permutation(probe.size)]
    assert probe.size == 40_000
    times = None
    if path == "as_of":
        times = T0 + rng.integers(-1, 4, probe.size) * HOUR
    asked = big_keys(probe) if big.str_keys else probe
    batches = {n: big.g.get(asked, as_of=times, n_threads=n) for n in (1, 2, 4, None)}
    ref = big_reference(big, probe, times)
    b1 = batches[1]
    assert np.array_equal(b1.found, ref["found"])
    assert 0 < b1.mask.sum() < probe.size
    for name in BIG_SCHEMA:
        got = b1[name]
        if name == "s":
            assert np.array_equal(got.toarray(), ref[name])
        elif name == "c":
            assert got.tolist() == ref[name].tolist()
        else:
            assert np.array_equal(got, ref[name], equal_nan=got.dtype.kind == "f"), name
    for n in (2, 4, None):
        same_bytes(batches[n], b1)
    parts = list(big.g.iter_batches(asked, batch_size=17_000, as_of=times, n_threads=4))
    assert [len(p) for p in parts] == [17_000, 17_000, 6_000]
    same_batches(parts, b1)


# --------------------------------------------------------------------------- out=

F32 = ["f32", "emb"]  # every feature float32: the block is the (n, 7) matrix


@pytest.mark.parametrize("as_of", ["none", "small", "sorted"])
def test_out_is_the_float32_matrix(mixed: Loaded, as_of: str) -> None:
    """With every feature float32, to_numpy() is a view of out, filled as without out."""
    probe = mixed.probe()
    if as_of == "sorted":  # >= 2048 keys: the sorted as-of path writes into out
        probe = [probe[i] for i in mixed.rng.integers(0, len(probe), 2100)]
    t = None if as_of == "none" else T0 + HOUR
    want = mixed.g.get(probe, F32, as_of=t)
    out = np.full((len(probe), 7), 123.0, dtype=np.float32)
    batch = mixed.g.get(probe, F32, as_of=t, out=out)
    m = batch.to_numpy()
    assert np.shares_memory(m, out)
    assert np.shares_memory(batch["emb"], out)
    assert m.tobytes() == want.to_numpy().tobytes()
    assert np.array_equal(out, want.to_numpy(), equal_nan=True)
    rows = [mixed.model.latest(k) if t is None else mixed.model.as_of(k, t) for k in probe]
    check_batch(batch, rows, F32)
    # out= is what the next batch of the same features reads into
    again = mixed.g.get(probe[::-1], F32, as_of=t, out=m)
    assert np.shares_memory(again.to_numpy(), out)
    check_batch(again, rows[::-1], F32)


def test_out_larger_than_needed_uses_its_prefix(mixed: Loaded) -> None:
    probe = mixed.probe()
    n = len(probe)
    out = np.full((n + 9, 7), 5.0, dtype=np.float32)
    batch = mixed.g.get(probe, F32, out=out)
    assert batch.to_numpy().shape == (n, 7)
    assert np.shares_memory(batch.to_numpy(), out)
    assert np.array_equal(out[:n], mixed.g.get(probe, F32).to_numpy(), equal_nan=True)
    assert (out[n:] == 5.0).all()  # beyond the prefix: untouched
    flat = np.zeros(n * 7 * 4 + 100, dtype=np.uint8)  # any dtype, any shape, in bytes
    batch = mixed.g.get(probe, F32, out=flat)
    assert np.shares_memory(batch.to_numpy(), flat)
    check_batch(batch, [mixed.model.latest(k) for k in probe], F32)
    assert (flat[n * 28 :] == 0).all()


@pytest.mark.parametrize("as_of", [None, T0 + HOUR], ids=["latest", "as_of"])
def test_out_with_mixed_types_reads_the_same_values(mixed: Loaded, as_of: Any) -> None:
    probe = mixed.probe()
    want = mixed.g.get(probe, as_of=as_of)
    out = np.empty(len(probe) * want.row_bytes, dtype=np.uint8)
    batch = mixed.g.get(probe, as_of=as_of, out=out)
    assert batch.row_bytes == want.row_bytes
    assert np.shares_memory(batch["f64"], out)
    same_bytes(batch, want)
    model = mixed.model
    check_batch(batch, [model.latest(k) if as_of is None else model.as_of(k, as_of) for k in probe])


def test_out_one_key_fills_out(mixed: Loaded) -> None:
    k, missing = mixed.model.first[7], mixed.absent[0]
    out = np.full((1, 7), 9.0, dtype=np.float32)
    batch = mixed.g.get(k, F32, out=out)
    assert np.shares_memory(batch.to_numpy(), out)
    assert out.tobytes() == mixed.g.get(k, F32).to_numpy().tobytes()
    check_batch(batch, [mixed.model.latest(k)], F32)
    batch = mixed.g.get(missing, F32, out=out)
    assert batch.mask.tolist() == [True]
    assert np.shares_memory(batch.to_numpy(), out)
    assert np.isnan(out).all()  # to_numpy() marks the missing key in out
    raw = np.empty(mixed.g.get(k).row_bytes, dtype=np.uint8)
    check_batch(mixed.g.get(k, out=raw), [mixed.model.latest(k)])


def _not_contiguous(n: int) -> np.ndarray:
    return np.empty((n, 14), dtype=np.float32)[:, ::2]


def _read_only(n: int) -> np.ndarray:
    a = np.empty((n, 7), dtype=np.float32)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize(
    "make",
    [
        lambda n: [[0.0] * 7] * n,
        lambda n: memoryview(bytearray(n * 28)),
        _not_contiguous,
        _read_only,
        lambda n: np.empty((n - 1, 7), dtype=np.float32),
        lambda n: np.empty(n * 28 - 1, dtype=np.uint8),
    ],
    ids=["list", "memoryview", "non-contiguous", "read-only", "too-small", "one-byte-short"],
)
def test_out_errors(mixed: Loaded, make: Any) -> None:
    probe = mixed.probe()
    with pytest.raises(ParameterError, match="out"):
        mixed.g.get(probe, F32, out=make(len(probe)))
    with pytest.raises(ParameterError, match="out"):
        mixed.g.get(probe, F32, as_of=T0, out=make(len(probe)))
    with pytest.raises(ParameterError, match="out"):
        mixed.g.get(probe[0], F32, out=make(1))


# --------------------------------------------------------------------------- iter_batches


def test_iter_batches_covers_every_committed_key_once_in_slot_order(mixed: Loaded) -> None:
    g, model = mixed.g, mixed.model
    g.write(mixed.absent[:10], make_values(mixed.rng, 10), event_time=T0)  # not committed
    parts = list(g.iter_batches(batch_size=37))
    n = len(model.first)
    assert len(g) == n
    assert [len(p) for p in parts] == [37] * (n // 37) + ([n % 37] if n % 37 else [])
    assert np.concatenate([p.keys for p in parts]).tolist() == model.first
    for p in parts:
        assert not p.mask.any()
        check_batch(p, [model.latest(k) for k in p.keys.tolist()])
    same_batches(parts, g.get(model.first))
    some = ["tags", "f32"]
    same_batches(list(g.iter_batches(batch_size=50, features=some)), g.get(model.first, some))


@pytest.mark.parametrize("kind", ["list", "ndarray", "series"])
def test_iter_batches_of_keys_equals_get(mixed: Loaded, kind: str) -> None:
    """Explicit keys (repeats, missing): the batches, put together, are get(keys)."""
    probe = mixed.probe()
    keys: Any = {"list": probe, "ndarray": np.array(probe), "series": pd.Series(probe)}[kind]
    parts = list(mixed.g.iter_batches(keys, batch_size=16))
    assert [len(p) for p in parts[:-1]] == [16] * (len(parts) - 1)
    assert 1 <= len(parts[-1]) <= 16
    whole = mixed.g.get(np.array(probe))
    same_batches(parts, whole)
    check_batch(whole, [mixed.model.latest(k) for k in probe])
    parts = list(mixed.g.iter_batches(keys, batch_size=len(probe) + 5))
    assert len(parts) == 1
    same_batches(parts, whole)


def test_iter_batches_str_keys(words: Loaded) -> None:
    g, model = words.g, words.model
    parts = list(g.iter_batches(batch_size=64))
    assert [len(p) for p in parts] == [64, 64, 64, 48]
    assert np.concatenate([p.keys for p in parts]).tolist() == model.first
    same_batches(parts, g.get(model.first))
    probe = words.probe()
    parts = list(g.iter_batches(probe, batch_size=9, features=["color", "half"]))
    same_batches(parts, g.get(probe, ["color", "half"]))
    check_batch(g.get(probe), [model.latest(k) for k in probe])


@pytest.mark.parametrize("which", ["mixed", "words"])
def test_iter_batches_of_a_version_ignores_later_commits(
    request: pytest.FixtureRequest, which: str
) -> None:
    data: Loaded = request.getfixturevalue(which)
    g, model, rng = data.g, data.model, data.rng
    before = model.copy()
    keys = model.first[:100] + data.absent[:40]
    model.write(g, keys, make_values(rng, len(keys)), T0 + 4 * HOUR)
    data.store.commit("later")
    parts = list(g.iter_batches(batch_size=31, version=data.version))
    assert np.concatenate([p.keys for p in parts]).tolist() == before.first
    for p in parts:
        check_batch(p, [before.latest(k) for k in p.keys.tolist()])
    probe = data.probe()
    parts = list(g.iter_batches(probe, batch_size=31, version=data.version))
    same_batches(parts, g.get(probe, version=data.version))
    check_batch(g.get(probe, version=data.version), [before.latest(k) for k in probe])
    now = list(g.iter_batches(batch_size=31))
    assert np.concatenate([p.keys for p in now]).tolist() == model.first


@pytest.mark.parametrize("which", ["mixed", "words"])
def test_iter_batches_does_not_see_commits_made_while_iterating(
    request: pytest.FixtureRequest, which: str
) -> None:
    """The store is read as it was at the call: a commit before the first batch or
    between two batches changes nothing the iteration yields."""
    data: Loaded = request.getfixturevalue(which)
    g, model, rng = data.g, data.model, data.rng
    before = model.copy()
    probe = data.probe()
    every = g.iter_batches(batch_size=50)
    chosen = g.iter_batches(probe, batch_size=50)
    first = next(every)
    keys = model.first + data.absent[:30]
    model.write(g, keys, make_values(rng, len(keys)), T0 + 6 * HOUR)
    data.store.commit("meanwhile")
    parts = [first, *every]
    assert np.concatenate([p.keys for p in parts]).tolist() == before.first
    for p in parts:
        check_batch(p, [before.latest(k) for k in p.keys.tolist()])
    same_batches(list(chosen), g.get(probe, version=data.version))
    check_batch(g.get(probe), [model.latest(k) for k in probe])  # the commit is there


def test_iter_batches_as_of_is_sliced_per_batch(mixed: Loaded) -> None:
    g, model, rng = mixed.g, mixed.model, mixed.rng
    probe = mixed.probe()
    times = T0 + rng.integers(-1, 5, len(probe)) * (HOUR // 2)
    parts = list(g.iter_batches(probe, batch_size=13, as_of=times))
    whole = g.get(probe, as_of=times)
    same_batches(parts, whole)
    check_batch(whole, [model.as_of(k, t) for k, t in zip(probe, times, strict=True)])
    n = len(model.first)  # every key, one time each
    every_t = T0 + rng.integers(-1, 5, n) * (HOUR // 2)
    parts = list(g.iter_batches(batch_size=21, as_of=every_t))
    assert np.concatenate([p.keys for p in parts]).tolist() == model.first
    rows = [model.as_of(k, t) for k, t in zip(model.first, every_t, strict=True)]
    check_batch(g.get(model.first, as_of=every_t), rows)
    same_batches(parts, g.get(model.first, as_of=every_t))
    one_t = T0 + HOUR
    parts = list(g.iter_batches(probe, batch_size=8, as_of=one_t))
    same_batches(parts, g.get(probe, as_of=one_t))


@pytest.mark.parametrize("batch_size", [0, -1, True, 1.5, "8"])
def test_iter_batches_refuses_a_bad_batch_size_at_the_call(mixed: Loaded, batch_size: Any) -> None:
    with pytest.raises(ParameterError, match="batch_size"):
        mixed.g.iter_batches(batch_size=batch_size)  # no next(): raised at the call
    with pytest.raises(ParameterError, match="batch_size"):
        mixed.g.iter_batches(mixed.model.first, batch_size)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"features": ["f32", "nope"]},
        {"features": ["f32", "f32"]},
        {"missing": "skip"},
        {"as_of": np.array([T0, T0])},  # not one time per key
    ],
    ids=["unknown-feature", "feature-twice", "missing", "as_of-length"],
)
def test_iter_batches_checks_its_arguments_at_the_call(
    mixed: Loaded, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ParameterError):
        mixed.g.iter_batches(mixed.model.first[:5], 2, **kwargs)


@pytest.mark.slow
def test_iter_batches_stays_within_a_small_memory_budget(tmp_path: Path) -> None:
    """~100 MB of dense vectors read through a store with a 32 MiB budget: one get() of
    every key is refused (pointing at iter_batches), iter_batches(batch_size=None) sizes
    its batches from the budget, and the process's anonymous memory grows by less than
    the budget while iterating (each batch dropped before the next)."""
    n, dim, chunk = 200_000, 128, 50_000
    cols = np.arange(dim, dtype=np.float32)

    def vectors(keys: np.ndarray) -> np.ndarray:  # exact in float32: < 2**24
        return ((keys % 4096) * dim).astype(np.float32)[:, None] + cols

    order = np.random.default_rng(3).permutation(n).astype(np.int64) * 7 + 11
    path = tmp_path / "large"
    with mmfs.open(path, durability="none") as store:
        g = store.create_group("g", schema={"v": mmfs.dense(dim), "w": mmfs.scalar("int64")})
        for a in range(0, n, chunk):
            keys = order[a : a + chunk]
            g.write(keys, {"v": vectors(keys), "w": keys * 3})
        store.commit()
    limit = parse_budget("32MiB")
    assert limit is not None
    assert n * (dim * 4 + 8) > 3 * limit
    with mmfs.open(path, memory_budget="32MiB", mode="r") as store:
        g = store["g"]
        budget = store.budget
        assert budget is not None
        assert budget.limit == limit
        with pytest.raises(MemoryBudgetError, match="iter_batches"):
            g.get(order)
        baseline = process_memory()
        grown = 0
        seen = 0
        sizes = []
        for batch in g.iter_batches(batch_size=None):
            nbytes = len(batch) * batch.row_bytes
            assert nbytes <= limit
            assert nbytes <= limit // 4  # "a quarter of what it has free"
            keys = batch.keys
            assert np.array_equal(keys, order[seen : seen + len(batch)])
            assert np.array_equal(batch["v"], vectors(keys))
            assert np.array_equal(batch["w"], keys * 3)
            grown = max(grown, process_memory() - baseline)
            sizes.append(len(batch))
            seen += len(batch)
            del batch, keys
        assert seen == n
        assert len(sizes) >= 4  # the data is several budgets large
        assert all(s == sizes[0] for s in sizes[:-1])
        assert grown <= limit, f"anonymous memory grew by {grown} bytes, budget {limit}"


# --------------------------------------------------------------------------- conversions


@pytest.mark.parametrize("with_missing", [True, False])
def test_asarray_and_to_numpy_equal_the_reference(mixed: Loaded, with_missing: bool) -> None:
    probe = mixed.probe(n_absent=15 if with_missing else 0)
    rows = [mixed.model.latest(k) for k in probe]
    batch = mixed.g.get(probe)
    m = batch.to_numpy()
    assert m.dtype == np.float32
    assert m.shape == (len(probe), sum(t.width for n, t in SCHEMA.items() if n != "tags"))
    assert m.tobytes() == ref_matrix(batch, rows).tobytes()
    assert np.asarray(batch).tobytes() == m.tobytes()
    wide = np.asarray(batch, dtype=np.float64)  # float64 straight from the values
    assert wide.tobytes() == batch.to_numpy(dtype=np.float64).tobytes()
    assert wide.tobytes() == ref_matrix(batch, rows, np.float64).tobytes()
    sel = ["emb", "i64", "color"]
    part = batch.to_numpy(sel)
    sub = mixed.g.get(probe, sel)
    assert part.tobytes() == sub.to_numpy().tobytes() == ref_matrix(sub, rows).tobytes()
    f32 = mixed.g.get(probe, F32)
    assert np.asarray(f32).tobytes() == ref_matrix(f32, rows).tobytes()
    with pytest.raises(ParameterError, match="sparse"):
        batch.to_numpy(["tags"])


@pytest.mark.parametrize("with_missing", [True, False])
def test_to_pandas_equals_a_frame_built_from_the_reference(
    mixed: Loaded, with_missing: bool
) -> None:
    probe = mixed.probe(n_absent=15 if with_missing else 0)
    rows = [mixed.model.latest(k) for k in probe]
    order = ["tags", "i64", "emb", "color", "f64", "flag", "half", "f32", "bits", "q"]
    batch = mixed.g.get(probe, order)
    frame = batch.to_pandas()
    assert list(frame.columns) == order
    index = pd.Index(np.array(probe, dtype=np.int64), name="uid")
    pd.testing.assert_index_equal(frame.index, index)
    i64, flag = ref_array("i64", rows), ref_array("flag", rows)
    i64_na = [None if r is None else int(r["i64"]) for r in rows]
    flag_na = [None if r is None else bool(r["flag"]) for r in rows]
    expected = pd.DataFrame(
        {
            "i64": pd.array(i64_na, dtype="Int64") if with_missing else i64,
            "color": pd.Series(
                [None if r is None else r["color"] for r in rows], dtype=object, index=index
            ),
            "f64": ref_array("f64", rows),
            "flag": pd.array(flag_na, dtype="boolean") if with_missing else flag,
            "f32": ref_array("f32", rows),
        },
        index=index,
    )
    pd.testing.assert_frame_equal(frame[list(expected.columns)], expected)
    for name in ("emb", "half", "bits"):
        col = frame[name]
        assert col.dtype == object
        ref = ref_array(name, rows)
        for i in range(len(probe)):
            assert col.iloc[i].dtype == ref.dtype
            assert np.array_equal(col.iloc[i], ref[i], equal_nan=ref.dtype.kind == "f")
    q = np.stack(list(frame["q"]))
    assert q.tobytes() == batch["q"].tobytes()
    tags = ref_array("tags", rows)
    for i in range(len(probe)):
        cell = frame["tags"].iloc[i]
        assert sp.issparse(cell)
        assert cell.shape == (1, 40)
        assert np.array_equal(cell.toarray()[0], tags[i])
    # float32 scalars only: the frame's values are the batch's own block
    only = mixed.g.get(probe, ["f32"])
    small = only.to_pandas()
    assert np.shares_memory(small["f32"].to_numpy(), only.to_numpy())
    pd.testing.assert_frame_equal(small, pd.DataFrame({"f32": ref_array("f32", rows)}, index=index))


@pytest.mark.parametrize("with_missing", [True, False])
def test_to_arrow_columns_equal_arrays_built_from_the_reference(
    mixed: Loaded, with_missing: bool
) -> None:
    probe = mixed.probe(n_absent=15 if with_missing else 0)
    rows = [mixed.model.latest(k) for k in probe]
    missing = np.array([r is None for r in rows])
    mask = pa.array(missing)
    names = [n for n in NAMES if n != "bits"]  # dense bool: its own test below
    batch = mixed.g.get(probe, names)
    rb = batch.to_arrow()
    assert isinstance(rb, pa.RecordBatch)
    assert rb.schema.names == names
    assert rb.num_rows == len(probe)
    primitive = {"f32": pa.float32(), "f64": pa.float64(), "i64": pa.int64(), "flag": pa.bool_()}
    for name, typ in primitive.items():
        want = pa.array(ref_array(name, rows), type=typ, mask=missing)
        col = rb.column(name)
        assert col.type == typ
        assert col.null_count == missing.sum()
        assert col.equals(want), name
    for name, typ in {"emb": pa.float32(), "half": pa.float16()}.items():
        ref = ref_array(name, rows)
        values = pa.array(ref.reshape(-1), type=typ)
        want = pa.FixedSizeListArray.from_arrays(values, ref.shape[1], mask=mask)
        col = rb.column(name)
        assert col.type == pa.list_(typ, ref.shape[1])
        assert col.equals(want), name
    col = rb.column("color")
    assert col.type == pa.dictionary(pa.int32(), pa.string())
    strings = [None if r is None else r["color"] for r in rows]
    assert col.dictionary_decode().equals(pa.array(strings, type=pa.string()))
    assert col.indices.to_pylist() == [None if c < 0 else c for c in batch.codes("color")]
    col = rb.column("tags")
    tags = ref_array("tags", rows)
    entries = [
        None if r is None else {"indices": np.flatnonzero(t).tolist(), "values": t[t != 0].tolist()}
        for r, t in zip(rows, tags, strict=True)
    ]
    sparse_type = pa.struct([("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float32()))])
    assert col.type == sparse_type
    assert col.equals(pa.array(entries, type=sparse_type))
    # the struct's lists are the CSR's buffers
    csr = batch["tags"]
    idx = col.field("indices")
    assert np.array_equal(idx.offsets.to_numpy(), csr.indptr)
    assert np.array_equal(idx.values.to_numpy(), csr.indices)
    assert np.array_equal(col.field("values").values.to_numpy(), csr.data)
    # int8 vectors: their decoded float32 values (checked against the writes by check_batch)
    check_batch(batch, rows, names)
    q = pa.FixedSizeListArray.from_arrays(pa.array(batch["q"].reshape(-1)), 4, mask=mask)
    assert rb.column("q").type == pa.list_(pa.float32(), 4)
    assert rb.column("q").equals(q)


@pytest.mark.parametrize("n_absent", [15, 0, None], ids=["missing", "all-found", "empty"])
def test_to_arrow_of_a_dense_bool_feature_is_a_fixed_size_list(
    mixed: Loaded, n_absent: int | None
) -> None:
    """Dense vectors are fixed-size lists (the to_arrow docstring), bool ones included:
    FixedSizeList<bool, 10>, null where the key is missing."""
    probe = [] if n_absent is None else mixed.probe(n_absent=n_absent)
    rows = [mixed.model.latest(k) for k in probe]
    missing = np.array([r is None for r in rows], dtype=bool)
    for names in (["bits"], ["f32", "bits", "tags"]):
        batch = mixed.g.get(np.array(probe, dtype=np.int64), names)
        check_batch(batch, rows, names)
        col = batch.to_arrow().column("bits")
        ref = ref_array("bits", rows)
        want = pa.FixedSizeListArray.from_arrays(
            pa.array(ref.reshape(-1), type=pa.bool_()), 10, mask=pa.array(missing)
        )
        assert col.type == pa.list_(pa.bool_(), 10)
        assert col.equals(want)


@pytest.mark.parametrize("feature", ["emb", "f32"])
def test_to_arrow_does_not_copy_a_one_feature_float32_batch(mixed: Loaded, feature: str) -> None:
    batch = mixed.g.get(mixed.model.first, [feature])
    assert not batch.mask.any()
    col = batch.to_arrow().column(0)
    data = col.values if feature == "emb" else col
    address = batch[feature].__array_interface__["data"][0]
    assert data.buffers()[1].address == address
    assert address == batch.to_numpy().__array_interface__["data"][0]
    assert np.array_equal(data.to_numpy(), batch[feature].reshape(-1))


def test_to_torch_gets_the_to_numpy_array(mixed: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[np.ndarray] = []

    def from_numpy(a: np.ndarray) -> str:
        seen.append(a)
        return "tensor"

    fake = types.SimpleNamespace(from_numpy=from_numpy)
    monkeypatch.setitem(sys.modules, "torch", cast(Any, fake))
    probe = mixed.probe()
    batch = mixed.g.get(probe, F32)
    assert batch.to_torch() == "tensor"
    assert seen[-1] is batch.to_numpy()  # the block itself: the tensor shares its memory
    mixed_batch = mixed.g.get(probe)
    assert mixed_batch.to_torch() == "tensor"
    assert seen[-1].dtype == np.float32
    assert seen[-1].tobytes() == mixed_batch.to_numpy().tobytes()


@pytest.mark.parametrize(
    ("module", "method"), [("pyarrow", "to_arrow"), ("torch", "to_torch"), ("pandas", "to_pandas")]
)
def test_a_missing_optional_dependency_is_named(
    mixed: Loaded, monkeypatch: pytest.MonkeyPatch, module: str, method: str
) -> None:
    batch = mixed.g.get(mixed.probe())
    monkeypatch.setitem(sys.modules, module, cast(Any, None))  # import fails
    with pytest.raises(MissingDependencyError, match=module) as info:
        getattr(batch, method)()
    assert isinstance(info.value, ImportError)


def test_sparse_batches_are_csr_rows_of_the_reference(mixed: Loaded) -> None:
    probe = mixed.probe()
    rows = [mixed.model.latest(k) for k in probe]
    batch = mixed.g.get(probe, ["tags"])
    csr = batch["tags"]
    assert isinstance(csr, sp.csr_matrix | sp.csr_array)
    assert csr.shape == (len(probe), 40)
    assert csr.dtype == np.float32
    assert np.array_equal(csr.toarray(), ref_array("tags", rows))
    assert csr.has_canonical_format
    assert batch["tags"] is csr  # decoded once
    for i, r in enumerate(rows):
        if r is None:
            assert csr.indptr[i + 1] == csr.indptr[i]
    as_of = mixed.g.get(probe, ["tags"], as_of=T0 + HOUR)
    ref = ref_array("tags", [mixed.model.as_of(k, T0 + HOUR) for k in probe])
    assert np.array_equal(as_of["tags"].toarray(), ref)


def test_iter_batches_of_a_reader_starts_from_the_newest_commit(tmp_path: Path) -> None:
    """A reader whose snapshot is stale (the writer committed since its last read)
    iterates over the newest generation, not the one it read before."""
    with mmfs.open(tmp_path / "s", durability="none") as writer:
        g = writer.create_group("g", key="id", schema={"x": mmfs.scalar("float64")})
        g.write(np.arange(10), {"x": np.arange(10.0)})
        writer.commit()
        reader = mmfs.open(tmp_path / "s", mode="r")
        assert len(reader["g"].get(np.arange(10))) == 10  # the reader's snapshot: 10 keys
        g.write(np.arange(5, 25), {"x": -np.arange(5.0, 25.0)})
        writer.commit()
        parts = list(reader["g"].iter_batches(batch_size=7))
        got = np.concatenate([p["x"] for p in parts])
        keys = np.concatenate([p.keys for p in parts])
        assert keys.tolist() == list(range(25))
        assert got.tolist() == [*range(5), *(-np.arange(5.0, 25.0)).tolist()]
        reader.close()


def test_the_fused_kernel_refuses_buffers_that_do_not_fit(tmp_path: Path) -> None:
    """RowTable.get_int/get_str write len(keys) * row_bytes bytes and one row per key:
    shorter buffers are refused before anything is written (no overflow)."""
    with mmfs.open(tmp_path / "s", durability="none") as store:
        g = store.create_group("g", key="id", schema={"x": mmfs.scalar("float64")})
        g.write(np.arange(4), {"x": np.arange(4.0)})
        s = store.create_group("s", "name", "str", {"x": mmfs.scalar("float64")})
        s.write(["a", "b"], {"x": np.arange(2.0)})
        store.commit()
        snap = store._snapshot("g")
        plan = snap.plan(None)
        keys = np.arange(4, dtype=np.int64)
        rows = np.empty(4, dtype=np.int64)
        with pytest.raises(ValueError, match="get_int"):
            snap.table.get_int(keys, rows, plan.fields, np.zeros(31, np.uint8), 1)
        with pytest.raises(ValueError, match="get_int"):
            snap.table.get_int(keys, rows[:3], plan.fields, np.zeros(32, np.uint8), 1)
        out = np.zeros(32, np.uint8)
        assert snap.table.get_int(keys, rows, plan.fields, out, 1) == 0
        assert out.view(np.float64).tolist() == [0.0, 1.0, 2.0, 3.0]
        ssnap = store._snapshot("s")
        qb = np.frombuffer(b"ab", dtype=np.uint8)
        qo = np.array([0, 1, 2], dtype=np.int64)
        with pytest.raises(ValueError, match="get_str"):
            ssnap.table.get_str(qb, qo, rows[:2], plan.fields, np.zeros(15, np.uint8), 1)
        with pytest.raises(ValueError, match="get_str"):
            ssnap.table.get_str(qb, qo, rows[:3], plan.fields, np.zeros(16, np.uint8), 1)
