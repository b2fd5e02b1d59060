"""Shared test helpers: reference implementations, metric cases, the tie-tolerant
k-NN comparison and the base of the store state machines.

Every reference here computes in float64 from float64 copies of the inputs (scipy's
``cdist``, scikit-learn or plain numpy), so a float32 result from mmfs is always compared
against the exact-as-possible answer for the values it was actually given.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis.stateful import RuleBasedStateMachine
from scipy.spatial.distance import cdist as scipy_cdist
from sklearn.metrics.pairwise import cosine_distances

import mmfs

__all__ = [
    "METRIC_CASES",
    "MetricCase",
    "StoreMachine",
    "assert_knn_equivalent",
    "ref_cdist",
    "ref_knn",
    "tie_groups",
]

Params = Callable[[int, np.random.Generator], dict[str, Any]]


def _no_params(K: int, rng: np.random.Generator) -> dict[str, Any]:
    return {}


def _p(p: float) -> Params:
    return lambda K, rng: {"p": p}


def _variances(K: int, rng: np.random.Generator) -> dict[str, Any]:
    return {"V": rng.uniform(0.5, 2.0, K)}


def _spd(K: int, rng: np.random.Generator) -> dict[str, Any]:
    X = rng.standard_normal((K, K))
    return {"VI": X @ X.T / K + np.eye(K)}


def _indefinite(K: int, rng: np.random.Generator) -> dict[str, Any]:
    S = rng.standard_normal((K, K))
    VI = 0.5 * (S + S.T)
    if K == 1:
        VI = -np.abs(VI)  # a 1x1 "indefinite" form: negative, so every d^2 < 0
    return {"VI": VI}


@dataclass(frozen=True)
class MetricCase:
    """One metric with its parameters, as the test grids use it.

    ``binary``: the metric is tested on 0/1 data.  ``max_dim``: largest dimension the
    grids use (mahalanobis holds a K x K matrix).  ``min_rows``: the metric estimates
    its parameters from the data (needs that many rows in all, per dimension + 1).
    """

    id: str
    metric: str
    params: Params = field(default=_no_params)
    binary: bool = False
    max_dim: int = 1 << 20
    estimates: bool = False  # V or VI estimated from the rows (needs enough rows)
    indefinite: bool = False

    def kwargs(self, K: int, rng: np.random.Generator) -> dict[str, Any]:
        return self.params(K, rng)


METRIC_CASES: list[MetricCase] = [
    MetricCase("euclidean", "euclidean"),
    MetricCase("sqeuclidean", "sqeuclidean"),
    MetricCase("cosine", "cosine"),
    MetricCase("cityblock", "cityblock"),
    MetricCase("manhattan", "manhattan"),
    MetricCase("chebyshev", "chebyshev"),
    *[MetricCase(f"minkowski-p{p}", "minkowski", _p(p)) for p in (0.5, 1, 1.5, 2, 3, 7)],
    MetricCase("minkowski-pinf", "minkowski", _p(math.inf)),
    MetricCase("seuclidean", "seuclidean", estimates=True),
    MetricCase("seuclidean-V", "seuclidean", _variances),
    MetricCase("mahalanobis", "mahalanobis", estimates=True, max_dim=16),
    MetricCase("mahalanobis-VI", "mahalanobis", _spd, max_dim=1000),
    MetricCase("mahalanobis-VI-indef", "mahalanobis", _indefinite, max_dim=100, indefinite=True),
    MetricCase("hamming", "hamming", binary=True),
    MetricCase("jaccard", "jaccard", binary=True),
    MetricCase("inner_product", "inner_product"),
]
CASE_BY_ID = {c.id: c for c in METRIC_CASES}


def make_data(
    case: MetricCase, rng: np.random.Generator, rows: int, K: int, dtype: Any = np.float64
) -> np.ndarray:
    """Random rows suited to the metric: 0/1 for the binary metrics, else N(0, 1)."""
    if case.binary:
        return (rng.random((rows, K)) < 0.35).astype(dtype)
    return rng.standard_normal((rows, K)).astype(dtype)


def ref_cdist(XA: Any, XB: Any, metric: str, **kwargs: Any) -> np.ndarray:
    """The float64 reference distance matrix (scipy cdist, except for inner_product)."""
    A = np.asarray(XA, dtype=np.float64)
    B = np.asarray(XB, dtype=np.float64)
    if metric in ("inner_product", "dot"):
        return -(A @ B.T)
    if metric == "manhattan":
        metric = "cityblock"
    if metric == "minkowski" and math.isinf(kwargs.get("p", 2.0)):
        metric, kwargs = "chebyshev", {}
    if A.shape[0] == 0 or B.shape[0] == 0:
        return np.empty((A.shape[0], B.shape[0]))
    return scipy_cdist(A, B, metric, **kwargs)  # pyright: ignore[reportCallIssue, reportArgumentType]


def ref_cosine_sklearn(XA: Any, XB: Any) -> np.ndarray:
    """scikit-learn's cosine distance (zero vectors -> 1.0), on float64 copies.  Passing
    two distinct arrays keeps sklearn from zeroing a diagonal."""
    A = np.array(XA, dtype=np.float64)
    B = np.array(XB, dtype=np.float64)
    return cosine_distances(A, B)


def ref_knn(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (distance, index) per row of a full distance matrix: ordered by
    distance, NaN after every number, ties by the lower index; padded with -1/inf."""
    nq, n = dist.shape
    idx = np.full((nq, k), -1, dtype=np.int64)
    out = np.full((nq, k), np.inf)
    cols = np.arange(n)
    for q in range(nq):
        d = dist[q]
        nan = np.isnan(d)
        order = np.lexsort((cols, np.where(nan, np.inf, d), nan))[:k]
        idx[q, : order.size] = order
        out[q, : order.size] = d[order]
    return idx, out


# --------------------------------------------------------------------------------------
# Tie-tolerant comparison of k-NN results
# --------------------------------------------------------------------------------------


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * max(abs(a), abs(b))


def tie_groups(dist: np.ndarray, rtol: float, atol: float = 0.0) -> list[slice]:
    """Split one sorted row of distances into runs of (near-)equal values.

    Neighbours within ``atol + rtol * |d|`` of each other chain into one group; NaN and
    each infinity form groups of their own.
    """
    groups: list[slice] = []
    start = 0
    for j in range(1, dist.size + 1):
        if j == dist.size or not _close(float(dist[j - 1]), float(dist[j]), rtol, atol):
            groups.append(slice(start, j))
            start = j
    return groups


def assert_knn_equivalent(
    idx: np.ndarray,
    dist: np.ndarray,
    ref_idx: np.ndarray,
    ref_dist: np.ndarray,
    rtol: float,
    atol: float = 0.0,
    full_dist: np.ndarray | None = None,
) -> None:
    """Assert that (idx, dist) is a correct k-NN answer given the reference answer.

    In the spirit of scikit-learn's ``assert_argkmin_results_quasi_equality``:

    * shapes equal; distances equal within ``rtol`` (and ``atol``) position by position,
      NaN where the reference has NaN, inf where it has inf (padding included);
    * the reference row is cut into groups of (near-)equal distances: inside a group the
      indices may come in any order, and for every group but the last the set of indices
      must be the reference's.  The last group may be cut by k, so other members of the
      tie may stand in for the reference's: its indices need only be new ones;
    * padding (index -1) sits exactly where the reference has it; no index repeats;
    * with ``full_dist`` (the reference distance matrix, queries x rows), each returned
      index's reference distance must match the distance reported beside it, which pins
      down the members of a last tie group too.
    """
    idx = np.asarray(idx)
    dist = np.asarray(dist)
    ref_idx = np.asarray(ref_idx)
    ref_dist = np.asarray(ref_dist)
    assert idx.shape == ref_idx.shape == dist.shape == ref_dist.shape, (
        f"shapes differ: idx {idx.shape}, dist {dist.shape}, "
        f"ref_idx {ref_idx.shape}, ref_dist {ref_dist.shape}"
    )
    if idx.ndim == 1:
        idx, dist, ref_idx, ref_dist = idx[None], dist[None], ref_idx[None], ref_dist[None]
    for q in range(idx.shape[0]):
        row_i, row_d = idx[q], dist[q].astype(np.float64)
        ref_i, ref_d = ref_idx[q], ref_dist[q].astype(np.float64)
        where = f"query {q}: got idx {row_i.tolist()} dist {row_d.tolist()}, expected idx "
        where += f"{ref_i.tolist()} dist {ref_d.tolist()}"
        for j in range(row_d.size):
            assert _close(row_d[j], ref_d[j], rtol, atol), f"distance mismatch at {j}; {where}"
        pad, ref_pad = row_i == -1, ref_i == -1
        assert np.array_equal(pad, ref_pad), f"padding differs; {where}"
        assert np.all(np.isposinf(row_d[pad])), f"padding distance is not +inf; {where}"
        real = row_i[~pad]
        assert np.unique(real).size == real.size, f"repeated index; {where}"
        groups = tie_groups(ref_d[~ref_pad], rtol, atol)
        for g_no, g in enumerate(groups):
            got, want = set(row_i[g].tolist()), set(ref_i[g].tolist())
            if g_no < len(groups) - 1:
                assert got == want, f"indices differ in tie group {g}; {where}"
        if full_dist is not None:
            for j in np.flatnonzero(~pad):
                true = float(full_dist[q, row_i[j]])
                assert _close(row_d[j], true, rtol, atol), (
                    f"index {row_i[j]} at {j} is at distance {true}, not {row_d[j]}; {where}"
                )
        if groups:
            below = slice(0, groups[-1].start)
            assert set(row_i[below].tolist()) == set(ref_i[below].tolist()), (
                f"indices strictly below the last tie group differ; {where}"
            )


class StoreMachine(RuleBasedStateMachine):
    """A Hypothesis state machine over one store directory: a writer and a reader, both
    closed and the directory removed at teardown."""

    prefix = "mmfs-machine-"

    def __init__(self) -> None:
        super().__init__()
        self.path = tempfile.mkdtemp(prefix=self.prefix)
        self.store: mmfs.Store | None = None
        self.reader: mmfs.Store | None = None

    def teardown(self) -> None:
        for s in (self.reader, self.store):
            if s is not None:
                with contextlib.suppress(Exception):
                    s.close()
        shutil.rmtree(self.path, ignore_errors=True)

    @property
    def writer(self) -> mmfs.Store:
        assert self.store is not None
        return self.store
