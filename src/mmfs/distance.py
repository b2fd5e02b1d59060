"""Pairwise distances: ``mmfs.cdist`` and the metric registry.

``cdist`` has the metric names, keyword names and semantics of
``scipy.spatial.distance.cdist`` for euclidean, sqeuclidean, cosine, cityblock (alias
manhattan), chebyshev, minkowski (``p``), seuclidean (``V``), mahalanobis (``VI``),
hamming and jaccard, plus ``inner_product`` (the negative dot product, so that smaller is
closer, as for every other metric).  Differences from scipy, on purpose:

* float32 in gives float32 out (scipy always computes in float64); ``dtype=`` chooses.
* A zero vector has cosine distance 1.0 to every vector, itself included (scipy gives NaN;
  this is scikit-learn's ``cosine_distances`` off its diagonal).
* NaN in gives NaN out for every metric, including chebyshev, hamming and jaccard.
* ``p=inf`` for minkowski is chebyshev; NaN, -inf and non-positive ``p`` are errors.

Routes.  One dispatcher (:func:`cdist`) picks, by dtype and metric, the route that is
both fast and exact enough:

* GEMM route (euclidean, sqeuclidean, cosine, inner_product): A @ B.T is computed by
  mmfs's own GEMM (a fixed order of operations: the same bits for any thread count,
  unlike BLAS; see ``_kernels/mmfs_gemm.h``), a kernel turns it into distances and
  recomputes exactly every pair that the product could have got wrong (close pairs,
  where |a|^2 + |b|^2 - 2ab cancels).  Euclidean products
  are taken on data shifted by an estimate of B's mean, which keeps the products small
  against the distances.  Rows whose norms could overflow or underflow in the GEMM
  precision send the whole call to the direct route.
* Mahalanobis: a^T S a + b^T S b - 2 (aS) b^T by the same GEMM in float64, and pairs
  where that cancels recomputed from their difference vector.
* Direct route (cityblock, chebyshev, minkowski, seuclidean, hamming and jaccard on
  numbers, and the fallback for all): each pair from its two rows, see
  ``_kernels/mmfs_dense.h``.  knn and radius compute every distance they return this way.
* Packed route (hamming and jaccard on boolean input): bits packed 64 to a word, popcount.
* Custom metrics: a Python callable ``f(XA_block, XB_block) -> distances``, called once per
  block of rows, never per pair.

Precision: float64 results are within about 1e-13 relative of the exact distance, float32
results within about 1e-6 (the tests hold them to 1e-12 and 1e-5 against scipy in float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmfs._config import effective_n_threads, threads_for
from mmfs._kernels import _bits, _dense, _select
from mmfs._validation import (
    as_array,
    as_matrix,
    check_dims,
    check_out,
    compute_dtype,
    is_sparse,
)
from mmfs.errors import DimensionError, MetricError, NotFoundError, ParameterError

__all__ = ["METRICS", "cdist", "register_metric", "registered_metrics", "unregister_metric"]

CustomMetric = Callable[[np.ndarray, np.ndarray], Any]

METRICS = (
    "euclidean",
    "sqeuclidean",
    "cosine",
    "cityblock",
    "chebyshev",
    "minkowski",
    "seuclidean",
    "mahalanobis",
    "hamming",
    "jaccard",
    "inner_product",
)
_ALIASES = {"manhattan": "cityblock", "l1": "cityblock", "l2": "euclidean", "dot": "inner_product"}
_PARAMS: dict[str, frozenset[str]] = {
    "minkowski": frozenset({"p"}),
    "seuclidean": frozenset({"V"}),
    "mahalanobis": frozenset({"VI"}),
}
GEMM_METRICS = frozenset({"euclidean", "sqeuclidean", "cosine", "inner_product"})
DIRECT_METRICS = frozenset(_dense.METRIC_CODES)

_registry: dict[str, CustomMetric] = {}

# Unit roundoff of the GEMM precision, and the relative error we allow a GEMM-derived
# distance before recomputing it exactly (an order of magnitude inside the tolerances the
# tests hold us to: 1e-5 for float32, 1e-12 for float64).
_UNIT = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}
_TARGET = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-13}
# Row norms^2 outside [lo, hi] can overflow or underflow inside the GEMM precision.
_SAFE = {np.dtype(np.float32): (2.0**-100, 2.0**100), np.dtype(np.float64): (2.0**-900, 2.0**900)}
# Custom metrics may broadcast (rows_a, rows_b, K): keep one block's worth below this.
_CUSTOM_BLOCK_BYTES = 64 << 20


@dataclass(frozen=True)
class Metric:
    """A resolved metric: its canonical name, parameters, and a callable if custom."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    fn: CustomMetric | None = None

    @property
    def code(self) -> int:
        return _dense.METRIC_CODES[self.name]


def register_metric(name: str, fn: CustomMetric, *, overwrite: bool = False) -> None:
    """Register ``fn(XA_block, XB_block) -> (len(XA_block), len(XB_block)) distances``
    under ``name`` so that cdist, knn and radius accept ``metric=name``."""
    if not isinstance(name, str) or not name:
        raise ParameterError(f"a metric name must be a non-empty string, got {name!r}")
    if name in METRICS or name in _ALIASES:
        raise MetricError(f"{name!r} is a built-in metric and cannot be replaced")
    if not callable(fn):
        raise MetricError(f"register_metric({name!r}, fn): fn must be callable, got {fn!r}")
    if name in _registry and not overwrite:
        raise MetricError(f"metric {name!r} is already registered; pass overwrite=True")
    _registry[name] = fn


def unregister_metric(name: str) -> None:
    """Remove a metric added by :func:`register_metric`."""
    if name not in _registry:
        raise NotFoundError(f"no registered metric named {name!r}")
    del _registry[name]


def registered_metrics() -> tuple[str, ...]:
    """Names of the custom metrics registered in this process."""
    return tuple(sorted(_registry))


def resolve_metric(metric: Any, kwargs: dict[str, Any]) -> Metric:
    """Check a metric and its keyword parameters; return the canonical form."""
    if callable(metric):
        if kwargs:
            raise MetricError(f"a custom metric takes no keyword parameters, got {sorted(kwargs)}")
        return Metric(getattr(metric, "__name__", "custom"), fn=metric)
    if not isinstance(metric, str):
        raise MetricError(f"metric must be a name or a callable, got {metric!r}")
    if metric in _registry:
        if kwargs:
            raise MetricError(f"registered metric {metric!r} takes no keyword parameters")
        return Metric(metric, fn=_registry[metric])
    name = _ALIASES.get(metric.lower(), metric.lower())
    if name not in METRICS:
        known = ", ".join(METRICS)
        extra = f"; registered: {', '.join(_registry)}" if _registry else ""
        raise MetricError(f"unknown metric {metric!r}; expected one of {known}{extra}")
    allowed = _PARAMS.get(name, frozenset())
    unexpected = set(kwargs) - allowed
    if unexpected:
        what = f"takes {', '.join(sorted(allowed))}" if allowed else "takes no parameters"
        raise MetricError(
            f"metric {name!r} {what}; unexpected keyword(s): {', '.join(sorted(unexpected))}"
        )
    params = dict(kwargs)
    if name == "minkowski":
        p = params.get("p", 2.0)
        try:
            p = float(p)
        except (TypeError, ValueError):
            raise MetricError(f"minkowski p must be a number, got {p!r}") from None
        if math.isnan(p) or p <= 0:
            raise MetricError(f"minkowski p must be a positive number (or inf), got {p!r}")
        if p == 1:
            return Metric("cityblock")
        if p == 2:
            return Metric("euclidean")
        if math.isinf(p):
            return Metric("chebyshev")
        params["p"] = p
    return Metric(name, params)


# --------------------------------------------------------------------------------------
# The dispatcher
# --------------------------------------------------------------------------------------


def cdist(
    XA: Any,
    XB: Any,
    metric: str | CustomMetric = "euclidean",
    *,
    out: np.ndarray | None = None,
    dtype: Any = None,
    n_threads: int | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Distance between each pair of rows of ``XA`` (m, K) and ``XB`` (n, K) -> (m, n).

    Parameters follow ``scipy.spatial.distance.cdist``: ``metric`` is a name (see
    :data:`METRICS`; aliases manhattan, l1, l2, dot), a registered name or a callable
    ``f(XA_block, XB_block)``; ``p`` (minkowski), ``V`` (seuclidean) and ``VI``
    (mahalanobis) as in scipy.  Either side may be a scipy.sparse matrix for euclidean,
    sqeuclidean, cosine, cityblock and inner_product.  ``dtype`` picks the result dtype
    (default: float32 when both inputs are float32, else float64; hamming and jaccard
    default to float64).  ``out`` receives the result.  ``n_threads=None`` uses every
    usable core.
    """
    m = resolve_metric(metric, kwargs)
    if is_sparse(XA) or is_sparse(XB):
        from mmfs.csr import sparse_cdist

        return sparse_cdist(XA, XB, m, out=out, dtype=dtype, n_threads=n_threads)
    A0 = as_array(XA, "XA")
    B0 = as_array(XB, "XB")
    for arr, nm in ((A0, "XA"), (B0, "XB")):
        if arr.ndim != 2:
            raise DimensionError(
                f"{nm} must be a 2-D array of shape (n_rows, n_features), got shape {arr.shape}"
            )
    check_dims(A0, B0, ("XA", "XB"))
    nt = effective_n_threads(n_threads)

    if m.name in ("hamming", "jaccard") and A0.dtype == np.bool_ and B0.dtype == np.bool_:
        out_dtype = compute_dtype(dtype=dtype or np.float64)
        result = alloc_result(out, (A0.shape[0], B0.shape[0]), out_dtype)
        work = result if out_dtype == np.float64 else np.empty(result.shape)
        _packed(m.name == "jaccard", A0, B0, work, nt)
        if work is not result:
            result[...] = work
        return result

    ct = compute_dtype(A0, B0, dtype=dtype)
    A = as_matrix(A0, "XA", ct)
    B = as_matrix(B0, "XB", ct)
    out_dtype = np.dtype(dtype) if dtype is not None else ct
    result = alloc_result(out, (A.shape[0], B.shape[0]), out_dtype)
    work = result if out_dtype == ct else np.empty(result.shape, dtype=ct)
    if m.fn is not None:
        _custom(m, A, B, work)
    else:
        dense_into(m, A, B, work, nt)
    if work is not result:
        result[...] = work
    return result


def alloc_result(out: np.ndarray | None, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    return check_out(out, shape, dtype)


def dense_into(m: Metric, A: np.ndarray, B: np.ndarray, out: np.ndarray, nt: int) -> None:
    """Distances of C-contiguous A, B (same float dtype) into out (that dtype)."""
    if out.size == 0:
        return
    nt = threads_for(nt, out.size * max(1, A.shape[1]))
    if A.shape[1] == 0:
        _empty_features(m, out)
        return
    if m.name == "mahalanobis":
        _mahalanobis(m, A, B, out, nt)
        return
    if m.name in GEMM_METRICS:
        na, nb = sq_norms(A, nt), sq_norms(B, nt)
        if gemm_safe(A, na) and gemm_safe(B, nb):
            _gemm(m, A, B, na, nb, out, nt)
            return
    inva = invb = np.empty(0)
    if m.name == "cosine":
        inva, invb = inverse_norms(A, nt), inverse_norms(B, nt)
    W = metric_weights(m, A, B)
    _dense.pairwise_direct(m.code, A, B, out, float(m.params.get("p", 2.0)), W, inva, invb, nt)


def metric_weights(m: Metric, A: np.ndarray, B: np.ndarray | None) -> np.ndarray:
    """The weight array a direct kernel needs: 1/V for seuclidean, sym(VI) flattened for
    mahalanobis, empty otherwise.  Defaults are estimated from the rows of A and B."""
    if m.name == "seuclidean":
        with np.errstate(divide="ignore"):  # V = 0: the 0/0 of scipy's formula gives NaN
            return 1.0 / _variances(m, A, B)
    if m.name == "mahalanobis":
        VI = _inverse_covariance(m, A, B)
        return np.ascontiguousarray(0.5 * (VI + VI.T)).ravel()
    return np.empty(0)


def with_defaults(m: Metric, data: Any, queries: Any) -> Metric:
    """Fix seuclidean's V / mahalanobis' VI once, from the rows of queries and data as
    ``cdist(queries, data)`` would, so a search walking data in blocks uses one metric."""
    if m.name == "seuclidean" and m.params.get("V") is None:
        return Metric(m.name, {"V": _variances(m, queries, data)})
    if m.name == "mahalanobis" and m.params.get("VI") is None:
        return Metric(m.name, {"VI": _inverse_covariance(m, queries, data)})
    return m


def _empty_features(m: Metric, out: np.ndarray) -> None:
    """Rows of zero features: every distance is 0 (cosine: zero vectors, so 1)."""
    out[...] = 1.0 if m.name == "cosine" else 0.0


# --------------------------------------------------------------------------------------
# GEMM route
# --------------------------------------------------------------------------------------


def sq_norms(X: np.ndarray, nt: int) -> np.ndarray:
    out = np.empty(X.shape[0])
    _dense.row_sq_norms(X, out, threads_for(nt, X.size))
    return out


def inverse_norms(X: np.ndarray, nt: int) -> np.ndarray:
    out = np.empty(X.shape[0])
    _dense.inv_norms(X, out, threads_for(nt, X.size))
    return out


def gemm_safe(X: np.ndarray, sq: np.ndarray) -> bool:
    """False when some row's squared norm ``sq`` could overflow or underflow in a GEMM of
    X's precision (NaN and inf rows are fine: their pairs are recomputed directly)."""
    lo, hi = _SAFE[X.dtype]
    finite = sq[np.isfinite(sq) & (sq > 0)]
    if finite.size == 0:
        return True
    return bool(finite.min() >= lo and finite.max() * max(1, X.shape[1]) <= hi)


def _coherence(X: np.ndarray, sq: np.ndarray) -> float:
    """|mean of unit rows|^2 over a sample of rows: 0 for rows in random directions, 1 when
    all are parallel.  Rounding errors of a dot product grow like sqrt(K * coherence)."""
    pick = _sample_rows(X.shape[0], X.shape[1])
    rows, norms = X[pick].astype(np.float64), sq[pick]
    ok = np.isfinite(norms) & (norms > 0)
    if not ok.any():
        return 0.0
    mean = (rows[ok] / np.sqrt(norms[ok])[:, None]).mean(axis=0)
    return float(min(1.0, mean @ mean))


def refine_threshold(dtype: np.dtype, K: int, ca: float, cb: float) -> float:
    """Relative size below which a GEMM-derived distance is recomputed exactly."""
    err = _UNIT[dtype] * (1.0 + math.sqrt(K * ca * cb))
    return min(1.0, err / (2.0 * _TARGET[dtype]))


def _gemm(
    m: Metric,
    A: np.ndarray,
    B: np.ndarray,
    na: np.ndarray,
    nb: np.ndarray,
    out: np.ndarray,
    nt: int,
) -> None:
    """BLAS product, then the fix-up kernel (na, nb: squared row norms of A and B)."""
    K = A.shape[1]
    if m.name == "inner_product":
        _dense.gemm_nt(A, B, out, nt)
        np.negative(out, out=out)
        return
    if m.name == "cosine":
        tau = refine_threshold(A.dtype, K, _coherence(A, na), _coherence(B, nb))
        # gemm_safe held, so 1/sqrt(|x|^2) cannot overflow; zero rows get 0, NaN stays.
        inva, invb = _inverse(na), _inverse(nb)
        _dense.gemm_nt(A, B, out, nt)
        _dense.fix_cosine(out, A, B, inva, invb, tau, nt)
        return
    Ac, Bc = _centred(A, B, nb)
    if Bc is not B:
        na, nb = sq_norms(Ac, nt), sq_norms(Bc, nt)
    tau = refine_threshold(A.dtype, K, _coherence(Ac, na), _coherence(Bc, nb))
    _dense.gemm_nt(Ac, Bc, out, nt)
    _dense.fix_euclidean(out, A, B, na, nb, tau, m.name == "sqeuclidean", nt)


def _inverse(sq: np.ndarray) -> np.ndarray:
    """1/sqrt(sq): 0 for zero rows, NaN for rows holding NaN or inf (as inv_norms)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.sqrt(sq)
    inv[sq == 0] = 0.0
    inv[~np.isfinite(sq)] = np.nan
    return inv


def _sample_rows(n: int, K: int) -> slice:
    """Evenly spaced rows, at most 2048 of them and about 2^20 values in all."""
    rows = max(16, min(2048, (1 << 20) // max(1, K)))
    return slice(None, None, max(1, n // rows))


def _sample(X: np.ndarray) -> np.ndarray:
    """Evenly spaced rows of X (all of them when X is small), in float64."""
    return X[_sample_rows(X.shape[0], X.shape[1])].astype(np.float64)


def _centred(A: np.ndarray, B: np.ndarray, nb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift both sides by (an estimate of) B's mean when that shrinks the products.

    Any common shift leaves every distance unchanged, so a mean estimated from a sample of
    rows serves as well as the exact one and costs no pass over B.
    """
    if B.shape[0] < 2:
        return A, B
    mu = _sample(B).mean(axis=0)
    spread = float(np.mean(nb))
    if not np.all(np.isfinite(mu)) or not spread > 0 or float(mu @ mu) < spread / 64:
        return A, B
    shift = mu.astype(A.dtype)
    return A - shift, B - shift


# --------------------------------------------------------------------------------------
# Quadratic-form route: seuclidean and mahalanobis
# --------------------------------------------------------------------------------------


_MOMENT_ROWS = 1 << 16


def _moments(parts: list[Any], cov: bool) -> tuple[int, np.ndarray]:
    """Sample variances (or the covariance matrix) of the rows of all parts, ddof=1, in
    two passes over chunks: no copy of the data is ever stacked."""
    n = sum(x.shape[0] for x in parts)
    K = parts[0].shape[1]
    chunks = [x[s : s + _MOMENT_ROWS] for x in parts for s in range(0, x.shape[0], _MOMENT_ROWS)]
    mean = np.zeros(K)
    for c in chunks:
        mean += np.asarray(c, dtype=np.float64).sum(axis=0)
    mean /= max(n, 1)
    acc = np.zeros((K, K) if cov else K)
    for c in chunks:
        d = np.asarray(c, dtype=np.float64) - mean
        acc += d.T @ d if cov else np.einsum("ij,ij->j", d, d)
    return n, acc / max(n - 1, 1)


def _variances(m: Metric, A: Any, B: Any) -> np.ndarray:
    K = A.shape[1]
    V = m.params.get("V")
    if V is None:
        n, var = _moments([A] if B is None else [A, B], cov=False)
        if n < 2:
            raise MetricError("seuclidean needs V= when there are fewer than 2 rows in all")
        return var
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (K,):
        raise MetricError(f"seuclidean V must have shape ({K},), got {V.shape}")
    if not np.all(np.isfinite(V)) or np.any(V <= 0):
        raise MetricError("seuclidean V must hold positive finite variances")
    return V


def _inverse_covariance(m: Metric, A: Any, B: Any) -> np.ndarray:
    K = A.shape[1]
    VI = m.params.get("VI")
    if VI is None:
        n = A.shape[0] + (0 if B is None else B.shape[0])
        if n <= K:
            raise MetricError(
                f"mahalanobis without VI= needs more rows than dimensions to estimate the "
                f"inverse covariance: got {n} rows of {K} dimensions; pass VI="
            )
        _, cov = _moments([A] if B is None else [A, B], cov=True)
        if not np.all(np.isfinite(cov)):
            return np.full((K, K), np.nan)  # NaN in the data: every distance is NaN
        try:
            return np.linalg.inv(cov).T
        except np.linalg.LinAlgError:
            raise MetricError(
                "mahalanobis: the covariance of the rows is singular; pass VI="
            ) from None
    VI = np.asarray(VI, dtype=np.float64)
    if VI.ndim != 2 or VI.shape[0] != VI.shape[1]:
        raise MetricError(f"mahalanobis VI must be a square matrix, got shape {VI.shape}")
    if VI.shape[0] != K:
        raise MetricError(f"mahalanobis VI must have shape ({K}, {K}), got {VI.shape}")
    if not np.all(np.isfinite(VI)):
        raise MetricError("mahalanobis VI must be finite")
    return VI


def _mahalanobis(m: Metric, A: np.ndarray, B: np.ndarray, out: np.ndarray, nt: int) -> None:
    """d(a, b)^2 = (a-b)^T S (a-b), S = sym(VI): a^T S a + b^T S b - 2 (aS) b^T by the
    deterministic GEMM, and every pair where that cancels (small against |a^T S a| +
    |b^T S b|) recomputed from a - b by the direct kernel.  A negative form (VI not
    positive semi-definite) gives NaN, as in scipy.  No factorisation is involved:
    LAPACK's results, like BLAS's, change with the thread count."""
    S_flat = metric_weights(m, A, B)
    K = A.shape[1]
    S = S_flat.reshape(K, K)
    if not np.all(np.isfinite(S)):
        out[...] = np.nan
        return
    A64 = np.ascontiguousarray(A, dtype=np.float64)
    B64 = np.ascontiguousarray(B, dtype=np.float64)
    AS = np.empty_like(A64)
    BS = np.empty_like(B64)
    _dense.gemm_nt(A64, S, AS, nt)  # S is symmetric: A @ S == A @ S.T
    _dense.gemm_nt(B64, S, BS, nt)
    qa = np.einsum("ij,ij->i", AS, A64)
    qb = np.einsum("ij,ij->i", BS, B64)
    G = np.empty((A.shape[0], B.shape[0]))
    _dense.gemm_nt(AS, B64, G, nt)
    d2 = qa[:, None] + qb[None, :] - 2.0 * G
    scale = np.abs(qa)[:, None] + np.abs(qb)[None, :]
    tau = refine_threshold(np.dtype(np.float64), K, 1.0, 1.0)
    with np.errstate(invalid="ignore"):
        redo = ~(d2 >= tau * scale)
        np.sqrt(d2, out=d2)
    out[...] = d2
    qi, di = (np.ascontiguousarray(x) for x in np.nonzero(redo))
    if qi.size:
        exact = np.empty(qi.size, dtype=A.dtype)
        none = np.empty(0)
        _select.pair_distances(m.code, A, B, 0.0, S_flat, none, none, qi, di, exact, nt)
        out[qi, di] = exact


# --------------------------------------------------------------------------------------
# Packed booleans and custom metrics
# --------------------------------------------------------------------------------------


def pack_bits(X: np.ndarray) -> np.ndarray:
    """Boolean rows -> uint64 words (numpy.packbits order, zero padded), C-contiguous."""
    n, K = X.shape
    words = (K + 63) // 64
    packed = np.zeros((n, words * 8), dtype=np.uint8)
    if K:
        packed[:, : (K + 7) // 8] = np.packbits(X, axis=1)
    return packed.view(np.uint64)


def _packed(jaccard: bool, A: np.ndarray, B: np.ndarray, out: np.ndarray, nt: int) -> None:
    _bits.packed_pairwise(jaccard, pack_bits(A), pack_bits(B), A.shape[1], out, nt)


def custom_block(m: Metric, a: Any, b: Any) -> np.ndarray:
    """Call a custom metric on one block of rows and check what it returns."""
    assert m.fn is not None
    try:
        block = np.asarray(m.fn(a, b), dtype=np.float64)
    except Exception as exc:
        raise MetricError(f"custom metric {m.name!r} raised {exc!r}") from exc
    expected = (a.shape[0], b.shape[0])
    if block.shape != expected:
        raise MetricError(
            f"custom metric {m.name!r} must return an array of shape "
            f"(len(XA_block), len(XB_block)) = {expected}, got shape {block.shape}"
        )
    return block


def _custom(m: Metric, A: np.ndarray, B: np.ndarray, out: np.ndarray) -> None:
    """Call the user's metric once per block of rows, never per pair."""
    ma, mb, K = A.shape[0], B.shape[0], max(1, A.shape[1])
    per_row = max(1, mb) * K * A.itemsize
    rows = max(1, min(ma, _CUSTOM_BLOCK_BYTES // per_row))
    cols = mb if rows > 1 or per_row <= _CUSTOM_BLOCK_BYTES else max(1, _CUSTOM_BLOCK_BYTES // K)
    for i in range(0, ma, rows):
        for j in range(0, mb, cols):
            out[i : i + rows, j : j + cols] = custom_block(m, A[i : i + rows], B[j : j + cols])
