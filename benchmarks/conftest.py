"""Shared machinery for the mmfs benchmarks (pytest-benchmark).

Size switch: ``MMFS_BENCH_SIZE=small`` (default; the whole run takes seconds, which is what
CI runs with ``--benchmark-disable``) or ``MMFS_BENCH_SIZE=full`` (the sizes we report in
``benchmarks/RESULTS.md``).

Every comparison is one pytest-benchmark *group*: the peers and mmfs are separate tests in
the same group, so ``--benchmark-group-by=group`` shows them side by side.  Each test
records its time in the session :class:`Harness`; at the end of the session a markdown
table of ratios (peer time / mmfs time, so > 1 means mmfs is faster) with the issue's
targets is printed (``pytest_terminal_summary``), ready to paste into RESULTS.md.

Times are the pytest-benchmark median.  With ``--benchmark-disable`` the fixture calls each
function once and the table shows that single, un-warmed call (indicative only).

A peer that is too slow to run at full size (scipy's loops over pairs) is timed on a slice
of rows of XA and extrapolated: ``t_full = t_fixed + (t_slice - t_fixed) * rows / slice``,
where ``t_fixed`` (input conversion, output allocation) is measured with an empty XA.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import pytest
from targets import TARGETS, Target, fmt_seconds

SIZE_ENV = "MMFS_BENCH_SIZE"


@dataclass(frozen=True)
class Sizes:
    """Problem sizes for one value of MMFS_BENCH_SIZE."""

    # cdist: (cd_a x dim) against (cd_b x dim)
    cd_a: int
    cd_b: int
    dim: int
    # scipy is timed on this many rows of XA per metric (then extrapolated)
    scipy_rows: dict[str, int]
    # knn: one query (and knn_many queries) against (knn_n x dim)
    knn_n: int
    knn_many: int
    # high-dimensional cdist: (hd_a x hd_dim) against (hd_b x hd_dim)
    hd_a: int
    hd_b: int
    hd_dim: int
    hd_scipy_rows: int
    # storage (test_bench_store.py): online reads of one key from a group of st_online_n
    # keys (8 float32 scalars + one dense(128) float32), st_get_rounds rounds of 1,000 calls
    st_online_n: int
    st_get_rounds: int
    # a dense float32 group (st_dense_n x 128): disk, resident, open and shared readers
    st_dense_n: int
    # a sparse group: st_sparse_n rows of dim st_sparse_dim, about st_sparse_nnz per row
    st_sparse_n: int
    st_sparse_dim: int
    st_sparse_nnz: int
    # fresh processes per open measurement; reader processes sharing the dense group
    st_open_runs: int
    st_readers: int
    # batch reads (test_bench_batch.py): a group of bt_n keys (8 float32 scalars + one
    # dense(128) float32); g.get(keys).to_numpy() of bt_counts[i] random keys, bt_rounds[i]
    # timed rounds each (fresh keys every round); bt_counts[0] is the per-key base of the
    # scaling figure and the 10,000 count carries the floor / sqlite3 targets
    bt_n: int
    bt_counts: tuple[int, ...]
    bt_rounds: tuple[int, ...]
    bt_sqlite_rounds: int
    # mmfs.Scorer over all bt_n keys: timed calls of a warm pool; cold mmfs.score() calls
    bt_score_rounds: int
    bt_cold_rounds: int
    # transforms (test_bench_transforms.py): a group of tf_n keys (128-d f32 emb, the same
    # with ~1% NaN emb_nan, a category color, 4 f32 scalars); tf_count keys per batch get,
    # tf_rounds timed rounds each; one-key gets: tf_one_rounds rounds of tf_one_calls calls
    tf_n: int
    tf_count: int
    tf_rounds: int
    tf_one_rounds: int
    tf_one_calls: int
    # experiments (test_bench_experiments.py): exp.assign of ex_assign_n ids on one thread,
    # ex_assign_rounds timed rounds; the per-id peers (mmh3, growthbook) on the first
    # ex_peer_n of them, ex_peer_rounds rounds; GrowthBook(...).run on ex_sdk_n of them.
    # get(experiment=): a group of ex_n keys (128-d f32 emb, emb_v2, 8 f32 scalars),
    # ex_count keys per call, ex_rounds rounds; one-key gets: ex_one_rounds rounds of
    # ex_one_calls calls
    ex_assign_n: int
    ex_assign_rounds: int
    ex_peer_n: int
    ex_peer_rounds: int
    ex_sdk_n: int
    ex_n: int
    ex_count: int
    ex_rounds: int
    ex_one_rounds: int
    ex_one_calls: int
    # similarity-search index (test_bench_index.py): ix_n x 128 float32 vectors from
    # ix_clusters Gaussian clusters, ix_queries held-out queries; faiss IndexIVFFlat with
    # ix_ivf_lists lists.  10,000-dim case: ix_hd_n x ix_hd_dim from ix_hd_clusters
    # clusters, ix_hd_queries queries (faiss IndexFlatL2 timed on ix_hd_flat_queries of
    # them).  Sparse case: ix_sp_n x ix_sp_dim CSR, about 50 non-zeros a row, from
    # ix_sp_clusters clusters of column sets, ix_sp_queries queries
    ix_n: int
    ix_queries: int
    ix_clusters: int
    ix_ivf_lists: int
    ix_hd_n: int
    ix_hd_dim: int
    ix_hd_clusters: int
    ix_hd_queries: int
    ix_hd_flat_queries: int
    ix_sp_n: int
    ix_sp_dim: int
    ix_sp_clusters: int
    ix_sp_queries: int


# Slices sized so that one scipy call takes about a second at full size on a 2-core EPYC.
_FULL_SCIPY_ROWS = {
    "euclidean": 50,
    "sqeuclidean": 50,
    "cosine": 50,
    "cityblock": 50,
    "chebyshev": 40,
    "minkowski": 4,
    "seuclidean": 50,
    "mahalanobis": 2,
    "hamming": 50,
    "jaccard": 20,
}

SIZES = {
    "small": Sizes(
        cd_a=100,
        cd_b=4_000,
        dim=128,
        scipy_rows={name: max(2, rows // 5) for name, rows in _FULL_SCIPY_ROWS.items()},
        knn_n=50_000,
        knn_many=50,
        hd_a=20,
        hd_b=1_000,
        hd_dim=1_000,
        hd_scipy_rows=5,
        st_online_n=10_000,
        st_get_rounds=20,
        st_dense_n=20_000,
        st_sparse_n=5_000,
        st_sparse_dim=50_000,
        st_sparse_nnz=50,
        st_open_runs=3,
        st_readers=2,
        bt_n=20_000,
        bt_counts=(1_000, 10_000, 20_000),
        bt_rounds=(300, 150, 60),
        bt_sqlite_rounds=3,
        bt_score_rounds=30,
        bt_cold_rounds=1,
        tf_n=20_000,
        tf_count=10_000,
        tf_rounds=30,
        tf_one_rounds=20,
        tf_one_calls=1_000,
        ex_assign_n=100_000,
        ex_assign_rounds=10,
        ex_peer_n=2_000,
        ex_peer_rounds=3,
        ex_sdk_n=200,
        ex_n=20_000,
        ex_count=10_000,
        ex_rounds=30,
        ex_one_rounds=20,
        ex_one_calls=1_000,
        ix_n=20_000,
        ix_queries=100,
        ix_clusters=20,
        ix_ivf_lists=128,
        ix_hd_n=2_000,
        ix_hd_dim=1_000,
        ix_hd_clusters=20,
        ix_hd_queries=50,
        ix_hd_flat_queries=20,
        ix_sp_n=20_000,
        ix_sp_dim=10_000,
        ix_sp_clusters=20,
        ix_sp_queries=50,
    ),
    "full": Sizes(
        cd_a=1_000,
        cd_b=100_000,
        dim=128,
        scipy_rows=_FULL_SCIPY_ROWS,
        knn_n=1_000_000,
        knn_many=1_000,
        hd_a=100,
        hd_b=10_000,
        hd_dim=10_000,
        hd_scipy_rows=10,
        st_online_n=1_000_000,
        st_get_rounds=200,
        st_dense_n=1_000_000,
        st_sparse_n=200_000,
        st_sparse_dim=50_000,
        st_sparse_nnz=50,
        st_open_runs=11,
        st_readers=4,
        bt_n=1_000_000,
        bt_counts=(1_000, 10_000, 1_000_000),
        bt_rounds=(200, 100, 7),
        bt_sqlite_rounds=5,
        bt_score_rounds=7,
        bt_cold_rounds=3,
        tf_n=1_000_000,
        tf_count=10_000,
        tf_rounds=150,
        tf_one_rounds=100,
        tf_one_calls=1_000,
        ex_assign_n=1_000_000,
        ex_assign_rounds=50,
        ex_peer_n=20_000,
        ex_peer_rounds=7,
        ex_sdk_n=2_000,
        ex_n=1_000_000,
        ex_count=10_000,
        ex_rounds=150,
        ex_one_rounds=100,
        ex_one_calls=1_000,
        ix_n=1_000_000,
        ix_queries=1_000,
        ix_clusters=1_000,
        ix_ivf_lists=1_024,
        ix_hd_n=100_000,
        ix_hd_dim=10_000,
        ix_hd_clusters=100,
        ix_hd_queries=100,
        ix_hd_flat_queries=10,
        ix_sp_n=1_000_000,
        ix_sp_dim=100_000,
        ix_sp_clusters=1_000,
        ix_sp_queries=100,
    ),
}


def size_name() -> str:
    name = os.environ.get(SIZE_ENV, "small").strip().lower() or "small"
    if name not in SIZES:
        raise pytest.UsageError(f"{SIZE_ENV} must be one of {sorted(SIZES)}, got {name!r}")
    return name


# --------------------------------------------------------------------------------------
# Targets and the per-session record
# --------------------------------------------------------------------------------------


@dataclass
class Entry:
    group: str
    impl: str
    seconds: float  # full-size equivalent (extrapolated for sliced peers)
    measured: float  # what was actually timed (the slice, for sliced peers)
    rounds: int
    note: str = ""
    target: Target | None = None
    peak_rss: int | None = None  # bytes above the RSS before the call
    peak_traced: int | None = None  # tracemalloc peak (numpy + Python allocations)


@dataclass
class Harness:
    """Runs one benchmark per test and keeps every result for the summary table."""

    size: str
    sizes: Sizes
    entries: dict[str, dict[str, Entry]] = field(default_factory=dict)
    disabled: bool = False

    def run(
        self,
        benchmark: Any,
        group: str,
        impl: str,
        fn: Callable[[], Any],
        *,
        target: str | None = None,
        note: str = "",
        scale: tuple[int, int, Callable[[], Any]] | None = None,
        rounds: int | None = None,
    ) -> Any:
        """Benchmark ``fn`` as ``impl`` in ``group``; return its (last) result.

        ``target`` (a key of TARGETS) belongs to a peer: it is checked against the mmfs
        entry of the group.
        ``scale=(slice_rows, full_rows, empty_call)`` marks a peer timed on a slice.
        ``rounds``: exactly that many rounds of one call after one warm-up round (for
        calls of seconds), instead of pytest-benchmark's calibration.
        """
        times: list[float] = []

        def timed() -> Any:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
            return out

        benchmark.group = group
        if rounds is not None and not benchmark.disabled:
            result = benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1)
            note = f"min {fmt_seconds(float(benchmark.stats.stats.min))}; {note}"
        else:
            result = benchmark(timed)
        stats = getattr(benchmark, "stats", None)
        if stats is not None:
            measured = float(stats.stats.median)
            rounds = int(stats.stats.rounds)
        else:
            self.disabled = True
            measured = statistics.median(times)
            rounds = len(times)
        seconds = measured
        info: dict[str, Any] = {"impl": impl, "size": self.size}
        if scale is not None:
            rows, full_rows, empty_call = scale
            fixed = _median_time(empty_call, 1 if self.disabled else 3)
            seconds = fixed + max(0.0, measured - fixed) * full_rows / rows
            note = (note + "; " if note else "") + (
                f"timed on {rows} of {full_rows} rows, extrapolated (fixed {fixed:.3f} s)"
            )
            info.update(
                slice_rows=rows, full_rows=full_rows, slice_median_s=measured, fixed_s=fixed
            )
        info["seconds_full_equivalent"] = seconds
        if target is not None:
            info["target"] = target
        entry = Entry(
            group,
            impl,
            seconds,
            measured,
            rounds,
            note,
            None if target is None else TARGETS[target],
        )
        self.record(benchmark, entry, info)
        return result

    def record(self, benchmark: Any, entry: Entry, info: dict[str, Any]) -> None:
        """Add ``entry`` to the table and its speed-ups to the benchmark's extra_info
        (against whatever the group already holds: mmfs runs last)."""
        self.entries.setdefault(entry.group, {})[entry.impl] = entry
        ref = self.entries[entry.group].get("mmfs")
        if ref is not None:
            for other in self.entries[entry.group].values():
                if other.impl != "mmfs" and ref.seconds > 0:
                    info[f"speedup_vs_{other.impl}"] = other.seconds / ref.seconds
        benchmark.extra_info.update(info)

    def memory(self, benchmark: Any, group: str, impl: str, fn: Callable[[], Any]) -> None:
        """Peak memory of one extra call of ``fn`` (outside the timed rounds)."""
        peak_rss, peak_traced = peak_memory(fn)
        entry = self.entries[group][impl]
        entry.peak_rss, entry.peak_traced = peak_rss, peak_traced
        benchmark.extra_info.update(peak_rss_bytes=peak_rss, peak_traced_bytes=peak_traced)


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------------------
# Peak memory (STYLE item 8): RSS high-water mark, and tracemalloc for numpy's allocations
# --------------------------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def peak_memory(fn: Callable[[], Any]) -> tuple[int, int]:
    """(peak RSS above the RSS before the call, tracemalloc peak) of ``fn()``, in bytes.

    RSS counts every allocator (BLAS buffers, faiss, OpenMP stacks); tracemalloc counts
    numpy's and Python's allocations only.  Where the kernel's peak-RSS counter cannot be
    reset, a thread samples psutil's RSS every millisecond instead.
    """
    gc.collect()
    proc = psutil.Process()
    before = proc.memory_info().rss
    exact = _reset_hwm()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.001)

    sampler = None if exact else threading.Thread(target=sample, daemon=True)
    if sampler is not None:
        sampler.start()
    tracemalloc.start()
    try:
        out = fn()
        _, traced = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        stop.set()
        if sampler is not None:
            sampler.join()
    del out
    if exact:
        hwm = _status_kib("VmHWM")
        peak[0] = max(peak[0], (hwm or 0) * 1024)
    return max(0, peak[0] - before), traced


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------

_HARNESS: Harness | None = None


def _harness() -> Harness:
    global _HARNESS
    if _HARNESS is None:
        name = size_name()
        _HARNESS = Harness(name, SIZES[name])
    return _HARNESS


@pytest.fixture(scope="session")
def harness() -> Harness:
    return _harness()


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    return _harness().sizes


@dataclass(frozen=True)
class CdistData:
    A: np.ndarray  # (cd_a, dim) float32
    B: np.ndarray  # (cd_b, dim) float32
    Abool: np.ndarray  # A > 0
    Bbool: np.ndarray  # B > 0
    V: np.ndarray  # per-feature variances of A and B stacked (scipy's default)
    VI: np.ndarray  # inverse covariance of A and B stacked (scipy's default)


@pytest.fixture(scope="session")
def cdist_data(sizes: Sizes) -> CdistData:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((sizes.cd_a, sizes.dim), dtype=np.float32)
    B = rng.standard_normal((sizes.cd_b, sizes.dim), dtype=np.float32)
    X = np.vstack([A, B]).astype(np.float64)
    V = np.var(X, axis=0, ddof=1)
    VI = np.linalg.inv(np.cov(X.T)).T
    return CdistData(A, B, A > 0, B > 0, V, VI)


@dataclass(frozen=True)
class KnnData:
    data: np.ndarray  # (knn_n, dim) float32, C-contiguous
    query: np.ndarray  # (1, dim)
    queries: np.ndarray  # (knn_many, dim)


@pytest.fixture(scope="session")
def knn_data(sizes: Sizes) -> KnnData:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((sizes.knn_n, sizes.dim), dtype=np.float32)
    query = rng.standard_normal((1, sizes.dim), dtype=np.float32)
    queries = rng.standard_normal((sizes.knn_many, sizes.dim), dtype=np.float32)
    return KnnData(data, query, queries)


@dataclass(frozen=True)
class HighDimData:
    A: np.ndarray  # (hd_a, hd_dim) float32
    B: np.ndarray  # (hd_b, hd_dim) float32


@pytest.fixture(scope="session")
def highdim_data(sizes: Sizes) -> HighDimData:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((sizes.hd_a, sizes.hd_dim), dtype=np.float32)
    B = rng.standard_normal((sizes.hd_b, sizes.hd_dim), dtype=np.float32)
    return HighDimData(A, B)


def pytest_configure(config: pytest.Config) -> None:
    size_name()  # fail early on a bad MMFS_BENCH_SIZE


def pytest_report_header(config: pytest.Config) -> list[str]:
    import mmfs

    lines = [f"mmfs benchmarks: {SIZE_ENV}={size_name()}", f"mmfs {mmfs.__version__}"]
    lines.append(f"cpus: {os.cpu_count()} ({platform.processor() or platform.machine()})")
    # Which build of the kernels is measured (they are rebuilt in place while tuning).
    from mmfs._kernels import __file__ as kernels_init

    kdir = os.path.dirname(kernels_init)
    for so in sorted(f for f in os.listdir(kdir) if f.startswith("_dense") and f.endswith(".so")):
        stamp = time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(os.path.join(kdir, so)))
        )
        lines.append(f"kernels: {so} built {stamp}")
    try:
        from threadpoolctl import threadpool_info

        for lib in threadpool_info():
            lines.append(
                f"threadpool: {lib.get('internal_api')} {lib.get('version')} "
                f"threads={lib.get('num_threads')} {os.path.basename(lib.get('filepath', ''))}"
            )
    except ImportError:  # pragma: no cover - threadpoolctl is in the bench group
        pass
    return lines


# --------------------------------------------------------------------------------------
# The summary table
# --------------------------------------------------------------------------------------


def _fmt_mib(x: int | None) -> str:
    return "" if x is None else f"{x / 2**20:.0f}"


def summary_lines(h: Harness) -> list[str]:
    lines = []
    mode = "single un-warmed call (--benchmark-disable)" if h.disabled else "median"
    lines.append(f"mmfs ratio table (MMFS_BENCH_SIZE={h.size}; time = {mode};")
    lines.append("speedup = peer time / mmfs time, > 1 means mmfs is faster)")
    lines.append("")
    lines.append(
        "| group | impl | time | speedup | target | result | peak RSS MiB | traced MiB | note |"
    )
    lines.append("|---|---|---:|---:|---|---|---:|---:|---|")
    n_pass = n_fail = 0
    for group, entries in h.entries.items():
        ref = entries.get("mmfs")
        for e in sorted(entries.values(), key=lambda e: e.impl == "mmfs"):
            speed = target = verdict = ""
            if e.impl != "mmfs" and ref is not None and ref.seconds > 0:
                ratio = e.seconds / ref.seconds
                speed = f"{ratio:.2f}"
                if e.target is not None:
                    target = e.target.text
                    ok = e.target.check(ratio)
                    verdict = "PASS" if ok else "FAIL"
                    n_pass += ok
                    n_fail += not ok
            lines.append(
                f"| {group} | {e.impl} | {fmt_seconds(e.seconds)} | {speed} | {target} | {verdict} "
                f"| {_fmt_mib(e.peak_rss)} | {_fmt_mib(e.peak_traced)} | {e.note} |"
            )
    lines.append("")
    verdict = f"targets: {n_pass} PASS, {n_fail} FAIL"
    if size_name() != "full":
        verdict += f" (at {SIZE_ENV}={size_name()}: the targets are for the full size)"
    lines.append(verdict)
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _HARNESS is None or not _HARNESS.entries:
        return
    terminalreporter.section("mmfs benchmark ratios")
    for line in summary_lines(_HARNESS):
        terminalreporter.write_line(line)
    path = os.environ.get("MMFS_BENCH_TABLE")
    if path:
        with open(path, "a") as f:
            f.write("\n".join(summary_lines(_HARNESS)) + "\n\n")
