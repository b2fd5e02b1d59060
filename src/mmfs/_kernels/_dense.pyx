# cython: freethreading_compatible = True
"""Dense pairwise distance kernels.

Design
------
Inputs arrive C-contiguous and already validated by mmfs.distance (the public layer checks,
kernels only compute).  Two routes produce a distance matrix:

* direct: every pair is computed from its two rows by the loops in mmfs_dense.h.  The
  output is cut into tiles of TILE_A x TILE_B pairs so the B rows of a tile stay in L1/L2
  while every A row of the tile streams past them; tiles are spread over OpenMP threads.

* GEMM: for euclidean, squared euclidean and cosine, gemm_nt computes G = A @ B.T into
  `out` (mmfs_gemm.h: a fixed order of operations, so the same bits for any thread
  count), and the fix-up kernels here turn G into distances in place:
      d^2 = |a|^2 + |b|^2 - 2 g        cos = 1 - g / (|a| |b|)
  Both suffer cancellation when a and b are close.  A pair whose GEMM value is below
  tau * (|a|^2 + |b|^2) (resp. whose cosine distance is below tau) is recomputed exactly
  by the direct loop from the original rows, so identical rows give exactly 0, near
  duplicates never go negative and close pairs keep their relative precision.

Every function releases the GIL; nothing here raises on user input.
"""

from cython.parallel cimport prange

from mmfs._kernels._headers cimport *

METRIC_CODES = {
    "sqeuclidean": MMFS_SQEUCLIDEAN,
    "euclidean": MMFS_EUCLIDEAN,
    "cityblock": MMFS_CITYBLOCK,
    "chebyshev": MMFS_CHEBYSHEV,
    "minkowski": MMFS_MINKOWSKI,
    "cosine": MMFS_COSINE,
    "inner_product": MMFS_INNER,
    "hamming": MMFS_HAMMING,
    "jaccard": MMFS_JACCARD,
    "seuclidean": MMFS_SEUCLIDEAN,
    "mahalanobis": MMFS_MAHALANOBIS,
}


def tile_shape(Py_ssize_t K, Py_ssize_t itemsize):
    """(rows of A, rows of B) per tile: a B tile of about 64 KiB stays in L2."""
    cdef Py_ssize_t tb = max(8, min(256, 65536 // max(1, K * itemsize)))
    return 16, tb


def pairwise_direct(int metric, const real_t[:, ::1] A, const real_t[:, ::1] B,
                    real_t[:, ::1] out, double p, const double[::1] W,
                    const double[::1] inva, const double[::1] invb, int n_threads):
    """out[i, j] = metric(A[i], B[j]) by the direct loops, tiled and parallel.

    W: seuclidean weights (1/V) or the mahalanobis matrix, flattened; empty otherwise.
    inva/invb: inverse row norms for cosine; empty otherwise.
    """
    cdef Py_ssize_t ma = A.shape[0], mb = B.shape[0], K = A.shape[1]
    cdef Py_ssize_t ta, tb, na_t, nb_t, t, ti, tj, i0, j0, ra, rb
    cdef const double *pia = NULL
    cdef const double *pib = NULL
    cdef mmfs_metric_t mt
    if ma == 0 or mb == 0:
        return
    mt.metric = metric
    mt.p = p
    mt.w = &W[0] if W.shape[0] > 0 else NULL
    ta, tb = tile_shape(K, sizeof(real_t))
    na_t = (ma + ta - 1) // ta
    nb_t = (mb + tb - 1) // tb
    if inva.shape[0] > 0:
        pia = &inva[0]
        pib = &invb[0]
    cdef const real_t *pa = &A[0, 0]
    cdef const real_t *pb = &B[0, 0]
    cdef real_t *po = &out[0, 0]
    cdef Py_ssize_t ldo = out.shape[1]
    # Walk tiles B-major so consecutive tiles of one thread reuse the same B rows.
    for t in prange(na_t * nb_t, nogil=True, schedule="static", num_threads=n_threads):
        tj = t // na_t
        ti = t - tj * na_t
        i0 = ti * ta
        j0 = tj * tb
        ra = min(ta, ma - i0)
        rb = min(tb, mb - j0)
        block(&mt, pa + i0 * K, K, ra, pb + j0 * K, K, rb, K,
               (pia + i0) if pia != NULL else NULL,
               (pib + j0) if pib != NULL else NULL,
               po + i0 * ldo + j0, ldo)


def gemm_nt(const real_t[:, ::1] A, const real_t[:, ::1] B, real_t[:, ::1] C,
            int n_threads, bint portable=False):
    """C = A @ B.T with a fixed order of operations per element (see mmfs_gemm.h): the
    same bits whatever the thread count, the tiling or the number of rows.  portable=True
    forces the plain C path (the tests check it gives the same bits as the AVX2 one)."""
    cdef Py_ssize_t ma = A.shape[0], mb = B.shape[0], K = A.shape[1]
    cdef Py_ssize_t ta, tb, na_t, nb_t, t, ti, tj, i0, j0
    cdef int avx2 = 0 if portable else mmfs_gemm_has_avx2()
    if ma == 0 or mb == 0:
        return
    if K == 0:
        C[:, :] = 0
        return
    cdef Py_ssize_t row = K * sizeof(real_t)
    tb = max(3, min(255, (192 * 1024) // row) // 3 * 3)
    ta = max(4, min(32, (16 * 1024) // row) // 4 * 4)
    na_t = (ma + ta - 1) // ta
    nb_t = (mb + tb - 1) // tb
    cdef const real_t *pa = &A[0, 0]
    cdef const real_t *pb = &B[0, 0]
    cdef real_t *pc = &C[0, 0]
    cdef Py_ssize_t ldc = C.shape[1]
    for t in prange(na_t * nb_t, nogil=True, schedule="static", num_threads=n_threads):
        tj = t // na_t
        ti = t - tj * na_t
        i0 = ti * ta
        j0 = tj * tb
        gemm_tile(pa + i0 * K, min(ta, ma - i0), pb + j0 * K, min(tb, mb - j0), K,
                  pc + i0 * ldc + j0, ldc, avx2)


def row_sq_norms(const real_t[:, ::1] X, double[::1] out, int n_threads):
    """out[i] = |X[i]|^2, accumulated in double."""
    _rows_apply(X, out, n_threads, False)


def inv_norms(const real_t[:, ::1] X, double[::1] out, int n_threads):
    """out[i] = 1 / |X[i]| (0 for a zero row, NaN for a row with NaN or inf), no overflow."""
    _rows_apply(X, out, n_threads, True)


cdef void _rows_apply(const real_t[:, ::1] X, double[::1] out, int n_threads,
                      bint inverse) noexcept:
    cdef Py_ssize_t n = X.shape[0], K = X.shape[1], c, r0, chunk = 1024
    if n == 0:
        return
    cdef const real_t *px = &X[0, 0]
    cdef double *po = &out[0]
    for c in prange((n + chunk - 1) // chunk, nogil=True, schedule="static",
                    num_threads=n_threads):
        r0 = c * chunk
        if real_t is float:
            if inverse:
                mmfs_inv_norms_f32(px + r0 * K, min(chunk, n - r0), K, po + r0)
            else:
                mmfs_sq_norms_f32(px + r0 * K, min(chunk, n - r0), K, po + r0)
        else:
            if inverse:
                mmfs_inv_norms_f64(px + r0 * K, min(chunk, n - r0), K, po + r0)
            else:
                mmfs_sq_norms_f64(px + r0 * K, min(chunk, n - r0), K, po + r0)


def fix_euclidean(real_t[:, ::1] G, const real_t[:, ::1] A, const real_t[:, ::1] B,
                  const double[::1] na, const double[::1] nb, double tau, bint squared,
                  int n_threads):
    """Turn G = A @ B.T (in place) into (squared) euclidean distances.

    na, nb: squared norms of the rows the product was taken on (A and B possibly shifted
    by a common vector, which changes no distance).  Pairs with
    |a|^2 + |b|^2 - 2g < tau * (|a|^2 + |b|^2) are recomputed exactly from A and B.
    Returns the number of recomputed pairs (a diagnostic for tests and benchmarks).
    """
    cdef Py_ssize_t ma = G.shape[0], mb = G.shape[1], K = A.shape[1], i
    cdef Py_ssize_t refined = 0
    if ma == 0 or mb == 0:
        return 0
    cdef const real_t *pa = &A[0, 0]
    cdef const real_t *pb = &B[0, 0]
    cdef real_t *pg = &G[0, 0]
    cdef const double *pnb = &nb[0]
    for i in prange(ma, nogil=True, schedule="static", num_threads=n_threads):
        if real_t is float:
            refined += mmfs_fix_euclidean_f32(pg + i * mb, pa + i * K, pb, mb, K, na[i],
                                              pnb, tau, squared)
        else:
            refined += mmfs_fix_euclidean_f64(pg + i * mb, pa + i * K, pb, mb, K, na[i],
                                              pnb, tau, squared)
    return refined


def fix_cosine(real_t[:, ::1] G, const real_t[:, ::1] A, const real_t[:, ::1] B,
               const double[::1] inva, const double[::1] invb, double tau, int n_threads):
    """Turn G = A @ B.T (in place) into cosine distances; close pairs recomputed exactly."""
    cdef Py_ssize_t ma = G.shape[0], mb = G.shape[1], K = A.shape[1], i
    cdef Py_ssize_t refined = 0
    if ma == 0 or mb == 0:
        return 0
    cdef const real_t *pa = &A[0, 0]
    cdef const real_t *pb = &B[0, 0]
    cdef real_t *pg = &G[0, 0]
    cdef const double *pib = &invb[0]
    for i in prange(ma, nogil=True, schedule="static", num_threads=n_threads):
        if real_t is float:
            refined += mmfs_fix_cosine_f32(pg + i * mb, pa + i * K, pb, mb, K, inva[i], pib,
                                           tau)
        else:
            refined += mmfs_fix_cosine_f64(pg + i * mb, pa + i * K, pb, mb, K, inva[i], pib,
                                           tau)
    return refined


def stream_sum(const float[::1] x, int n_threads=1):
    """Sum of a float32 array by a plain C loop that only reads it, on n_threads threads:
    the memory-bandwidth floor that the knn benchmark compares against."""
    cdef Py_ssize_t n = x.shape[0], chunk, c, nc
    cdef double s = 0.0
    if n == 0:
        return 0.0
    nc = max(1, n_threads)
    chunk = (n + nc - 1) // nc
    cdef const float *px = &x[0]
    for c in prange(nc, nogil=True, schedule="static", num_threads=nc):
        s += mmfs_stream_sum_f32(px + c * chunk, max(0, min(chunk, n - c * chunk)))
    return s
