# cython: freethreading_compatible = True
"""Exact k-nearest-neighbour selection.

Design
------
Each query owns a bounded max-heap of (distance, index) pairs in caller-owned arrays
heap_d[q, :k], heap_i[q, :k], heap_n[q] (entries used).  The heaps persist across calls, so
the caller can feed the data in blocks of any size: memory stays bounded for any number of
rows and the answer does not depend on the block size.

Order.  Pairs are ordered by distance, then by index; NaN distances sort after every
number.  That is a total order, so the k smallest pairs are unique: the result does not
depend on how rows were split between threads or blocks.  Every distance that enters a
heap is computed by the direct loops of mmfs_dense.h and rounded to the input precision,
so all routes give bit-identical answers.

Two routes:
* knn_direct: distances of a (queries x data-rows) tile are computed directly.  With many
  queries, threads split the queries (each heap has one owner).  With few queries (the
  online case: one query against a million rows), threads split the rows, each fills
  private heaps, and the private heaps are merged at the end in thread order.
* knn_gemm: tiles of G = Q @ D.T are computed by mmfs_gemm.h inside the parallel loop.
  G gives an approximate distance and a rigorous error bound (gamma_K = K*u/(1-K*u) on a
  dot product, Higham 3.1); a row whose lower bound cannot beat the current k-th distance
  is skipped, the others are recomputed exactly and pushed.  Skipping is therefore never
  wrong, only the cost depends on G.
"""

from cython.parallel cimport prange, threadid
from libc.math cimport sqrt, INFINITY
from libc.stdint cimport int32_t, int64_t

import numpy as np
from libc.stdlib cimport malloc, free

from mmfs._kernels._headers cimport *

DEF ROWS = 128   # data rows per tile
DEF QROWS = 8    # queries per tile


cdef inline Py_ssize_t _candidates(const real_t *g, const double *c, Py_ssize_t n, double a,
                                   double b, double e, double thr,
                                   int32_t *hits) noexcept nogil:
    if real_t is float:
        return mmfs_candidates_f32(g, c, n, a, b, e, thr, hits)
    else:
        return mmfs_candidates_f64(g, c, n, a, b, e, thr, hits)


cdef inline double _top(const double *hd, const int64_t *hn, Py_ssize_t k) noexcept nogil:
    """The distance a row must beat to enter a heap (inf while it is not full)."""
    if hn[0] < k or hd[0] != hd[0]:
        return INFINITY
    return hd[0]


cdef void _scan(const mmfs_metric_t *mt, const real_t *Q, Py_ssize_t q0, Py_ssize_t q1,
                const real_t *D, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t K,
                const double *invq, const double *invd, int64_t offset,
                double *hd, int64_t *hi, int64_t *hn, Py_ssize_t k,
                real_t *buf) noexcept nogil:
    """Push dist(Q[q], D[r]) for q in [q0, q1), r in [r0, r1) into heaps q0.. (tiled).

    Euclidean tiles are computed squared (no square root per row); a row whose squared
    distance can beat the heap's worst is then recomputed by the euclidean kernel itself,
    so the distance that enters the heap is bit-identical to every other route.
    """
    cdef Py_ssize_t qa, ra, nq, nr, a, b
    cdef double d, top
    cdef const double *iq
    cdef const double *idd
    cdef mmfs_metric_t sq = mt[0]
    cdef bint euclid = mt.metric == MMFS_EUCLIDEAN
    cdef double *qhd
    cdef int64_t *qhi
    cdef int64_t *qhn
    if euclid:
        sq.metric = MMFS_SQEUCLIDEAN
    for ra in range(r0, r1, ROWS):
        nr = min(ROWS, r1 - ra)
        for qa in range(q0, q1, QROWS):
            nq = min(QROWS, q1 - qa)
            iq = (invq + qa) if invq != NULL else NULL
            idd = (invd + ra) if invd != NULL else NULL
            block(&sq, Q + qa * K, K, nq, D + ra * K, K, nr, K, iq, idd, buf, ROWS)
            for a in range(nq):
                qhd = hd + (qa + a) * k
                qhi = hi + (qa + a) * k
                qhn = hn + qa + a
                top = _top(qhd, qhn, k)
                # (1 + 2^-20) covers the rounding between d^2 and the stored sqrt.
                top = top * top * (1.0 + 9.5367431640625e-07) if euclid else top
                for b in range(nr):
                    d = buf[a * ROWS + b]
                    if d > top:  # false for NaN: those go to the exact comparison
                        continue
                    if euclid:
                        d = _pair(mt, Q + (qa + a) * K, D + (ra + b) * K, K, 0.0, 0.0, NULL)
                    if qhn[0] < k or key_lt(d, offset + ra + b, qhd[0], qhi[0]):
                        heap_push(qhd, qhi, qhn, k, d, offset + ra + b)
                        top = _top(qhd, qhn, k)
                        top = top * top * (1.0 + 9.5367431640625e-07) if euclid else top


def knn_direct(int metric, const real_t[:, ::1] Q, const real_t[:, ::1] D, double p,
               const double[::1] W, const double[::1] invq, const double[::1] invd,
               int64_t offset,
               double[:, ::1] heap_d, int64_t[:, ::1] heap_i, int64_t[::1] heap_n,
               int n_threads):
    """Offer every (query, row of D) pair to the query heaps; rows are numbered from offset."""
    cdef Py_ssize_t m = Q.shape[0], n = D.shape[0], K = Q.shape[1], k = heap_d.shape[1]
    cdef Py_ssize_t t, nt, chunk, r0, r1, q, j, c, tid
    cdef const double *pq = NULL
    cdef const double *pd = NULL
    cdef real_t *bufs
    cdef double *thd
    cdef int64_t *thi
    cdef int64_t *thn
    if m == 0 or n == 0 or k == 0:
        return
    cdef mmfs_metric_t mt = _metric(metric, p, W)
    if invq.shape[0] > 0:
        pq = &invq[0]
        pd = &invd[0]
    nt = max(1, n_threads)
    bufs = <real_t *> malloc(nt * QROWS * ROWS * sizeof(real_t))
    if bufs == NULL:
        raise MemoryError("knn_direct scratch")
    cdef const real_t *pQ = &Q[0, 0]
    cdef const real_t *pD = &D[0, 0]
    cdef Py_ssize_t nqb = (m + QROWS - 1) // QROWS
    try:
        if nqb >= 2 * nt or nt == 1 or n < 4 * ROWS:
            # Many queries: each block of queries, and so each heap, has one owner.
            for t in prange(nqb, nogil=True, schedule="dynamic", num_threads=nt):
                tid = threadid()
                _scan(&mt, pQ, t * QROWS, min(m, (t + 1) * QROWS), pD, 0, n, K,
                      pq, pd, offset, &heap_d[0, 0], &heap_i[0, 0], &heap_n[0], k,
                      bufs + tid * QROWS * ROWS)
            return
        # Few queries: split the rows; private heaps per thread, merged in thread order.
        thd = <double *> malloc(nt * m * k * sizeof(double))
        thi = <int64_t *> malloc(nt * m * k * sizeof(int64_t))
        thn = <int64_t *> malloc(nt * m * sizeof(int64_t))
        if thd == NULL or thi == NULL or thn == NULL:
            free(thd)
            free(thi)
            free(thn)
            raise MemoryError("knn_direct thread heaps")
        try:
            for j in range(nt * m):
                thn[j] = 0
            chunk = (n + nt - 1) // nt
            for t in prange(nt, nogil=True, schedule="static", num_threads=nt):
                r0 = t * chunk
                r1 = min(n, r0 + chunk)
                if r0 < r1:
                    _scan(&mt, pQ, 0, m, pD, r0, r1, K, pq, pd, offset,
                          thd + t * m * k, thi + t * m * k, thn + t * m, k,
                          bufs + t * QROWS * ROWS)
            with nogil:
                for t in range(nt):
                    for q in range(m):
                        for c in range(thn[t * m + q]):
                            heap_push(&heap_d[q, 0], &heap_i[q, 0], &heap_n[q], k,
                                      thd[(t * m + q) * k + c], thi[(t * m + q) * k + c])
        finally:
            free(thd)
            free(thi)
            free(thn)
    finally:
        free(bufs)


cdef void _filter_rows(int metric, const mmfs_metric_t *mt, const real_t *q,
                       const real_t *D, const real_t *g, const double *c, Py_ssize_t n,
                       Py_ssize_t K, double qv, double gamma, int64_t offset, double *hd,
                       int64_t *hi, int64_t *hn, Py_ssize_t k, int32_t *hits) noexcept nogil:
    """Offer rows D[0:n] to one query's heap, g[j] = q . D[j] from the GEMM."""
    cdef double a = 0.0, b = 0.0, e = 0.0, alpha = 0.0, d, top, thr
    cdef Py_ssize_t done = 0, nh, h, j
    cdef bint cos = metric == MMFS_COSINE
    if cos:
        b = -qv
        alpha = 1.0 - gamma
    elif metric == MMFS_INNER:
        a = -gamma * sqrt(qv)
        e = -1.0
    else:
        a = 1.0
        e = -2.0
        alpha = (1.0 - gamma) * qv
    while done < n and hn[0] < k:
        # Until the heap is full every row goes in, whatever its bound (even NaN).
        d = _pair(mt, q, D + done * K, K, qv if cos else 0.0, c[done] if cos else 0.0, NULL)
        heap_push(hd, hi, hn, k, d, offset + done)
        done = done + 1
    while done < n:
        top = _top(hd, hn, k)
        thr = top * top if (metric == MMFS_EUCLIDEAN and top < INFINITY) else top
        nh = _candidates(g + done, c + done, min(64, n - done), a, b, e, thr - alpha, hits)
        for h in range(nh):
            j = done + hits[h]
            d = _pair(mt, q, D + j * K, K, qv if cos else 0.0, c[j] if cos else 0.0, NULL)
            heap_push(hd, hi, hn, k, d, offset + j)
        done = done + 64


DEF GQ = 32     # queries per GEMM tile
DEF GR = 255    # data rows per GEMM tile (a multiple of the micro-tile, 3)


def knn_gemm(int metric, const real_t[:, ::1] Q, const real_t[:, ::1] D,
             const double[::1] qn, const double[::1] dn, double gamma, int64_t offset,
             double[:, ::1] heap_d, int64_t[:, ::1] heap_i, int64_t[::1] heap_n,
             int n_threads):
    """Offer rows of D to the query heaps, filtering with tiles of G = Q @ D.T.

    Each thread takes a range of queries and walks D in tiles of GR rows; for each block
    of GQ queries the tile of G is computed by mmfs_gemm.h into a buffer that stays in
    L1, filtered at once, and only rows that may enter a heap are recomputed exactly.
    No BLAS: its threads would fight ours for the cores between products.

    qn/dn: squared norms (euclidean, sqeuclidean, inner_product) or inverse norms
    (cosine).  gamma bounds the error of one entry of G relative to the norms (Higham's
    gamma_K, plus the rounding of g), so a lower bound of each distance is, with c the
    per-row column below:
      (sq)euclidean  |q|^2 + |d|^2 - 2g - gamma (|q|^2 + |d|^2)  ->  c = (1-gamma)|d|^2
      cosine         1 - g/(|q||d|) - gamma                      ->  c = 1/|d|
      inner_product  -g - gamma |q||d|                           ->  c = |d|
    and a row is recomputed exactly only when that bound can beat the current k-th.
    """
    cdef Py_ssize_t m = Q.shape[0], n = D.shape[0], K = Q.shape[1], k = heap_d.shape[1]
    cdef Py_ssize_t qb, nqb, q0, nq, r0, nr, a, q, t, per
    cdef int avx2 = mmfs_gemm_has_avx2()
    cdef int nt = max(1, n_threads)
    cdef real_t *gt
    if m == 0 or n == 0 or k == 0:
        return
    cdef int32_t[:, ::1] hitbuf = np.empty((nt, 64), dtype=np.int32)
    cdef real_t[:, ::1] gbuf
    if real_t is float:
        gbuf = np.empty((nt, GQ * GR), dtype=np.float32)
    else:
        gbuf = np.empty((nt, GQ * GR), dtype=np.float64)
    cdef double[::1] c
    if metric == MMFS_COSINE:
        c = np.ascontiguousarray(dn)
    elif metric == MMFS_INNER:
        c = np.sqrt(dn)
    else:
        c = (1.0 - gamma) * np.asarray(dn)
    cdef const real_t *pQ = &Q[0, 0]
    cdef const real_t *pD = &D[0, 0]
    cdef const double *pc = &c[0]
    cdef mmfs_metric_t mt = _metric(metric, 0.0, np.empty(0))
    # Thread t owns a contiguous range of query blocks and walks D once: each tile of GR
    # rows is read from memory once per thread and reused from L2 by all its queries.
    nqb = (m + GQ - 1) // GQ
    nt = max(1, min(nt, nqb))
    per = (nqb + nt - 1) // nt
    for t in prange(nt, nogil=True, schedule="static", num_threads=nt):
        gt = &gbuf[t, 0]
        for r0 in range(0, n, GR):
            nr = min(GR, n - r0)
            for qb in range(t * per, min(nqb, (t + 1) * per)):
                q0 = qb * GQ
                nq = min(GQ, m - q0)
                gemm_tile(pQ + q0 * K, nq, pD + r0 * K, nr, K, gt, GR, avx2)
                for a in range(nq):
                    q = q0 + a
                    _filter_rows(metric, &mt, pQ + q * K, pD + r0 * K, gt + a * GR, pc + r0,
                                 nr, K, qn[q], gamma, offset + r0, &heap_d[q, 0],
                                 &heap_i[q, 0], &heap_n[q], k, &hitbuf[t, 0])


def pair_distances(int metric, const real_t[:, ::1] Q, const real_t[:, ::1] D, double p,
                   const double[::1] W, const double[::1] invq, const double[::1] invd,
                   const int64_t[::1] qi, const int64_t[::1] di, real_t[::1] out,
                   int n_threads):
    """out[t] = dist(Q[qi[t]], D[di[t]]) exactly, for a list of candidate pairs."""
    cdef Py_ssize_t n = qi.shape[0], K = Q.shape[1], t
    cdef double *scratch
    cdef double ia, ib
    if n == 0:
        return
    cdef mmfs_metric_t mt = _metric(metric, p, W)
    cdef bint cos = invq.shape[0] > 0
    cdef int nt = max(1, n_threads)
    cdef double *buf = <double *> malloc(nt * max(1, K) * sizeof(double))
    if buf == NULL:
        raise MemoryError("pair_distances scratch")
    cdef const real_t *pQ = &Q[0, 0]
    cdef const real_t *pD = &D[0, 0]
    try:
        for t in prange(n, nogil=True, schedule="static", num_threads=nt):
            scratch = buf + threadid() * max(1, K)
            ia = invq[qi[t]] if cos else 0.0
            ib = invd[di[t]] if cos else 0.0
            out[t] = <real_t>_pair(&mt, pQ + qi[t] * K, pD + di[t] * K, K, ia, ib, scratch)
    finally:
        free(buf)
