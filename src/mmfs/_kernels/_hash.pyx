# cython: freethreading_compatible = True
"""The key index: an open-addressing hash table from entity key to row slot.

Design
------
A feature group numbers its entities densely in order of first insertion: the first key
ever written gets slot 0, the next new key slot 1, and so on, so a slot is the entity's
row number in the group's arenas and page tables.  This table maps a key to its slot.

Arrays.  The table is nothing but flat numpy arrays, so a later version can write them
to a file and map them back (readers then probe the page cache directly):

  int64 keys                         str keys
  keys:  int64[cap]                  hashes:      uint64[cap]   xxh64 of the key
  slots: int32[cap]                  slots:       int32[cap]
                                     key_bytes:   uint8[...]    UTF-8 bytes of all keys
                                     key_offsets: int64[n + 1]  key s = key_bytes[o[s]:o[s+1]]

Slots are int32 (12 or 16 bytes per position instead of 16 or 24; a group holds at most
2**31 - 1 keys, and the capacity at most 2**32).  slots[i] == -1 marks position i empty (any negative value reads as empty; the key or
hash beside an empty slot means nothing).  String keys live once, in slot order, in an
arena; the table holds only their 64-bit hash, and a probe compares bytes only when the
hash matches, so a lookup touches the arena about once.  Rebuilding the table never
needs the key bytes: the stored hash gives the new position.

Probing.  cap is a power of two and mask = cap - 1.  A key's home is hash & mask; a
lookup walks i, i+1, ... (mod cap) until it finds the key or an empty position (linear
probing: the next position is usually in the same cache line).  The hash of an int64 key
is MurmurHash3's fmix64 finalizer, of a string XXH64 (seed 0) of its UTF-8 bytes; both
are fixed and documented in mmfs_hash.h, so a table built on one machine is read the
same on every other.  Batch lookups hash 16 keys, prefetch their homes, then probe, so
the cache misses of a batch overlap; above a size threshold chunks of keys run on
OpenMP threads (prange), each key's answer independent of the others.

Load and growth.  At most cap/2 positions are used (load factor 0.5: an unsuccessful
probe then reads 2.5 positions on average).  Growth never happens in place: the caller
allocates a table of twice the capacity and rehashes into it, so a reader that holds
the old arrays (or a mapped file of them) keeps a complete, valid table.  Deletion is
not supported (slots are permanent; a store marks deleted entities elsewhere).

Trust.  Inserts are sequential (one writer).  Nothing here trusts a table's contents:
every probe is bounded by cap steps even when no position is empty, and a slot or
offset out of range is counted as corruption (the caller raises CorruptStoreError)
instead of being dereferenced.  Kernels never raise on their inputs: the Python layer
(mmfs.storage.keyindex) has checked dtypes, lengths and the power of two.
"""

from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

from mmfs._kernels._hash_api cimport (
    MMFS_PROBE_CORRUPT,
    mmfs_fmix64,
    mmfs_lookup_int,
    mmfs_lookup_str,
    mmfs_probe_int,
    mmfs_probe_str,
    mmfs_verify_str,
    mmfs_xxh64,
)

DEF CHUNK = 2048  # keys per parallel work item

# Status codes of the insert kernels (returned as the first item of their tuple).
cdef enum:
    DONE = 0         # every key has its slot
    GROW_TABLE = 1   # stopped: one more key would take the load over 1/2
    GROW_ARENA = 2   # stopped: the next key's bytes do not fit key_bytes/key_offsets
    CORRUPT = 3      # stopped: the table is corrupt (slot out of range, or full)

INSERT_DONE = DONE
INSERT_GROW_TABLE = GROW_TABLE
INSERT_GROW_ARENA = GROW_ARENA
INSERT_CORRUPT = CORRUPT


def fmix64(int64_t key):
    """The hash of an int64 key (MurmurHash3's fmix64 of its bits), as a Python int."""
    return mmfs_fmix64(<uint64_t>key)


def xxh64(const uint8_t[::1] data):
    """XXH64 (seed 0) of a byte buffer: the hash of a string key's UTF-8 bytes."""
    cdef uint8_t empty = 0
    if data.shape[0] == 0:
        return mmfs_xxh64(&empty, 0, 0)
    return mmfs_xxh64(&data[0], data.shape[0], 0)


def lookup_int(const int64_t[::1] tkeys, const int32_t[::1] tslots, int64_t n_keys,
               const int64_t[::1] keys, int64_t[::1] out, int n_threads):
    """out[j] = slot of keys[j], or -1.  Returns the number of corrupt probes."""
    cdef Py_ssize_t n = keys.shape[0], nch, c, lo
    cdef int64_t bad = 0
    if n == 0:
        return 0
    cdef const int64_t *pk = &tkeys[0]
    cdef const int32_t *ps = &tslots[0]
    cdef uint64_t mask = <uint64_t>tslots.shape[0] - 1
    cdef const int64_t *pq = &keys[0]
    cdef int64_t *po = &out[0]
    if n_threads <= 1 or n <= CHUNK:
        with nogil:
            bad = mmfs_lookup_int(pk, ps, mask, n_keys, pq, po, n)
        return bad
    nch = (n + CHUNK - 1) // CHUNK
    for c in prange(nch, nogil=True, schedule="static", num_threads=n_threads):
        lo = c * CHUNK
        bad += mmfs_lookup_int(pk, ps, mask, n_keys, pq + lo, po + lo, min(CHUNK, n - lo))
    return bad


def lookup_int_one(const int64_t[::1] tkeys, const int32_t[::1] tslots, int64_t n_keys,
                   int64_t key):
    """The slot of one key, -1 when absent, -2 (MMFS_PROBE_CORRUPT) on a corrupt table.
    The online path: two buffers to acquire instead of four, no output array."""
    cdef uint64_t pos
    return mmfs_probe_int(&tkeys[0], &tslots[0], <uint64_t>tslots.shape[0] - 1, n_keys, key,
                          &pos)


def insert_int(int64_t[::1] tkeys, int32_t[::1] tslots, int64_t n_keys,
               const int64_t[::1] keys, Py_ssize_t start, int64_t[::1] out):
    """Give keys[start:] their slots (new keys get n_keys, n_keys + 1, ...).

    Returns (status, stop, n_keys): keys[start:stop] have their slots in out; status says
    why it stopped (INSERT_*).  A key repeated in the batch finds its first occurrence.
    """
    cdef Py_ssize_t m = keys.shape[0], j = start
    cdef int64_t *pk = &tkeys[0]
    cdef int32_t *ps = &tslots[0]
    cdef uint64_t mask = <uint64_t>tslots.shape[0] - 1, pos = 0
    cdef int64_t limit = tslots.shape[0] // 2, s, key
    cdef int status = DONE
    if m == 0:
        return status, 0, n_keys
    cdef const int64_t *pq = &keys[0]
    cdef int64_t *po = &out[0]
    with nogil:
        while j < m:
            key = pq[j]
            s = mmfs_probe_int(pk, ps, mask, n_keys, key, &pos)
            if s == MMFS_PROBE_CORRUPT:
                status = CORRUPT
                break
            if s < 0:
                if n_keys >= limit:
                    status = GROW_TABLE
                    break
                pk[pos] = key
                ps[pos] = <int32_t>n_keys
                s = n_keys
                n_keys += 1
            po[j] = s
            j += 1
    return status, j, n_keys


def rehash_int(const int64_t[::1] tkeys, const int32_t[::1] tslots,
               int64_t[::1] nkeys, int32_t[::1] nslots):
    """Place every entry of a table into an empty table (nslots all -1) of larger
    capacity.  The caller guarantees the new table has an empty position for each."""
    cdef Py_ssize_t cap = tslots.shape[0], i
    cdef uint64_t mask = <uint64_t>nslots.shape[0] - 1, p
    cdef const int64_t *pk = &tkeys[0]
    cdef const int32_t *ps = &tslots[0]
    cdef int64_t *qk = &nkeys[0]
    cdef int32_t *qs = &nslots[0]
    with nogil:
        for i in range(cap):
            if ps[i] < 0:
                continue
            p = mmfs_fmix64(<uint64_t>pk[i]) & mask
            while qs[p] >= 0:
                p = (p + 1) & mask
            qk[p] = pk[i]
            qs[p] = ps[i]


def verify_int(const int64_t[::1] tkeys, const int32_t[::1] tslots, int64_t n_keys,
               int n_threads):
    """Count the occupied positions that a lookup of their own key does not reach (an
    empty position between home and key, or the same key earlier on the path).  Slots
    must already be known to be a permutation of 0..n_keys-1."""
    cdef Py_ssize_t cap = tslots.shape[0], i
    cdef int64_t bad = 0
    cdef uint64_t mask = <uint64_t>cap - 1, pos
    cdef const int64_t *pk = &tkeys[0]
    cdef const int32_t *ps = &tslots[0]
    for i in prange(cap, nogil=True, schedule="static", num_threads=max(1, n_threads)):
        if ps[i] >= 0:
            if mmfs_probe_int(pk, ps, mask, n_keys, pk[i], &pos) != ps[i]:
                bad += 1
    return bad


def lookup_str(const uint64_t[::1] thashes, const int32_t[::1] tslots,
               const uint8_t[::1] key_bytes, const int64_t[::1] key_offsets, int64_t n_keys,
               const uint8_t[::1] qbytes, const int64_t[::1] qoffsets, int64_t[::1] out,
               int n_threads):
    """out[j] = slot of key qbytes[qoffsets[j]:qoffsets[j+1]], or -1.

    The arena's used part is key_bytes[:key_offsets[n_keys]] (the arrays may be longer).
    Returns the number of corrupt probes."""
    cdef Py_ssize_t n = out.shape[0], nch, c, lo
    cdef int64_t bad = 0, n_bytes
    cdef uint8_t empty = 0
    if n == 0:
        return 0
    if n_keys < 0 or n_keys + 1 > key_offsets.shape[0]:
        return n
    n_bytes = key_offsets[n_keys]
    if n_bytes < 0 or n_bytes > key_bytes.shape[0]:
        return n
    cdef const uint64_t *ph = &thashes[0]
    cdef const int32_t *ps = &tslots[0]
    cdef const uint8_t *kb = &key_bytes[0] if key_bytes.shape[0] > 0 else &empty
    cdef const int64_t *ko = &key_offsets[0]
    cdef const uint8_t *qb = &qbytes[0] if qbytes.shape[0] > 0 else &empty
    cdef const int64_t *qo = &qoffsets[0]
    cdef int64_t *po = &out[0]
    cdef uint64_t mask = <uint64_t>tslots.shape[0] - 1
    if n_threads <= 1 or n <= CHUNK:
        with nogil:
            bad = mmfs_lookup_str(ph, ps, mask, kb, n_bytes, ko, n_keys, qb, qo, po, n)
        return bad
    nch = (n + CHUNK - 1) // CHUNK
    for c in prange(nch, nogil=True, schedule="static", num_threads=n_threads):
        lo = c * CHUNK
        bad += mmfs_lookup_str(ph, ps, mask, kb, n_bytes, ko, n_keys, qb, qo + lo, po + lo,
                               min(CHUNK, n - lo))
    return bad


def lookup_str_one(const uint64_t[::1] thashes, const int32_t[::1] tslots,
                   const uint8_t[::1] key_bytes, const int64_t[::1] key_offsets,
                   int64_t n_keys, bytes key):
    """The slot of one string key (its UTF-8 bytes), -1 or -2 as lookup_int_one."""
    cdef uint8_t empty = 0
    cdef uint64_t pos
    cdef int64_t length = len(key), n_bytes
    cdef const uint8_t *pkey = <const uint8_t *><const char *>key
    if n_keys < 0 or n_keys + 1 > key_offsets.shape[0]:
        return MMFS_PROBE_CORRUPT
    n_bytes = key_offsets[n_keys]
    if n_bytes < 0 or n_bytes > key_bytes.shape[0]:
        return MMFS_PROBE_CORRUPT
    cdef const uint8_t *kb = &key_bytes[0] if key_bytes.shape[0] > 0 else &empty
    return mmfs_probe_str(&thashes[0], &tslots[0], <uint64_t>tslots.shape[0] - 1, kb, n_bytes,
                          &key_offsets[0], n_keys, mmfs_xxh64(pkey, length, 0), pkey, length,
                          &pos)


def insert_str(uint64_t[::1] thashes, int32_t[::1] tslots, uint8_t[::1] key_bytes,
               int64_t[::1] key_offsets, int64_t n_keys, const uint8_t[::1] qbytes,
               const int64_t[::1] qoffsets, Py_ssize_t start, int64_t[::1] out):
    """Give string keys [start:] their slots; a new key's bytes are appended to the arena.

    key_bytes and key_offsets are buffers with spare room; the kernel stops with
    GROW_ARENA when the next new key does not fit.  Returns (status, stop, n_keys)
    as insert_int does."""
    cdef Py_ssize_t m = out.shape[0], j = start
    cdef uint64_t mask = <uint64_t>tslots.shape[0] - 1, pos = 0, h
    cdef int64_t limit = tslots.shape[0] // 2, s, length, used
    cdef int64_t cap_bytes = key_bytes.shape[0], cap_offsets = key_offsets.shape[0]
    cdef int status = DONE
    cdef uint8_t empty = 0
    if m == 0:
        return status, 0, n_keys
    if n_keys < 0 or n_keys + 1 > cap_offsets:
        return CORRUPT, start, n_keys
    used = key_offsets[n_keys]
    if used < 0 or used > cap_bytes:
        return CORRUPT, start, n_keys
    cdef uint64_t *ph = &thashes[0]
    cdef int32_t *ps = &tslots[0]
    cdef uint8_t *kb = &key_bytes[0] if cap_bytes > 0 else &empty
    cdef int64_t *ko = &key_offsets[0]
    cdef const uint8_t *qb = &qbytes[0] if qbytes.shape[0] > 0 else &empty
    cdef const int64_t *qo = &qoffsets[0]
    cdef int64_t *po = &out[0]
    with nogil:
        while j < m:
            length = qo[j + 1] - qo[j]
            h = mmfs_xxh64(qb + qo[j], length, 0)
            s = mmfs_probe_str(ph, ps, mask, kb, used, ko, n_keys, h, qb + qo[j], length,
                               &pos)
            if s == MMFS_PROBE_CORRUPT:
                status = CORRUPT
                break
            if s < 0:
                if n_keys >= limit:
                    status = GROW_TABLE
                    break
                if n_keys + 2 > cap_offsets or used + length > cap_bytes:
                    status = GROW_ARENA
                    break
                if length > 0:
                    memcpy(kb + used, qb + qo[j], length)
                used += length
                ko[n_keys + 1] = used
                ph[pos] = h
                ps[pos] = <int32_t>n_keys
                s = n_keys
                n_keys += 1
            po[j] = s
            j += 1
    return status, j, n_keys


def rehash_str(const uint64_t[::1] thashes, const int32_t[::1] tslots,
               uint64_t[::1] nhashes, int32_t[::1] nslots):
    """rehash_int for string tables: the stored hash gives the new position."""
    cdef Py_ssize_t cap = tslots.shape[0], i
    cdef uint64_t mask = <uint64_t>nslots.shape[0] - 1, p
    cdef const uint64_t *ph = &thashes[0]
    cdef const int32_t *ps = &tslots[0]
    cdef uint64_t *qh = &nhashes[0]
    cdef int32_t *qs = &nslots[0]
    with nogil:
        for i in range(cap):
            if ps[i] < 0:
                continue
            p = ph[i] & mask
            while qs[p] >= 0:
                p = (p + 1) & mask
            qh[p] = ph[i]
            qs[p] = ps[i]


def verify_str(const uint64_t[::1] thashes, const int32_t[::1] tslots,
               const uint8_t[::1] key_bytes, const int64_t[::1] key_offsets, int n_threads):
    """Count the stored keys that a lookup of their own bytes does not map back to their
    slot: a stored hash that is not the key's hash, a duplicate earlier on the probe path
    or an empty position before the key.  Slots must already be a permutation of
    0..n-1 and key_offsets monotone from 0 to at most len(key_bytes) (n = len - 1)."""
    cdef int64_t n_keys = key_offsets.shape[0] - 1, bad = 0, nch, c, lo
    cdef uint8_t empty = 0
    if n_keys <= 0:
        return 0
    cdef const uint64_t *ph = &thashes[0]
    cdef const int32_t *ps = &tslots[0]
    cdef const uint8_t *kb = &key_bytes[0] if key_bytes.shape[0] > 0 else &empty
    cdef const int64_t *ko = &key_offsets[0]
    cdef int64_t n_bytes = key_offsets[n_keys]
    cdef uint64_t mask = <uint64_t>tslots.shape[0] - 1
    nch = (n_keys + CHUNK - 1) // CHUNK
    for c in prange(nch, nogil=True, schedule="static", num_threads=max(1, n_threads)):
        lo = c * CHUNK
        bad += mmfs_verify_str(ph, ps, mask, kb, n_bytes, ko, n_keys, lo,
                               min(n_keys, lo + CHUNK))
    return bad
