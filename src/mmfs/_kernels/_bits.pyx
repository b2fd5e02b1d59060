# cython: freethreading_compatible = True
"""Hamming and Jaccard distances on bit-packed boolean rows (see mmfs_bits.h)."""

from cython.parallel cimport prange
from libc.stdint cimport uint64_t

cdef extern from "mmfs_bits.h" nogil:
    void mmfs_bits_block(int jaccard, const uint64_t *A, Py_ssize_t ma, const uint64_t *B,
                         Py_ssize_t mb, Py_ssize_t W, Py_ssize_t K, double *out,
                         Py_ssize_t ldo)

DEF TILE = 64


def packed_pairwise(bint jaccard, const uint64_t[:, ::1] A, const uint64_t[:, ::1] B,
                    Py_ssize_t K, double[:, ::1] out, int n_threads):
    """out[i, j] = hamming or jaccard distance between packed rows A[i] and B[j]."""
    cdef Py_ssize_t ma = A.shape[0], mb = B.shape[0], W = A.shape[1]
    cdef Py_ssize_t t, nbt, i0, j0
    if ma == 0 or mb == 0:
        return
    if W == 0:
        out[:, :] = 0.0
        return
    nbt = (mb + TILE - 1) // TILE
    for t in prange(ma * nbt, nogil=True, schedule="static", num_threads=n_threads):
        i0 = t // nbt
        j0 = (t - i0 * nbt) * TILE
        mmfs_bits_block(jaccard, &A[i0, 0], 1, &B[j0, 0], min(TILE, mb - j0), W, K,
                        &out[i0, j0], out.shape[1])
