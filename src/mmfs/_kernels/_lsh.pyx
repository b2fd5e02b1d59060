# cython: freethreading_compatible = True
"""Sign-random-projection codes and the three stages of an LSH search (see mmfs_lsh.h).

Design
------
Codes live beside a group's rows, one per row, in two arenas: the 64-bit prefix of every
code (``prefix``, 8 bytes a row) and its other W - 1 words (``rest``).  A row's bucket
in table t (of T) is bits [t * K, (t + 1) * K) of its code's word 1 (word 0 for a
one-word code), and each bucket table (``table_build``) lists the rows of each bucket.
A search runs, per query:

0. ``candidates`` with buckets (``table_bits`` = K > 0): the query's pool is the rows in
   the P buckets it probes in each table (``_probes``: its own key with subsets of its
   least sure key bits flipped, least total |s_b - t_b| first; a row found in two tables
   once), read from the tables, and from a scan of the keys of the rows the tables do
   not cover yet.  Stage one then keeps 2 * n2 of
   the pool by prefix distance.  A pool of fewer than n2 rows falls back to the scan.
   The pool is a set of rows defined by the codes alone, so the table only makes it
   cheaper to find: the answers do not depend on which rows the table covers.
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
distance <= T, every row closer than T is kept, then the rows at exactly T of least row
until n are kept (whatever order the list is in: a pool comes bucket by bucket).  The
rule fixes the answer, so the first-stage cap and the table only change the cost, and
the result is the same for any thread count.

Every function releases the GIL and never raises on user input (mmfs.index checks it).
"""

from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY
from libc.stdint cimport (
    INT64_MAX, int32_t, int64_t, intptr_t, uint8_t, uint16_t, uint32_t, uint64_t,
)
from libc.stdlib cimport calloc, free, malloc, realloc
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
    Py_ssize_t mmfs_lsh_pool_prefixes(const intptr_t *segs, int seg_bits, const uint64_t *allow,
                                      uint64_t q, int64_t *rows, Py_ssize_t n, uint8_t *dist,
                                      uint64_t *kept)
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
DEF BUCKET_STAGE = 2  # stage one keeps BUCKET_STAGE * n2 rows of a bucket pool (not n1)
DEF PROBE_BITS = 12  # a query's least sure key bits whose subsets its probes flip (at least)
DEF PROBE_BITS_MAX = 16
DEF PROBE_BINS = 4096  # probe weights are quantised to 0 .. PROBE_BINS - 1


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


cdef int64_t _nth_smallest(int64_t *a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """The k-th smallest (0-based) of n values; reorders a (quickselect, middle pivot)."""
    cdef Py_ssize_t lo = 0, hi = n - 1, i, j
    cdef int64_t pivot, x
    while lo < hi:
        pivot = a[lo + (hi - lo) // 2]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                x = a[i]
                a[i] = a[j]
                a[j] = x
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    return a[k]


ctypedef fused dist_t:
    uint8_t
    int32_t


cdef inline Py_ssize_t _select(int64_t *rows, dist_t *dist, uint64_t *pc, Py_ssize_t m,
                               Py_ssize_t n, int top, int64_t *hist) noexcept nogil:
    """Keep n of the m (rows, dist, pc) entries by the selection rule, in place, in list
    order; hist: top + 1 counters of scratch.  Rows must be distinct (the rule takes the
    ties at T by row, whatever order the list is in).  Returns how many are kept (-1:
    out of memory).  The passes over the list do not branch on what they read: in a
    pool of thousands, whether a row is kept is a coin toss the CPU cannot predict.
    Prefix distances are counted in four histograms, so that runs of one distance (they
    bunch around the mean) do not wait on each other's increments."""
    cdef Py_ssize_t i, kept = 0, n_at = 0
    cdef int64_t below = 0, last_row = INT64_MAX, T, r
    cdef int64_t *ties
    cdef int64_t h4[4 * 65]
    cdef int v
    cdef bint keep
    if m <= n:
        return m
    if dist_t is uint8_t and top < 65:
        memset(h4, 0, sizeof(h4))
        for i in range(0, m - 3, 4):
            h4[dist[i]] += 1
            h4[65 + dist[i + 1]] += 1
            h4[130 + dist[i + 2]] += 1
            h4[195 + dist[i + 3]] += 1
        for i in range(m & ~(<Py_ssize_t>3), m):
            h4[dist[i]] += 1
        for v in range(top + 1):
            hist[v] = (h4[v] + h4[65 + v]) + (h4[130 + v] + h4[195 + v])
    else:
        memset(hist, 0, (top + 1) * sizeof(int64_t))
        for i in range(m):
            hist[dist[i]] += 1
    T = _threshold(hist, top, n)
    for v in range(T):
        below += hist[v]
    if below + hist[T] > n:  # more ties at T than places: the lowest rows among them
        ties = <int64_t *>malloc((hist[T] + 1) * sizeof(int64_t))
        if ties == NULL:
            return -1
        for i in range(m):
            ties[n_at] = rows[i]
            n_at += dist[i] == T
        last_row = _nth_smallest(ties, n_at, n - below - 1)
        free(ties)
    for i in range(m):
        r = rows[i]
        keep = (dist[i] < T) | ((dist[i] == T) & (r <= last_row))
        rows[kept] = r
        dist[kept] = dist[i]
        pc[kept] = pc[i]
        kept += keep
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
    bint pooled  # the rows come from probed buckets (see _pool), not from a scan


cdef void _keep_init(_Kept *k, Py_ssize_t n1, int cap) noexcept nogil:
    k.size = 4 * n1 + 2 * CHUNK
    k.rows = <int64_t *>malloc(k.size * sizeof(int64_t))
    k.dist8 = <uint8_t *>malloc(k.size)
    k.pc = <uint64_t *>malloc(k.size * sizeof(uint64_t))
    k.ok = k.rows != NULL and k.dist8 != NULL and k.pc != NULL
    k.length = 0
    k.cap = cap
    k.pooled = False


cdef void _keep_free(_Kept *k) noexcept nogil:
    free(k.rows)
    free(k.dist8)
    free(k.pc)
    k.rows = NULL
    k.dist8 = NULL
    k.pc = NULL


cdef void _keep_reserve(_Kept *k, Py_ssize_t size) noexcept nogil:
    """Room for at least size entries in k (k.ok turns false when memory runs out)."""
    cdef void *grown
    if not k.ok or k.size >= size:
        return
    k.size = size
    grown = realloc(k.rows, size * sizeof(int64_t))
    k.ok = grown != NULL
    if k.ok:
        k.rows = <int64_t *>grown
        grown = realloc(k.dist8, size)
        k.ok = grown != NULL
    if k.ok:
        k.dist8 = <uint8_t *>grown
        grown = realloc(k.pc, size * sizeof(uint64_t))
        k.ok = grown != NULL
    if k.ok:
        k.pc = <uint64_t *>grown


cdef void _keep_chunk(_Kept *k, const uint64_t *codes, Py_ssize_t m, int64_t pos, uint64_t q,
                      const uint64_t *allow, Py_ssize_t n1, int avx2) noexcept nogil:
    """Scan m prefixes (rows pos, pos + 1, ...) into k, then lower its cap when the kept
    list grows past 4 * n1 (to what n1 of the kept rows reach), or make room for ties."""
    cdef int64_t hist[65]
    cdef Py_ssize_t i, kept
    cdef int T
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
        _keep_reserve(k, 2 * k.size)


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
    cdef double wmax, unit
    cdef int64_t a0, a1, a2, a3, total
    cdef int shift = 0
    cdef const uint64_t *rest
    cdef int32_t *dist = NULL
    cdef int64_t *hist2 = NULL
    cdef uint16_t *lut = NULL
    cdef uint16_t wq
    cdef uint16_t nib[32]  # the sums over each value of a byte's low nibble, then high
    cdef int lo
    cdef const uint16_t *tab
    cdef int v, top
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
        dist = <int32_t *>malloc((min(length, n1) + 1) * sizeof(int32_t))
        hist2 = <int64_t *>malloc((max(64 * W, WEIGHT_BINS) + 1) * sizeof(int64_t))
        ok = dist != NULL and hist2 != NULL
        if wts != NULL and ok:
            lut = <uint16_t *>malloc(8 * W * 256 * sizeof(uint16_t))
            ok = lut != NULL
    if not ok:
        _keep_free(k)
        free(dist)
        free(hist2)
        free(lut)
        return -1
    kept = _select(rows, k.dist8, pc, length, n1, 64, hist2)
    for i in range(kept):  # kept is -1 when the selection ran out of memory
        dist[i] = k.dist8[i]
    if kept > n2 and (wts != NULL or W > 1):
        total = 0
        if wts != NULL:
            # Weighted Hamming distance: each differing bit b counts the query's
            # |s_b - t_b|, how far the query is from that bit's hyperplane, as an integer
            # weight of 0 .. 255 (floor(w_b * (255 / max w) + 0.5), in double; NaN: 0).  A
            # table per code byte holds the sum over each of its 256 values (the sum of
            # its low nibble's bits plus that of its high nibble's; uint16, so the tables
            # stay in the first-level cache), so a row costs one lookup per byte; the sum
            # is shifted right until the total weight fits 0 .. WEIGHT_BINS.
            wmax = 0.0
            for w in range(64 * W):
                if wts[w] > wmax:
                    wmax = wts[w]
            unit = 255.0 / wmax if wmax > 0.0 and wmax < INFINITY else 0.0
            for b in range(8 * W):
                nib[0] = 0
                nib[16] = 0
                for top in range(8):
                    wq = <uint16_t>(wts[8 * b + top] * unit + 0.5) if wts[8 * b + top] > 0.0 else 0
                    total += wq
                    v = top & 3  # the nibble values whose highest bit is this one
                    for lo in range(1 << v, 2 << v):
                        nib[16 * (top >> 2) + lo] = nib[16 * (top >> 2) + lo - (1 << v)] + wq
                for v in range(16):
                    for lo in range(16):
                        lut[b * 256 + 16 * v + lo] = nib[16 + v] + nib[lo]
            while (total >> shift) > WEIGHT_BINS:
                shift += 1
        for i in range(kept):
            if i + 4 * AHEAD < kept and W > 1:
                r = rows[i + 4 * AHEAD]
                __builtin_prefetch(<const uint64_t *>rest_segs[r >> seg_bits]
                                   + (r & (seg_len - 1)) * (W - 1), 0, 3)
            r = rows[i]
            rest = NULL
            if W > 1:
                rest = <const uint64_t *>rest_segs[r >> seg_bits] + (r & (seg_len - 1)) * (W - 1)
            if wts == NULL:  # Hamming distance of the whole code
                for w in range(W - 1):
                    dist[i] += __builtin_popcountll(rest[w] ^ q[w + 1])
                continue
            a0 = a1 = a2 = a3 = 0  # four sums: the lookups do not wait on each other
            for w in range(W):
                x = (pc[i] if w == 0 else rest[w - 1]) ^ q[w]
                tab = lut + 8 * w * 256
                a0 += tab[x & 255] + tab[256 + ((x >> 8) & 255)]
                a1 += tab[512 + ((x >> 16) & 255)] + tab[768 + ((x >> 24) & 255)]
                a2 += tab[1024 + ((x >> 32) & 255)] + tab[1280 + ((x >> 40) & 255)]
                a3 += tab[1536 + ((x >> 48) & 255)] + tab[1792 + (x >> 56)]
            dist[i] = <int32_t>(((a0 + a1) + (a2 + a3)) >> shift)
        kept = _select(rows, dist, pc, kept, n2, WEIGHT_BINS if wts != NULL else <int>(64 * W),
                       hist2)
    kept = min(kept, n2)
    for i in range(kept):  # kept is -1 when a selection ran out of memory
        out[i] = rows[i]
    _keep_free(k)
    free(dist)
    free(hist2)
    free(lut)
    return kept



# --------------------------------------------------------------------------- buckets


def table_build(const intptr_t[::1] key_segs, int seg_bits, Py_ssize_t stride, int64_t n_rows,
                int bits, int32_t[::1] out, int shift=0):
    """The bucket table of rows [0, n_rows): a row's bucket is ``bits`` bits of its key
    word (the first of each ``stride`` words of the arena ``key_segs``) from bit
    ``shift`` up.  out (2^bits + 1 + n_rows int32): the offsets of the buckets, then the
    rows of bucket 0, 1, ... each in row order."""
    cdef int64_t seg_mask = ((<int64_t>1) << seg_bits) - 1, r
    cdef Py_ssize_t nb = (<Py_ssize_t>1) << bits, b
    cdef uint64_t kmask = <uint64_t>nb - 1
    cdef int32_t *off = &out[0]
    cdef int32_t *rows = &out[0] + nb + 1
    cdef int32_t *key
    with nogil:
        key = <int32_t *>malloc(max(1, n_rows) * sizeof(int32_t))
        if key != NULL:
            memset(off, 0, (nb + 1) * sizeof(int32_t))
            for r in range(n_rows):
                key[r] = <int32_t>(((<const uint64_t *>key_segs[r >> seg_bits])[
                    (r & seg_mask) * stride] >> shift) & kmask)
                off[key[r] + 1] += 1
            for b in range(nb):
                off[b + 1] += off[b]
            for r in range(n_rows):  # off[b] walks bucket b, then is set back below
                rows[off[key[r]]] = <int32_t>r
                off[key[r]] += 1
            for b in range(nb, 0, -1):
                off[b] = off[b - 1]
            off[0] = 0
            free(key)
    if key == NULL:
        raise MemoryError("the bucket table could not allocate its keys")


cdef Py_ssize_t _probes(const float *wk, int K, uint64_t qkey, Py_ssize_t P,
                        uint32_t *out) noexcept nogil:
    """The buckets a query probes: its own key with the bits of a subset S of its m least
    sure key bits flipped (the bits of least weight, ties by bit; m = PROBE_BITS, more for
    a large P), for the P subsets of least total weight (quantised to PROBE_BINS, ties by
    S).  out: room for P entries.  Returns the count (-1: out of memory)."""
    cdef int order[64]
    cdef int m = PROBE_BITS, i, j, b
    cdef Py_ssize_t n_sub, sub, rest, count = 0
    cdef float *score
    cdef uint16_t *bin_of
    cdef uint32_t mask
    cdef int64_t *hist
    cdef int64_t below = 0, at_t, T
    cdef float total = 0.0, scale, x
    while m < PROBE_BITS_MAX and ((<Py_ssize_t>1) << (m - 2)) < P:
        m += 1
    m = min(m, K)
    n_sub = (<Py_ssize_t>1) << m
    P = min(P, n_sub)
    for i in range(K):  # insertion sort of the key bits by (weight, bit); NaN last
        b = i
        j = i
        while j > 0 and (wk[order[j - 1]] > wk[b] or (wk[order[j - 1]] != wk[order[j - 1]]
                                                     and wk[b] == wk[b])):
            order[j] = order[j - 1]
            j -= 1
        order[j] = b
    score = <float *>malloc(n_sub * sizeof(float))
    bin_of = <uint16_t *>malloc(n_sub * sizeof(uint16_t))
    hist = <int64_t *>calloc(PROBE_BINS, sizeof(int64_t))
    if score == NULL or bin_of == NULL or hist == NULL:
        free(score)
        free(bin_of)
        free(hist)
        return -1
    # A subset's score is that of the subset without its lowest bit, plus that bit's
    # weight; the whole set's, summed in that same order first, scales every score to
    # its bin in the same pass.
    for i in range(m - 1, -1, -1):
        total = total + wk[order[i]]
    scale = (PROBE_BINS - 1) / total if total > 0.0 else 0.0
    for sub in range(n_sub):
        score[sub] = score[sub & (sub - 1)] + wk[order[__builtin_ctzll(sub)]] if sub else 0.0
        x = score[sub] * scale
        bin_of[sub] = <uint16_t>(x if x < PROBE_BINS - 1 else PROBE_BINS - 1)  # NaN: last
        hist[bin_of[sub]] += 1
    T = _threshold(hist, PROBE_BINS - 1, P)
    for i in range(T):
        below += hist[i]
    at_t = P - below
    for sub in range(n_sub):
        i = bin_of[sub]
        if i < T or (i == T and at_t > 0):
            if i == T:
                at_t -= 1
            mask = 0
            rest = sub
            while rest:
                mask |= (<uint32_t>1) << order[__builtin_ctzll(rest)]
                rest &= rest - 1
            out[count] = <uint32_t>(qkey ^ mask)
            count += 1
    free(score)
    free(bin_of)
    free(hist)
    return count


cdef void _pool(_Kept *k, const uint32_t *probes, const Py_ssize_t *n_probes, Py_ssize_t pmax,
                int T, int K, const int32_t *table, int64_t table_rows,
                const intptr_t *prefix_segs, const intptr_t *key_segs, Py_ssize_t key_stride,
                int seg_bits, int64_t n_rows, uint64_t q, const uint64_t *allow) noexcept nogil:
    """Stage one's pool when buckets are probed: every row below n_rows, set in allow,
    whose bucket in some table t is one of that table's probes (probes[t * pmax], ...,
    n_probes[t] of them), with its prefix distance (k.cap stays 64).  Rows the tables
    cover are read from their buckets; the others (the tail: rows written since the
    tables were built) by a scan of their keys.  With T > 1 tables, a set of the rows
    found (open addressing, at most half full) keeps a row found in two tables once.
    k.ok turns false when memory runs out."""
    cdef int64_t seg_mask = ((<int64_t>1) << seg_bits) - 1, r
    cdef int64_t covered = min(table_rows, n_rows) if table != NULL else 0
    cdef Py_ssize_t nb = (<Py_ssize_t>1) << K, block = nb + 1 + table_rows
    cdef Py_ssize_t bwords = (nb >> 6) + 1, total = 0, p, i, lo, hi, length
    cdef const int32_t *off
    cdef const int32_t *trows
    cdef const uint32_t *pr
    cdef uint64_t kmask = <uint64_t>nb - 1, key, word
    cdef uint64_t *bits = NULL
    cdef int32_t *seen = NULL
    cdef uint32_t h, set_mask = 0
    cdef int t, set_shift = 32
    if table != NULL:
        for t in range(T):
            off = table + t * block
            for p in range(n_probes[t]):
                total += off[probes[t * pmax + p] + 1] - off[probes[t * pmax + p]]
    if covered < n_rows:
        total += n_rows - covered
        bits = <uint64_t *>calloc(T * bwords, sizeof(uint64_t))
        if bits == NULL:
            k.ok = False
            return
        for t in range(T):
            for p in range(n_probes[t]):
                key = probes[t * pmax + p]
                bits[t * bwords + (key >> 6)] |= (<uint64_t>1) << (key & 63)
    if T > 1 and covered > 0:
        while set_shift > 1 and (<Py_ssize_t>1 << (32 - set_shift)) < 2 * total:
            set_shift -= 1
        set_mask = (<uint32_t>1 << (32 - set_shift)) - 1
        seen = <int32_t *>malloc((<Py_ssize_t>set_mask + 1) * sizeof(int32_t))
        k.ok = seen != NULL
        if k.ok:
            memset(seen, 0xff, (<Py_ssize_t>set_mask + 1) * sizeof(int32_t))
    _keep_reserve(k, total + 1)
    if not k.ok:
        free(bits)
        free(seen)
        return
    # The rows first: the buckets' (a run each), then the tail's whose key is probed;
    # then their prefixes (random reads, prefetched ahead).
    length = 0
    for t in range(T if table != NULL else 0):
        off = table + t * block
        trows = off + nb + 1
        pr = probes + t * pmax
        for p in range(n_probes[t]):
            if p + 2 * AHEAD < n_probes[t]:  # the offsets two steps ahead, the rows one
                __builtin_prefetch(off + pr[p + 2 * AHEAD], 0, 3)
            if p + AHEAD < n_probes[t]:
                __builtin_prefetch(trows + off[pr[p + AHEAD]], 0, 3)
            lo = off[pr[p]]
            hi = off[pr[p] + 1]
            for i in range(lo, hi):
                r = trows[i]
                if r < 0 or r >= covered:
                    continue
                if seen != NULL:  # Fibonacci hashing, then the next free place
                    h = (<uint32_t>r * <uint32_t>2654435769) >> set_shift
                    while seen[h] >= 0 and seen[h] != r:
                        h = (h + 1) & set_mask
                    if seen[h] == r:
                        continue
                    seen[h] = <int32_t>r
                k.rows[length] = r
                length += 1
    for r in range(covered, n_rows):
        word = (<const uint64_t *>key_segs[r >> seg_bits])[(r & seg_mask) * key_stride]
        for t in range(T):
            key = (word >> (t * K)) & kmask
            if (bits[t * bwords + (key >> 6)] >> (key & 63)) & 1:
                k.rows[length] = r
                length += 1
                break
    length = mmfs_lsh_pool_prefixes(prefix_segs, seg_bits, allow, q, k.rows, length, k.dist8,
                                    k.pc)
    k.length = length
    k.cap = 64
    k.pooled = True
    free(bits)
    free(seen)


def candidates(const intptr_t[::1] prefix_segs, const intptr_t[::1] rest_segs, int seg_bits,
               int64_t n_rows, const uint64_t[:, ::1] qcodes, const uint64_t[::1] allow,
               Py_ssize_t n1, int64_t[:, ::1] out, int64_t[::1] counts, int n_threads,
               bint portable=False, const float[:, ::1] weights=None, int table_bits=0,
               const int32_t[::1] table=None, int64_t table_rows=0, Py_ssize_t probes=0,
               int tables=1):
    """Stages one and two for every query: counts[q] rows of least distance to qcodes[q]
    into out[q] (n2 = out.shape[1]; n1 >= n2 for stage one).  ``allow``: one bit per row
    (empty: every row).  Returns the number of queries that ran out of memory (their
    count reads -1).  ``portable``: skip the AVX2 path (for the tests that compare the
    two).  ``weights`` (n_queries x B, optional): stage two ranks by the weighted Hamming
    distance, each differing bit b counting weights[q, b].

    ``table_bits`` = K > 0 (weights required): stage one's pool is the rows in
    ``probes`` buckets of each of ``tables`` tables (see _probes; a row's bucket in table
    t is bits [t * K, (t + 1) * K) of its code's word 1, word 0 for a one-word code), not
    every row; a query whose pool holds fewer than n2 rows scans every prefix instead.
    ``table`` (``tables`` blocks, each as table_build writes it with shift t * K, over
    the first ``table_rows`` rows; None: no table) only makes that faster."""
    cdef Py_ssize_t nq = qcodes.shape[0], W = qcodes.shape[1], n2 = out.shape[1], i, nb, blk
    cdef Py_ssize_t q0, m, t
    cdef Py_ssize_t n_probes[64]
    cdef _Kept *ks
    cdef uint32_t *probe_buf
    cdef int avx2 = mmfs_lsh_has_avx2() and not portable
    cdef const uint64_t *pa = &allow[0] if allow.shape[0] else NULL
    cdef const intptr_t *prest = &rest_segs[0] if rest_segs.shape[0] else NULL
    cdef const int32_t *ptable = &table[0] if table is not None and table.shape[0] else NULL
    cdef Py_ssize_t kw = 1 if W > 1 else 0
    cdef const intptr_t *key_segs = prest if W > 1 else &prefix_segs[0]
    cdef bint buckets = (table_bits > 0 and weights is not None and probes > 0
                         and 1 <= tables <= 64 // table_bits)
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
        probe_buf = <uint32_t *>malloc(max(1, tables * probes) * sizeof(uint32_t)) if (
            buckets) else NULL
        if ks == NULL or (buckets and probe_buf == NULL):
            for i in range(q0, q0 + m):
                counts[i] = -1
            failed += m
            free(ks)
            free(probe_buf)
            continue
        if buckets:
            for i in range(m):
                _keep_init(&ks[i], n1, 64)
                if not ks[i].ok:
                    continue
                for t in range(tables):
                    n_probes[t] = _probes(
                        &weights[q0 + i, 64 * kw + t * table_bits], table_bits,
                        (qcodes[q0 + i, kw] >> (t * table_bits)) & (
                            (<uint64_t>1 << table_bits) - 1),
                        probes, probe_buf + t * probes)
                    if n_probes[t] < 0:
                        ks[i].ok = False
                if not ks[i].ok:
                    continue
                _pool(&ks[i], probe_buf, n_probes, probes, tables, table_bits, ptable,
                      table_rows, &prefix_segs[0], key_segs, W - 1 if W > 1 else 1, seg_bits,
                      n_rows, qcodes[q0 + i, 0], pa)
                if ks[i].ok and ks[i].length < n2:  # too few rows in the buckets: scan all
                    ks[i].length = 0
                    ks[i].pooled = False
                    ks[i].cap = _first_cap(&prefix_segs[0], seg_bits, n_rows,
                                           qcodes[q0 + i, 0], pa, n1)
                    _scan(&ks[i], 1, &qcodes[q0 + i, 0], W, &prefix_segs[0], seg_bits, n_rows,
                          pa, n1, avx2)
        else:
            for i in range(m):
                _keep_init(&ks[i], n1, _first_cap(&prefix_segs[0], seg_bits, n_rows,
                                                  qcodes[q0 + i, 0], pa, n1))
            _scan(ks, m, &qcodes[q0, 0], W, &prefix_segs[0], seg_bits, n_rows, pa, n1, avx2)
        free(probe_buf)
        for i in range(m):
            counts[q0 + i] = _stage_two(
                &ks[i], &prefix_segs[0], seg_bits, n_rows, prest, W, &qcodes[q0 + i, 0], pa,
                min(n1, BUCKET_STAGE * n2) if ks[i].pooled else n1, n2, avx2,
                &weights[q0 + i, 0] if weights is not None else NULL, &out[q0 + i, 0])
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
