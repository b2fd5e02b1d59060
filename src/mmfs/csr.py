"""Pairwise distances and row products with scipy.sparse CSR on either side.

``mmfs.cdist`` sends every call where ``XA`` or ``XB`` is a scipy.sparse matrix or array
here (:func:`sparse_cdist`).  :func:`row_products` is the public ``XA @ XB.T`` for any
pairing of sparse and dense operands, returned dense.

Design.  The sparse side is never densified.  This layer checks and coerces, the kernels
in ``mmfs._kernels._sparse`` only compute (their docstring explains the algorithms):

* Operands.  csr_matrix and csr_array are used as they are; any other sparse format is
  converted with ``.tocsr()`` (a copy).  The CSR structure is checked (indptr monotone,
  column indices in range) so a malformed matrix gives our error, not a crash.  Rows with
  unsorted or duplicate column indices are canonicalised (sorted, duplicates summed) into
  new arrays by numpy; the caller's matrix is never modified, and its cached
  ``has_canonical_format`` flag is not trusted.  int32 and int64 index arrays are both
  used natively; when the two sides differ, the int32 side is widened to int64.
* Dtype.  Values compute in float32 only when both sides are float32 (or smaller
  floats), else float64, exactly as the dense path (:func:`mmfs._validation.compute_dtype`);
  the kernels accumulate in double either way.  ``dtype=`` and ``out=`` behave as in
  :func:`mmfs.cdist`.
* Pairings.  CSR x CSR uses a per-thread scattered row and exact union sums; CSR x dense
  and dense x CSR cost O(nnz) per pair with an exact O(n_features) recompute of the pairs
  where a norm identity could cancel.  Results meet the dense path's tolerances:
  relative 1e-13 (float64) and 1e-7 (float32) against the exact distance.
* Threads.  ``n_threads`` resolves through :func:`mmfs._config.effective_n_threads`; a
  call with little work runs on one thread (waking a team costs more), and CSR x CSR
  caps its threads so the per-thread workspaces stay under 256 MiB.
* Metrics.  euclidean, sqeuclidean, cosine, cityblock and inner_product.  Anything else
  raises :class:`~mmfs.errors.MetricError`, suggesting ``.toarray()`` for small data.  A
  custom callable metric is supported: it is called once per block of ``XA`` rows as
  ``fn(XA_block, XB)``, where each sparse operand arrives as CSR (the caller's class,
  values in the compute dtype) and each dense operand as a C-contiguous array, and must
  return a ``(len(XA_block), len(XB))`` array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmfs._config import effective_n_threads, threads_for
from mmfs._kernels import _sparse
from mmfs._validation import as_array, check_dims, compute_dtype, is_sparse
from mmfs.distance import Metric, alloc_result, custom_block
from mmfs.errors import DimensionError, MetricError, ParameterError

__all__ = ["SPARSE_METRICS", "row_products", "sparse_cdist"]

SPARSE_METRICS = ("euclidean", "sqeuclidean", "cosine", "cityblock", "inner_product")

# Per-call cap on the CSR x CSR workspaces (16 bytes per feature per thread): very wide
# data (hashed features, 2^24 columns) runs on fewer threads rather than exhausting memory.
_WORKSPACE_BYTES = 256 << 20
# A custom metric's result block stays below this.
_CUSTOM_BLOCK_BYTES = 64 << 20
_INDEX_TYPES = (np.dtype(np.int32), np.dtype(np.int64))


@dataclass(frozen=True)
class _Csr:
    """Canonical CSR arrays (C-contiguous) plus the scipy object they came from."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]
    source: Any

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def with_index_dtype(self, dtype: np.dtype) -> _Csr:
        if self.indices.dtype == dtype:
            return self
        return _Csr(
            self.data,
            self.indices.astype(dtype),
            self.indptr.astype(dtype),
            self.shape,
            self.source,
        )

    def with_data_dtype(self, dtype: np.dtype) -> _Csr:
        if self.data.dtype == dtype:
            return self
        data = self.data.astype(dtype)
        return _Csr(data, self.indices, self.indptr, self.shape, self.source)


Operand = _Csr | np.ndarray


def sparse_cdist(
    XA: Any,
    XB: Any,
    m: Metric,
    *,
    out: np.ndarray | None = None,
    dtype: Any = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """``mmfs.cdist`` when either side is scipy.sparse: (m, n) distances, never densifying.

    ``m`` is a resolved :class:`mmfs.distance.Metric`; ``out``, ``dtype`` and
    ``n_threads`` are those of :func:`mmfs.cdist`.
    """
    if m.fn is None and m.name not in SPARSE_METRICS:
        raise MetricError(
            f"metric {m.name!r} is not supported for scipy.sparse input; sparse inputs "
            f"support {', '.join(SPARSE_METRICS)} (or a custom callable).  For small data, "
            "densify with .toarray() and call cdist on the dense arrays"
        )
    a = _operand(XA, "XA")
    b = _operand(XB, "XB")
    check_dims(a, b, ("XA", "XB"))
    ct = compute_dtype(_values(a), _values(b), dtype=dtype)
    nt = effective_n_threads(n_threads)
    out_dtype = np.dtype(dtype) if dtype is not None else ct
    result = alloc_result(out, (a.shape[0], b.shape[0]), out_dtype)
    work = result if out_dtype == ct else np.empty(result.shape, dtype=ct)
    if m.fn is not None:
        _custom(m, a, b, ct, work)
    else:
        _kernel(_sparse.METRIC_CODES[m.name], a, b, ct, work, nt)
    if work is not result:
        result[...] = work
    return result


def row_products(XA: Any, XB: Any, *, n_threads: int | None = None) -> np.ndarray:
    """``XA @ XB.T`` as a dense (m, n) array, for any pairing of scipy.sparse and dense.

    float32 when both sides are float32, else float64; accumulated in double.  IEEE
    semantics are those of the densified product (a NaN anywhere in a row gives NaN).
    """
    a = _operand(XA, "XA")
    b = _operand(XB, "XB")
    check_dims(a, b, ("XA", "XB"))
    ct = compute_dtype(_values(a), _values(b))
    nt = effective_n_threads(n_threads)
    result = np.empty((a.shape[0], b.shape[0]), dtype=ct)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        A = np.ascontiguousarray(a, dtype=ct)
        B = np.ascontiguousarray(b, dtype=ct)
        np.matmul(A, B.T, out=result)
        return result
    _kernel(_sparse.DOT, a, b, ct, result, nt)
    return result


# --------------------------------------------------------------------------------------
# Operands
# --------------------------------------------------------------------------------------


def _values(x: Operand) -> np.ndarray:
    return x.data if isinstance(x, _Csr) else x


def _operand(x: Any, name: str) -> Operand:
    """A checked 2-D dense array, or canonical CSR arrays for a scipy.sparse input."""
    if not is_sparse(x):
        arr = as_array(x, name)
        if arr.ndim != 2:
            raise DimensionError(
                f"{name} must be a 2-D array of shape (n_rows, n_features), got shape {arr.shape}"
            )
        return arr
    if x.ndim != 2:
        raise DimensionError(
            f"{name} must be a 2-D sparse matrix of shape (n_rows, n_features), got "
            f"{type(x).__name__} of shape {x.shape}"
        )
    csr = x if x.format == "csr" else x.tocsr()
    data = np.asarray(csr.data)
    if data.dtype.kind not in "biuf":
        raise ParameterError(
            f"{name} must hold real numbers or booleans, got a {type(x).__name__} of dtype "
            f"{data.dtype}"
        )
    return _canonical(csr, data, name)


def _canonical(csr: Any, data: np.ndarray, name: str) -> _Csr:
    n, K = (int(s) for s in csr.shape)
    indices = np.asarray(csr.indices)
    indptr = np.asarray(csr.indptr)
    idx_dtype = np.dtype(np.int64)
    if indices.dtype == indptr.dtype and indices.dtype in _INDEX_TYPES:
        idx_dtype = indices.dtype
    bad = (
        indptr.ndim != 1
        or indptr.shape[0] != n + 1
        or indices.dtype.kind not in "iu"
        or indptr.dtype.kind not in "iu"
    )
    if not bad:
        counts = np.diff(indptr.astype(np.int64))
        nnz = int(indptr[-1])
        bad = bool(
            int(indptr[0]) != 0
            or (counts < 0).any()
            or nnz > indices.shape[0]
            or nnz > data.shape[0]
        )
    if bad:
        raise ParameterError(
            f"{name} is not a valid CSR matrix: indptr must be {n + 1} non-decreasing "
            f"integers from 0 to at most the number of stored entries; got indptr of "
            f"shape {indptr.shape}, dtype {indptr.dtype} and {indices.shape[0]} indices"
        )
    nnz = int(indptr[-1])
    data, indices = data[:nnz], indices[:nnz]
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= K):
        raise ParameterError(
            f"{name} is not a valid CSR matrix: column indices must lie in [0, {K}), got "
            f"values from {int(indices.min())} to {int(indices.max())}"
        )
    indices = np.ascontiguousarray(indices, dtype=idx_dtype)
    indptr = np.ascontiguousarray(indptr, dtype=idx_dtype)
    # Values in their natural float (float16 -> float32, integers/bools -> float64), so
    # duplicates are summed as floats; compute_dtype sees the same choice.
    natural = np.float32 if data.dtype.kind == "f" and data.dtype.itemsize <= 4 else np.float64
    data = np.ascontiguousarray(data, dtype=natural)
    if not _is_canonical(indices, indptr):
        data, indices, indptr = _sum_duplicates(data, indices, indptr, n)
    return _Csr(data, indices, indptr, (n, K), csr)


def _is_canonical(indices: np.ndarray, indptr: np.ndarray) -> bool:
    """Column indices strictly increasing within every row."""
    if indices.shape[0] < 2:
        return True
    increasing = np.diff(indices) > 0
    # A row boundary between positions s-1 and s is allowed to go down.
    starts = indptr[1:-1]
    starts = starts[(starts > 0) & (starts < indices.shape[0])]
    increasing[starts - 1] = True
    return bool(increasing.all())


def _sum_duplicates(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted indices, duplicates summed, in new arrays (index dtype kept)."""
    rows = np.repeat(np.arange(n, dtype=indices.dtype), np.diff(indptr))
    order = np.lexsort((indices, rows))
    rows, indices, data = rows[order], indices[order], data[order]
    first = np.ones(indices.shape[0], dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (indices[1:] != indices[:-1])
    starts = np.flatnonzero(first)
    data = np.add.reduceat(data, starts) if starts.size else data
    rows, indices = rows[starts], indices[starts]
    new_ptr = np.zeros(n + 1, dtype=indices.dtype)
    np.cumsum(np.bincount(rows, minlength=n), out=new_ptr[1:])
    return (
        np.ascontiguousarray(data),
        np.ascontiguousarray(indices),
        new_ptr,
    )


# --------------------------------------------------------------------------------------
# Kernel calls
# --------------------------------------------------------------------------------------


def _kernel(code: int, a: Operand, b: Operand, ct: np.dtype, out: np.ndarray, nt: int) -> None:
    """One kernel call: out[i, j] = metric(a[i], b[j]) in the compute dtype ct."""
    if out.size == 0:
        return
    nnz = sum(x.data.shape[0] if isinstance(x, _Csr) else x.size for x in (a, b))
    nt = max(1, min(threads_for(nt, out.size + nnz * min(out.shape)), out.shape[0]))
    if isinstance(a, _Csr) and isinstance(b, _Csr):
        index = np.result_type(a.indices.dtype, b.indices.dtype)
        a = a.with_index_dtype(index).with_data_dtype(ct)
        b = b.with_index_dtype(index).with_data_dtype(ct)
        K = a.shape[1]
        nt = max(1, min(nt, _WORKSPACE_BYTES // max(1, 16 * K)))
        _sparse.csr_csr(code, a.data, a.indices, a.indptr, b.data, b.indices, b.indptr, K, out, nt)
        return
    if isinstance(a, _Csr):
        s, dense, sparse_is_a = a, b, True
    else:
        assert isinstance(b, _Csr)
        s, dense, sparse_is_a = b, a, False
    s = s.with_data_dtype(ct)
    D = np.ascontiguousarray(dense, dtype=ct)
    _sparse.csr_dense(code, s.data, s.indices, s.indptr, D, sparse_is_a, out, nt)


def _custom(m: Metric, a: Operand, b: Operand, ct: np.dtype, out: np.ndarray) -> None:
    """Call the user's metric once per block of XA rows (all of XB at a time)."""
    assert m.fn is not None
    A, B = _for_callable(a, ct), _for_callable(b, ct)
    ma, mb = out.shape
    rows = max(1, _CUSTOM_BLOCK_BYTES // (8 * max(1, mb)))
    for i in range(0, ma, rows):
        out[i : i + rows] = custom_block(m, A[i : i + rows], B)


def _for_callable(x: Operand, ct: np.dtype) -> Any:
    """What a custom metric receives: CSR of the caller's class, or a dense array."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, dtype=ct)
    cls = type(x.source)
    return cls((x.data.astype(ct, copy=False), x.indices, x.indptr), shape=x.shape)
