"""The cdist comparisons both cdist benchmark files run: mmfs, scikit-learn, and scipy
timed on a slice of rows (see conftest.py for the extrapolation).  Each checks that the
peer's answer matches mmfs's before the figure counts."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.distance import cdist as scipy_cdist
from sklearn.metrics import pairwise_distances

import mmfs


def cdist_group(A: np.ndarray, B: np.ndarray, metric: str) -> str:
    return f"cdist {A.shape[0]}x{B.shape[0]}x{A.shape[1]} {metric}"


def run_mmfs(benchmark, harness, A: np.ndarray, B: np.ndarray, metric: str, **kw: Any) -> None:
    group = cdist_group(A, B, metric)
    out = harness.run(benchmark, group, "mmfs", lambda: mmfs.cdist(A, B, metric, **kw))
    assert out.shape == (A.shape[0], B.shape[0])


def run_sklearn(benchmark, harness, A: np.ndarray, B: np.ndarray, metric: str) -> None:
    out = harness.run(
        benchmark,
        cdist_group(A, B, metric),
        "sklearn",
        lambda: pairwise_distances(A, B, metric=metric),
        target="as_fast",
    )
    np.testing.assert_allclose(mmfs.cdist(A[:4], B, metric), out[:4], rtol=1e-4, atol=1e-4)


def run_scipy(
    benchmark, harness, A: np.ndarray, B: np.ndarray, metric: Any, rows: int, **kw: Any
) -> None:
    rows = min(rows, A.shape[0])
    As = A[:rows]
    out = harness.run(
        benchmark,
        cdist_group(A, B, metric),
        "scipy",
        lambda: scipy_cdist(As, B, metric, **kw),
        target="3x",
        scale=(rows, A.shape[0], lambda: scipy_cdist(A[:0], B, metric, **kw)),
    )
    np.testing.assert_allclose(mmfs.cdist(As, B, metric, **kw), out, rtol=1e-4, atol=1e-5)
