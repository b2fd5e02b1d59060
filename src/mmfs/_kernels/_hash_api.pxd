# The probe loops and hash functions of the key index (mmfs_hash.h), declared once for
# every kernel that reads a key index: _hash.pyx (the index itself) and _store.pyx (reads).

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

cdef extern from "mmfs_hash.h" nogil:
    int64_t MMFS_PROBE_CORRUPT
    uint64_t mmfs_fmix64(uint64_t k)
    uint64_t mmfs_xxh64(const uint8_t *p, int64_t length, uint64_t seed)
    int64_t mmfs_probe_int(const int64_t *tk, const int32_t *ts, uint64_t mask,
                           int64_t n_keys, int64_t key, uint64_t *pos)
    int64_t mmfs_probe_str(const uint64_t *th, const int32_t *ts, uint64_t mask,
                           const uint8_t *kb, int64_t n_bytes, const int64_t *ko,
                           int64_t n_keys, uint64_t h, const uint8_t *key, int64_t length,
                           uint64_t *pos)
    int64_t mmfs_lookup_int(const int64_t *tk, const int32_t *ts, uint64_t mask,
                            int64_t n_keys, const int64_t *q, int64_t *out, int64_t n)
    int64_t mmfs_lookup_str(const uint64_t *th, const int32_t *ts, uint64_t mask,
                            const uint8_t *kb, int64_t n_bytes, const int64_t *ko,
                            int64_t n_keys, const uint8_t *qb, const int64_t *qo,
                            int64_t *out, int64_t n)
    int64_t mmfs_verify_str(const uint64_t *th, const int32_t *ts, uint64_t mask,
                            const uint8_t *kb, int64_t n_bytes, const int64_t *ko,
                            int64_t n_keys, int64_t s0, int64_t s1)
