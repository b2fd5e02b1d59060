# Declarations shared by the dense kernels (_dense.pyx, _select.pyx): the C headers they
# include, and thin fused-type wrappers that pick the float or double version.

from libc.stdint cimport int32_t

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
