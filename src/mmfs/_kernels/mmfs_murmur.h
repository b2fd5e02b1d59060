/*
 * mmfs_murmur.h -- the hashes of deterministic experiment assignment: salted MurmurHash3,
 * the 0..9999 slot derived from it, and GrowthBook's FNV-1a buckets.
 *
 * Everything below is a contract.  An assignment computed by one process, machine or
 * version of mmfs must equal every other's, and must equal what other systems compute
 * from the same definitions, so nothing depends on the host (no endianness, no CPU
 * feature, no PYTHONHASHSEED):
 *
 *   MurmurHash3     x86_32 and x64_128 (Appleby, public domain; transcribed here from
 *                   the published algorithm).  Multi-byte words are read little-endian
 *                   whatever the host, so the values are bit-exact with the `mmh3`
 *                   package: mmh3.hash(msg, seed, signed=False) for 32 bits, and for
 *                   128 bits the pair (h1, h2) == mmh3.hash64(msg, seed, signed=False),
 *                   i.e. mmh3.hash128(msg, seed, signed=False) == h1 | h2 << 64.
 *   key bytes       an int64 key is its 8 little-endian two's-complement bytes; a str
 *                   key is its UTF-8 bytes.
 *   salt            msg = prefix || key_bytes with
 *                     prefix = uint32_le(len(salt)) || salt || zero bytes up to the next
 *                              multiple of 16 bytes,
 *                   so the prefix is self-delimiting ("ab" + "c" != "a" + "bc") and ends
 *                   on a block boundary of both variants (4 and 16 bytes).  The state
 *                   after the prefix is computed once per call (mmfs_mm32_start,
 *                   mmfs_mm128_start); a key then costs only its own blocks, tail and
 *                   finalisation, with the total length len(prefix) + len(key).  With no
 *                   salt there is no prefix: plain MurmurHash3 of the key bytes.  An
 *                   empty salt is a salt (a 16-byte prefix), not "no salt".
 *   slot            slot = (uint64(h32) * 10000) >> 32, in [0, 10000): the top of the
 *                   32-bit hash scaled, not a modulus, so every slot gets 429496 or
 *                   429497 of the 2**32 hash values.
 *   GrowthBook      fnv1a32 (offset basis 0x811C9DC5, prime 0x01000193) over UTF-16 code
 *                   units (an astral character is its surrogate pair), as growthbook's
 *                   fnv1a32 / the JS SDK's charCodeAt loop.
 *                     v2: n = fnv1a32(decimal(fnv1a32(seed + value))); bucket = n % 10000
 *                     v1: n = fnv1a32(value + seed);                   bucket = n % 1000
 *                   (v1 is the namespace hash, seed "__" + namespace id).  The value of an
 *                   int64 key is its decimal form with a leading '-' when negative (what
 *                   JS String(Number) prints for |k| <= 2**53; larger keys are refused
 *                   by the Python layer, the kernel just prints decimal).  The kernel
 *                   returns the integer bucket; gbhash's float is bucket / 10000 (/ 1000).
 *
 * String keys arrive UTF-8 encoded (bytes + offsets: hashed as they are for MurmurHash3,
 * decoded strictly for GrowthBook) or as numpy 'U' rows of UCS4 code points, which are
 * encoded on the fly (UTF-8 bytes for MurmurHash3, UTF-16 units for GrowthBook) with no
 * buffer at all: bytes are shifted into the little-endian block word as they are made,
 * which is exactly how MurmurHash3 reads a block, and a partial word at the end is
 * exactly its tail word.  A UCS4 row ends at its first 0 code point or at its width.  A
 * code point above 0x10FFFF, a surrogate (UCS4), or malformed UTF-8 (GrowthBook only)
 * makes the key bad: the range functions count bad keys and write 0 (-1 for assign) for
 * them; the wrapper raises.
 *
 * The int64 range loops are straight-line uint32/uint64 arithmetic that gcc vectorises;
 * they carry an x86-64-v3 (AVX2) clone chosen at load time, like mmfs_dense.h.
 */
#ifndef MMFS_MURMUR_H
#define MMFS_MURMUR_H
#include <stdint.h>
#include <string.h>

#include "mmfs_hash.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(MMFS_NO_CLONES)
#define MMFS_MM_DISPATCH __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MMFS_MM_DISPATCH
#endif

#define MMFS_SLOTS 10000
#define MMFS_MM_BLOCK 256 /* keys whose slots are computed before their table lookups */

/* Little-endian reads, rotl64 and the 64-bit finalizer are the key index's (mmfs_hash.h). */

static inline uint32_t mmfs_mm_rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

/* ---- MurmurHash3 x86_32 --------------------------------------------------------------- */

#define MMFS_M32_C1 0xcc9e2d51u
#define MMFS_M32_C2 0x1b873593u

/* The hash state after the salt prefix: h, and the number of bytes already consumed. */
typedef struct {
    uint32_t h;
    uint64_t len;
} mmfs_mm32_t;

static inline uint32_t mmfs_mm32_mix(uint32_t k) {
    k *= MMFS_M32_C1;
    k = mmfs_mm_rotl32(k, 15);
    return k * MMFS_M32_C2;
}

static inline uint32_t mmfs_mm32_block(uint32_t h, uint32_t k) {
    h ^= mmfs_mm32_mix(k);
    h = mmfs_mm_rotl32(h, 13);
    return h * 5u + 0xe6546b64u;
}

static inline uint32_t mmfs_mm32_fin(uint32_t h, uint64_t total) {
    h ^= (uint32_t)total;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

/* State after `plen` prefix bytes (plen a multiple of 4). */
static inline mmfs_mm32_t mmfs_mm32_start(uint32_t seed, const uint8_t *prefix, int64_t plen) {
    mmfs_mm32_t s;
    s.h = seed;
    for (int64_t i = 0; i + 4 <= plen; i += 4) s.h = mmfs_mm32_block(s.h, mmfs_read32le(prefix + i));
    s.len = (uint64_t)plen;
    return s;
}

/* Continue state s with the key bytes p[0:len] and finalise. */
static inline uint32_t mmfs_mm32_bytes(mmfs_mm32_t s, const uint8_t *p, int64_t len) {
    uint32_t h = s.h, k = 0;
    int64_t nb = len >> 2;
    for (int64_t i = 0; i < nb; i++) h = mmfs_mm32_block(h, mmfs_read32le(p + 4 * i));
    const uint8_t *t = p + 4 * nb;
    switch (len & 3) {
    case 3:
        k ^= (uint32_t)t[2] << 16;
        /* fall through */
    case 2:
        k ^= (uint32_t)t[1] << 8;
        /* fall through */
    case 1:
        k ^= t[0];
        h ^= mmfs_mm32_mix(k);
    }
    return mmfs_mm32_fin(h, s.len + (uint64_t)len);
}

/* Both states of an assignment over the same key bytes, in one pass. */
static inline void mmfs_mm32_bytes2(mmfs_mm32_t sa, mmfs_mm32_t sb, const uint8_t *p, int64_t len,
                                    uint32_t *ha, uint32_t *hb) {
    uint32_t a = sa.h, b = sb.h, k = 0;
    int64_t nb = len >> 2;
    for (int64_t i = 0; i < nb; i++) {
        uint32_t w = mmfs_read32le(p + 4 * i);
        a = mmfs_mm32_block(a, w);
        b = mmfs_mm32_block(b, w);
    }
    const uint8_t *t = p + 4 * nb;
    for (int64_t i = (len & 3) - 1; i >= 0; i--) k = (k << 8) | t[i];
    if (len & 3) {
        a ^= mmfs_mm32_mix(k);
        b ^= mmfs_mm32_mix(k);
    }
    *ha = mmfs_mm32_fin(a, sa.len + (uint64_t)len);
    *hb = mmfs_mm32_fin(b, sb.len + (uint64_t)len);
}

/* An int64 key: two blocks (low word, high word), no tail. */
static inline uint32_t mmfs_mm32_int(mmfs_mm32_t s, int64_t key) {
    uint64_t u = (uint64_t)key;
    uint32_t h = mmfs_mm32_block(s.h, (uint32_t)u);
    h = mmfs_mm32_block(h, (uint32_t)(u >> 32));
    return mmfs_mm32_fin(h, s.len + 8);
}

/* Plain MurmurHash3_x86_32(p, len, seed). */
static inline uint32_t mmfs_murmur32(const uint8_t *p, int64_t len, uint32_t seed) {
    mmfs_mm32_t s;
    s.h = seed;
    s.len = 0;
    return mmfs_mm32_bytes(s, p, len);
}

static inline uint32_t mmfs_slot(uint32_t h) {
    return (uint32_t)(((uint64_t)h * MMFS_SLOTS) >> 32);
}

/* UCS4 row c[0:w] -> UTF-8 bytes streamed into one or two states (nh = 1 or 2; inlined
 * with a constant nh).  Returns 1 when the row holds a surrogate or a code point above
 * 0x10FFFF (the hashes are then meaningless), else 0. */
static inline int mmfs_mm32_ucs4(const uint32_t *c, int64_t w, int nh, mmfs_mm32_t sa,
                                 mmfs_mm32_t sb, uint32_t *ha, uint32_t *hb) {
    uint32_t a = sa.h, b = sb.h, acc = 0;
    unsigned sh = 0;
    uint64_t nbytes = 0;
    int64_t i = 0;
#define MMFS_M32_PUT(byte)                                                                   \
    do {                                                                                     \
        acc |= (uint32_t)(byte) << sh;                                                       \
        sh += 8;                                                                             \
        if (sh == 32) {                                                                      \
            a = mmfs_mm32_block(a, acc);                                                     \
            if (nh > 1) b = mmfs_mm32_block(b, acc);                                         \
            acc = 0;                                                                         \
            sh = 0;                                                                          \
        }                                                                                    \
    } while (0)
    while (i < w) {
        /* Four ASCII code points (all in 1..0x7F) on a word boundary make one block. */
        if (sh == 0 && i + 4 <= w) {
            uint32_t c0 = c[i], c1 = c[i + 1], c2 = c[i + 2], c3 = c[i + 3];
            if (((c0 - 1) | (c1 - 1) | (c2 - 1) | (c3 - 1)) < 0x7Fu) {
                uint32_t word = c0 | (c1 << 8) | (c2 << 16) | (c3 << 24);
                a = mmfs_mm32_block(a, word);
                if (nh > 1) b = mmfs_mm32_block(b, word);
                nbytes += 4;
                i += 4;
                continue;
            }
        }
        uint32_t cp = c[i++];
        if (cp < 0x80) {
            if (cp == 0) break;
            MMFS_M32_PUT(cp);
            nbytes += 1;
        } else if (cp < 0x800) {
            MMFS_M32_PUT(0xC0 | (cp >> 6));
            MMFS_M32_PUT(0x80 | (cp & 0x3F));
            nbytes += 2;
        } else if (cp < 0x10000) {
            if (cp >= 0xD800 && cp <= 0xDFFF) return 1;
            MMFS_M32_PUT(0xE0 | (cp >> 12));
            MMFS_M32_PUT(0x80 | ((cp >> 6) & 0x3F));
            MMFS_M32_PUT(0x80 | (cp & 0x3F));
            nbytes += 3;
        } else if (cp <= 0x10FFFF) {
            MMFS_M32_PUT(0xF0 | (cp >> 18));
            MMFS_M32_PUT(0x80 | ((cp >> 12) & 0x3F));
            MMFS_M32_PUT(0x80 | ((cp >> 6) & 0x3F));
            MMFS_M32_PUT(0x80 | (cp & 0x3F));
            nbytes += 4;
        } else {
            return 1;
        }
    }
#undef MMFS_M32_PUT
    if (sh) { /* the partial word is the tail word */
        a ^= mmfs_mm32_mix(acc);
        b ^= mmfs_mm32_mix(acc);
    }
    *ha = mmfs_mm32_fin(a, sa.len + nbytes);
    if (nh > 1) *hb = mmfs_mm32_fin(b, sb.len + nbytes);
    return 0;
}

/* ---- MurmurHash3 x64_128 -------------------------------------------------------------- */

#define MMFS_M128_C1 0x87c37b91114253d5ULL
#define MMFS_M128_C2 0x4cf5ad432745937fULL

typedef struct {
    uint64_t h1, h2;
    uint64_t len;
} mmfs_mm128_t;


static inline uint64_t mmfs_mm128_mix1(uint64_t k) {
    k *= MMFS_M128_C1;
    k = mmfs_rotl64(k, 31);
    return k * MMFS_M128_C2;
}

static inline uint64_t mmfs_mm128_mix2(uint64_t k) {
    k *= MMFS_M128_C2;
    k = mmfs_rotl64(k, 33);
    return k * MMFS_M128_C1;
}

static inline void mmfs_mm128_block(uint64_t *h1, uint64_t *h2, uint64_t k1, uint64_t k2) {
    uint64_t a = *h1, b = *h2;
    a ^= mmfs_mm128_mix1(k1);
    a = mmfs_rotl64(a, 27);
    a += b;
    a = a * 5 + 0x52dce729;
    b ^= mmfs_mm128_mix2(k2);
    b = mmfs_rotl64(b, 31);
    b += a;
    b = b * 5 + 0x38495ab5;
    *h1 = a;
    *h2 = b;
}

/* Tail words k1 (bytes 0..7) and k2 (bytes 8..14) of a `tail`-byte tail, then the
 * finalisation; out[0] = h1, out[1] = h2. */
static inline void mmfs_mm128_fin(uint64_t h1, uint64_t h2, uint64_t k1, uint64_t k2, int tail,
                                  uint64_t total, uint64_t *out) {
    if (tail > 8) h2 ^= mmfs_mm128_mix2(k2);
    if (tail > 0) h1 ^= mmfs_mm128_mix1(k1);
    h1 ^= total;
    h2 ^= total;
    h1 += h2;
    h2 += h1;
    h1 = mmfs_fmix64(h1);
    h2 = mmfs_fmix64(h2);
    h1 += h2;
    h2 += h1;
    out[0] = h1;
    out[1] = h2;
}

/* State after `plen` prefix bytes (plen a multiple of 16). */
static inline mmfs_mm128_t mmfs_mm128_start(uint32_t seed, const uint8_t *prefix, int64_t plen) {
    mmfs_mm128_t s;
    s.h1 = seed;
    s.h2 = seed;
    for (int64_t i = 0; i + 16 <= plen; i += 16)
        mmfs_mm128_block(&s.h1, &s.h2, mmfs_read64le(prefix + i),
                         mmfs_read64le(prefix + i + 8));
    s.len = (uint64_t)plen;
    return s;
}

static inline void mmfs_mm128_bytes(mmfs_mm128_t s, const uint8_t *p, int64_t len, uint64_t *out) {
    uint64_t h1 = s.h1, h2 = s.h2, k1 = 0, k2 = 0;
    int64_t nb = len >> 4;
    for (int64_t i = 0; i < nb; i++)
        mmfs_mm128_block(&h1, &h2, mmfs_read64le(p + 16 * i), mmfs_read64le(p + 16 * i + 8));
    const uint8_t *t = p + 16 * nb;
    int tail = (int)(len & 15);
    for (int i = tail - 1; i >= 8; i--) k2 = (k2 << 8) | t[i];
    for (int i = (tail < 8 ? tail : 8) - 1; i >= 0; i--) k1 = (k1 << 8) | t[i];
    mmfs_mm128_fin(h1, h2, k1, k2, tail, s.len + (uint64_t)len, out);
}

/* An int64 key is an 8-byte tail: k1 = the key, no block. */
static inline void mmfs_mm128_int(mmfs_mm128_t s, int64_t key, uint64_t *out) {
    mmfs_mm128_fin(s.h1, s.h2, (uint64_t)key, 0, 8, s.len + 8, out);
}

static inline int mmfs_mm128_ucs4(const uint32_t *c, int64_t w, mmfs_mm128_t s, uint64_t *out) {
    uint64_t h1 = s.h1, h2 = s.h2, k1 = 0, k2 = 0, nbytes = 0;
    unsigned pos = 0;
#define MMFS_M128_PUT(byte)                                                                  \
    do {                                                                                     \
        if (pos < 8)                                                                         \
            k1 |= (uint64_t)(byte) << (8 * pos);                                             \
        else                                                                                 \
            k2 |= (uint64_t)(byte) << (8 * (pos - 8));                                       \
        if (++pos == 16) {                                                                   \
            mmfs_mm128_block(&h1, &h2, k1, k2);                                              \
            k1 = k2 = 0;                                                                     \
            pos = 0;                                                                         \
        }                                                                                    \
    } while (0)
    for (int64_t i = 0; i < w; i++) {
        uint32_t cp = c[i];
        if (cp < 0x80) {
            if (cp == 0) break;
            MMFS_M128_PUT(cp);
            nbytes += 1;
        } else if (cp < 0x800) {
            MMFS_M128_PUT(0xC0 | (cp >> 6));
            MMFS_M128_PUT(0x80 | (cp & 0x3F));
            nbytes += 2;
        } else if (cp < 0x10000) {
            if (cp >= 0xD800 && cp <= 0xDFFF) return 1;
            MMFS_M128_PUT(0xE0 | (cp >> 12));
            MMFS_M128_PUT(0x80 | ((cp >> 6) & 0x3F));
            MMFS_M128_PUT(0x80 | (cp & 0x3F));
            nbytes += 3;
        } else if (cp <= 0x10FFFF) {
            MMFS_M128_PUT(0xF0 | (cp >> 18));
            MMFS_M128_PUT(0x80 | ((cp >> 12) & 0x3F));
            MMFS_M128_PUT(0x80 | ((cp >> 6) & 0x3F));
            MMFS_M128_PUT(0x80 | (cp & 0x3F));
            nbytes += 4;
        } else {
            return 1;
        }
    }
#undef MMFS_M128_PUT
    mmfs_mm128_fin(h1, h2, k1, k2, (int)pos, s.len + nbytes, out);
    return 0;
}

/* ---- FNV-1a 32 over UTF-16 units (GrowthBook) ---------------------------------------- */

#define MMFS_FNV_BASIS 0x811C9DC5u
#define MMFS_FNV_PRIME 0x01000193u

static inline uint32_t mmfs_fnv_step(uint32_t h, uint32_t unit) {
    return (h ^ unit) * MMFS_FNV_PRIME;
}

static inline uint32_t mmfs_fnv_units(uint32_t h, const uint16_t *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) h = mmfs_fnv_step(h, u[i]);
    return h;
}

/* A valid code point as one unit or a surrogate pair. */
static inline uint32_t mmfs_fnv_cp(uint32_t h, uint32_t cp) {
    if (cp < 0x10000) return mmfs_fnv_step(h, cp);
    cp -= 0x10000;
    h = mmfs_fnv_step(h, 0xD800 | (cp >> 10));
    return mmfs_fnv_step(h, 0xDC00 | (cp & 0x3FF));
}

/* The decimal digits of v (no sign). */
static inline uint32_t mmfs_fnv_dec(uint32_t h, uint64_t v) {
    uint8_t d[20];
    int i = 20;
    do {
        d[--i] = (uint8_t)('0' + v % 10);
        v /= 10;
    } while (v);
    for (; i < 20; i++) h = mmfs_fnv_step(h, d[i]);
    return h;
}

static inline uint32_t mmfs_fnv_i64(uint32_t h, int64_t key) {
    uint64_t u = (uint64_t)key;
    if (key < 0) {
        h = mmfs_fnv_step(h, '-');
        u = 0 - u; /* also right for INT64_MIN */
    }
    return mmfs_fnv_dec(h, u);
}

/* A UCS4 row as UTF-16 units; *bad = 1 on a surrogate or a code point > 0x10FFFF. */
static inline uint32_t mmfs_fnv_ucs4(uint32_t h, const uint32_t *c, int64_t w, int *bad) {
    for (int64_t i = 0; i < w; i++) {
        uint32_t cp = c[i];
        if (cp == 0) break;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            *bad = 1;
            return h;
        }
        h = mmfs_fnv_cp(h, cp);
    }
    return h;
}

/* UTF-8 bytes decoded strictly (no overlong forms, surrogates, code points above
 * 0x10FFFF, stray or missing continuation bytes -- Python's rules) into UTF-16 units. */
static inline uint32_t mmfs_fnv_utf8(uint32_t h, const uint8_t *p, int64_t len, int *bad) {
    int64_t i = 0;
    while (i < len) {
        uint32_t cp = p[i], lo;
        int need;
        if (cp < 0x80) {
            h = mmfs_fnv_step(h, cp);
            i++;
            continue;
        }
        if ((cp & 0xE0) == 0xC0) {
            cp &= 0x1F;
            need = 1;
            lo = 0x80;
        } else if ((cp & 0xF0) == 0xE0) {
            cp &= 0x0F;
            need = 2;
            lo = 0x800;
        } else if ((cp & 0xF8) == 0xF0) {
            cp &= 0x07;
            need = 3;
            lo = 0x10000;
        } else {
            *bad = 1;
            return h;
        }
        if (len - i - 1 < need) {
            *bad = 1;
            return h;
        }
        for (int k = 1; k <= need; k++) {
            uint32_t b = p[i + k];
            if ((b & 0xC0) != 0x80) {
                *bad = 1;
                return h;
            }
            cp = (cp << 6) | (b & 0x3F);
        }
        if (cp < lo || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            *bad = 1;
            return h;
        }
        h = mmfs_fnv_cp(h, cp);
        i += need + 1;
    }
    return h;
}

/* v2's outer hash: fnv1a32 of the decimal form of the inner hash, mod 10000. */
static inline uint16_t mmfs_gb_v2(uint32_t inner) {
    return (uint16_t)(mmfs_fnv_dec(MMFS_FNV_BASIS, inner) % 10000u);
}

/* ---- range loops ----------------------------------------------------------------------- */

/* arm if in_domain else -1, without a branch (membership is often a coin flip). */
static inline int16_t mmfs_pick(uint8_t in_domain, int16_t arm) {
    int32_t in = -(int32_t)(in_domain != 0);
    return (int16_t)((arm & in) | ~in);
}

MMFS_MM_DISPATCH static void mmfs_mm32_int_range(mmfs_mm32_t s, const int64_t *restrict k,
                                                 int64_t n, uint32_t *restrict out) {
    for (int64_t i = 0; i < n; i++) out[i] = mmfs_mm32_int(s, k[i]);
}

MMFS_MM_DISPATCH static void mmfs_mm128_int_range(mmfs_mm128_t s, const int64_t *restrict k,
                                                  int64_t n, uint64_t *restrict out) {
    for (int64_t i = 0; i < n; i++) mmfs_mm128_int(s, k[i], out + 2 * i);
}

MMFS_MM_DISPATCH static void mmfs_slot_int_range(mmfs_mm32_t s, const int64_t *restrict k,
                                                 int64_t n, uint16_t *restrict out) {
    for (int64_t i = 0; i < n; i++) out[i] = (uint16_t)mmfs_slot(mmfs_mm32_int(s, k[i]));
}

/* Keys go in blocks of MMFS_MM_BLOCK: one vectorised loop computes both slots of every
 * key of the block into two small stack arrays (L1), a second loop does the two table
 * reads per key (tables of 10000 entries: 30 KB, cache resident). */
MMFS_MM_DISPATCH static void mmfs_assign_int_range(mmfs_mm32_t sd, mmfs_mm32_t sa,
                                                   const uint8_t *restrict dom,
                                                   const int16_t *restrict arm,
                                                   const int64_t *restrict k, int64_t n,
                                                   int16_t *restrict out) {
    uint32_t ds[MMFS_MM_BLOCK], as[MMFS_MM_BLOCK];
    for (int64_t g = 0; g < n; g += MMFS_MM_BLOCK) {
        int64_t m = n - g < MMFS_MM_BLOCK ? n - g : MMFS_MM_BLOCK;
        const int64_t *kg = k + g;
        for (int64_t j = 0; j < m; j++) {
            ds[j] = mmfs_slot(mmfs_mm32_int(sd, kg[j]));
            as[j] = mmfs_slot(mmfs_mm32_int(sa, kg[j]));
        }
        for (int64_t j = 0; j < m; j++) out[g + j] = mmfs_pick(dom[ds[j]], arm[as[j]]);
    }
}

static inline void mmfs_mm32_utf8_range(mmfs_mm32_t s, const uint8_t *data, const int64_t *off,
                                        int64_t n, uint32_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = mmfs_mm32_bytes(s, data + off[i], off[i + 1] - off[i]);
}

static inline void mmfs_mm128_utf8_range(mmfs_mm128_t s, const uint8_t *data, const int64_t *off,
                                         int64_t n, uint64_t *out) {
    for (int64_t i = 0; i < n; i++)
        mmfs_mm128_bytes(s, data + off[i], off[i + 1] - off[i], out + 2 * i);
}

static inline void mmfs_slot_utf8_range(mmfs_mm32_t s, const uint8_t *data, const int64_t *off,
                                        int64_t n, uint16_t *out) {
    for (int64_t i = 0; i < n; i++)
        out[i] = (uint16_t)mmfs_slot(mmfs_mm32_bytes(s, data + off[i], off[i + 1] - off[i]));
}

static inline void mmfs_assign_utf8_range(mmfs_mm32_t sd, mmfs_mm32_t sa, const uint8_t *dom,
                                          const int16_t *arm, const uint8_t *data,
                                          const int64_t *off, int64_t n, int16_t *out) {
    uint32_t hd, ha;
    for (int64_t i = 0; i < n; i++) {
        mmfs_mm32_bytes2(sd, sa, data + off[i], off[i + 1] - off[i], &hd, &ha);
        out[i] = mmfs_pick(dom[mmfs_slot(hd)], arm[mmfs_slot(ha)]);
    }
}

static inline int64_t mmfs_mm32_ucs4_range(mmfs_mm32_t s, const uint32_t *c, int64_t w,
                                           int64_t n, uint32_t *out) {
    int64_t bad = 0;
    uint32_t h = 0;
    for (int64_t i = 0; i < n; i++) {
        int b = mmfs_mm32_ucs4(c + i * w, w, 1, s, s, &h, &h);
        out[i] = b ? 0 : h;
        bad += b;
    }
    return bad;
}

static inline int64_t mmfs_mm128_ucs4_range(mmfs_mm128_t s, const uint32_t *c, int64_t w,
                                            int64_t n, uint64_t *out) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int b = mmfs_mm128_ucs4(c + i * w, w, s, out + 2 * i);
        if (b) out[2 * i] = out[2 * i + 1] = 0;
        bad += b;
    }
    return bad;
}

static inline int64_t mmfs_slot_ucs4_range(mmfs_mm32_t s, const uint32_t *c, int64_t w,
                                           int64_t n, uint16_t *out) {
    int64_t bad = 0;
    uint32_t h = 0;
    for (int64_t i = 0; i < n; i++) {
        int b = mmfs_mm32_ucs4(c + i * w, w, 1, s, s, &h, &h);
        out[i] = b ? 0 : (uint16_t)mmfs_slot(h);
        bad += b;
    }
    return bad;
}

static inline int64_t mmfs_assign_ucs4_range(mmfs_mm32_t sd, mmfs_mm32_t sa, const uint8_t *dom,
                                             const int16_t *arm, const uint32_t *c, int64_t w,
                                             int64_t n, int16_t *out) {
    int64_t bad = 0;
    uint32_t hd = 0, ha = 0;
    for (int64_t i = 0; i < n; i++) {
        int b = mmfs_mm32_ucs4(c + i * w, w, 2, sd, sa, &hd, &ha);
        out[i] = mmfs_pick(b ? 0 : dom[mmfs_slot(hd)], arm[mmfs_slot(ha)]);
        bad += b;
    }
    return bad;
}

/* GrowthBook buckets.  `hs` is fnv1a32 of the seed units from the offset basis (the v2
 * prefix state); v1 appends the seed units after the value. */
static inline void mmfs_gb_int_range(const uint16_t *seed, int64_t ns, uint32_t hs, int version,
                                     const int64_t *k, int64_t n, uint16_t *out) {
    if (version == 2) {
        for (int64_t i = 0; i < n; i++) out[i] = mmfs_gb_v2(mmfs_fnv_i64(hs, k[i]));
    } else {
        for (int64_t i = 0; i < n; i++) {
            uint32_t h = mmfs_fnv_units(mmfs_fnv_i64(MMFS_FNV_BASIS, k[i]), seed, ns);
            out[i] = (uint16_t)(h % 1000u);
        }
    }
}

static inline int64_t mmfs_gb_utf8_range(const uint16_t *seed, int64_t ns, uint32_t hs,
                                         int version, const uint8_t *data, const int64_t *off,
                                         int64_t n, uint16_t *out) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int b = 0;
        const uint8_t *p = data + off[i];
        int64_t len = off[i + 1] - off[i];
        if (version == 2) {
            uint32_t h = mmfs_fnv_utf8(hs, p, len, &b);
            out[i] = b ? 0 : mmfs_gb_v2(h);
        } else {
            uint32_t h = mmfs_fnv_units(mmfs_fnv_utf8(MMFS_FNV_BASIS, p, len, &b), seed, ns);
            out[i] = b ? 0 : (uint16_t)(h % 1000u);
        }
        bad += b;
    }
    return bad;
}

static inline int64_t mmfs_gb_ucs4_range(const uint16_t *seed, int64_t ns, uint32_t hs,
                                         int version, const uint32_t *c, int64_t w, int64_t n,
                                         uint16_t *out) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int b = 0;
        if (version == 2) {
            uint32_t h = mmfs_fnv_ucs4(hs, c + i * w, w, &b);
            out[i] = b ? 0 : mmfs_gb_v2(h);
        } else {
            uint32_t h = mmfs_fnv_units(mmfs_fnv_ucs4(MMFS_FNV_BASIS, c + i * w, w, &b), seed, ns);
            out[i] = b ? 0 : (uint16_t)(h % 1000u);
        }
        bad += b;
    }
    return bad;
}

/* ---- one entry point for the Cython wrappers ------------------------------------------ */

enum { MMFS_OP_M32 = 0, MMFS_OP_M128 = 1, MMFS_OP_SLOT = 2, MMFS_OP_ASSIGN = 3, MMFS_OP_GB = 4 };
enum { MMFS_FORM_INT = 0, MMFS_FORM_UTF8 = 1, MMFS_FORM_UCS4 = 2 };

/* Everything one call needs; keys [lo, hi) of it are one work item. */
typedef struct {
    int op, form;
    const int64_t *keys;   /* MMFS_FORM_INT */
    const uint8_t *data;   /* MMFS_FORM_UTF8: key j = data[offsets[j]:offsets[j+1]] */
    const int64_t *offsets;
    const uint32_t *chars; /* MMFS_FORM_UCS4: key j = chars[j*width : (j+1)*width] */
    int64_t width;
    mmfs_mm32_t s32, s32b; /* murmur32 / slot state; assign: s32 = domain, s32b = arm */
    mmfs_mm128_t s128;
    const uint8_t *dom;
    const int16_t *arm;
    const uint16_t *seed; /* GrowthBook seed units, its v2 prefix state, the version */
    int64_t nseed;
    uint32_t seed_state;
    int version;
    uint32_t *out32;
    uint64_t *out128; /* (n, 2) */
    uint16_t *out16;  /* slots, GrowthBook buckets */
    int16_t *outarm;
} mmfs_assign_job_t;

/* Run keys [lo, hi) of a job; returns the number of bad keys among them. */
static int64_t mmfs_assign_run(const mmfs_assign_job_t *jb, int64_t lo, int64_t hi) {
    int64_t n = hi - lo;
    if (n <= 0) return 0;
    const int64_t *k = jb->form == MMFS_FORM_INT ? jb->keys + lo : NULL;
    const int64_t *off = jb->form == MMFS_FORM_UTF8 ? jb->offsets + lo : NULL;
    const uint32_t *c = jb->form == MMFS_FORM_UCS4 ? jb->chars + lo * jb->width : NULL;
    int64_t w = jb->width;
    switch (jb->op * 3 + jb->form) {
    case MMFS_OP_M32 * 3 + MMFS_FORM_INT:
        mmfs_mm32_int_range(jb->s32, k, n, jb->out32 + lo);
        return 0;
    case MMFS_OP_M32 * 3 + MMFS_FORM_UTF8:
        mmfs_mm32_utf8_range(jb->s32, jb->data, off, n, jb->out32 + lo);
        return 0;
    case MMFS_OP_M32 * 3 + MMFS_FORM_UCS4:
        return mmfs_mm32_ucs4_range(jb->s32, c, w, n, jb->out32 + lo);
    case MMFS_OP_M128 * 3 + MMFS_FORM_INT:
        mmfs_mm128_int_range(jb->s128, k, n, jb->out128 + 2 * lo);
        return 0;
    case MMFS_OP_M128 * 3 + MMFS_FORM_UTF8:
        mmfs_mm128_utf8_range(jb->s128, jb->data, off, n, jb->out128 + 2 * lo);
        return 0;
    case MMFS_OP_M128 * 3 + MMFS_FORM_UCS4:
        return mmfs_mm128_ucs4_range(jb->s128, c, w, n, jb->out128 + 2 * lo);
    case MMFS_OP_SLOT * 3 + MMFS_FORM_INT:
        mmfs_slot_int_range(jb->s32, k, n, jb->out16 + lo);
        return 0;
    case MMFS_OP_SLOT * 3 + MMFS_FORM_UTF8:
        mmfs_slot_utf8_range(jb->s32, jb->data, off, n, jb->out16 + lo);
        return 0;
    case MMFS_OP_SLOT * 3 + MMFS_FORM_UCS4:
        return mmfs_slot_ucs4_range(jb->s32, c, w, n, jb->out16 + lo);
    case MMFS_OP_ASSIGN * 3 + MMFS_FORM_INT:
        mmfs_assign_int_range(jb->s32, jb->s32b, jb->dom, jb->arm, k, n, jb->outarm + lo);
        return 0;
    case MMFS_OP_ASSIGN * 3 + MMFS_FORM_UTF8:
        mmfs_assign_utf8_range(jb->s32, jb->s32b, jb->dom, jb->arm, jb->data, off, n,
                               jb->outarm + lo);
        return 0;
    case MMFS_OP_ASSIGN * 3 + MMFS_FORM_UCS4:
        return mmfs_assign_ucs4_range(jb->s32, jb->s32b, jb->dom, jb->arm, c, w, n,
                                      jb->outarm + lo);
    case MMFS_OP_GB * 3 + MMFS_FORM_INT:
        mmfs_gb_int_range(jb->seed, jb->nseed, jb->seed_state, jb->version, k, n, jb->out16 + lo);
        return 0;
    case MMFS_OP_GB * 3 + MMFS_FORM_UTF8:
        return mmfs_gb_utf8_range(jb->seed, jb->nseed, jb->seed_state, jb->version, jb->data, off,
                                  n, jb->out16 + lo);
    case MMFS_OP_GB * 3 + MMFS_FORM_UCS4:
        return mmfs_gb_ucs4_range(jb->seed, jb->nseed, jb->seed_state, jb->version, c, w, n,
                                  jb->out16 + lo);
    }
    return n;
}

/* 1 when off[0..n] is a monotone sequence inside [0, nbytes], else 0. */
static inline int mmfs_offsets_ok(const int64_t *off, int64_t n, int64_t nbytes) {
    if (off[0] < 0 || off[n] > nbytes) return 0;
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= off[i] <= off[i + 1];
    return ok;
}
#endif
