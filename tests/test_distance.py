"""mmfs.cdist against scipy.spatial.distance.cdist (float64, on float64 copies of the
inputs) over a grid of metrics, dtypes, layouts, shapes, magnitudes and dimensions.

Tolerances: float64 results within rtol 1e-12 of the reference, float32 results within
rtol 1e-5.  An absolute tolerance appears only where the reference itself is at the
rounding floor of its own computation; each one says why beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import (
    CASE_BY_ID,
    METRIC_CASES,
    MetricCase,
    make_data,
    ref_cdist,
    ref_cosine_sklearn,
)

import mmfs
from mmfs.errors import DimensionError, MetricError, NotFoundError, ParameterError

F32_MAX = float(np.finfo(np.float32).max)
# Below float32's normal range a result keeps no relative precision (it is subnormal or
# flushed to zero), so a float32 result is held to this absolute floor there.
F32_TINY = float(np.finfo(np.float32).smallest_normal)
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
# scipy's cosine is 1 - u.v / (|u| |v|): its absolute error is ~1e-16 whatever the
# distance, so for (nearly) parallel vectors the reference is only good to ~1e-16
# absolute.  1e-12 (float64) and 1e-7 (float32, about one float32 ulp of 1.0) as allowed.
COSINE_ATOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-7}
DTYPES = [np.float32, np.float64]
SEED = 20240611

ALL = [pytest.param(c, id=c.id) for c in METRIC_CASES]
CONTINUOUS = [pytest.param(c, id=c.id) for c in METRIC_CASES if not c.binary]


def rows_for(case: MetricCase, m: int, n: int, K: int) -> tuple[int, int]:
    """mahalanobis without VI= estimates a K x K covariance: give it enough rows."""
    if case.estimates and case.metric == "mahalanobis":
        extra = max(0, 3 * K + 4 - m - n)
        return m + extra // 2, n + extra - extra // 2
    return m, n


def assert_cdist_matches(
    D: np.ndarray,
    A: Any,
    B: Any,
    case: MetricCase,
    kw: dict[str, Any],
    *,
    ref: np.ndarray | None = None,
) -> None:
    """D must equal the float64 reference within the tolerance of D's dtype."""
    A64 = np.asarray(A, dtype=np.float64)
    B64 = np.asarray(B, dtype=np.float64)
    if ref is None:
        ref = ref_cdist(A64, B64, case.metric, **kw)
    assert D.shape == ref.shape
    dt = D.dtype
    rtol = RTOL[dt]
    got = D.astype(np.float64)
    atol = np.zeros(ref.shape)
    if case.metric == "cosine":
        atol += COSINE_ATOL[dt]
    if case.metric == "inner_product":
        # A dot product cancels: its rounding error scales with |a| |b|, not with |a.b|.
        with np.errstate(over="ignore"):
            atol += rtol * np.outer(np.linalg.norm(A64, axis=1), np.linalg.norm(B64, axis=1))
    if dt == np.float32:
        with np.errstate(invalid="ignore"):
            over = np.abs(ref) > F32_MAX
        # Where the true value exceeds float32's range the result is inf of its sign ...
        assert np.array_equal(np.isinf(got), over), "inf exactly where the reference overflows"
        assert np.array_equal(got[over], np.where(ref[over] > 0, np.inf, -np.inf))
        atol += F32_TINY
    else:
        over = np.zeros(ref.shape, dtype=bool)
    assert np.array_equal(np.isnan(got), np.isnan(ref)), (
        f"NaN positions differ: got {np.argwhere(np.isnan(got)).tolist()}, "
        f"reference {np.argwhere(np.isnan(ref)).tolist()}"
    )
    ok = np.isfinite(ref) & ~over
    if case.indefinite:
        # VI not positive definite: d^2 = (a-b)^T VI (a-b) is a difference of positive and
        # negative parts and its rounding error scales with |a-b|^T |VI| |a-b|, not with
        # d^2 itself.  Compare squares against that floor.
        delta = A64[:, None, :] - B64[None, :, :]
        VI = np.asarray(kw["VI"], dtype=np.float64)
        scale = np.einsum("ijk,kl,ijl->ij", np.abs(delta), np.abs(VI), np.abs(delta))
        err = np.abs(got[ok] ** 2 - ref[ok] ** 2)
        bound = rtol * scale[ok] + atol[ok]
        assert np.all(err <= bound), f"{case.id}: worst excess {np.max(err - bound)}"
        return
    assert_close(got[ok], ref[ok], rtol, atol[ok], case.id)


def assert_close(got: np.ndarray, ref: np.ndarray, rtol: float, atol: Any, what: str) -> None:
    """|got - ref| <= atol + rtol * |ref| elementwise (atol may be an array)."""
    err = np.abs(got - ref)
    bound = atol + rtol * np.abs(ref)
    bad = ~(err <= bound)
    if bad.any():
        worst = int(np.argmax(np.where(bad, err / np.maximum(bound, 1e-300), 0)))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} differ; worst: got {got.flat[worst]!r}, "
            f"reference {ref.flat[worst]!r}, |diff| {err.flat[worst]:.3g} > "
            f"bound {np.broadcast_to(bound, err.shape).flat[worst]:.3g} (rtol {rtol})"
        )


# --------------------------------------------------------------------------------------
# The main grid: every metric x dtype x dimension
# --------------------------------------------------------------------------------------

DIMS = [1, 2, 3, 7, 16, 100, 1000, 16384, 65536]


def _dim_params():
    for case in METRIC_CASES:
        for K in DIMS:
            if case.max_dim >= K:
                yield pytest.param(case, K, id=f"{case.id}-K{K}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("case", "K"), list(_dim_params()))
def test_metric_grid_dimensions(case: MetricCase, K: int, dtype: Any) -> None:
    rng = np.random.default_rng([SEED, K])
    m, n = (7, 9) if K <= 1000 else (3, 4) if K <= 16384 else (2, 3)
    m, n = rows_for(case, m, n, K)
    A = make_data(case, rng, m, K, dtype)
    B = make_data(case, rng, n, K, dtype)
    kw = case.kwargs(K, rng)
    D = mmfs.cdist(A, B, case.metric, **kw)
    assert D.dtype == np.dtype(dtype)
    assert D.shape == (m, n)
    assert_cdist_matches(D, A, B, case, kw)


# --------------------------------------------------------------------------------------
# Magnitudes, offsets, nonnegative data
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("magnitude", [1e-30, 1e-10, 1.0, 1e10, 1e30])
@pytest.mark.parametrize("case", CONTINUOUS)
def test_extreme_magnitudes(case: MetricCase, magnitude: float, dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    K = 16
    m, n = rows_for(case, 6, 8, K)
    A = (rng.standard_normal((m, K)) * magnitude).astype(dtype)
    B = (rng.standard_normal((n, K)) * magnitude).astype(dtype)
    kw = case.kwargs(K, rng)
    D = mmfs.cdist(A, B, case.metric, **kw)
    assert D.dtype == np.dtype(dtype)
    assert_cdist_matches(D, A, B, case, kw)


def _sized(dims: list[int], cap: int = 1 << 20):
    """(case, K) pairs of the continuous metrics, K within what the metric can hold."""
    for case in METRIC_CASES:
        if case.binary:
            continue
        for K in dims:
            limit = min(case.max_dim, cap) if case.metric == "mahalanobis" else case.max_dim
            if limit >= K:
                yield pytest.param(case, K, id=f"{case.id}-K{K}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["offset", "nonnegative"])
@pytest.mark.parametrize(("case", "K"), list(_sized([128, 4096])))
def test_offset_and_nonnegative_data(case: MetricCase, K: int, kind: str, dtype: Any) -> None:
    rng = np.random.default_rng([SEED, K])
    m, n = rows_for(case, 6, 8, K)
    low = 1000.0 if kind == "offset" else 0.0
    A = rng.uniform(low, low + 1.0, (m, K)).astype(dtype)
    B = rng.uniform(low, low + 1.0, (n, K)).astype(dtype)
    kw = case.kwargs(K, rng)
    D = mmfs.cdist(A, B, case.metric, **kw)
    assert_cdist_matches(D, A, B, case, kw)


# --------------------------------------------------------------------------------------
# Zero, identical and nearly identical vectors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL)
def test_zero_vectors(case: MetricCase, dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    K = 5
    m, n = rows_for(case, 6, 7, K)
    A = make_data(case, rng, m, K, dtype)
    B = make_data(case, rng, n, K, dtype)
    A[[0, 2]] = 0
    B[1] = 0
    kw = case.kwargs(K, rng)
    D = mmfs.cdist(A, B, case.metric, **kw)
    if case.metric == "cosine":
        # Documented deviation from scipy (which gives NaN): a zero vector is at 1.0 from
        # everything, another zero vector included -- sklearn's cosine_distances.
        assert np.all(D[[0, 2], :] == 1.0)
        assert np.all(D[:, 1] == 1.0)
        assert_cdist_matches(D, A, B, case, kw, ref=ref_cosine_sklearn(A, B))
    else:
        assert_cdist_matches(D, A, B, case, kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL)
def test_identical_vectors_are_at_exactly_zero(case: MetricCase, dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    K = 10
    m, _ = rows_for(case, 12, 0, K)
    A = make_data(case, rng, m, K, dtype)
    B = A.copy()
    kw = case.kwargs(K, rng)
    D = mmfs.cdist(A, B, case.metric, **kw)
    assert_cdist_matches(D, A, B, case, kw)
    if case.metric != "inner_product":
        assert np.all(np.diagonal(D) == 0.0), np.diagonal(D)
    if case.metric not in ("inner_product",) and not case.indefinite:
        assert not np.any(np.isnan(D))
        assert np.all(D >= 0.0)
    # the same object on both sides
    assert np.array_equal(mmfs.cdist(A, A, case.metric, **kw), D, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("case", "K"), list(_sized([3, 64, 1000], cap=64)))
def test_near_identical_vectors(case: MetricCase, K: int, dtype: Any) -> None:
    rng = np.random.default_rng([SEED, K])
    m, _ = rows_for(case, 9, 0, K)
    A = rng.standard_normal((m, K)).astype(dtype)
    B = (A + 1e-6 * rng.standard_normal((m, K))).astype(dtype)
    kw = case.kwargs(K, rng)
    D = mmfs.cdist(A, B, case.metric, **kw)
    assert_cdist_matches(D, A, B, case, kw)
    if case.metric in ("euclidean", "sqeuclidean", "cityblock", "chebyshev", "minkowski"):
        assert np.all(D >= 0)


# --------------------------------------------------------------------------------------
# dtypes, layouts, empty and one-row inputs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("da", "db", "expected"),
    [
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
        (np.float32, np.float64, np.float64),
        (np.float64, np.float32, np.float64),
        (np.int64, np.int64, np.float64),
        (np.int32, np.float32, np.float64),
        (np.bool_, np.bool_, np.float64),
    ],
    ids=["f32", "f64", "f32-f64", "f64-f32", "i64", "i32-f32", "bool"],
)
@pytest.mark.parametrize("case", ALL)
def test_result_dtype(case: MetricCase, da: Any, db: Any, expected: Any) -> None:
    rng = np.random.default_rng(SEED)
    K = 6
    m, n = rows_for(case, 5, 7, K)
    if case.binary or da == np.bool_ or db == np.bool_:
        A = (rng.random((m, K)) < 0.4).astype(da)
        B = (rng.random((n, K)) < 0.4).astype(db)
        # no zero vectors (scipy's cosine would give NaN), no constant column (zero
        # variance for seuclidean, a singular covariance for mahalanobis)
        A[np.arange(m), rng.integers(0, K, m)] = 1
        B[np.arange(n), rng.integers(0, K, n)] = 1
    elif np.dtype(da).kind == "i":
        A = rng.integers(1, 6, (m, K)).astype(da)
        B = rng.integers(-5, 6, (n, K)).astype(db)
    else:
        A = rng.standard_normal((m, K)).astype(da)
        B = rng.standard_normal((n, K)).astype(db)
    kw = case.kwargs(K, rng)
    D = mmfs.cdist(A, B, case.metric, **kw)
    assert D.dtype == np.dtype(expected)
    assert_cdist_matches(D, A, B, case, kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["F", "strided", "memmap"])
@pytest.mark.parametrize("case", ALL)
def test_layouts(case: MetricCase, layout: str, dtype: Any, tmp_path) -> None:
    rng = np.random.default_rng(SEED)
    K = 24
    m, n = rows_for(case, 11, 13, K)
    A = make_data(case, rng, m, K, dtype)
    B = make_data(case, rng, n, K, dtype)
    kw = case.kwargs(K, rng)
    expected = mmfs.cdist(A, B, case.metric, **kw)
    if layout == "F":
        A2, B2 = np.asfortranarray(A), np.asfortranarray(B)
        assert not A2.flags.c_contiguous
    elif layout == "strided":
        wide_a = np.zeros((m, 2 * K), dtype=dtype)
        wide_b = np.zeros((n, 2 * K), dtype=dtype)
        wide_a[:, ::2], wide_b[:, ::2] = A, B
        A2, B2 = wide_a[:, ::2], wide_b[:, ::2]
    else:
        pa, pb = tmp_path / "a.bin", tmp_path / "b.bin"
        A.tofile(pa)
        B.tofile(pb)
        A2 = np.memmap(pa, dtype=dtype, mode="r", shape=A.shape)
        B2 = np.memmap(pb, dtype=dtype, mode="r", shape=B.shape)
        assert not A2.flags.writeable
    D = mmfs.cdist(A2, B2, case.metric, **kw)
    assert D.dtype == np.dtype(dtype)
    assert np.array_equal(D, expected, equal_nan=True)
    assert_cdist_matches(D, A, B, case, kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("m", "n"), [(0, 5), (5, 0), (0, 0)])
@pytest.mark.parametrize("case", ALL)
def test_empty_inputs(case: MetricCase, m: int, n: int, dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    K = 4
    A = make_data(case, rng, m, K, dtype)
    B = make_data(case, rng, n, K, dtype)
    kw = case.kwargs(K, rng)
    D = mmfs.cdist(A, B, case.metric, **kw)
    assert D.shape == (m, n)
    assert D.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("side", ["A", "B"])
@pytest.mark.parametrize("case", ALL)
def test_one_row_inputs(case: MetricCase, side: str, dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    K = 4
    many = rows_for(case, 0, 9, K)[1]
    A = make_data(case, rng, 1 if side == "A" else many, K, dtype)
    B = make_data(case, rng, many if side == "A" else 1, K, dtype)
    kw = case.kwargs(K, rng)
    D = mmfs.cdist(A, B, case.metric, **kw)
    assert_cdist_matches(D, A, B, case, kw)
    if not case.estimates:  # one row against one row (nothing to estimate V or VI from)
        D11 = mmfs.cdist(A[:1], B[:1], case.metric, **kw)
        assert_cdist_matches(D11, A[:1], B[:1], case, kw)


# --------------------------------------------------------------------------------------
# NaN in, NaN out, for every metric
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL)
def test_nan_rows_give_nan_for_every_metric(case: MetricCase, dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    K = 6
    m, n = rows_for(case, 5, 7, K)
    A = make_data(case, rng, m, K, dtype)
    B = make_data(case, rng, n, K, dtype)
    A[1, 2] = np.nan
    B[3, 0] = np.nan
    B[5, :] = np.nan
    kw = case.kwargs(K, rng)
    D = mmfs.cdist(A, B, case.metric, **kw)
    assert np.all(np.isnan(D[1, :])), D[1]
    assert np.all(np.isnan(D[:, 3])), D[:, 3]
    assert np.all(np.isnan(D[:, 5])), D[:, 5]
    # every other entry: scipy's answer (scipy itself ignores NaN in chebyshev, hamming
    # and jaccard, which is why the NaN rows are set by hand above).  Metrics that estimate
    # V or VI from the rows see NaN in the estimate, so everything is NaN there.
    ref = ref_cdist(A, B, case.metric, **kw)
    ref[1, :] = np.nan
    ref[:, [3, 5]] = np.nan
    assert_cdist_matches(D, A, B, case, kw, ref=ref)


# --------------------------------------------------------------------------------------
# out=, dtype=, n_threads=
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL)
def test_out_receives_the_result(case: MetricCase, dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    K = 8
    m, n = rows_for(case, 6, 9, K)
    A = make_data(case, rng, m, K, dtype)
    B = make_data(case, rng, n, K, dtype)
    kw = case.kwargs(K, rng)
    out = np.full((m, n), -7.0, dtype=dtype)
    res = mmfs.cdist(A, B, case.metric, out=out, **kw)
    assert res is out
    assert np.array_equal(out, mmfs.cdist(A, B, case.metric, **kw), equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_rejects_bad_buffers(dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    A = rng.standard_normal((4, 3)).astype(dtype)
    B = rng.standard_normal((5, 3)).astype(dtype)
    with pytest.raises(DimensionError, match=r"shape \(4, 5\).*\(5, 4\)"):
        mmfs.cdist(A, B, out=np.empty((5, 4), dtype=dtype))
    with pytest.raises(DimensionError, match="shape"):
        mmfs.cdist(A, B, out=np.empty(20, dtype=dtype))
    other = np.float64 if dtype == np.float32 else np.float32
    with pytest.raises(ParameterError, match="dtype"):
        mmfs.cdist(A, B, out=np.empty((4, 5), dtype=other))
    with pytest.raises(ParameterError, match="C-contiguous"):
        mmfs.cdist(A, B, out=np.empty((5, 4), dtype=dtype).T)
    with pytest.raises(ParameterError, match="C-contiguous"):
        mmfs.cdist(A, B, out=np.empty((4, 10), dtype=dtype)[:, ::2])
    ro = np.empty((4, 5), dtype=dtype)
    ro.flags.writeable = False
    with pytest.raises(ParameterError, match="writeable"):
        mmfs.cdist(A, B, out=ro)
    with pytest.raises(ParameterError, match="numpy array"):
        mmfs.cdist(A, B, out=[[0.0] * 5] * 4)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", ALL)
def test_dtype_float64_on_float32_input(case: MetricCase) -> None:
    rng = np.random.default_rng(SEED)
    K = 12
    m, n = rows_for(case, 6, 9, K)
    A = make_data(case, rng, m, K, np.float32)
    B = make_data(case, rng, n, K, np.float32)
    kw = case.kwargs(K, rng)
    D = mmfs.cdist(A, B, case.metric, dtype=np.float64, **kw)
    assert D.dtype == np.float64
    assert_cdist_matches(D, A, B, case, kw)  # held to float64's rtol 1e-12
    out = np.empty((m, n))
    assert mmfs.cdist(A, B, case.metric, dtype=np.float64, out=out, **kw) is out
    assert np.array_equal(out, D, equal_nan=True)
    D32 = mmfs.cdist(A.astype(np.float64), B, case.metric, dtype=np.float32, **kw)
    assert D32.dtype == np.float32
    assert_cdist_matches(D32, A, B, case, kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL)
def test_thread_counts_give_identical_results(case: MetricCase, dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    K = min(40, case.max_dim)
    m, n = 150, 170
    A = make_data(case, rng, m, K, dtype)
    B = make_data(case, rng, n, K, dtype)
    A[3] = B[5]  # an exact pair
    if not case.binary:
        B[7] = A[9] + 1e-6  # a close pair
    kw = case.kwargs(K, rng)
    d1 = mmfs.cdist(A, B, case.metric, n_threads=1, **kw)
    d2 = mmfs.cdist(A, B, case.metric, n_threads=2, **kw)
    dn = mmfs.cdist(A, B, case.metric, n_threads=None, **kw)
    assert np.array_equal(d1, d2, equal_nan=True)
    assert np.array_equal(d1, dn, equal_nan=True)
    assert_cdist_matches(d1, A, B, case, kw)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bool_hamming_jaccard_match_float_input(dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    for K in (1, 63, 64, 65, 200):
        A = rng.random((9, K)) < 0.3
        B = rng.random((11, K)) < 0.3
        A[0] = False
        B[0] = False
        for metric in ("hamming", "jaccard"):
            Db = mmfs.cdist(A, B, metric)
            assert Db.dtype == np.float64
            Df = mmfs.cdist(A.astype(dtype), B.astype(dtype), metric)
            assert Df.dtype == np.dtype(dtype)
            ref = ref_cdist(A, B, metric)
            np.testing.assert_allclose(Db, ref, rtol=1e-12, atol=0)
            np.testing.assert_allclose(Df, ref, rtol=RTOL[np.dtype(dtype)], atol=0)


# --------------------------------------------------------------------------------------
# Aliases and minkowski special cases
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_minkowski_special_p_equal_named_metrics(dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    A = rng.standard_normal((20, 9)).astype(dtype)
    B = rng.standard_normal((25, 9)).astype(dtype)
    pairs = [(1, "cityblock"), (1.0, "cityblock"), (2, "euclidean"), (np.inf, "chebyshev")]
    for p, name in pairs:
        assert np.array_equal(mmfs.cdist(A, B, "minkowski", p=p), mmfs.cdist(A, B, name))
    assert np.array_equal(mmfs.cdist(A, B, "minkowski"), mmfs.cdist(A, B, "euclidean"))
    for alias, name in [
        ("manhattan", "cityblock"),
        ("l1", "cityblock"),
        ("l2", "euclidean"),
        ("dot", "inner_product"),
        ("EUCLIDEAN", "euclidean"),
    ]:
        assert np.array_equal(mmfs.cdist(A, B, alias), mmfs.cdist(A, B, name))


def test_inner_product_is_negative_dot() -> None:
    rng = np.random.default_rng(SEED)
    A = rng.standard_normal((30, 50))
    B = rng.standard_normal((40, 50))
    D = mmfs.cdist(A, B, "inner_product")
    # atol: a dot product cancels, its rounding error scales with |a| |b|.
    atol = 1e-12 * np.outer(np.linalg.norm(A, axis=1), np.linalg.norm(B, axis=1))
    assert np.all(np.abs(D - (-(A @ B.T))) <= atol)


def test_default_metric_is_euclidean() -> None:
    rng = np.random.default_rng(SEED)
    A = rng.standard_normal((5, 4))
    B = rng.standard_normal((6, 4))
    assert np.array_equal(mmfs.cdist(A, B), mmfs.cdist(A, B, "euclidean"))
    np.testing.assert_allclose(mmfs.cdist(A, B), ref_cdist(A, B, "euclidean"), rtol=1e-12)


def test_cdist_accepts_lists() -> None:
    A = [[0.0, 0.0], [3.0, 4.0]]
    D = mmfs.cdist(A, A)
    np.testing.assert_allclose(D, ref_cdist(A, A, "euclidean"), rtol=1e-12)
    assert D.dtype == np.float64


# --------------------------------------------------------------------------------------
# Custom metrics and the registry
# --------------------------------------------------------------------------------------


def _l4(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.abs(a[:, None, :] - b[None, :, :]) ** 4).sum(axis=2) ** 0.25


@pytest.mark.parametrize("dtype", DTYPES)
def test_custom_callable_is_called_on_blocks(dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    A = rng.standard_normal((40, 5)).astype(dtype)
    B = rng.standard_normal((30, 5)).astype(dtype)
    calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def counting(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        calls.append((a.shape, b.shape))
        return np.abs(a[:, None, :] - b[None, :, :]).sum(axis=2)

    D = mmfs.cdist(A, B, counting)
    assert D.dtype == np.dtype(dtype)
    assert 1 <= len(calls) <= 4, f"called {len(calls)} times for {40 * 30} pairs"
    assert all(len(sa) == 2 and len(sb) == 2 and sa[1] == sb[1] == 5 for sa, sb in calls)
    assert sum(sa[0] * sb[0] for sa, sb in calls) == 40 * 30  # every pair exactly once
    case = CASE_BY_ID["cityblock"]
    assert_cdist_matches(D, A, B, case, {})


def test_custom_callable_over_many_blocks_covers_every_pair_once() -> None:
    rng = np.random.default_rng(SEED)
    # 64 MiB per block: rows of 2000 x 4100 float64 entries make several blocks.
    A = rng.standard_normal((6, 4100))
    B = rng.standard_normal((2100, 4100))
    calls: list[tuple[int, int]] = []

    def counting(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        calls.append((a.shape[0], b.shape[0]))
        return np.abs(a[:, :1] - b[:, :1].T)  # exact, whatever the blocking

    D = mmfs.cdist(A, B, counting)
    assert len(calls) < 6 * 2100
    assert sum(x * y for x, y in calls) == 6 * 2100
    np.testing.assert_array_equal(D, np.abs(A[:, :1] - B[:, :1].T))


def test_custom_callable_bad_shape_is_metric_error() -> None:
    A = np.ones((3, 2))
    B = np.ones((4, 2))
    with pytest.raises(MetricError, match=r"\(3, 4\).*got shape \(4, 3\)"):
        mmfs.cdist(A, B, lambda a, b: np.zeros((b.shape[0], a.shape[0])))
    with pytest.raises(MetricError, match="shape"):
        mmfs.cdist(A, B, lambda a, b: np.zeros(a.shape[0]))


def test_custom_callable_that_raises_is_metric_error() -> None:
    def broken(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    with pytest.raises(MetricError, match="boom"):
        mmfs.cdist(np.ones((2, 2)), np.ones((2, 2)), broken)


def test_custom_callable_takes_no_keywords() -> None:
    with pytest.raises(MetricError, match="keyword"):
        mmfs.cdist(np.ones((2, 2)), np.ones((2, 2)), _l4, p=3)


def test_register_and_unregister_metric() -> None:
    rng = np.random.default_rng(SEED)
    A = rng.standard_normal((8, 4))
    B = rng.standard_normal((9, 4))
    name = "test_l4"
    mmfs.register_metric(name, _l4)
    assert name in mmfs.registered_metrics()
    D = mmfs.cdist(A, B, name)
    np.testing.assert_allclose(D, ref_cdist(A, B, "minkowski", p=4), rtol=1e-12)
    with pytest.raises(MetricError, match="already registered"):
        mmfs.register_metric(name, _l4)
    mmfs.register_metric(name, lambda a, b: np.zeros((len(a), len(b))), overwrite=True)
    assert np.array_equal(mmfs.cdist(A, B, name), np.zeros((8, 9)))
    with pytest.raises(MetricError, match="keyword"):
        mmfs.cdist(A, B, name, p=3)
    mmfs.unregister_metric(name)
    assert name not in mmfs.registered_metrics()
    with pytest.raises(MetricError, match="unknown metric"):
        mmfs.cdist(A, B, name)
    with pytest.raises(NotFoundError, match=name):
        mmfs.unregister_metric(name)


@pytest.mark.parametrize("name", ["euclidean", "cosine", "manhattan", "l2", "inner_product"])
def test_register_builtin_name_is_metric_error(name: str) -> None:
    with pytest.raises(MetricError, match="built-in"):
        mmfs.register_metric(name, _l4)
    with pytest.raises(MetricError, match="built-in"):
        mmfs.register_metric(name, _l4, overwrite=True)


def test_register_rejects_non_callable() -> None:
    with pytest.raises(MetricError, match="callable"):
        mmfs.register_metric("test_nc", 3)  # type: ignore[arg-type]


def test_unknown_metric_lists_choices() -> None:
    A = np.ones((2, 3))
    with pytest.raises(MetricError) as info:
        mmfs.cdist(A, A, "euclidian")
    msg = str(info.value)
    assert "'euclidian'" in msg
    for name in mmfs.METRICS:
        assert name in msg
    mmfs.register_metric("test_mine", _l4)
    with pytest.raises(MetricError, match="test_mine"):
        mmfs.cdist(A, A, "euclidian")
