/* The fused affine step of a transformed read (mmfs/transforms/_base.py, Affine).
 *
 * For each element of a float32 or float64 field, in float64 and rounded once:
 *     v = isnan(x) ? fill : x;   v = (v - sub) * mul + add;   v = min(max(v, lo), hi)
 * where a segment whose sub (add) values are all zero skips that operation, and one without
 * fill or clip skips those (flags).
 * exactly the operations, in the order, of transforms._base.apply_affine (numpy), so the
 * fused kernel and the numpy path give the same bits (the build uses -ffp-contract=off:
 * no fused multiply-add).  Fill and clip are skipped when a segment has none (flags), and
 * the loops are written so the compiler vectorises them (omp simd).  As in mmfs_dense.h,
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
#define MMFS_AFF_FILL 2
#define MMFS_AFF_CLIP 4
#define MMFS_AFF_SUB 8 /* some sub != 0 */
#define MMFS_AFF_ADD 16 /* some add != 0 */

static MMFS_AFF_DISPATCH void mmfs_affine_f32(float *restrict x, int64_t n, const double *restrict sub,
                                   const double *restrict mul, const double *restrict add,
                                   const double *restrict lo, const double *restrict hi,
                                   const double *restrict fill, int flags)
{
    int64_t i;
    if (!(flags & (MMFS_AFF_FILL | MMFS_AFF_CLIP | MMFS_AFF_ADD))) { /* scalers: no add */
#pragma omp simd
        for (i = 0; i < n; i++)
            x[i] = (float)(((double)x[i] - sub[i]) * mul[i]);
        return;
    }
    if (!(flags & (MMFS_AFF_FILL | MMFS_AFF_CLIP | MMFS_AFF_SUB))) { /* min-max: no sub */
#pragma omp simd
        for (i = 0; i < n; i++)
            x[i] = (float)((double)x[i] * mul[i] + add[i]);
        return;
    }
#pragma omp simd
    for (i = 0; i < n; i++) {
        double v = (double)x[i];
        v = (v != v) ? fill[i] : v;
        v = (v - sub[i]) * mul[i] + add[i];
        v = v < lo[i] ? lo[i] : v;
        v = v > hi[i] ? hi[i] : v;
        x[i] = (float)v;
    }
}

static MMFS_AFF_DISPATCH void mmfs_affine_f64(double *restrict x, int64_t n, const double *restrict sub,
                                   const double *restrict mul, const double *restrict add,
                                   const double *restrict lo, const double *restrict hi,
                                   const double *restrict fill, int flags)
{
    int64_t i;
    if (!(flags & (MMFS_AFF_FILL | MMFS_AFF_CLIP | MMFS_AFF_ADD))) { /* scalers: no add */
#pragma omp simd
        for (i = 0; i < n; i++)
            x[i] = (double)(((double)x[i] - sub[i]) * mul[i]);
        return;
    }
    if (!(flags & (MMFS_AFF_FILL | MMFS_AFF_CLIP | MMFS_AFF_SUB))) { /* min-max: no sub */
#pragma omp simd
        for (i = 0; i < n; i++)
            x[i] = (double)((double)x[i] * mul[i] + add[i]);
        return;
    }
#pragma omp simd
    for (i = 0; i < n; i++) {
        double v = (double)x[i];
        v = (v != v) ? fill[i] : v;
        v = (v - sub[i]) * mul[i] + add[i];
        v = v < lo[i] ? lo[i] : v;
        v = v > hi[i] ? hi[i] : v;
        x[i] = (double)v;
    }
}

#endif
