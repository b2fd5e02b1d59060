"""Batch reads and batch scoring: ``g.get(keys)`` of many keys, and ``mmfs.score``.

One group of ``bt_n`` keys (full size 1,000,000; small 20,000): random distinct int64
keys, 8 float32 scalars ``s0..s7`` and one 128-d float32 vector ``emb`` (built as in
test_bench_store.py: seeded standard normal values, one commit, ``durability="none"``).
``M`` is the same data as one in-memory (bt_n, 136) float32 matrix (scalars first, the
column order of ``to_numpy()``); ``pos`` are row positions of ``M``.

Fresh keys every round: for each batch size a pool of position sets is drawn beforehand
(seeded; without replacement; at n = bt_n each set is a new permutation of every key) and
each call takes the next set, so no round re-reads the rows the round before read (at
1,000 keys of 1,000,000 the same keys every round would be served from the CPU cache).
Every implementation of one group reads the same sets, in the same order; each is checked
against ``M[pos]`` on one set before it is timed.  Rounds are explicit (pytest-benchmark
pedantic mode: one warm-up round, then ``bt_rounds`` rounds of one call); the figure is the
median round (the min is in the note).  With --benchmark-disable each is one un-warmed call.

1. Batch get, ``bt_counts`` = 1,000 / 10,000 / bt_n keys (small 1,000 / 10,000 / 20,000):

   * ``mmfs``: ``g.get(keys).to_numpy()`` (default ``n_threads``: every usable core; the
     read runs on the calling thread below 2,048 keys, see docs/batch.md), a fresh
     (n, 136) float32 (``to_numpy()`` returns the batch's block itself);
   * ``numpy M[pos]``: the floor, positions already known, the matrix in memory;
   * ``searchsorted+M[pos]``: what a user writes by hand: the keys sorted once and ``M``
     put in that order (setup, untimed), then ``i = np.searchsorted(sorted_keys, keys)``,
     a found check (``sorted_keys[i] == keys``, NaN rows where not) and ``M_sorted[i]``;
   * ``sqlite3`` (10,000 keys only): one row per key (``key INTEGER PRIMARY KEY``, 8 REAL,
     the vector as a BLOB), one prepared ``SELECT`` per key on a kept cursor, then one
     (n, 136) float32 array (scalars by ``np.array``, vectors by ``np.frombuffer`` of the
     joined blobs).  All 10,000 keys are timed (0.2-0.8 s a round: no slice needed).

   Targets: per-key cost at 10,000 and at bt_n keys within 1.3x of the per-key cost at
   1,000 keys (the floor's own ratio is shown beside it); at 10,000 keys mmfs within 1.5x
   of the floor and at least 100x faster than sqlite3.

2. Threads, bt_n keys: ``g.get(keys, n_threads=1).to_numpy()`` vs ``n_threads=2``.
   Target: speed-up >= 1.7x.  Beside it, what two threads give a plain gather on this
   machine at this moment: ``numpy M[pos] 2 threads`` (each of 2 Python threads
   ``np.take``s its half of pos into its rows of a fresh result; np.take releases the
   GIL).  And without a fresh result (whose page faults fall in the reading threads):
   ``get(keys, n_threads=t, out=buf)`` into one reused buffer, t = 1 and 2, against
   ``np.take(M, pos, axis=0, out=buf, mode="clip")``.  No target for those.

3. Scoring every one of the bt_n keys (a fresh permutation per call), ``fn(batch) =
   batch.to_numpy() @ w`` for a fixed float32 w (a module-level function, so the workers
   can unpickle it); default batch size (about 4 per worker, 1,024 to 65,536 keys);
   ``n_threads=1`` per worker and BLAS limited to one thread in each worker
   (threadpoolctl, at its first call), so 1 vs 2 workers compares processes, not threads:

   * ``mmfs``: a warm ``mmfs.Scorer(workers=2)`` (created once, one warm-up call, then
     ``bt_score_rounds`` timed ``score(keys)`` calls);
   * ``mmfs.Scorer workers=1``: the same with one worker;
   * ``mmfs.score cold workers=2``: ``mmfs.score(...)`` whole: pool start (the workers
     fork from the forkserver, which mmfs tells to preload mmfs; each worker then imports this
     module, and so pytest, to unpickle fn), open, scoring, shutdown;
   * ``numpy M[pos] @ w`` (1 thread) and ``... 2 threads`` (each thread its half): the
     floors, in this process, one BLAS thread each, in 65,536-key chunks.

   Target: workers=2 >= 1.7x the throughput of workers=1.

4. Scoring memory: a ``Scorer(workers=2)`` whose fn scores the batch as above and returns,
   per key, the worker's USS (``psutil memory_full_info().uss``) and its USS at its first
   call (kept in a module global of the worker: the store open, the first batch read and
   alive).  Three calls score every key three times (the first starts both workers).
   Per worker: the largest USS minus that baseline, against the group's data
   (bt_n * 136 * 4 bytes).  This process has the group open and has read every key first
   (as a serving process beside the job would): a file page mapped by one process only
   counts in that process's USS, so without another mapping the figure would count the
   worker's share of the page cache (clean, reclaimable), not its own memory.  The
   increase of the worker's anonymous memory (smaps_rollup), which does not depend on
   that, is shown beside it.  Target: < 5% of the data per worker.

The time comparisons go to the Harness ratio table; the derived figures (per-key costs,
scaling ratios, speed-ups, memory) with their targets to a second table, "mmfs batch
figures", printed at the end of the session (and appended to $MMFS_BENCH_TABLE when set).
Targets are reported, never asserted (as in test_bench_store.py): the machine is shared.

tools/bench_guard.py reads ``extra_info["guard_ratio"]`` of the tracked mmfs benchmarks:
each of those times, before every round and outside the timed call, its numpy floor on as
many threads (the floor's position sets in the other order), so the two alternate on the
same machine at the same moment; the ratio of their mins and the median of the per-round
ratios are recorded.
"""

from __future__ import annotations

import gc
import itertools
import os
import sqlite3
import statistics
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from conftest import SIZES, Entry, Harness, Sizes, size_name
from figures import Figure, figure_table, report_at_end, timed_rounds
from groups import cycler, distinct_keys, write_group
from targets import LIMITS, TARGETS, fmt_seconds

import mmfs

DIM = 128
N_SCALARS = 8
WIDTH = N_SCALARS + DIM  # 136 float32 columns
SCALARS = [f"s{i}" for i in range(N_SCALARS)]
WRITE_CHUNK = 100_000
TARGET_N = 10_000  # the batch size of the floor and sqlite3 targets
FLOOR_CHUNK = 1 << 16  # keys per chunk of the in-process scoring floor
SCORE_TIMEOUT = 900.0  # seconds; no scoring call may hang the session

# The fixed scoring vector (the same in this process and in every worker).
W = np.random.default_rng(7).standard_normal(WIDTH).astype(np.float32)


# --------------------------------------------------------------------------------------
# Scoring functions (module level: the workers unpickle them by name)
# --------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # per worker process: BLAS limited, USS baseline


def _worker_setup() -> None:
    if "blas" not in _WORKER:
        from threadpoolctl import threadpool_limits

        _WORKER["blas"] = threadpool_limits(1)  # kept: the limit holds for the process


def score_fn(batch: Any) -> np.ndarray:
    """The scoring function: one float32 score per key."""
    _worker_setup()
    return batch.to_numpy() @ W


def _anon_bytes() -> int:
    """Anonymous memory of this process (smaps_rollup), -1 where unavailable."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def uss_fn(batch: Any) -> np.ndarray:
    """Scores the batch like score_fn, then returns, for each key, the worker's (pid, USS
    at its first call, USS now, anonymous bytes at first call, anonymous bytes now)."""
    _worker_setup()
    scores = batch.to_numpy() @ W
    uss = int(psutil.Process().memory_full_info().uss)
    anon = _anon_bytes()
    if "uss" not in _WORKER:
        _WORKER["uss"], _WORKER["anon"] = uss, anon
    row = np.array([os.getpid(), _WORKER["uss"], uss, _WORKER["anon"], anon], dtype=np.int64)
    assert np.isfinite(scores).all()
    return np.tile(row, (len(batch), 1))


# --------------------------------------------------------------------------------------
# The figures table, printed at the end of the session
# --------------------------------------------------------------------------------------


FIGURES: list[Figure] = []


def _entry_seconds(h: Harness, group: str, impl: str) -> float | None:
    e = h.entries.get(group, {}).get(impl)
    return None if e is None else e.seconds


def _derived_figures(h: Harness) -> list[Figure]:
    """The figures computed from the Harness entries (whatever subset of tests ran)."""
    s = h.sizes
    out: list[Figure] = []
    base_n = s.bt_counts[0]
    per_key: dict[tuple[str, int], float] = {}
    for n in s.bt_counts:
        g = get_group(n, s.bt_n)
        for impl in ("mmfs", "numpy M[pos]"):
            t = _entry_seconds(h, g, impl)
            if t is not None:
                per_key[(impl, n)] = t / n
        mm, fl = per_key.get(("mmfs", n)), per_key.get(("numpy M[pos]", n))
        if mm is not None:
            detail = "" if fl is None else f"floor M[pos] {fl * 1e9:.0f} ns/key"
            out.append(
                Figure(
                    "1 scaling",
                    f"g.get(keys).to_numpy(), {n:,} keys: per key",
                    mm,
                    "s",
                    None,
                    detail,
                )
            )
    for n in s.bt_counts[1:]:
        for impl, check in (("mmfs", LIMITS["batch_scaling"]), ("numpy M[pos]", None)):
            a, b = per_key.get((impl, n)), per_key.get((impl, base_n))
            if a is None or b is None:
                continue
            who = "mmfs" if impl == "mmfs" else "floor M[pos] (reference)"
            out.append(
                Figure(
                    "1 scaling",
                    f"{who}: per key at {n:,} / per key at {base_n:,}",
                    a / b,
                    "x",
                    check,
                    f"{a * 1e9:.0f} / {b * 1e9:.0f} ns/key",
                )
            )
    g = get_group(TARGET_N, s.bt_n)
    mm = _entry_seconds(h, g, "mmfs")
    if mm is not None:
        for impl, key in (
            ("numpy M[pos]", "floor_1.5"),
            ("sqlite3", "100x"),
            ("searchsorted+M[pos]", None),
        ):
            t = _entry_seconds(h, g, impl)
            if t is None:
                continue
            out.append(
                Figure(
                    "2 10,000 keys",
                    f"{impl} time / mmfs time",
                    t / mm,
                    "x",
                    None if key is None else TARGETS[key],
                    f"{impl} {fmt_seconds(t)}, mmfs {fmt_seconds(mm)} "
                    f"({t / TARGET_N * 1e9:.0f} vs {mm / TARGET_N * 1e9:.0f} ns/key)",
                )
            )
    for group, t1_impl, label, check in (
        (threads_group(s.bt_n), T1_IMPL, "fresh result", TARGETS["1.7x"]),
        (out_group(s.bt_n), T1_OUT_IMPL, "into out=", None),
    ):
        t1 = _entry_seconds(h, group, t1_impl)
        t2 = _entry_seconds(h, group, "mmfs")
        if t1 is not None and t2 is not None:
            out.append(
                Figure(
                    "3 threads",
                    f"{s.bt_n:,} keys, {label}: n_threads=1 time / n_threads=2 time",
                    t1 / t2,
                    "x",
                    check,
                    f"{fmt_seconds(t1)} vs {fmt_seconds(t2)} (cpus {os.cpu_count()})",
                )
            )
    f1 = _entry_seconds(h, get_group(s.bt_n, s.bt_n), "numpy M[pos]")
    f2 = _entry_seconds(h, threads_group(s.bt_n), "numpy M[pos] 2 threads")
    if f1 is not None and f2 is not None:
        out.append(
            Figure(
                "3 threads",
                f"{s.bt_n:,} keys, reference: numpy M[pos] 1 thread time / 2 threads time",
                f1 / f2,
                "x",
                None,
                f"{fmt_seconds(f1)} vs {fmt_seconds(f2)}: what 2 threads give a plain gather "
                "on this machine now",
            )
        )
    g = score_group(s.bt_n)
    w1, w2 = _entry_seconds(h, g, "mmfs.Scorer workers=1"), _entry_seconds(h, g, "mmfs")
    if w1 is not None and w2 is not None:
        out.append(
            Figure(
                "4 scoring",
                f"{s.bt_n:,} keys: warm workers=2 throughput / workers=1",
                w1 / w2,
                "x",
                TARGETS["1.7x"],
                f"workers=1 {fmt_seconds(w1)} ({s.bt_n / w1 / 1e6:.2f} M keys/s), "
                f"workers=2 {fmt_seconds(w2)} ({s.bt_n / w2 / 1e6:.2f} M keys/s)",
            )
        )
    cold = _entry_seconds(h, g, "mmfs.score cold workers=2")
    if cold is not None:
        out.append(
            Figure(
                "4 scoring",
                f"{s.bt_n:,} keys: cold mmfs.score(workers=2) wall time",
                cold,
                "s",
                None,
                "pool start (forkserver; the workers import this module), open, score, shutdown"
                + ("" if w2 is None else f"; the warm call: {fmt_seconds(w2)}"),
            )
        )
    fl = _entry_seconds(h, g, "numpy M[pos] @ w")
    fl2 = _entry_seconds(h, g, "numpy M[pos] @ w 2 threads")
    if fl is not None and fl2 is not None:
        out.append(
            Figure(
                "4 scoring",
                f"{s.bt_n:,} keys, reference: floor 1 thread time / 2 threads time",
                fl / fl2,
                "x",
                None,
                f"{fmt_seconds(fl)} vs {fmt_seconds(fl2)} (in this process, 1 BLAS thread each)",
            )
        )
    if fl is not None and w2 is not None:
        out.append(
            Figure(
                "4 scoring",
                f"{s.bt_n:,} keys: floor (1 process) time / warm workers=2 time",
                fl / w2,
                "x",
                None,
                f"numpy M[pos] @ w in this process, 1 BLAS thread: {fmt_seconds(fl)}",
            )
        )
    return out


def figure_lines(h: Harness) -> list[str] | None:
    figures = [*_derived_figures(h), *FIGURES]
    return figure_table("batch", figures, disabled=h.disabled) if figures else None


@pytest.fixture(scope="session", autouse=True)
def _batch_figure_reporter(request: pytest.FixtureRequest, harness: Harness) -> None:
    report_at_end(request, "batch", lambda: figure_lines(harness))


# --------------------------------------------------------------------------------------
# Data, stores and key pools
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchData:
    path: str  # the mmfs store: group "g", int64 key "id"
    keys: np.ndarray  # int64 (n,), distinct, random
    M: np.ndarray  # (n, 136) float32: s0..s7, emb


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = {name: mmfs.scalar("float32") for name in SCALARS}
    schema["emb"] = mmfs.dense(DIM)
    return schema


@pytest.fixture(scope="session")
def batch_data(tmp_path_factory: pytest.TempPathFactory, sizes: Sizes) -> BatchData:
    n = sizes.bt_n
    root: Path = tmp_path_factory.mktemp("mmfs-batch-bench")
    rng = np.random.default_rng(0)
    keys = distinct_keys(rng, n)
    M = np.empty((n, WIDTH), dtype=np.float32)
    M[:, :N_SCALARS] = rng.standard_normal((n, N_SCALARS), dtype=np.float32)
    M[:, N_SCALARS:] = rng.standard_normal((n, DIM), dtype=np.float32)
    path = str(root / "batch")
    with mmfs.open(path, durability="none") as store:
        columns: dict[str, Any] = {name: M[:, j] for j, name in enumerate(SCALARS)}
        columns["emb"] = M[:, N_SCALARS:]
        write_group(store, _schema(), keys, columns)
        store.commit("batch group")
    gc.collect()
    return BatchData(path, keys, M)


@pytest.fixture(scope="session")
def batch_sqlite(tmp_path_factory: pytest.TempPathFactory, batch_data: BatchData) -> str:
    """The same rows in sqlite3: t(key INTEGER PRIMARY KEY, s0..s7 REAL, emb BLOB)."""
    keys, M = batch_data.keys, batch_data.M
    n = keys.shape[0]
    sqlite_path = str(tmp_path_factory.mktemp("mmfs-batch-sqlite") / "batch.sqlite")
    conn = sqlite3.connect(sqlite_path)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        cols = ", ".join(f"{name} REAL" for name in SCALARS)
        conn.execute(f"CREATE TABLE t (key INTEGER PRIMARY KEY, {cols}, emb BLOB)")
        marks = ", ".join("?" * (N_SCALARS + 2))
        for a in range(0, n, WRITE_CHUNK):
            part = M[a : a + WRITE_CHUNK]
            rows = zip(
                keys[a : a + WRITE_CHUNK].tolist(),
                *part[:, :N_SCALARS].T.tolist(),
                (x.tobytes() for x in part[:, N_SCALARS:]),
                strict=True,
            )
            conn.executemany(f"INSERT INTO t VALUES ({marks})", rows)
        conn.commit()
    finally:
        conn.close()
    return sqlite_path


@pytest.fixture(scope="module")
def reader(batch_data: BatchData) -> Iterator[mmfs.Store]:
    store = mmfs.open(batch_data.path, mode="r")
    yield store
    store.close()


_POOLS: dict[int, list[np.ndarray]] = {}


def position_pool(sizes: Sizes, n: int) -> list[np.ndarray]:
    """The pre-drawn position sets of batch size n (seeded by n): one for the check, one
    for the warm-up round, one per timed round (the most any test of that size runs)."""
    pool = _POOLS.get(n)
    if pool is None:
        rounds = [r for c, r in zip(sizes.bt_counts, sizes.bt_rounds, strict=True) if c == n]
        count = max([*rounds, sizes.bt_sqlite_rounds])
        if n == sizes.bt_n:
            count = max(count, sizes.bt_score_rounds + 1, sizes.bt_cold_rounds)
        rng = np.random.default_rng(1_000 + n)
        N = sizes.bt_n
        if n == N:
            pool = [rng.permutation(N) for _ in range(count + 2)]
        else:
            pool = [rng.choice(N, size=n, replace=False) for _ in range(count + 2)]
        _POOLS[n] = pool
    return pool


def rounds_for(sizes: Sizes, n: int) -> int:
    return sizes.bt_rounds[sizes.bt_counts.index(n)]


def get_group(n: int, N: int) -> str:
    return f"get {n:,} keys of {N:,} -> to_numpy() (8 f32 + 128-d f32)"


def threads_group(N: int) -> str:
    return f"get {N:,} keys: n_threads=1 vs n_threads=2"


def out_group(N: int) -> str:
    return f"get {N:,} keys into out=: n_threads=1 vs n_threads=2"


def score_group(N: int) -> str:
    return f"score {N:,} keys, fn = to_numpy() @ w"


T1_IMPL = "mmfs n_threads=1"
T1_OUT_IMPL = "mmfs n_threads=1 out="


def _run(
    benchmark: Any,
    harness: Harness,
    group: str,
    impl: str,
    fn: Callable[[], Any],
    *,
    rounds: int,
    note: str = "",
    target: str | None = None,
    guard: str | None = None,
    floor: Callable[[], Any] | None = None,
) -> Any:
    """Time ``fn`` as ``impl`` in ``group`` (one warm-up round, then ``rounds`` rounds of
    one call; with --benchmark-disable one call), record it in the Harness table; return
    its last result.

    ``guard`` (a name for tools/bench_guard.py) with ``floor``: before every round (and the
    warm-up), outside the timed call, ``floor()`` is timed too, so the two alternate and
    see the same machine; ``extra_info["guard_ratio"]`` gets the ratio of their mins and
    the median of the per-round ratios (round i's time / the floor call just before it).
    """
    benchmark.group = group
    r = timed_rounds(benchmark, fn, rounds=rounds, before=floor)
    times, floor_times, seconds, done = r.times, r.before, r.median, r.rounds
    if benchmark.disabled:
        harness.disabled = True
    else:
        note = f"min {fmt_seconds(r.minimum)}; {note}"
    info: dict[str, Any] = {"impl": impl, "size": harness.size, "seconds_full_equivalent": seconds}
    if target is not None:
        info["target"] = target
    if guard is not None:
        assert floor is not None
        assert len(floor_times) == len(times)
        info["guard"] = guard
        info["guard_ratio"] = {
            "min": min(times) / min(floor_times),
            "median": statistics.median(t / f for t, f in zip(times, floor_times, strict=True)),
            "seconds": {"min": min(times), "median": statistics.median(times)},
            "floor_seconds": {"min": min(floor_times), "median": statistics.median(floor_times)},
        }
    entry = Entry(
        group, impl, seconds, seconds, done, note, None if target is None else TARGETS[target]
    )
    harness.record(benchmark, entry, info)
    return r.result


# --------------------------------------------------------------------------------------
# 1. Batch get
# --------------------------------------------------------------------------------------


def _get_params() -> list[Any]:
    params = []
    for n in SIZES[size_name()].bt_counts:
        for impl in ("floor", "searchsorted", "sqlite3", "mmfs"):  # mmfs last
            if impl != "sqlite3" or n == TARGET_N:
                params.append(pytest.param(n, impl, id=f"{n}-{impl}"))
    return params


def _floor_reader(M: np.ndarray) -> Callable[[np.ndarray], Any]:
    def read(pos: np.ndarray) -> np.ndarray:
        return M[pos]

    return read


def _mmfs_reader(g: Any) -> Callable[[np.ndarray], Any]:
    def read(keys: np.ndarray) -> np.ndarray:
        return g.get(keys).to_numpy()

    return read


def _sqlite_reader(request: pytest.FixtureRequest) -> Callable[[np.ndarray], Any]:
    path = request.getfixturevalue("batch_sqlite")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    request.addfinalizer(conn.close)
    cur = conn.cursor()
    sql = f"SELECT {', '.join(SCALARS)}, emb FROM t WHERE key = ?"

    def read(keys: np.ndarray) -> np.ndarray:
        rows = [cur.execute(sql, (k,)).fetchone() for k in keys.tolist()]
        out = np.empty((len(rows), WIDTH), dtype=np.float32)
        out[:, :N_SCALARS] = np.array([r[:N_SCALARS] for r in rows], dtype=np.float32)
        blobs = b"".join([r[N_SCALARS] for r in rows])
        out[:, N_SCALARS:] = np.frombuffer(blobs, dtype=np.float32).reshape(-1, DIM)
        return out

    return read


def _searchsorted_reader(d: BatchData) -> Callable[[np.ndarray], Any]:
    order = np.argsort(d.keys)
    sorted_keys = d.keys[order]
    M_sorted = d.M[order]  # setup, untimed: a user keeps the matrix in key order
    last = sorted_keys.shape[0] - 1

    def read(keys: np.ndarray) -> np.ndarray:
        i = np.searchsorted(sorted_keys, keys)
        np.minimum(i, last, out=i)
        found = sorted_keys[i] == keys
        out = M_sorted[i]
        if not found.all():
            out[~found] = np.nan
        return out

    return read


@pytest.mark.parametrize(("n", "impl"), _get_params())
def test_get_many(
    benchmark: Any,
    harness: Harness,
    sizes: Sizes,
    batch_data: BatchData,
    request: pytest.FixtureRequest,
    n: int,
    impl: str,
) -> None:
    d = batch_data
    group = get_group(n, sizes.bt_n)
    pool = position_pool(sizes, n)
    rounds = sizes.bt_sqlite_rounds if impl == "sqlite3" else rounds_for(sizes, n)
    M = d.M
    target: str | None = None
    read: Callable[[np.ndarray], Any]
    if impl == "floor":
        read = _floor_reader(M)
        name, note = "numpy M[pos]", "M[pos]: positions known, (n, 136) f32 in memory"
        target = "floor_1.5" if n == TARGET_N else None
    elif impl == "searchsorted":
        read = _searchsorted_reader(d)
        name = "searchsorted+M[pos]"
        note = "i = searchsorted(sorted keys, keys); found check; M_sorted[i]"
    elif impl == "sqlite3":
        read = _sqlite_reader(request)
        name, note = "sqlite3", "one prepared SELECT per key; np.array + np.frombuffer"
        target = "100x"
    else:
        read = _mmfs_reader(request.getfixturevalue("reader")["g"])
        name, note = "mmfs", "g.get(keys).to_numpy()"
    args = pool if impl == "floor" else [d.keys[p] for p in pool]  # positions or keys
    nxt = cycler(args)

    def fn() -> Any:
        return read(nxt())

    np.testing.assert_array_equal(read(args[0]), M[pool[0]])
    guard = floor = None
    if impl == "mmfs" and n != sizes.bt_n:  # bt_n keys run on every core: see threads_
        guard, floor = f"get_{n}/mmfs", _floor_call(M.__getitem__, pool)
    _run(
        benchmark, harness, group, name, fn, rounds=rounds, note=note, target=target,
        guard=guard, floor=floor,
    )  # fmt: skip


def _floor_call(floor: Callable[[np.ndarray], Any], pool: list[np.ndarray]) -> Callable[[], Any]:
    """The floor interleaved with a tracked benchmark: the same position sets, in the
    other order (so it never reads the rows the benchmark reads next)."""
    nxt = itertools.cycle(pool[::-1]).__next__
    return lambda: floor(nxt())


# --------------------------------------------------------------------------------------
# 2. Threads
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_threads() -> Iterator[ThreadPoolExecutor]:
    """The threads of the 2-thread floors."""
    with ThreadPoolExecutor(2, thread_name_prefix="floor") as ex:
        yield ex


def _halves(n: int) -> list[tuple[int, int]]:
    return [(0, n // 2), (n // 2, n)]


def _take_2t(ex: ThreadPoolExecutor, M: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """M[pos] on two threads: each takes its half of pos into its rows of a fresh result
    (np.take releases the GIL; its page faults land in the threads, as in mmfs's kernel)."""
    out = np.empty((pos.shape[0], M.shape[1]), dtype=M.dtype)
    futures = [
        ex.submit(np.take, M, pos[a:b], 0, out[a:b], "clip") for a, b in _halves(pos.shape[0])
    ]
    for f in futures:
        f.result()
    return out


@pytest.mark.parametrize("impl", ["floor2", "threads1", "threads2"])
def test_get_threads(
    benchmark: Any, harness: Harness, sizes: Sizes, batch_data: BatchData, reader: mmfs.Store,
    two_threads: ThreadPoolExecutor, impl: str,
) -> None:  # fmt: skip
    N = sizes.bt_n
    M = batch_data.M
    pool = position_pool(sizes, N)
    case = f"threads_{N}"

    def take_2t(pos: np.ndarray) -> np.ndarray:
        return _take_2t(two_threads, M, pos)

    if impl == "floor2":
        nxt = cycler(pool)
        np.testing.assert_array_equal(take_2t(pool[0]), M[pool[0]])
        _run(
            benchmark,
            harness,
            threads_group(N),
            "numpy M[pos] 2 threads",
            lambda: take_2t(nxt()),
            note="np.take(M, half of pos, out=its rows) on each of 2 Python threads",
            rounds=rounds_for(sizes, N),
        )
        return
    threads = int(impl[-1])
    key_pool = [batch_data.keys[p] for p in pool]
    nxt = cycler(key_pool)
    g = reader["g"]
    np.testing.assert_array_equal(g.get(key_pool[0], n_threads=threads).to_numpy(), M[pool[0]])

    def fn() -> Any:
        return g.get(nxt(), n_threads=threads).to_numpy()

    _run(
        benchmark,
        harness,
        threads_group(N),
        "mmfs" if threads == 2 else T1_IMPL,
        fn,
        target="1.7x" if threads == 1 else None,
        note=f"g.get(keys, n_threads={threads}).to_numpy()",
        rounds=rounds_for(sizes, N),
        # against the floor on as many threads: a busy machine slows both alike
        guard=f"{case}/n_threads={threads}",
        floor=_floor_call(M.__getitem__ if threads == 1 else take_2t, pool),
    )


@pytest.mark.parametrize("impl", ["floor", "threads1", "threads2"])
def test_get_out(
    benchmark: Any, harness: Harness, sizes: Sizes, batch_data: BatchData, reader: mmfs.Store,
    impl: str,
) -> None:  # fmt: skip
    N = sizes.bt_n
    M = batch_data.M
    pool = position_pool(sizes, N)
    buf = np.zeros((N, WIDTH), dtype=np.float32)  # touched: its pages exist before timing
    case = f"out_{N}"
    if impl == "floor":
        nxt = cycler(pool)

        def fn() -> Any:
            return np.take(M, nxt(), axis=0, out=buf, mode="clip")

        np.take(M, pool[0], axis=0, out=buf, mode="clip")
        name, note = (
            "numpy take(out=)",
            'np.take(M, pos, axis=0, out=buf, mode="clip") (unbuffered)',
        )
    else:
        threads = int(impl[-1])
        key_pool = [batch_data.keys[p] for p in pool]
        nxt = cycler(key_pool)
        g = reader["g"]

        def fn() -> Any:
            return g.get(nxt(), n_threads=threads, out=buf).to_numpy()

        g.get(key_pool[0], n_threads=threads, out=buf)
        name = "mmfs" if threads == 2 else T1_OUT_IMPL
        note = f"g.get(keys, n_threads={threads}, out=buf).to_numpy(): a view of buf"
    np.testing.assert_array_equal(buf, M[pool[0]])
    guard = floor = None
    if impl == "threads1":
        floor_buf = np.zeros_like(buf)

        def take_out(pos: np.ndarray) -> np.ndarray:
            return np.take(M, pos, axis=0, out=floor_buf, mode="clip")

        guard, floor = f"{case}/n_threads=1", _floor_call(take_out, pool)
    _run(
        benchmark, harness, out_group(N), name, fn, note=note, rounds=rounds_for(sizes, N),
        guard=guard, floor=floor,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# 3. Scoring
# --------------------------------------------------------------------------------------


def _floor_scores_into(M: np.ndarray, pos: np.ndarray, out: np.ndarray) -> None:
    for a in range(0, pos.shape[0], FLOOR_CHUNK):
        rows = np.take(M, pos[a : a + FLOOR_CHUNK], axis=0, mode="clip")
        np.matmul(rows, W, out=out[a : a + FLOOR_CHUNK])


def _floor_scores(M: np.ndarray, pos: np.ndarray) -> np.ndarray:
    out = np.empty(pos.shape[0], dtype=np.float32)
    _floor_scores_into(M, pos, out)
    return out


def _floor_scores_2t(ex: ThreadPoolExecutor, M: np.ndarray, pos: np.ndarray) -> np.ndarray:
    out = np.empty(pos.shape[0], dtype=np.float32)
    halves = _halves(pos.shape[0])
    for f in [ex.submit(_floor_scores_into, M, pos[a:b], out[a:b]) for a, b in halves]:
        f.result()
    return out


@pytest.mark.parametrize("impl", ["floor", "floor2", "workers1", "cold", "workers2"])
def test_score(
    benchmark: Any, harness: Harness, sizes: Sizes, batch_data: BatchData,
    two_threads: ThreadPoolExecutor, impl: str,
) -> None:  # fmt: skip
    from threadpoolctl import threadpool_limits

    N = sizes.bt_n
    d = batch_data
    pool = position_pool(sizes, N)
    group = score_group(N)
    with threadpool_limits(1):
        want = _floor_scores(d.M, pool[0])

    def check(got: np.ndarray) -> None:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    def scores_1t(pos: np.ndarray) -> np.ndarray:
        return _floor_scores(d.M, pos)

    def scores_2t(pos: np.ndarray) -> np.ndarray:
        return _floor_scores_2t(two_threads, d.M, pos)

    if impl.startswith("floor"):
        nxt = cycler(pool)
        scores = scores_1t if impl == "floor" else scores_2t
        on = "1 thread" if impl == "floor" else "2 threads"
        with threadpool_limits(1):  # BLAS on one thread, as in the workers
            check(scores(pool[0]))
            _run(
                benchmark,
                harness,
                group,
                "numpy M[pos] @ w" + ("" if impl == "floor" else " 2 threads"),
                lambda: scores(nxt()),
                note=f"in this process, {on} (1 BLAS thread each), {FLOOR_CHUNK}-key chunks",
                rounds=sizes.bt_score_rounds,
            )
        return
    key_pool = [d.keys[p] for p in pool]
    nxt = cycler(key_pool)
    if impl == "cold":
        used: list[np.ndarray] = []

        def cold() -> np.ndarray:
            keys = nxt()
            used.append(keys)
            return mmfs.score(
                d.path, "g", keys, score_fn, workers=2, n_threads=1, timeout=SCORE_TIMEOUT
            )

        got = _run(
            benchmark,
            harness,
            group,
            "mmfs.score cold workers=2",
            cold,
            note="mmfs.score(path, 'g', keys, fn, workers=2, n_threads=1): pool start included",
            rounds=sizes.bt_cold_rounds,
        )
        i = next(i for i, k in enumerate(key_pool) if k is used[-1])
        with threadpool_limits(1):
            np.testing.assert_allclose(got, _floor_scores(d.M, pool[i]), rtol=1e-4, atol=1e-4)
        return
    workers = int(impl[-1])
    with (
        mmfs.Scorer(
            d.path, "g", score_fn, workers=workers, n_threads=1, timeout=SCORE_TIMEOUT
        ) as scorer,
        threadpool_limits(1),  # for the interleaved floor
    ):
        check(scorer.score(key_pool[0]))  # the warm-up call: the workers start here
        _run(
            benchmark,
            harness,
            group,
            "mmfs" if workers == 2 else "mmfs.Scorer workers=1",
            lambda: scorer.score(nxt()),
            target="1.7x" if workers == 1 else None,
            note=f"warm Scorer(workers={workers}, n_threads=1).score(keys)",
            rounds=sizes.bt_score_rounds,
            # against the floor on as many threads as there are workers
            guard=f"score_{N}/workers={workers}",
            floor=_floor_call(scores_1t if workers == 1 else scores_2t, pool),
        )


def test_score_uss(sizes: Sizes, batch_data: BatchData, reader: mmfs.Store) -> None:
    N = sizes.bt_n
    d = batch_data
    data_bytes = N * WIDTH * 4
    g = reader["g"]
    check = 0.0
    for a in range(0, N, FLOOR_CHUNK):  # this process maps and reads every key first
        check += float(g.get(d.keys[a : a + FLOOR_CHUNK]).to_numpy().sum(dtype=np.float64))
    np.testing.assert_allclose(check, float(d.M.sum(dtype=np.float64)), rtol=1e-6)
    pool = position_pool(sizes, N)
    with mmfs.Scorer(d.path, "g", uss_fn, workers=2, n_threads=1, timeout=SCORE_TIMEOUT) as s:
        batch = s.batch_size or min(1 << 16, max(1 << 10, -(-N // 8)))
        # the first call starts both workers; the next two find them both ready
        res = np.concatenate([s.score(d.keys[pool[i]]) for i in (0, 1, 2)])
    by_pid: dict[int, np.ndarray] = {}
    for pid in np.unique(res[:, 0]).tolist():
        by_pid[pid] = res[res[:, 0] == pid]
    uss = {pid: int((r[:, 2] - r[:, 1]).max()) for pid, r in by_pid.items()}
    anon = {pid: int((r[:, 4] - r[:, 3]).max()) for pid, r in by_pid.items()}
    base = {pid: int(r[0, 1]) for pid, r in by_pid.items()}
    mib = 2.0**20
    FIGURES.append(
        Figure(
            "4 scoring",
            f"{N:,} keys, workers=2: max USS increase per worker / data",
            max(uss.values()) / data_bytes,
            "%",
            LIMITS["score_uss"],
            f"data {data_bytes / mib:.1f} MiB; {len(by_pid)} workers scored, batches of "
            f"{batch:,} keys ({batch * WIDTH * 4 / mib:.1f} MiB), every key 3 times; USS "
            f"increase {', '.join(f'{u / mib:.2f}' for u in uss.values())} MiB, anonymous "
            f"{', '.join(f'{a / mib:.2f}' for a in anon.values())} MiB, from USS "
            f"{', '.join(f'{b / mib:.1f}' for b in base.values())} MiB at the first call",
        )
    )
