"""Kernel-level oracles that the public-API grid does not reach directly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import mmfs
from mmfs._kernels import _dense

SEED = 20261127


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("m", "n", "K"), [(1, 1, 1), (3, 5, 7), (4, 2, 8), (9, 11, 64), (37, 53, 129), (8, 6, 1000)]
)
def test_gemm_matches_numpy_and_its_portable_path(m: int, n: int, K: int, dtype: Any) -> None:
    rng = np.random.default_rng([SEED, m, n, K])
    A = rng.standard_normal((m, K)).astype(dtype)
    B = rng.standard_normal((n, K)).astype(dtype)
    fast = np.empty((m, n), dtype)
    plain = np.empty((m, n), dtype)
    _dense.gemm_nt(A, B, fast, 2)
    _dense.gemm_nt(A, B, plain, 1, portable=True)
    # The AVX2 and the portable C paths run the same fused multiply-adds in the same
    # order, so they agree to the bit (not merely within rounding).
    assert np.array_equal(fast, plain)
    ref = A.astype(np.float64) @ B.T.astype(np.float64)
    scale = np.abs(A).astype(np.float64) @ np.abs(B).T.astype(np.float64)
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(fast - ref) <= 2 * K * eps * scale + 1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_element_does_not_depend_on_tiling(dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    A = rng.standard_normal((70, 33)).astype(dtype)
    B = rng.standard_normal((90, 33)).astype(dtype)
    full = np.empty((70, 90), dtype)
    _dense.gemm_nt(A, B, full, 2)
    for rows in (slice(0, 1), slice(5, 8), slice(13, 70)):
        part = np.empty((A[rows].shape[0], 90), dtype)
        _dense.gemm_nt(np.ascontiguousarray(A[rows]), B, part, 1)
        assert np.array_equal(part, full[rows])


@pytest.mark.parametrize(
    "metric", ["euclidean", "sqeuclidean", "cosine", "inner_product", "mahalanobis"]
)
def test_cdist_does_not_depend_on_blas_threads(metric: str) -> None:
    """BLAS sums differently on 1 and 2 threads; mmfs's GEMM routes must not."""
    rng = np.random.default_rng(SEED)
    A = rng.standard_normal((300, 40)).astype(np.float32)
    B = rng.standard_normal((2000, 40)).astype(np.float32)
    with threadpool_limits(1, user_api="blas"):
        one = mmfs.cdist(A, B, metric, n_threads=1)
    with threadpool_limits(2, user_api="blas"):
        two = mmfs.cdist(A, B, metric, n_threads=2)
    assert np.array_equal(one, two)


def test_stream_sum_is_a_sum() -> None:
    x = np.random.default_rng(SEED).random(100_003, dtype=np.float32)
    for threads in (1, 2, 3):
        assert _dense.stream_sum(x, threads) == pytest.approx(float(x.sum(dtype=np.float64)))
