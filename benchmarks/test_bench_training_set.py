"""Point-in-time training sets: ``store.training_set(entity_df, features, ttl=...)``.

The training-set issue's target: 1,000,000 entity rows against 10,000,000 feature rows,
32 float32 features, at least 10x faster than ``pandas.merge_asof`` and at least 3x faster
than DuckDB's ASOF JOIN, with equal results, and a peak memory under 2x the output.

    MMFS_BENCH_SIZE=full uv run --no-sync pytest benchmarks/test_bench_training_set.py \\
        --benchmark-group-by=group -q -p no:cacheprovider -s

Data (built once per module, seeded):

* a group ``users`` (int64 key ``user_id``, 32 float32 scalars ``f0..f31``) holding
  ``hist_rows`` rows (full 10,000,000; small 200,000) for ``hist_rows / 10`` keys (random
  int64 ids; about 10 rows a key), written as ``CHUNKS`` = 10 daily loads: load ``c`` holds
  the rows with event times in ``[T0 + c * SPAN, T0 + (c + 1) * SPAN)`` (SPAN = 9 days, so
  90 days in all), each load one ``write`` + ``commit``.  Event times are unique over the
  whole history by construction (``slot * 2**20 + row in load``), so the three
  implementations agree without any tie-break rule.
* the same history in memory as a pandas DataFrame ``hist`` (user_id, event_time,
  f0..f31; the float columns one contiguous block of 32 columns), sorted by event time
  (the loading order; generous to the peers: neither has to sort it first);
* an entity frame of ``entity_rows`` rows (full 1,000,000; small 20,000): user ids drawn
  from the written ids, 5% of them never written, and event times uniform over
  ``[T0, T0 + 91 days)``, unsorted.

Two groups, ``ttl=None`` and ``ttl=7 days`` (so that misses also happen inside the range).
Implementations, each timed from the entity frame to a result in input order:

* ``pandas merge_asof``: sort the entity frame by time, ``pd.merge_asof(..., on=
  "event_time", by="user_id", direction="backward", allow_exact_matches=True,
  tolerance=ttl)``, then restore the input order (the sort and reorder are timed: the
  user has to do them).
* ``duckdb ASOF``: the two frames registered on one connection (``threads`` =
  ``os.cpu_count()``), ``... FROM entity e ASOF LEFT JOIN hist h ON e.user_id =
  h.user_id AND e.event_time >= h.event_time ORDER BY e.row_id`` fetched with ``.df()``;
  with a ttl each feature is ``CASE WHEN epoch_ns(h.event_time) >= epoch_ns(e.event_time)
  - ttl THEN h.f END`` (LEFT: no row is dropped).  ``row_id`` is added to the registered
  frame before timing.
* ``mmfs``: ``store.training_set(entity, features, ttl=ttl).to_pandas()`` on the store
  opened read-only; the variants ``mmfs training_set`` (the TrainingSet alone) and
  ``mmfs to_numpy`` (``.to_numpy()``, the (n, 32) float32 matrix) are timed beside it.

Every peer's result is checked equal to mmfs's (input columns in input order; the 32
feature columns as float32 with NaN in the same places).  Peak memory of one
``training_set(...).to_pandas()`` call is measured with tracemalloc (numpy reports its
allocations to it) and the RSS high-water mark (conftest's ``peak_memory``); the traced
peak over the returned DataFrame's ``memory_usage(deep=True).sum()`` must be < 2.0 at
every size.  Times are pytest-benchmark medians of pedantic rounds (one warm-up round
each).  The speed targets are asserted at the full size only (the small size is bound by
fixed costs); the table at the end of the module prints them always.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import Harness, size_name
from targets import LIMITS, TARGETS, fmt_seconds

import mmfs

N_FEATURES = 32
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
GROUP = "users"
REQUEST = [f"{GROUP}.{f}" for f in FEATURES]
CHUNKS = 10  # daily loads, one write + commit each
T0 = np.datetime64("2026-01-01", "ns").astype(np.int64)
DAY = 86_400 * 10**9
SPAN = 9 * DAY  # event-time range of one load
SLOT = 1 << 20  # event time = load start + slot * SLOT + row in load: unique everywhere
UNWRITTEN = 0.05  # fraction of entity rows whose id was never written
TTLS = {"none": None, "7d": pd.Timedelta(days=7)}


@dataclass(frozen=True)
class TrainingSizes:
    entity_rows: int
    hist_rows: int
    peer_rounds: int  # timed rounds of pandas and duckdb (plus one warm-up)
    mmfs_rounds: int  # timed rounds of each mmfs variant (plus one warm-up)


SIZES = {
    "small": TrainingSizes(entity_rows=20_000, hist_rows=200_000, peer_rounds=3, mmfs_rounds=5),
    "full": TrainingSizes(
        entity_rows=1_000_000, hist_rows=10_000_000, peer_rounds=3, mmfs_rounds=5
    ),
}
SIZE = SIZES[size_name()]
FULL = size_name() == "full"

# (ttl name, impl) -> seconds; ttl name -> peak figures; filled by the tests below
TIMES: dict[tuple[str, str], float] = {}
PEAKS: dict[str, dict[str, float]] = {}
BUILD: dict[str, float] = {}


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    path: str  # the store: group "users", key "user_id", f0..f31 float32
    hist: pd.DataFrame  # user_id, event_time, f0..f31, sorted by event_time
    entity: pd.DataFrame  # user_id, event_time (unsorted), RangeIndex
    entity_rn: pd.DataFrame  # entity + row_id (0..n-1), for DuckDB's ORDER BY


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    t_start = time.perf_counter()
    n_hist, n_ent = SIZE.hist_rows, SIZE.entity_rows
    n_keys = n_hist // 10
    rng = np.random.default_rng(42)
    ids = np.unique(rng.integers(1, 2**40, size=n_keys + n_keys // 50 + 16, dtype=np.int64))
    ids = rng.permutation(ids)[:n_keys]
    assert ids.shape == (n_keys,)
    per = n_hist // CHUNKS
    assert per * CHUNKS == n_hist
    assert per <= SLOT
    uid = np.empty(n_hist, dtype=np.int64)
    ts = np.empty(n_hist, dtype=np.int64)
    X = np.empty((N_FEATURES, n_hist), dtype=np.float32)  # one contiguous column each
    path = str(tmp_path_factory.mktemp("mmfs-training-bench") / "store")
    t_write = 0.0
    with mmfs.open(path, durability="none") as store:
        g = store.create_group(
            GROUP, key="user_id", schema={f: mmfs.scalar("float32") for f in FEATURES}
        )
        for c in range(CHUNKS):
            a, b = c * per, (c + 1) * per
            slots = rng.integers(0, SPAN // SLOT - 1, size=per, dtype=np.int64)
            t = T0 + c * SPAN + slots * SLOT + np.arange(per, dtype=np.int64)
            order = np.argsort(t)  # a load arrives in time order
            ts[a:b] = t[order]
            uid[a:b] = rng.choice(ids, size=per)
            for i in range(N_FEATURES):
                X[i, a:b] = rng.standard_normal(per, dtype=np.float32)
            t0 = time.perf_counter()
            g.write(
                uid[a:b],
                {f: X[i, a:b] for i, f in enumerate(FEATURES)},
                event_time=ts[a:b].view("datetime64[ns]"),
            )
            store.commit(f"load {c}")
            t_write += time.perf_counter() - t0
    assert (np.diff(ts) > 0).all()  # unique, sorted event times
    hist = pd.DataFrame(X.T, columns=FEATURES, copy=False)  # the block is X itself
    hist.insert(0, "event_time", ts.view("datetime64[ns]"))
    hist.insert(0, "user_id", uid)
    # the entity frame
    never = ids.max() + 1 + np.arange(max(1, int(n_ent * UNWRITTEN)), dtype=np.int64)
    e_ids = rng.choice(ids, size=n_ent)
    unwritten = rng.random(n_ent) < UNWRITTEN
    e_ids[unwritten] = rng.choice(never, size=int(unwritten.sum()))
    e_ts = T0 + rng.integers(0, 91 * DAY, size=n_ent, dtype=np.int64)
    entity = pd.DataFrame({"user_id": e_ids, "event_time": e_ts.view("datetime64[ns]")})
    entity_rn = entity.assign(row_id=np.arange(n_ent, dtype=np.int64))
    gc.collect()
    BUILD.update(total=time.perf_counter() - t_start, write_commit=t_write)
    return TrainingData(path, hist, entity, entity_rn)


@pytest.fixture(scope="module")
def reader(data: TrainingData) -> Iterator[mmfs.Store]:
    store = mmfs.open(data.path, mode="r")
    yield store
    store.close()


@pytest.fixture(scope="module")
def duck(data: TrainingData) -> Iterator[Any]:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count() or 1}")
    con.register("entity", data.entity_rn)
    con.register("hist", data.hist)
    yield con
    con.close()


# --------------------------------------------------------------------------------------
# The implementations
# --------------------------------------------------------------------------------------


def pandas_fn(data: TrainingData, ttl: pd.Timedelta | None) -> Callable[[], pd.DataFrame]:
    entity, hist = data.entity, data.hist

    def fn() -> pd.DataFrame:
        left = entity.sort_values("event_time", kind="stable")
        out = pd.merge_asof(
            left,
            hist,
            on="event_time",
            by="user_id",
            direction="backward",
            allow_exact_matches=True,
            tolerance=ttl,
        )
        out.index = left.index
        return out.sort_index()  # back to input order

    return fn


def duckdb_sql(ttl: pd.Timedelta | None) -> str:
    if ttl is None:
        feats = ", ".join(f"h.{f}" for f in FEATURES)
    else:
        ns = int(ttl.value)
        cond = f"epoch_ns(h.event_time) >= epoch_ns(e.event_time) - {ns}"
        feats = ", ".join(f"CASE WHEN {cond} THEN h.{f} END AS {f}" for f in FEATURES)
    return (
        f"SELECT e.user_id, e.event_time, {feats} FROM entity e ASOF LEFT JOIN hist h "
        "ON e.user_id = h.user_id AND e.event_time >= h.event_time ORDER BY e.row_id"
    )


def duckdb_fn(con: Any, ttl: pd.Timedelta | None) -> Callable[[], pd.DataFrame]:
    sql = duckdb_sql(ttl)

    def fn() -> pd.DataFrame:
        return con.execute(sql).df()

    return fn


def mmfs_fn(store: mmfs.Store, data: TrainingData, ttl: Any, impl: str) -> Callable[[], Any]:
    entity = data.entity
    if impl == "mmfs":

        def fn() -> Any:
            return store.training_set(entity, REQUEST, ttl=ttl).to_pandas()
    elif impl == "mmfs to_numpy":

        def fn() -> Any:
            return store.training_set(entity, REQUEST, ttl=ttl).to_numpy()
    else:

        def fn() -> Any:
            return store.training_set(entity, REQUEST, ttl=ttl)

    return fn


_REFERENCE: dict[str, pd.DataFrame] = {}


def reference(store: mmfs.Store, data: TrainingData, ttl_name: str) -> pd.DataFrame:
    """mmfs's to_pandas() result (computed once per ttl), checked for its shape."""
    if ttl_name not in _REFERENCE:
        df = mmfs_fn(store, data, TTLS[ttl_name], "mmfs")()
        assert list(df.columns) == ["user_id", "event_time", *REQUEST]
        assert len(df) == len(data.entity)
        for f in REQUEST:
            assert df[f].dtype == np.float32
        _REFERENCE[ttl_name] = df
    return _REFERENCE[ttl_name]


def check_equal(got: pd.DataFrame, names: list[str], want: pd.DataFrame, what: str) -> None:
    """``got``'s input columns and features ``names`` equal ``want`` (mmfs's result)."""
    assert len(got) == len(want), what
    for col in ("user_id", "event_time"):
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=what)
    a = np.column_stack([got[f].to_numpy(dtype=np.float32, na_value=np.nan) for f in names])
    b = np.column_stack([want[f].to_numpy(dtype=np.float32) for f in REQUEST])
    np.testing.assert_array_equal(a, b, err_msg=what)


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


IMPLS = ["pandas merge_asof", "duckdb ASOF", "mmfs training_set", "mmfs to_numpy", "mmfs"]
TARGET_OF = {"pandas merge_asof": "10x", "duckdb ASOF": "3x"}


def group_name(ttl_name: str) -> str:
    return (
        f"training_set {SIZE.entity_rows:,} x {SIZE.hist_rows:,} ({N_FEATURES} f32), "
        f"ttl={'None' if ttl_name == 'none' else ttl_name}"
    )


@pytest.mark.parametrize(
    ("ttl_name", "impl"),
    [(t, i) for t in TTLS for i in IMPLS],
    ids=[f"ttl={t}-{i.replace(' ', '_')}" for t in TTLS for i in IMPLS],
)
def test_training_set(
    benchmark: Any,
    harness: Harness,
    data: TrainingData,
    reader: mmfs.Store,
    request: pytest.FixtureRequest,
    ttl_name: str,
    impl: str,
) -> None:
    ttl = TTLS[ttl_name]
    group = group_name(ttl_name)
    want = reference(reader, data, ttl_name)
    if impl == "pandas merge_asof":
        fn = pandas_fn(data, ttl)
        rounds, note = SIZE.peer_rounds, "sort by time, merge_asof(by=user_id), reorder"
    elif impl == "duckdb ASOF":
        fn = duckdb_fn(request.getfixturevalue("duck"), ttl)
        rounds, note = SIZE.peer_rounds, "ASOF LEFT JOIN ... ORDER BY row_id; .df()"
    else:
        fn = mmfs_fn(reader, data, ttl, impl)
        rounds = SIZE.mmfs_rounds
        note = {
            "mmfs": "training_set(...).to_pandas()",
            "mmfs to_numpy": "training_set(...).to_numpy() (variant)",
            "mmfs training_set": "training_set(...) alone (variant)",
        }[impl]
    out = harness.run(
        benchmark, group, impl, fn, rounds=rounds, target=TARGET_OF.get(impl), note=note
    )
    TIMES[(ttl_name, impl)] = harness.entries[group][impl].seconds
    # equal results
    if impl in TARGET_OF:
        check_equal(out, FEATURES, want, f"{impl} vs mmfs, ttl={ttl_name}")
    elif impl == "mmfs":
        check_equal(out, REQUEST, want, f"mmfs repeat, ttl={ttl_name}")
    elif impl == "mmfs to_numpy":
        assert out.dtype == np.float32
        assert out.shape == (len(data.entity), N_FEATURES)
        np.testing.assert_array_equal(out, want[REQUEST].to_numpy())
    else:
        assert len(out) == len(data.entity)
    del out
    if impl != "mmfs":
        return
    # peak memory of one more call, against the output's bytes
    out_bytes = int(want.memory_usage(deep=True).sum())
    harness.memory(benchmark, group, "mmfs", fn)
    entry = harness.entries[group]["mmfs"]
    assert entry.peak_traced is not None
    assert entry.peak_rss is not None
    traced, rss = entry.peak_traced / out_bytes, entry.peak_rss / out_bytes
    missing = float(np.isnan(want[REQUEST[0]].to_numpy()).mean())
    PEAKS[ttl_name] = {"traced": traced, "rss": rss, "out_mib": out_bytes / 2**20}
    entry.note += (
        f"; peak traced {traced:.2f}x / RSS {rss:.2f}x the output "
        f"({out_bytes / 2**20:.0f} MiB); {missing:.1%} rows missing"
    )
    benchmark.extra_info.update(peak_traced_over_output=traced, peak_rss_over_output=rss)
    assert LIMITS["training_peak"].check(traced), (
        f"peak traced memory {traced:.2f}x the output ({out_bytes} bytes), limit 2.0x"
    )


def test_zz_training_table() -> None:
    """Print the comparison table (runs last in the module); assert the speed targets at
    the full size."""
    if not TIMES:
        return
    print(
        f"\n\ntraining_set: {SIZE.entity_rows:,} entity rows x {SIZE.hist_rows:,} history rows "
        f"({SIZE.hist_rows // 10:,} keys), {N_FEATURES} float32 features "
        f"(MMFS_BENCH_SIZE={size_name()}; cpus {os.cpu_count()}; build "
        f"{BUILD.get('total', float('nan')):.1f} s, of which write+commit "
        f"{BUILD.get('write_commit', float('nan')):.1f} s)"
    )
    print(
        "| ttl | mmfs to_pandas | mmfs training_set | mmfs to_numpy | pandas merge_asof "
        "| duckdb ASOF | pandas / mmfs | duckdb / mmfs | peak traced / output "
        "| peak RSS / output |"
    )
    print("|---|" + "---:|" * 9)
    failures = []
    for ttl_name in TTLS:

        def t(impl: str, ttl_name: str = ttl_name) -> float:
            return TIMES.get((ttl_name, impl), float("nan"))

        mm = t("mmfs")
        r_pd, r_dd = t("pandas merge_asof") / mm, t("duckdb ASOF") / mm
        peak = PEAKS.get(ttl_name, {})
        cells = [fmt_seconds(t(i)) for i in ("mmfs", "mmfs training_set", "mmfs to_numpy")]
        cells += [fmt_seconds(t("pandas merge_asof")), fmt_seconds(t("duckdb ASOF"))]
        cells += [f"{r_pd:.2f}x", f"{r_dd:.2f}x"]
        cells += [
            f"{peak.get('traced', float('nan')):.2f}x",
            f"{peak.get('rss', float('nan')):.2f}x",
        ]
        print(f"| {'None' if ttl_name == 'none' else ttl_name} | " + " | ".join(cells) + " |")
        for ratio, key in ((r_pd, "10x"), (r_dd, "3x")):
            if not TARGETS[key].check(ratio):
                failures.append(f"ttl={ttl_name}: {ratio:.2f}x, target {TARGETS[key].text}")
    print("targets: pandas / mmfs >= 10x, duckdb / mmfs >= 3x, peak traced / output < 2x")
    if failures and not FULL:
        print(f"(not asserted at MMFS_BENCH_SIZE={size_name()}): " + "; ".join(failures))
    if FULL and all(not np.isnan(v) for v in TIMES.values()):
        assert not failures, "; ".join(failures)
