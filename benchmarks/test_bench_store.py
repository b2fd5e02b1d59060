"""The store (issue 3): online reads, bytes on disk and in memory, open time, shared readers.

Every figure has a peer measured in the same run.

1. Online read of one random existing key from a group of ``st_online_n`` keys (full size
   1,000,000; small 10,000) with 8 float32 scalars and one 128-d float32 vector.  Each
   benchmark call reads ONE key, cycling through 4,096 keys drawn (seeded) beforehand;
   pytest-benchmark's pedantic mode times loops of ``GET_CALLS`` = 1,000 calls per round
   and divides, for every implementation alike (so the per-call overhead of the harness,
   a Python call and a ``next()`` on the key cycle, is in every figure):

   * ``mmfs``: ``g.get(k)`` (a FeatureBatch owning a copy of the record);
   * ``mmfs to_numpy``: ``g.get(k).to_numpy()`` (the 136 values as one float32 row);
   * ``dict+numpy``: a dict key -> row position and two arrays, ``i = pos[k];
     return S[i], X[i]`` (8 scalars, the vector; views, no copy);
   * ``sqlite3``: one row per key (``key INTEGER PRIMARY KEY``, 8 REAL, the vector as a
     BLOB), one prepared statement on a kept cursor, ``np.frombuffer`` on the blob.

   Target: mmfs median < 3 µs per call (absolute).  The ratios go in the Harness table.

2. Memory.  A dense float32 group (``st_dense_n`` x 128; full 1,000,000) and a sparse one
   (dim 50,000, about 50 non-zeros a row, ``st_sparse_n`` rows; full 200,000), each the
   only group of its store, built in one commit.  Disk: the sum of ``st_blocks * 512`` over
   the store directory (arena segments are preallocated sparse files, so the apparent
   size ``st_size`` overstates; both are reported), against the raw bytes (N*128*4; CSR:
   indptr int64 + indices int32 + data float32).  Resident: a fresh process opens the
   store, reads every key (chunks of ``READ_CHUNK`` keys, each batch dropped before the
   next, so the copies do not accumulate) and reports its RSS increase, its USS increase
   and the resident bytes of its mappings of the store's files (/proc smaps), against raw.
   Targets: dense <= 1.1x raw (disk and resident), sparse <= 1.25x raw CSR.

3. Open: in fresh processes (``st_open_runs`` of each, interleaved), ``import`` timed
   apart, then ``mmfs.open(path, mode="r")`` + ``s["g"].get(key)`` of the dense store,
   against ``np.load(.npy, mmap_mode="r")`` + one row, and ``sqlite3.connect`` (read only)
   + one query.  The page cache is warm (the files were just written).  Target: mmfs
   open + first read < 20 ms (median).

4. Shared memory: ``st_readers`` processes (spawn; full 4) each open the dense store by
   path and read every row ``READ_PASSES`` times; a barrier holds them until all have
   read, then each takes its USS (``psutil memory_full_info().uss``) and subtracts its
   USS taken after import + open (before reading).  Peer: a spawn ``multiprocessing.Pool``
   whose parent sends the full numpy array to each worker (pickled); a worker's baseline
   is taken in the pool initializer.  Target: extra USS per mmfs reader < 5% of the data.

The time comparisons go to the Harness ratio table; every figure against its target goes
to a second table, "mmfs storage figures", printed at the end of the session (and
appended to $MMFS_BENCH_TABLE when it is set).
"""

from __future__ import annotations

import gc
import itertools
import json
import multiprocessing as mp
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np
import psutil
import pytest
import scipy.sparse as sp
from conftest import Entry, Harness, Sizes
from figures import Figure, figure_table, report_at_end
from groups import distinct_keys, write_group
from targets import fmt_seconds

import mmfs

DIM = 128
N_SCALARS = 8
GET_CALLS = 1_000  # calls per timed round of the one-key benchmarks
N_QUERY_KEYS = 4_096  # the pre-drawn keys the one-key benchmarks cycle through
READ_CHUNK = 1_024  # keys per get() when a process reads a whole group
READ_PASSES = 3  # whole-group passes of each shared reader
WRITE_CHUNK = 100_000  # rows per write() while building
SCALARS = [f"s{i}" for i in range(N_SCALARS)]


# --------------------------------------------------------------------------------------
# The figures table (absolute targets), printed at the end of the session
# --------------------------------------------------------------------------------------


FIGURES: list[Figure] = []


@pytest.fixture(scope="session", autouse=True)
def _figure_reporter(request: pytest.FixtureRequest) -> None:
    report_at_end(request, "storage", lambda: figure_table("storage", FIGURES) if FIGURES else None)


# --------------------------------------------------------------------------------------
# Data and stores (session fixtures: the full-size stores take a while to build)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnlineData:
    path: str  # the mmfs store: group "g", int64 key "id"
    sqlite_path: str
    keys: np.ndarray  # int64 (n,), distinct, random
    S: np.ndarray  # (n, 8) float32 scalars s0..s7
    X: np.ndarray  # (n, 128) float32 vector "emb"
    query_keys: list[int]  # N_QUERY_KEYS existing keys, drawn at random


@dataclass(frozen=True)
class DenseData:
    path: str  # mmfs store: group "g", keys 0..n-1, feature "emb" (n, 128) float32
    npy_path: str
    sqlite_path: str  # table t(key INTEGER PRIMARY KEY, emb BLOB)
    X: np.ndarray


@dataclass(frozen=True)
class SparseData:
    path: str  # mmfs store: group "g", keys 0..n-1, feature "t" sparse(dim)
    csr: sp.csr_matrix  # canonical (sorted indices, no duplicates)
    n: int
    dim: int


def _online_schema() -> dict[str, Any]:
    schema: dict[str, Any] = {name: mmfs.scalar("float32") for name in SCALARS}
    schema["emb"] = mmfs.dense(DIM)
    return schema


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mmfs-store-bench")


@pytest.fixture(scope="session")
def online_data(store_dir: Path, sizes: Sizes) -> OnlineData:
    n = sizes.st_online_n
    rng = np.random.default_rng(0)
    keys = distinct_keys(rng, n)
    S = rng.standard_normal((n, N_SCALARS), dtype=np.float32)
    X = rng.standard_normal((n, DIM), dtype=np.float32)
    path = str(store_dir / "online")
    with mmfs.open(path, durability="none") as store:
        columns: dict[str, Any] = {name: S[:, j] for j, name in enumerate(SCALARS)}
        columns["emb"] = X
        write_group(store, _online_schema(), keys, columns)
        store.commit("online group")
    sqlite_path = str(store_dir / "online.sqlite")
    conn = sqlite3.connect(sqlite_path)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        cols = ", ".join(f"{name} REAL" for name in SCALARS)
        conn.execute(f"CREATE TABLE t (key INTEGER PRIMARY KEY, {cols}, emb BLOB)")
        marks = ", ".join("?" * (N_SCALARS + 2))
        for a in range(0, n, WRITE_CHUNK):
            rows = zip(
                keys[a : a + WRITE_CHUNK].tolist(),
                *S[a : a + WRITE_CHUNK].T.tolist(),
                (x.tobytes() for x in X[a : a + WRITE_CHUNK]),
                strict=True,
            )
            conn.executemany(f"INSERT INTO t VALUES ({marks})", rows)
        conn.commit()
    finally:
        conn.close()
    query_keys = rng.choice(keys, size=N_QUERY_KEYS).tolist()
    return OnlineData(path, sqlite_path, keys, S, X, query_keys)


@pytest.fixture(scope="session")
def dense_data(store_dir: Path, sizes: Sizes) -> DenseData:
    n = sizes.st_dense_n
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, DIM), dtype=np.float32)
    keys = np.arange(n, dtype=np.int64)
    path = str(store_dir / "dense")
    with mmfs.open(path, durability="none") as store:
        write_group(store, {"emb": mmfs.dense(DIM)}, keys, {"emb": X})
        store.commit("dense group")
    npy_path = str(store_dir / "dense.npy")
    np.save(npy_path, X)
    sqlite_path = str(store_dir / "dense.sqlite")
    conn = sqlite3.connect(sqlite_path)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("CREATE TABLE t (key INTEGER PRIMARY KEY, emb BLOB)")
        for a in range(0, n, WRITE_CHUNK):
            part = X[a : a + WRITE_CHUNK]
            rows = zip(range(a, a + part.shape[0]), (x.tobytes() for x in part), strict=True)
            conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
        conn.commit()
    finally:
        conn.close()
    gc.collect()  # the writer's mappings go with its arrays: the parent maps nothing now
    return DenseData(path, npy_path, sqlite_path, X)


@pytest.fixture(scope="session")
def sparse_data(store_dir: Path, sizes: Sizes) -> SparseData:
    n, dim = sizes.st_sparse_n, sizes.st_sparse_dim
    rng = np.random.default_rng(2)
    counts = rng.poisson(sizes.st_sparse_nnz, size=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = rng.integers(0, dim, size=int(indptr[-1]), dtype=np.int32)
    data = rng.standard_normal(int(indptr[-1]), dtype=np.float32)
    csr = sp.csr_matrix((data, indices, indptr), shape=(n, dim))
    csr.sum_duplicates()  # canonical, as mmfs stores it
    path = str(store_dir / "sparse")
    keys = np.arange(n, dtype=np.int64)
    with mmfs.open(path, durability="none") as store:
        write_group(store, {"t": mmfs.sparse(dim)}, keys, {"t": csr})
        store.commit("sparse group")
    gc.collect()
    return SparseData(path, csr, n, dim)


# --------------------------------------------------------------------------------------
# 1. Online read of one key
# --------------------------------------------------------------------------------------

GET_IMPLS = ["dict+numpy", "sqlite3", "mmfs to_numpy", "mmfs"]  # mmfs last


@pytest.fixture(scope="module")
def online_reader(online_data: OnlineData) -> Iterator[mmfs.Store]:
    store = mmfs.open(online_data.path, mode="r")
    yield store
    store.close()


def _time_calls(
    benchmark: Any, harness: Harness, group: str, impl: str, fn: Callable[[], Any], note: str
) -> float:
    """Seconds per call of ``fn`` (one key), recorded in the Harness table.

    pedantic mode: ``rounds`` rounds of GET_CALLS calls each (plus 2 warm-up rounds); the
    figure is the median over rounds of (round time / GET_CALLS).  With
    --benchmark-disable: one un-warmed round of GET_CALLS calls.
    """
    benchmark.group = group
    if benchmark.disabled:
        benchmark.pedantic(fn)  # one call (the fixture does nothing else when disabled)
        t0 = time.perf_counter()
        for _ in range(GET_CALLS):
            fn()
        seconds = (time.perf_counter() - t0) / GET_CALLS
        rounds = 1
        harness.disabled = True
    else:
        benchmark.pedantic(
            fn, rounds=harness.sizes.st_get_rounds, iterations=GET_CALLS, warmup_rounds=2
        )
        seconds = float(benchmark.stats.stats.median)  # per call: divided by iterations
        rounds = int(benchmark.stats.stats.rounds)
        note = f"min {float(benchmark.stats.stats.min) * 1e6:.2f} µs; {note}"
    note = f"{seconds * 1e6:.2f} µs/call ({rounds} x {GET_CALLS} calls); {note}"
    info: dict[str, Any] = {"impl": impl, "size": harness.size, "seconds_per_call": seconds}
    harness.record(benchmark, Entry(group, impl, seconds, seconds, rounds, note), info)
    return seconds


@pytest.mark.parametrize("impl", GET_IMPLS)
def test_get_one_key(
    benchmark: Any,
    harness: Harness,
    online_data: OnlineData,
    request: pytest.FixtureRequest,
    impl: str,
) -> None:
    d = online_data
    n = d.keys.shape[0]
    group = f"get 1 key of {n} (8 f32 + 128-d f32)"
    check_keys = d.query_keys[:5]
    order = np.argsort(d.keys)
    rows_of_check = order[np.searchsorted(d.keys, check_keys, sorter=order)]
    want = [np.concatenate([d.S[i], d.X[i]]) for i in rows_of_check.tolist()]
    nxt = itertools.cycle(d.query_keys).__next__
    fn: Callable[[], Any]
    if impl == "dict+numpy":
        S, X = d.S, d.X
        pos = {k: i for i, k in enumerate(d.keys.tolist())}  # key -> row position

        def fn() -> Any:
            i = pos[nxt()]
            return S[i], X[i]

        def values(k: int) -> np.ndarray:
            i = pos[k]
            return np.concatenate([S[i], X[i]])

        note = "i = pos[k]; S[i], X[i] (views)"
    elif impl == "sqlite3":
        conn = sqlite3.connect(f"file:{d.sqlite_path}?mode=ro", uri=True)
        request.addfinalizer(conn.close)
        cur = conn.cursor()
        sql = f"SELECT {', '.join(SCALARS)}, emb FROM t WHERE key = ?"

        def fn() -> Any:
            r = cur.execute(sql, (nxt(),)).fetchone()
            return r[:N_SCALARS], np.frombuffer(r[N_SCALARS], dtype=np.float32)

        def values(k: int) -> np.ndarray:
            r = cur.execute(sql, (k,)).fetchone()
            return np.concatenate(
                [np.array(r[:N_SCALARS], dtype=np.float32), np.frombuffer(r[-1], np.float32)]
            )

        note = "prepared SELECT by INTEGER PRIMARY KEY, np.frombuffer(blob)"
    else:
        store: mmfs.Store = request.getfixturevalue("online_reader")
        g = store["g"]
        if impl == "mmfs":

            def fn() -> Any:
                return g.get(nxt())

            note = "g.get(k)"
        else:

            def fn() -> Any:
                return g.get(nxt()).to_numpy()

            note = "g.get(k).to_numpy(): (1, 136) float32"

        def values(k: int) -> np.ndarray:
            return g.get(k).to_numpy()[0]

    for k, w in zip(check_keys, want, strict=True):
        np.testing.assert_array_equal(values(k), w)
    seconds = _time_calls(benchmark, harness, group, impl, fn, note)
    note = harness.entries[group][impl].note
    if impl.startswith("mmfs"):
        name = "g.get(k)" if impl == "mmfs" else "g.get(k).to_numpy() (variant)"
        FIGURES.append(
            Figure("1 online read", f"{name}, 1 key of {n}", seconds, "s", "get_one", note)
        )
    else:
        FIGURES.append(
            Figure("1 online read", f"peer {impl}, 1 key of {n}", seconds, "s", None, note)
        )


# --------------------------------------------------------------------------------------
# 2. Bytes on disk and resident
# --------------------------------------------------------------------------------------


def disk_usage(path: str) -> tuple[int, int, dict[str, int]]:
    """(allocated bytes = sum of st_blocks * 512, apparent bytes = sum of st_size, allocated
    bytes by kind of file) over every file under ``path``."""
    blocks = size = 0
    by_kind: dict[str, int] = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            blocks += st.st_blocks * 512
            size += st.st_size
            kind = name.split("-")[0].split(".")[0] or name  # .writer.lock
            if name.startswith("sp-"):
                kind = "sp-" + name.split("-")[-2]  # sp-<feature>-idx/val-NNNNNN
            by_kind[kind] = by_kind.get(kind, 0) + st.st_blocks * 512
    return blocks, size, by_kind


RESIDENT_CODE = r"""
import gc, json, os, sys
import numpy as np, psutil
import mmfs

path, feature, n, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
proc = psutil.Process()
prefix = os.path.realpath(path) + os.sep

def mapped():
    return sum(m.rss for m in proc.memory_maps(grouped=True) if m.path.startswith(prefix))

store = mmfs.open(path, mode="r")
g = store["g"]
keys = np.arange(n, dtype=np.int64)
gc.collect()
m0, f0 = proc.memory_full_info(), mapped()
check = 0.0
for a in range(0, n, chunk):
    batch = g.get(keys[a : a + chunk], missing="raise")
    check += float(batch[feature].sum(dtype=np.float64))
    del batch
gc.collect()
m1, f1 = proc.memory_full_info(), mapped()
print(json.dumps({"rss": m1.rss - m0.rss, "uss": m1.uss - m0.uss, "mapped": f1 - f0,
                  "mapped_before": f0, "check": check}))
"""


def _run_json(code: str, *args: Any, timeout: float = 600) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mib(x: float) -> str:
    return f"{x / 2**20:.1f} MiB"


def _memory_figures(
    section: str, what: str, path: str, feature: str, n: int, raw: int, limit: str, check: float
) -> None:
    blocks, size, by_kind = disk_usage(path)
    kinds = ", ".join(f"{k} {_mib(v)}" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1]))
    FIGURES.append(
        Figure(
            section,
            f"{what}: disk (st_blocks) / raw",
            blocks / raw,
            "x",
            f"disk_{limit}",
            f"{_mib(blocks)} allocated vs raw {_mib(raw)}: {kinds}",
        )
    )
    FIGURES.append(
        Figure(
            section,
            f"{what}: apparent size (st_size) / raw",
            size / raw,
            "x",
            None,
            f"{_mib(size)} (segment files are preallocated, sparse)",
        )
    )
    res = _run_json(RESIDENT_CODE, path, feature, n, READ_CHUNK)
    np.testing.assert_allclose(res["check"], check, rtol=1e-6)
    FIGURES.append(
        Figure(
            section,
            f"{what}: resident after reading every key (RSS increase) / raw",
            res["rss"] / raw,
            "x",
            f"resident_{limit}",
            f"fresh process, get() of {READ_CHUNK} keys at a time: RSS +{_mib(res['rss'])}, "
            f"USS +{_mib(res['uss'])}, store mappings resident +{_mib(res['mapped'])} "
            f"({_mib(res['mapped_before'])} before)",
        )
    )
    FIGURES.append(
        Figure(
            section,
            f"{what}: store mappings resident / raw",
            res["mapped"] / raw,
            "x",
            None,
            "resident bytes of the process's mappings of the store's files (smaps)",
        )
    )


def test_memory_dense(dense_data: DenseData) -> None:
    n = dense_data.X.shape[0]
    raw = n * DIM * 4
    check = float(dense_data.X.sum(dtype=np.float64))
    _memory_figures(
        "2 memory", f"dense f32 {n}x{DIM}", dense_data.path, "emb", n, raw, "dense", check
    )


def test_memory_sparse(sparse_data: SparseData) -> None:
    csr, n = sparse_data.csr, sparse_data.n
    raw = (n + 1) * 8 + csr.nnz * 4 + csr.nnz * 4
    check = float(csr.data.sum(dtype=np.float64))
    _memory_figures(
        "2 memory",
        f"sparse dim {sparse_data.dim}, {n} rows, {csr.nnz / n:.1f} nnz/row",
        sparse_data.path,
        "t",
        n,
        raw,
        "sparse",
        check,
    )


# --------------------------------------------------------------------------------------
# 3. Open + first read in a fresh process
# --------------------------------------------------------------------------------------

OPEN_CODE = {
    "mmfs": r"""
import sys, time, json
t0 = time.perf_counter()
import mmfs
t1 = time.perf_counter()
s = mmfs.open(sys.argv[1], mode="r")
b = s["g"].get(int(sys.argv[2]))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open_read": t2 - t1, "check": float(b["emb"].sum())}))
""",
    "npy mmap": r"""
import sys, time, json
t0 = time.perf_counter()
import numpy as np
t1 = time.perf_counter()
X = np.load(sys.argv[1], mmap_mode="r")
row = np.array(X[int(sys.argv[2])])
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open_read": t2 - t1, "check": float(row.sum())}))
""",
    "sqlite3": r"""
import sys, time, json
t0 = time.perf_counter()
import sqlite3
import numpy as np
t1 = time.perf_counter()
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
r = conn.execute("SELECT emb FROM t WHERE key = ?", (int(sys.argv[2]),)).fetchone()
row = np.frombuffer(r[0], dtype=np.float32)
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "open_read": t2 - t1, "check": float(row.sum())}))
""",
}
OPEN_IMPLS = ["npy mmap", "sqlite3", "mmfs"]  # mmfs last
OPEN_WHAT = {  # what is timed, what was imported before (timed apart)
    "mmfs": ('mmfs.open(path, mode="r"); s["g"].get(key)', "import mmfs (numpy, scipy)"),
    "npy mmap": ('np.load(path, mmap_mode="r"); np.array(X[key])', "import numpy"),
    "sqlite3": (
        "sqlite3.connect(read only); SELECT emb by key; np.frombuffer",
        "import sqlite3, numpy",
    ),
}


def test_open_first_read(harness: Harness, sizes: Sizes, dense_data: DenseData) -> None:
    X = dense_data.X
    n = X.shape[0]
    paths = {
        "mmfs": dense_data.path,
        "npy mmap": dense_data.npy_path,
        "sqlite3": dense_data.sqlite_path,
    }
    rng = np.random.default_rng(3)
    keys = rng.integers(0, n, size=sizes.st_open_runs).tolist()
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in OPEN_IMPLS}
    for key in keys:  # interleaved, so drifts of the machine hit every impl alike
        for impl in OPEN_IMPLS:
            res = _run_json(OPEN_CODE[impl], paths[impl], key, timeout=120)
            np.testing.assert_allclose(res["check"], float(X[key].sum()), rtol=1e-5, atol=1e-4)
            runs[impl].append(res)
    group = f"open + first read, {n}x{DIM} f32 (fresh process)"
    for impl in OPEN_IMPLS:
        t_open = [r["open_read"] for r in runs[impl]]
        t_import = [r["import"] for r in runs[impl]]
        med = statistics.median(t_open)
        what, imported = OPEN_WHAT[impl]
        note = (
            f"{what}; median of {len(t_open)} processes, min {fmt_seconds(min(t_open))}, "
            f"max {fmt_seconds(max(t_open))}; {imported} (timed apart) "
            f"{fmt_seconds(statistics.median(t_import))}"
        )
        harness.entries.setdefault(group, {})[impl] = Entry(
            group, impl, med, med, len(t_open), note
        )
        FIGURES.append(
            Figure(
                "3 open",
                f"{impl}: open + first read",
                med,
                "s",
                "open" if impl == "mmfs" else None,
                note,
            )
        )
        FIGURES.append(
            Figure(
                "3 open",
                f"{impl}: import (timed apart)",
                statistics.median(t_import),
                "s",
                None,
                imported,
            )
        )


# --------------------------------------------------------------------------------------
# 4. Shared memory between reader processes
# --------------------------------------------------------------------------------------


def _uss() -> int:
    return int(psutil.Process().memory_full_info().uss)


def _reader(path: str, n: int, barrier: Any, queue: Any) -> None:
    """One spawned mmfs reader: USS after open, read the group READ_PASSES times, wait for
    every reader, USS again; keeps its mappings until every reader has measured."""
    proc = psutil.Process()
    store = mmfs.open(path, mode="r")
    g = store["g"]
    keys = np.arange(n, dtype=np.int64)
    gc.collect()
    before = proc.memory_full_info()
    barrier.wait(600)
    check = 0.0
    for _ in range(READ_PASSES):
        for a in range(0, n, READ_CHUNK):
            batch = g.get(keys[a : a + READ_CHUNK], missing="raise")
            check += float(batch["emb"].sum(dtype=np.float64))
            del batch
    gc.collect()
    barrier.wait(600)  # every reader has mapped every page it reads
    after = proc.memory_full_info()
    queue.put(_memory_report(before, after, check))
    barrier.wait(600)
    store.close()


def _memory_report(before: Any, after: Any, check: float) -> dict[str, Any]:
    """What a reader reports: its memory growth (psutil full info) while reading."""
    return {
        "pid": os.getpid(),
        "uss_before": before.uss,
        "uss": after.uss - before.uss,
        "pss": after.pss - before.pss,
        "rss": after.rss - before.rss,
        "check": check,
    }


_POOL: dict[str, Any] = {}


def _pool_init(barrier: Any) -> None:
    gc.collect()
    _POOL["barrier"] = barrier
    _POOL["before"] = psutil.Process().memory_full_info()


def _pool_task(X: np.ndarray) -> dict[str, Any]:
    """One peer worker: it got the whole array pickled; read it READ_PASSES times."""
    check = 0.0
    for _ in range(READ_PASSES):
        for a in range(0, X.shape[0], READ_CHUNK):
            check += float(X[a : a + READ_CHUNK].sum(dtype=np.float64))
    gc.collect()
    after = psutil.Process().memory_full_info()
    before = _POOL["before"]
    _POOL["barrier"].wait(600)  # one task per worker, all holding their copy
    return _memory_report(before, after, check)


def _collect(procs: list[Any], queue: Any, timeout: float) -> list[dict[str, Any]]:
    """One result from each reader; fails at once when one dies (its traceback is on
    stderr) instead of waiting for the others' barrier timeouts."""
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(results) < len(procs):
            try:
                results.append(queue.get(timeout=1.0))
            except Empty:
                died = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not died, f"a reader process died (exit codes {died}), see its stderr"
                assert time.monotonic() < deadline, f"readers gave no result in {timeout} s"
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(10)
    return results


def _mapped_under(path: str) -> int:
    prefix = os.path.realpath(path) + os.sep
    return sum(1 for m in psutil.Process().memory_maps() if m.path.startswith(prefix))


@pytest.mark.parametrize("impl", ["pool pickle", "mmfs"])
def test_shared_readers(sizes: Sizes, dense_data: DenseData, impl: str) -> None:
    X = dense_data.X
    n = X.shape[0]
    data_bytes = X.nbytes
    readers = sizes.st_readers
    check = float(X.sum(dtype=np.float64)) * READ_PASSES
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(readers)
    if impl == "mmfs":
        gc.collect()
        assert _mapped_under(dense_data.path) == 0, "the test process maps the dense store"
        queue = ctx.Queue()
        procs = [
            ctx.Process(target=_reader, args=(dense_data.path, n, barrier, queue))
            for _ in range(readers)
        ]
        for p in procs:
            p.start()
        results = _collect(procs, queue, timeout=900)
        what = f"{readers} spawned readers, mmfs.open by path, {READ_PASSES} passes"
        limit: str | None = "shared_uss"
    else:
        with ctx.Pool(readers, initializer=_pool_init, initargs=(barrier,)) as pool:
            results = pool.map_async(_pool_task, [X] * readers, chunksize=1).get(timeout=900)
        what = f"spawn Pool of {readers}, parent sends the array (pickled), {READ_PASSES} passes"
        limit = None
    assert len({r["pid"] for r in results}) == readers
    for r in results:
        np.testing.assert_allclose(r["check"], check, rtol=1e-6)
    uss = [r["uss"] for r in results]
    pss = [r["pss"] for r in results]
    rss = [r["rss"] for r in results]
    FIGURES.append(
        Figure(
            "4 shared",
            f"{impl}: max extra USS per reader / data",
            max(uss) / data_bytes,
            "%",
            limit,
            f"{what}; data {_mib(data_bytes)}; extra USS per reader "
            f"{', '.join(_mib(u) for u in uss)}; extra PSS {', '.join(_mib(p) for p in pss)}; "
            f"extra RSS {', '.join(_mib(x) for x in rss)}; USS after import + open "
            f"{', '.join(_mib(r['uss_before']) for r in results)}",
        )
    )
