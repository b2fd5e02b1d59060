/*
 * mmfs_dense.h -- the innermost loops of the dense distance kernels.
 *
 * Design
 * ------
 * Every function here takes raw pointers and lengths, never touches Python objects, never
 * allocates and never fails: the Cython layer (_dense.pyx) has already checked shapes and
 * dtypes and owns the parallel loops.  Rows are contiguous (stride 1 inside a row); a
 * block of rows is addressed as ptr + i * ld.
 *
 * Two precisions are generated from one template: f32 (float rows) and f64 (double rows).
 *
 * Speed.  The fast path of every metric keeps LANES independent partial sums, a loop shape
 * that GCC and clang vectorise without -ffast-math (the lanes are independent, so nothing
 * is re-associated behind our back; the final lane sum has a fixed order, so a result never
 * depends on the thread that computed it).  Each block function is compiled twice on x86
 * (target_clones: x86-64-v3 = AVX2+FMA, and the baseline) and the loader picks the clone once
 * at start-up, so a wheel runs on any x86-64 CPU and still uses AVX2 where it exists.
 * Within one machine results are bit-identical whatever the thread count.
 *
 * Exactness.  The fast path accumulates in the input precision.  Where that could lose
 * the answer -- squares that overflow (|x| ~ 1e30 in float32) or underflow (|x| ~ 1e-30),
 * NaN present -- the result falls outside a safe range and the pair is recomputed by a
 * scaled double-precision path (LAPACK nrm2 style: divide by the largest |a_i - b_i|), so
 * any distance that fits the output type is returned to full precision.
 *
 * NaN in, NaN out, for every metric: max-based metrics carry a side sum that turns NaN
 * when any |a_i - b_i| is NaN, counting metrics check for NaN explicitly.
 *
 * Cosine distance is computed as 0.5 * sum_i (a_i/|a| - b_i/|b|)^2 in double.  That equals
 * 1 - cos(a, b) exactly in real arithmetic and, unlike 1 - dot/(|a||b|), keeps full
 * relative precision for nearly parallel vectors.  A zero vector has distance 1.0 to every
 * vector, itself included (scikit-learn's cosine_distances off its diagonal).
 */
#ifndef MMFS_DENSE_H
#define MMFS_DENSE_H

#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(MMFS_NO_CLONES)
#define MMFS_DISPATCH __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MMFS_DISPATCH
#endif

#define MMFS_LANES 16

/* Ask for the row MMFS_AHEAD rows ahead: between two rows the reduction stalls the
 * stream of loads, and the hardware prefetcher alone lets the memory bus idle then
 * (2, 8 and 16 rows ahead measured no better than 4 on a 2-core EPYC guest). */
#ifndef MMFS_AHEAD
#define MMFS_AHEAD 4
#endif
#define MMFS_PREFETCH_ROW(p, bytes)                                                          \
    do {                                                                                     \
        const char *pf_ = (const char *)(p);                                                 \
        for (Py_ssize_t o_ = 0; o_ < (bytes); o_ += 64) __builtin_prefetch(pf_ + o_, 0, 0);  \
    } while (0)

enum {
    MMFS_SQEUCLIDEAN = 0,
    MMFS_EUCLIDEAN = 1,
    MMFS_CITYBLOCK = 2,
    MMFS_CHEBYSHEV = 3,
    MMFS_MINKOWSKI = 4,
    MMFS_COSINE = 5,
    MMFS_INNER = 6, /* negative dot product: smaller is closer */
    MMFS_HAMMING = 7,
    MMFS_JACCARD = 8,
    MMFS_SEUCLIDEAN = 9,  /* w: 1/V, K weights */
    MMFS_MAHALANOBIS = 10 /* w: S = sym(VI), K*K row-major; needs K doubles of scratch */
};

/* A metric and its parameters, as the kernels receive it. */
typedef struct {
    int metric;
    double p;        /* minkowski exponent */
    const double *w; /* seuclidean weights or the mahalanobis matrix (see above) */
} mmfs_metric_t;

/* |a-b|_p computed without overflow or underflow: m * (sum (|d|/m)^p)^(1/p). */
#define MMFS_SCALED(T, SFX)                                                                  \
    static inline double mmfs_scaled_norm_##SFX(const T *a, const T *b, Py_ssize_t K,        \
                                                double p) {                                  \
        double m = 0.0, s = 0.0;                                                             \
        for (Py_ssize_t i = 0; i < K; i++) {                                                 \
            double d = fabs((double)a[i] - (double)b[i]);                                    \
            if (d != d) return NAN;                                                          \
            if (d > m) m = d;                                                                \
        }                                                                                    \
        if (m == 0.0 || isinf(m)) return m;                                                  \
        for (Py_ssize_t i = 0; i < K; i++) {                                                 \
            double d = fabs((double)a[i] - (double)b[i]) / m;                                \
            s += (p == 2.0) ? d * d : pow(d, p);                                             \
        }                                                                                    \
        return m * ((p == 2.0) ? sqrt(s) : pow(s, 1.0 / p));                                 \
    }

MMFS_SCALED(float, f32)
MMFS_SCALED(double, f64)

/* Lane-parallel reduction skeleton: BODY updates acc[j] from element index i + j. */
#define MMFS_LANE_LOOP(ACC_T, acc, K, BODY_J, TAIL)                                          \
    ACC_T acc[MMFS_LANES];                                                                   \
    for (int j = 0; j < MMFS_LANES; j++) acc[j] = 0;                                         \
    Py_ssize_t i = 0;                                                                        \
    for (; i + MMFS_LANES <= (K); i += MMFS_LANES) {                                         \
        for (int j = 0; j < MMFS_LANES; j++) { BODY_J }                                      \
    }                                                                                        \
    for (; i < (K); i++) { TAIL }

/* Sum of the lanes by a fixed pairwise tree: (0+8, 1+9, ...), then halves again.  The
 * order is fixed, so the result is deterministic, and each level is one vector add. */
#define MMFS_TREE_SUM(acc, out)                                                              \
    do {                                                                                     \
        for (int h = MMFS_LANES / 2; h >= 1; h /= 2)                                         \
            for (int j = 0; j < h; j++) acc[j] += acc[j + h];                                \
        out = acc[0];                                                                        \
    } while (0)

#define MMFS_PAIRS(T, SFX, LO, ABS, POW, UT)                                                 \
    static inline double mmfs_sqeuclidean_##SFX(const T *a, const T *b, Py_ssize_t K) {      \
        MMFS_LANE_LOOP(T, acc, K, T d = a[i + j] - b[i + j]; acc[j] += d * d;,               \
                       T d = a[i] - b[i]; acc[0] += d * d;)                                  \
        T s;                                                                                 \
        MMFS_TREE_SUM(acc, s);                                                               \
        if (s >= (T)(LO) && !isinf(s)) return (double)s;                                     \
        double n = mmfs_scaled_norm_##SFX(a, b, K, 2.0);                                     \
        return n * n;                                                                        \
    }                                                                                        \
    static inline double mmfs_euclidean_##SFX(const T *a, const T *b, Py_ssize_t K) {        \
        MMFS_LANE_LOOP(T, acc, K, T d = a[i + j] - b[i + j]; acc[j] += d * d;,               \
                       T d = a[i] - b[i]; acc[0] += d * d;)                                  \
        T s;                                                                                 \
        MMFS_TREE_SUM(acc, s);                                                               \
        if (s >= (T)(LO) && !isinf(s)) return sqrt((double)s);                               \
        return mmfs_scaled_norm_##SFX(a, b, K, 2.0);                                         \
    }                                                                                        \
    static inline double mmfs_cityblock_##SFX(const T *a, const T *b, Py_ssize_t K) {        \
        /* All terms are >= 0, so a finite sum never overflowed on the way. */               \
        MMFS_LANE_LOOP(T, acc, K, T d = a[i + j] - b[i + j]; acc[j] += ABS(d);,              \
                       T d = a[i] - b[i]; acc[0] += ABS(d);)                                 \
        T s;                                                                                 \
        MMFS_TREE_SUM(acc, s);                                                               \
        return (double)s;                                                                    \
    }                                                                                        \
    static inline double mmfs_chebyshev_##SFX(const T *a, const T *b, Py_ssize_t K) {        \
        /* |a_i - b_i| >= 0, and non-negative IEEE floats order like their bit patterns, */  \
        /* so an unsigned integer max finds the largest -- and since |NaN| has a larger */   \
        /* pattern than inf, a NaN anywhere wins the max and comes out as NaN.          */   \
        MMFS_LANE_LOOP(UT, acc, K,                                                           \
                       T d = ABS(a[i + j] - b[i + j]); UT u; memcpy(&u, &d, sizeof u);       \
                       acc[j] = acc[j] > u ? acc[j] : u;,                                    \
                       T d = ABS(a[i] - b[i]); UT u; memcpy(&u, &d, sizeof u);               \
                       acc[0] = acc[0] > u ? acc[0] : u;)                                    \
        UT m = 0;                                                                            \
        for (int j = 0; j < MMFS_LANES; j++) m = m > acc[j] ? m : acc[j];                    \
        T r;                                                                                 \
        memcpy(&r, &m, sizeof r);                                                            \
        return (double)r;                                                                    \
    }                                                                                        \
    static inline double mmfs_minkowski_##SFX(const T *a, const T *b, Py_ssize_t K,          \
                                              double p) {                                    \
        T s = 0;                                                                             \
        double pi = floor(p);                                                                \
        if (pi == p && p <= 8.0) {                                                           \
            int ip = (int)p;                                                                 \
            MMFS_LANE_LOOP(T, acc, K,                                                        \
                           T d = ABS(a[i + j] - b[i + j]); T t = d;                          \
                           for (int e = 1; e < ip; e++) t *= d; acc[j] += t;,                \
                           T d = ABS(a[i] - b[i]); T t = d;                                  \
                           for (int e = 1; e < ip; e++) t *= d; acc[0] += t;)                \
            MMFS_TREE_SUM(acc, s);                                                           \
        } else {                                                                             \
            /* powf dominates the cost here, so the sum may as well be in double. */         \
            T tp = (T)p;                                                                     \
            double s2 = 0.0;                                                                 \
            for (Py_ssize_t i = 0; i < K; i++) s2 += (double)POW(ABS(a[i] - b[i]), tp);      \
            if (s2 >= (LO) && !isinf(s2) && s2 < 1e300) return pow(s2, 1.0 / p);             \
            return mmfs_scaled_norm_##SFX(a, b, K, p);                                       \
        }                                                                                    \
        if (s >= (T)(LO) && !isinf(s)) return pow((double)s, 1.0 / p);                       \
        return mmfs_scaled_norm_##SFX(a, b, K, p);                                           \
    }                                                                                        \
    static inline double mmfs_dot_##SFX(const T *a, const T *b, Py_ssize_t K) {              \
        MMFS_LANE_LOOP(T, acc, K, acc[j] += a[i + j] * b[i + j];, acc[0] += a[i] * b[i];)    \
        T s;                                                                                 \
        MMFS_TREE_SUM(acc, s);                                                               \
        if (!isinf(s) && s == s) return (double)s;                                           \
        /* Overflow (or inf - inf) on the way: redo in double, scaled by the largest      */ \
        /* |a_i| and |b_i| so that a true value beyond double's range becomes +-inf.      */ \
        double ma = 0.0, mb = 0.0, t = 0.0;                                                  \
        for (Py_ssize_t i = 0; i < K; i++) {                                                 \
            double x = fabs((double)a[i]), y = fabs((double)b[i]);                           \
            if (x != x || y != y || isinf(x) || isinf(y)) return (double)s;                  \
            ma = x > ma ? x : ma;                                                            \
            mb = y > mb ? y : mb;                                                            \
        }                                                                                    \
        for (Py_ssize_t i = 0; i < K; i++) t += ((double)a[i] / ma) * ((double)b[i] / mb);   \
        return t * ma * mb;                                                                  \
    }                                                                                        \
    static inline double mmfs_seuclidean_##SFX(const T *a, const T *b, Py_ssize_t K,         \
                                               const double *w) {                            \
        MMFS_LANE_LOOP(double, acc, K, double d = (double)a[i + j] - (double)b[i + j];       \
                       acc[j] += d * d * w[i + j];,                                          \
                       double d = (double)a[i] - (double)b[i]; acc[0] += d * d * w[i];)      \
        double s = 0;                                                                        \
        MMFS_TREE_SUM(acc, s);                                                               \
        if (s >= 1.0e-270 && s <= 1.0e300) return sqrt(s);                                   \
        if (s != s) return NAN;                                                              \
        double m = 0.0, t = 0.0;                                                             \
        for (Py_ssize_t i = 0; i < K; i++) {                                                 \
            double d = fabs((double)a[i] - (double)b[i]) * sqrt(w[i]);                       \
            m = d > m ? d : m;                                                               \
        }                                                                                    \
        if (m == 0.0 || isinf(m)) return m;                                                  \
        for (Py_ssize_t i = 0; i < K; i++) {                                                 \
            double d = fabs((double)a[i] - (double)b[i]) * sqrt(w[i]) / m;                   \
            t += d * d;                                                                      \
        }                                                                                    \
        return m * sqrt(t);                                                                  \
    }                                                                                        \
    /* sqrt((a-b)^T S (a-b)); NaN where the form is negative (S not PSD), as scipy. */       \
    static inline double mmfs_mahalanobis_##SFX(const T *a, const T *b, Py_ssize_t K,        \
                                                const double *S, double *delta) {            \
        for (Py_ssize_t i = 0; i < K; i++) delta[i] = (double)a[i] - (double)b[i];           \
        double q = 0.0;                                                                      \
        for (Py_ssize_t r = 0; r < K; r++) {                                                 \
            const double *row = S + r * K;                                                   \
            MMFS_LANE_LOOP(double, acc, K, acc[j] += row[i + j] * delta[i + j];,             \
                           acc[0] += row[i] * delta[i];)                                     \
            double y = 0.0;                                                                  \
            MMFS_TREE_SUM(acc, y);                                                           \
            q += delta[r] * y;                                                               \
        }                                                                                    \
        return q >= 0.0 ? sqrt(q) : NAN;                                                     \
    }                                                                                        \
    /* ia, ib: 1/|a| and 1/|b| (0 for a zero vector). */                                     \
    static inline double mmfs_cosine_##SFX(const T *a, const T *b, Py_ssize_t K, double ia,  \
                                           double ib) {                                      \
        if (ia == 0.0 || ib == 0.0) {                                                        \
            for (Py_ssize_t i = 0; i < K; i++)                                               \
                if (a[i] != a[i] || b[i] != b[i]) return NAN;                                \
            return 1.0;                                                                      \
        }                                                                                    \
        MMFS_LANE_LOOP(double, acc, K,                                                       \
                       double d = (double)a[i + j] * ia - (double)b[i + j] * ib;             \
                       acc[j] += d * d;,                                                     \
                       double d = (double)a[i] * ia - (double)b[i] * ib; acc[0] += d * d;)   \
        double s = 0;                                                                        \
        MMFS_TREE_SUM(acc, s);                                                               \
        s *= 0.5;                                                                            \
        return s > 2.0 ? 2.0 : s;                                                            \
    }                                                                                        \
    static inline double mmfs_hamming_##SFX(const T *a, const T *b, Py_ssize_t K) {          \
        MMFS_LANE_LOOP(Py_ssize_t, acc, K,                                                   \
                       acc[j] += (a[i + j] != b[i + j]);                                     \
                       if (a[i + j] != a[i + j] || b[i + j] != b[i + j]) return NAN;,        \
                       acc[0] += (a[i] != b[i]);                                             \
                       if (a[i] != a[i] || b[i] != b[i]) return NAN;)                        \
        Py_ssize_t s = 0;                                                                    \
        MMFS_TREE_SUM(acc, s);                                                               \
        return K ? (double)s / (double)K : 0.0;                                              \
    }                                                                                        \
    static inline double mmfs_jaccard_##SFX(const T *a, const T *b, Py_ssize_t K) {          \
        Py_ssize_t nz = 0, ne = 0;                                                           \
        for (Py_ssize_t i = 0; i < K; i++) {                                                 \
            T x = a[i], y = b[i];                                                            \
            if (x != x || y != y) return NAN;                                                \
            /* scipy >= 1.15: rows are sets of their nonzero positions */                    \
            nz += (x != 0) | (y != 0);                                                       \
            ne += (x != 0) ^ (y != 0);                                                       \
        }                                                                                    \
        return nz ? (double)ne / (double)nz : 0.0;                                           \
    }                                                                                        \
    /* scratch: K doubles, used by mahalanobis only. */                                      \
    static inline double mmfs_pair_##SFX(const mmfs_metric_t *mt, const T *a, const T *b,    \
                                         Py_ssize_t K, double ia, double ib,                 \
                                         double *scratch) {                                  \
        switch (mt->metric) {                                                                \
        case MMFS_SQEUCLIDEAN: return mmfs_sqeuclidean_##SFX(a, b, K);                       \
        case MMFS_EUCLIDEAN: return mmfs_euclidean_##SFX(a, b, K);                           \
        case MMFS_CITYBLOCK: return mmfs_cityblock_##SFX(a, b, K);                           \
        case MMFS_CHEBYSHEV: return mmfs_chebyshev_##SFX(a, b, K);                           \
        case MMFS_MINKOWSKI: return mmfs_minkowski_##SFX(a, b, K, mt->p);                    \
        case MMFS_COSINE: return mmfs_cosine_##SFX(a, b, K, ia, ib);                         \
        case MMFS_INNER: return -mmfs_dot_##SFX(a, b, K);                                    \
        case MMFS_HAMMING: return mmfs_hamming_##SFX(a, b, K);                               \
        case MMFS_SEUCLIDEAN: return mmfs_seuclidean_##SFX(a, b, K, mt->w);                  \
        case MMFS_MAHALANOBIS: return mmfs_mahalanobis_##SFX(a, b, K, mt->w, scratch);       \
        default: return mmfs_jaccard_##SFX(a, b, K);                                         \
        }                                                                                    \
    }                                                                                        \
    /* out[i*ldo + j] = dist(A[i], B[j]) for a ma x mb tile.  The switch sits outside the  */ \
    /* loops so each metric's inner loop is inlined and vectorised.                       */ \
    MMFS_DISPATCH static void mmfs_block_##SFX(                                              \
        const mmfs_metric_t *mt, const T *A, Py_ssize_t lda, Py_ssize_t ma, const T *B,      \
        Py_ssize_t ldb, Py_ssize_t mb, Py_ssize_t K, const double *inva,                     \
        const double *invb, T *out, Py_ssize_t ldo) {                                        \
        double *scratch = NULL;                                                              \
        if (mt->metric == MMFS_MAHALANOBIS) {                                                \
            scratch = (double *)malloc((size_t)(K > 0 ? K : 1) * sizeof(double));            \
            if (scratch == NULL) { /* cannot happen for sane K; never write garbage */       \
                for (Py_ssize_t r = 0; r < ma; r++)                                          \
                    for (Py_ssize_t c = 0; c < mb; c++) out[r * ldo + c] = (T)NAN;           \
                return;                                                                      \
            }                                                                                \
        }                                                                                    \
        for (Py_ssize_t r = 0; r < ma; r++) {                                                \
            const T *a = A + r * lda;                                                        \
            T *o = out + r * ldo;                                                            \
            double ia = inva ? inva[r] : 0.0;                                                \
            switch (mt->metric) {                                                            \
            case MMFS_SQEUCLIDEAN:                                                           \
                for (Py_ssize_t c = 0; c < mb; c++) {                                        \
                    if (c + MMFS_AHEAD < mb) MMFS_PREFETCH_ROW(B + (c + MMFS_AHEAD) * ldb, K * (Py_ssize_t)sizeof(T)); \
                    o[c] = (T)mmfs_sqeuclidean_##SFX(a, B + c * ldb, K);                     \
                }                                                                            \
                break;                                                                       \
            case MMFS_EUCLIDEAN:                                                             \
                for (Py_ssize_t c = 0; c < mb; c++) {                                        \
                    if (c + MMFS_AHEAD < mb) MMFS_PREFETCH_ROW(B + (c + MMFS_AHEAD) * ldb, K * (Py_ssize_t)sizeof(T)); \
                    o[c] = (T)mmfs_euclidean_##SFX(a, B + c * ldb, K);                       \
                }                                                                            \
                break;                                                                       \
            case MMFS_CITYBLOCK:                                                             \
                for (Py_ssize_t c = 0; c < mb; c++) {                                        \
                    if (c + MMFS_AHEAD < mb) MMFS_PREFETCH_ROW(B + (c + MMFS_AHEAD) * ldb, K * (Py_ssize_t)sizeof(T)); \
                    o[c] = (T)mmfs_cityblock_##SFX(a, B + c * ldb, K);                       \
                }                                                                            \
                break;                                                                       \
            case MMFS_CHEBYSHEV:                                                             \
                for (Py_ssize_t c = 0; c < mb; c++) {                                        \
                    if (c + MMFS_AHEAD < mb) MMFS_PREFETCH_ROW(B + (c + MMFS_AHEAD) * ldb, K * (Py_ssize_t)sizeof(T)); \
                    o[c] = (T)mmfs_chebyshev_##SFX(a, B + c * ldb, K);                       \
                }                                                                            \
                break;                                                                       \
            case MMFS_INNER:                                                                 \
                for (Py_ssize_t c = 0; c < mb; c++) {                                        \
                    if (c + MMFS_AHEAD < mb) MMFS_PREFETCH_ROW(B + (c + MMFS_AHEAD) * ldb, K * (Py_ssize_t)sizeof(T)); \
                    o[c] = (T)(-mmfs_dot_##SFX(a, B + c * ldb, K));                          \
                }                                                                            \
                break;                                                                       \
            case MMFS_COSINE:                                                                \
                for (Py_ssize_t c = 0; c < mb; c++)                                          \
                    o[c] = (T)mmfs_cosine_##SFX(a, B + c * ldb, K, ia, invb[c]);             \
                break;                                                                       \
            case MMFS_SEUCLIDEAN:                                                            \
                for (Py_ssize_t c = 0; c < mb; c++)                                          \
                    o[c] = (T)mmfs_seuclidean_##SFX(a, B + c * ldb, K, mt->w);               \
                break;                                                                       \
            default:                                                                         \
                for (Py_ssize_t c = 0; c < mb; c++)                                          \
                    o[c] = (T)mmfs_pair_##SFX(mt, a, B + c * ldb, K, 0.0, 0.0, scratch);     \
            }                                                                                \
        }                                                                                    \
        free(scratch);                                                                       \
    }

/* Below LO a float sum of squares may have lost digits to underflow: recompute. */          \
MMFS_PAIRS(float, f32, 7.888609052210118e-31, fabsf, powf, uint32_t)  /* LO = 2^-100 */
MMFS_PAIRS(double, f64, 1.0e-270, fabs, pow, uint64_t)

/* Squared norms in double (float rows are widened lane by lane), and 1/|x| computed
 * without overflow: rows whose sum of squares leaves the safe range are rescaled by
 * their largest |x_i| first.  NaN rows give NaN. */
#define MMFS_NORMS(T, SFX)                                                                   \
    MMFS_DISPATCH static void mmfs_sq_norms_##SFX(const T *X, Py_ssize_t n, Py_ssize_t K,    \
                                                  double *out) {                             \
        for (Py_ssize_t r = 0; r < n; r++) {                                                 \
            const T *x = X + r * K;                                                          \
            MMFS_LANE_LOOP(double, acc, K, double v = x[i + j]; acc[j] += v * v;,            \
                           double v = x[i]; acc[0] += v * v;)                                \
            double s = 0;                                                                    \
            MMFS_TREE_SUM(acc, s);                                                           \
            out[r] = s;                                                                      \
        }                                                                                    \
    }                                                                                        \
    MMFS_DISPATCH static void mmfs_inv_norms_##SFX(const T *X, Py_ssize_t n, Py_ssize_t K,   \
                                                   double *out) {                            \
        mmfs_sq_norms_##SFX(X, n, K, out);                                                   \
        for (Py_ssize_t r = 0; r < n; r++) {                                                 \
            double s = out[r];                                                               \
            if (s == 0.0) { out[r] = 0.0; continue; }                                        \
            if (s >= 1e-280 && s <= 1e280) { out[r] = 1.0 / sqrt(s); continue; }             \
            if (s != s) { out[r] = NAN; continue; }                                          \
            const T *x = X + r * K;                                                          \
            double m = 0.0, t = 0.0;                                                         \
            for (Py_ssize_t i = 0; i < K; i++) { double v = fabs((double)x[i]); if (v > m) m = v; } \
            if (isinf(m)) { out[r] = NAN; continue; }                                        \
            for (Py_ssize_t i = 0; i < K; i++) { double v = (double)x[i] / m; t += v * v; }  \
            out[r] = 1.0 / (m * sqrt(t));                                                    \
        }                                                                                    \
    }

MMFS_NORMS(float, f32)
MMFS_NORMS(double, f64)

/* Fix-up of one row of G = A @ B.T into distances, in two passes: a branch-free pass
 * that vectorises, and a rare second pass that recomputes exactly the pairs the product
 * may have got wrong (small relative to the norms, NaN, or rows with infinite norms).
 * Returns the number of recomputed pairs. */
#define MMFS_FIX(T, SFX)                                                                     \
    MMFS_DISPATCH static Py_ssize_t mmfs_fix_euclidean_##SFX(                                \
        T *g, const T *a, const T *B, Py_ssize_t mb, Py_ssize_t K, double na,                \
        const double *nb, double tau, int squared) {                                         \
        Py_ssize_t redo = 0;                                                                 \
        double d2[64];                                                                       \
        for (Py_ssize_t j0 = 0; j0 < mb; j0 += 64) {                                         \
            Py_ssize_t n = mb - j0 < 64 ? mb - j0 : 64;                                      \
            int any = 0;                                                                     \
            for (Py_ssize_t j = 0; j < n; j++) {                                             \
                double s = na + nb[j0 + j];                                                  \
                d2[j] = s - 2.0 * (double)g[j0 + j];                                         \
                any |= !(d2[j] >= tau * s) | !(s <= 1.0e300);                                \
            }                                                                                \
            if (any) {                                                                       \
                for (Py_ssize_t j = 0; j < n; j++) {                                         \
                    double s = na + nb[j0 + j];                                              \
                    if (!(d2[j] >= tau * s) || !(s <= 1.0e300)) {                            \
                        d2[j] = mmfs_sqeuclidean_##SFX(a, B + (j0 + j) * K, K);              \
                        redo++;                                                              \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
            if (squared)                                                                     \
                for (Py_ssize_t j = 0; j < n; j++) g[j0 + j] = (T)d2[j];                     \
            else                                                                             \
                for (Py_ssize_t j = 0; j < n; j++) g[j0 + j] = (T)sqrt(d2[j]);               \
        }                                                                                    \
        return redo;                                                                         \
    }                                                                                        \
    /* ia: 1/|a|; ib[j]: 1/|b_j| (0 for zero rows, NaN for rows with NaN or inf). */        \
    MMFS_DISPATCH static Py_ssize_t mmfs_fix_cosine_##SFX(                                   \
        T *g, const T *a, const T *B, Py_ssize_t mb, Py_ssize_t K, double ia,                \
        const double *ib, double tau) {                                                      \
        Py_ssize_t redo = 0;                                                                 \
        double c[64];                                                                        \
        for (Py_ssize_t j0 = 0; j0 < mb; j0 += 64) {                                         \
            Py_ssize_t n = mb - j0 < 64 ? mb - j0 : 64;                                      \
            int any = 0;                                                                     \
            for (Py_ssize_t j = 0; j < n; j++) {                                             \
                double w = ia * ib[j0 + j];                                                  \
                c[j] = 1.0 - (double)g[j0 + j] * w;                                          \
                any |= !(c[j] >= tau) | !(w > 0.0);                                          \
                c[j] = c[j] < 2.0 ? c[j] : 2.0;                                              \
            }                                                                                \
            if (any) {                                                                       \
                for (Py_ssize_t j = 0; j < n; j++) {                                         \
                    double w = ia * ib[j0 + j];                                              \
                    if (!(c[j] >= tau) || !(w > 0.0)) {                                      \
                        c[j] = mmfs_cosine_##SFX(a, B + (j0 + j) * K, K, ia, ib[j0 + j]);    \
                        redo++;                                                              \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
            for (Py_ssize_t j = 0; j < n; j++) g[j0 + j] = (T)c[j];                          \
        }                                                                                    \
        return redo;                                                                         \
    }

MMFS_FIX(float, f32)
MMFS_FIX(double, f64)

/* Candidate filter of the GEMM route of knn.  Writes to hits the j in [0, n) with
 *     c[j] * (a + b * g[j]) + e * g[j] <= thr
 * (a lower bound of the distance of row j; see _select.pyx) and returns their count.
 * A NaN bound never passes.  The test runs branch-free over chunks of 64, so the common
 * case (no candidate in the chunk) costs a few vector instructions per row. */
#define MMFS_FILTER(T, SFX)                                                                  \
    MMFS_DISPATCH static Py_ssize_t mmfs_candidates_##SFX(                                   \
        const T *g, const double *c, Py_ssize_t n, double a, double b, double e, double thr, \
        int32_t *hits) {                                                                     \
        Py_ssize_t nh = 0;                                                                   \
        for (Py_ssize_t j0 = 0; j0 < n; j0 += 64) {                                          \
            Py_ssize_t j1 = j0 + 64 < n ? j0 + 64 : n;                                       \
            int any = 0;                                                                     \
            for (Py_ssize_t j = j0; j < j1; j++) {                                           \
                double gj = (double)g[j];                                                    \
                any |= (c[j] * (a + b * gj) + e * gj <= thr);                                \
            }                                                                                \
            if (!any) continue;                                                              \
            for (Py_ssize_t j = j0; j < j1; j++) {                                           \
                double gj = (double)g[j];                                                    \
                if (c[j] * (a + b * gj) + e * gj <= thr) hits[nh++] = (int32_t)j;            \
            }                                                                                \
        }                                                                                    \
        return nh;                                                                           \
    }

MMFS_FILTER(float, f32)
MMFS_FILTER(double, f64)

/* A C loop that only reads memory: the bandwidth floor the benchmarks compare against. */
MMFS_DISPATCH static double mmfs_stream_sum_f32(const float *x, Py_ssize_t n) {
    MMFS_LANE_LOOP(float, acc, n, acc[j] += x[i + j];, acc[0] += x[i];)
    double s = 0;
    MMFS_TREE_SUM(acc, s);
    return s;
}

#endif /* MMFS_DENSE_H */
