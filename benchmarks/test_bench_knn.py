"""Exact k-NN, k=10, euclidean, float32 data of (1,000,000 x 128) at full size (512 MB).

One query (memory bound), peers in the same run:

* the memory-bandwidth floor: ``mmfs._kernels._dense.stream_sum(data.ravel(), threads)``,
  a C loop that only reads the data once, on the same number of threads as mmfs.knn;
* faiss ``IndexFlatL2.search`` (the index, a copy of the data, is built outside the timing);
* numpy: ``|x|^2 - 2 x.q`` (data norms precomputed outside the timing, as an index would),
  ``argpartition`` for the k smallest, then sorted.

1,000 queries (compute bound): faiss ``IndexFlatL2.search`` against ``mmfs.knn``.

Peak memory of one extra call is recorded next to the time (STYLE item 8).

Targets (issue): mmfs <= 1.1x the floor, and faster than faiss.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import mmfs
from mmfs._kernels._dense import stream_sum

K = 10
ONE = ["floor", "faiss", "numpy", "mmfs"]  # mmfs last: its extra_info carries the ratios
MANY = ["faiss", "mmfs"]
TARGET_ONE = {"floor": "floor", "faiss": "faster", "numpy": None}


@pytest.fixture(scope="module")
def faiss_index(knn_data) -> Any:
    import faiss  # the bench dependency group installs it

    index = faiss.IndexFlatL2(knn_data.data.shape[1])
    index.add(knn_data.data)
    return index


@pytest.fixture(scope="module")
def data_sq_norms(knn_data) -> np.ndarray:
    return np.einsum("ij,ij->i", knn_data.data, knn_data.data)


def numpy_knn(data: np.ndarray, norms: np.ndarray, q: np.ndarray, k: int):
    """k nearest rows by squared distances from norms: argpartition, then sort the k."""
    d2 = norms - 2.0 * (data @ q)
    d2 += q @ q
    part = np.argpartition(d2, k)[:k]
    order = np.lexsort((part, d2[part]))
    idx = part[order]
    return idx, np.sqrt(np.maximum(d2[idx], 0.0))


def _check(dist: np.ndarray, ref: np.ndarray) -> None:
    """Same neighbours up to ties: the sorted distances agree (float32 rounding)."""
    np.testing.assert_allclose(np.asarray(dist, dtype=np.float64), ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("impl", ONE)
def test_knn_one_query(benchmark, harness, knn_data, request, impl: str) -> None:
    data, q = knn_data.data, knn_data.query
    group = f"knn k={K} 1 query vs {data.shape[0]}x{data.shape[1]}"
    ref = mmfs.knn(data, q, K)[1].astype(np.float64)
    fn: Any
    if impl == "floor":
        flat = data.ravel()
        threads = mmfs.effective_n_threads()
        fn = lambda: stream_sum(flat, threads)  # noqa: E731
        note = f"reads the data once, C loop on {threads} threads"
    elif impl == "faiss":
        index = request.getfixturevalue("faiss_index")
        fn = lambda: index.search(q, K)  # noqa: E731
        note = f"IndexFlatL2 (holds a {data.nbytes / 2**20:.0f} MiB copy of the data)"
    elif impl == "numpy":
        norms = request.getfixturevalue("data_sq_norms")
        fn = lambda: numpy_knn(data, norms, q[0], K)  # noqa: E731
        note = "matmul + argpartition, data norms precomputed"
    else:
        fn = lambda: mmfs.knn(data, q, K)  # noqa: E731
        note = ""
    out = harness.run(benchmark, group, impl, fn, target=TARGET_ONE.get(impl), note=note)
    harness.memory(benchmark, group, impl, fn)
    if impl == "faiss":
        _check(np.sqrt(np.maximum(out[0], 0)), ref)
    elif impl == "numpy":
        _check(out[1][None, :], ref)
    elif impl == "mmfs":
        assert out[0].shape == (1, K)


@pytest.mark.parametrize("impl", MANY)
def test_knn_many_queries(benchmark, harness, knn_data, request, impl: str) -> None:
    data, Q = knn_data.data, knn_data.queries
    group = f"knn k={K} {Q.shape[0]} queries vs {data.shape[0]}x{data.shape[1]}"
    if impl == "faiss":
        index = request.getfixturevalue("faiss_index")
        fn = lambda: index.search(Q, K)  # noqa: E731
        note = "IndexFlatL2"
    else:
        fn = lambda: mmfs.knn(data, Q, K)  # noqa: E731
        note = ""
    out = harness.run(benchmark, group, impl, fn, note=note)
    harness.memory(benchmark, group, impl, fn)
    if impl == "faiss":
        ref = mmfs.knn(data, Q[:20], K)[1].astype(np.float64)
        _check(np.sqrt(np.maximum(out[0][:20], 0)), ref)
