# cython: freethreading_compatible = True
"""Sign-random-projection codes and the three stages of an LSH search (see mmfs_lsh.h).

Design
------
Codes live beside a group's rows, one per row, in two arenas: the 64-bit prefix of every
code (``prefix``, 8 bytes a row) and its other W - 1 words (``rest``).  A search runs, per
query:

1. ``candidates``, stage one: a scan of every prefix, keeping the ``n1`` rows of least
   prefix Hamming distance (rows not set in ``allow`` are skipped).  The scan keeps rows
   under a cap: the cap starts at an estimate from 1,024 evenly spaced rows, is lowered
   whenever the kept list grows past 4 * n1 (a histogram of what is kept gives the new
   cap), and is raised and the scan rerun in the rare case it kept fewer than n1.  The
   scan keeps each row's prefix too, so stage two reads only the rest of its code.  A
   batch scans for QBLOCK queries at once: each chunk of prefixes comes from memory once
   and is scanned for every query of the block while it is in cache.
2. ``candidates``, stage two: the full-code distance of those rows; the ``n2`` least
   are kept.  With ``weights`` (the query's |s_b - t_b|, see mmfs_lsh.h), a differing bit
   counts by how far the query lies from its hyperplane: a bit the query barely set says
   little, and this ranks a cluster's rows markedly better than plain Hamming.
3. ``rerank``: the exact distance of each kept row to the query, read in place from the
   row arena, offered to a bounded heap of (distance, slot).

Selection rule (both stages): with T the least distance such that at least n rows have a
distance <= T, every row closer than T is kept, then rows at exactly T in row order until
n are kept.  The kept rows are listed in row order.  The rule fixes the answer, so the
first-stage cap only changes the cost, and the result is the same for any thread count.

Every function releases the GIL and never raises on user input (mmfs.index checks it).
"""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int32_t, int64_t, intptr_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memset

import numpy as np

from mmfs._kernels._headers cimport *

cdef extern from *:
    int __builtin_popcountll(unsigned long long) nogil
    int __builtin_ctzll(unsigned long long) nogil
    void __builtin_prefetch(const void *, int, int) nogil

cdef extern from "mmfs_lsh.h" nogil:
    int MMFS_SRP_ROWS
    void mmfs_srp_dense_f32(const float *X, Py_ssize_t n, Py_ssize_t d, Py_ssize_t ld,
                            const float *P, const float *t, Py_ssize_t B, uint64_t *out,
                            float *acc, float *sums)
    void mmfs_srp_dense_f64(const double *X, Py_ssize_t n, Py_ssize_t d, Py_ssize_t ld,
                            const float *P, const float *t, Py_ssize_t B, uint64_t *out,
                            float *acc, float *sums)
    void mmfs_srp_csr(const int64_t *indptr, const int32_t *indices, const float *data,
                      Py_ssize_t r0, Py_ssize_t r1, const float *P, const float *t,
                      Py_ssize_t B, uint64_t *out, float *acc, float *sums)
    int mmfs_lsh_has_avx2()
    Py_ssize_t mmfs_lsh_scan(int avx2, const uint64_t *codes, Py_ssize_t m, int64_t base_row,
                             uint64_t q, const uint64_t *allow, int cap, int64_t *rows,
                             uint8_t *dist, uint64_t *kept, Py_ssize_t len)
    void mmfs_inv_norms_f32(const float *X, Py_ssize_t n, Py_ssize_t K, double *out)
    void mmfs_inv_norms_f64(const double *X, Py_ssize_t n, Py_ssize_t K, double *out)

DEF BLOCK = 256     # rows per parallel work item when coding
DEF CHUNK = 4096    # rows scanned between two looks at the kept list
DEF SAMPLE = 1024   # rows the first cap is estimated from ...
DEF SAMPLE_RUNS = 16  # ... in this many evenly spaced runs
DEF WEIGHT_BINS = 4095  # weighted distances are quantised to 0 .. WEIGHT_BINS
DEF QBLOCK = 8      # queries that share one scan of the prefixes in a batch
DEF AHEAD = 8       # candidate rows prefetched ahead of the one re-ranked


def srp_dense(const real_t[:, ::1] X, const float[:, ::1] P, const float[::1] t,
              uint64_t[:, ::1] out, int n_threads, float[:, ::1] sums=None):
    """out[i] = the code of row X[i] (P: d x B projections, t: B thresholds); ``sums``
    (n x B, optional) receives the projections themselves."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], B = P.shape[1], nb, b, r0, r1
    cdef float *ps = &sums[0, 0] if sums is not None and n else NULL
    if n == 0:
        return
    nb = (n + BLOCK - 1) // BLOCK
    acc_arr = np.empty((max(1, n_threads), MMFS_SRP_ROWS * (d + B)), dtype=np.float32)
    cdef float[:, ::1] acc = acc_arr
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        r0 = b * BLOCK
        r1 = min(n, r0 + BLOCK)
        if real_t is float:
            mmfs_srp_dense_f32(&X[r0, 0] if d else NULL, r1 - r0, d, d, &P[0, 0] if d else NULL,
                               &t[0], B, &out[r0, 0], &acc[threadid(), 0],
                               ps + r0 * B if ps != NULL else NULL)
        else:
            mmfs_srp_dense_f64(&X[r0, 0] if d else NULL, r1 - r0, d, d, &P[0, 0] if d else NULL,
                               &t[0], B, &out[r0, 0], &acc[threadid(), 0],
                               ps + r0 * B if ps != NULL else NULL)


def srp_csr(const int64_t[::1] indptr, const int32_t[::1] indices, const float[::1] data,
            const float[:, ::1] P, const float[::1] t, uint64_t[:, ::1] out, int n_threads,
            float[:, ::1] sums=None):
    """out[i] = the code of CSR row i (indices ascending within each row, all < P rows);
    ``sums`` as for srp_dense."""
    cdef Py_ssize_t n = out.shape[0], B = P.shape[1], nb, b, r0, r1
    cdef float *ps = &sums[0, 0] if sums is not None and n else NULL
    if n == 0:
        return
    nb = (n + BLOCK - 1) // BLOCK
    acc_arr = np.empty((max(1, n_threads), B), dtype=np.float32)
    cdef float[:, ::1] acc = acc_arr
    cdef const int32_t *pi = &indices[0] if indices.shape[0] else NULL
    cdef const float *pd = &data[0] if data.shape[0] else NULL
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        r0 = b * BLOCK
        r1 = min(n, r0 + BLOCK)
        mmfs_srp_csr(&indptr[0], pi, pd, r0, r1, &P[0, 0] if P.shape[0] else NULL, &t[0], B,
                     &out[0, 0], &acc[threadid(), 0], ps)


def has_avx2():
    """True when the scan runs its AVX2 path on this CPU."""
    return bool(mmfs_lsh_has_avx2())


cdef inline int64_t _threshold(const int64_t *hist, int top, int64_t n) noexcept nogil:
    """The least T with hist[0] + ... + hist[T] >= n (top when there is none)."""
    cdef int64_t c = 0
    cdef int v
    for v in range(top + 1):
        c += hist[v]
        if c >= n:
            return v
    return top


cdef inline Py_ssize_t _select(int64_t *rows, int32_t *dist, uint64_t *pc, Py_ssize_t m,
                               Py_ssize_t n, int top, int64_t *hist) noexcept nogil:
    """Keep n of the m (rows, dist, pc) entries by the selection rule, in place, in order;
    hist: top + 1 counters of scratch.  Returns how many are kept."""
    cdef Py_ssize_t i, kept = 0
    cdef int64_t below = 0, at_t, T
    cdef int v
    if m <= n:
        return m
    memset(hist, 0, (top + 1) * sizeof(int64_t))
    for i in range(m):
        hist[dist[i]] += 1
    T = _threshold(hist, top, n)
    for v in range(T):
        below += hist[v]
    at_t = n - below
    for i in range(m):
        if dist[i] < T or (dist[i] == T and at_t > 0):
            if dist[i] == T:
                at_t -= 1
            rows[kept] = rows[i]
            dist[kept] = dist[i]
            pc[kept] = pc[i]
            kept += 1
    return kept


cdef int _first_cap(const intptr_t *prefix_segs, int seg_bits, int64_t n_rows,
                    uint64_t q, const uint64_t *allow, Py_ssize_t n1) noexcept nogil:
    """A cap below which about 2 * n1 rows should fall, estimated from SAMPLE rows in
    SAMPLE_RUNS evenly spaced runs (few pages touched); 64 when too few are allowed."""
    cdef int64_t hist[65]
    cdef int64_t seg_len = (<int64_t>1) << seg_bits, run_len = SAMPLE // SAMPLE_RUNS
    cdef int64_t j, r, start, seen = 0
    memset(hist, 0, sizeof(hist))
    if n_rows <= SAMPLE:
        return 64
    for j in range(SAMPLE_RUNS):
        start = (n_rows - run_len) * j // (SAMPLE_RUNS - 1)
        for r in range(start, start + run_len):
            if allow == NULL or ((allow[r >> 6] >> (r & 63)) & 1):
                hist[__builtin_popcountll(
                    (<const uint64_t *>prefix_segs[r >> seg_bits])[r & (seg_len - 1)] ^ q)] += 1
                seen += 1
    if seen < 32:
        return 64
    return min(64, <int>_threshold(hist, 64, max(1, (2 * n1 * seen) // n_rows + 1)) + 1)


cdef struct _Kept:
    # What stage one keeps of one query while it scans: (row, prefix distance, prefix)
    # in row order, under ``cap``; ``ok`` turns false when memory runs out.
    int64_t *rows
    uint8_t *dist8
    uint64_t *pc
    Py_ssize_t length
    Py_ssize_t size
    int cap
    bint ok


cdef void _keep_init(_Kept *k, Py_ssize_t n1, int cap) noexcept nogil:
    k.size = 4 * n1 + 2 * CHUNK
    k.rows = <int64_t *>malloc(k.size * sizeof(int64_t))
    k.dist8 = <uint8_t *>malloc(k.size)
    k.pc = <uint64_t *>malloc(k.size * sizeof(uint64_t))
    k.ok = k.rows != NULL and k.dist8 != NULL and k.pc != NULL
    k.length = 0
    k.cap = cap


cdef void _keep_free(_Kept *k) noexcept nogil:
    free(k.rows)
    free(k.dist8)
    free(k.pc)
    k.rows = NULL
    k.dist8 = NULL
    k.pc = NULL


cdef void _keep_chunk(_Kept *k, const uint64_t *codes, Py_ssize_t m, int64_t pos, uint64_t q,
                      const uint64_t *allow, Py_ssize_t n1, int avx2) noexcept nogil:
    """Scan m prefixes (rows pos, pos + 1, ...) into k, then lower its cap when the kept
    list grows past 4 * n1 (to what n1 of the kept rows reach), or make room for ties."""
    cdef int64_t hist[65]
    cdef Py_ssize_t i, kept
    cdef int T
    cdef void *grown
    if not k.ok:
        return
    k.length = mmfs_lsh_scan(avx2, codes, m, pos, q, allow, k.cap, k.rows, k.dist8, k.pc,
                             k.length)
    if k.length <= k.size - CHUNK:
        return
    memset(hist, 0, sizeof(hist))
    for i in range(k.length):
        hist[k.dist8[i]] += 1
    T = <int>_threshold(hist, 64, n1)
    if T < k.cap:
        k.cap = T
        kept = 0
        for i in range(k.length):
            if k.dist8[i] <= T:
                k.rows[kept] = k.rows[i]
                k.dist8[kept] = k.dist8[i]
                k.pc[kept] = k.pc[i]
                kept += 1
        k.length = kept
    if k.length > k.size - CHUNK:  # ties at the cap: make room
        k.size *= 2
        grown = realloc(k.rows, k.size * sizeof(int64_t))
        k.ok = grown != NULL
        if k.ok:
            k.rows = <int64_t *>grown
            grown = realloc(k.dist8, k.size)
            k.ok = grown != NULL
        if k.ok:
            k.dist8 = <uint8_t *>grown
            grown = realloc(k.pc, k.size * sizeof(uint64_t))
            k.ok = grown != NULL
        if k.ok:
            k.pc = <uint64_t *>grown


cdef void _scan(_Kept *ks, Py_ssize_t nk, const uint64_t *qcodes, Py_ssize_t W,
                const intptr_t *prefix_segs, int seg_bits, int64_t n_rows,
                const uint64_t *allow, Py_ssize_t n1, int avx2) noexcept nogil:
    """Stage one's scan for nk queries at once: each chunk of prefixes is read from
    memory once and scanned for every query while it is in cache (a query's kept list
    does not depend on which others share its scan)."""
    cdef int64_t seg_len = (<int64_t>1) << seg_bits, pos = 0, start, stop
    cdef Py_ssize_t j
    cdef const uint64_t *codes
    while pos < n_rows:
        start = pos & (seg_len - 1)
        stop = min(seg_len, start + CHUNK, start + (n_rows - pos))
        codes = <const uint64_t *>prefix_segs[pos >> seg_bits] + start
        for j in range(nk):
            _keep_chunk(&ks[j], codes, stop - start, pos, qcodes[j * W], allow, n1, avx2)
        pos += stop - start


cdef Py_ssize_t _stage_two(_Kept *k, const intptr_t *prefix_segs, int seg_bits, int64_t n_rows,
                           const intptr_t *rest_segs, Py_ssize_t W, const uint64_t *q,
                           const uint64_t *allow, Py_ssize_t n1, Py_ssize_t n2, int avx2,
                           const float *wts, int64_t *out) noexcept nogil:
    """Finish one query after the shared scan: rescan alone, wider, in the rare case the
    cap kept fewer than n1 rows; then stage two; writes at most n2 rows to out and frees
    k.  Returns the count (-1: out of memory)."""
    cdef int64_t seg_len = (<int64_t>1) << seg_bits, r
    cdef Py_ssize_t length, i, w, kept, b
    cdef uint64_t x
    cdef double score, total, scale
    cdef const uint64_t *rest
    cdef int32_t *dist = NULL
    cdef int64_t *hist2 = NULL
    cdef double *lut = NULL
    cdef const double *tab
    cdef int v, lowest
    cdef int64_t *rows
    cdef uint64_t *pc
    cdef bint ok
    while k.ok and k.length < n1 and k.cap < 64:
        k.cap = min(64, k.cap + 8)  # the estimate was too low: scan again, wider
        k.length = 0
        _scan(k, 1, q, W, prefix_segs, seg_bits, n_rows, allow, n1, avx2)
    ok = k.ok
    length = k.length
    rows = k.rows
    pc = k.pc
    if ok:
        dist = <int32_t *>malloc((length + 1) * sizeof(int32_t))
        hist2 = <int64_t *>malloc((max(64 * W, WEIGHT_BINS) + 1) * sizeof(int64_t))
        ok = dist != NULL and hist2 != NULL
        if wts != NULL and ok:
            lut = <double *>malloc(8 * W * 256 * sizeof(double))
            ok = lut != NULL
    if not ok:
        _keep_free(k)
        free(dist)
        free(hist2)
        free(lut)
        return -1
    for i in range(length):
        dist[i] = k.dist8[i]
    kept = _select(rows, dist, pc, length, n1, 64, hist2)
    if kept > n2 and (wts != NULL or W > 1):
        scale = 0.0
        if wts != NULL:
            # Weighted Hamming distance: each differing bit b counts the query's
            # |s_b - t_b|, how far the query is from that bit's hyperplane.  A table per
            # code byte holds the sum over each of its 256 values (the bits from the
            # highest down: lut[v] = lut[v without its lowest bit] + w[lowest bit]), so a
            # row costs one lookup per byte; the sum is quantised to WEIGHT_BINS.
            total = 0.0
            for w in range(64 * W):
                total += wts[w]
            scale = WEIGHT_BINS / total if total > 0.0 else 0.0
            for b in range(8 * W):
                lut[b * 256] = 0.0
                for v in range(1, 256):
                    lowest = __builtin_ctzll(v)
                    lut[b * 256 + v] = lut[b * 256 + (v & (v - 1))] + wts[8 * b + lowest]
        for i in range(kept):
            if i + AHEAD < kept and W > 1:
                r = rows[i + AHEAD]
                __builtin_prefetch(<const uint64_t *>rest_segs[r >> seg_bits]
                                   + (r & (seg_len - 1)) * (W - 1), 0, 0)
            r = rows[i]
            rest = NULL
            if W > 1:
                rest = <const uint64_t *>rest_segs[r >> seg_bits] + (r & (seg_len - 1)) * (W - 1)
            if wts == NULL:  # Hamming distance of the whole code
                for w in range(W - 1):
                    dist[i] += __builtin_popcountll(rest[w] ^ q[w + 1])
                continue
            score = 0.0
            for w in range(W):
                x = (pc[i] if w == 0 else rest[w - 1]) ^ q[w]
                tab = lut + 8 * w * 256
                for b in range(8):
                    score += tab[b * 256 + ((x >> (8 * b)) & 255)]
            dist[i] = min(WEIGHT_BINS, <int32_t>(score * scale))
        kept = _select(rows, dist, pc, kept, n2, WEIGHT_BINS if wts != NULL else <int>(64 * W),
                       hist2)
    kept = min(kept, n2)
    for i in range(kept):
        out[i] = rows[i]
    _keep_free(k)
    free(dist)
    free(hist2)
    free(lut)
    return kept




def candidates(const intptr_t[::1] prefix_segs, const intptr_t[::1] rest_segs, int seg_bits,
               int64_t n_rows, const uint64_t[:, ::1] qcodes, const uint64_t[::1] allow,
               Py_ssize_t n1, int64_t[:, ::1] out, int64_t[::1] counts, int n_threads,
               bint portable=False, const float[:, ::1] weights=None):
    """Stages one and two for every query: counts[q] rows of least distance to qcodes[q],
    in row order, into out[q] (n2 = out.shape[1]; n1 >= n2 for stage one).  ``allow``:
    one bit per row (empty: every row).  Returns the number of queries that ran out of
    memory (their count reads -1).  ``portable``: skip the AVX2 path (for the tests that
    compare the two).  ``weights`` (n_queries x B, optional): stage two ranks by the
    weighted Hamming distance, each differing bit b counting weights[q, b]."""
    cdef Py_ssize_t nq = qcodes.shape[0], W = qcodes.shape[1], n2 = out.shape[1], i, nb, blk
    cdef Py_ssize_t q0, m
    cdef _Kept *ks
    cdef int avx2 = mmfs_lsh_has_avx2() and not portable
    cdef const uint64_t *pa = &allow[0] if allow.shape[0] else NULL
    cdef const intptr_t *prest = &rest_segs[0] if rest_segs.shape[0] else NULL
    cdef int64_t failed = 0
    if nq == 0:
        return 0
    if n_rows == 0 or n2 == 0:
        counts[:] = 0
        return 0
    nb = (nq + QBLOCK - 1) // QBLOCK
    for blk in prange(nb, nogil=True, schedule="dynamic", num_threads=n_threads):
        q0 = blk * QBLOCK
        m = min(QBLOCK, nq - q0)
        ks = <_Kept *>malloc(m * sizeof(_Kept))
        if ks == NULL:
            for i in range(q0, q0 + m):
                counts[i] = -1
            failed += m
            continue
        for i in range(m):
            _keep_init(&ks[i], n1, _first_cap(&prefix_segs[0], seg_bits, n_rows, qcodes[q0 + i, 0],
                                              pa, n1))
        _scan(ks, m, &qcodes[q0, 0], W, &prefix_segs[0], seg_bits, n_rows, pa, n1, avx2)
        for i in range(m):
            counts[q0 + i] = _stage_two(
                &ks[i], &prefix_segs[0], seg_bits, n_rows, prest, W, &qcodes[q0 + i, 0], pa, n1,
                n2, avx2, &weights[q0 + i, 0] if weights is not None else NULL, &out[q0 + i, 0])
            if counts[q0 + i] < 0:
                failed += 1
        free(ks)
    return failed


cdef void _sort_heap(double *hd, int64_t *hi, int64_t n) noexcept nogil:
    """Order a heap's n entries by (distance, index), NaN last (insertion sort: n = k)."""
    cdef int64_t a, b
    cdef double d
    cdef int64_t x
    for a in range(1, n):
        d = hd[a]
        x = hi[a]
        b = a - 1
        while b >= 0 and key_lt(d, x, hd[b], hi[b]):
            hd[b + 1] = hd[b]
            hi[b + 1] = hi[b]
            b -= 1
        hd[b + 1] = d
        hi[b + 1] = x


def rerank(const int64_t[:, ::1] cand, const int64_t[::1] counts, const intptr_t[::1] row_segs,
           int seg_bits, int64_t record_bytes, int64_t slot_offset, int64_t offset,
           int metric, double p, const double[::1] W, const real_t[:, ::1] Q,
           double[:, ::1] heap_d, int64_t[:, ::1] heap_i, int64_t[::1] heap_n, int n_threads):
    """Offer (exact distance, slot) of each query's candidate rows to its heap, then sort
    the heap: heap_d[q, :heap_n[q]] and heap_i[q, :heap_n[q]] end in (distance, slot)
    order.  A row's slot is the int64 at slot_offset of its record, its vector the
    real_t[K] at offset."""
    cdef Py_ssize_t nq = Q.shape[0], K = Q.shape[1], k = heap_d.shape[1], i, c, m, o
    cdef int64_t seg_mask = ((<int64_t>1) << seg_bits) - 1, r, ahead
    cdef mmfs_metric_t mt = _metric(metric, p, W)
    cdef bint cos = metric == MMFS_COSINE
    cdef double iq, ib, d
    cdef const char *rec
    cdef const real_t *v
    cdef double *scratch
    if nq == 0 or k == 0:
        return
    for i in prange(nq, nogil=True, schedule="dynamic", num_threads=n_threads):
        scratch = <double *>malloc((K + 1) * sizeof(double))
        iq = 0.0
        if cos:
            if real_t is float:
                mmfs_inv_norms_f32(&Q[i, 0], 1, K, &iq)
            else:
                mmfs_inv_norms_f64(&Q[i, 0], 1, K, &iq)
        m = counts[i]
        for c in range(m):
            if c + AHEAD < m:  # the whole vector, a few rows ahead: each is a cache miss
                ahead = cand[i, c + AHEAD]
                rec = <const char *>row_segs[ahead >> seg_bits] + (ahead & seg_mask) * record_bytes
                for o in range(0, K * <Py_ssize_t>sizeof(real_t) + offset, 64):
                    __builtin_prefetch(rec + o, 0, 0)
            r = cand[i, c]
            rec = <const char *>row_segs[r >> seg_bits] + (r & seg_mask) * record_bytes
            v = <const real_t *>(rec + offset)
            ib = 0.0
            if cos:
                if real_t is float:
                    mmfs_inv_norms_f32(v, 1, K, &ib)
                else:
                    mmfs_inv_norms_f64(v, 1, K, &ib)
            d = _pair(&mt, &Q[i, 0], v, K, iq, ib, scratch)
            heap_push(&heap_d[i, 0], &heap_i[i, 0], &heap_n[i], k, d,
                      (<const int64_t *>(rec + slot_offset))[0])
        free(scratch)
        _sort_heap(&heap_d[i, 0], &heap_i[i, 0], heap_n[i])
