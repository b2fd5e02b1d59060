"""Exact nearest-neighbour search: ``mmfs.knn`` and ``mmfs.radius``.

Both walk the data in blocks of rows sized from ``working_memory`` (bytes, default
256 MiB), so a million-row memmap is searched without loading it whole.

Results are deterministic: neighbours are ordered by distance, ties by the lower row index,
NaN distances after every number.  That order is total, so the same inputs give the same
answer for any thread count and any block size.

knn returns ``(indices, distances)`` of shape (n_queries, k).  When the data has fewer
than k rows, the missing places hold index -1 and distance inf (faiss does the same), so
the shape never depends on the data.

radius returns ``(indices, distances)``: two lists with one array per query, holding every
row within distance ``r`` (inclusive), ordered as above.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from mmfs._config import effective_n_threads, threads_for
from mmfs._kernels import _dense, _select
from mmfs._validation import as_array, as_matrix, compute_dtype, is_sparse
from mmfs.distance import (
    DIRECT_METRICS,
    GEMM_METRICS,
    Metric,
    cdist,
    gemm_safe,
    inverse_norms,
    metric_weights,
    resolve_metric,
    sq_norms,
    with_defaults,
)
from mmfs.errors import DimensionError, ParameterError

__all__ = ["knn", "radius"]

DEFAULT_WORKING_MEMORY = 256 << 20
# With this many queries or more, tiles of Q @ D.T filter the candidates (_select.knn_gemm);
# below it the direct loops read each data row once for all queries (memory bound).
GEMM_MIN_QUERIES = 8
_NO_INDEX = np.iinfo(np.int64).max


def _as_count(k: Any) -> int:
    if isinstance(k, bool):
        raise ParameterError(f"k must be a positive integer, got {k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise ParameterError(f"k must be a positive integer, got {k!r}") from None
    if k < 1:
        raise ParameterError(f"k must be a positive integer, got {k}")
    return k


def _rows(x: Any, name: str) -> Any:
    """Accept a 2-D array (or sparse matrix); a 1-D array is one row."""
    if is_sparse(x):
        return x.tocsr()
    arr = as_array(x, name)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise DimensionError(f"{name} must be 1-D or 2-D, got shape {arr.shape}")
    return arr


def _block_rows(n_queries: int, K: int, itemsize: int, working_memory: int | None) -> int:
    budget = DEFAULT_WORKING_MEMORY if working_memory is None else int(working_memory)
    if budget <= 0:
        raise ParameterError(f"working_memory must be a positive byte count, got {budget}")
    per_row = itemsize * (K + max(1, n_queries)) + 8
    return max(64, budget // per_row)


def _prepare(data: Any, queries: Any, metric: Any, kwargs: dict[str, Any]):
    m = resolve_metric(metric, kwargs)
    D = _rows(data, "data")
    Q = _rows(queries, "queries")
    if D.shape[1] != Q.shape[1]:
        raise DimensionError(
            f"queries have {Q.shape[1]} features but data has {D.shape[1]}; "
            "both must have the same number of features"
        )
    if not is_sparse(D):
        m = with_defaults(m, D, Q)
    return m, D, Q


def _fast(m: Metric, D: Any, Q: Any) -> bool:
    """True when the exact kernels serve this search (dense rows, a built-in metric)."""
    return (
        not (is_sparse(D) or is_sparse(Q))
        and m.fn is None
        and m.name in DIRECT_METRICS
        and not (m.name in ("hamming", "jaccard") and D.dtype == Q.dtype == np.bool_)
        and D.shape[1] > 0
    )


def knn(
    data: Any,
    queries: Any,
    k: int,
    metric: Any = "euclidean",
    *,
    n_threads: int | None = None,
    working_memory: int | None = None,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of ``data`` to each query, exactly.

    ``metric`` and its keywords are those of :func:`mmfs.cdist`.  Returns
    ``(indices int64 (n_queries, k), distances (n_queries, k))``.
    """
    k = _as_count(k)
    m, D, Q = _prepare(data, queries, metric, kwargs)
    nt = effective_n_threads(n_threads)
    ct = compute_dtype(D, Q)
    nq = Q.shape[0]
    heap_d = np.full((nq, k), np.nan)
    heap_i = np.full((nq, k), _NO_INDEX, dtype=np.int64)
    heap_n = np.zeros(nq, dtype=np.int64)
    fast = _fast(m, D, Q)
    step = _block_rows(nq, D.shape[1], np.dtype(ct).itemsize, working_memory)
    if fast and working_memory is None and D.dtype == ct and D.flags.c_contiguous:
        # Blocks of such data are views, never copies: one block, one parallel region.
        step = max(step, D.shape[0])
    if fast:
        Qc = as_matrix(Q, "queries", ct)
        _fast_knn(m, D, Qc, ct, step, heap_d, heap_i, heap_n, nt)
    else:
        for s in range(0, D.shape[0], step):
            block = cdist(Q, D[s : s + step], m.fn or m.name, n_threads=n_threads, **m.params)
            _merge_block(block, s, heap_d, heap_i)
    return _finish(heap_d, heap_i, ct)


def _fast_knn(
    m: Metric,
    D: np.ndarray,
    Q: np.ndarray,
    ct: np.dtype,
    step: int,
    heap_d: np.ndarray,
    heap_i: np.ndarray,
    heap_n: np.ndarray,
    nt: int,
) -> None:
    p = float(m.params.get("p", 2.0))
    W = metric_weights(m, Q, None)
    use_gemm = (
        m.name in GEMM_METRICS and Q.shape[0] >= GEMM_MIN_QUERIES and gemm_safe(Q, sq_norms(Q, nt))
    )
    qn = _side_norms(m, Q, nt) if use_gemm or m.name == "cosine" else np.empty(0)
    gamma = _gamma(Q.shape[1], ct) if use_gemm else 0.0
    for s in range(0, D.shape[0], step):
        block = np.ascontiguousarray(D[s : s + step], dtype=ct)
        dn = _side_norms(m, block, nt) if use_gemm or m.name == "cosine" else None
        if use_gemm and dn is not None and gemm_safe(block, _sq(m, block, dn, nt)):
            _select.knn_gemm(m.code, Q, block, qn, dn, gamma, s, heap_d, heap_i, heap_n, nt)
        else:
            inv_q = qn if m.name == "cosine" else np.empty(0)
            inv_d = dn if m.name == "cosine" and dn is not None else np.empty(0)
            nt_block = threads_for(nt, block.size * Q.shape[0])
            _select.knn_direct(
                m.code, Q, block, p, W, inv_q, inv_d, s, heap_d, heap_i, heap_n, nt_block
            )


def _sq(m: Metric, X: np.ndarray, norms: np.ndarray, nt: int) -> np.ndarray:
    """Squared norms of X's rows (recomputed when `norms` holds inverse norms)."""
    return sq_norms(X, nt) if m.name == "cosine" else norms


def _side_norms(m: Metric, X: np.ndarray, nt: int) -> np.ndarray:
    if m.name == "cosine":
        return inverse_norms(X, nt)
    if m.name in GEMM_METRICS:
        return sq_norms(X, nt)
    return np.empty(0)


def _merge_block(block: np.ndarray, offset: int, heap_d: np.ndarray, heap_i: np.ndarray) -> None:
    """Keep the k best of (current best, this block) per query, by (distance, index)."""
    k = heap_d.shape[1]
    idx = np.broadcast_to(np.arange(offset, offset + block.shape[1], dtype=np.int64), block.shape)
    d = np.concatenate([heap_d, block.astype(np.float64)], axis=1)
    i = np.concatenate([heap_i, idx], axis=1)
    order = np.lexsort((i, d), axis=-1)[:, :k]
    heap_d[...] = np.take_along_axis(d, order, axis=1)
    heap_i[...] = np.take_along_axis(i, order, axis=1)


def _finish(heap_d: np.ndarray, heap_i: np.ndarray, ct: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((heap_i, heap_d), axis=-1)
    idx = np.take_along_axis(heap_i, order, axis=1)
    dist = np.take_along_axis(heap_d, order, axis=1).astype(ct)
    empty = idx == _NO_INDEX
    idx[empty] = -1
    dist[empty] = np.inf
    return idx, dist


def radius(
    data: Any,
    queries: Any,
    r: float,
    metric: Any = "euclidean",
    *,
    n_threads: int | None = None,
    working_memory: int | None = None,
    **kwargs: Any,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every row of ``data`` within distance ``r`` (inclusive) of each query.

    Returns ``(indices, distances)``, two lists with one array per query, ordered by
    distance then index.
    """
    try:
        r = float(r)
    except (TypeError, ValueError):
        raise ParameterError(f"r must be a number, got {r!r}") from None
    if np.isnan(r):
        raise ParameterError("r must be a number, got nan")
    m, D, Q = _prepare(data, queries, metric, kwargs)
    nq, K = Q.shape[0], D.shape[1]
    nt = effective_n_threads(n_threads)
    ct = compute_dtype(D, Q)
    fast = _fast(m, D, Q)
    Qc = as_matrix(Q, "queries", ct) if fast else Q
    step = _block_rows(nq, K, 8, working_memory)
    q_parts, i_parts, d_parts = [], [], []
    for s in range(0, D.shape[0], step):
        if fast:
            block = np.ascontiguousarray(D[s : s + step], dtype=ct)
            qi, ri, ds = _radius_block(m, Qc, block, r, nt)
        else:
            dist = cdist(Q, D[s : s + step], m.fn or m.name, n_threads=n_threads, **m.params)
            qi, ri = np.nonzero(dist <= r)
            ds = dist[qi, ri]
        q_parts.append(qi)
        i_parts.append(ri + s)
        d_parts.append(ds)
    qs = np.concatenate(q_parts) if q_parts else np.empty(0, np.int64)
    ids = np.concatenate(i_parts).astype(np.int64) if i_parts else np.empty(0, np.int64)
    ds = np.concatenate(d_parts) if d_parts else np.empty(0, ct)
    order = np.lexsort((ids, ds, qs))
    qs, ids, ds = qs[order], ids[order], ds[order]
    bounds = np.searchsorted(qs, np.arange(nq + 1))
    return (
        [ids[bounds[i] : bounds[i + 1]] for i in range(nq)],
        [ds[bounds[i] : bounds[i + 1]] for i in range(nq)],
    )


def _radius_block(
    m: Metric, Q: np.ndarray, block: np.ndarray, r: float, nt: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, row, distance) of every pair within r, each distance computed exactly."""
    p = float(m.params.get("p", 2.0))
    W = metric_weights(m, Q, None)
    cos = m.name == "cosine"
    iq = inverse_norms(Q, nt) if cos else np.empty(0)
    idd = inverse_norms(block, nt) if cos else np.empty(0)
    qn, dn = sq_norms(Q, nt), sq_norms(block, nt)
    if (
        m.name in GEMM_METRICS
        and Q.shape[0] >= GEMM_MIN_QUERIES
        and np.isfinite(r)
        and gemm_safe(Q, qn)
        and gemm_safe(block, dn)
    ):
        # BLAS product -> a lower bound of every distance -> exact check of the few
        # pairs whose bound is within r (see _select.knn_gemm for the bound).
        G = Q @ block.T
        gamma = _gamma(Q.shape[1], Q.dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            if cos:
                lower = 1.0 - G * iq[:, None] * idd[None, :] - gamma
            elif m.name == "inner_product":
                lower = -G - gamma * np.sqrt(qn[:, None] * dn[None, :])
            else:
                lower = (1.0 - gamma) * (qn[:, None] + dn[None, :]) - 2.0 * G
                r_cmp = r * r if m.name == "euclidean" else r
                lower = np.where(lower > 0, lower, 0.0) if m.name == "euclidean" else lower
                qi, ri = np.nonzero(lower <= r_cmp)
                return _exact_within(m, Q, block, p, W, iq, idd, qi, ri, r, nt)
            qi, ri = np.nonzero(lower <= r)
        return _exact_within(m, Q, block, p, W, iq, idd, qi, ri, r, nt)
    dist = np.empty((Q.shape[0], block.shape[0]), dtype=Q.dtype)
    nt_block = threads_for(nt, dist.size * max(1, Q.shape[1]))
    _dense.pairwise_direct(m.code, Q, block, dist, p, W, iq, idd, nt_block)
    qi, ri = np.nonzero(dist <= r)
    return qi, ri, dist[qi, ri]


def _exact_within(
    m: Metric,
    Q: np.ndarray,
    block: np.ndarray,
    p: float,
    W: np.ndarray,
    iq: np.ndarray,
    idd: np.ndarray,
    qi: np.ndarray,
    ri: np.ndarray,
    r: float,
    nt: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    exact = np.empty(qi.size, dtype=Q.dtype)
    # np.nonzero's outputs are strided views of one (n, 2) array
    qi, ri = np.ascontiguousarray(qi), np.ascontiguousarray(ri)
    _select.pair_distances(m.code, Q, block, p, W, iq, idd, qi, ri, exact, nt)
    keep = exact <= r
    return qi[keep], ri[keep], exact[keep]


def _gamma(K: int, dtype: np.dtype) -> float:
    """Bound on the error of one entry of a BLAS product, relative to the norms: Higham's
    gamma_K for the dot product plus the rounding of the result (both sides of d^2)."""
    u = 2.0**-24 if dtype == np.float32 else 2.0**-53
    return 2.0 * (K * u / (1.0 - K * u) + u)
