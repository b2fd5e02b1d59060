"""Sparse CSR distances and row products against scipy oracles on densified float64 data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial.distance import cdist as _scipy_cdist

import mmfs
from mmfs.csr import SPARSE_METRICS, row_products
from mmfs.errors import DimensionError, MetricError, ParameterError

METRICS = list(SPARSE_METRICS)
PAIRINGS = ["csr-csr", "csr-dense", "dense-csr"]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def scipy_cdist(A: np.ndarray, B: np.ndarray, metric: Any) -> np.ndarray:
    return _scipy_cdist(A, B, metric)


# --------------------------------------------------------------------------------------
# Data and oracles
# --------------------------------------------------------------------------------------


def structured(rng: np.random.Generator, K: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Dense float64 A (12, K), B (10, K) whose rows exercise every sparsity situation."""

    def rows(n: int) -> np.ndarray:
        X = rng.standard_normal((n, K)) * (rng.random((n, K)) < 0.2)
        return X

    A, B = rows(12), rows(10)
    A[0] = 0.0  # empty rows on both sides
    B[0] = 0.0
    B[1] = A[1]  # identical rows
    B[2] = A[2] * (1.0 + 1e-9 * rng.standard_normal(K))  # near-identical, same pattern
    A[3], B[3] = 0.0, 0.0  # disjoint patterns
    A[3, :10] = rng.standard_normal(10)
    B[3, 20:30] = rng.standard_normal(10)
    A[4], B[4] = 0.0, 0.0  # overlapping patterns
    A[4, :20] = rng.standard_normal(20)
    B[4, 10:30] = rng.standard_normal(20)
    B[5] = A[5]  # near-identical, one tiny extra coordinate in b's pattern
    B[5, np.flatnonzero(A[5] == 0)[0]] = 1e-8
    A[6] = 3.0 * A[7]  # parallel rows of different lengths (cosine 0)
    B[6] = A[7]
    A[8, :] = 0.0  # a row with a single entry
    A[8, 5] = 2.5
    return A, B


def to_csr(X: np.ndarray, index: Any, cls: Any = sp.csr_array) -> Any:
    S = cls(X)
    S.indices = S.indices.astype(index)
    S.indptr = S.indptr.astype(index)
    assert S.indices.dtype == index
    assert S.indptr.dtype == index
    return S


def dense(X: Any) -> np.ndarray:
    """Densified float64 copy of a dense or sparse operand."""
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)


def reference(A: np.ndarray, B: np.ndarray, metric: str) -> np.ndarray:
    """scipy's distances (inner_product: -(A @ B.T)), zero rows at cosine 1.0."""
    if metric == "inner_product":
        return -(A @ B.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = scipy_cdist(A, B, metric)
    if metric == "cosine":
        zero_a = ~np.any(A != 0, axis=1)
        zero_b = ~np.any(B != 0, axis=1)
        ref[zero_a, :] = 1.0
        ref[:, zero_b] = 1.0
    return ref


def tolerance(A: np.ndarray, B: np.ndarray, metric: str, dtype: Any) -> tuple[float, Any]:
    """(rtol, atol): atol only where the reference itself can be ~0 by cancellation."""
    rtol = RTOL[dtype]
    if metric == "inner_product":
        scale = np.outer(np.linalg.norm(A, axis=1), np.linalg.norm(B, axis=1))
        return rtol, rtol * scale
    if metric == "cosine":
        return rtol, rtol * (0.1 if dtype == np.float64 else 1.0)
    return rtol, 0.0


def assert_close(got: np.ndarray, ref: np.ndarray, rtol: float, atol: Any = 0.0) -> None:
    """|got - ref| <= atol + rtol |ref| elementwise (atol may be an array); NaN == NaN."""
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape
    with np.errstate(invalid="ignore"):
        err = np.abs(got - ref)
        ok = (err <= atol + rtol * np.abs(ref)) | (got == ref) | (np.isnan(got) & np.isnan(ref))
    if not ok.all():
        i = np.argwhere(~ok)[0]
        bound = np.broadcast_to(atol, ref.shape)[tuple(i)] + rtol * abs(ref[tuple(i)])
        raise AssertionError(
            f"{(~ok).sum()} of {ok.size} differ; first at {tuple(i)}: got {got[tuple(i)]!r}, "
            f"expected {ref[tuple(i)]!r} (allowed {bound:.3g})"
        )


def check(got: np.ndarray, A: np.ndarray, B: np.ndarray, metric: str, dtype: Any) -> None:
    ref = reference(A, B, metric)
    rtol, atol = tolerance(A, B, metric, dtype)
    assert_close(got, ref, rtol, atol)


def operands(
    A: np.ndarray, B: np.ndarray, pairing: str, dtype: Any, index: Any, cls: Any = sp.csr_array
) -> tuple[Any, Any]:
    A, B = A.astype(dtype), B.astype(dtype)
    a_sparse, b_sparse = pairing.split("-")[0] == "csr", pairing.split("-")[1] == "csr"
    return (
        to_csr(A, index, cls) if a_sparse else A,
        to_csr(B, index, cls) if b_sparse else B,
    )


# --------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [sp.csr_array, sp.csr_matrix])
@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("metric", METRICS)
def test_grid(metric: str, pairing: str, dtype: Any, index: Any, cls: Any) -> None:
    rng = np.random.default_rng(20240611)
    A, B = structured(rng)
    XA, XB = operands(A, B, pairing, dtype, index, cls)
    got = mmfs.cdist(XA, XB, metric)
    assert got.dtype == dtype
    check(got, dense(XA), dense(XB), metric, dtype)


@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("metric", METRICS)
def test_identical_rows_are_exact(metric: str, pairing: str) -> None:
    rng = np.random.default_rng(1)
    A, _ = structured(rng)
    XA, XB = operands(A, A, pairing, np.float64, np.int32)
    got = mmfs.cdist(XA, XB, metric)
    diag = np.diagonal(got)
    if metric == "inner_product":
        np.testing.assert_allclose(diag, -np.sum(A * A, axis=1), rtol=1e-12)
    elif metric == "cosine":
        zero = ~np.any(A != 0, axis=1)
        assert np.all(diag[zero] == 1.0)
        assert np.all(np.abs(diag[~zero]) <= 1e-15)
    else:
        assert np.all(diag == 0.0)


@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cityblock"])
def test_near_identical_rows_keep_relative_precision(metric: str, pairing: str) -> None:
    # |a|^2 + |b|^2 - 2ab would lose every digit here; the union sums must not.
    rng = np.random.default_rng(2)
    A = (rng.standard_normal((6, 500)) + 100.0) * (rng.random((6, 500)) < 0.3)
    B = A * (1.0 + 1e-10 * rng.standard_normal(A.shape))
    XA, XB = operands(A, B, pairing, np.float64, np.int64)
    got = mmfs.cdist(XA, XB, metric)
    ref = scipy_cdist(A, B, metric)
    np.testing.assert_allclose(np.diagonal(got), np.diagonal(ref), rtol=1e-12)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


@pytest.mark.parametrize("pairing", PAIRINGS)
def test_dense_side_concentrated_on_the_sparse_pattern(pairing: str) -> None:
    # Dense rows that are (almost) zero outside the sparse row's pattern: the norm trick
    # R = |d|^2 - sum over the pattern cancels and the pair must be recomputed.
    rng = np.random.default_rng(3)
    A = rng.standard_normal((8, 300)) * (rng.random((8, 300)) < 0.1)
    B = A + 1e-7 * rng.standard_normal(A.shape) * (rng.random(A.shape) < 0.02)
    XA, XB = operands(A, B, pairing, np.float64, np.int32)
    for metric in ("euclidean", "sqeuclidean", "cityblock"):
        np.testing.assert_allclose(
            mmfs.cdist(XA, XB, metric), scipy_cdist(A, B, metric), rtol=1e-12
        )


@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("metric", METRICS)
def test_high_dimensional(metric: str, pairing: str) -> None:
    rng = np.random.default_rng(4)
    K = 100_000

    cols = np.stack([np.sort(rng.choice(K, size=50, replace=False)) for _ in range(14)])
    vals = rng.standard_normal((14, 50))
    cols[6], vals[6] = cols[0], vals[0]  # B's first row is A's first: exact 0 / cosine 0
    indptr = np.arange(0, 50 * 6 + 1, 50)
    SA = sp.csr_array((vals[:6].ravel(), cols[:6].ravel(), indptr), shape=(6, K))
    indptr = np.arange(0, 50 * 8 + 1, 50)
    SB = sp.csr_array((vals[6:].ravel(), cols[6:].ravel(), indptr), shape=(8, K))
    A, B = SA.toarray(), SB.toarray()
    XA = SA if pairing.startswith("csr") else A
    XB = SB if pairing.endswith("csr") else B
    check(mmfs.cdist(XA, XB, metric), A, B, metric, np.float64)


# --------------------------------------------------------------------------------------
# Input forms
# --------------------------------------------------------------------------------------


def messy(rng: np.random.Generator, n: int, K: int, index: Any, cls: Any) -> Any:
    """CSR with unsorted indices and duplicate entries (not in canonical format)."""
    data, indices, indptr = [], [], [0]
    for _ in range(n):
        cols = rng.choice(K, size=rng.integers(0, 8), replace=False)
        dup = cols[: len(cols) // 2]
        cols = np.concatenate([cols, dup])
        rng.shuffle(cols)
        data.append(rng.standard_normal(len(cols)))
        indices.append(cols)
        indptr.append(indptr[-1] + len(cols))
    X = cls((np.concatenate(data), np.concatenate(indices), np.array(indptr)), shape=(n, K))
    X.indices = X.indices.astype(index)  # the constructor may narrow int64 to int32
    X.indptr = X.indptr.astype(index)
    assert not X.has_canonical_format
    return X


@pytest.mark.parametrize("cls", [sp.csr_array, sp.csr_matrix])
@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("metric", METRICS)
def test_unsorted_and_duplicate_entries(metric: str, index: Any, cls: Any) -> None:
    rng = np.random.default_rng(5)
    XA, XB = messy(rng, 9, 15, index, cls), messy(rng, 7, 15, index, cls)
    before = [(X.data.copy(), X.indices.copy(), X.indptr.copy()) for X in (XA, XB)]
    A, B = dense(XA), dense(XB)
    for a, b in ((XA, XB), (XA, B), (A, XB)):
        check(mmfs.cdist(a, b, metric), A, B, metric, np.float64)
    for X, (data, indices, indptr) in zip((XA, XB), before, strict=True):
        assert np.array_equal(X.data, data)
        assert np.array_equal(X.indices, indices)
        assert np.array_equal(X.indptr, indptr)
        assert X.indices.dtype == index


@pytest.mark.parametrize("fmt", ["coo", "csc", "lil", "dok"])
def test_other_sparse_formats(fmt: str) -> None:
    rng = np.random.default_rng(6)
    A, B = structured(rng)
    XA = sp.csr_matrix(A).asformat(fmt)
    got = mmfs.cdist(XA, sp.csr_array(B).asformat(fmt), "euclidean")
    check(got, A, B, "euclidean", np.float64)


def test_read_only_inputs() -> None:
    rng = np.random.default_rng(7)
    A, B = structured(rng)
    SA = sp.csr_array(A)
    for arr in (SA.data, SA.indices, SA.indptr, B):
        arr.flags.writeable = False
    for metric in METRICS:
        check(mmfs.cdist(SA, B, metric), A, B, metric, np.float64)
        check(mmfs.cdist(B, SA, metric), B, A, metric, np.float64)


def test_integer_and_boolean_values_compute_in_float64() -> None:
    rng = np.random.default_rng(8)
    A = (rng.random((5, 20)) < 0.3).astype(np.int64) * rng.integers(-3, 4, (5, 20))
    B = rng.random((6, 20)) < 0.3
    got = mmfs.cdist(sp.csr_array(A), sp.csr_array(B), "cityblock")
    assert got.dtype == np.float64
    check(got, A.astype(np.float64), B.astype(np.float64), "cityblock", np.float64)


@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("ma", "mb"), [(0, 4), (4, 0), (0, 0), (1, 1), (1, 5)])
def test_small_shapes(metric: str, pairing: str, ma: int, mb: int) -> None:
    rng = np.random.default_rng(9)
    A = rng.standard_normal((ma, 7)) * (rng.random((ma, 7)) < 0.5)
    B = rng.standard_normal((mb, 7)) * (rng.random((mb, 7)) < 0.5)
    XA, XB = operands(A, B, pairing, np.float64, np.int32)
    got = mmfs.cdist(XA, XB, metric)
    assert got.shape == (ma, mb)
    check(got, A, B, metric, np.float64)


@pytest.mark.parametrize("metric", METRICS)
def test_zero_features(metric: str) -> None:
    got = mmfs.cdist(sp.csr_array((3, 0)), sp.csr_array((2, 0)), metric)
    assert np.all(got == (1.0 if metric == "cosine" else 0.0))


# --------------------------------------------------------------------------------------
# IEEE semantics and extreme magnitudes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("metric", METRICS)
def test_nan_in_nan_out(metric: str, pairing: str) -> None:
    rng = np.random.default_rng(10)
    A = rng.standard_normal((4, 12)) * (rng.random((4, 12)) < 0.4)
    B = rng.standard_normal((5, 12)) * (rng.random((5, 12)) < 0.4)
    A[1, 3] = np.nan  # NaN in a's pattern
    B[2] = 0.0  # zero row facing a NaN row
    B[3, 11] = np.nan
    A[2, 11] = 0.0  # the NaN of b[3] meets an implicit zero of a[2]
    XA, XB = operands(A, B, pairing, np.float64, np.int64)
    got = mmfs.cdist(XA, XB, metric)
    nan = np.zeros(got.shape, dtype=bool)
    nan[1, :] = True
    nan[:, 3] = True
    assert np.array_equal(np.isnan(got), nan)


@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("metric", METRICS)
def test_infinities_follow_the_dense_semantics(metric: str, pairing: str) -> None:
    A = np.zeros((3, 6))
    B = np.zeros((4, 6))
    A[0, 0] = np.inf  # faces implicit zeros and b[1]'s inf
    A[1, 1] = 2.0
    A[2, 2] = -np.inf
    B[0, 1] = 1.0
    B[1, 0] = np.inf
    B[2, 4] = np.inf
    B[3, 2] = 5.0
    XA, XB = operands(A, B, pairing, np.float64, np.int32)
    got = mmfs.cdist(XA, XB, metric)
    with np.errstate(invalid="ignore", over="ignore"):
        if metric == "inner_product":  # elementwise, so 0 * inf is NaN (no BLAS shortcut)
            want = -np.sum(A[:, None, :] * B[None, :, :], axis=2)
        else:  # no zero rows here: scipy's cosine is ours
            want = scipy_cdist(A, B, metric)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_extreme_magnitudes(scale: float, pairing: str) -> None:
    rng = np.random.default_rng(11)
    A = rng.standard_normal((5, 30)) * (rng.random((5, 30)) < 0.4) * scale
    B = rng.standard_normal((6, 30)) * (rng.random((6, 30)) < 0.4) * scale
    XA, XB = operands(A, B, pairing, np.float64, np.int32)
    diff = A[:, None, :] - B[None, :, :]
    m = np.max(np.abs(diff), axis=2)
    ref = m * np.sqrt(np.sum((diff / np.where(m > 0, m, 1.0)[..., None]) ** 2, axis=2))
    np.testing.assert_allclose(mmfs.cdist(XA, XB, "euclidean"), ref, rtol=1e-12)
    np.testing.assert_allclose(
        mmfs.cdist(XA, XB, "cosine"),
        reference(A / scale, B / scale, "cosine"),
        rtol=1e-12,
        atol=1e-13,
    )


# --------------------------------------------------------------------------------------
# out=, dtype=, threads
# --------------------------------------------------------------------------------------


def test_dtype_and_out() -> None:
    rng = np.random.default_rng(12)
    A, B = structured(rng)
    SA32, B32 = sp.csr_array(A.astype(np.float32)), B.astype(np.float32)
    A32, B32d = dense(SA32), dense(B32)

    got = mmfs.cdist(SA32, B32, "euclidean", dtype=np.float64)
    assert got.dtype == np.float64
    check(got, A32, B32d, "euclidean", np.float64)

    got = mmfs.cdist(sp.csr_array(A), B, "cosine", dtype=np.float32)
    assert got.dtype == np.float32
    check(got, A, B, "cosine", np.float32)

    out = np.full((A.shape[0], B.shape[0]), -1.0)
    res = mmfs.cdist(sp.csr_array(A), sp.csr_array(B), "cityblock", out=out)
    assert res is out
    check(out, A, B, "cityblock", np.float64)

    out32 = np.empty((A.shape[0], B.shape[0]), dtype=np.float32)
    res = mmfs.cdist(SA32, B32, "sqeuclidean", out=out32)
    assert res is out32
    check(out32, A32, B32d, "sqeuclidean", np.float32)

    with pytest.raises(ParameterError, match="dtype"):
        mmfs.cdist(SA32, B32, "euclidean", out=np.empty((12, 10)))
    with pytest.raises(DimensionError, match="shape"):
        mmfs.cdist(SA32, B32, "euclidean", out=np.empty((3, 3), dtype=np.float32))
    with pytest.raises(ParameterError, match="dtype"):
        mmfs.cdist(SA32, B32, "euclidean", dtype=np.int32)


@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("metric", METRICS)
def test_thread_count_does_not_change_results(metric: str, pairing: str) -> None:
    # Large enough that the kernels really run on several threads.
    rng = np.random.default_rng(13)
    A = rng.standard_normal((200, 60)) * (rng.random((200, 60)) < 0.3)
    B = rng.standard_normal((150, 60)) * (rng.random((150, 60)) < 0.3)
    B[::7] = A[:150:7]  # some identical pairs: the exact recompute runs in threads too
    XA, XB = operands(A, B, pairing, np.float64, np.int32)
    one = mmfs.cdist(XA, XB, metric, n_threads=1)
    many = mmfs.cdist(XA, XB, metric, n_threads=4)
    assert np.array_equal(one, many)
    check(many, A, B, metric, np.float64)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["chebyshev", "hamming", "jaccard"])
def test_unsupported_metric(metric: str) -> None:
    X = sp.csr_array(np.eye(3))
    with pytest.raises(MetricError, match=r"toarray") as info:
        mmfs.cdist(X, X, metric)
    for name in SPARSE_METRICS:
        assert name in str(info.value)
    with pytest.raises(MetricError, match="minkowski"):
        mmfs.cdist(X, np.eye(3), "minkowski", p=3)


def test_mismatched_features() -> None:
    X, Y = sp.csr_array(np.eye(3)), sp.csr_array(np.eye(4))
    with pytest.raises(DimensionError, match="same number of features"):
        mmfs.cdist(X, Y, "euclidean")
    with pytest.raises(DimensionError, match="same number of features"):
        mmfs.cdist(X, np.eye(4), "cosine")
    with pytest.raises(DimensionError, match="2-D"):
        mmfs.cdist(X, np.ones(3), "cosine")
    with pytest.raises(DimensionError, match="same number of features"):
        row_products(np.eye(4), X)


def test_malformed_csr_is_rejected() -> None:
    X = sp.csr_array(np.eye(3))
    bad = sp.csr_array((X.data, X.indices.copy(), X.indptr), shape=(3, 3))
    bad.indices[1] = 7
    with pytest.raises(ParameterError, match="column indices"):
        mmfs.cdist(bad, X, "euclidean")
    with pytest.raises(ParameterError, match="real numbers"):
        mmfs.cdist(sp.csr_array(np.eye(3, dtype=complex)), X, "euclidean")


# --------------------------------------------------------------------------------------
# Custom metrics, row products, knn
# --------------------------------------------------------------------------------------


def test_custom_metric_gets_csr_blocks() -> None:
    rng = np.random.default_rng(14)
    A, B = structured(rng)
    seen = []

    def neg_dot(a: Any, b: Any) -> np.ndarray:
        seen.append((type(a), type(b)))
        return -np.asarray((a @ b.T).toarray() if sp.issparse(a @ b.T) else a @ b.T)

    got = mmfs.cdist(sp.csr_matrix(A), sp.csr_matrix(B), neg_dot)
    check(got, A, B, "inner_product", np.float64)
    assert seen == [(sp.csr_matrix, sp.csr_matrix)]
    got = mmfs.cdist(sp.csr_array(A), B, neg_dot)
    check(got, A, B, "inner_product", np.float64)
    with pytest.raises(MetricError, match="shape"):
        mmfs.cdist(sp.csr_array(A), B, lambda a, b: np.zeros(3))


@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pairing", [*PAIRINGS, "dense-dense"])
def test_row_products(pairing: str, dtype: Any, index: Any) -> None:
    rng = np.random.default_rng(15)
    A, B = structured(rng)
    XA, XB = operands(A, B, pairing, dtype, index)
    got = row_products(XA, XB)
    assert got.dtype == dtype
    prod = XA @ XB.T
    ref = np.asarray(prod.toarray() if sp.issparse(prod) else prod, dtype=np.float64)
    if dtype == np.float64:  # the oracle: scipy's sparse product, also in float64
        _, atol = tolerance(A, B, "inner_product", dtype)
        assert_close(got, ref, 1e-12, atol)
    check(-got, dense(XA), dense(XB), "inner_product", dtype)


def test_knn_with_sparse_data() -> None:
    rng = np.random.default_rng(16)
    data = sp.csr_array(rng.standard_normal((300, 80)) * (rng.random((300, 80)) < 0.1))
    queries = sp.csr_array(rng.standard_normal((12, 80)) * (rng.random((12, 80)) < 0.1))
    idx, dist = mmfs.knn(data, queries, k=5, metric="cosine")
    ref = reference(queries.toarray(), data.toarray(), "cosine")
    order = np.lexsort((np.broadcast_to(np.arange(300), ref.shape), ref), axis=-1)[:, :5]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(dist, np.take_along_axis(ref, order, axis=1), rtol=1e-12)
