/* The fused affine step of a transformed read (mmfs/transforms/_base.py, Affine).
 *
 * For each element of a float32 or float64 field, in float64 and rounded once:
 *     v = isnan(x) ? fill : x;   v = (v - sub) * mul + add;   v = min(max(v, lo), hi)
 * exactly the operations, in the order, of transforms._base.apply_affine (numpy), so the
 * fused kernel and the numpy path give the same bits (the build uses -ffp-contract=off:
 * no fused multiply-add).  The parts a step does not use are skipped (flags: which of
 * fill, clip, sub, add and mul do anything), through one loop per common shape --
 * scalers (v - sub) * mul, min-max v * mul + add (then a clip, or not), imputers (a fill,
 * then (v - sub) * mul or nothing) -- each loading only the parameters it needs; other
 * steps take the general loop.  apply_affine takes the same shapes in the same order.
 * The loops are written so the compiler vectorises them (omp simd).  As in mmfs_dense.h,
 * each function is compiled twice on x86 (target_clones: x86-64-v3 = AVX2, and the
 * baseline) and the loader picks one at start-up; the two give the same bits (no
 * contraction, the same operations), only four doubles at a time instead of two. */
#ifndef MMFS_AFFINE_H
#define MMFS_AFFINE_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(MMFS_NO_CLONES)
#define MMFS_AFF_DISPATCH __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MMFS_AFF_DISPATCH
#endif

#define MMFS_AFF_F64 1
#define MMFS_AFF_FILL 2 /* some fill is not NaN */
#define MMFS_AFF_CLIP 4 /* some lo > -inf or hi < inf */
#define MMFS_AFF_SUB 8  /* some sub != 0 */
#define MMFS_AFF_ADD 16 /* some add != 0 */
#define MMFS_AFF_MUL 32 /* some mul != 1 */
#define MMFS_AFF_F32MATH 64 /* float32 values computed in float32 (mmfs_affine32) */

#define MMFS_AFF_LOOP(body)                                                                  \
    do {                                                                                     \
        _Pragma("omp simd") for (i = 0; i < n; i++) { body }                                 \
        return;                                                                              \
    } while (0)

#define MMFS_AFF_DEFINE(SFX, T)                                                              \
    static MMFS_AFF_DISPATCH void mmfs_affine_##SFX(                                         \
        T *restrict x, int64_t n, const double *restrict sub, const double *restrict mul,    \
        const double *restrict add, const double *restrict lo, const double *restrict hi,    \
        const double *restrict fill, int flags)                                              \
    {                                                                                        \
        int64_t i;                                                                           \
        const int F = MMFS_AFF_FILL, C = MMFS_AFF_CLIP, S = MMFS_AFF_SUB, A = MMFS_AFF_ADD;  \
        if (!(flags & (F | C | A))) /* scalers */                                            \
            MMFS_AFF_LOOP(x[i] = (T)(((double)x[i] - sub[i]) * mul[i]););                    \
        if (!(flags & (F | C | S))) /* min-max */                                            \
            MMFS_AFF_LOOP(x[i] = (T)((double)x[i] * mul[i] + add[i]););                      \
        if (!(flags & (C | A | S | MMFS_AFF_MUL))) /* an imputer */                          \
            MMFS_AFF_LOOP(double v = (double)x[i]; x[i] = (T)((v != v) ? fill[i] : v););     \
        if (!(flags & (C | A))) /* an imputer, then a scaler */                              \
            MMFS_AFF_LOOP(double v = (double)x[i]; v = (v != v) ? fill[i] : v;               \
                          x[i] = (T)((v - sub[i]) * mul[i]););                               \
        if (!(flags & (F | S))) /* min-max with a clip */                                    \
            MMFS_AFF_LOOP(double v = (double)x[i] * mul[i] + add[i];                         \
                          v = v < lo[i] ? lo[i] : v; x[i] = (T)(v > hi[i] ? hi[i] : v););    \
        MMFS_AFF_LOOP(double v = (double)x[i]; v = (v != v) ? fill[i] : v;                   \
                      v = (v - sub[i]) * mul[i] + add[i]; v = v < lo[i] ? lo[i] : v;         \
                      x[i] = (T)(v > hi[i] ? hi[i] : v););                                   \
    }

MMFS_AFF_DEFINE(f32, float)
MMFS_AFF_DEFINE(f64, double)

/* float32 values, float32 arithmetic (kind bit MMFS_AFF_F32MATH): the step rewritten as
 *     v = isnan(x) ? fill : x;   v = ((v - shi) - slo) * m + c;   v = min(max(v, lo), hi)
 * with sub - add / mul split into shi + slo (float32 head and tail: subtracting both
 * keeps the difference exact where x is close to sub, and within a few float32 units
 * elsewhere) and c = add only where mul is 0.  Eight values a vector instead of four,
 * and half the parameter bytes.  transforms._base.affine32 builds these parameters and
 * apply_affine computes the same in numpy float32. */
static MMFS_AFF_DISPATCH void mmfs_affine32(float *restrict x, int64_t n,
                                            const float *restrict shi, const float *restrict slo,
                                            const float *restrict m, const float *restrict c,
                                            const float *restrict lo, const float *restrict hi,
                                            const float *restrict fill, int flags)
{
    int64_t i;
    if (!(flags & (MMFS_AFF_FILL | MMFS_AFF_CLIP | MMFS_AFF_ADD))) /* scalers, min-max */
        MMFS_AFF_LOOP(x[i] = ((x[i] - shi[i]) - slo[i]) * m[i];);
    if (!(flags & (MMFS_AFF_CLIP | MMFS_AFF_ADD))) /* imputers, then a scaler or not */
        MMFS_AFF_LOOP(float v = x[i]; v = (v != v) ? fill[i] : v;
                      x[i] = ((v - shi[i]) - slo[i]) * m[i];);
    if (!(flags & (MMFS_AFF_FILL | MMFS_AFF_ADD))) /* min-max with a clip */
        MMFS_AFF_LOOP(float v = ((x[i] - shi[i]) - slo[i]) * m[i]; v = v < lo[i] ? lo[i] : v;
                      x[i] = v > hi[i] ? hi[i] : v;);
    MMFS_AFF_LOOP(float v = x[i]; v = (v != v) ? fill[i] : v; v = ((v - shi[i]) - slo[i]) * m[i];
                  v = v + c[i]; v = v < lo[i] ? lo[i] : v; x[i] = v > hi[i] ? hi[i] : v;);
}

#endif
