"""mmfs.knn and mmfs.radius against brute force: the full float64 distance matrix from
scipy (helpers.ref_cdist), sorted by (distance, index) with NaN last.

Where float32 rounding can reorder (near-)equal distances the comparison is tie-tolerant
(helpers.assert_knn_equivalent); where the ties are exact (duplicated rows) the indices
must equal the reference exactly, since the kernel breaks ties by the lower index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import METRIC_CASES, MetricCase, assert_knn_equivalent, make_data, ref_cdist, ref_knn

import mmfs

RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
DTYPES = [np.float32, np.float64]
SEED = 7
ALL = [pytest.param(c, id=c.id) for c in METRIC_CASES]
# Metrics whose parameters come from the rows (seuclidean without V=, mahalanobis without
# VI=) depend on which queries come with the data, by scipy's definition.
FIXED = [pytest.param(c, id=c.id) for c in METRIC_CASES if not c.estimates]


def tolerances(
    case: MetricCase, dtype: Any, Q: np.ndarray, X: np.ndarray, kw: dict[str, Any]
) -> tuple[float, float]:
    """(rtol, atol) for comparing distances of this metric against the reference."""
    rtol = RTOL[np.dtype(dtype)]
    atol = 0.0
    if case.metric == "cosine":
        # scipy's 1 - u.v/(|u||v|) is only good to ~1e-16 absolute (the reference's floor).
        atol = 1e-12 if np.dtype(dtype) == np.float64 else 1e-7
    elif case.metric == "inner_product":
        # a dot product cancels: its rounding error scales with |q| |x|, not with |q.x|.
        atol = rtol * float(np.linalg.norm(Q, axis=1).max() * np.linalg.norm(X, axis=1).max())
    elif case.indefinite:
        # VI not positive definite: d^2 is a difference whose rounding error scales with
        # |q-x|^T |VI| |q-x|; |d1 - d2| <= sqrt(|d1^2 - d2^2|) bounds the error of d.
        scale = float(np.max(np.abs(Q[:, None, :] - X[None, :, :]).sum(axis=2))) ** 2
        atol = float(np.sqrt(rtol * scale * float(np.abs(kw["VI"]).max())))
    return rtol, atol


def setup(
    case: MetricCase, dtype: Any, n: int, nq: int, K: int, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    rng = np.random.default_rng([seed, n, nq, K])
    X = make_data(case, rng, n, K, dtype)
    Q = make_data(case, rng, nq, K, dtype)
    return X, Q, case.kwargs(K, rng)


def check_knn(case: MetricCase, X: Any, Q: Any, k: int, kw: dict[str, Any], **opts: Any):
    idx, dist = mmfs.knn(X, Q, k, metric=case.metric, **kw, **opts)
    Q2 = np.atleast_2d(np.asarray(Q))
    dtype = np.result_type(np.asarray(X).dtype, Q2.dtype)
    dtype = np.float32 if dtype == np.float32 else np.float64
    assert idx.dtype == np.int64
    assert dist.dtype == np.dtype(dtype)
    assert idx.shape == dist.shape == (Q2.shape[0], k)
    full = ref_cdist(Q2, X, case.metric, **kw)
    ref_idx, ref_dist = ref_knn(full, k)
    rtol, atol = tolerances(case, dtype, np.asarray(Q2, float), np.asarray(X, float), kw)
    assert_knn_equivalent(idx, dist, ref_idx, ref_dist, rtol, atol, full_dist=full)
    return idx, dist


# --------------------------------------------------------------------------------------
# knn against brute force
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("nq", [3, 12])
@pytest.mark.parametrize("k", [1, 10])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL)
def test_knn_matches_brute_force(case: MetricCase, dtype: Any, k: int, nq: int) -> None:
    X, Q, kw = setup(case, dtype, 80, nq, 6)
    check_knn(case, X, Q, k, kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL)
def test_knn_k_larger_than_rows_pads(case: MetricCase, dtype: Any) -> None:
    n, k = 7 if not case.estimates else 12, 15
    X, Q, kw = setup(case, dtype, n, 4, 3)
    idx, dist = check_knn(case, X, Q, k, kw)
    assert np.all(idx[:, n:] == -1)
    assert np.all(dist[:, n:] == np.inf)
    assert np.all(np.sort(idx[:, :n], axis=1) == np.arange(n))


@pytest.mark.parametrize("nq", [4, 20])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL)
def test_knn_exact_duplicates_break_ties_by_lower_index(
    case: MetricCase, dtype: Any, nq: int
) -> None:
    rng = np.random.default_rng([SEED, nq])
    K = 6
    distinct = make_data(case, rng, 15, K, dtype)
    X = distinct[rng.integers(0, 15, 240)]
    Q = make_data(case, rng, nq, K, dtype)
    Q[0] = X[17]  # a query that equals many rows
    kw = case.kwargs(K, rng)
    full = ref_cdist(Q, X, case.metric, **kw)
    for k in (1, 10, 33):
        idx, dist = mmfs.knn(X, Q, k, metric=case.metric, **kw)
        ref_idx, ref_dist = ref_knn(full, k)
        if case.binary or case.indefinite:
            # counts (hamming, jaccard) tie between distinct rows too, and an indefinite VI
            # has near-zero forms: compare tie-tolerantly, exact for duplicates below
            rtol, atol = tolerances(case, dtype, Q.astype(float), X.astype(float), kw)
            assert_knn_equivalent(idx, dist, ref_idx, ref_dist, rtol, atol, full_dist=full)
        else:
            np.testing.assert_array_equal(idx, ref_idx)
        # duplicates of one row come out in increasing index order, whatever the metric
        for q in range(nq):
            for j in range(1, k):
                if dist[q, j] == dist[q, j - 1] and np.array_equal(
                    X[idx[q, j]], X[idx[q, j - 1]], equal_nan=True
                ):
                    assert idx[q, j] > idx[q, j - 1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FIXED)
def test_knn_nan_rows_rank_after_every_number(case: MetricCase, dtype: Any) -> None:
    X, Q, kw = setup(case, dtype, 30, 10, 5)
    nan_rows = [2, 11, 12, 29]
    X[2, 0] = X[11, 4] = np.nan
    X[12, :] = np.nan
    X[29, 1] = np.nan
    Q[4, 3] = np.nan  # a NaN query: every distance NaN, so rows in index order
    idx, dist = mmfs.knn(X, Q, 30, metric=case.metric, **kw)
    full = ref_cdist(Q, X, case.metric, **kw)
    full[:, nan_rows] = np.nan  # scipy's chebyshev/hamming/jaccard ignore NaN; we do not
    full[4, :] = np.nan
    for q in range(10):
        if q == 4:
            assert idx[q].tolist() == list(range(30))
            assert np.all(np.isnan(dist[q]))
            continue
        d = dist[q]
        n_nan = int(np.isnan(full[q]).sum())
        assert n_nan >= len(nan_rows)
        assert np.all(np.isnan(d[-n_nan:])), d
        assert not np.any(np.isnan(d[:-n_nan])), d
        assert idx[q, -n_nan:].tolist() == sorted(np.flatnonzero(np.isnan(full[q])).tolist())
    ref_idx, ref_dist = ref_knn(full, 30)
    rtol, atol = tolerances(case, dtype, np.nan_to_num(Q.astype(float)), np.nan_to_num(X), kw)
    assert_knn_equivalent(idx, dist, ref_idx, ref_dist, rtol, atol, full_dist=full)


@pytest.mark.parametrize("case", ALL)
def test_knn_one_dimensional_query_is_one_row(case: MetricCase) -> None:
    X, Q, kw = setup(case, np.float64, 40, 1, 5)
    i1, d1 = mmfs.knn(X, Q[0], 5, metric=case.metric, **kw)
    i2, d2 = mmfs.knn(X, Q, 5, metric=case.metric, **kw)
    assert i1.shape == (1, 5)
    assert np.array_equal(i1, i2)
    assert np.array_equal(d1, d2, equal_nan=True)
    check_knn(case, X, Q[0], 5, kw)


@pytest.mark.parametrize("nq", [1, 3, 50])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FIXED)
def test_knn_batched_queries_equal_single_queries(case: MetricCase, dtype: Any, nq: int) -> None:
    """50 float queries take the BLAS-filtered route, 1 and 3 the direct one: the answer
    must not depend on it."""
    X, Q, kw = setup(case, dtype, 300, nq, 24)
    X[100] = X[50]  # an exact tie
    Q[0] = X[50]
    idx, dist = check_knn(case, X, Q, 10, kw)
    for i in range(nq):
        ii, dd = mmfs.knn(X, Q[i : i + 1], 10, metric=case.metric, **kw)
        assert np.array_equal(ii[0], idx[i]), (i, ii[0], idx[i])
        assert np.array_equal(dd[0], dist[i], equal_nan=True), (i, dd[0], dist[i])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL)
def test_knn_tiny_working_memory_walks_blocks(case: MetricCase, dtype: Any) -> None:
    X, Q, kw = setup(case, dtype, 700, 10, 8)
    X[650] = X[3]  # a tie across blocks
    Q[1] = X[3]
    i0, d0 = mmfs.knn(X, Q, 12, metric=case.metric, **kw)
    i1, d1 = mmfs.knn(X, Q, 12, metric=case.metric, working_memory=4096, **kw)
    assert np.array_equal(i0, i1)
    assert np.array_equal(d0, d1, equal_nan=True)
    check_knn(case, X, Q, 12, kw, working_memory=4096)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL)
def test_knn_thread_counts_identical(case: MetricCase, dtype: Any) -> None:
    X, Q, kw = setup(case, dtype, 900, 20, 16)
    runs = [mmfs.knn(X, Q, 10, metric=case.metric, n_threads=t, **kw) for t in (1, 2, None)]
    for i, d in runs[1:]:
        assert np.array_equal(i, runs[0][0])
        assert np.array_equal(d, runs[0][1], equal_nan=True)
    check_knn(case, X, Q, 10, kw, n_threads=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FIXED)
def test_knn_memmap_data(case: MetricCase, dtype: Any, tmp_path) -> None:
    X, Q, kw = setup(case, dtype, 200, 9, 7)
    path = tmp_path / "data.bin"
    X.tofile(path)
    mm = np.memmap(path, dtype=dtype, mode="r", shape=X.shape)
    i0, d0 = mmfs.knn(X, Q, 5, metric=case.metric, **kw)
    i1, d1 = check_knn(case, mm, Q, 5, kw)
    assert np.array_equal(i0, i1)
    assert np.array_equal(d0, d1, equal_nan=True)
    ri, rd = mmfs.radius(mm, Q, float(np.nanmedian(d0)), metric=case.metric, **kw)
    ri0, rd0 = mmfs.radius(X, Q, float(np.nanmedian(d0)), metric=case.metric, **kw)
    for a, b in zip(ri + rd, ri0 + rd0, strict=True):
        assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "inner_product", "cityblock"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_knn_larger_case(metric: str, dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((50_000, 64)).astype(dtype)
    Q = rng.standard_normal((20, 64)).astype(dtype)
    Q[0] = X[12_345]
    idx, dist = mmfs.knn(X, Q, 10, metric=metric)
    full = ref_cdist(Q, X, metric)
    ref_idx, ref_dist = ref_knn(full, 10)
    case = next(c for c in METRIC_CASES if c.id == metric)
    rtol, atol = tolerances(case, dtype, Q.astype(float), X.astype(float), {})
    assert_knn_equivalent(idx, dist, ref_idx, ref_dist, rtol, atol, full_dist=full)
    if metric != "inner_product":
        assert idx[0, 0] == 12_345


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8])
@pytest.mark.parametrize("metric", ["hamming", "jaccard"])
def test_knn_boolean_data(metric: str, dtype: Any) -> None:
    rng = np.random.default_rng(SEED)
    X = (rng.random((300, 70)) < 0.3).astype(dtype)
    Q = (rng.random((9, 70)) < 0.3).astype(dtype)
    idx, dist = mmfs.knn(X, Q, 10, metric=metric)
    assert dist.dtype == np.float64
    full = ref_cdist(Q, X, metric)
    ref_idx, ref_dist = ref_knn(full, 10)
    # counts over 70 bits: equal counts give bit-equal distances, so ties are exact
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-12, atol=0)


def test_knn_custom_and_registered_metric() -> None:
    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((150, 4))
    Q = rng.standard_normal((6, 4))

    def l3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (np.abs(a[:, None, :] - b[None, :, :]) ** 3).sum(axis=2) ** (1 / 3)

    full = ref_cdist(Q, X, "minkowski", p=3)
    ref_idx, ref_dist = ref_knn(full, 7)
    idx, dist = mmfs.knn(X, Q, 7, metric=l3, working_memory=4096)
    assert_knn_equivalent(idx, dist, ref_idx, ref_dist, 1e-12, full_dist=full)
    mmfs.register_metric("test_knn_l3", l3)
    idx2, dist2 = mmfs.knn(X, Q, 7, metric="test_knn_l3")
    assert np.array_equal(idx2, idx)
    assert np.array_equal(dist2, dist)
    ri, rd = mmfs.radius(X, Q, 1.5, metric="test_knn_l3")
    for q in range(6):
        assert ri[q].tolist() == sorted(np.flatnonzero(full[q] <= 1.5), key=lambda j: full[q, j])
        np.testing.assert_allclose(rd[q], full[q, ri[q]], rtol=1e-12)


# --------------------------------------------------------------------------------------
# radius
# --------------------------------------------------------------------------------------


def check_radius(case, X, Q, r, kw, rtol, atol):
    idx, dist = mmfs.radius(X, Q, r, metric=case.metric, **kw)
    assert isinstance(idx, list)
    assert isinstance(dist, list)
    assert len(idx) == len(dist) == Q.shape[0]
    full = ref_cdist(Q, X, case.metric, **kw)
    ct = np.float32 if X.dtype == Q.dtype == np.float32 else np.float64
    for q in range(Q.shape[0]):
        i, d = idx[q], dist[q]
        assert i.dtype == np.int64
        assert d.dtype == np.dtype(ct)
        assert i.shape == d.shape
        # sorted by (distance, index), no repeats, all within r (inclusive)
        assert np.array_equal(np.lexsort((i, d)), np.arange(i.size))
        assert np.unique(i).size == i.size
        assert np.all(d <= r)
        # distances are the reference's
        ref = full[q, i]
        assert np.all(np.abs(d - ref) <= atol + rtol * np.abs(ref)), (q, d, ref)
        # the set: everything clearly inside, nothing clearly outside (a row within
        # rounding of r may go either way)
        fq = full[q]
        tol = atol + rtol * np.abs(fq)
        with np.errstate(invalid="ignore"):
            inside = np.flatnonzero(fq <= r - tol)
            outside = np.flatnonzero(~(fq <= r + tol))
        got = set(i.tolist())
        assert set(inside.tolist()) <= got, (q, sorted(set(inside.tolist()) - got))
        assert not (got & set(outside.tolist())), (q, sorted(got & set(outside.tolist())))
    return idx, dist, full


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ALL)
def test_radius_matches_brute_force(case: MetricCase, dtype: Any) -> None:
    X, Q, kw = setup(case, dtype, 120, 6, 5)
    Q[0] = X[10]  # distance 0 to row 10
    X[40] = X[10]  # ... and to row 40
    rtol, atol = tolerances(case, dtype, Q.astype(float), X.astype(float), kw)
    full = ref_cdist(Q, X, case.metric, **kw)
    fin = np.sort(full[np.isfinite(full)])
    # a radius in the widest gap around the median distance, away from any distance
    mid = fin.size // 2
    lo = max(1, mid - 30)
    gap = int(np.argmax(np.diff(fin[lo : mid + 30]))) + lo
    r_mid = float(0.5 * (fin[gap] + fin[gap + 1]))
    for r in (0.0, r_mid, np.inf):
        idx, dist, _ = check_radius(case, X, Q, r, kw, rtol, atol)
        if r == np.inf:  # every row with a number for a distance
            for q in range(Q.shape[0]):
                assert idx[q].size == int(np.sum(~np.isnan(full[q])))
        if r == 0.0 and case.metric != "inner_product" and not case.indefinite:
            assert {10, 40} <= set(idx[0].tolist())
            assert np.all(dist[0][:2] == 0)


def test_radius_is_inclusive_and_excludes_nan() -> None:
    X = np.array([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0], [np.nan, 0.0], [5.0, 0.0]])
    for dtype in DTYPES:
        idx, dist = mmfs.radius(X.astype(dtype), np.zeros((1, 2), dtype), 5.0)
        assert idx[0].tolist() == [1, 0, 4]  # 5.0 exactly is within r=5; ties by index
        assert dist[0].tolist() == [0.0, 5.0, 5.0]
        idx, _ = mmfs.radius(X.astype(dtype), np.zeros(2, dtype), np.inf)
        assert idx[0].tolist() == [1, 0, 4, 2]  # NaN is never within any radius


def test_radius_empty_results_and_tiny_working_memory() -> None:
    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((500, 6))
    Q = rng.standard_normal((4, 6)) + 100.0
    idx, dist = mmfs.radius(X, Q, 1.0)
    assert all(i.size == 0 and i.dtype == np.int64 for i in idx)
    assert all(d.size == 0 for d in dist)
    Q = rng.standard_normal((4, 6))
    a = mmfs.radius(X, Q, 2.5)
    b = mmfs.radius(X, Q, 2.5, working_memory=4096)
    c = mmfs.radius(X, Q, 2.5, n_threads=1)
    for x, y, z in zip(a[0] + a[1], b[0] + b[1], c[0] + c[1], strict=True):
        assert np.array_equal(x, y)
        assert np.array_equal(x, z)
    i0, _ = mmfs.radius(np.empty((0, 6)), Q, 1.0)
    assert [i.size for i in i0] == [0, 0, 0, 0]
