# Declarations shared by the dense kernels (_dense.pyx, _select.pyx, _lsh.pyx): the C headers
# they include, thin fused-type wrappers that pick the float or double version, and the
# bounded (distance, index) max-heap that every top-k selection uses.

from libc.stdint cimport int32_t, int64_t

ctypedef fused real_t:
    float
    double

cdef extern from "mmfs_gemm.h" nogil:
    int mmfs_gemm_has_avx2()
    void mmfs_gemm_tile_f32(const float *A, Py_ssize_t ma, const float *B, Py_ssize_t mb,
                            Py_ssize_t K, float *C, Py_ssize_t ldc, int avx2)
    void mmfs_gemm_tile_f64(const double *A, Py_ssize_t ma, const double *B, Py_ssize_t mb,
                            Py_ssize_t K, double *C, Py_ssize_t ldc, int avx2)

cdef extern from "mmfs_dense.h" nogil:
    int MMFS_SQEUCLIDEAN, MMFS_EUCLIDEAN, MMFS_CITYBLOCK, MMFS_CHEBYSHEV
    int MMFS_MINKOWSKI, MMFS_COSINE, MMFS_INNER, MMFS_HAMMING, MMFS_JACCARD
    int MMFS_SEUCLIDEAN, MMFS_MAHALANOBIS
    ctypedef struct mmfs_metric_t:
        int metric
        double p
        const double *w
    void mmfs_block_f32(const mmfs_metric_t *mt, const float *A, Py_ssize_t lda,
                        Py_ssize_t ma, const float *B, Py_ssize_t ldb, Py_ssize_t mb,
                        Py_ssize_t K, const double *inva, const double *invb,
                        float *out, Py_ssize_t ldo)
    void mmfs_block_f64(const mmfs_metric_t *mt, const double *A, Py_ssize_t lda,
                        Py_ssize_t ma, const double *B, Py_ssize_t ldb, Py_ssize_t mb,
                        Py_ssize_t K, const double *inva, const double *invb,
                        double *out, Py_ssize_t ldo)
    double mmfs_pair_f32(const mmfs_metric_t *mt, const float *a, const float *b,
                         Py_ssize_t K, double ia, double ib, double *scratch)
    double mmfs_pair_f64(const mmfs_metric_t *mt, const double *a, const double *b,
                         Py_ssize_t K, double ia, double ib, double *scratch)
    Py_ssize_t mmfs_candidates_f32(const float *g, const double *c, Py_ssize_t n, double a,
                                   double b, double e, double thr, int32_t *hits)
    Py_ssize_t mmfs_candidates_f64(const double *g, const double *c, Py_ssize_t n, double a,
                                   double b, double e, double thr, int32_t *hits)
    double mmfs_stream_sum_f32(const float *x, Py_ssize_t n)
    Py_ssize_t mmfs_fix_euclidean_f32(float *g, const float *a, const float *B, Py_ssize_t mb,
                                      Py_ssize_t K, double na, const double *nb, double tau,
                                      int squared)
    Py_ssize_t mmfs_fix_euclidean_f64(double *g, const double *a, const double *B,
                                      Py_ssize_t mb, Py_ssize_t K, double na,
                                      const double *nb, double tau, int squared)
    Py_ssize_t mmfs_fix_cosine_f32(float *g, const float *a, const float *B, Py_ssize_t mb,
                                   Py_ssize_t K, double ia, const double *ib, double tau)
    Py_ssize_t mmfs_fix_cosine_f64(double *g, const double *a, const double *B, Py_ssize_t mb,
                                   Py_ssize_t K, double ia, const double *ib, double tau)
    void mmfs_sq_norms_f32(const float *X, Py_ssize_t n, Py_ssize_t K, double *out)
    void mmfs_sq_norms_f64(const double *X, Py_ssize_t n, Py_ssize_t K, double *out)
    void mmfs_inv_norms_f32(const float *X, Py_ssize_t n, Py_ssize_t K, double *out)
    void mmfs_inv_norms_f64(const double *X, Py_ssize_t n, Py_ssize_t K, double *out)


cdef inline void block(const mmfs_metric_t *mt, const real_t *A, Py_ssize_t lda,
                       Py_ssize_t ma, const real_t *B, Py_ssize_t ldb, Py_ssize_t mb,
                       Py_ssize_t K, const double *inva, const double *invb,
                       real_t *out, Py_ssize_t ldo) noexcept nogil:
    """out[i, j] = dist(A[i], B[j]) for an ma x mb tile (mmfs_block_*)."""
    if real_t is float:
        mmfs_block_f32(mt, A, lda, ma, B, ldb, mb, K, inva, invb, out, ldo)
    else:
        mmfs_block_f64(mt, A, lda, ma, B, ldb, mb, K, inva, invb, out, ldo)


cdef inline void gemm_tile(const real_t *A, Py_ssize_t ma, const real_t *B, Py_ssize_t mb,
                           Py_ssize_t K, real_t *C, Py_ssize_t ldc, int avx2) noexcept nogil:
    """C[i, j] = A[i] . B[j] in the fixed order of mmfs_gemm.h."""
    if real_t is float:
        mmfs_gemm_tile_f32(A, ma, B, mb, K, C, ldc, avx2)
    else:
        mmfs_gemm_tile_f64(A, ma, B, mb, K, C, ldc, avx2)


cdef inline bint key_lt(double d1, int64_t i1, double d2, int64_t i2) noexcept nogil:
    """(d1, i1) < (d2, i2): by distance, NaN last, then by index."""
    if d1 != d1:
        return d2 != d2 and i1 < i2
    if d2 != d2:
        return True
    return d1 < d2 or (d1 == d2 and i1 < i2)


cdef inline void heap_push(double *hd, int64_t *hi, int64_t *hn, Py_ssize_t k,
                           double d, int64_t idx) noexcept nogil:
    """Offer (d, idx) to a max-heap of capacity k."""
    cdef Py_ssize_t pos, child, parent, n = hn[0]
    if n < k:
        pos = n
        hn[0] = n + 1
        while pos > 0:
            parent = (pos - 1) >> 1
            if key_lt(hd[parent], hi[parent], d, idx):
                hd[pos] = hd[parent]
                hi[pos] = hi[parent]
                pos = parent
            else:
                break
        hd[pos] = d
        hi[pos] = idx
        return
    if not key_lt(d, idx, hd[0], hi[0]):
        return
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= k:
            break
        if child + 1 < k and key_lt(hd[child], hi[child], hd[child + 1], hi[child + 1]):
            child += 1
        if key_lt(d, idx, hd[child], hi[child]):
            hd[pos] = hd[child]
            hi[pos] = hi[child]
            pos = child
        else:
            break
    hd[pos] = d
    hi[pos] = idx


cdef inline bint heap_rejects(const double *hd, const int64_t *hi, int64_t n, Py_ssize_t k,
                              double lower) noexcept nogil:
    """True when a full heap's worst entry is strictly better than `lower`."""
    return n == k and hd[0] == hd[0] and lower > hd[0]


cdef inline double _pair(const mmfs_metric_t *mt, const real_t *a, const real_t *b,
                         Py_ssize_t K, double ia, double ib,
                         double *scratch) noexcept nogil:
    """One exact distance, rounded to the input precision like every stored distance."""
    if real_t is float:
        return <float>mmfs_pair_f32(mt, a, b, K, ia, ib, scratch)
    else:
        return mmfs_pair_f64(mt, a, b, K, ia, ib, scratch)


cdef inline mmfs_metric_t _metric(int metric, double p, const double[::1] W) noexcept:
    cdef mmfs_metric_t mt
    mt.metric = metric
    mt.p = p
    mt.w = &W[0] if W.shape[0] > 0 else NULL
    return mt
