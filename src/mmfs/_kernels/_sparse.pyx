# cython: freethreading_compatible = True
"""Sparse (CSR) pairwise kernels: row products and distances, never densifying.

Arrays
------
A CSR matrix of n rows and K features arrives as three C-contiguous arrays:

    data[p]     the value of stored entry p (real_t: float or double)
    indices[p]  its column, 0 <= indices[p] < K (index_t: int32 or int64)
    indptr[r]   row r is entries indptr[r] .. indptr[r+1]-1 (index_t, length n+1)

mmfs.csr hands the kernels CSR in canonical form only: within a row the indices are
strictly increasing (sorted, no duplicates), bounds and indptr already checked, data
already in the compute dtype.  A dense operand is a C-contiguous (rows, K) real_t array.
Both operands of one call share one index_t (int32 data stays int32, int64 stays int64).
`out` is the C-contiguous (rows of A, rows of B) result in the compute dtype; every sum is
accumulated in double and rounded once when stored.

Metric codes (METRIC_CODES): DOT is the plain row product (row_products = A @ B.T);
INNER is its negative (inner_product distance); SQEUCLIDEAN, EUCLIDEAN, CITYBLOCK, COSINE.

Algorithm
---------
CSR x CSR (csr_csr).  Output rows are spread over OpenMP threads (dynamic schedule: rows
differ in nnz).  Each thread owns two workspaces of K entries, calloc'ed inside the
parallel block (so untouched pages cost nothing): `w` (double) and `stamp` (Py_ssize_t).
For A row i the thread scatters w[k] = a_k, then for each B row j:

  * dot:       sum over b's entries of w[k] * b_k              -- O(nnz(b))
  * distances: a distance is a sum of f(a_k - b_k) over the UNION of the two patterns
    (f = x^2 for sq/euclidean, |x| for cityblock).  Fast pass, O(nnz(b)):
        E = sum over b's entries of f(w[k] - b_k)             (w[k] = 0 when k not in a)
        R = N_a - sum over b's entries of f(w[k])             (a's entries missing in b)
    with N_a = sum of f(a_k), compensated.  R can cancel (when a lives mostly on b's
    pattern: close pairs), and its error is at most (nnz(b) + 4) u N_a, so when
    R < tau N_a the pair is recomputed exactly over the union:
        sum over b's entries of f(w[k] - b_k)
      + sum over a's entries with stamp[k] != j+1 of f(a_k)
    where the first loop wrote stamp[k] = j+1 for b's pattern.  A stale stamp equal to
    j+1 was written by the same B row j for an earlier A row, so it still means "k is in
    b's pattern": stamps are never reset.
  * cosine:    the same with a_k/|a| and b_k/|b|, halved: 0.5 |a/|a| - b/|b||^2 is
    exactly 1 - cos in real arithmetic and, unlike 1 - dot/(|a||b|), stays accurate for
    nearly parallel rows.
Afterwards the a entries of w are zeroed again (O(nnz(a))).

CSR x dense and dense x CSR (csr_dense; one kernel, `sparse_is_a` says which side is
sparse; every metric here is symmetric, so a pair is always (sparse row s, dense row d)).
Per dense row the kernel first computes, with compensated (Neumaier) summation, the norm
N = sum_k g(d_k) (g = x^2, |x| or (x/|d|)^2).  A pair then costs O(nnz(s)):
      E = sum over s's entries of f(s_k - d_k)      (exact: positive terms)
      R = N - sum over s's entries of g(d_k)        (the dense entries outside s)
      distance = E + R
(the same identity as the CSR x CSR fast pass, with the roles of the two rows swapped).
R is the only cancellation-prone term.  Its error is at most (nnz(s) + 4) u N (u = 2^-53),
so when R < tau N with tau = (nnz(s) + 4) u / target (target = 1e-13 for double, 1e-7
for float results) the pair is recomputed exactly in O(K) by merging the sorted sparse
row into the dense one.  Close pairs, and dense rows that live mostly on s's pattern, are
therefore exact; far pairs cost only the sparse row's length.  When A is the sparse side,
output rows are processed in chunks of ROWS sparse rows with the dense row as the outer
loop, so a dense row's entries are reused from cache across the chunk.

Tolerances.  tau comes from worst-case error bounds of the double accumulators, so the
norm identity is used only where its cancellation error stays below `target` relative;
what remains is the ordinary rounding of a sum of positive terms, as in a direct
computation, plus the final rounding to float32 for float results.  Cosine of nearly
parallel rows is limited, as in the dense path, by the rounding of the normalised entries
(absolute error about u * sqrt(distance)).

IEEE semantics are those of the dense path on the densified data.  NaN anywhere in either
row gives NaN.  inf - inf gives NaN and 0 * inf gives NaN in a product: for dot/inner a row
holding inf or NaN is flagged, and the implicit zeros facing it are taken into account
(stamp check, or the O(K) merge).  Squared sums that overflow or underflow double
(|x| ~ 1e160 or 1e-160) are recomputed scaled by the largest |a_k - b_k|, as in
mmfs_dense.h, so any euclidean distance that fits the output type is returned to full
precision.  Cosine: a zero row has distance 1.0 to everything, itself included (NaN if
the other row holds NaN); results are clipped to [0, 2].

Nothing here raises on user input and the GIL is released for all loops.  The only
failure is a workspace calloc returning NULL, recorded per row in a status array inside
prange and raised as MemoryError after the parallel region.
"""

from cython.parallel cimport parallel, prange
from libc.math cimport fabs, sqrt, INFINITY, NAN
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport calloc, free

import numpy as np

ctypedef fused real_t:
    float
    double

ctypedef fused index_t:
    int32_t
    int64_t

cdef enum:
    SP_DOT = 0
    SP_INNER = 1
    SP_SQEUCLIDEAN = 2
    SP_EUCLIDEAN = 3
    SP_CITYBLOCK = 4
    SP_COSINE = 5

METRIC_CODES = {
    "inner_product": SP_INNER,
    "sqeuclidean": SP_SQEUCLIDEAN,
    "euclidean": SP_EUCLIDEAN,
    "cityblock": SP_CITYBLOCK,
    "cosine": SP_COSINE,
}
DOT = SP_DOT

# Sparse rows per chunk of the CSR x dense loop (they share each dense row while cached).
cdef Py_ssize_t ROWS = 32
# Unit roundoff of the double accumulators.
cdef double _U = 1.1102230246251565e-16
# Squared sums below this may have lost digits to underflow: recompute scaled.
cdef double _LO = 1.0e-270


# --------------------------------------------------------------------------------------
# Row statistics
# --------------------------------------------------------------------------------------


cdef inline double _inv_norm(const real_t *v, Py_ssize_t n) noexcept nogil:
    """1/|v| without overflow (0 for a zero row, NaN when v holds inf or NaN)."""
    cdef double m = 0.0, s = 0.0, x
    cdef Py_ssize_t k
    for k in range(n):
        x = fabs(<double>v[k])
        if x != x:
            return NAN
        if x > m:
            m = x
    if m == 0.0:
        return 0.0
    if m == INFINITY:
        return NAN
    for k in range(n):
        x = <double>v[k] / m
        s += x * x
    return 1.0 / (m * sqrt(s))


cdef inline bint _nonfinite(const real_t *v, Py_ssize_t n) noexcept nogil:
    """True when v holds inf or NaN (0 * x is NaN exactly for those)."""
    cdef double acc = 0.0
    cdef Py_ssize_t k
    for k in range(n):
        acc += 0.0 * <double>v[k]
    return acc != acc


cdef inline double _comp_norm(int metric, const real_t *v, Py_ssize_t n,
                              double scale) noexcept nogil:
    """Neumaier-compensated sum of |v_k| (cityblock) or (v_k * scale)^2 (others).

    Error at most 2u of the result (plus O(n u^2)).  inf or overflow gives NaN, which
    sends every pair of the row to the exact path."""
    cdef double s = 0.0, c = 0.0, x, t
    cdef Py_ssize_t k
    for k in range(n):
        if metric == SP_CITYBLOCK:
            x = fabs(<double>v[k])
        else:
            x = <double>v[k] * scale
            x = x * x
        t = s + x
        if s >= x:
            c += (s - t) + x
        else:
            c += (x - t) + s
        s = t
    return s + c


# --------------------------------------------------------------------------------------
# Sparse row x dense row (sorted sparse indices)
# --------------------------------------------------------------------------------------


cdef inline double _sd_dot_exact(const index_t *idx, const real_t *val, Py_ssize_t nnz,
                                 const real_t *d, Py_ssize_t K) noexcept nogil:
    """sum_k s_k d_k over all K coordinates: implicit zeros meet the dense entries, so
    0 * inf gives NaN as in the dense product."""
    cdef double acc = 0.0
    cdef Py_ssize_t p, q, k, prev = 0
    for p in range(nnz):
        k = idx[p]
        for q in range(prev, k):
            acc += 0.0 * <double>d[q]
        acc += <double>val[p] * <double>d[k]
        prev = k + 1
    for q in range(prev, K):
        acc += 0.0 * <double>d[q]
    return acc


cdef inline double _sd_abs_exact(const index_t *idx, const real_t *val, Py_ssize_t nnz,
                                 const real_t *d, Py_ssize_t K) noexcept nogil:
    """sum_k |s_k - d_k| over all K coordinates."""
    cdef double acc = 0.0
    cdef Py_ssize_t p, q, k, prev = 0
    for p in range(nnz):
        k = idx[p]
        for q in range(prev, k):
            acc += fabs(<double>d[q])
        acc += fabs(<double>val[p] - <double>d[k])
        prev = k + 1
    for q in range(prev, K):
        acc += fabs(<double>d[q])
    return acc


cdef inline double _sd_sq_exact(const index_t *idx, const real_t *val, Py_ssize_t nnz,
                                double ss, const real_t *d, Py_ssize_t K, double sd,
                                double m) noexcept nogil:
    """sum_k ((s_k ss - d_k sd) / m)^2 over all K coordinates."""
    cdef double acc = 0.0, t
    cdef Py_ssize_t p, q, k, prev = 0
    for p in range(nnz):
        k = idx[p]
        for q in range(prev, k):
            t = (<double>d[q] * sd) / m
            acc += t * t
        t = (<double>val[p] * ss - <double>d[k] * sd) / m
        acc += t * t
        prev = k + 1
    for q in range(prev, K):
        t = (<double>d[q] * sd) / m
        acc += t * t
    return acc


cdef inline double _sd_maxdiff(const index_t *idx, const real_t *val, Py_ssize_t nnz,
                               const real_t *d, Py_ssize_t K) noexcept nogil:
    """max_k |s_k - d_k| over all K coordinates."""
    cdef double m = 0.0, t
    cdef Py_ssize_t p, q, k, prev = 0
    for p in range(nnz):
        k = idx[p]
        for q in range(prev, k):
            t = fabs(<double>d[q])
            if t > m:
                m = t
        t = fabs(<double>val[p] - <double>d[k])
        if t > m:
            m = t
        prev = k + 1
    for q in range(prev, K):
        t = fabs(<double>d[q])
        if t > m:
            m = t
    return m


cdef inline double _sd_euclidean_exact(bint squared, const index_t *idx, const real_t *val,
                                       Py_ssize_t nnz, const real_t *d,
                                       Py_ssize_t K) noexcept nogil:
    """(Squared) euclidean over all K coordinates, scaled when the squares over- or
    underflow."""
    cdef double d2 = _sd_sq_exact(idx, val, nnz, 1.0, d, K, 1.0, 1.0), m
    if d2 != d2 or (d2 >= _LO and d2 < INFINITY):
        return d2 if squared else sqrt(d2)
    m = _sd_maxdiff(idx, val, nnz, d, K)
    if m == 0.0 or m == INFINITY:
        return m * m if squared else m
    m = m * sqrt(_sd_sq_exact(idx, val, nnz, 1.0, d, K, 1.0, m))
    return m * m if squared else m


cdef inline double _sd_pair(int metric, const index_t *idx, const real_t *val,
                            Py_ssize_t nnz, double s_inv, const real_t *d, Py_ssize_t K,
                            double d_norm, double d_inv, bint d_bad,
                            double target) noexcept nogil:
    """The distance (or product) of one sparse row and one dense row."""
    cdef double acc = 0.0, E = 0.0, S = 0.0, R, y, t
    cdef double tau = (nnz + 4) * _U / target
    cdef Py_ssize_t p
    if metric == SP_DOT or metric == SP_INNER:
        if d_bad:
            acc = _sd_dot_exact(idx, val, nnz, d, K)
        else:
            for p in range(nnz):
                acc += <double>val[p] * <double>d[idx[p]]
        return acc if metric == SP_DOT else -acc
    if metric == SP_COSINE:
        if s_inv != s_inv or d_inv != d_inv:
            return NAN
        if s_inv == 0.0 or d_inv == 0.0:
            return 1.0
        for p in range(nnz):
            y = <double>d[idx[p]] * d_inv
            t = <double>val[p] * s_inv - y
            E += t * t
            S += y * y
        R = d_norm - S
        if d_norm < INFINITY and R >= tau * d_norm:
            acc = 0.5 * (E + R)
        else:
            acc = 0.5 * _sd_sq_exact(idx, val, nnz, s_inv, d, K, d_inv, 1.0)
        return 0.0 if acc < 0.0 else (2.0 if acc > 2.0 else acc)
    if metric == SP_CITYBLOCK:
        for p in range(nnz):
            y = <double>d[idx[p]]
            E += fabs(<double>val[p] - y)
            S += fabs(y)
        R = d_norm - S
        if d_norm < INFINITY and R >= tau * d_norm:
            return E + R
        return _sd_abs_exact(idx, val, nnz, d, K)
    # sqeuclidean, euclidean
    for p in range(nnz):
        y = <double>d[idx[p]]
        t = <double>val[p] - y
        E += t * t
        S += y * y
    R = d_norm - S
    acc = E + R
    if d_norm < INFINITY and R >= tau * d_norm and acc >= _LO and acc < INFINITY:
        return acc if metric == SP_SQEUCLIDEAN else sqrt(acc)
    return _sd_euclidean_exact(metric == SP_SQEUCLIDEAN, idx, val, nnz, d, K)


# --------------------------------------------------------------------------------------
# Sparse row x sparse row (workspace w holds the scattered A row, stamp marks B's pattern)
# --------------------------------------------------------------------------------------


cdef inline double _ss_sq(const double *w, Py_ssize_t *stamp, Py_ssize_t tag,
                          const index_t *ai, Py_ssize_t na,
                          const index_t *bi, const real_t *bv, Py_ssize_t nb, double sb,
                          double m) noexcept nogil:
    """sum over the union of ((w_k - b_k sb) / m)^2."""
    cdef double acc = 0.0, t
    cdef Py_ssize_t p, k
    for p in range(nb):
        k = bi[p]
        stamp[k] = tag
        t = (w[k] - <double>bv[p] * sb) / m
        acc += t * t
    for p in range(na):
        k = ai[p]
        if stamp[k] != tag:
            t = w[k] / m
            acc += t * t
    return acc


cdef inline double _ss_abs(const double *w, Py_ssize_t *stamp, Py_ssize_t tag,
                           const index_t *ai, Py_ssize_t na,
                           const index_t *bi, const real_t *bv,
                           Py_ssize_t nb) noexcept nogil:
    """sum over the union of |w_k - b_k|."""
    cdef double acc = 0.0
    cdef Py_ssize_t p, k
    for p in range(nb):
        k = bi[p]
        stamp[k] = tag
        acc += fabs(w[k] - <double>bv[p])
    for p in range(na):
        k = ai[p]
        if stamp[k] != tag:
            acc += fabs(w[k])
    return acc


cdef inline double _ss_maxdiff(const double *w, Py_ssize_t *stamp, Py_ssize_t tag,
                               const index_t *ai, Py_ssize_t na,
                               const index_t *bi, const real_t *bv,
                               Py_ssize_t nb) noexcept nogil:
    """max over the union of |w_k - b_k|."""
    cdef double m = 0.0, t
    cdef Py_ssize_t p, k
    for p in range(nb):
        k = bi[p]
        stamp[k] = tag
        t = fabs(w[k] - <double>bv[p])
        if t > m:
            m = t
    for p in range(na):
        k = ai[p]
        if stamp[k] != tag:
            t = fabs(w[k])
            if t > m:
                m = t
    return m


cdef inline double _ss_dot(const double *w, Py_ssize_t *stamp, Py_ssize_t tag,
                           const index_t *ai, const real_t *av, Py_ssize_t na, bint a_bad,
                           const index_t *bi, const real_t *bv,
                           Py_ssize_t nb) noexcept nogil:
    """sum over b's pattern of w_k b_k; when a holds inf/NaN, its entries outside b's
    pattern meet implicit zeros (0 * inf = NaN, as in the dense product)."""
    cdef double acc = 0.0
    cdef Py_ssize_t p, k
    for p in range(nb):
        acc += w[bi[p]] * <double>bv[p]
    if a_bad:
        for p in range(nb):
            stamp[bi[p]] = tag
        for p in range(na):
            k = ai[p]
            if stamp[k] != tag:
                acc += 0.0 * <double>av[p]
    return acc


cdef inline double _ss_fast(int metric, const double *w, const index_t *bi, const real_t *bv,
                            Py_ssize_t nb, double sb, double a_norm, double target,
                            bint *exact) noexcept nogil:
    """E + R in one pass over b's pattern only (see the essay: R = |a|_g minus the part of
    a on b's pattern).  Sets exact[0] when R may have cancelled: recompute by union."""
    cdef double E = 0.0, S = 0.0, R, t, x
    cdef Py_ssize_t p
    if metric == SP_CITYBLOCK:
        for p in range(nb):
            x = w[bi[p]]
            E += fabs(x - <double>bv[p])
            S += fabs(x)
    else:
        for p in range(nb):
            x = w[bi[p]]
            t = x - <double>bv[p] * sb
            E += t * t
            S += x * x
    R = a_norm - S
    exact[0] = not (a_norm < INFINITY and R >= (nb + 4) * _U / target * a_norm)
    return E + R


cdef void _ss_row(int metric, const index_t *ai, const real_t *av, Py_ssize_t na,
                  double a_inv, bint a_bad,
                  const index_t *b_ind, const real_t *b_dat, const index_t *b_ptr,
                  const double *b_inv, Py_ssize_t mb, double target,
                  double *w, Py_ssize_t *stamp, real_t *o) noexcept nogil:
    """One output row: A row (ai, av, na) against every B row."""
    cdef Py_ssize_t p, j, b0, nb, tag
    cdef double scale = a_inv if metric == SP_COSINE else 1.0, acc, m, sb, a_norm = 0.0
    cdef bint squared = metric == SP_SQEUCLIDEAN, exact = False
    for p in range(na):
        w[ai[p]] = <double>av[p] * scale
    if metric != SP_DOT and metric != SP_INNER:
        a_norm = _comp_norm(metric, av, na, scale)
    for j in range(mb):
        b0 = b_ptr[j]
        nb = b_ptr[j + 1] - b0
        tag = j + 1
        if metric == SP_DOT or metric == SP_INNER:
            acc = _ss_dot(w, stamp, tag, ai, av, na, a_bad, b_ind + b0, b_dat + b0, nb)
            o[j] = <real_t>(acc if metric == SP_DOT else -acc)
        elif metric == SP_COSINE:
            sb = b_inv[j]
            if a_inv != a_inv or sb != sb:
                acc = NAN
            elif a_inv == 0.0 or sb == 0.0:
                acc = 1.0
            else:
                acc = _ss_fast(metric, w, b_ind + b0, b_dat + b0, nb, sb, a_norm, target,
                               &exact)
                if exact:
                    acc = _ss_sq(w, stamp, tag, ai, na, b_ind + b0, b_dat + b0, nb, sb, 1.0)
                acc = 0.5 * acc
                acc = 0.0 if acc < 0.0 else (2.0 if acc > 2.0 else acc)
            o[j] = <real_t>acc
        elif metric == SP_CITYBLOCK:
            acc = _ss_fast(metric, w, b_ind + b0, b_dat + b0, nb, 1.0, a_norm, target, &exact)
            if exact:
                acc = _ss_abs(w, stamp, tag, ai, na, b_ind + b0, b_dat + b0, nb)
            o[j] = <real_t>acc
        else:
            acc = _ss_fast(metric, w, b_ind + b0, b_dat + b0, nb, 1.0, a_norm, target, &exact)
            if exact or not (acc >= _LO and acc < INFINITY):
                acc = _ss_sq(w, stamp, tag, ai, na, b_ind + b0, b_dat + b0, nb, 1.0, 1.0)
            if acc != acc or (acc >= _LO and acc < INFINITY):
                acc = acc if squared else sqrt(acc)
            else:
                m = _ss_maxdiff(w, stamp, tag, ai, na, b_ind + b0, b_dat + b0, nb)
                if m == 0.0 or m == INFINITY:
                    acc = m * m if squared else m
                else:
                    acc = m * sqrt(_ss_sq(w, stamp, tag, ai, na, b_ind + b0, b_dat + b0,
                                          nb, 1.0, m))
                    if squared:
                        acc = acc * acc
            o[j] = <real_t>acc
    for p in range(na):
        w[ai[p]] = 0.0


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


cdef void _csr_stats(int metric, const real_t[::1] data, const index_t[::1] indptr,
                     double[::1] inv, unsigned char[::1] bad, int n_threads) noexcept:
    """Per CSR row: 1/|row| (cosine) or the inf/NaN flag (dot, inner)."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, r, r0, r1
    if n <= 0 or data.shape[0] == 0:
        return
    cdef const real_t *pd = &data[0]
    cdef const index_t *pp = &indptr[0]
    for r in prange(n, nogil=True, schedule="static", num_threads=n_threads):
        r0 = pp[r]
        r1 = pp[r + 1]
        if metric == SP_COSINE:
            inv[r] = _inv_norm(pd + r0, r1 - r0)
        elif metric == SP_DOT or metric == SP_INNER:
            bad[r] = _nonfinite(pd + r0, r1 - r0)


def csr_csr(int metric,
            const real_t[::1] a_data, const index_t[::1] a_indices, const index_t[::1] a_indptr,
            const real_t[::1] b_data, const index_t[::1] b_indices, const index_t[::1] b_indptr,
            Py_ssize_t n_features, real_t[:, ::1] out, int n_threads):
    """out[i, j] = metric(A[i], B[j]) for canonical CSR A and B (see the module essay)."""
    cdef Py_ssize_t ma = out.shape[0], mb = out.shape[1], K = n_features, i, a0
    if ma == 0 or mb == 0:
        return
    cdef double target = 1e-7 if real_t is float else 1e-13
    failed_arr = np.zeros(ma, dtype=np.uint8)
    cdef double[::1] a_inv = np.zeros(ma)
    cdef double[::1] b_inv = np.zeros(mb)
    cdef unsigned char[::1] a_bad = np.zeros(ma, dtype=np.uint8)
    cdef unsigned char[::1] b_bad = np.zeros(mb, dtype=np.uint8)
    cdef unsigned char[::1] failed = failed_arr
    _csr_stats(metric, a_data, a_indptr, a_inv, a_bad, n_threads)
    _csr_stats(metric, b_data, b_indptr, b_inv, b_bad, n_threads)
    cdef const real_t *pad = NULL
    cdef const index_t *pai = NULL
    cdef const real_t *pbd = NULL
    cdef const index_t *pbi = NULL
    if a_data.shape[0] > 0:
        pad = &a_data[0]
        pai = &a_indices[0]
    if b_data.shape[0] > 0:
        pbd = &b_data[0]
        pbi = &b_indices[0]
    cdef const index_t *pap = &a_indptr[0]
    cdef const index_t *pbp = &b_indptr[0]
    cdef const double *pbinv = &b_inv[0]
    cdef real_t *po = &out[0, 0]
    cdef double *w = NULL
    cdef Py_ssize_t *stamp = NULL
    with nogil, parallel(num_threads=n_threads):
        # Per-thread workspaces; calloc leaves pages never touched unallocated.
        w = <double *>calloc(K + 1, sizeof(double))
        stamp = <Py_ssize_t *>calloc(K + 1, sizeof(Py_ssize_t))
        for i in prange(ma, schedule="dynamic"):
            if w == NULL or stamp == NULL:
                failed[i] = 1
                continue
            a0 = pap[i]
            _ss_row(metric, pai + a0, pad + a0, pap[i + 1] - a0, a_inv[i], a_bad[i],
                    pbi, pbd, pbp, pbinv, mb, target, w, stamp, po + i * mb)
        free(w)
        free(stamp)
    if failed_arr.any():
        raise MemoryError(f"could not allocate a sparse workspace of {K} features per thread")


def csr_dense(int metric,
              const real_t[::1] s_data, const index_t[::1] s_indices,
              const index_t[::1] s_indptr, const real_t[:, ::1] D, bint sparse_is_a,
              real_t[:, ::1] out, int n_threads):
    """out[i, j] = metric(S[i], D[j]) (sparse_is_a) or metric(D[i], S[j]) (otherwise)."""
    cdef Py_ssize_t ns = s_indptr.shape[0] - 1, nd = D.shape[0], K = D.shape[1]
    cdef Py_ssize_t ma = out.shape[0], mb = out.shape[1], i, j, r, s0, s1, c, c1, n_chunks
    if ma == 0 or mb == 0:
        return
    cdef double target = 1e-7 if real_t is float else 1e-13
    cdef double[::1] s_inv = np.zeros(ns)
    cdef unsigned char[::1] s_bad = np.zeros(ns, dtype=np.uint8)
    cdef double[::1] d_norm = np.zeros(nd)
    cdef double[::1] d_inv = np.zeros(nd)
    cdef unsigned char[::1] d_bad = np.zeros(nd, dtype=np.uint8)
    if metric == SP_COSINE:
        _csr_stats(metric, s_data, s_indptr, s_inv, s_bad, n_threads)
    cdef const real_t *pd = NULL
    cdef const real_t *psd = NULL
    cdef const index_t *psi = NULL
    if s_data.shape[0] > 0:
        psd = &s_data[0]
        psi = &s_indices[0]
    if K > 0:
        pd = &D[0, 0]
    cdef const index_t *psp = &s_indptr[0]
    cdef real_t *po = &out[0, 0]
    for r in prange(nd, nogil=True, schedule="static", num_threads=n_threads):
        if metric == SP_COSINE:
            d_inv[r] = _inv_norm(pd + r * K, K)
            if d_inv[r] > 0.0:
                d_norm[r] = _comp_norm(metric, pd + r * K, K, d_inv[r])
        elif metric == SP_DOT or metric == SP_INNER:
            d_bad[r] = _nonfinite(pd + r * K, K)
        else:
            d_norm[r] = _comp_norm(metric, pd + r * K, K, 1.0)
    if sparse_is_a:
        # Output rows in chunks of ROWS sparse rows; inside a chunk the dense row is the
        # outer loop, so its randomly read entries stay in cache for ROWS sparse rows
        # instead of coming from memory once per pair.
        n_chunks = (ma + ROWS - 1) // ROWS
        for c in prange(n_chunks, nogil=True, schedule="dynamic", num_threads=n_threads):
            c1 = min(ma, (c + 1) * ROWS)
            for j in range(mb):
                for i in range(c * ROWS, c1):
                    s0 = psp[i]
                    s1 = psp[i + 1]
                    po[i * mb + j] = <real_t>_sd_pair(
                        metric, psi + s0, psd + s0, s1 - s0, s_inv[i], pd + j * K, K,
                        d_norm[j], d_inv[j], d_bad[j], target)
    else:
        for i in prange(ma, nogil=True, schedule="dynamic", num_threads=n_threads):
            for j in range(mb):
                s0 = psp[j]
                s1 = psp[j + 1]
                po[i * mb + j] = <real_t>_sd_pair(
                    metric, psi + s0, psd + s0, s1 - s0, s_inv[j], pd + i * K, K,
                    d_norm[i], d_inv[i], d_bad[i], target)
