/*
 * mmfs_hash.h -- the two hash functions of the key index, and its probe loops.
 *
 * Both functions are fixed forever: a key index written to disk by one process, machine
 * or version of mmfs is read by every other, so they depend on nothing but the key bytes
 * (no seed from the environment, no PYTHONHASHSEED, no CPU feature, no endianness).
 *
 *   int64 keys:  mmfs_fmix64(k) -- the 64-bit finalizer of MurmurHash3 (Appleby, public
 *                domain) applied to the key's two's-complement bits.  A bijection of the
 *                64-bit words, so distinct keys never share a hash, and every input bit
 *                reaches every output bit: sequential keys and keys that differ only in
 *                high bits spread over the low bits that pick a bucket.
 *   str keys:    mmfs_xxh64(bytes, len, 0) -- XXH64 of the key's UTF-8 bytes with seed 0
 *                (Collet, BSD-2; this is a from-scratch transcription of the published
 *                algorithm).  Multi-byte words are read little-endian whatever the host,
 *                so the value is the reference XXH64 everywhere: XXH64("") =
 *                0xEF46DB3751D8E999.
 *
 * The probe loops (mmfs_probe_int, mmfs_probe_str) take the table as raw pointers and a
 * mask = capacity - 1 and never trust its contents: a probe stops after `capacity` steps
 * even when no position is empty, and a slot or offset outside its array is reported
 * (return MMFS_PROBE_CORRUPT), never dereferenced.
 */
#ifndef MMFS_HASH_H
#define MMFS_HASH_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MMFS_PROBE_CORRUPT (-2)

static inline uint64_t mmfs_fmix64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* ---- XXH64 ------------------------------------------------------------------------ */

#define MMFS_XXP1 0x9E3779B185EBCA87ULL
#define MMFS_XXP2 0xC2B2AE3D27D4EB4FULL
#define MMFS_XXP3 0x165667B19E3779F9ULL
#define MMFS_XXP4 0x85EBCA77C2B2AE63ULL
#define MMFS_XXP5 0x27D4EB2F165667C5ULL

static inline uint64_t mmfs_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t mmfs_read64le(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t mmfs_read32le(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t mmfs_xxround(uint64_t acc, uint64_t input) {
    acc += input * MMFS_XXP2;
    acc = mmfs_rotl64(acc, 31);
    return acc * MMFS_XXP1;
}

static inline uint64_t mmfs_xxmerge(uint64_t acc, uint64_t val) {
    acc ^= mmfs_xxround(0, val);
    return acc * MMFS_XXP1 + MMFS_XXP4;
}

static inline uint64_t mmfs_xxh64(const uint8_t *p, int64_t len, uint64_t seed) {
    const uint8_t *end = p + len;
    uint64_t h;
    if (len >= 32) {
        const uint8_t *limit = end - 32;
        uint64_t v1 = seed + MMFS_XXP1 + MMFS_XXP2, v2 = seed + MMFS_XXP2;
        uint64_t v3 = seed, v4 = seed - MMFS_XXP1;
        do {
            v1 = mmfs_xxround(v1, mmfs_read64le(p));
            v2 = mmfs_xxround(v2, mmfs_read64le(p + 8));
            v3 = mmfs_xxround(v3, mmfs_read64le(p + 16));
            v4 = mmfs_xxround(v4, mmfs_read64le(p + 24));
            p += 32;
        } while (p <= limit);
        h = mmfs_rotl64(v1, 1) + mmfs_rotl64(v2, 7) + mmfs_rotl64(v3, 12) + mmfs_rotl64(v4, 18);
        h = mmfs_xxmerge(h, v1);
        h = mmfs_xxmerge(h, v2);
        h = mmfs_xxmerge(h, v3);
        h = mmfs_xxmerge(h, v4);
    } else {
        h = seed + MMFS_XXP5;
    }
    h += (uint64_t)len;
    while (end - p >= 8) {
        h ^= mmfs_xxround(0, mmfs_read64le(p));
        h = mmfs_rotl64(h, 27) * MMFS_XXP1 + MMFS_XXP4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)mmfs_read32le(p) * MMFS_XXP1;
        h = mmfs_rotl64(h, 23) * MMFS_XXP2 + MMFS_XXP3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)(*p) * MMFS_XXP5;
        h = mmfs_rotl64(h, 11) * MMFS_XXP1;
        p++;
    }
    h ^= h >> 33;
    h *= MMFS_XXP2;
    h ^= h >> 29;
    h *= MMFS_XXP3;
    h ^= h >> 32;
    return h;
}

/* ---- probes ------------------------------------------------------------------------ */

/* The slot of `key`, or -1 when absent (then *pos is the empty position where it would
 * go), or MMFS_PROBE_CORRUPT (a slot >= n_keys, or no empty position in the table). */
static inline int64_t mmfs_probe_int(const int64_t *tk, const int32_t *ts, uint64_t mask,
                                     int64_t n_keys, int64_t key, uint64_t *pos) {
    uint64_t i = mmfs_fmix64((uint64_t)key) & mask;
    for (uint64_t step = 0; step <= mask; step++) {
        int64_t s = ts[i];
        if (s < 0) {
            *pos = i;
            return -1;
        }
        if (s >= n_keys) return MMFS_PROBE_CORRUPT;
        if (tk[i] == key) return s;
        i = (i + 1) & mask;
    }
    return MMFS_PROBE_CORRUPT;
}

/* The same for a string key of hash h: a position matches when its stored hash equals h
 * and the arena holds the same bytes at its slot.  Offsets are checked before use. */
static inline int64_t mmfs_probe_str(const uint64_t *th, const int32_t *ts, uint64_t mask,
                                     const uint8_t *kb, int64_t n_bytes, const int64_t *ko,
                                     int64_t n_keys, uint64_t h, const uint8_t *key,
                                     int64_t len, uint64_t *pos) {
    uint64_t i = h & mask;
    for (uint64_t step = 0; step <= mask; step++) {
        int64_t s = ts[i];
        if (s < 0) {
            *pos = i;
            return -1;
        }
        if (s >= n_keys) return MMFS_PROBE_CORRUPT;
        if (th[i] == h) {
            int64_t a = ko[s], b = ko[s + 1];
            if (a < 0 || b < a || b > n_bytes) return MMFS_PROBE_CORRUPT;
            if (b - a == len && (len == 0 || memcmp(kb + a, key, (size_t)len) == 0)) return s;
        }
        i = (i + 1) & mask;
    }
    return MMFS_PROBE_CORRUPT;
}

/* Look up n int64 keys; returns the number of corrupt probes (their out[] is -1).  Keys
 * are taken in groups of 16 whose home positions are prefetched first, so the cache
 * misses of a group overlap instead of queueing one behind the other. */
static inline int64_t mmfs_lookup_int(const int64_t *tk, const int32_t *ts, uint64_t mask,
                                      int64_t n_keys, const int64_t *q, int64_t *out,
                                      int64_t n) {
    int64_t bad = 0;
    uint64_t pos;
    for (int64_t g = 0; g < n; g += 16) {
        int64_t e = n - g < 16 ? n : g + 16;
        for (int64_t j = g; j < e; j++) {
            uint64_t i = mmfs_fmix64((uint64_t)q[j]) & mask;
            __builtin_prefetch(ts + i);
            __builtin_prefetch(tk + i);
        }
        for (int64_t j = g; j < e; j++) {
            int64_t s = mmfs_probe_int(tk, ts, mask, n_keys, q[j], &pos);
            if (s == MMFS_PROBE_CORRUPT) {
                bad++;
                s = -1;
            }
            out[j] = s;
        }
    }
    return bad;
}

/* Up to 16 string keys (key j = qb[qo[j]:qo[j+1]]) -> res[j] = slot, -1 or
 * MMFS_PROBE_CORRUPT.  A hit reads three dependent places (hashes/slots at home, the
 * key's offsets, its bytes), so the group goes through them in stages, prefetching the
 * next place of every key before reading the first: the misses of the group overlap. */
static inline void mmfs_probe_str_group(const uint64_t *th, const int32_t *ts, uint64_t mask,
                                        const uint8_t *kb, int64_t n_bytes, const int64_t *ko,
                                        int64_t n_keys, const uint8_t *qb, const int64_t *qo,
                                        int64_t cnt, int64_t *res) {
    uint64_t hs[16], pos;
    int64_t cand[16];
    for (int64_t j = 0; j < cnt; j++) {
        uint64_t h = mmfs_xxh64(qb + qo[j], qo[j + 1] - qo[j], 0);
        hs[j] = h;
        __builtin_prefetch(ts + (h & mask));
        __builtin_prefetch(th + (h & mask));
    }
    for (int64_t j = 0; j < cnt; j++) {
        uint64_t i = hs[j] & mask;
        int64_t s = ts[i];
        cand[j] = (s >= 0 && s < n_keys && th[i] == hs[j]) ? s : -1;
        if (cand[j] >= 0) __builtin_prefetch(ko + cand[j]);
    }
    for (int64_t j = 0; j < cnt; j++) {
        if (cand[j] >= 0) {
            int64_t a = ko[cand[j]];
            if (a >= 0 && a < n_bytes) __builtin_prefetch(kb + a);
        }
    }
    for (int64_t j = 0; j < cnt; j++)
        res[j] = mmfs_probe_str(th, ts, mask, kb, n_bytes, ko, n_keys, hs[j], qb + qo[j],
                                qo[j + 1] - qo[j], &pos);
}

/* Look up n string keys; the same contract as mmfs_lookup_int. */
static inline int64_t mmfs_lookup_str(const uint64_t *th, const int32_t *ts, uint64_t mask,
                                      const uint8_t *kb, int64_t n_bytes, const int64_t *ko,
                                      int64_t n_keys, const uint8_t *qb, const int64_t *qo,
                                      int64_t *out, int64_t n) {
    int64_t bad = 0;
    for (int64_t g = 0; g < n; g += 16) {
        int64_t cnt = n - g < 16 ? n - g : 16;
        mmfs_probe_str_group(th, ts, mask, kb, n_bytes, ko, n_keys, qb, qo + g, cnt, out + g);
        for (int64_t j = g; j < g + cnt; j++) {
            if (out[j] == MMFS_PROBE_CORRUPT) {
                bad++;
                out[j] = -1;
            }
        }
    }
    return bad;
}

/* Count the stored keys s in [s0, s1) that a lookup of their own bytes does not map back
 * to s (a stored hash that is not the key's hash, a duplicate earlier on the probe path,
 * an empty position before the key, or a corrupt table).  Keys are read in slot order,
 * so the arena streams; only the table is read at random.  ko must be monotone within
 * kb[0:n_bytes] (checked by the caller). */
static inline int64_t mmfs_verify_str(const uint64_t *th, const int32_t *ts, uint64_t mask,
                                      const uint8_t *kb, int64_t n_bytes, const int64_t *ko,
                                      int64_t n_keys, int64_t s0, int64_t s1) {
    int64_t bad = 0, res[16];
    for (int64_t g = s0; g < s1; g += 16) {
        int64_t cnt = s1 - g < 16 ? s1 - g : 16;
        mmfs_probe_str_group(th, ts, mask, kb, n_bytes, ko, n_keys, kb, ko + g, cnt, res);
        for (int64_t j = 0; j < cnt; j++) bad += res[j] != g + j;
    }
    return bad;
}
#endif
