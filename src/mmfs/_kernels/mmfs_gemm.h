/*
 * mmfs_gemm.h -- C = A @ B.T with a result that depends on nothing but the two rows.
 *
 * Why not BLAS?  A BLAS library is free to change how it sums a dot product with the
 * number of threads it runs and the shape of the call (OpenBLAS does: the same row
 * pair gives different last bits for 1 and 2 threads, or for 7 and 1000 rows of A).
 * mmfs promises the same output for the same input whatever the thread count, so the
 * products behind cdist's euclidean, cosine, inner_product and mahalanobis routes are
 * taken here instead.
 *
 * The order of operations, for one output element c = sum_k a[k] * b[k], is fixed:
 *   - W lanes (W = 8 floats or 4 doubles, one 256-bit register): lane l accumulates
 *     a[k] * b[k] for k = l, l + W, l + 2W, ... with a fused multiply-add, in order;
 *   - the lanes are summed by a fixed tree: (l, l + W/2) pairs first, then halves again;
 *   - the K mod W leftover products are then added one by one with fused multiply-adds.
 * A fused multiply-add is exactly rounded, so the AVX2 path (x86-64-v3, chosen at run
 * time) and the portable path (fma() from libm) give the same bits, and so does every
 * tile position: a 4 x 3 tile computes each of its 12 elements exactly as a 1 x 1 tile.
 *
 * Speed: the AVX2 micro-kernel keeps a 4 x 3 tile of accumulators in 12 registers and
 * streams K with 7 loads per 12 FMAs, four of them from rows that stay in L1; callers (_dense.pyx) block B rows so a tile's
 * operands come from L1/L2.
 */
#ifndef MMFS_GEMM_H
#define MMFS_GEMM_H

#include <Python.h>
#include <math.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(MMFS_NO_CLONES)
#include <immintrin.h>
#define MMFS_HAVE_AVX2_GEMM 1
#endif

/* Portable reference: W lanes emulated, same order of operations as the AVX2 path. */
#define MMFS_GEMM_PORTABLE(T, SFX, W, FMA)                                                   \
    static T mmfs_dot_fixed_##SFX(const T *a, const T *b, Py_ssize_t K) {                    \
        T lane[W];                                                                           \
        for (int l = 0; l < W; l++) lane[l] = 0;                                             \
        Py_ssize_t k = 0;                                                                    \
        for (; k + W <= K; k += W)                                                           \
            for (int l = 0; l < W; l++) lane[l] = FMA(a[k + l], b[k + l], lane[l]);          \
        for (int h = W / 2; h >= 1; h /= 2)                                                  \
            for (int l = 0; l < h; l++) lane[l] = lane[l] + lane[l + h];                     \
        T s = lane[0];                                                                       \
        for (; k < K; k++) s = FMA(a[k], b[k], s);                                           \
        return s;                                                                            \
    }

MMFS_GEMM_PORTABLE(float, f32, 8, fmaf)
MMFS_GEMM_PORTABLE(double, f64, 4, fma)

#ifdef MMFS_HAVE_AVX2_GEMM
__attribute__((target("avx2,fma"))) static inline float mmfs_hsum8(__m256 v) {
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* l+4 */
    t = _mm_add_ps(t, _mm_movehl_ps(t, t));                                         /* l+2 */
    t = _mm_add_ss(t, _mm_shuffle_ps(t, t, 1));                                     /* l+1 */
    return _mm_cvtss_f32(t);
}

__attribute__((target("avx2,fma"))) static inline double mmfs_hsum4(__m256d v) {
    __m128d t = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1)); /* l+2 */
    t = _mm_add_sd(t, _mm_unpackhi_pd(t, t));                                         /* l+1 */
    return _mm_cvtsd_f64(t);
}

/* Four horizontal sums at once, in the fixed tree order: out[q] = hsum(c_q). */
__attribute__((target("avx2,fma"))) static inline __m128 mmfs_hsum8x4(__m256 c0, __m256 c1,
                                                                     __m256 c2, __m256 c3) {
    __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(c0), _mm256_extractf128_ps(c0, 1));
    __m128 t1 = _mm_add_ps(_mm256_castps256_ps128(c1), _mm256_extractf128_ps(c1, 1));
    __m128 t2 = _mm_add_ps(_mm256_castps256_ps128(c2), _mm256_extractf128_ps(c2, 1));
    __m128 t3 = _mm_add_ps(_mm256_castps256_ps128(c3), _mm256_extractf128_ps(c3, 1));
    /* (l, l+2): lanes 0,1 of t0 and t1 side by side */
    __m128 u01 = _mm_add_ps(_mm_movelh_ps(t0, t1), _mm_movehl_ps(t1, t0));
    __m128 u23 = _mm_add_ps(_mm_movelh_ps(t2, t3), _mm_movehl_ps(t3, t2));
    /* (l, l+1) */
    __m128 even = _mm_shuffle_ps(u01, u23, _MM_SHUFFLE(2, 0, 2, 0));
    __m128 odd = _mm_shuffle_ps(u01, u23, _MM_SHUFFLE(3, 1, 3, 1));
    return _mm_add_ps(even, odd);
}

/* 4 rows of A against 3 rows of B: 12 independent accumulator chains (enough to cover
 * the FMA latency), and per step of W values 3 loads of B (from L2) and 4 of A (from L1:
 * the 4 rows are reused across all of B's block). */
#define MMFS_GEMM_AVX2(T, SFX, V, W, LD, FM, ZERO, HS, HS4, FMA)                                  \
    __attribute__((target("avx2,fma"))) static void mmfs_gemm_tile_avx2_##SFX(               \
        const T *A, Py_ssize_t ma, const T *B, Py_ssize_t mb, Py_ssize_t K, T *C,            \
        Py_ssize_t ldc) {                                                                    \
        Py_ssize_t KW = K - K % W, i = 0;                                                    \
        for (; i + 4 <= ma; i += 4) {                                                        \
            const T *a0 = A + i * K, *a1 = a0 + K, *a2 = a1 + K, *a3 = a2 + K;               \
            Py_ssize_t j = 0;                                                                \
            for (; j + 3 <= mb; j += 3) {                                                    \
                const T *b0 = B + j * K, *b1 = b0 + K, *b2 = b1 + K;                         \
                V c00 = ZERO, c10 = ZERO, c20 = ZERO, c30 = ZERO;                            \
                V c01 = ZERO, c11 = ZERO, c21 = ZERO, c31 = ZERO;                            \
                V c02 = ZERO, c12 = ZERO, c22 = ZERO, c32 = ZERO;                            \
                for (Py_ssize_t k = 0; k < KW; k += W) {                                     \
                    V y0 = LD(b0 + k), y1 = LD(b1 + k), y2 = LD(b2 + k), x;                  \
                    x = LD(a0 + k);                                                          \
                    c00 = FM(x, y0, c00); c01 = FM(x, y1, c01); c02 = FM(x, y2, c02);        \
                    x = LD(a1 + k);                                                          \
                    c10 = FM(x, y0, c10); c11 = FM(x, y1, c11); c12 = FM(x, y2, c12);        \
                    x = LD(a2 + k);                                                          \
                    c20 = FM(x, y0, c20); c21 = FM(x, y1, c21); c22 = FM(x, y2, c22);        \
                    x = LD(a3 + k);                                                          \
                    c30 = FM(x, y0, c30); c31 = FM(x, y1, c31); c32 = FM(x, y2, c32);        \
                }                                                                            \
                T r[12];                                                                     \
                HS(r, c00, c01, c02, c10, c11, c12, c20, c21);                               \
                HS4(r + 8, c22, c30, c31, c32);                                              \
                const T *ar[4] = {a0, a1, a2, a3};                                           \
                for (int p = 0; p < 4; p++)                                                  \
                    for (int q = 0; q < 3; q++) {                                            \
                        T s = r[3 * p + q];                                                  \
                        for (Py_ssize_t k = KW; k < K; k++)                                  \
                            s = FMA(ar[p][k], B[(j + q) * K + k], s);                        \
                        C[(i + p) * ldc + j + q] = s;                                        \
                    }                                                                        \
            }                                                                                \
            for (; j < mb; j++)                                                              \
                for (int p = 0; p < 4; p++)                                                  \
                    C[(i + p) * ldc + j] = mmfs_dot1_avx2_##SFX(A + (i + p) * K, B + j * K, K); \
        }                                                                                    \
        for (; i < ma; i++)                                                                  \
            for (Py_ssize_t j = 0; j < mb; j++)                                              \
                C[i * ldc + j] = mmfs_dot1_avx2_##SFX(A + i * K, B + j * K, K);              \
    }

/* r[0..7] = the eight horizontal sums, in the fixed tree order. */
#define MMFS_HS8_F32(r, a, b, c, d, e, f, g, h)                                              \
    do {                                                                                     \
        _mm_storeu_ps(r, mmfs_hsum8x4(a, b, c, d));                                          \
        _mm_storeu_ps(r + 4, mmfs_hsum8x4(e, f, g, h));                                      \
    } while (0)
#define MMFS_HS4_F32(r, a, b, c, d) _mm_storeu_ps((r), mmfs_hsum8x4(a, b, c, d))
#define MMFS_HS4_F64(r, a, b, c, d)                                                          \
    do {                                                                                     \
        (r)[0] = mmfs_hsum4(a); (r)[1] = mmfs_hsum4(b); (r)[2] = mmfs_hsum4(c);                    \
        (r)[3] = mmfs_hsum4(d);                                                                \
    } while (0)
#define MMFS_HS8_F64(r, a, b, c, d, e, f, g, h)                                              \
    do {                                                                                     \
        (r)[0] = mmfs_hsum4(a); (r)[1] = mmfs_hsum4(b); (r)[2] = mmfs_hsum4(c);                    \
        (r)[3] = mmfs_hsum4(d); (r)[4] = mmfs_hsum4(e); (r)[5] = mmfs_hsum4(f);                    \
        (r)[6] = mmfs_hsum4(g); (r)[7] = mmfs_hsum4(h);                                          \
    } while (0)

#define MMFS_DOT1_AVX2(T, SFX, V, W, LD, FM, ZERO, HS, FMA)                                  \
    __attribute__((target("avx2,fma"))) static inline T mmfs_dot1_avx2_##SFX(                \
        const T *a, const T *b, Py_ssize_t K) {                                              \
        Py_ssize_t KW = K - K % W;                                                           \
        V c = ZERO;                                                                          \
        for (Py_ssize_t k = 0; k < KW; k += W) c = FM(LD(a + k), LD(b + k), c);              \
        T s = HS(c);                                                                         \
        for (Py_ssize_t k = KW; k < K; k++) s = FMA(a[k], b[k], s);                          \
        return s;                                                                            \
    }

MMFS_DOT1_AVX2(float, f32, __m256, 8, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_setzero_ps(),
               mmfs_hsum8, fmaf)
MMFS_DOT1_AVX2(double, f64, __m256d, 4, _mm256_loadu_pd, _mm256_fmadd_pd, _mm256_setzero_pd(),
               mmfs_hsum4, fma)
MMFS_GEMM_AVX2(float, f32, __m256, 8, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_setzero_ps(),
               MMFS_HS8_F32, MMFS_HS4_F32, fmaf)
MMFS_GEMM_AVX2(double, f64, __m256d, 4, _mm256_loadu_pd, _mm256_fmadd_pd, _mm256_setzero_pd(),
               MMFS_HS8_F64, MMFS_HS4_F64, fma)
#endif

static int mmfs_gemm_has_avx2(void) {
#ifdef MMFS_HAVE_AVX2_GEMM
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
#else
    return 0;
#endif
}

/* C[i*ldc + j] = dot(A[i], B[j]) for an ma x mb tile of contiguous rows of length K. */
#define MMFS_GEMM_TILE(T, SFX)                                                               \
    static void mmfs_gemm_tile_##SFX(const T *A, Py_ssize_t ma, const T *B, Py_ssize_t mb,   \
                                     Py_ssize_t K, T *C, Py_ssize_t ldc, int avx2) {         \
        MMFS_GEMM_DISPATCH_##SFX                                                             \
        for (Py_ssize_t i = 0; i < ma; i++)                                                  \
            for (Py_ssize_t j = 0; j < mb; j++)                                              \
                C[i * ldc + j] = mmfs_dot_fixed_##SFX(A + i * K, B + j * K, K);              \
    }

#ifdef MMFS_HAVE_AVX2_GEMM
#define MMFS_GEMM_DISPATCH_f32                                                               \
    if (avx2) { mmfs_gemm_tile_avx2_f32(A, ma, B, mb, K, C, ldc); return; }
#define MMFS_GEMM_DISPATCH_f64                                                               \
    if (avx2) { mmfs_gemm_tile_avx2_f64(A, ma, B, mb, K, C, ldc); return; }
#else
#define MMFS_GEMM_DISPATCH_f32 (void)avx2;
#define MMFS_GEMM_DISPATCH_f64 (void)avx2;
#endif

MMFS_GEMM_TILE(float, f32)
MMFS_GEMM_TILE(double, f64)

#endif /* MMFS_GEMM_H */
