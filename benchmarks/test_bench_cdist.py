"""cdist, float32 (1,000 x 128) against (100,000 x 128) at full size, every metric.

Peers in the same run: scipy.spatial.distance.cdist for every metric (timed on a slice of
XA's rows and extrapolated, see conftest.py), scikit-learn's pairwise_distances for
euclidean and cosine, numpy ``-(A @ B.T)`` for inner_product.  hamming and jaccard run on
boolean data of the same shape (``X > 0``).

Targets (issue): mmfs >= 3x faster than scipy for every metric; at least as fast as
scikit-learn for euclidean and cosine.  scipy has no inner-product metric: numpy's BLAS
product (which mmfs does not use, for determinism) is reported as the floor instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from peers import cdist_group, run_mmfs, run_scipy, run_sklearn

import mmfs

METRICS = list(mmfs.METRICS)
SKLEARN = ("euclidean", "cosine")
BOOLEAN = ("hamming", "jaccard")

# Peers first, mmfs last in each group, so mmfs's extra_info carries the ratios.
CASES = []
for _metric in METRICS:
    CASES.append((_metric, "numpy" if _metric == "inner_product" else "scipy"))
    if _metric in SKLEARN:
        CASES.append((_metric, "sklearn"))
    CASES.append((_metric, "mmfs"))


def _kwargs(metric: str, data: Any) -> dict[str, Any]:
    if metric == "minkowski":
        return {"p": 3}
    if metric == "seuclidean":
        return {"V": data.V}
    if metric == "mahalanobis":
        return {"VI": data.VI}
    return {}


def _inputs(metric: str, data: Any) -> tuple[np.ndarray, np.ndarray]:
    if metric in BOOLEAN:
        return data.Abool, data.Bbool
    return data.A, data.B


@pytest.mark.parametrize(("metric", "impl"), CASES, ids=[f"{m}-{i}" for m, i in CASES])
def test_cdist(benchmark, harness, sizes, cdist_data, metric: Any, impl: str) -> None:
    A, B = _inputs(metric, cdist_data)
    kw = _kwargs(metric, cdist_data)
    if impl == "mmfs":
        run_mmfs(benchmark, harness, A, B, metric, **kw)
    elif impl == "numpy":
        # scipy has no inner-product metric; numpy's BLAS product is the floor to report.
        out = harness.run(benchmark, cdist_group(A, B, metric), "numpy", lambda: -(A @ B.T))
        np.testing.assert_allclose(mmfs.cdist(A[:4], B, metric), out[:4], rtol=1e-5, atol=1e-4)
    elif impl == "sklearn":
        run_sklearn(benchmark, harness, A, B, metric)
    else:
        run_scipy(benchmark, harness, A, B, metric, sizes.scipy_rows[metric], **kw)
