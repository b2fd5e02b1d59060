/*
 * mmfs_bits.h -- Hamming and Jaccard distances between bit-packed boolean rows.
 *
 * A boolean row of K values is packed by numpy.packbits (bit order "big": element 0 is
 * the most significant bit of byte 0) and zero-padded to W = ceil(K / 64) 64-bit words.
 * Padding bits are zero on both sides, so they never count:
 *   hamming(a, b) = popcount(a ^ b) / K
 *   jaccard(a, b) = popcount(a ^ b) / popcount(a | b), and 0 when both rows are all false
 * (scipy's definitions on boolean input).  Word order and bit order do not matter for a
 * popcount, so the kernels never unpack.  The popcount is the hardware instruction in the
 * Haswell clone and a bit-twiddling fallback in the baseline clone.
 */
#ifndef MMFS_BITS_H
#define MMFS_BITS_H
#include <Python.h>
#include <stdint.h>
#include "mmfs_dense.h"

MMFS_DISPATCH static void mmfs_bits_block(int jaccard, const uint64_t *A, Py_ssize_t ma,
                                          const uint64_t *B, Py_ssize_t mb, Py_ssize_t W,
                                          Py_ssize_t K, double *out, Py_ssize_t ldo) {
    for (Py_ssize_t r = 0; r < ma; r++) {
        const uint64_t *a = A + r * W;
        for (Py_ssize_t c = 0; c < mb; c++) {
            const uint64_t *b = B + c * W;
            int64_t x = 0, u = 0;
            for (Py_ssize_t w = 0; w < W; w++) {
                x += __builtin_popcountll(a[w] ^ b[w]);
                u += __builtin_popcountll(a[w] | b[w]);
            }
            if (jaccard)
                out[r * ldo + c] = u ? (double)x / (double)u : 0.0;
            else
                out[r * ldo + c] = K ? (double)x / (double)K : 0.0;
        }
    }
}
#endif
