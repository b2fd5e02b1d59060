"""The ``mmfs`` command line.

mmfs demo [--rows N] [--dim D] [--queries Q] [--k K]   the tour, on generated data
mmfs info                                              build and thread configuration
mmfs --help
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[Any, float]:
    """Best wall time of `repeat` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return result, best


def _demo(args: argparse.Namespace) -> int:
    import mmfs

    rng = np.random.default_rng(args.seed)
    n, dim, nq, k = args.rows, args.dim, args.queries, args.k
    print(f"mmfs {mmfs.__version__} demo: exact k-NN over {n:,} x {dim} float32 vectors")
    t0 = time.perf_counter()
    centres = rng.standard_normal((max(1, n // 100), dim)).astype(np.float32)
    data = centres[rng.integers(0, len(centres), n)]
    data += 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    queries = data[rng.integers(0, n, nq)] + 0.1 * rng.standard_normal((nq, dim)).astype(np.float32)
    print(f"  generated {data.nbytes / 2**20:.0f} MiB in {time.perf_counter() - t0:.2f} s")

    _, t_one = _timed(lambda: mmfs.knn(data, queries[:1], k))
    print(f"  one query, k={k}: {t_one * 1e3:.2f} ms ({data.nbytes / t_one / 1e9:.1f} GB/s)")

    (idx, dist), t_batch = _timed(lambda: mmfs.knn(data, queries, k))
    print(f"  {nq} queries, k={k}: {t_batch * 1e3:.1f} ms ({nq / t_batch:,.0f} queries/s)")

    # Check against a brute-force numpy answer on a few queries.
    check = min(nq, 8)
    diff = queries[:check, None, :].astype(np.float64) - data[None, :, :].astype(np.float64)
    ref = np.sqrt(np.einsum("qnd,qnd->qn", diff, diff))
    ref_idx = np.argsort(ref, axis=1, kind="stable")[:, :k]
    agree = float(np.mean(idx[:check] == ref_idx))
    err = float(np.max(np.abs(dist[:check] - np.take_along_axis(ref, ref_idx, axis=1))))
    print(f"  agrees with numpy brute force: {agree:.0%} of neighbours, max |d err| {err:.1e}")

    for metric in ("cosine", "cityblock", "inner_product"):
        (_, d), t = _timed(lambda m=metric: mmfs.knn(data, queries, k, metric=m), repeat=1)
        print(f"  {metric:>13}: {nq} queries in {t * 1e3:.1f} ms, nearest d={d[0, 0]:.4f}")

    a, b = data[:500], data[: min(n, 20_000)]
    D, t = _timed(lambda: mmfs.cdist(a, b, "euclidean"))
    print(f"  cdist {a.shape[0]} x {b.shape[0]}: {t * 1e3:.1f} ms, dtype {D.dtype}")
    pairs = zip(idx[0], dist[0], strict=True)
    print("  nearest of query 0:", ", ".join(f"{i}:{d:.3f}" for i, d in pairs))
    return 0 if agree == 1.0 else 1


def _info(args: argparse.Namespace) -> int:
    import mmfs

    mmfs.show_config()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmfs", description="mmfs: an embedded, memory-mapped feature database for ML"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the tour on generated data (a few seconds)")
    demo.add_argument("--rows", type=int, default=200_000, help="data rows (default 200,000)")
    demo.add_argument("--dim", type=int, default=128, help="dimensions (default 128)")
    demo.add_argument("--queries", type=int, default=256, help="queries (default 256)")
    demo.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help="print versions, OpenMP and thread configuration")
    info.set_defaults(func=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
