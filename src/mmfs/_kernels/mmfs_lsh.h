/*
 * mmfs_lsh.h -- sign-random-projection codes, and the Hamming scan that finds candidates.
 *
 * Codes
 * -----
 * A code of B bits (B a multiple of 64) is computed from a vector x of dimension d, a
 * projection matrix P (float32, d x B, row-major: row j holds the coefficient of
 * dimension j for every bit) and thresholds t (float32, B):
 *
 *     s_b = (((0 + x_0 * P[0, b]) + x_1 * P[1, b]) + ...) + x_{d-1} * P[d-1, b]
 *     bit b = s_b > t_b
 *
 * in float32, each product and each sum rounded on its own (no fused multiply-add: the
 * build passes -ffp-contract=off), in that order.  numpy reproduces it exactly with
 * `acc += x[:, j, None] * P[j]` for j = 0 .. d-1, which is what the tests do.  A
 * float64 vector is rounded to float32 first.  A sparse row (CSR, indices ascending)
 * adds only its stored entries, in index order; that equals the dense sum, because adding
 * a zero product never changes an accumulator that starts at +0.  A NaN anywhere gives
 * s_b = NaN and bit 0.
 *
 * Bit b is bit (b mod 64) of the little-endian uint64 word b / 64: the words, written out
 * little-endian, are numpy.packbits(bits, bitorder="little").
 *
 * Speed: the dense kernel keeps the sums of four rows x 16 bits in registers while it
 * walks j (see mmfs_srp_dense_*); a sparse row adds its few entries into B sums.
 *
 * Scan
 * ----
 * The first word of each code (its 64-bit prefix) lives in its own array, so finding
 * candidates streams 8 bytes per row.  mmfs_lsh_prefix_scan keeps every row whose prefix
 * distance popcount(q ^ code) is at most `cap`, appending (row, distance, prefix) in row
 * order;
 * rows whose bit in `allow` is 0 are skipped.  The AVX2 path counts four codes at a time
 * with the nibble lookup (vpshufb) and vpsadbw; the portable path uses
 * __builtin_popcountll.  Both give the same list.
 */
#ifndef MMFS_LSH_H
#define MMFS_LSH_H

#include <Python.h>
#include <stdint.h>
#include <string.h>
#include "mmfs_dense.h"

#if defined(__GNUC__) && defined(__x86_64__) && !defined(MMFS_NO_CLONES)
#include <immintrin.h>
#define MMFS_HAVE_AVX2_SCAN 1
#endif

#define MMFS_SRP_ROWS 4

/* Pack the sums of one row into W words. */
static inline void mmfs_srp_pack(const float *s, const float *t, Py_ssize_t W, uint64_t *out) {
    for (Py_ssize_t w = 0; w < W; w++) {
        uint64_t word = 0;
        for (int b = 0; b < 64; b++)
            word |= (uint64_t)(s[w * 64 + b] > t[w * 64 + b]) << b;
        out[w] = word;
    }
}

/* acc[b] += x * p[b] for b < B, one rounding per product and per sum. */
#define MMFS_SRP_AXPY(acc, x, p, B)                                                          \
    do {                                                                                     \
        const float x_ = (x);                                                                \
        _Pragma("omp simd") for (Py_ssize_t b_ = 0; b_ < (B); b_++)                          \
            (acc)[b_] += x_ * (p)[b_];                                                       \
    } while (0)

/* Codes of n dense rows (T = float or double, ld = row stride in elements).  scratch:
 * MMFS_SRP_ROWS * (d + B) floats.  sums_out (n x B, or NULL): the sums themselves.
 *
 * The sums of a block of four rows are taken 16 bits at a time in registers: for each j,
 * two 8-float vectors of P's row j are multiplied by each row's x_j and added to that
 * row's accumulators (GCC vector extensions: AVX2 in the x86-64-v3 clone, two SSE
 * halves in the baseline).  Every lane does exactly the scalar sequence above. */
typedef float mmfs_v8sf __attribute__((vector_size(32)));

#define MMFS_SRP_DENSE(T, SFX)                                                               \
    MMFS_DISPATCH static void mmfs_srp_dense_##SFX(const T *X, Py_ssize_t n, Py_ssize_t d,   \
                                                   Py_ssize_t ld, const float *P,            \
                                                   const float *t, Py_ssize_t B,             \
                                                   uint64_t *out, float *scratch,            \
                                                   float *sums_out) {                        \
        const Py_ssize_t W = B / 64;                                                         \
        float *xs = scratch;                         /* 4 rows as float32, d each */         \
        float *sums = scratch + MMFS_SRP_ROWS * d;   /* 4 rows of B sums */                  \
        for (Py_ssize_t i = 0; i < n; i += MMFS_SRP_ROWS) {                                  \
            const Py_ssize_t m = n - i < MMFS_SRP_ROWS ? n - i : MMFS_SRP_ROWS;              \
            for (Py_ssize_t r = 0; r < MMFS_SRP_ROWS; r++)                                   \
                for (Py_ssize_t j = 0; j < d; j++)                                           \
                    xs[r * d + j] = r < m ? (float)X[(i + r) * ld + j] : 0.0f;               \
            for (Py_ssize_t c = 0; c < B; c += 16) {                                         \
                mmfs_v8sf a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0};                        \
                mmfs_v8sf a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};                        \
                for (Py_ssize_t j = 0; j < d; j++) {                                         \
                    mmfs_v8sf p0, p1;                                                        \
                    memcpy(&p0, P + j * B + c, sizeof p0);                                   \
                    memcpy(&p1, P + j * B + c + 8, sizeof p1);                               \
                    const float x0 = xs[j], x1 = xs[d + j], x2 = xs[2 * d + j];              \
                    const float x3 = xs[3 * d + j];                                          \
                    a00 += x0 * p0; a01 += x0 * p1;                                          \
                    a10 += x1 * p0; a11 += x1 * p1;                                          \
                    a20 += x2 * p0; a21 += x2 * p1;                                          \
                    a30 += x3 * p0; a31 += x3 * p1;                                          \
                }                                                                            \
                memcpy(sums + c, &a00, 32); memcpy(sums + c + 8, &a01, 32);                  \
                memcpy(sums + B + c, &a10, 32); memcpy(sums + B + c + 8, &a11, 32);          \
                memcpy(sums + 2 * B + c, &a20, 32); memcpy(sums + 2 * B + c + 8, &a21, 32);  \
                memcpy(sums + 3 * B + c, &a30, 32); memcpy(sums + 3 * B + c + 8, &a31, 32);  \
            }                                                                                \
            for (Py_ssize_t r = 0; r < m; r++)                                               \
                mmfs_srp_pack(sums + r * B, t, W, out + (i + r) * W);                        \
            if (sums_out != NULL)                                                            \
                memcpy(sums_out + i * B, sums, (size_t)(m * B) * sizeof(float));             \
        }                                                                                    \
    }

MMFS_SRP_DENSE(float, f32)
MMFS_SRP_DENSE(double, f64)

/* Codes of CSR rows [r0, r1) (indices ascending within a row).  acc: B floats. */
MMFS_DISPATCH static void mmfs_srp_csr(const int64_t *indptr, const int32_t *indices,
                                       const float *data, Py_ssize_t r0, Py_ssize_t r1,
                                       const float *P, const float *t, Py_ssize_t B,
                                       uint64_t *out, float *acc, float *sums_out) {
    const Py_ssize_t W = B / 64;
    for (Py_ssize_t i = r0; i < r1; i++) {
        memset(acc, 0, (size_t)B * sizeof(float));
        for (int64_t e = indptr[i]; e < indptr[i + 1]; e++)
            MMFS_SRP_AXPY(acc, data[e], P + (Py_ssize_t)indices[e] * B, B);
        mmfs_srp_pack(acc, t, W, out + i * W);
        if (sums_out != NULL) memcpy(sums_out + i * B, acc, (size_t)B * sizeof(float));
    }
}

/* ------------------------------------------------------------------------ the scan */

/* Append (row, d) for rows [base_row, base_row + m) of one segment whose prefix distance
 * d <= cap and whose allow bit is set (allow NULL: all).  Returns the new length. */
static Py_ssize_t mmfs_lsh_scan_portable(const uint64_t *codes, Py_ssize_t m, int64_t base_row,
                                         uint64_t q, const uint64_t *allow, int cap,
                                         int64_t *rows, uint8_t *dist, uint64_t *kept, Py_ssize_t len) {
    for (Py_ssize_t i = 0; i < m; i++) {
        const int64_t r = base_row + i;
        const int d = __builtin_popcountll(codes[i] ^ q);
        if (d <= cap && (allow == NULL || ((allow[r >> 6] >> (r & 63)) & 1))) {
            rows[len] = r;
            dist[len] = (uint8_t)d;
            kept[len] = codes[i];
            len++;
        }
    }
    return len;
}

#ifdef MMFS_HAVE_AVX2_SCAN
__attribute__((target("avx2"))) static Py_ssize_t
mmfs_lsh_scan_avx2(const uint64_t *codes, Py_ssize_t m, int64_t base_row, uint64_t q,
                   const uint64_t *allow, int cap, int64_t *rows, uint8_t *dist,
                   uint64_t *kept, Py_ssize_t len) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1,
                                         1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i qv = _mm256_set1_epi64x((long long)q);
    const __m256i capv = _mm256_set1_epi64x(cap);
    const __m256i zero = _mm256_setzero_si256();
    Py_ssize_t i = 0;
    for (; i + 8 <= m; i += 8) {
        __m256i a = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(codes + i)), qv);
        __m256i b = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(codes + i + 4)), qv);
        __m256i ca = _mm256_add_epi8(
            _mm256_shuffle_epi8(lut, _mm256_and_si256(a, low)),
            _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(a, 4), low)));
        __m256i cb = _mm256_add_epi8(
            _mm256_shuffle_epi8(lut, _mm256_and_si256(b, low)),
            _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(b, 4), low)));
        ca = _mm256_sad_epu8(ca, zero); /* four 64-bit lanes: the distances */
        cb = _mm256_sad_epu8(cb, zero);
        const int over = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(ca, capv))) |
                         (_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(cb, capv)))
                          << 4);
        if (over != 0xff) {
            uint64_t ds[8];
            _mm256_storeu_si256((__m256i *)ds, ca);
            _mm256_storeu_si256((__m256i *)(ds + 4), cb);
            for (int l = 0; l < 8; l++) {
                const int64_t r = base_row + i + l;
                if (!((over >> l) & 1) &&
                    (allow == NULL || ((allow[r >> 6] >> (r & 63)) & 1))) {
                    rows[len] = r;
                    dist[len] = (uint8_t)ds[l];
                    kept[len] = codes[i + l];
                    len++;
                }
            }
        }
    }
    return mmfs_lsh_scan_portable(codes + i, m - i, base_row + i, q, allow, cap, rows, dist,
                                  kept, len);
}
#endif

/* ------------------------------------------------------------------------ the pool */

#define MMFS_POOL_AHEAD 32 /* rows whose prefixes are prefetched ahead of the one read */

/* The prefixes of n pool rows (random reads, prefetched ahead): keeps, in place and in
 * order, the rows set in allow (NULL: all) with their prefix and its distance to q.
 * Returns how many are kept.  Its own function so that the x86-64-v3 clone counts bits
 * with the popcnt instruction. */
MMFS_DISPATCH static Py_ssize_t mmfs_lsh_pool_prefixes(const intptr_t *segs, int seg_bits,
                                                       const uint64_t *allow, uint64_t q,
                                                       int64_t *rows, Py_ssize_t n,
                                                       uint8_t *dist, uint64_t *kept) {
    const int64_t mask = ((int64_t)1 << seg_bits) - 1;
    Py_ssize_t out = 0, ahead = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        for (; ahead < n && ahead < i + MMFS_POOL_AHEAD; ahead++) {
            const int64_t a = rows[ahead];
            __builtin_prefetch((const uint64_t *)segs[a >> seg_bits] + (a & mask), 0, 3);
            if (allow != NULL) __builtin_prefetch(allow + (a >> 6), 0, 3);
        }
        const int64_t r = rows[i];
        if (allow != NULL && !((allow[r >> 6] >> (r & 63)) & 1)) continue;
        const uint64_t c = ((const uint64_t *)segs[r >> seg_bits])[r & mask];
        rows[out] = r;
        dist[out] = (uint8_t)__builtin_popcountll(c ^ q);
        kept[out] = c;
        out++;
    }
    return out;
}

static inline int mmfs_lsh_has_avx2(void) {
#ifdef MMFS_HAVE_AVX2_SCAN
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

/* One segment's worth of the scan, by the path the CPU supports.  `rows` and `dist` must
 * have room for len + m entries. */
static inline Py_ssize_t mmfs_lsh_scan(int avx2, const uint64_t *codes, Py_ssize_t m,
                                       int64_t base_row, uint64_t q, const uint64_t *allow,
                                       int cap, int64_t *rows, uint8_t *dist, uint64_t *kept, Py_ssize_t len) {
#ifdef MMFS_HAVE_AVX2_SCAN
    if (avx2)
        return mmfs_lsh_scan_avx2(codes, m, base_row, q, allow, cap, rows, dist, kept, len);
#endif
    (void)avx2;
    return mmfs_lsh_scan_portable(codes, m, base_row, q, allow, cap, rows, dist, kept, len);
}

#endif
