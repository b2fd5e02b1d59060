# cython: freethreading_compatible = True
"""Read kernels of a feature group: key -> slot -> row -> bytes.

Design
------
A feature group stores every write as an immutable *record* (one row of fixed width) in
an append-only arena, and keeps, per committed generation, a *page table* saying which
row is each entity's current one.  A read is three hops, all done here without Python:

  key --(key index: open-addressing hash, mmfs_hash.h)--> slot
  slot --(directory[slot >> page_bits] -> page; page[slot & (P - 1)])--> row
  row --(row_segs[row >> rseg_bits] + (row & (R - 1)) * record_bytes)--> record bytes

Arrays (all little-endian, mapped from the store's files; see mmfs/group.py):

  key index        int64: keys[cap], slots[cap]; str: hashes[cap], slots[cap],
                   key_bytes[...], key_offsets[n + 1]      (see _hash.pyx)
  directory        int64[n_dir]: page id of each run of P = 2**page_bits slots, -1: none
  page segments    int64[PS * P] each (PS = 2**pseg_bits pages per segment); page id p
                   lives in segment p >> pseg_bits at element (p & (PS - 1)) * P
  row segments     uint8[R * record_bytes] each (R = 2**rseg_bits rows per segment)

Every record starts with its own slot as an int64 (offset 0) and its event time (offset
8), then the features.  Segments are passed as base addresses (intptr_t), which the
caller keeps alive by holding the arrays in the RowTable (`refs`).

Trust.  These arrays come from files, so nothing in them is trusted: a slot beyond the
version's n_slots reads as absent; a page id, row id or directory entry out of range, or
a record whose slot field is not the slot that led to it, is corruption (-2), never a
read outside an array.  The Python layer raises CorruptStoreError on it.

Freshness.  `head` points at the store's generation counter (HEAD.mmfs, updated in place
by the writer after each commit); the one-key reads return -3 when it is greater than
the generation this table was built for, so the caller reloads and retries: the
"cheap generation check" costs one load from a page that is always resident.  (A HEAD
behind the newest manifest is normal after a writer died between publishing a manifest
and announcing it: the table then simply stays current.)
"""

cimport numpy as cnp
import numpy as np
from cython.parallel cimport prange
from libc.stdint cimport INT64_MAX, int8_t, int32_t, int64_t, intptr_t, uint8_t, uint64_t
from libc.string cimport memcpy, memset

from mmfs._kernels._hash_api cimport (
    MMFS_PROBE_CORRUPT,
    mmfs_lookup_int,
    mmfs_lookup_str,
    mmfs_probe_int,
    mmfs_probe_str,
    mmfs_xxh64,
)

DEF CHUNK = 4096
DEF AHEAD = 12  # records prefetched ahead of a gather
DEF STAGE = 32  # keys a fused read takes through each stage together
DEF GET_CHUNK = 1024  # keys a thread of a fused read takes at a time

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define MMFS_PREFETCH(p) __builtin_prefetch((p), 0, 0)
    #else
    #define MMFS_PREFETCH(p) ((void)(p))
    #endif
    """
    void MMFS_PREFETCH(const void *p) noexcept nogil

cdef extern from "mmfs_affine.h":
    int MMFS_AFF_F64
    void mmfs_affine_f32(float *x, int64_t n, const double *sub, const double *mul,
                         const double *add, const double *lo, const double *hi,
                         const double *fill, int flags) noexcept nogil
    void mmfs_affine_f64(double *x, int64_t n, const double *sub, const double *mul,
                         const double *add, const double *lo, const double *hi,
                         const double *fill, int flags) noexcept nogil
    int MMFS_AFF_F32MATH
    void mmfs_affine32(float *x, int64_t n, const float *shi, const float *slo,
                       const float *m, const float *c, const float *lo, const float *hi,
                       const float *fill, int flags) noexcept nogil

cnp.import_array()

cdef enum:
    K_MISSING = -1
    K_CORRUPT = -2
    K_STALE = -3

MISSING = K_MISSING
CORRUPT = K_CORRUPT
STALE = K_STALE

#: A tombstone -- the row a delete writes -- holds its slot with this bit set (slots are
#: below 2**62): the key has no value from the tombstone's event time on.  A history
#: search that ends on one answers -1; the page table never points at one.
cdef int64_t TOMB = (<int64_t>1) << 62
TOMBSTONE = TOMB


cdef inline const void *_addr(object a):
    """The address of a C-contiguous array's first byte (NULL for an empty one)."""
    if a.shape[0] == 0:
        return NULL
    return <const void *><intptr_t>a.ctypes.data


cdef class FieldPlan:
    """Which fields of a record a read copies, and where they go in the output block:
    key i's fields go back to back into out[i * row_bytes:(i + 1) * row_bytes] (field f
    at starts[f]), so the block is a record array of the selection; when every field is
    float32 it is the (n, d) float32 feature matrix itself.  Built once per feature
    selection and reused.

    A transformed read adds two things.  Fields with offset -1 are reserved, not copied
    (zeros for a missing key, otherwise left as they are): the caller computes the
    transforms that are not affine into them.  And *affine segments*: after copying a found key's
    fields, the kernel applies each segment's affine step (mmfs_affine.h) in place to
    ``counts[s]`` float32 (float64 when ``kinds[s] & 1``) elements at byte ``at[s]`` of
    the key's output, with per-element parameters ``params[:, first[s]:first[s] +
    counts[s]]`` (rows: sub, mul, add, lo, hi, fill; ``kinds[s]``'s other bits say
    which parts do anything).  A float32 segment whose kind has the F32MATH bit computes
    in float32 with ``params32`` instead (rows: shi, slo, m, c, lo, hi, fill; see
    transforms._base.affine32)."""

    cdef int64_t[::1] offsets
    cdef int64_t[::1] sizes
    cdef int64_t[::1] starts
    cdef readonly int64_t n_fields
    cdef readonly int64_t row_bytes
    cdef readonly bint float_rows
    cdef readonly int64_t n_aff
    cdef int64_t[::1] aff_at
    cdef int64_t[::1] aff_counts
    cdef int64_t[::1] aff_kinds
    cdef int64_t[::1] aff_first
    cdef double[:, ::1] aff_params
    cdef float[:, ::1] aff_params32
    cdef readonly int64_t n_var
    cdef int64_t[::1] var_offsets
    cdef int64_t[::1] var_first

    def __init__(self, const int64_t[::1] offsets, const int64_t[::1] sizes,
                 bint float_rows=False, affine=None):
        """float_rows: every field is float32, so one-key blocks are allocated as a
        (1, row_bytes / 4) float32 matrix (the feature row itself).  affine: None or
        (at, counts, kinds, first, params) as described above; segments that do not fit
        the row or are misaligned raise ValueError."""
        cdef Py_ssize_t f, s, m
        cdef int64_t width
        self.n_fields = offsets.shape[0]
        self.offsets = offsets.copy()
        self.sizes = sizes.copy()
        self.starts = sizes.copy()
        self.row_bytes = 0
        for f in range(self.n_fields):
            self.starts[f] = self.row_bytes
            self.row_bytes += sizes[f]
        self.float_rows = float_rows and self.row_bytes % 4 == 0 and self.row_bytes > 0
        self.n_aff = 0
        self.n_var = 0
        if affine is None:
            return
        at, counts, kinds, first, params, params32 = affine
        self.aff_at = np.ascontiguousarray(at, dtype=np.int64)
        self.aff_counts = np.ascontiguousarray(counts, dtype=np.int64)
        self.aff_kinds = np.ascontiguousarray(kinds, dtype=np.int64)
        self.aff_first = np.ascontiguousarray(first, dtype=np.int64)
        self.aff_params = np.ascontiguousarray(params, dtype=np.float64)
        self.aff_params32 = np.ascontiguousarray(params32, dtype=np.float32)
        m = self.aff_at.shape[0]
        if (self.aff_counts.shape[0] != m or self.aff_kinds.shape[0] != m
                or self.aff_first.shape[0] != m or self.aff_params.shape[0] != 6
                or self.aff_params32.shape[0] != 7
                or self.aff_params32.shape[1] != self.aff_params.shape[1]):
            raise ValueError("FieldPlan: affine arrays of different lengths")
        for s in range(m):
            width = 8 if self.aff_kinds[s] & MMFS_AFF_F64 else 4
            if (width == 8 and self.aff_kinds[s] & MMFS_AFF_F32MATH) or (self.aff_at[s] < 0 or self.aff_counts[s] < 0
                    or self.aff_at[s] + self.aff_counts[s] * width > self.row_bytes
                    or self.aff_at[s] % width or self.aff_first[s] < 0
                    or self.aff_first[s] + self.aff_counts[s] > self.aff_params.shape[1]):
                raise ValueError(f"FieldPlan: affine segment {s} does not fit the row")
        self.n_aff = m

    def set_variants(self, offsets, first):
        """Variants of the plan with the same fields and affine segments, that read other
        stored fields or other affine parameters (experiment arms: an alternative
        feature, another transform version): variant v copies field f from record offset
        ``offsets[v * n_fields + f]`` (-1: reserved) and runs segment s with parameters
        from column ``first[v * n_aff + s]``.  A read chooses each key's variant
        (``get_int(..., var=)``); variant 0 should be the plan itself."""
        cdef Py_ssize_t n, v, s, f
        o = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1)
        fi = np.ascontiguousarray(first, dtype=np.int64).reshape(-1)
        n = o.shape[0] // self.n_fields if self.n_fields else 0
        if (n < 1 or n > 127 or o.shape[0] != n * self.n_fields
                or fi.shape[0] != n * self.n_aff):
            raise ValueError("FieldPlan.set_variants: one offset per field and one first "
                             "column per affine segment, for 1 to 127 variants")
        for v in range(n):
            for s in range(self.n_aff):
                if not 0 <= fi[v * self.n_aff + s] <= (
                        self.aff_params.shape[1] - self.aff_counts[s]):
                    raise ValueError(f"FieldPlan.set_variants: variant {v} segment {s} "
                                     "parameters outside the parameter arrays")
            for f in range(self.n_fields):
                if o[v * self.n_fields + f] < -1:
                    raise ValueError("FieldPlan.set_variants: a negative offset")
        self.var_offsets = o
        self.var_first = fi if fi.shape[0] else np.zeros(1, dtype=np.int64)
        self.n_var = n


# -- row-minimum levels of a history run ----------------------------------------------------
#
# Versions share the history runs: a run may hold rows newer than the version read, and a
# version sees only rows below its row count.  To find, among a slot's entries [lo, p],
# the last one whose row is below that count without walking over every newer entry, a
# run carries levels of minima: level 0 holds the minimum row of each block of B = 64
# entries, level k the minimum of each block of B level k-1 values, up to one value.

DEF BB = 6  # log2(B)


def min_levels(const int64_t[::1] rows):
    """The row-minimum levels of a run's rows, concatenated (level 0 first)."""
    cdef Py_ssize_t m = rows.shape[0], n = m, total = 0, k, j, lo, hi, i, src, dst
    cdef int64_t v
    cdef cnp.npy_intp dims[1]
    while n > 1:
        n = (n + (1 << BB) - 1) >> BB
        total += n
    dims[0] = total
    out = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
    cdef int64_t[::1] o = out
    cdef const int64_t *prev = &rows[0] if m else NULL
    n = m
    dst = 0
    with nogil:
        while n > 1:
            k = (n + (1 << BB) - 1) >> BB
            for j in range(k):
                lo = j << BB
                hi = min(n, lo + (1 << BB))
                v = prev[lo]
                for i in range(lo + 1, hi):
                    if prev[i] < v:
                        v = prev[i]
                o[dst + j] = v
            prev = &o[dst]
            dst += k
            n = k
    return out


cdef inline int64_t lower_from(const int64_t *a, int64_t pos, int64_t m,
                               int64_t s) noexcept nogil:
    """The first i >= pos with a[i] >= s (a sorted ascending), galloping from pos: cost
    O(log(i - pos))."""
    cdef int64_t lo, hi, step, mid
    if pos >= m or a[pos] >= s:
        return pos
    lo = pos  # a[lo] < s
    step = 1
    hi = pos + 1
    while hi < m and a[hi] < s:
        lo = hi
        step <<= 1
        hi = lo + step
    if hi > m:
        hi = m
    return lower_in(a, lo + 1, hi, s)  # a[lo] < s and (hi == m or a[hi] >= s)


cdef inline int64_t lower_in(const int64_t *a, int64_t lo, int64_t hi, int64_t s) noexcept nogil:
    """The first i in [lo, hi) with a[i] >= s (hi when none; a sorted ascending)."""
    cdef int64_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < s:
            lo = mid + 1
        else:
            hi = mid
    return lo


DEF SCAN = 16  # entries a merge steps through one by one before it gallops or bisects


cdef inline int64_t upper_time(const int64_t *rt, int64_t lo, int64_t hi,
                               int64_t t) noexcept nogil:
    """The first i in [lo, hi) with rt[i] > t (hi when none; rt sorted ascending)."""
    cdef int64_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if rt[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline int64_t merge_step(const int64_t *rs, const int64_t *rt, int64_t m,
                               int64_t *cursor, int64_t s, int64_t t,
                               int64_t *first) noexcept nogil:
    """One step of a merge of slots asked in increasing order with a run (slots rs,
    times rt, sorted by (slot, time)): moves cursor to slot s's first entry (also
    ``first``) and returns one past its last entry with time <= t.

    The common case -- the next slot asked a few entries on, a history of a few
    entries -- walks them one by one, counting the times <= t without a branch to
    mispredict; a walk longer than SCAN entries gallops (a sparse request) or bisects
    (a long history), so no step costs more than O(SCAN + log m)."""
    cdef int64_t p = cursor[0], stop = min(m, cursor[0] + SCAN), a
    while p < stop and rs[p] < s:
        p += 1
    if p == stop and p < m and rs[p] < s:
        p = lower_from(rs, p, m, s)
    cursor[0] = p
    first[0] = p
    a = p
    stop = min(m, p + SCAN)
    while p < stop and rs[p] == s:
        a += rt[p] <= t
        p += 1
    if p == stop and p < m and rs[p] == s:
        a = upper_time(rt, a, lower_from(rs, p, m, s + 1), t)
    return a


cdef int64_t last_below(const int64_t *rows, const int64_t *mins, int64_t m, int64_t lo,
                        int64_t p, int64_t limit) noexcept nogil:
    """The greatest i in [lo, p] with rows[i] < limit, or -1."""
    cdef int64_t i, j, stop, b, n, off, lob, k, kk
    cdef int64_t offs[12]
    cdef int64_t lens[12]
    cdef int nlev = 0
    n = m
    off = 0
    while n > 1 and nlev < 12:
        n = (n + (1 << BB) - 1) >> BB
        offs[nlev] = off
        lens[nlev] = n
        off += n
        nlev += 1
    stop = max(lo, p & ~((<int64_t>1 << BB) - 1))
    i = p
    while i >= stop:
        if rows[i] < limit:
            return i
        i -= 1
    if stop == lo:
        return -1
    b = p >> BB  # block of p at level 0, examined up to p
    k = 0
    while k < nlev:
        lob = lo >> (BB * (k + 1))
        stop = max(lob, b & ~((<int64_t>1 << BB) - 1))
        j = b - 1
        while j >= stop:
            if mins[offs[k] + j] < limit:  # descend into block j of level k
                kk = k
                while kk > 0:
                    lob = lo >> (BB * kk)
                    i = min(lens[kk - 1] - 1, (j << BB) + (1 << BB) - 1)
                    stop = max(lob, j << BB)
                    while i >= stop and mins[offs[kk - 1] + i] >= limit:
                        i -= 1
                    if i < stop:
                        return -1
                    j = i
                    kk -= 1
                i = min(m - 1, (j << BB) + (1 << BB) - 1)
                stop = max(lo, j << BB)
                while i >= stop:
                    if rows[i] < limit:
                        return i
                    i -= 1
                return -1
            j -= 1
        if stop == lob:
            return -1
        b >>= BB
        k += 1
    return -1


def slot_order(const int64_t[::1] slots, int64_t n_slots, const int64_t[::1] times=None,
               int n_threads=1):
    """(order, sorted, sorted_times): the permutation sorting slots ascending (stable;
    slots outside [0, n_slots) -- absent keys -- come first, in their order), the slots
    in that order (-1 for the absent ones) and, when given, ``times`` in that order
    (else None): what a merge reads in sequence.

    An LSD radix sort in passes of at most 11 bits over one array of 64-bit words, the
    slot (+ 1; 0 absent) above the query's position: each pass streams through 2,048
    buckets, which caches well, where one counting pass over n_slots buckets would
    scatter at random.  With threads, each counts and moves a contiguous part of the
    words, the parts' buckets laid out one after another: the same order for any
    n_threads."""
    cdef Py_ssize_t n = slots.shape[0], i, c, nch, lo, hi
    cdef int64_t s, b, total, v
    cdef uint64_t k
    cdef int bits = 0, passes, width, p, shift
    cdef int64_t span = n_slots + 1
    if times is not None and times.shape[0] != n:
        raise ValueError("slot_order: one time per slot")
    if n >= (<int64_t>1 << 32) or span >= (<int64_t>1 << 32):  # beyond the packed words
        s_arr = np.asarray(slots)
        key = np.where((s_arr >= 0) & (s_arr < n_slots), s_arr + 1, 0)
        perm = np.argsort(key, kind="stable")
        return perm, key[perm] - 1, None if times is None else np.asarray(times)[perm]
    while (<int64_t>1 << bits) < span:
        bits += 1
    passes = max(1, (bits + 10) // 11)
    width = max(1, (bits + passes - 1) // passes)
    nch = max(1, min(<Py_ssize_t>n_threads, n // 65536))  # small sorts: one thread
    keys_a = np.empty(n, dtype=np.uint64)
    keys_b = np.empty(n, dtype=np.uint64)
    counts_arr = np.zeros((nch, <Py_ssize_t>1 << width), dtype=np.int64)
    cdef uint64_t[::1] ka = keys_a, kb = keys_b, tk
    cdef int64_t[:, ::1] counts = counts_arr
    cdef uint64_t mask = (<uint64_t>1 << width) - 1, low = 0xFFFFFFFF
    for i in prange(n, nogil=True, num_threads=nch, schedule="static"):
        s = slots[i]
        ka[i] = (<uint64_t>(s + 1 if 0 <= s < n_slots else 0) << 32) | <uint64_t>i
    for p in range(passes):
        shift = 32 + p * width
        counts[:, :] = 0
        for c in prange(nch, nogil=True, num_threads=nch, schedule="static"):
            for i in range(c * n // nch, (c + 1) * n // nch):
                counts[c, (ka[i] >> shift) & mask] += 1
        with nogil:
            total = 0
            for b in range(<int64_t>mask + 1):
                for c in range(nch):
                    v = counts[c, b]
                    counts[c, b] = total
                    total += v
        for c in prange(nch, nogil=True, num_threads=nch, schedule="static"):
            for i in range(c * n // nch, (c + 1) * n // nch):
                k = ka[i]
                b = (k >> shift) & mask
                kb[counts[c, b]] = k
                counts[c, b] += 1
        tk = ka
        ka = kb
        kb = tk
    order_arr = np.empty(n, dtype=np.int64)
    sorted_arr = np.empty(n, dtype=np.int64)
    times_arr = None if times is None else np.empty(n, dtype=np.int64)
    cdef int64_t[::1] order = order_arr, ss = sorted_arr
    cdef int64_t[::1] st = times_arr
    for c in prange(nch, nogil=True, num_threads=nch, schedule="static"):
        lo = c * n // nch
        hi = (c + 1) * n // nch
        for i in range(lo, hi):
            k = ka[i]
            order[i] = <int64_t>(k & low)
            ss[i] = <int64_t>(k >> 32) - 1
        if times is not None:
            for i in range(lo, hi):
                if i + 16 < hi:
                    MMFS_PREFETCH(&times[order[i + 16]])
                st[i] = times[order[i]]
    return order_arr, sorted_arr, times_arr


def last_below_py(const int64_t[::1] rows, const int64_t[::1] mins, int64_t lo, int64_t p,
                  int64_t limit):
    """last_below, for the oracle tests (mins: min_levels(rows); 0 <= lo <= p < m)."""
    if not 0 <= lo <= p < rows.shape[0]:
        raise ValueError("need 0 <= lo <= p < len(rows)")
    return last_below(&rows[0], &mins[0] if mins.shape[0] else NULL, rows.shape[0], lo, p,
                      limit)


cdef class RowTable:
    """One committed generation of one feature group, ready to read.

    Built by mmfs.group from validated arrays (shapes and dtypes are checked there; the
    contents are checked here as they are used)."""

    cdef const int64_t *tk
    cdef const uint64_t *th
    cdef const int32_t *ts
    cdef const uint8_t *kb
    cdef const int64_t *ko
    cdef int64_t kb_len
    cdef uint64_t kmask
    cdef int64_t n_keys
    cdef bint str_keys
    cdef int64_t n_slots
    cdef const int64_t *directory
    cdef int64_t n_dir
    cdef const intptr_t *page_segs
    cdef int64_t n_pages
    cdef int page_bits, pseg_bits
    cdef const intptr_t *row_segs
    cdef int64_t n_rows
    cdef int rseg_bits
    cdef int64_t record_bytes
    cdef const uint64_t *head
    cdef uint64_t generation
    cdef object refs
    cdef Py_ssize_t n_runs
    cdef const intptr_t *run_addrs
    cdef const int64_t *run_lens
    cdef const intptr_t *min_addrs
    cdef object hist_refs

    def __init__(self, dict keys, bint str_keys, int64_t n_keys, int64_t n_slots,
                 directory, page_addrs, int64_t n_pages, int page_bits, int pseg_bits,
                 row_addrs, int64_t n_rows, int rseg_bits, int64_t record_bytes, head,
                 uint64_t generation):
        self.refs = (keys, directory, page_addrs, row_addrs, head)
        self.str_keys = str_keys
        self.ts = <const int32_t *>_addr(keys["slots"])
        self.kmask = <uint64_t>keys["slots"].shape[0] - 1
        if str_keys:
            self.th = <const uint64_t *>_addr(keys["hashes"])
            self.kb = <const uint8_t *>_addr(keys["key_bytes"])
            self.kb_len = keys["key_bytes"].shape[0]
            self.ko = <const int64_t *>_addr(keys["key_offsets"])
        else:
            self.tk = <const int64_t *>_addr(keys["keys"])
        self.n_keys = n_keys
        self.n_slots = n_slots
        self.directory = <const int64_t *>_addr(directory)
        self.n_dir = directory.shape[0]
        self.page_segs = <const intptr_t *>_addr(page_addrs)
        self.n_pages = n_pages
        self.page_bits = page_bits
        self.pseg_bits = pseg_bits
        self.row_segs = <const intptr_t *>_addr(row_addrs)
        self.n_rows = n_rows
        self.rseg_bits = rseg_bits
        self.record_bytes = record_bytes
        self.head = <const uint64_t *>_addr(head)
        self.generation = generation

    @property
    def n_rows(self):
        return self.n_rows

    def stale(self):
        """True when the store has committed a newer generation than this table's."""
        return self.head[0] > self.generation

    cdef inline const uint8_t *record(self, int64_t row) noexcept nogil:
        cdef int64_t mask = (<int64_t>1 << self.rseg_bits) - 1
        return (<const uint8_t *>self.row_segs[row >> self.rseg_bits]
                + (row & mask) * self.record_bytes)

    cdef inline const int64_t *page_entry(self, int64_t slot) noexcept nogil:
        """Where the page table holds slot's row (slot in range); NULL when the slot's
        page is absent (-1 in the directory) or the directory is corrupt."""
        cdef int64_t p, pid, pmask
        p = slot >> self.page_bits
        if p >= self.n_dir:
            return NULL
        pid = self.directory[p]
        if pid < 0 or pid >= self.n_pages:
            return NULL
        pmask = (<int64_t>1 << self.pseg_bits) - 1
        return (<const int64_t *>self.page_segs[pid >> self.pseg_bits]
                + ((pid & pmask) << self.page_bits) + (slot & ((<int64_t>1 << self.page_bits) - 1)))

    cdef inline int64_t page_row(self, int64_t slot) noexcept nogil:
        """slot -> row by the page table alone (the record unread): -1 when the slot has
        no row in this generation, K_CORRUPT for a damaged directory or page."""
        cdef const int64_t *entry
        cdef int64_t p, row
        if slot < 0 or slot >= self.n_slots:
            return -1
        entry = self.page_entry(slot)
        if entry == NULL:
            p = slot >> self.page_bits
            return -1 if p < self.n_dir and self.directory[p] == -1 else K_CORRUPT
        row = entry[0]
        if row < 0:
            return -1 if row == -1 else K_CORRUPT
        if row >= self.n_rows:
            return K_CORRUPT
        return row

    cdef inline int64_t resolve(self, int64_t slot) noexcept nogil:
        """slot -> row, -1 when the slot has no row in this generation, -2 corrupt."""
        cdef int64_t row = self.page_row(slot)
        if row >= 0 and (<const int64_t *>self.record(row))[0] != slot:
            return K_CORRUPT
        return row

    cdef int64_t resolve_many(self, int64_t *rows, Py_ssize_t n) noexcept nogil:
        """Slots in rows[] -> rows in place; returns the number of corrupt ones (-1)."""
        cdef Py_ssize_t i
        cdef int64_t bad = 0, r
        for i in range(n):
            r = self.resolve(rows[i])
            if r == K_CORRUPT:
                bad += 1
                r = -1
            rows[i] = r
        return bad

    # -- one key: the online path --------------------------------------------------------

    cpdef int64_t row_of_int(self, int64_t key):
        """The row of one int64 key: >= 0, MISSING, K_CORRUPT or STALE."""
        cdef uint64_t pos
        cdef int64_t s
        if self.head[0] > self.generation:
            return K_STALE
        if self.n_keys == 0:
            return K_MISSING
        s = mmfs_probe_int(self.tk, self.ts, self.kmask, self.n_keys, key, &pos)
        if s == MMFS_PROBE_CORRUPT:
            return K_CORRUPT
        return self.resolve(s)

    cpdef int64_t row_of_str(self, const uint8_t[::1] key):
        """The row of one key given as its UTF-8 bytes: >= 0, MISSING, K_CORRUPT or STALE."""
        cdef uint64_t pos
        cdef int64_t s, n = key.shape[0]
        cdef const uint8_t *p = &key[0] if n else <const uint8_t *>""
        if self.head[0] > self.generation:
            return K_STALE
        if self.n_keys == 0:
            return K_MISSING
        s = mmfs_probe_str(self.th, self.ts, self.kmask, self.kb, self.kb_len, self.ko,
                           self.n_keys, mmfs_xxh64(p, n, 0), p, n, &pos)
        if s == MMFS_PROBE_CORRUPT:
            return K_CORRUPT
        return self.resolve(s)

    def get_one_int(self, int64_t key, FieldPlan plan):
        """(row, block): row_of_int, and a new uint8 array of plan.row_bytes holding the
        plan's fields of the row (zeros when missing; None when stale or corrupt)."""
        cdef int64_t row = self.row_of_int(key)
        if row < -1:
            return row, None
        return row, self.one_block(row, plan)

    def get_one_str(self, const uint8_t[::1] key, FieldPlan plan):
        """The same for one key given as its UTF-8 bytes."""
        cdef int64_t row = self.row_of_str(key)
        if row < -1:
            return row, None
        return row, self.one_block(row, plan)

    cdef object one_block(self, int64_t row, FieldPlan plan):
        cdef cnp.npy_intp dims[2]
        cdef cnp.ndarray block
        if plan.float_rows:
            dims[0] = 1
            dims[1] = plan.row_bytes // 4
            block = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
        else:
            dims[0] = plan.row_bytes
            block = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT8, 0)
        self.copy_row(row, <uint8_t *>cnp.PyArray_DATA(block), plan)
        return block

    def gather_plan(self, const int64_t[::1] rows, FieldPlan plan, uint8_t[::1] out,
                    int n_threads, const int64_t[::1] at=None):
        """Copy the plan's fields of every row (-1: zeros) into out, len(rows) *
        plan.row_bytes bytes; with ``at``, row j into record at[j] instead (each checked
        to lie in out: a read that serves keys from several plans, experiment arms,
        fills one block with a call per plan)."""
        cdef Py_ssize_t n = rows.shape[0], i
        if at is None and out.shape[0] < n * plan.row_bytes:
            raise ValueError("gather_plan: row_bytes of out per row")
        cdef const int64_t *a = _positions(at, n, out.shape[0], plan.row_bytes)
        if n == 0:
            return
        cdef const int64_t *r = &rows[0]
        cdef uint8_t *o = &out[0]
        cdef int64_t rb = plan.row_bytes, ahead
        if n_threads <= 1 or n <= CHUNK:
            with nogil:
                for i in range(n):
                    if i + AHEAD < n:
                        ahead = r[i + AHEAD]
                        if 0 <= ahead < self.n_rows:
                            self.prefetch(ahead)
                    self.copy_row(r[i], o + (a[i] if a != NULL else i) * rb, plan)
        else:
            for i in prange(n, nogil=True, schedule="static", num_threads=n_threads):
                if i + AHEAD < n:
                    ahead = r[i + AHEAD]
                    if 0 <= ahead < self.n_rows:
                        self.prefetch(ahead)
                self.copy_row(r[i], o + (a[i] if a != NULL else i) * rb, plan)

    # -- many keys -----------------------------------------------------------------------

    cdef int64_t fetch(self, int64_t *rows, Py_ssize_t m, FieldPlan plan,
                       uint8_t *o, const int64_t *at, const int8_t *var) noexcept nogil:
        """rows[0:m] hold slots (-1: absent key): turn them into rows and copy each row's
        fields to o (row_bytes per key; zeros and row -1 where absent), STAGE keys at a
        time through three stages -- prefetch their page-table entries, read them and
        prefetch the records, check and copy the records -- so that the cache misses of
        a stage's keys overlap instead of queueing one key after another.  A plan's affine
        step runs on a stage's rows while the next stage's records are on their way (and
        after the stage's copies have landed: right after its own copy, a row's loads
        would wait for the copy's stores).  ``at`` (NULL: key i to record i): key i's
        record is o + at[i] * row_bytes instead; ``var`` (NULL: the plan itself): key i
        reads the plan's variant var[i] (FieldPlan.set_variants).  Returns the number of
        corrupt entries (their rows read -1)."""
        cdef Py_ssize_t a, e, i, done = 0
        cdef int64_t bad = 0, r, slot
        cdef int64_t slots[STAGE]
        cdef int64_t rb = plan.row_bytes
        cdef const int64_t *entry
        for a in range(0, m, STAGE):
            e = min(m, a + STAGE)
            for i in range(a, e):
                slot = rows[i]
                slots[i - a] = slot
                if 0 <= slot < self.n_slots:
                    entry = self.page_entry(slot)
                    if entry != NULL:
                        MMFS_PREFETCH(entry)
            for i in range(a, e):
                r = self.page_row(slots[i - a])
                if r >= 0:
                    self.prefetch(r)
                rows[i] = r
            if plan.n_aff:  # the previous stage's rows, while this stage's arrive
                self.affine_rows(rows, done, a, plan, o, at, var)
                done = a
            for i in range(a, e):
                r = rows[i]
                if r >= 0 and (<const int64_t *>self.record(r))[0] != slots[i - a]:
                    r = K_CORRUPT
                if r == K_CORRUPT:
                    bad += 1
                    r = -1
                    rows[i] = -1
                self.copy_fields(r, o + (at[i] if at != NULL else i) * rb, plan,
                                 _offsets(plan, var, i))
        if plan.n_aff:
            self.affine_rows(rows, done, m, plan, o, at, var)
        return bad

    cdef inline void affine_rows(self, const int64_t *rows, Py_ssize_t a, Py_ssize_t e,
                                 FieldPlan plan, uint8_t *o, const int64_t *at,
                                 const int8_t *var) noexcept nogil:
        cdef Py_ssize_t i
        for i in range(a, e):
            if rows[i] >= 0:
                _affine_row(o + (at[i] if at != NULL else i) * plan.row_bytes, plan,
                            _firsts(plan, var, i))

    def get_int(self, const int64_t[::1] keys, int64_t[::1] rows, FieldPlan plan,
                uint8_t[::1] out, int n_threads, const int64_t[::1] at=None,
                const int8_t[::1] var=None):
        """The many-key read in one pass: rows[j] = the row of keys[j] (-1: absent) and
        its plan fields copied to out[j * row_bytes:] (to out[at[j] * row_bytes:] when
        ``at`` is given: a read that serves keys from several plans fills one block with
        a call per plan; ``var``: key j reads the plan's variant var[j], see
        FieldPlan.set_variants); returns the number of corrupt lookups.  Chunks of
        GET_CHUNK keys go to the threads: each looks its keys up and fetches them while
        the chunk is still in cache."""
        cdef Py_ssize_t n = keys.shape[0], nch, c, lo, m
        cdef int64_t bad = 0
        if rows.shape[0] != n or (at is None and out.shape[0] < n * plan.row_bytes):
            raise ValueError("get_int: one row per key and row_bytes of out per key")
        cdef const int64_t *ap = _positions(at, n, out.shape[0], plan.row_bytes)
        cdef const int8_t *vp = _variants(var, n, plan)
        if n == 0:
            return 0
        cdef uint8_t *o = &out[0]
        cdef int64_t rb = plan.row_bytes
        if self.n_keys == 0:
            rows[:] = -1
            _zero_records(o, n, rb, ap)
            return 0
        nch = (n + GET_CHUNK - 1) // GET_CHUNK
        if n_threads <= 1 or nch == 1:
            with nogil:
                for c in range(nch):
                    lo = c * GET_CHUNK
                    m = min(GET_CHUNK, n - lo)
                    bad += mmfs_lookup_int(self.tk, self.ts, self.kmask, self.n_keys, &keys[lo],
                                           &rows[lo], m)
                    bad += self.fetch_chunk(&rows[lo], m, plan, o, lo, ap, vp)
            return bad
        for c in prange(nch, nogil=True, schedule="static", num_threads=n_threads):
            lo = c * GET_CHUNK
            m = min(GET_CHUNK, n - lo)
            bad += mmfs_lookup_int(self.tk, self.ts, self.kmask, self.n_keys, &keys[lo],
                                   &rows[lo], m)
            bad += self.fetch_chunk(&rows[lo], m, plan, o, lo, ap, vp)
        return bad

    cdef inline int64_t fetch_chunk(self, int64_t *rows, Py_ssize_t m, FieldPlan plan,
                                    uint8_t *o, Py_ssize_t lo, const int64_t *at,
                                    const int8_t *var) noexcept nogil:
        """fetch of keys lo:lo + m of a read into block o (records lo:, or at[lo:])."""
        var = NULL if var == NULL else var + lo
        if at == NULL:
            return self.fetch(rows, m, plan, o + lo * plan.row_bytes, NULL, var)
        return self.fetch(rows, m, plan, o, at + lo, var)

    def get_str(self, const uint8_t[::1] qbytes, const int64_t[::1] qoffsets,
                int64_t[::1] rows, FieldPlan plan, uint8_t[::1] out, int n_threads,
                const int64_t[::1] at=None, const int8_t[::1] var=None):
        """get_int for string keys: key j is qbytes[qoffsets[j]:qoffsets[j + 1]]."""
        cdef Py_ssize_t n = rows.shape[0], nch, c, lo, m
        cdef int64_t bad = 0
        if qoffsets.shape[0] != n + 1 or (at is None and out.shape[0] < n * plan.row_bytes):
            raise ValueError("get_str: one row per key and row_bytes of out per key")
        cdef const int64_t *ap = _positions(at, n, out.shape[0], plan.row_bytes)
        cdef const int8_t *vp = _variants(var, n, plan)
        if n == 0:
            return 0
        cdef uint8_t *o = &out[0]
        cdef int64_t rb = plan.row_bytes
        cdef const uint8_t *qb = &qbytes[0] if qbytes.shape[0] else <const uint8_t *>""
        if self.n_keys == 0:
            rows[:] = -1
            _zero_records(o, n, rb, ap)
            return 0
        nch = (n + GET_CHUNK - 1) // GET_CHUNK
        if n_threads <= 1 or nch == 1:
            with nogil:
                for c in range(nch):
                    lo = c * GET_CHUNK
                    m = min(GET_CHUNK, n - lo)
                    bad += mmfs_lookup_str(self.th, self.ts, self.kmask, self.kb, self.kb_len,
                                           self.ko, self.n_keys, qb, &qoffsets[lo], &rows[lo], m)
                    bad += self.fetch_chunk(&rows[lo], m, plan, o, lo, ap, vp)
            return bad
        for c in prange(nch, nogil=True, schedule="static", num_threads=n_threads):
            lo = c * GET_CHUNK
            m = min(GET_CHUNK, n - lo)
            bad += mmfs_lookup_str(self.th, self.ts, self.kmask, self.kb, self.kb_len,
                                   self.ko, self.n_keys, qb, &qoffsets[lo], &rows[lo], m)
            bad += self.fetch_chunk(&rows[lo], m, plan, o, lo, ap, vp)
        return bad

    def rows_of_slots(self, int64_t[::1] slots):
        """Slots -> rows in place (the writer's view of its own slots); returns the
        number of corrupt entries."""
        if slots.shape[0] == 0:
            return 0
        return self.resolve_many(&slots[0], slots.shape[0])

    # -- event-time history ----------------------------------------------------------------

    def set_history(self, run_addrs, run_lens, min_addrs):
        """The group's event-time history runs: run r is an int64 [3, m] array at
        run_addrs[r] (slots, event times, rows), sorted by (slot, time, row), with its
        row-minimum levels at min_addrs[r] (see `min_levels`)."""
        if not (run_addrs.shape[0] == run_lens.shape[0] == min_addrs.shape[0]):
            raise ValueError("one address, length and minima address per run")
        self.hist_refs = (run_addrs, run_lens, min_addrs)
        self.n_runs = run_addrs.shape[0]
        self.run_addrs = <const intptr_t *>_addr(run_addrs)
        self.run_lens = <const int64_t *>_addr(run_lens)
        self.min_addrs = <const intptr_t *>_addr(min_addrs)

    cdef int64_t asof_slot(self, int64_t s, int64_t t, int64_t *cursor,
                           bint check=True) noexcept nogil:
        """The row of slot s with the greatest event time <= t (ties: the greater row,
        i.e. the later write) among the rows this table sees (row < n_rows: the history
        runs may be newer than the version read); -1 when there is none or s is not a
        slot of this version, or when the row found is a tombstone (a deleted key);
        K_CORRUPT for a record that is another slot's.

        Per run: find the slot's entries and the last of them at or before t (binary
        searches, or with ``cursor`` -- one position per run, for slots asked in
        increasing order -- a merge step forward from the previous slot's), and
        when that entry is newer than the version, the last older one through the
        row-minimum levels (O(64 * levels)).  ``check=False`` leaves the record's slot
        unchecked (the caller checks it when it reads the record: check_gather)."""
        cdef Py_ssize_t r
        cdef int64_t m, lo, a, best_t = 0, best_r = -1, i
        cdef const int64_t *rs
        cdef const int64_t *rt
        cdef const int64_t *rr
        if s < 0 or s >= self.n_slots:  # -1, or a key newer than this version
            return -1
        for r in range(self.n_runs):
            m = self.run_lens[r]
            rs = <const int64_t *>self.run_addrs[r]
            rt = rs + m
            rr = rs + 2 * m
            if cursor != NULL:
                a = merge_step(rs, rt, m, &cursor[r], s, t, &lo)
            else:
                lo = lower_in(rs, 0, m, s)  # first entry with slot >= s
                a = upper_time(rt, lo, lower_from(rs, lo, m, s + 1), t)  # first after t
            if a == lo:
                continue
            i = a - 1  # the last entry <= (s, t); the last one this version sees:
            if rr[i] >= self.n_rows:
                i = last_below(rr, <const int64_t *>self.min_addrs[r], m, lo, i, self.n_rows)
                if i < 0:
                    continue
            if rr[i] < 0:
                return K_CORRUPT
            if best_r < 0 or rt[i] > best_t or (rt[i] == best_t and rr[i] > best_r):
                best_t = rt[i]
                best_r = rr[i]
        if check and best_r >= 0:
            i = (<const int64_t *>self.record(best_r))[0]
            if i != s:
                return -1 if i == (s | TOMB) else K_CORRUPT
        return best_r

    cdef inline int64_t answer(self, int64_t s, int64_t t, int64_t ttl, int64_t *cursor,
                               int64_t *bad) noexcept nogil:
        cdef int64_t row = self.asof_slot(s, t, cursor)
        if row == K_CORRUPT:
            bad[0] += 1
            return -1
        if row >= 0 and ttl >= 0 and (
                <uint64_t>t - <uint64_t>self.event_time(row) > <uint64_t>ttl):
            return -1
        return row

    def asof_rows(self, const int64_t[::1] slots, const int64_t[::1] times,
                  int64_t[::1] rows, int64_t ttl=-1, int n_threads=1):
        """rows[i] = asof_slot(slots[i], times[i]), or -1 when ttl >= 0 and that row's
        event time is before times[i] - ttl; returns the number of corrupt answers (they
        read -1).  Each answer is independent: the result is the same for any
        n_threads."""
        cdef Py_ssize_t n = slots.shape[0], i
        cdef int64_t bad = 0, one
        if n == 0:
            return 0
        for i in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
            one = 0
            rows[i] = self.answer(slots[i], times[i], ttl, NULL, &one)
            bad += one
        return bad

    def latest_rows(self, const int64_t[::1] slots, int64_t[::1] rows):
        """rows[i] = the row of slots[i] with the greatest event time, tombstones
        included and records unchecked (the writer reads when its deleted keys were
        deleted)."""
        cdef Py_ssize_t i
        if rows.shape[0] != slots.shape[0]:
            raise ValueError("latest_rows: one row per slot")
        with nogil:
            for i in range(slots.shape[0]):
                rows[i] = self.asof_slot(slots[i], INT64_MAX, NULL, False)

    def asof_sorted(self, const int64_t[::1] slots, const int64_t[::1] times,
                    const int64_t[::1] order, const int64_t[::1] sorted_slots,
                    const int64_t[::1] sorted_times, int64_t[::1] rows, int64_t ttl=-1,
                    int n_threads=1, FieldPlan plan=None, out=None):
        """asof_rows for many queries: the same answers, in two passes.

        1. In slot order (``order``, a permutation sorting the queries by slot, and the
           queries' slots and times in that order: slot_order), a merge of the sorted
           queries with each sorted run (merge_step); each thread takes a contiguous
           part with its own cursors.  The queries and the runs are read in sequence,
           the answers written in sequence, then put in query order.
        2. In query order, each answer's record is read (prefetched ahead) to check its
           slot and ttl and, with ``plan`` and ``out`` (len(rows) * plan.row_bytes
           bytes), to copy its fields (gather_plan's bytes): one random read per key,
           the floor of any gather from a large arena."""
        cdef Py_ssize_t n = order.shape[0], nch, c, k, lo_k, hi_k
        cdef uint8_t *o = NULL
        cdef uint8_t[::1] ov
        if not (sorted_slots.shape[0] == sorted_times.shape[0] == slots.shape[0]
                == times.shape[0] == rows.shape[0] == n):
            raise ValueError("asof_sorted: one slot, time, position and row per query")
        if n == 0:
            return 0
        if plan is not None:
            ov = out
            if ov.shape[0] != n * plan.row_bytes:
                raise ValueError("out must hold len(rows) * plan.row_bytes bytes")
            o = &ov[0]
        nch = max(1, min(<Py_ssize_t>n_threads, n))
        # a thread's cursors on cache lines of their own (shared lines ping-pong)
        cursors = np.zeros((nch, (self.n_runs + 15) // 8 * 8), dtype=np.int64)
        cdef int64_t[:, ::1] cur = cursors
        found_arr = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] found = found_arr
        for c in prange(nch, nogil=True, num_threads=n_threads, schedule="static"):
            lo_k = c * n // nch
            hi_k = (c + 1) * n // nch
            for k in range(lo_k, hi_k):
                found[k] = self.asof_slot(sorted_slots[k], sorted_times[k], &cur[c, 0], False)
        with nogil:
            for k in range(n):
                rows[order[k]] = found[k]
        del found_arr
        return self.check_gather(slots, times, rows, ttl, n_threads, plan, o)

    cdef int64_t check_gather(self, const int64_t[::1] slots, const int64_t[::1] times,
                              int64_t[::1] rows, int64_t ttl, int n_threads, FieldPlan plan,
                              uint8_t *o):
        """Read each answer's record in query order, prefetched AHEAD rows ahead: a row
        whose record is another slot's is corrupt (counted, and -1), a tombstone -1; one
        older than
        times - ttl is -1; copy the plan's fields when o is given (zeros for -1).
        (Visiting the records in arena order instead reads them in sequence but
        scatters the writes: measured slower.)"""
        cdef Py_ssize_t n = rows.shape[0], nch, c, i, lo, hi
        cdef int64_t bad = 0, one, row, ahead, rb = plan.row_bytes if plan is not None else 0
        cdef const int64_t *rec
        nch = max(1, min(<Py_ssize_t>n_threads, n))
        for c in prange(nch, nogil=True, num_threads=n_threads, schedule="static"):
            lo = c * n // nch
            hi = (c + 1) * n // nch
            one = 0
            for i in range(lo, hi):
                if i + AHEAD < hi:
                    ahead = rows[i + AHEAD]
                    if 0 <= ahead < self.n_rows:
                        self.prefetch(ahead)
                row = rows[i]
                if row == K_CORRUPT or row >= self.n_rows:
                    one = one + 1
                    row = -1
                    rows[i] = row
                elif row >= 0:
                    rec = <const int64_t *>self.record(row)
                    if rec[0] != slots[i]:
                        if rec[0] != (slots[i] | TOMB):
                            one = one + 1
                        row = -1
                    elif ttl >= 0 and <uint64_t>times[i] - <uint64_t>rec[1] > <uint64_t>ttl:
                        row = -1
                    rows[i] = row
                if o != NULL:
                    self.copy_row(row, o + i * rb, plan)
            bad += one
        return bad

    cdef inline int64_t event_time(self, int64_t row) noexcept nogil:
        return (<const int64_t *>self.record(row))[1]

    def asof_one(self, int64_t slot, int64_t t, FieldPlan plan):
        """(row, block) of one slot as of t, like get_one_int (block None when corrupt)."""
        cdef int64_t row = self.asof_slot(slot, t, NULL)
        if row < -1:
            return row, None
        return row, self.one_block(row, plan)

    # -- rows -> bytes -------------------------------------------------------------------

    cdef inline void prefetch(self, int64_t row) noexcept nogil:
        """Ask for a record's first and last cache lines."""
        cdef const uint8_t *rec = self.record(row)
        MMFS_PREFETCH(rec)
        MMFS_PREFETCH(rec + self.record_bytes - 1)

    cdef inline void copy_row(self, int64_t row, uint8_t *dst, FieldPlan plan) noexcept nogil:
        self.copy_fields(row, dst, plan, &plan.offsets[0])
        if plan.n_aff and row >= 0:
            _affine_row(dst, plan, &plan.aff_first[0])

    cdef inline void copy_fields(self, int64_t row, uint8_t *dst, FieldPlan plan,
                                 const int64_t *offsets) noexcept nogil:
        """copy_row without the affine step (fetch applies it to a whole stage after the
        stage's copies: right after each copy, its loads would wait for the copy's stores).
        Fields that lie back to back in the record, as they do in the output, are copied
        as one: 32 float32 scalars are one 128-byte copy, not 32 calls of memcpy."""
        cdef Py_ssize_t f = 0, g, n = plan.n_fields
        cdef int64_t off, size
        cdef const uint8_t *rec
        if row < 0:
            memset(dst, 0, plan.row_bytes)
            return
        rec = self.record(row)
        while f < n:
            off = offsets[f]
            if off < 0:
                f += 1
                continue
            size = plan.sizes[f]
            g = f + 1
            while g < n and offsets[g] == off + size:
                size += plan.sizes[g]
                g += 1
            memcpy(dst + plan.starts[f], rec + off, size)
            f = g


cdef const int64_t *_positions(const int64_t[::1] at, Py_ssize_t n, Py_ssize_t nbytes,
                              int64_t rb) except? NULL:
    """The record positions of a read into chosen records (NULL: none given), each checked
    to lie in the block: a position outside it would be a write outside an array."""
    cdef Py_ssize_t i
    cdef int64_t cap = nbytes // rb if rb else 0
    if at is None:
        return NULL
    if at.shape[0] != n:
        raise ValueError("one record position per key")
    for i in range(n):
        if not 0 <= at[i] < cap:
            raise ValueError(f"record position {at[i]} outside the block of {cap} records")
    return &at[0] if n else NULL


cdef void _zero_records(uint8_t *o, Py_ssize_t n, int64_t rb, const int64_t *at) noexcept nogil:
    cdef Py_ssize_t i
    if at == NULL:
        memset(o, 0, n * rb)
        return
    for i in range(n):
        memset(o + at[i] * rb, 0, rb)


cdef inline const int64_t *_offsets(FieldPlan plan, const int8_t *var,
                                    Py_ssize_t i) noexcept nogil:
    """The record offsets of the fields key i reads: the plan's, or its variant's."""
    if var == NULL:
        return &plan.offsets[0]
    return &plan.var_offsets[var[i] * plan.n_fields]


cdef inline const int64_t *_firsts(FieldPlan plan, const int8_t *var,
                                   Py_ssize_t i) noexcept nogil:
    """The first parameter column of each affine segment for key i."""
    if var == NULL:
        return &plan.aff_first[0]
    return &plan.var_first[var[i] * plan.n_aff]


cdef const int8_t *_variants(const int8_t[::1] var, Py_ssize_t n, FieldPlan plan) except? NULL:
    """A read's per-key variants (NULL: none given), each checked against the plan."""
    cdef Py_ssize_t i
    if var is None:
        return NULL
    if var.shape[0] != n:
        raise ValueError("one variant per key")
    for i in range(n):
        if not 0 <= var[i] < plan.n_var:
            raise ValueError(f"variant {var[i]} of a plan with {plan.n_var} variants")
    return &var[0] if n else NULL


cdef void _affine_row(uint8_t *dst, FieldPlan plan, const int64_t *first) noexcept nogil:
    """Apply the plan's affine segments to one found key's output (see FieldPlan)."""
    cdef Py_ssize_t s
    cdef int64_t p, n, kind
    cdef Py_ssize_t w = plan.aff_params.shape[1]
    cdef const double *q = &plan.aff_params[0, 0]
    cdef const float *q32 = &plan.aff_params32[0, 0]
    for s in range(plan.n_aff):
        p = first[s]
        n = plan.aff_counts[s]
        kind = plan.aff_kinds[s]
        if kind & MMFS_AFF_F32MATH:
            mmfs_affine32(<float *>(dst + plan.aff_at[s]), n, q32 + p, q32 + w + p,
                          q32 + 2 * w + p, q32 + 3 * w + p, q32 + 4 * w + p, q32 + 5 * w + p,
                          q32 + 6 * w + p, <int>kind)
        elif kind & MMFS_AFF_F64:
            mmfs_affine_f64(<double *>(dst + plan.aff_at[s]), n, q + p, q + w + p,
                            q + 2 * w + p, q + 3 * w + p, q + 4 * w + p, q + 5 * w + p,
                            <int>kind)
        else:
            mmfs_affine_f32(<float *>(dst + plan.aff_at[s]), n, q + p, q + w + p,
                            q + 2 * w + p, q + 3 * w + p, q + 4 * w + p, q + 5 * w + p,
                            <int>kind)


def gather_sparse(const int64_t[::1] starts, const int64_t[::1] counts, idx_addrs,
                  val_addrs, int seg_bits, int64_t n_elems, int64_t dim,
                  const int64_t[::1] indptr, int32_t[::1] indices, float[::1] data):
    """Copy the CSR rows (starts[i], counts[i]) of a sparse arena into indices/data at
    indptr[i].  A row must lie inside one segment and below n_elems, and its indices in
    [0, dim); returns the number of rows that do not (they are left empty by the caller:
    corruption).  indptr is the caller's cumsum of counts (counts >= 0 checked there)."""
    cdef Py_ssize_t n = starts.shape[0], i
    cdef int64_t bad = 0, s, c, seg, off, j, size = <int64_t>1 << seg_bits
    cdef const intptr_t *ia = <const intptr_t *>_addr(idx_addrs)
    cdef const intptr_t *va = <const intptr_t *>_addr(val_addrs)
    cdef const int32_t *src_i
    cdef const float *src_v
    with nogil:
        for i in range(n):
            s = starts[i]
            c = counts[i]
            if c == 0:
                continue
            seg = s >> seg_bits
            off = s & (size - 1)
            if s < 0 or s + c > n_elems or off + c > size:
                bad += 1
                continue
            src_i = <const int32_t *>ia[seg] + off
            src_v = <const float *>va[seg] + off
            for j in range(c):
                if src_i[j] < 0 or src_i[j] >= dim:
                    break
            else:
                memcpy(&indices[indptr[i]], src_i, c * sizeof(int32_t))
                memcpy(&data[indptr[i]], src_v, c * sizeof(float))
                continue
            bad += 1
    return bad
