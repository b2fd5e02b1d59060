"""Multi-core scaling of the vector kernels: the same work on 1, 2, 4, ... threads.

    python tools/scaling.py [--threads 1,2,4,8,16] [--rows 1000000] [--repeat 5]

For each thread count it times, best of --repeat:
  floor      a parallel C loop that only reads the 1M x 128 float32 data (stream_sum)
  knn1       exact knn, k=10, one query against that data (direct route)
  knn256     exact knn, k=10, 256 queries (BLAS filter + exact recompute)
  cityblock  cdist 256 x 100,000 x 128 float32 (direct route, compute bound)
  euclidean  cdist 1,000 x 100,000 x 128 float32 (GEMM route)
and prints times, speed-up over one thread, and knn1 / floor.  BLAS threads are set with
threadpoolctl to the same count when it is installed.  The answers are checked to be
identical across thread counts.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import mmfs
from mmfs._kernels import _dense


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(np.array_equal(a, b))


def _blas_limit(n: int) -> contextlib.AbstractContextManager[Any]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(n, user_api="blas")


def main() -> None:
    parser = argparse.ArgumentParser(description="Multi-core scaling of the vector kernels")
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, 128), dtype=np.float32)
    q1 = rng.standard_normal((1, 128), dtype=np.float32)
    q256 = rng.standard_normal((256, 128), dtype=np.float32)
    A = rng.standard_normal((1000, 128), dtype=np.float32)
    B = X[:100_000]
    flat = X.ravel()
    cases: dict[str, Callable[[int], Any]] = {
        "floor": lambda t: _dense.stream_sum(flat, t),
        "knn1": lambda t: mmfs.knn(X, q1, 10, n_threads=t),
        "knn256": lambda t: mmfs.knn(X, q256, 10, n_threads=t),
        "cityblock": lambda t: mmfs.cdist(A[:256], B, "cityblock", n_threads=t),
        "euclidean": lambda t: mmfs.cdist(A, B, "euclidean", n_threads=t),
    }
    print(f"mmfs {mmfs.__version__}; data {X.shape} float32; best of {args.repeat}")
    mmfs.show_config()
    times: dict[str, dict[int, float]] = {name: {} for name in cases}
    answers: dict[str, Any] = {}
    for t in threads:
        with _blas_limit(t):
            for name, fn in cases.items():
                times[name][t], result = _best(lambda fn=fn, t=t: fn(t), args.repeat)
                if name == "floor":
                    continue
                answers.setdefault(name, result)
                assert _same(answers[name], result), f"{name}: other answer on {t} threads"
    head = "case        " + "".join(f"{t:>10d}T" for t in threads)
    print(head)
    for name in cases:
        row = "".join(f"{times[name][t] * 1e3:10.1f}ms" for t in threads)
        print(f"{name:<12}{row}")
        gain = "".join(f"{times[name][threads[0]] / times[name][t]:10.2f}x " for t in threads)
        print(f"{'  speed-up':<12}{gain}")
    ratio = "".join(f"{times['knn1'][t] / times['floor'][t]:10.2f}  " for t in threads)
    print(f"{'knn1/floor':<12}{ratio}")


if __name__ == "__main__":
    main()
