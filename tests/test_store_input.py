"""Bad input to a store: a clear error from the mmfs hierarchy, and the store as it was.

Every failed call is checked against the store's state before it (committed values of
every key, ``len(g)``, ``store.generation``, the groups), then the writer commits (which
would publish anything a failed write left behind) and must still match a plain Python
model of the writes that succeeded; a later valid write and commit must work.  The
last-write-wins rules (greatest event time, ties to the later row, duplicates in one
write) are checked against the same model.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import mmfs

T0 = np.datetime64("2024-03-01T00:00:00", "ns")
SEC = np.timedelta64(1, "s")
SPARSE_DIM = 20
QRANGE = (-2.0, 2.0)
QTOL = (QRANGE[1] - QRANGE[0]) / 255  # one quantisation step
ABSENT: dict[str, list[Any]] = {"ints": [-1, 2**62], "strs": ["nobody", ""]}  # never written


def make_schema() -> dict[str, Any]:
    return {
        "f": mmfs.scalar("float32"),
        "i": mmfs.scalar("int64"),
        "b": mmfs.scalar("bool"),
        "c": mmfs.category(),
        "d": mmfs.dense(4),
        "q": mmfs.dense(6, "int8", range=QRANGE),
        "m": mmfs.dense(10, "bool"),
        "s": mmfs.sparse(SPARSE_DIM),
    }


FEATURES = list(make_schema())


def values(rng: np.random.Generator, n: int) -> dict[str, Any]:
    dense_s = np.where(rng.random((n, SPARSE_DIM)) < 0.2, rng.standard_normal((n, SPARSE_DIM)), 0)
    return {
        "f": rng.standard_normal(n).astype(np.float32),
        "i": rng.integers(-(10**15), 10**15, n),
        "b": rng.random(n) < 0.5,
        "c": [None if rng.random() < 0.2 else f"cat{int(rng.integers(5))}" for _ in range(n)],
        "d": rng.standard_normal((n, 4)).astype(np.float32),
        "q": rng.uniform(*QRANGE, (n, 6)),
        "m": rng.random((n, 10)) < 0.5,
        "s": sp.csr_matrix(dense_s.astype(np.float32)),
    }


# --------------------------------------------------------------------------- the model


def _row(vals: dict[str, Any], j: int) -> dict[str, Any]:
    out = {}
    for f, v in vals.items():
        if f == "s":
            out[f] = (v.toarray() if sp.issparse(v) else np.asarray(v))[j].astype(np.float32)
        elif f == "c":
            out[f] = v[j]
        else:
            out[f] = np.asarray(v)[j]
    return out


class Model:
    """What a group should hold: key -> (event time ns, feature values), by the rules
    "greatest event time wins, a tie goes to the row written later"."""

    def __init__(self) -> None:
        self.rows: dict[Any, tuple[int, dict[str, Any]]] = {}
        self.order: list[Any] = []  # keys in order of first write

    def write(self, keys: list[Any], vals: dict[str, Any], times: Any) -> None:
        t = np.broadcast_to(np.asarray(times, dtype="datetime64[ns]"), (len(keys),))
        for j, k in enumerate(keys):
            ns = int(t[j].astype(np.int64))
            old = self.rows.get(k)
            if old is None:
                self.order.append(k)
            if old is None or ns >= old[0]:
                self.rows[k] = (ns, _row(vals, j))

    def copy(self) -> Model:
        m = Model()
        m.rows = dict(self.rows)
        m.order = list(self.order)
        return m


def check_model(g: mmfs.FeatureGroup, model: Model, absent: list[Any]) -> None:
    """The committed contents of g are exactly the model's."""
    assert len(g) == len(model.rows)
    keys = g.keys()
    assert list(keys.tolist() if isinstance(keys, np.ndarray) else keys) == model.order
    query = [*model.order, *absent]
    b = g.get(query)
    n = len(model.order)
    assert b.mask.tolist() == [False] * n + [True] * len(absent)
    want_t = np.array([model.rows[k][0] for k in model.order], dtype=np.int64)
    assert np.array_equal(b.event_time[:n].astype(np.int64), want_t)
    assert np.isnat(b.event_time[n:]).all()
    for f in FEATURES:
        got = b[f]
        want = [model.rows[k][1][f] for k in model.order]
        if f == "s":
            got = got.toarray()
        if f == "c":
            assert got[:n].tolist() == want, f
            assert got[n:].tolist() == [None] * len(absent)
        elif f == "q":
            assert np.allclose(got[:n], np.array(want), atol=QTOL), f
        else:
            assert np.array_equal(got[:n], np.array(want)), f
    # The one-key path agrees.
    for j in (0, n - 1):
        one = g.get(model.order[j])
        assert not one.mask[0]
        assert np.array_equal(one["f"], b["f"][j : j + 1])
        assert one["c"].tolist() == [b["c"][j]]
        assert np.array_equal(one["s"].toarray(), b["s"][j].toarray())


# --------------------------------------------------------------------------- the store


@dataclass
class Env:
    path: Path
    store: mmfs.Store
    rng: np.random.Generator
    models: dict[str, Model] = field(default_factory=dict)
    fresh: dict[str, Iterator[Any]] = field(default_factory=dict)
    clock: int = 10_000  # seconds after T0 of the next write

    def group(self, name: str) -> mmfs.FeatureGroup:
        return self.store[name]

    def new_keys(self, name: str, n: int) -> list[Any]:
        return [next(self.fresh[name]) for _ in range(n)]

    def tick(self, n: int = 1) -> np.ndarray:
        t = T0 + (self.clock + np.arange(n)) * SEC
        self.clock += n
        return t

    def write(self, name: str, keys: list[Any], vals: dict[str, Any], times: Any) -> None:
        """A valid write, recorded in the model (the model is of committed + pending)."""
        assert self.group(name).write(keys, vals, event_time=times) == len(keys)
        self.models[name].write(keys, vals, times)

    def valid_write(self, name: str, n: int = 3, *, old_keys: int = 1) -> None:
        keys = self.models[name].order[:old_keys] + self.new_keys(name, n - old_keys)
        self.write(name, keys, values(self.rng, n), self.tick(n))

    def check(self) -> None:
        for name, model in self.models.items():
            check_model(self.group(name), model, ABSENT[name])


def _int_keys() -> Iterator[int]:
    k = 1000
    while True:
        yield k * 7919 - 5 * 10**9
        k += 1


def _str_keys() -> Iterator[str]:
    k = 0
    while True:
        yield f"user-{k}-\u00fc"
        k += 1


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    path = tmp_path / "store"
    st = mmfs.open(path, durability="none", segment_bytes=4096)
    e = Env(path, st, np.random.default_rng(12345))
    e.fresh = {"ints": _int_keys(), "strs": _str_keys()}
    for name, (key, kt) in {"ints": ("uid", "int64"), "strs": ("name", "str")}.items():
        st.create_group(name, key=key, key_type=kt, schema=make_schema())
        e.models[name] = Model()
        e.write(name, e.new_keys(name, 40), values(e.rng, 40), e.tick(40))
    st.commit("initial")
    e.valid_write("ints", 5)
    e.valid_write("strs", 5)
    st.commit("second")
    try:
        yield e
    finally:
        st.close()


def state(st: mmfs.Store) -> dict[str, Any]:
    """Everything a reader can see of a store's committed data."""
    out: dict[str, Any] = {"generation": st.generation, "groups": st.groups()}
    for name in st.groups():
        g = st[name]
        try:
            keys = g.keys()
        except mmfs.NotFoundError:  # created, not committed
            out[name] = None
            continue
        keys = keys.tolist() if isinstance(keys, np.ndarray) else list(keys)
        b = g.get([*keys, *ABSENT.get(name, [])])
        out[name] = {
            "len": len(g),
            "keys": keys,
            "mask": b.mask.tolist(),
            "t": b.event_time.astype(np.int64).tolist(),
            **{f: _plain(b[f]) for f in b.names},
        }
    return out


def _plain(v: Any) -> Any:
    if sp.issparse(v):
        v = v.toarray()
    v = np.asarray(v)
    if v.dtype.kind == "f":
        return [x.tobytes() for x in v]  # NaN-safe, bit-exact
    return v.tolist()


# --------------------------------------------------------------------------- bad writes

Mutation = Callable[[Env, list[Any], dict[str, Any], Any], tuple[Any, Any, Any]]


def _feature(name: str, make: Callable[[int], Any]) -> Mutation:
    def mutate(e: Env, keys: list[Any], vals: dict[str, Any], t: Any) -> tuple[Any, Any, Any]:
        return keys, {**vals, name: make(len(keys))}, t

    return mutate


def _keys(make: Callable[[list[Any]], Any]) -> Mutation:
    def mutate(e: Env, keys: list[Any], vals: dict[str, Any], t: Any) -> tuple[Any, Any, Any]:
        return make(keys), vals, t

    return mutate


def _times(make: Callable[[int], Any]) -> Mutation:
    def mutate(e: Env, keys: list[Any], vals: dict[str, Any], t: Any) -> tuple[Any, Any, Any]:
        return keys, vals, make(len(keys))

    return mutate


def _values_as(make: Callable[[dict[str, Any]], Any]) -> Mutation:
    def mutate(e: Env, keys: list[Any], vals: dict[str, Any], t: Any) -> tuple[Any, Any, Any]:
        return keys, make(vals), t

    return mutate


def _nan_q(n: int) -> np.ndarray:
    q = np.zeros((n, 6))
    q[-1, 2] = np.nan
    return q


def _inf_q(n: int) -> np.ndarray:
    q = np.zeros((n, 6))
    q[0, 0] = -np.inf
    return q


P, D = mmfs.ParameterError, mmfs.DimensionError
BAD_WRITES: dict[str, tuple[str, Mutation, type[mmfs.MmfsError]]] = {
    # shapes
    "dense-dim": ("ints", _feature("d", lambda n: np.zeros((n, 5), np.float32)), D),
    "dense-flat": ("ints", _feature("d", lambda n: np.zeros(4 * n, np.float32)), D),
    "dense-rows": ("ints", _feature("d", lambda n: np.zeros((n + 1, 4), np.float32)), D),
    "int8-dim": ("ints", _feature("q", lambda n: np.zeros((n, 5))), D),
    "bool-dim": ("strs", _feature("m", lambda n: np.zeros((n, 11), bool)), D),
    "scalar-count": ("ints", _feature("f", lambda n: np.zeros(n + 1, np.float32)), D),
    "scalar-too-few": ("strs", _feature("i", lambda n: np.zeros(n - 1, np.int64)), D),
    "scalar-2-columns": ("ints", _feature("b", lambda n: np.zeros((n, 2), bool)), D),
    "category-count": ("ints", _feature("c", lambda n: ["a"] * (n + 1)), D),
    "sparse-rows": ("ints", _feature("s", lambda n: sp.csr_matrix((n + 1, SPARSE_DIM))), D),
    "sparse-cols": ("strs", _feature("s", lambda n: sp.csr_matrix((n, SPARSE_DIM + 1))), D),
    "dense-1d-for-sparse": ("ints", _feature("s", lambda n: np.zeros(SPARSE_DIM)), D),
    "dense-wrong-for-sparse": ("ints", _feature("s", lambda n: np.zeros((n, 3))), D),
    # types
    "sparse-for-dense": ("ints", _feature("d", lambda n: sp.csr_matrix(np.ones((n, 4)))), P),
    "strings-for-float": ("ints", _feature("f", lambda n: np.array(["1.5"] * n)), P),
    "str-list-for-float": ("strs", _feature("f", lambda n: ["x"] * n), P),
    "objects-for-float": ("ints", _feature("f", lambda n: [1.0] * (n - 1) + [None]), P),
    "complex-for-float": ("ints", _feature("f", lambda n: np.ones(n, complex)), P),
    "floats-for-int64": ("ints", _feature("i", lambda n: np.ones(n) * 1.5), P),
    "integral-floats-for-int64": ("strs", _feature("i", lambda n: np.ones(n)), P),
    "bools-for-int64": ("ints", _feature("i", lambda n: np.ones(n, bool)), P),
    "uint64-above-int64": ("ints", _feature("i", lambda n: np.full(n, 2**63, np.uint64)), P),
    "ints-for-bool": ("ints", _feature("b", lambda n: np.ones(n, np.int64)), P),
    "floats-for-bool": ("strs", _feature("b", lambda n: np.ones(n)), P),
    "ints-for-dense-bool": ("ints", _feature("m", lambda n: np.ones((n, 10), np.int8)), P),
    "floats-for-dense-bool": ("ints", _feature("m", lambda n: np.ones((n, 10))), P),
    "nan-for-int8": ("ints", _feature("q", _nan_q), P),
    "inf-for-int8": ("strs", _feature("q", _inf_q), P),
    "strings-for-dense": ("ints", _feature("d", lambda n: np.full((n, 4), "a")), P),
    "int-category": ("ints", _feature("c", lambda n: ["a"] * (n - 1) + [3]), P),
    "bytes-category": ("strs", _feature("c", lambda n: [b"a"] * n), P),
    "float-category": ("ints", _feature("c", lambda n: np.ones(n)), P),
    "complex-sparse": (
        "ints",
        _feature("s", lambda n: sp.csr_matrix(np.ones((n, SPARSE_DIM), complex))),
        P,
    ),
    "strings-for-sparse": ("ints", _feature("s", lambda n: np.full((n, SPARSE_DIM), "x")), P),
    # int64 keys
    "nan-key": ("ints", _keys(lambda k: [*k[:-1], float("nan")]), P),
    "nan-key-array": ("ints", _keys(lambda k: np.array([*k[:-1], np.nan])), P),
    "float-keys": ("ints", _keys(lambda k: np.asarray(k, dtype=np.float64)), P),
    "fractional-keys": ("ints", _keys(lambda k: [x + 0.5 for x in k]), P),
    "bool-keys": ("ints", _keys(lambda k: [True] * len(k)), P),
    "str-keys-for-int": ("ints", _keys(lambda k: [str(x) for x in k]), P),
    "none-key": ("ints", _keys(lambda k: [*k[:-1], None]), P),
    "key-above-int64": ("ints", _keys(lambda k: [*k[:-1], 2**63]), P),
    "keys-2d": ("ints", _keys(lambda k: np.asarray(k).reshape(1, -1)), D),
    # str keys
    "int-keys-for-str": ("strs", _keys(lambda k: list(range(len(k)))), P),
    "mixed-keys": ("strs", _keys(lambda k: [*k[:-1], 7]), P),
    "none-str-key": ("strs", _keys(lambda k: [None, *k[1:]]), P),
    "bytes-keys": ("strs", _keys(lambda k: [x.encode() for x in k]), P),
    "int-array-keys-for-str": ("strs", _keys(lambda k: np.arange(len(k))), P),
    "surrogate-key": ("strs", _keys(lambda k: [*k[:-1], "bad\ud800"]), P),
    "str-keys-2d": ("strs", _keys(lambda k: np.array(k).reshape(1, -1)), D),
    # features
    "unknown-feature": ("ints", _values_as(lambda v: {**v, "zz": [0] * len(v["f"])}), P),
    "missing-feature": ("strs", _values_as(lambda v: {f: x for f, x in v.items() if f != "m"}), P),
    "values-not-mapping": ("ints", _values_as(lambda v: list(v.values())), P),
    # event times
    "event-time-length": ("ints", _times(lambda n: T0 + np.arange(n + 1) * SEC), D),
    "event-time-nat": (
        "ints",
        _times(lambda n: np.array([T0] * (n - 1) + [np.datetime64("NaT")])),
        P,
    ),
    "event-time-one-nat": ("strs", _times(lambda n: np.datetime64("NaT", "ns")), P),
    "event-time-ints": ("ints", _times(lambda n: np.arange(n) + 1_700_000_000), P),
    "event-time-int": ("strs", _times(lambda n: 1_700_000_000), P),
    "event-time-strings": ("ints", _times(lambda n: ["2024-01-01"] * n), P),
    "event-time-string": ("strs", _times(lambda n: "2024-01-01T00:00:00"), P),
    "event-time-floats": ("ints", _times(lambda n: np.ones(n)), P),
    "event-time-2d": ("ints", _times(lambda n: (T0 + np.arange(n) * SEC).reshape(1, -1)), D),
    "event-time-out-of-range": ("strs", _times(lambda n: np.datetime64("3000-01-01", "s")), P),
}


@pytest.mark.parametrize("case", list(BAD_WRITES), ids=list(BAD_WRITES))
def test_bad_write_changes_nothing(env: Env, case: str) -> None:
    name, mutate, exc = BAD_WRITES[case]
    g = env.group(name)
    before = state(env.store)
    # A valid write waits uncommitted: the failed write must not disturb it either.
    env.valid_write(name, 3)
    n = 4
    keys = env.new_keys(name, n - 1) + env.models[name].order[-1:]  # new keys and an old one
    bad_keys, bad_vals, bad_t = mutate(env, keys, values(env.rng, n), env.tick(n))
    with pytest.raises(exc) as info:
        g.write(bad_keys, bad_vals, event_time=bad_t)
    assert isinstance(info.value, mmfs.MmfsError)
    assert str(info.value)
    assert state(env.store) == before  # committed data untouched
    gen = env.store.commit("after a failed write")
    assert gen == before["generation"] + 1
    env.check()  # the valid write is in, nothing of the failed one
    env.valid_write(name, 4, old_keys=2)
    env.store.commit("a valid write after a failed one")
    env.check()
    with mmfs.open(env.path, mode="r") as reader:  # a fresh reader sees the same
        assert state(reader) == state(env.store)


def test_failed_write_leaves_no_quantisation(tmp_path: Path) -> None:
    """The first int8 write fits scale/offset; a write that fails must not fit them."""
    with mmfs.open(tmp_path / "s", durability="none") as st:
        schema = {"q": mmfs.dense(3, "int8"), "s": mmfs.sparse(5)}
        g = st.create_group("g", key="k", schema=schema)
        st.commit()
        wide = np.array([[-1000.0, 0.0, 1000.0]] * 2)
        with pytest.raises(mmfs.DimensionError):
            g.write([1, 2], {"q": wide, "s": sp.csr_matrix((3, 5))})  # bad "s", after "q"
        small = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
        g.write([1, 2], {"q": small, "s": sp.csr_matrix((2, 5))})
        st.commit()
        got = g.get([1, 2])["q"]
        # Fitted on [0.1, 0.4] x ... : one step is 0.3 / 255; fitted on +-1000 it is ~8.
        assert np.allclose(got, small, atol=0.01), got


def test_failed_write_adds_no_key_or_category(env: Env) -> None:
    g = env.group("strs")
    n_before = len(g)
    keys = env.new_keys("strs", 3)
    vals = values(env.rng, 3)
    vals["c"] = ["brand-new-category"] * 3
    vals["m"] = np.ones((3, 10), np.int64)  # not bool: fails after keys and categories
    with pytest.raises(mmfs.ParameterError):
        g.write(keys, vals)
    env.store.commit()
    assert len(g) == n_before
    assert g.get(keys).mask.all()
    env.check()


def test_str_keys_from_a_generator(env: Env) -> None:
    """An iterable of str keys is accepted by the key index; a write with one either
    works or fails cleanly (never a numpy error, never a half write)."""
    g = env.group("strs")
    keys = env.new_keys("strs", 3)
    vals = values(env.rng, 3)
    t = env.tick(3)
    before = state(env.store)
    try:
        g.write((k for k in keys), vals, event_time=t)
    except mmfs.MmfsError:
        env.store.commit()
        assert state(env.store) == {**before, "generation": before["generation"] + 1}
        env.check()
        return
    env.models["strs"].write(keys, vals, t)
    env.store.commit()
    env.check()


# --------------------------------------------------------------------------- accepted input


def test_accepted_alternative_forms(env: Env) -> None:
    """What the code converts rather than refuses (the model checks the result)."""
    g = env.group("ints")
    # A dense ndarray (and a list of lists) for a sparse feature; an (n, 1) scalar column.
    keys = env.new_keys("ints", 2)
    vals = values(env.rng, 2)
    dense_s = vals["s"].toarray()
    env.write("ints", keys, {**vals, "s": dense_s, "f": vals["f"].reshape(2, 1)}, env.tick(2))
    env.models["ints"].rows[keys[0]][1]["f"] = vals["f"][0]
    env.models["ints"].rows[keys[1]][1]["f"] = vals["f"][1]
    keys = env.new_keys("ints", 2)
    vals = values(env.rng, 2)
    env.write("ints", keys, {**vals, "s": vals["s"].toarray().tolist()}, env.tick(2))
    # One key as a plain int with 1-D dense values.
    key = env.new_keys("ints", 1)[0]
    vals = values(env.rng, 1)
    one = {f: (v[0] if f in ("d", "q", "m") else v) for f, v in vals.items()}
    env.write("ints", [key], vals, env.tick(1))
    assert g.write(key, one, event_time=env.tick(1)[0]) == 1
    env.models["ints"].write([key], vals, T0 + (env.clock - 1) * SEC)
    # An empty write.
    empty = {f: (v[:0] if f != "c" else []) for f, v in values(env.rng, 1).items()}
    assert g.write([], empty) == 0
    env.store.commit()
    env.check()


# --------------------------------------------------------------------------- last write wins


@pytest.mark.parametrize("name", ["ints", "strs"])
def test_duplicate_keys_in_one_write(env: Env, name: str) -> None:
    g = env.group(name)
    a, b = env.new_keys(name, 2)
    old = env.models[name].order[0]
    # Equal event times: the last occurrence wins.
    keys = [a, b, a, old, a, old]
    vals = values(env.rng, len(keys))
    t = env.tick(1)[0]
    env.write(name, keys, vals, t)
    env.store.commit()
    env.check()
    got = g.get([a, old])
    assert got["f"].tolist() == [vals["f"][4], vals["f"][5]]
    # Different event times: the greatest wins, wherever it is in the write.
    times = env.tick(5)
    keys = [b, b, b, a, a]
    order = [times[2], times[4], times[0], times[1], times[1]]  # b: index 1; a: tie -> 4
    vals = values(env.rng, 5)
    env.write(name, keys, vals, np.array(order))
    env.store.commit()
    env.check()
    got = g.get([b, a])
    assert got["f"].tolist() == [vals["f"][1], vals["f"][4]]
    assert np.array_equal(got.event_time, np.array([order[1], order[4]]))


@pytest.mark.parametrize("name", ["ints", "strs"])
def test_older_event_time_does_not_replace(env: Env, name: str) -> None:
    g = env.group(name)
    k = env.new_keys(name, 1)
    newer = env.tick(1)
    first = values(env.rng, 1)
    env.write(name, k, first, newer)
    env.store.commit()
    # Later writes with an older time, in another commit and in the same one.
    env.write(name, k, values(env.rng, 1), newer - 10 * SEC)
    env.store.commit()
    env.check()
    assert g.get(k)["f"].tolist() == first["f"].tolist()
    env.write(name, k, values(env.rng, 1), newer - 5 * SEC)
    env.write(name, k, values(env.rng, 1), newer - 1)
    env.store.commit()
    assert g.get(k)["f"].tolist() == first["f"].tolist()
    # The same time again: the later write wins.
    again = values(env.rng, 1)
    env.write(name, k, again, newer)
    env.store.commit()
    assert g.get(k)["f"].tolist() == again["f"].tolist()
    env.check()


def test_random_writes_match_the_model(env: Env) -> None:
    rng = np.random.default_rng(99)
    for _round in range(6):
        for name in ("ints", "strs"):
            pool = env.models[name].order
            n = int(rng.integers(1, 30))
            keys = [pool[int(i)] for i in rng.integers(0, len(pool), n)]
            keys += env.new_keys(name, int(rng.integers(0, 3)))
            times = T0 + rng.integers(0, 20_000, len(keys)) * SEC  # old and new, with ties
            env.write(name, keys, values(env.rng, len(keys)), times)
        env.store.commit()
        env.check()


# --------------------------------------------------------------------------- groups and schemas


def _bad_group(**kw: Any) -> Callable[[mmfs.Store], Any]:
    args = {"name": "fresh", "key": "id", "key_type": "int64", "schema": {"x": mmfs.scalar()}}
    args.update(kw)
    return lambda st: st.create_group(**args)


BAD_GROUPS: dict[str, Callable[[mmfs.Store], Any]] = {
    "reserved-slot": _bad_group(schema={"slot": mmfs.scalar()}),
    "reserved-event-time": _bad_group(schema={"event_time": mmfs.scalar()}),
    "key-is-feature": _bad_group(key="x"),
    "duplicate-group": _bad_group(name="ints"),
    "name-empty": _bad_group(name=""),
    "name-digit": _bad_group(name="1group"),
    "name-space": _bad_group(name="my group"),
    "name-slash": _bad_group(name="a/b"),
    "name-dots": _bad_group(name=".."),
    "name-long": _bad_group(name="g" * 65),
    "name-int": _bad_group(name=5),
    "name-none": _bad_group(name=None),
    "key-name-bad": _bad_group(key="the key"),
    "key-type": _bad_group(key_type="float64"),
    "key-type-dtype": _bad_group(key_type=np.int64),
    "schema-empty": _bad_group(schema={}),
    "schema-none": _bad_group(schema=None),
    "schema-list": _bad_group(schema=[("x", mmfs.scalar())]),
    "schema-dtype-string": _bad_group(schema={"x": "float32"}),
    "schema-numpy-dtype": _bad_group(schema={"x": np.float32}),
    "feature-name-bad": _bad_group(schema={"bad-name": mmfs.scalar()}),
    "feature-name-int": _bad_group(schema={3: mmfs.scalar()}),
    "description": _bad_group(description=5),
    "scalar-float16": lambda st: mmfs.scalar("float16"),
    "scalar-int32": lambda st: mmfs.scalar("int32"),
    "scalar-nonsense": lambda st: mmfs.scalar("nonsense"),
    "scalar-int": lambda st: mmfs.scalar(5),  # type: ignore[arg-type]
    "dense-int16": lambda st: mmfs.dense(4, "int16"),
    "dense-float64": lambda st: mmfs.dense(4, "float64"),
    "dense-dim-zero": lambda st: mmfs.dense(0),
    "dense-dim-negative": lambda st: mmfs.dense(-3),
    "dense-dim-float": lambda st: mmfs.dense(2.5),  # type: ignore[arg-type]
    "dense-dim-bool": lambda st: mmfs.dense(True),
    "dense-dim-huge": lambda st: mmfs.dense(2**40),
    "dense-range-not-int8": lambda st: mmfs.dense(4, "float32", range=(0, 1)),
    "dense-range-reversed": lambda st: mmfs.dense(4, "int8", range=(1, 0)),
    "dense-range-nan": lambda st: mmfs.dense(4, "int8", range=(0, np.nan)),
    "dense-range-shape": lambda st: mmfs.dense(4, "int8", range=([0, 0], [1, 1])),
    "dense-range-scalar": lambda st: mmfs.dense(4, "int8", range=1.0),
    "sparse-dim-zero": lambda st: mmfs.sparse(0),
    "sparse-dim-str": lambda st: mmfs.sparse("10"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", list(BAD_GROUPS), ids=list(BAD_GROUPS))
def test_bad_group_or_schema(env: Env, case: str) -> None:
    before = state(env.store)
    with pytest.raises(mmfs.ParameterError) as info:
        BAD_GROUPS[case](env.store)
    assert str(info.value)
    assert state(env.store) == before
    env.store.commit()
    after = state(env.store)
    assert after == {**before, "generation": before["generation"] + 1}
    g = env.store.create_group("fresh", key="id", schema={"x": mmfs.scalar()})
    g.write([1, 2], {"x": [1.0, 2.0]})
    env.store.commit()
    assert g.get([1, 2])["x"].tolist() == [1.0, 2.0]
    env.check()


def test_unknown_group(env: Env) -> None:
    calls: list[Callable[[], Any]] = [
        lambda: env.store["nope"],
        lambda: env.store.group("nope"),
        lambda: env.store.drop_group("nope"),
        lambda: env.store.describe("nope"),
    ]
    for call in calls:
        with pytest.raises(mmfs.NotFoundError, match="nope"):
            call()
    assert "nope" not in env.store


# --------------------------------------------------------------------------- read-only, closed


def test_read_only_store_refuses_writes(env: Env) -> None:
    before = state(env.store)
    with mmfs.open(env.path, mode="r") as reader:
        g = reader["ints"]
        vals = values(env.rng, 2)
        calls: dict[str, Callable[[], Any]] = {
            "write": lambda: g.write([1, 2], vals),
            "create_group": lambda: reader.create_group("x", schema={"x": mmfs.scalar()}),
            "drop_group": lambda: reader.drop_group("ints"),
            "commit": lambda: reader.commit(),
            "rollback": lambda: reader.rollback(),
        }
        for what, call in calls.items():
            with pytest.raises(mmfs.ReadOnlyError):
                call()
            assert state(reader) == before, what
    assert state(env.store) == before
    env.valid_write("ints")
    env.store.commit()
    env.check()


@pytest.mark.parametrize("mode", ["a", "r"])
def test_use_after_close(env: Env, mode: str) -> None:
    if mode == "a":
        st, g = env.store, env.group("ints")
    else:
        st = mmfs.open(env.path, mode="r")
        g = st["ints"]
    key = env.models["ints"].order[0]
    st.close()
    st.close()  # idempotent
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: g.get([key]),
        "get-one": lambda: g.get(key),
        "len": lambda: len(g),
        "keys": lambda: g.keys(),
        "describe": lambda: g.describe(),
        "write": lambda: g.write([key], values(env.rng, 1)),
        "groups": lambda: st.groups(),
        "getitem": lambda: st["ints"],
        "generation": lambda: st.generation,
        "verify": lambda: st.verify(),
        "refresh": lambda: st.refresh(),
        "commit": lambda: st.commit(),
        "rollback": lambda: st.rollback(),
        "create_group": lambda: st.create_group("x", schema={"x": mmfs.scalar()}),
        "drop_group": lambda: st.drop_group("ints"),
        "describe-store": lambda: st.describe(),
    }
    for what, call in calls.items():
        with pytest.raises(mmfs.StoreClosedError):
            call()
        assert what
    with mmfs.open(env.path, mode="r") as reader:  # the store itself is fine
        check_model(reader["ints"], env.models["ints"], ABSENT["ints"])


def test_batches_outlive_their_store(env: Env) -> None:
    """'Batches already returned stay valid': read every feature of batches taken before
    close() after it (in a subprocess: a use of unmapped memory would kill pytest)."""
    env.store.close()
    script = textwrap.dedent(
        """
        import gc, sys
        import numpy as np, mmfs
        st = mmfs.open(sys.argv[1], mode="r")
        g = st["ints"]
        keys = g.keys()
        b = g.get(keys)
        one = g.get(int(keys[0]))
        before = {f: b[f] for f in ("f", "d")}
        st.close()
        del st, g
        gc.collect()
        filler = [np.ones(1 << 16) for _ in range(64)]  # reuse freed memory
        out = []
        for batch in (b, one):
            for f in batch.names:
                v = batch[f]
                out.append(repr((v.toarray() if hasattr(v, "toarray") else v).tolist()))
            out.append(repr(batch.event_time.tolist()))
        assert np.array_equal(before["f"], b["f"]) and np.array_equal(before["d"], b["d"])
        print("ok", len(out))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(env.path)], capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert proc.stdout.startswith("ok")


# --------------------------------------------------------------------------- reads


@pytest.mark.parametrize("name", ["ints", "strs"])
def test_bad_reads(env: Env, name: str) -> None:
    g = env.group(name)
    before = state(env.store)
    key = env.models[name].order[0]
    absent = ABSENT[name]
    with pytest.raises(mmfs.MmfsError, match="zz"):
        g.get([key], features=["f", "zz"])
    with pytest.raises(mmfs.MmfsError, match="zz"):
        g.get(key, features="zz")
    with pytest.raises(mmfs.ParameterError):
        g.get([key], features=["f", "f"])
    # missing="raise" names the missing keys, batch and one key.
    with pytest.raises(mmfs.NotFoundError) as info:
        g.get([key, absent[0]], missing="raise")
    assert repr(absent[0]) in str(info.value) or str(absent[0]) in str(info.value)
    with pytest.raises(mmfs.NotFoundError) as info:
        g.get(absent[0], missing="raise")
    assert str(absent[0]) in str(info.value)
    assert not g.get([key], missing="raise").mask.any()
    if name == "ints":
        for bad in ([1.5], np.array([np.nan]), 1.5, [True], ["1"], "1", np.zeros((2, 2), int)):
            with pytest.raises(mmfs.ParameterError):
                g.get(bad)
    else:
        for bad in ([1], 1, [b"x"], b"x", [None], np.array([["a"]]), ["bad\ud800"], "bad\ud800"):
            with pytest.raises(mmfs.ParameterError):
                g.get(bad)
    assert state(env.store) == before


@pytest.mark.parametrize("name", ["ints", "strs"])
@pytest.mark.parametrize(
    "which", ["batch-found", "batch-absent", "batch-both", "one-found", "one-absent"]
)
def test_missing_must_be_nan_or_raise(env: Env, name: str, which: str) -> None:
    """missing="bogus" is refused whether or not the keys are there, one key or many."""
    key, absent = env.models[name].order[0], ABSENT[name][0]
    keys = {
        "batch-found": [key], "batch-absent": [absent], "batch-both": [key, absent],
        "one-found": key, "one-absent": absent,
    }[which]  # fmt: skip
    with pytest.raises(mmfs.ParameterError, match="missing"):
        env.group(name).get(keys, missing="bogus")


def test_bad_open_arguments(env: Env, tmp_path: Path) -> None:
    bad: list[dict[str, Any]] = [
        {"mode": "w"}, {"mode": "rw"}, {"durability": "always"},
        {"segment_bytes": 100}, {"segment_bytes": "4096"}, {"segment_bytes": 2**31},
        {"segment_bytes": True}, {"segment_bytes": 4096.0},
    ]  # fmt: skip
    for kw in bad:
        with pytest.raises(mmfs.ParameterError):
            mmfs.open(tmp_path / "new", **kw)
    assert not (tmp_path / "new").exists() or not os.listdir(tmp_path / "new")
    with pytest.raises(mmfs.LockedError):
        mmfs.open(env.path)
    env.valid_write("strs")
    env.store.commit()
    env.check()


def test_commit_arguments(env: Env) -> None:
    before = state(env.store)
    env.valid_write("ints")
    bad: list[dict[str, Any]] = [{"message": 5}, {"tags": [""]}, {"tags": [1]}, {"tags": 5}]
    for kw in bad:
        with pytest.raises(mmfs.ParameterError):
            env.store.commit(**kw)
        assert state(env.store) == before
    env.store.commit("ok", tags=["a", "b"])
    env.check()


def test_datetime_event_times(env: Env) -> None:
    """Python datetimes (naive = UTC, aware converted) are accepted and stored in ns."""
    k = env.new_keys("ints", 2)
    aware = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    naive = dt.datetime(2024, 5, 1, 10, 0, 0, 5)
    vals = values(env.rng, 2)
    env.group("ints").write(k, vals, event_time=[aware, naive])
    want = np.array(["2024-05-01T10:00:00", "2024-05-01T10:00:00.000005"], dtype="datetime64[ns]")
    env.models["ints"].write(k, vals, want)
    env.store.commit()
    env.check()
