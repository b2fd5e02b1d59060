"""Point-in-time training sets (``Store.training_set``) against ``pandas.merge_asof``.

Reference: every row ever written, with its write sequence number, as one DataFrame per
group.  ``merge_asof(entity, history, on="event_time", by=key, direction="backward",
allow_exact_matches=True, tolerance=ttl)`` with the history sorted stably by (event time,
write sequence) picks, per entity row, the last written of the rows with the greatest
event time <= the row's time (and >= time - ttl): the documented rule.  Times are
compared in UTC.  The history carries a ``found`` indicator column, so that "missing" is
told apart from a stored NaN (or a stored None category).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmfs

T0 = np.datetime64("2026-03-07T00:00:00", "ns")  # New York moves to summer time on 03-08
HOUR = np.timedelta64(3600 * 10**9, "ns")
NS = np.timedelta64(1, "ns")
SPAN = 30  # history event times are T0 + [0, SPAN) hours
N_USERS, N_ITEMS = 25, 15  # keys written: 0..N_USERS-1 and "i0".."i{N_ITEMS-1}"

USERS = {
    "a": mmfs.scalar("float32"),
    "b": mmfs.scalar("int64"),
    "c": mmfs.category(),
    "e": mmfs.dense(4),
    "f": mmfs.scalar("float64"),
    "ok": mmfs.scalar("bool"),
}
ITEMS = {"p": mmfs.scalar("float64"), "q": mmfs.scalar("int64")}
KEYS = {"users": "user_id", "items": "item_id"}
CATS = ["red", "green", "blue", None]  # the model stores codes into this list
FEATURES = ["users.a", "items.p", "users.b", "users.c", "users.e", "items.q", "users.f", "users.ok"]
WIDTH = {"users.e": 4}  # columns of a feature in to_numpy(); 1 unless named here


# -- the store and its model -------------------------------------------------------------


class Model:
    """A store with groups ``users`` (int64 key ``user_id``) and ``items`` (str key
    ``item_id``), and every row written to it, in write order."""

    def __init__(self, path: Path, *, groups: tuple[str, ...] = ("users", "items")) -> None:
        self.path = path
        self.store = mmfs.open(path, durability="none")
        for group in groups:
            schema = USERS if group == "users" else ITEMS
            key_type = "int64" if group == "users" else "str"
            self.store.create_group(group, key=KEYS[group], key_type=key_type, schema=schema)
        self.frames: dict[str, list[pd.DataFrame]] = {g: [frame(g, [], [], {})] for g in groups}
        self.seq = 0  # rows written so far (the write sequence number of the next)
        self.calls = 0  # write calls so far
        self.seq_at: dict[int, int] = {}  # version -> rows written before it

    def write(
        self,
        group: str,
        keys: Any,
        times: np.ndarray,
        values: dict[str, Any],
        tz: str | None = None,
    ) -> None:
        """Write rows (times: naive UTC datetime64[ns]; sent tz-aware in ``tz`` if given)."""
        n = len(keys)
        sent = {name: [CATS[c] for c in v] if name == "c" else v for name, v in values.items()}
        when: Any = times
        if tz is not None:
            when = pd.Series(times).dt.tz_localize("UTC").dt.tz_convert(tz)
        self.store[group].write(keys, sent, event_time=when)
        seq = self.seq + np.arange(n)
        self.frames[group].append(frame(group, keys, times, values, seq=seq, call=self.calls))
        self.seq += n
        self.calls += 1

    def commit(self, message: str = "") -> int:
        v = self.store.commit(message)
        self.seq_at[v] = self.seq
        return v

    def history(self, group: str, version: int | None = None) -> pd.DataFrame:
        """Every row of ``group`` written (before ``version``), in write order."""
        rows = pd.concat(self.frames[group], ignore_index=True)
        if version is not None:
            rows = pd.DataFrame(rows[rows["seq"] < self.seq_at[version]])
        return rows


def frame(
    group: str, keys: Any, times: Any, values: dict[str, Any], seq: Any = (), call: int = 0
) -> pd.DataFrame:
    """Rows of the model: key, event time (twice: ``written_at`` survives the merge),
    features (``e`` as e0..e3, ``c`` as codes into CATS), sequence and call numbers."""
    n = len(keys)
    key_dtype = np.int64 if group == "users" else object
    cols: dict[str, Any] = {
        KEYS[group]: np.asarray(keys, dtype=key_dtype),
        "event_time": np.asarray(times, dtype="datetime64[ns]"),
        "written_at": np.asarray(times, dtype="datetime64[ns]"),
    }
    schema = USERS if group == "users" else ITEMS
    for name, ftype in schema.items():
        if name == "e":
            e = np.asarray(values.get("e", np.zeros((0, 4))), dtype=np.float32).reshape(n, 4)
            cols.update({f"e{i}": e[:, i] for i in range(4)})
        elif name == "c":
            cols["c"] = np.asarray(values.get("c", []), dtype=np.int64)
        else:
            cols[name] = np.asarray(values.get(name, []), dtype=str(ftype.dtype))
    cols["seq"] = np.asarray(seq, dtype=np.int64)
    cols["call"] = np.full(n, call, dtype=np.int64)
    return pd.DataFrame(cols)


def random_values(group: str, rng: np.random.Generator, n: int) -> dict[str, Any]:
    """Feature values, with stored NaN (floats) and stored None (categories) in them."""
    if group == "items":
        p = rng.normal(size=n)
        p[rng.random(n) < 0.1] = np.nan
        return {"p": p, "q": rng.integers(-(2**40), 2**40, n)}
    a = rng.normal(size=n).astype(np.float32)
    a[rng.random(n) < 0.1] = np.nan
    f = rng.normal(size=n)
    f[rng.random(n) < 0.1] = np.nan
    return {
        "a": a,
        "b": rng.integers(-(2**40), 2**40, n),
        "c": rng.choice(len(CATS), n, p=[0.3, 0.3, 0.3, 0.1]),
        "e": rng.normal(size=(n, 4)).astype(np.float32),
        "f": f,
        "ok": rng.random(n) < 0.5,
    }


def random_keys(group: str, rng: np.random.Generator, n: int, lo: int = 0) -> np.ndarray:
    if group == "users":
        return rng.integers(lo, N_USERS, n)
    return np.array([f"i{k}" for k in rng.integers(lo, N_ITEMS, n)], dtype=object)


def fill(model: Model, rng: np.random.Generator, commits: int, tz: str | None = None) -> None:
    """History over ``commits`` commits of 1-3 write calls each, of 1 to 200 rows: few
    keys and hourly event times, so that equal times for a key are frequent, within one
    write call and across calls and commits; times arrive in no order."""
    for _ in range(commits):
        for _ in range(int(rng.integers(1, 4))):
            for group in model.frames:
                n = int(rng.integers(1, 200))
                times = T0 + rng.integers(0, SPAN, n) * HOUR
                model.write(
                    group, random_keys(group, rng, n), times, random_values(group, rng, n), tz
                )
        model.commit()


def make_entity(
    rng: np.random.Generator, model: Model, n: int, ttl: np.timedelta64 | None
) -> pd.DataFrame:
    """n entity rows (then some duplicated), shuffled, with a non-default index: keys
    seen and never seen; times before all history, after all of it, on the hourly grid,
    exactly at an event time of the row's key and one ns before one, and at the ttl
    boundary of a key's newest row (event time + ttl: inclusive; one ns later: out)."""
    span = ttl if ttl is not None else np.timedelta64(0, "ns")
    t = T0 + rng.integers(-3, SPAN + 3, n) * HOUR
    user = rng.integers(-3, N_USERS + 3, n)
    item = np.array([f"i{k}" for k in rng.integers(-3, N_ITEMS + 3, n)], dtype=object)
    kind = rng.integers(0, 5, n)  # 0: the grid; 1-4: at an event time of the row's key
    for group, keys in (("users", user), ("items", item)):
        src = model.history(group) if group in model.frames else None
        if src is None or len(src) == 0:
            continue
        col = KEYS[group]
        newest = src.loc[src.groupby(col)["written_at"].idxmax()]
        at = (kind > 0) & (rng.random(n) < 0.5)  # this group's key decides the time
        for rows, kinds, shift in (
            (src, (1, 4), np.where(kind == 4, -NS, 0 * NS)),
            (newest, (2, 3), np.where(kind == 3, span + NS, span)),
        ):
            sel = at & np.isin(kind, kinds)
            pick = rng.integers(0, len(rows), n)
            keys[sel] = rows[col].to_numpy()[pick][sel]
            t[sel] = (rows["written_at"].to_numpy()[pick] + shift)[sel]
    entity = pd.DataFrame({"user_id": user, "item_id": item, "event_time": t})
    entity["label"] = rng.normal(size=n)
    dup = rng.integers(0, n, max(n // 5, 1)) if n else np.zeros(0, dtype=np.int64)
    entity = pd.concat([entity, entity.iloc[dup]], ignore_index=True)
    entity = entity.iloc[rng.permutation(len(entity))].reset_index(drop=True)
    entity.index = pd.Index(rng.permutation(len(entity)) * 10 + 7, name="row")
    return entity


# -- the reference ------------------------------------------------------------------------


def utc(times: Any) -> np.ndarray:
    """Times as naive UTC datetime64[ns]."""
    s = pd.Series(times)
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy().astype("datetime64[ns]")


def reference(
    history: pd.DataFrame, keys: Any, times: Any, key: str, ttl: Any = None
) -> pd.DataFrame:
    """Per entity row, in input order, the history row merge_asof picks (``found`` is
    True) or NaN (``found`` is NaN)."""
    right = history.sort_values(["event_time", "seq"], kind="stable").assign(found=True)
    left = pd.DataFrame({key: np.asarray(keys), "event_time": utc(times)})
    left = left.assign(pos=np.arange(len(left)))
    kind = np.int64 if right[key].dtype.kind == "i" else object  # str keys: as objects
    left[key], right[key] = left[key].astype(kind), right[key].astype(kind)
    merged = pd.merge_asof(
        left.sort_values("event_time", kind="stable"), right, on="event_time", by=key,
        direction="backward", allow_exact_matches=True,
        tolerance=tolerance(ttl),
    )  # fmt: skip
    return merged.sort_values("pos").reset_index(drop=True)


def tolerance(ttl: Any) -> dt.timedelta | None:
    """ttl as merge_asof's tolerance (a pandas.Timedelta keeps nanoseconds)."""
    if ttl is None:
        return None
    out = pd.Timedelta(ttl)
    assert isinstance(out, pd.Timedelta)
    return out


def expected(ref: pd.DataFrame, name: str) -> Any:
    """What ``ts[name]`` must be for the reference rows: missing rows NaN (floats, and
    whole dense rows), 0 (int64), False (bool), None (categories)."""
    found = ref["found"].notna().to_numpy()
    feature = name.partition(".")[2]
    if feature == "e":
        out = np.full((len(ref), 4), np.nan, dtype=np.float32)
        for i in range(4):
            out[found, i] = ref[f"e{i}"].to_numpy()[found]
        return out
    if feature == "c":
        codes = ref["c"].to_numpy()
        return [CATS[int(codes[i])] if found[i] else None for i in range(len(ref))]
    dtype, fill_value = {
        "a": (np.float32, np.nan), "f": (np.float64, np.nan), "p": (np.float64, np.nan),
        "b": (np.int64, 0), "q": (np.int64, 0), "ok": (np.bool_, False),
    }[feature]  # fmt: skip
    out = np.full(len(ref), fill_value, dtype=dtype)
    out[found] = ref[feature].to_numpy()[found].astype(dtype)
    return out


def references(
    model: Model,
    entity: Any,
    ttl: Any = None,
    version: int | None = None,
    time_column: str = "event_time",
    key_columns: dict[str, str] | None = None,
) -> dict[str, pd.DataFrame]:
    out = {}
    for group, key in KEYS.items():
        if group in model.frames:
            col = (key_columns or {}).get(group, key)
            out[group] = reference(
                model.history(group, version), entity[col], entity[time_column], key, ttl
            )
    return out


def check(
    ts: mmfs.TrainingSet,
    model: Model,
    entity: Any,
    ttl: Any = None,
    version: int | None = None,
    **kw: Any,
) -> dict[str, pd.DataFrame]:
    """ts equals the reference: values, mask, event times, to_numpy and to_pandas."""
    groups = {name.partition(".")[0] for name in ts.features}
    refs = {g: r for g, r in references(model, entity, ttl, version, **kw).items() if g in groups}
    n = len(next(iter(refs.values())))
    assert len(ts) == n
    mask = ts.mask
    assert mask.shape == (n, len(ts.features))
    for j, name in enumerate(ts.features):
        group = name.partition(".")[0]
        ref = refs[group]
        found = ref["found"].notna().to_numpy()
        assert np.array_equal(mask[:, j], ~found), name
        want = expected(ref, name)
        if isinstance(want, list):
            assert list(ts[name]) == want, name
        else:
            np.testing.assert_array_equal(ts[name], want, err_msg=name, strict=True)
    for group, ref in refs.items():
        found = ref["found"].notna().to_numpy()
        stamp = ts.batch(group).event_time
        assert np.array_equal(stamp[found], ref["written_at"].to_numpy()[found])
        assert np.isnat(stamp[~found]).all()
    check_numpy(ts, refs)
    check_pandas(ts, entity)
    return refs


def check_numpy(ts: mmfs.TrainingSet, refs: dict[str, pd.DataFrame]) -> None:
    """to_numpy(): float32, features in request order, missing rows NaN."""
    x = ts.to_numpy()
    assert x.dtype == np.float32
    assert x.shape == (len(ts), sum(WIDTH.get(f, 1) for f in ts.features))
    at = 0
    for j, name in enumerate(ts.features):
        width = WIDTH.get(name, 1)
        part = x[:, at : at + width]
        at += width
        missing = ts.mask[:, j]
        assert np.isnan(part[missing]).all(), name
        if name.endswith(".c"):  # dictionary codes: -1 for a stored None
            codes = part[~missing, 0]
            assert np.array_equal(codes == -1, np.array(ts[name])[~missing] == None), name  # noqa: E711
            continue
        want = np.asarray(expected(refs[name.partition(".")[0]], name), dtype=np.float32)
        np.testing.assert_array_equal(part[~missing], want.reshape(len(ts), width)[~missing])


def check_pandas(ts: mmfs.TrainingSet, entity: Any) -> None:
    """to_pandas(): the input columns and index as given, then one column per feature
    agreeing with ts[name] and ts.mask."""
    out = ts.to_pandas()
    inputs = list(entity.columns) if isinstance(entity, pd.DataFrame) else list(entity)
    assert list(out.columns) == [*inputs, *ts.features]
    if isinstance(entity, pd.DataFrame):
        pd.testing.assert_frame_equal(out[inputs], entity)
    else:
        pd.testing.assert_index_equal(out.index, pd.RangeIndex(len(ts)))
    mask = ts.mask
    for j, name in enumerate(ts.features):
        col, value, missing = out[name], ts[name], mask[:, j]
        if name.endswith(".e"):
            assert col.dtype == object
            rows = np.stack(col.to_list()) if len(col) else value
            assert np.array_equal(rows, value, equal_nan=True), name
        elif name.endswith(".c"):
            assert [None if pd.isna(v) else v for v in col] == list(value)
        elif value.dtype.kind == "f":
            assert col.dtype == value.dtype
            np.testing.assert_array_equal(col.to_numpy(), value)
        else:  # int64 and bool: pandas' nullable Int64 and boolean where one is missing
            nullable = {"i": "Int64", "b": "boolean"}[value.dtype.kind]
            assert col.dtype == (nullable if missing.any() else value.dtype), name
            assert np.array_equal(col.isna().to_numpy(), missing)
            assert np.array_equal(col[~missing].to_numpy(dtype=value.dtype), value[~missing])


def built(path: Path, seed: int, commits: int | None = None) -> tuple[Model, np.random.Generator]:
    rng = np.random.default_rng(seed)
    model = Model(path)
    fill(model, rng, commits if commits is not None else int(rng.integers(5, 21)))
    return model, rng


Shared = Callable[[int, int], tuple[Model, np.random.Generator]]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """``shared(seed, salt)``: the store of ``seed`` (5 to 20 commits), built once for the
    tests that only read it, and a generator of its own for each test's entity rows."""
    models: dict[int, Model] = {}

    def get(seed: int, salt: int) -> tuple[Model, np.random.Generator]:
        if seed not in models:
            models[seed] = built(tmp_path_factory.mktemp(f"seed{seed}") / "s", seed)[0]
        return models[seed], np.random.default_rng([seed, salt])

    yield get
    for model in models.values():
        model.store.close()


TTLS = [None, np.timedelta64(0, "ns"), HOUR, 5 * HOUR + 17 * NS]


# -- the reference grid -------------------------------------------------------------------


@pytest.mark.parametrize("ttl", TTLS, ids=["none", "zero", "1h", "5h17ns"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_merge_asof(shared: Shared, seed: int, ttl: np.timedelta64 | None) -> None:
    model, rng = shared(seed, 0)
    entity = make_entity(rng, model, 400, ttl)
    ts = model.store.training_set(entity, FEATURES, ttl=ttl)
    refs = check(ts, model, entity, ttl)
    # The grid has what it claims: unsorted, duplicated rows; times before, after and
    # exactly at history; both found and missing rows; keys never seen.
    t = entity["event_time"].to_numpy()
    assert (np.diff(t.astype(np.int64)) < 0).any()
    assert entity.duplicated(["user_id", "item_id", "event_time"]).any()
    assert (t < T0).any()
    assert (t > T0 + SPAN * HOUR).any()
    users = model.history("users")
    assert np.isin(t, users["event_time"].to_numpy()).sum() > 50
    found = refs["users"]["found"].notna().to_numpy()
    assert 50 < found.sum() < len(entity) - 10
    assert (~np.isin(entity["user_id"], users["user_id"])).any()
    if ttl is not None:  # rows exactly at the ttl boundary, in and out
        age = t - refs["users"]["written_at"].to_numpy()
        assert (found & (age == ttl)).any()
        ref_no_ttl = references(model, entity)["users"]["found"].notna().to_numpy()
        assert (ref_no_ttl & ~found).any()


def test_equal_event_times_go_to_the_later_write(shared: Shared) -> None:
    model, rng = shared(2, 4)
    users = model.history("users")
    ties = users.groupby(["user_id", "event_time"])["call"]
    size, calls = ties.size().to_numpy(), ties.nunique().to_numpy()
    assert (size > 2).mean() > 0.3  # many rows share a key and a time
    assert (calls > 1).any()  # across write calls (and commits)
    assert (size > calls).any()  # within one write call
    entity = make_entity(rng, model, 400, None)
    ts = model.store.training_set(entity, FEATURES)
    check(ts, model, entity)
    # ... and it matters: the first write among equal times would give other values.
    first_wins = users.assign(seq=-users["seq"])
    ref = reference(first_wins, entity["user_id"], entity["event_time"], "user_id")
    assert (ref["seq"].to_numpy() != -references(model, entity)["users"]["seq"].to_numpy()).any()


def test_ties_by_hand(tmp_path: Path) -> None:
    model = Model(tmp_path / "s", groups=("users",))
    rng = np.random.default_rng(0)

    def put(keys: list[int], b: list[int], t: np.datetime64) -> None:
        values = {**random_values("users", rng, len(keys)), "b": np.array(b)}
        model.write("users", keys, np.full(len(keys), t), values)

    put([1], [10], T0)
    model.commit()
    put([1], [20], T0)  # a later call, same commit
    put([1, 1, 2, 1], [30, 31, 32, 33], T0)  # later in one call wins: 33
    put([1], [5], T0 - HOUR)  # written later, but older
    model.commit()
    put([2], [40], T0)  # a later commit
    put([2, 2], [41, 42], T0 + HOUR)
    model.commit()
    entity = {
        "user_id": [1, 1, 1, 2, 2, 2],
        "event_time": [T0 - HOUR, T0, T0 + 9 * HOUR, T0, T0 + HOUR - NS, T0 + HOUR],
    }
    ts = model.store.training_set(entity, ["users.b"])
    assert ts["users.b"].tolist() == [5, 33, 33, 40, 40, 42]
    assert not ts.mask.any()
    check(ts, model, entity)


# -- boundaries and ttl -------------------------------------------------------------------


BOUNDARIES = [  # (ttl, [(query time - T0, b found or None)]) for rows b=1 at T0, 2 at T0+2h
    (None, [(-NS, None), (0 * NS, 1), (2 * HOUR - NS, 1), (2 * HOUR, 2), (99 * HOUR, 2)]),
    (0 * NS, [(-NS, None), (0 * NS, 1), (NS, None), (2 * HOUR, 2), (2 * HOUR + NS, None)]),
    (NS, [(0 * NS, 1), (NS, 1), (2 * NS, None), (2 * HOUR + NS, 2), (2 * HOUR + 2 * NS, None)]),
    (HOUR, [(-NS, None), (HOUR, 1), (HOUR + NS, None), (3 * HOUR, 2), (3 * HOUR + NS, None)]),
    (
        3 * HOUR,
        [(HOUR, 1), (2 * HOUR - NS, 1), (3 * HOUR, 2), (5 * HOUR, 2), (5 * HOUR + NS, None)],
    ),
]


@pytest.mark.parametrize(("ttl", "cases"), BOUNDARIES, ids=["none", "0", "1ns", "1h", "3h"])
def test_boundaries_are_inclusive(
    tmp_path: Path, ttl: np.timedelta64 | None, cases: list[tuple[np.timedelta64, int | None]]
) -> None:
    model = Model(tmp_path / "s", groups=("users",))
    values = random_values("users", np.random.default_rng(0), 2)
    model.write("users", [1, 1], np.array([T0, T0 + 2 * HOUR]), {**values, "b": np.array([1, 2])})
    model.commit()
    entity = pd.DataFrame({"user_id": 1, "event_time": [T0 + d for d, _ in cases]})
    ts = model.store.training_set(entity, ["users.*"], ttl=ttl)
    want = [0 if b is None else b for _, b in cases]
    assert ts["users.b"].tolist() == want
    assert ts.mask[:, 1].tolist() == [b is None for _, b in cases]
    check(ts, model, entity, ttl)


@pytest.mark.parametrize(
    "ttl",
    [
        [np.timedelta64(0, "ns"), np.timedelta64(0, "D"), dt.timedelta(0), pd.Timedelta(0)],
        [
            np.timedelta64(90, "m"),
            np.timedelta64(5400, "s"),
            dt.timedelta(minutes=90),
            pd.Timedelta("1h30min"),
        ],
        [np.timedelta64(7, "D"), dt.timedelta(days=7), pd.Timedelta(days=7)],
    ],
    ids=["zero", "90min", "7d"],
)
def test_ttl_types_are_equivalent(shared: Shared, ttl: list[Any]) -> None:
    model, rng = shared(1, 5)
    entity = make_entity(rng, model, 200, np.timedelta64(ttl[0], "ns"))
    first = model.store.training_set(entity, FEATURES, ttl=ttl[0])
    check(first, model, entity, np.timedelta64(ttl[0], "ns"))
    for other in ttl[1:]:
        ts = model.store.training_set(entity, FEATURES, ttl=other)
        pd.testing.assert_frame_equal(ts.to_pandas(), first.to_pandas())
        assert ts.to_numpy().tobytes() == first.to_numpy().tobytes()
    # a ttl longer than all history is no ttl
    forever = model.store.training_set(entity, FEATURES, ttl=dt.timedelta(days=3650))
    pd.testing.assert_frame_equal(
        forever.to_pandas(), model.store.training_set(entity, FEATURES).to_pandas()
    )


# -- time zones ---------------------------------------------------------------------------


def test_time_zones_are_converted_to_utc(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    model = Model(tmp_path / "s")
    fill(model, rng, commits=3, tz="Asia/Kolkata")  # +05:30
    fill(model, rng, commits=3, tz="Europe/London")
    fill(model, rng, commits=2)  # naive: UTC
    naive = make_entity(rng, model, 300, HOUR)
    aware = naive.assign(
        event_time=naive["event_time"].dt.tz_localize("UTC").dt.tz_convert("America/New_York")
    )
    assert aware["event_time"].dt.tz_localize(None).dt.hour.nunique() > 1
    offsets = aware["event_time"].map(lambda t: t.utcoffset()).unique()
    assert len(offsets) == 2  # before and after the switch to summer time
    for ttl in (None, HOUR):
        ts = model.store.training_set(aware, FEATURES, ttl=ttl)
        check(ts, model, aware, ttl)  # the reference compares in UTC
        plain = model.store.training_set(naive, FEATURES, ttl=ttl)
        assert ts.to_numpy().tobytes() == plain.to_numpy().tobytes()
        assert np.array_equal(ts.mask, plain.mask)
        out = ts.to_pandas()
        assert str(out["event_time"].dt.tz) == "America/New_York"


# -- edge cases ---------------------------------------------------------------------------


def test_keys_never_seen_are_missing(shared: Shared) -> None:
    model, _ = shared(1, 6)
    entity = pd.DataFrame(
        {"user_id": [-1, N_USERS, 2**62], "item_id": ["", "x", "i-1"], "event_time": T0 + HOUR}
    )
    ts = model.store.training_set(entity, FEATURES)
    assert ts.mask.all()
    assert np.isnan(ts["users.a"]).all()
    assert np.isnan(ts["users.e"]).all()
    assert ts["users.b"].tolist() == [0, 0, 0]
    assert ts["users.ok"].tolist() == [False] * 3
    assert list(ts["users.c"]) == [None] * 3
    out = ts.to_pandas()
    assert out["users.b"].dtype == "Int64"
    assert out["users.ok"].dtype == "boolean"
    assert out[[f for f in FEATURES if f != "users.e"]].isna().all().all()
    assert all(np.isnan(e).all() for e in out["users.e"])
    check(ts, model, entity)


def test_empty_entity_frame(shared: Shared) -> None:
    model, rng = shared(1, 7)
    entity = make_entity(rng, model, 10, None).iloc[:0]
    ts = model.store.training_set(entity, FEATURES, ttl=HOUR)
    assert len(ts) == 0
    assert ts.mask.shape == (0, len(FEATURES))
    assert ts.to_numpy().shape == (0, 11)
    out = ts.to_pandas()
    assert list(out.columns) == [*entity.columns, *FEATURES]
    assert len(out) == 0
    pd.testing.assert_frame_equal(out[list(entity.columns)], entity)
    as_dict = {c: entity[c].to_numpy() for c in entity.columns}
    assert model.store.training_set(as_dict, FEATURES).to_numpy().shape == (0, 11)
    assert sum(len(b) for b in model.store.training_batches(entity, FEATURES, chunk_rows=3)) == 0


def test_group_without_committed_rows(tmp_path: Path) -> None:
    model = Model(tmp_path / "s")
    model.commit("empty groups")
    rng = np.random.default_rng(9)
    n = 50
    model.write(
        "items",
        random_keys("items", rng, n),
        T0 + rng.integers(0, SPAN, n) * HOUR,
        random_values("items", rng, n),
    )
    model.commit("items only")
    entity = make_entity(rng, model, 100, None)
    ts = model.store.training_set(entity, FEATURES)
    refs = check(ts, model, entity)
    assert ts.mask[:, [f.startswith("users.") for f in FEATURES]].all()
    assert refs["items"]["found"].notna().to_numpy().any()
    # a group created after the version read has no rows at all there either
    v = model.commit("nothing new")
    model.store.create_group("late", key="user_id", schema={"x": mmfs.scalar("float64")})
    model.commit("a new empty group")
    late = model.store.training_set(entity, ["late.x", "users.a"])
    assert late.mask.all()
    assert model.store.training_set(entity, FEATURES, version=v).to_numpy().tobytes() == (
        ts.to_numpy().tobytes()
    )


def test_two_groups_and_key_columns(shared: Shared) -> None:
    model, rng = shared(3, 8)
    entity = make_entity(rng, model, 300, None)
    features = ["items.q", "users.e", "items.p", "users.a"]  # interleaved groups
    ts = model.store.training_set(entity, features)
    assert ts.features == features
    check(ts, model, entity)
    renamed = entity.rename(columns={"user_id": "uid", "item_id": "iid", "event_time": "ts"})
    keys = {"users": "uid", "items": "iid"}
    other = model.store.training_set(renamed, features, key_columns=keys, time_column="ts")
    check(other, model, renamed, time_column="ts", key_columns=keys)
    assert other.to_numpy().tobytes() == ts.to_numpy().tobytes()
    assert np.array_equal(other.mask, ts.mask)
    # one group remapped, the other by its own key name; the unused column is kept
    swapped = entity.assign(uid=entity["user_id"].to_numpy()[::-1])
    part = model.store.training_set(swapped, features, key_columns={"users": "uid"})
    check(part, model, swapped, key_columns={"users": "uid"})
    assert list(part.to_pandas().columns[:5]) == list(swapped.columns)


def test_feature_types_in_pandas(tmp_path: Path) -> None:
    model, _ = built(tmp_path / "s", 11, commits=2)
    model.write("users", [100], np.array([T0]), random_values("users", np.random.default_rng(0), 1))
    model.commit()
    found = pd.DataFrame({"user_id": [100], "item_id": "i0", "event_time": [T0]})
    out = model.store.training_set(found, ["users.*"]).to_pandas()
    types = out.dtypes.astype(str).to_dict()
    assert {k: types[f"users.{k}"] for k in "abfe"} == {
        "a": "float32",
        "b": "int64",
        "f": "float64",
        "e": "object",
    }
    assert types["users.ok"] == "bool"
    assert out["users.e"].iloc[0].shape == (4,)
    missing = pd.concat([found, found.assign(user_id=-5)], ignore_index=True)
    out = model.store.training_set(missing, ["users.*"]).to_pandas()
    assert out["users.b"].dtype == "Int64"
    assert out["users.ok"].dtype == "boolean"
    assert out["users.b"].isna().tolist() == [False, True]
    assert np.isnan(out["users.e"].iloc[1]).all()


@pytest.mark.parametrize(
    "features", [["users.e"], ["users.a", "users.e"], ["users.e", "users.a"], ["users.a"]]
)
def test_float32_and_dense_features_in_pandas(shared: Shared, features: list[str]) -> None:
    """All float32 (a dense vector is float32 too): one column per feature still."""
    model, rng = shared(1, 9)
    entity = make_entity(rng, model, 30, None)
    ts = model.store.training_set(entity, features)
    check(ts, model, entity)  # check_pandas: dense as one (4,) array per row


def test_input_columns_keep_their_dtypes(shared: Shared) -> None:
    model, rng = shared(1, 10)
    entity = make_entity(rng, model, 20, None)
    entity["grade"] = pd.Categorical(rng.choice(["x", "y"], len(entity)))
    entity["count"] = pd.array([None, *range(len(entity) - 1)], dtype="Int64")
    entity["name"] = pd.array([f"n{i}" for i in range(len(entity))], dtype="string")
    for rows in (entity, entity.iloc[:0]):
        out = model.store.training_set(rows, ["users.a"]).to_pandas()
        pd.testing.assert_frame_equal(out[list(rows.columns)], rows)


def test_index_is_kept(shared: Shared) -> None:
    model, rng = shared(2, 11)
    entity = make_entity(rng, model, 40, None)
    entity.index = pd.Index([f"r{i}" for i in range(len(entity))], name="rid")
    out = model.store.training_set(entity, ["users.a", "items.p"]).to_pandas()
    pd.testing.assert_index_equal(out.index, entity.index)
    multi = entity.set_index(["user_id", "label"], drop=False)
    out = model.store.training_set(multi, ["users.a", "items.p"]).to_pandas()
    pd.testing.assert_index_equal(out.index, multi.index)
    pd.testing.assert_frame_equal(out[list(multi.columns)], multi)


def test_dict_input_matches_frame(shared: Shared) -> None:
    model, rng = shared(3, 12)
    entity = make_entity(rng, model, 200, None)
    ts = model.store.training_set(entity, FEATURES, ttl=HOUR)
    as_arrays = {c: entity[c].to_numpy() for c in entity.columns}
    as_lists = {
        "user_id": entity["user_id"].tolist(),
        "item_id": entity["item_id"].tolist(),
        "event_time": list(entity["event_time"].to_numpy()),
    }
    for source in (as_arrays, as_lists):
        other = model.store.training_set(source, FEATURES, ttl=HOUR)
        check(other, model, source, HOUR)
        assert np.array_equal(other.mask, ts.mask)
        assert other.to_numpy().tobytes() == ts.to_numpy().tobytes()
        for name in FEATURES:
            if name.endswith(".c"):
                assert list(other[name]) == list(ts[name])
            else:
                np.testing.assert_array_equal(other[name], ts[name], strict=True)
        out = other.to_pandas()
        pd.testing.assert_frame_equal(
            out[FEATURES].reset_index(drop=True), ts.to_pandas()[FEATURES].reset_index(drop=True)
        )


# -- batches ------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 7, None], ids=["1", "7", "n"])
def test_batches_concatenate_to_the_training_set(shared: Shared, chunk_rows: int | None) -> None:
    model, rng = shared(1, 13)
    entity = make_entity(rng, model, 120, HOUR)
    rows = chunk_rows or len(entity)
    whole = model.store.training_set(entity, FEATURES, ttl=HOUR)
    parts = list(model.store.training_batches(entity, FEATURES, chunk_rows=rows, ttl=HOUR))
    assert [len(p) for p in parts] == [
        min(rows, len(entity) - lo) for lo in range(0, len(entity), rows)
    ]
    pd.testing.assert_frame_equal(pd.concat([p.to_pandas() for p in parts]), whole.to_pandas())
    glued = np.concatenate([p.to_numpy() for p in parts])
    assert glued.tobytes() == whole.to_numpy().tobytes()
    assert np.array_equal(np.concatenate([p.mask for p in parts]), whole.mask)


def test_batches_of_an_iterable_of_frames(shared: Shared) -> None:
    model, rng = shared(2, 14)
    entity = make_entity(rng, model, 150, None)
    whole = model.store.training_set(entity, FEATURES).to_pandas()
    cuts = np.sort(rng.integers(0, len(entity), 6))
    sizes = np.diff(np.concatenate([[0], cuts, [len(entity)]]))

    def frames() -> Iterator[pd.DataFrame]:  # a generator: read once, lazily
        lo = 0
        for size in sizes:
            yield entity.iloc[lo : lo + size]
            lo += size

    parts = [p.to_pandas() for p in model.store.training_batches(frames(), FEATURES, chunk_rows=9)]
    pd.testing.assert_frame_equal(pd.concat(parts), whole)


# -- versions -----------------------------------------------------------------------------


def test_version_pins_the_result(tmp_path: Path) -> None:
    model, rng = built(tmp_path / "s", 16, commits=10)
    v = model.commit("pinned")
    entity = make_entity(rng, model, 300, 6 * HOUR)
    first = model.store.training_set(entity, FEATURES, version=v, ttl=6 * HOUR)
    frame0, raw = first.to_pandas(), first.to_numpy().tobytes()
    check(first, model, entity, 6 * HOUR, version=v)
    # Late rows: ties with the rows found (the later write wins), old event times (at
    # the entity's own times, all before the newest history), keys never seen before.
    ref = references(model, entity, 6 * HOUR)
    for group, key in KEYS.items():
        found = ref[group]["found"].notna().to_numpy()
        tie_keys = ref[group][key].to_numpy()[found][:40]
        tie_times = ref[group]["written_at"].to_numpy()[found][:40]
        old_keys = entity[key].to_numpy()[:40]
        old_times = entity["event_time"].to_numpy()[:40]
        keys = np.concatenate([tie_keys, old_keys])
        times = np.concatenate([tie_times, old_times]).astype("datetime64[ns]")
        model.write(group, keys, times, random_values(group, rng, len(keys)))
        model.commit("late")
    new = np.array([-1, -2, N_USERS + 1])
    model.write("users", new, T0 + np.arange(3) * HOUR, random_values("users", rng, 3))
    model.commit("new keys")
    pinned = model.store.training_set(entity, FEATURES, version=v, ttl=6 * HOUR)
    pd.testing.assert_frame_equal(pinned.to_pandas(), frame0)
    assert pinned.to_numpy().tobytes() == raw
    with mmfs.open(tmp_path / "s", mode="r") as reader:
        again = reader.training_set(entity, FEATURES, version=v, ttl=6 * HOUR)
        assert again.to_numpy().tobytes() == raw
    batches = model.store.training_batches(entity, FEATURES, chunk_rows=50, version=v, ttl=6 * HOUR)
    assert np.concatenate([b.to_numpy() for b in batches]).tobytes() == raw
    now = model.store.training_set(entity, FEATURES, ttl=6 * HOUR)
    check(now, model, entity, 6 * HOUR)
    x0, x1 = first.to_numpy(), now.to_numpy()
    changed = ~((x0 == x1) | (np.isnan(x0) & np.isnan(x1))).all(axis=1)
    assert changed.sum() > 40
    assert (np.isin(entity["user_id"], new) & ~now.mask[:, 0]).any()


# -- the mask -----------------------------------------------------------------------------


def test_mask_is_missing_not_nan(shared: Shared) -> None:
    model, rng = shared(3, 15)
    entity = make_entity(rng, model, 300, None)
    ts = model.store.training_set(entity, FEATURES)
    check(ts, model, entity)
    for name in ("users.a", "users.f", "items.p"):
        j = FEATURES.index(name)
        nan = np.isnan(ts[name])
        assert (nan & ~ts.mask[:, j]).any(), name  # stored NaN: found, not missing
        assert (nan & ts.mask[:, j]).any(), name
        assert not (~nan & ts.mask[:, j]).any(), name
    j = FEATURES.index("users.c")
    none = np.array([c is None for c in ts["users.c"]])
    assert (none & ~ts.mask[:, j]).any()  # a stored None category is not missing


# -- errors -------------------------------------------------------------------------------


def _entity(**columns: Any) -> pd.DataFrame:
    base = {"user_id": [1, 2], "item_id": ["i1", "i2"], "event_time": [T0, T0 + HOUR]}
    base.update(columns)
    return pd.DataFrame({k: v for k, v in base.items() if v is not None})


Call = Callable[[mmfs.Store], object]
BAD: dict[str, Call] = {
    "unknown group": lambda s: s.training_set(_entity(), ["nope.a"]),
    "unknown feature": lambda s: s.training_set(_entity(), ["users.a", "users.zz"]),
    "no dot": lambda s: s.training_set(_entity(), ["a"]),
    "a bare string": lambda s: s.training_set(_entity(), "users.a"),
    "empty features": lambda s: s.training_set(_entity(), []),
    "named twice": lambda s: s.training_set(_entity(), ["users.a", "users.*"]),
    "no key column": lambda s: s.training_set(_entity(user_id=None), ["users.a"]),
    "key_columns to nothing": lambda s: s.training_set(
        _entity(), ["users.a"], key_columns={"users": "uid"}
    ),
    "no time column": lambda s: s.training_set(_entity(event_time=None), ["users.a"]),
    "time_column to nothing": lambda s: s.training_set(_entity(), ["users.a"], time_column="t"),
    "int ttl": lambda s: s.training_set(_entity(), ["users.a"], ttl=5),
    "numpy int ttl": lambda s: s.training_set(_entity(), ["users.a"], ttl=np.int64(5)),
    "float ttl": lambda s: s.training_set(_entity(), ["users.a"], ttl=1.5),
    "str ttl": lambda s: s.training_set(_entity(), ["users.a"], ttl="1h"),
    "NaT ttl": lambda s: s.training_set(_entity(), ["users.a"], ttl=np.timedelta64("NaT")),
    "negative ttl": lambda s: s.training_set(_entity(), ["users.a"], ttl=-NS),
    "negative timedelta": lambda s: s.training_set(
        _entity(), ["users.a"], ttl=dt.timedelta(seconds=-1)
    ),
    "negative pd.Timedelta": lambda s: s.training_set(
        _entity(), ["users.a"], ttl=pd.Timedelta(-1, "h")
    ),
    "float keys": lambda s: s.training_set(_entity(user_id=[1.0, 2.0]), ["users.a"]),
    "str keys for int64": lambda s: s.training_set(_entity(user_id=["1", "2"]), ["users.a"]),
    "int keys for str": lambda s: s.training_set(_entity(item_id=[1, 2]), ["items.p"]),
    "NaT time": lambda s: s.training_set(
        _entity(event_time=[T0, np.datetime64("NaT", "ns")]), ["users.a"]
    ),
    "NaT tz-aware": lambda s: s.training_set(
        _entity(event_time=pd.Series([pd.Timestamp(T0), pd.NaT]).dt.tz_localize("UTC")),
        ["users.a"],
    ),
    "int times": lambda s: s.training_set(_entity(event_time=[1, 2]), ["users.a"]),
    "ragged dict": lambda s: s.training_set({"user_id": [1, 2], "event_time": [T0]}, ["users.a"]),
    "not a frame": lambda s: s.training_set([(1, T0)], ["users.a"]),
    "batches: chunk_rows 0": lambda s: list(
        s.training_batches(_entity(), ["users.a"], chunk_rows=0)
    ),
    "batches: unknown feature": lambda s: list(
        s.training_batches(_entity(), ["users.zz"], chunk_rows=1)
    ),
    "batches: NaT": lambda s: list(
        s.training_batches(_entity(event_time=[np.datetime64("NaT", "ns"), T0]), ["users.a"])
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_parameter_error(shared: Shared, case: str) -> None:
    assert issubclass(mmfs.ParameterError, mmfs.MmfsError)
    model, rng = shared(2, 16)
    entity = make_entity(rng, model, 50, None)
    before = model.store.training_set(entity, FEATURES).to_pandas()
    versions = [v.id for v in model.store.versions()]
    with pytest.raises(mmfs.ParameterError):
        BAD[case](model.store)
    assert [v.id for v in model.store.versions()] == versions
    assert sorted(model.store.groups()) == sorted(KEYS)
    after = model.store.training_set(entity, FEATURES)
    pd.testing.assert_frame_equal(after.to_pandas(), before)
    check(after, model, entity)


# -- random small cases -------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[tuple[list[tuple[int, int]], bool]], Any, Any]:
    """Write calls of (key, hour) rows, each maybe followed by a commit; entity rows of
    (key, hour, ns jitter); a ttl (None, or hours plus 0/1 ns)."""
    row = st.tuples(st.integers(0, 3), st.integers(0, 4))
    calls = draw(
        st.lists(st.tuples(st.lists(row, min_size=1, max_size=8), st.booleans()), max_size=6)
    )
    jitter = st.sampled_from([-1, 0, 1])
    entity = draw(st.lists(st.tuples(st.integers(0, 4), st.integers(-1, 6), jitter), max_size=12))
    ttl = draw(
        st.none()
        | st.builds(lambda h, j: h * HOUR + j * NS, st.integers(0, 3), st.sampled_from([0, 1]))
    )
    return calls, entity, ttl


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_random_histories_match_merge_asof(scenario: Any) -> None:
    calls, rows, ttl = scenario
    with tempfile.TemporaryDirectory() as tmp, mmfs.open(Path(tmp) / "s", durability="none") as s:
        g = s.create_group(
            "g", key="k", schema={"v": mmfs.scalar("int64"), "w": mmfs.scalar("float64")}
        )
        written: list[tuple[int, int, int]] = []  # (key, hour, write sequence number)
        for call, commit in calls:
            keys, hours = np.array(call, dtype=np.int64).T
            seq = len(written) + np.arange(len(call))
            g.write(keys, {"v": seq, "w": seq / 2}, event_time=T0 + hours * HOUR)
            written += [(k, h, i) for (k, h), i in zip(call, seq.tolist(), strict=True)]
            if commit:
                s.commit()
        s.commit()
        k, h, seq = np.array(written, dtype=np.int64).reshape(-1, 3).T
        history = pd.DataFrame({"k": k, "event_time": T0 + h * HOUR, "seq": seq})
        k, h, j = np.array(rows, dtype=np.int64).reshape(-1, 3).T
        entity = pd.DataFrame({"k": k, "event_time": T0 + h * HOUR + j * NS})
        ts = s.training_set(entity, ["g.v", "g.w"], ttl=ttl)
        ref = reference(history, entity["k"], entity["event_time"], "k", ttl)
        found = ref["found"].notna().to_numpy()
        assert ts.mask.tolist() == [[not f, not f] for f in found]
        picked = np.where(found, ref["seq"].to_numpy(dtype=np.float64), np.nan)
        assert ts["g.v"].tolist() == np.nan_to_num(picked).astype(np.int64).tolist()
        np.testing.assert_array_equal(ts["g.w"], picked / 2)
