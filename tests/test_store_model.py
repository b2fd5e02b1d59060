"""Model-based test of the store: a Hypothesis state machine against a plain dict model.

The model holds, per group name, the committed rows and the writer's pending rows
(``{key: Row}``: a key's current row).  Rules write (updates, in-batch duplicates, tied
and "now" event times), commit, roll back, reopen the writer, open a reader, read through
the writer and the reader, and drop and re-create groups.  Reads are compared to the
committed model (reads never show uncommitted data), exactly: float64 scalars
bit-for-bit, float32 vectors and sparse values against ``np.float32(value)``.

A row written with ``event_time=None`` gets the wall-clock time of the write, which the
test cannot know exactly: it is modelled as later than every explicit time generated
(2001..2010) and ordered among the other "now" rows by the order of the writes; the time
a read reports for it must lie between the clocks read just before and after the write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import scipy.sparse as sp
from helpers import StoreMachine
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
)

import mmfs

Key = int | str

SEGMENT_BYTES = 4096
SPARSE_DIM = 20
VEC_DIM = 3
SCHEMA: dict[str, Any] = {
    "f64": mmfs.scalar("float64"),
    "i64": mmfs.scalar("int64"),
    "flag": mmfs.scalar("bool"),
    "cat": mmfs.category(),
    "vec": mmfs.dense(VEC_DIM),
    "sp": mmfs.sparse(SPARSE_DIM),
}
FEATURES = list(SCHEMA)
WIDTHS = {"f64": 1, "i64": 1, "flag": 1, "cat": 1, "vec": VEC_DIM}  # columns in to_numpy

# Explicit event times: a few, so that ties are common; all far before "now".
TIMES = [
    np.datetime64("2001-01-01T00:00:00", "ns"),
    np.datetime64("2004-02-29T12:00:00.000000001", "ns"),
    np.datetime64("2004-02-29T12:00:00.000000002", "ns"),
    np.datetime64("2010-12-31T23:59:59.999999999", "ns"),
]
NOW_RANK = 2**63  # above every explicit time in ns: rows written with event_time=None

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT_KEYS = st.one_of(
    st.integers(0, 90),
    st.sampled_from([-1, INT64_MIN, INT64_MAX, 1 << 40, 64, 128]),
)
STR_KEYS = st.one_of(
    st.integers(0, 90).map(lambda i: f"k{i}"),
    st.sampled_from(["", "é", "ключ", "a" * 40, "k1 ", "K1"]),
)
CATEGORIES = st.sampled_from(["red", "green", "", "ü", None])
VEC_VALUES = st.one_of(
    st.floats(width=32),  # exact in float32, NaN and infinities included
    st.floats(-1e6, 1e6),  # rounded on the way in
)
SPARSE_ROWS = st.dictionaries(st.integers(0, SPARSE_DIM - 1), st.floats(width=32), max_size=6).map(
    lambda d: tuple(sorted(d.items()))
)


@dataclass(frozen=True)
class Row:
    """One written row as the model keeps it."""

    order: tuple[int, int]  # (event time in ns, or NOW_RANK for "now"; write sequence)
    t_lo: int  # the event time in ns lies in [t_lo, t_hi]
    t_hi: int
    f64: float
    i64: int
    flag: bool
    cat: str | None
    vec: tuple[float, ...]
    sp: tuple[tuple[int, float], ...]


ROW_VALUES = st.tuples(
    st.floats(),  # float64: NaN, infinities, -0.0 included
    st.integers(INT64_MIN, INT64_MAX),
    st.booleans(),
    CATEGORIES,
    st.tuples(*[VEC_VALUES] * VEC_DIM),
    SPARSE_ROWS,
)


def same_floats(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal values, NaN where NaN, and the sign of every zero too."""
    return (
        got.shape == want.shape
        and bool(np.array_equal(got, want, equal_nan=True))
        and bool(np.array_equal(np.signbit(got), np.signbit(want)))
    )


def check_batch(
    batch: mmfs.FeatureBatch,
    keys: list[Key],
    features: list[str],
    expected: dict[Key, Row],
    where: str,
) -> None:
    """Assert that a batch holds the model's rows of keys (absent keys: missing)."""
    rows = [expected.get(k) for k in keys]
    n = len(rows)
    found = np.array([r is not None for r in rows], dtype=bool)
    assert len(batch) == n, where
    assert list(batch.names) == features, where
    assert np.array_equal(batch.mask, ~found), f"{where}: mask {batch.mask}, want {~found}"
    assert np.array_equal(batch.found, found), where
    got_keys = batch.keys.tolist()
    assert got_keys == keys, f"{where}: batch.keys {got_keys}"

    et = batch.event_time
    assert et.dtype == np.dtype("datetime64[ns]"), where
    assert et.shape == (n,), where
    for i, r in enumerate(rows):
        if r is None:
            assert np.isnat(et[i]), f"{where}: event time of absent key {keys[i]!r}: {et[i]}"
        else:
            t = int(et[i].view(np.int64))
            assert r.t_lo <= t <= r.t_hi, (
                f"{where}: event time of {keys[i]!r} is {et[i]}, want in [{r.t_lo}, {r.t_hi}]"
            )

    for f in features:
        value = batch[f]
        msg = f"{where}: feature {f!r} of keys {keys}"
        if f == "f64":
            want = np.array([np.nan if r is None else r.f64 for r in rows], dtype=np.float64)
            assert value.dtype == np.float64, msg
            assert same_floats(value, want), f"{msg}: {value}"
        elif f == "i64":
            want = np.array([0 if r is None else r.i64 for r in rows], dtype=np.int64)
            assert value.dtype == np.int64, msg
            assert np.array_equal(value, want), f"{msg}: {value}"
        elif f == "flag":
            want = np.array([False if r is None else r.flag for r in rows], dtype=bool)
            assert value.dtype == np.bool_, msg
            assert np.array_equal(value, want), f"{msg}: {value}"
        elif f == "cat":
            assert value.dtype == object, msg
            assert value.shape == (n,), msg
            want_cats = [None if r is None else r.cat for r in rows]
            assert value.tolist() == want_cats, f"{msg}: {value.tolist()}, want {want_cats}"
        elif f == "vec":
            want = np.full((n, VEC_DIM), np.nan, dtype=np.float32)
            for i, r in enumerate(rows):
                if r is not None:
                    want[i] = [np.float32(v) for v in r.vec]
            assert value.dtype == np.float32, msg
            assert same_floats(value, want), f"{msg}: {value}"
        else:
            assert sp.issparse(value), msg
            assert value.shape == (n, SPARSE_DIM), msg
            csr = sp.csr_matrix(value)
            assert csr.dtype == np.float32, msg
            for i, r in enumerate(rows):
                a, b = csr.indptr[i], csr.indptr[i + 1]
                idx = csr.indices[a:b].tolist()
                got_row = dict(zip(idx, csr.data[a:b], strict=True))
                want_row = {} if r is None else {j: np.float32(v) for j, v in r.sp}
                assert len(got_row) == len(idx), f"{msg}: row {i} repeats an index: {idx}"
                assert set(got_row) <= set(want_row), f"{msg}: row {i} stores {got_row}"
                for j, v in want_row.items():
                    if j not in got_row:  # an explicit zero may be dropped
                        assert v == 0, f"{msg}: row {i} lost index {j} (value {v})"
                        continue
                    x = got_row[j]
                    assert same_floats(np.array(x), np.array(v)), (
                        f"{msg}: row {i} index {j} holds {x}, want {v}"
                    )

    plain = [f for f in features if f != "sp"]
    if plain:  # to_numpy agrees with the per-feature values
        mat = batch.to_numpy(plain)  # float64 beyond float32's range: inf, no warning
        # The reference cast of such a value warns of overflow.
        with np.errstate(over="ignore"):
            cols = []
            for f in plain:
                v = batch.codes(f) if f == "cat" else batch[f]
                cols.append(np.asarray(v).reshape(n, WIDTHS[f]).astype(np.float32))
        want = np.hstack(cols)
        want[~found] = np.nan
        assert mat.dtype == np.float32, where
        assert same_floats(mat, want), f"{where}: to_numpy {mat}"


class StoreModel(StoreMachine):
    """The store against a dict model (see the module docstring)."""

    prefix = "mmfs-model-"

    GROUPS: ClassVar[dict[str, str]] = {"ints": "int64", "strs": "str"}

    def __init__(self) -> None:
        super().__init__()
        self.reader_groups: dict[str, mmfs.FeatureGroup] = {}  # handles kept across steps
        # name -> {key: Row}; absent: no such group committed / pending.
        self.committed: dict[str, dict[Key, Row]] = {}
        self.pending: dict[str, dict[Key, Row]] = {}
        # Pending groups created since the last commit (a re-created one is a new group:
        # the writer reads nothing committed from it; readers still see the old one).
        self.created: set[str] = set()
        self.seq = 0
        self.gen = 0
        self.durability: Literal["none", "commit"] = "commit"

    @initialize(
        durability=st.sampled_from(["none", "commit"]),
        commit=st.booleans(),
        reader=st.booleans(),
    )
    def open_store(self, durability: Literal["none", "commit"], commit: bool, reader: bool) -> None:
        """Open the store and create the groups; commit them and open a reader, or not."""
        self.durability = durability
        self.store = mmfs.open(self.path, durability=durability, segment_bytes=SEGMENT_BYTES)
        for name, key_type in self.GROUPS.items():
            self.store.create_group(name, key="k", key_type=key_type, schema=SCHEMA)
            self.pending[name] = {}
            self.created.add(name)
        if commit:
            self.commit()
        if reader:
            self.open_reader()

    # -- helpers ---------------------------------------------------------------------------

    def keys_strategy(self, name: str) -> st.SearchStrategy[Key]:
        return INT_KEYS if self.GROUPS[name] == "int64" else STR_KEYS

    def writer_view(self, name: str) -> dict[Key, Row]:
        """What the writer's reads of a pending group show: its committed rows, none for
        a group created (or re-created) since the last commit."""
        return {} if name in self.created else self.committed.get(name, {})

    def draw_keys(self, data: st.DataObject, name: str, max_size: int) -> tuple[Any, list[Key]]:
        """(keys as passed to the store, the same as a list)."""
        keys = data.draw(st.lists(self.keys_strategy(name), max_size=max_size), label="keys")
        form = data.draw(st.sampled_from(["list", "array", "one"]), label="key form")
        if form == "one" and len(keys) == 1:
            return keys[0], keys
        if form == "array":
            dtype = np.int64 if self.GROUPS[name] == "int64" else object
            arr = np.empty(len(keys), dtype=dtype)
            arr[:] = keys
            return arr, keys
        return keys, keys

    def check_get(
        self,
        data: st.DataObject,
        group: mmfs.FeatureGroup,
        expected: dict[Key, Row],
        who: str,
    ) -> None:
        """A get of drawn keys (known, unknown, repeated; none) and features."""
        name = group.name
        pool = list(expected)
        key_st = self.keys_strategy(name)
        if pool:
            key_st = st.one_of(st.sampled_from(pool), key_st)
        form = data.draw(st.sampled_from(["one", "list", "array"]), label="get key form")
        if form == "one":  # a bare key: the single-key path
            keys = [data.draw(key_st, label="get key")]
        else:
            keys = data.draw(st.lists(key_st, max_size=10), label="get keys")
        arg: Any = keys
        if form == "one":
            arg = keys[0]
        elif form == "array":
            arg = np.empty(len(keys), dtype=np.int64 if self.GROUPS[name] == "int64" else object)
            arg[:] = keys
        sel = data.draw(
            st.one_of(
                st.none(),
                st.sampled_from(FEATURES),
                st.lists(st.sampled_from(FEATURES), min_size=1, unique=True),
            ),
            label="features",
        )
        features = FEATURES if sel is None else [sel] if isinstance(sel, str) else sel
        where = f"{who} get({arg!r}, features={sel!r}) of {name!r}"
        if data.draw(st.booleans(), label="missing=raise"):
            if all(k in expected for k in keys):
                batch = group.get(arg, features=sel, missing="raise")
            else:
                with pytest.raises(mmfs.NotFoundError):
                    group.get(arg, features=sel, missing="raise")
                return
        else:
            batch = group.get(arg, features=sel)
        check_batch(batch, keys, features, expected, where)

    def check_all(self, store: mmfs.Store, name: str, expected: dict[Key, Row]) -> None:
        """Every key of the model, plus one that was never written."""
        absent: Key = 7777 if self.GROUPS[name] == "int64" else "never written"
        keys = [*expected, absent]
        check_batch(store[name].get(keys), keys, FEATURES, expected, f"{store.mode!r} all keys")
        got = store[name].keys()
        got_list = got.tolist() if isinstance(got, np.ndarray) else list(got)
        assert got_list == list(expected), f"{name!r}.keys() {got_list}, want {list(expected)}"
        assert store[name].describe()["keys"] == len(expected)

    # -- rules -----------------------------------------------------------------------------

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        """A few rows drawn one by one (small key space: updates and duplicates)."""
        name = data.draw(st.sampled_from(sorted(self.pending)), label="group")
        arg, keys = self.draw_keys(data, name, max_size=10)
        values = [data.draw(ROW_VALUES, label="row") for _ in keys]
        self.apply_write(data, name, arg, keys, values)

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), n=st.integers(32, 160), seed=st.integers(0, 2**32 - 1))
    def write_many(self, data: st.DataObject, n: int, seed: int) -> None:
        """Many rows from a seeded generator: more than a page of keys (64), rows and
        sparse elements across segment boundaries."""
        name = data.draw(st.sampled_from(sorted(self.pending)), label="group")
        rng = np.random.default_rng(seed)
        ints = rng.integers(0, 300, n).tolist()
        keys: list[Key] = ints if self.GROUPS[name] == "int64" else [f"k{i}" for i in ints]
        f64 = rng.standard_normal(n)
        f64[rng.random(n) < 0.1] = rng.choice([np.nan, np.inf, -np.inf, -0.0, 1e300])
        i64 = rng.integers(INT64_MIN, INT64_MAX, n, endpoint=True)
        flag = rng.random(n) < 0.5
        cats = ["red", "green", "", "ü", None]
        cat = [cats[i] for i in rng.integers(0, len(cats), n)]
        vec = rng.standard_normal((n, VEC_DIM))
        values = []
        for i in range(n):
            k = SPARSE_DIM if rng.random() < 0.05 else int(rng.integers(0, 9))
            idx = np.sort(rng.choice(SPARSE_DIM, k, replace=False))
            val = rng.standard_normal(k).astype(np.float32)
            values.append(
                (
                    float(f64[i]), int(i64[i]), bool(flag[i]), cat[i],
                    tuple(vec[i].tolist()),
                    tuple(zip(idx.tolist(), val.tolist(), strict=True)),
                )
            )  # fmt: skip
        self.apply_write(data, name, keys, keys, values)

    def apply_write(
        self,
        data: st.DataObject,
        name: str,
        arg: Any,
        keys: list[Key],
        values: list[tuple[Any, ...]],
    ) -> None:
        """Write rows of (f64, i64, flag, cat, vec, sparse) values with drawn event
        times, then apply them to the pending model."""
        n = len(keys)
        mode = data.draw(st.sampled_from(["now", "one", "each"]), label="event time")
        times: list[int | None]
        if mode == "now":
            event_time: Any = None
            times = [None] * n
        elif mode == "one":
            event_time = data.draw(st.sampled_from(TIMES), label="time")
            times = [int(event_time.view(np.int64))] * n
        else:
            chosen = data.draw(
                st.lists(st.sampled_from(TIMES), min_size=n, max_size=n), label="times"
            )
            event_time = np.array(chosen, dtype="datetime64[ns]")
            times = [int(t.view(np.int64)) for t in chosen]

        indptr = np.cumsum([0] + [len(v[5]) for v in values])
        columns = {
            "f64": np.array([v[0] for v in values], dtype=np.float64),
            "i64": np.array([v[1] for v in values], dtype=np.int64),
            "flag": np.array([v[2] for v in values], dtype=bool),
            "cat": [v[3] for v in values],
            "vec": np.array([v[4] for v in values], dtype=np.float64).reshape(n, VEC_DIM),
            "sp": sp.csr_matrix(
                (
                    np.array([x for v in values for _, x in v[5]], dtype=np.float32),
                    np.array([j for v in values for j, _ in v[5]], dtype=np.int32),
                    indptr,
                ),
                shape=(n, SPARSE_DIM),
            ),
        }
        t_lo = time.time_ns()
        assert self.writer[name].write(arg, columns, event_time=event_time) == n
        t_hi = time.time_ns()

        model = self.pending[name]
        for k, t, v in zip(keys, times, values, strict=True):
            self.seq += 1
            if t is None:
                row = Row((NOW_RANK, self.seq), t_lo, t_hi, *v)
            else:
                row = Row((t, self.seq), t, t, *v)
            old = model.get(k)
            if old is None or row.order > old.order:
                model[k] = row

    @rule()
    def commit(self) -> None:
        gen = self.writer.commit("model step")
        self.gen += 1
        assert gen == self.gen
        assert self.writer.generation == gen
        self.committed = {name: dict(rows) for name, rows in self.pending.items()}
        self.created.clear()
        assert self.writer.verify() == {n: len(r) for n, r in self.committed.items()}

    @rule()
    def rollback(self) -> None:
        self.writer.rollback()
        self.reset_pending()

    @rule()
    def reopen(self) -> None:
        self.writer.close()
        with pytest.raises(mmfs.StoreClosedError):
            self.writer.groups()
        self.store = mmfs.open(self.path, durability=self.durability)
        self.reset_pending()
        assert self.writer.generation == self.gen

    def reset_pending(self) -> None:
        self.pending = {name: dict(rows) for name, rows in self.committed.items()}
        self.created.clear()

    @rule()
    def open_reader(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.reader = mmfs.open(self.path, mode="r")
        self.reader_groups = {}
        with pytest.raises(mmfs.ReadOnlyError):
            self.reader.commit()
        self.check_reader()

    @precondition(lambda self: self.reader is not None)
    @rule()
    def check_reader(self) -> None:
        """Everything a reader shows; it has seen no read since the writer's last commit
        (invariants leave the reader alone, so that its reads meet stale snapshots)."""
        reader = self.reader
        assert reader is not None
        assert reader.groups() == sorted(self.committed)
        assert reader.generation == self.gen
        for name, rows in self.committed.items():
            assert len(reader[name]) == len(rows), name
            self.check_all(reader, name, rows)
        for name in set(self.GROUPS) - set(self.committed):
            with pytest.raises(mmfs.NotFoundError):
                reader[name]

    @precondition(lambda self: self.reader is not None)
    @rule(data=st.data())
    def get_reader(self, data: st.DataObject) -> None:
        """A get through a fresh group handle or one taken before later commits."""
        reader = self.reader
        assert reader is not None
        names = sorted(set(self.committed) | set(self.reader_groups))
        if not names:
            return
        name = data.draw(st.sampled_from(names), label="group")
        group = self.reader_groups.get(name)
        if group is None or data.draw(st.booleans(), label="fresh handle"):
            if name not in self.committed:
                with pytest.raises(mmfs.NotFoundError):
                    reader[name]
                return
            group = self.reader_groups[name] = reader[name]
        if name not in self.committed:  # an old handle of a group dropped since
            with pytest.raises(mmfs.NotFoundError):
                group.get(self.committed_key_example(name))
            return
        self.check_get(data, group, self.committed[name], "reader")

    def committed_key_example(self, name: str) -> Key:
        return 1 if self.GROUPS[name] == "int64" else "k1"

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def get_writer(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.pending)), label="group")
        self.check_get(data, self.writer[name], self.writer_view(name), "writer")

    @precondition(lambda self: bool(self.pending))
    @rule()
    def check_writer_all(self) -> None:
        for name in self.pending:
            self.check_all(self.writer, name, self.writer_view(name))

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data())
    def drop_group(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.pending)), label="group")
        self.writer.drop_group(name)
        del self.pending[name]
        self.created.discard(name)

    @precondition(lambda self: len(self.pending) < len(self.GROUPS))
    @rule(data=st.data())
    def create_group(self, data: st.DataObject) -> None:
        name = data.draw(
            st.sampled_from(sorted(set(self.GROUPS) - set(self.pending))), label="group"
        )
        g = self.writer.create_group(name, key="k", key_type=self.GROUPS[name], schema=SCHEMA)
        assert len(g) == 0
        self.pending[name] = {}
        self.created.add(name)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def groups_and_lengths(self) -> None:
        if self.store is None:
            return
        assert self.writer.groups() == sorted(self.pending)
        for name in self.pending:
            assert len(self.writer[name]) == len(self.writer_view(name)), name
        for name in set(self.GROUPS) - set(self.pending):
            with pytest.raises(mmfs.NotFoundError):
                self.writer[name]


class StrOnlyModel(StoreModel):
    """The same machine with the str-keyed group alone."""

    GROUPS: ClassVar[dict[str, str]] = {"strs": "str"}


_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(max_examples=100, stateful_step_count=30, **_SETTINGS)

TestStrOnlyModel = StrOnlyModel.TestCase
TestStrOnlyModel.settings = settings(max_examples=40, stateful_step_count=20, **_SETTINGS)
