"""Similarity search (issue 8): LSH codes, the scan, the re-rank, and the group API
against numpy / mmfs.knn / scipy references."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import mmfs
from mmfs._kernels import _lsh
from mmfs.errors import CorruptStoreError, DimensionError, NotFoundError, ParameterError
from mmfs.index import codes_of, projections
from mmfs.index.lsh import IndexDef, auto_table_bits
from mmfs.index.search import DEFAULT_CANDIDATES

# --------------------------------------------------------------------------- references


def ref_codes(X: np.ndarray, P: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The documented definition: float32 sums in order of j, bit b = s_b > t_b, packed
    little-endian into uint64 words."""
    X = np.asarray(X, dtype=np.float32)
    acc = np.zeros((X.shape[0], P.shape[1]), dtype=np.float32)
    for j in range(X.shape[1]):
        acc += X[:, j, None] * P[j]
    return np.packbits(acc > t, axis=1, bitorder="little").view("<u8").astype(np.uint64)


def ham(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.bitwise_xor(a, b))
    return np.unpackbits(x.view(np.uint8), axis=-1).sum(-1)


def ref_select(rows: np.ndarray, d: np.ndarray, n: int) -> np.ndarray:
    """The selection rule: all with d < T, then d == T in row order, n in all."""
    if rows.shape[0] <= n:
        return rows
    T = np.sort(d)[n - 1]
    below = rows[d < T]
    at = rows[d == T][: n - below.shape[0]]
    return np.sort(np.concatenate([below, at]))


def weighted(codes: np.ndarray, q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Quantised weighted Hamming distances as the kernel sums them: integer weights
    floor(w_b * (255 / max w) + 0.5) in double (0 where w_b is not > 0), summed over the
    differing bits and shifted right by the least s with (sum of the weights) >> s <=
    4095."""
    w = np.asarray(w, dtype=np.float64)
    wmax = float(np.max(w, initial=0.0, where=w > 0))
    unit = 255.0 / wmax if 0 < wmax < np.inf else 0.0
    wq = np.where(w > 0, np.floor(w * unit + 0.5), 0).astype(np.int64)
    total = int(wq.sum())
    bits = np.unpackbits(np.bitwise_xor(codes, q).view(np.uint8), axis=1, bitorder="little")
    score = bits.astype(np.int64) @ wq
    return score >> max(0, total.bit_length() - 12)


def ref_candidates(codes, q, allow, n1, n2, w=None):
    rows = np.arange(codes.shape[0])
    if allow is not None:
        rows = rows[allow]
    d1 = ham(codes[rows, :1], q[None, :1])
    keep = ref_select(rows, d1, n1)
    if keep.shape[0] > n2 and w is not None:
        keep = ref_select(keep, weighted(codes[keep], q, w), n2)
    elif keep.shape[0] > n2 and codes.shape[1] > 1:
        keep = ref_select(keep, ham(codes[keep], q[None, :]), n2)
    return keep[:n2]


def clustered(rng, n, dim, n_clusters, spread=0.35):
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    labels = rng.integers(0, n_clusters, n)
    return (centres[labels] + spread * rng.standard_normal((n, dim))).astype(np.float32), centres


def clustered_data(seed, n, dim, n_clusters, n_queries):
    """n clustered rows and n_queries held-out queries drawn the same way."""
    rng = np.random.default_rng(seed)
    X, centres = clustered(rng, n, dim, n_clusters)
    labels = rng.integers(0, n_clusters, n_queries)
    Q = (centres[labels] + 0.35 * rng.standard_normal((n_queries, dim))).astype(np.float32)
    return X, Q


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, truth, strict=True)]))


# --------------------------------------------------------------------------- codes


@pytest.mark.parametrize("bits", [64, 128, 320])
@pytest.mark.parametrize("dim", [1, 7, 64, 130])
def test_dense_codes_equal_reference(bits: int, dim: int) -> None:
    rng = np.random.default_rng(dim * 1000 + bits)
    X = rng.standard_normal((41, dim)).astype(np.float32)
    X[3] = 0.0
    X[5, 0] = np.nan
    P = projections(dim, bits, seed=3)
    t = rng.standard_normal(bits).astype(np.float32) * 0.1
    want = ref_codes(X, P, t)
    for nt in (1, 2):
        assert np.array_equal(codes_of(X, P, t, nt), want)
    sums = np.empty((X.shape[0], bits), dtype=np.float32)
    codes_of(X, P, t, 2, sums)
    acc = np.zeros_like(sums)
    for j in range(dim):
        acc += X[:, j, None] * P[j]
    assert np.array_equal(sums, acc, equal_nan=True)
    assert np.array_equal(codes_of(X.astype(np.float64), P, t, 1), want)
    assert np.array_equal(
        codes_of(X.astype(np.float16), P, t, 1), ref_codes(X.astype(np.float16), P, t)
    )
    zero = np.packbits(np.float32(0) > t, bitorder="little").view("<u8")
    assert np.array_equal(want[3], zero)
    assert not want[5].any()  # zero: 0 > t_b; NaN: none


def test_projections_are_numpy_gaussians() -> None:
    P = projections(5, 64, seed=11)
    assert P.dtype == np.float32
    assert P.shape == (5, 64)
    want = np.random.default_rng(11).standard_normal((5, 64), dtype=np.float32)
    assert np.array_equal(P, want)


def test_bit_order_is_little_endian_packbits() -> None:
    P = np.zeros((1, 128), dtype=np.float32)
    P[0, [0, 5, 64, 127]] = 1.0
    code = codes_of(np.ones((1, 1), np.float32), P, np.zeros(128, np.float32), 1)
    assert code[0, 0] == (1 << 0) | (1 << 5)
    assert code[0, 1] == (1 << 0) | (1 << 63)


def test_sparse_codes_equal_dense_reference() -> None:
    rng = np.random.default_rng(5)
    S = sp.csr_matrix(sp.random(60, 300, density=0.05, format="csr", rng=7, dtype=np.float32))
    S.data[:] = rng.standard_normal(S.data.shape[0]).astype(np.float32)
    P = projections(300, 192, seed=1)
    t = np.zeros(192, dtype=np.float32)
    want = ref_codes(S.toarray(), P, t)
    assert np.array_equal(codes_of(S, P, t, 2), want)
    sums = np.empty((60, 192), dtype=np.float32)
    codes_of(S, P, t, 1, sums)
    assert np.array_equal(np.packbits(sums > t, axis=1, bitorder="little").view("<u8"), want)
    # indices in descending order inside each row: sorted first, the same codes
    ptr = S.indptr
    rev = sp.csr_matrix(
        (np.concatenate([S.data[ptr[i] : ptr[i + 1]][::-1] for i in range(60)]),
         np.concatenate([S.indices[ptr[i] : ptr[i + 1]][::-1] for i in range(60)]),
         ptr), shape=S.shape)  # fmt: skip
    assert not rev.has_sorted_indices
    assert np.array_equal(codes_of(rev, P, t, 1), want)


# --------------------------------------------------------------------------- the scan


def _scan_setup(rng, n, W, seg_bits):
    codes = rng.integers(0, 2**63, (n, W), dtype=np.uint64)
    # cluster some codes near a query so the cap logic has work
    q = rng.integers(0, 2**63, W, dtype=np.uint64)
    near = rng.choice(n, n // 10, replace=False)
    flips = (
        rng.integers(0, 2**63, (near.shape[0], W), dtype=np.uint64)
        & rng.integers(0, 2**63, (near.shape[0], W), dtype=np.uint64)
        & rng.integers(0, 2**63, (near.shape[0], W), dtype=np.uint64)
    )
    codes[near] = q ^ flips
    seg = 1 << seg_bits
    n_seg = (n + seg - 1) // seg
    prefix = np.zeros(n_seg * seg, dtype=np.uint64)
    prefix[:n] = codes[:, 0]
    prefix = prefix.reshape(n_seg, seg)
    rest = np.zeros((n_seg * seg, max(W - 1, 1)), dtype=np.uint64)
    rest[:n, : W - 1] = codes[:, 1:]
    rest = rest.reshape(n_seg, seg, -1)
    pa = np.array([prefix[s].ctypes.data for s in range(n_seg)], dtype=np.intp)
    ra = (np.array([rest[s].ctypes.data for s in range(n_seg)], dtype=np.intp)
          if W > 1 else np.zeros(0, np.intp))  # fmt: skip
    return codes, q, prefix, rest, pa, ra


@pytest.mark.parametrize(("n", "W", "seg_bits", "n1", "n2"), [
    (5000, 4, 10, 300, 100), (5000, 4, 20, 300, 300), (3000, 1, 8, 50, 50),
    (257, 2, 6, 1000, 500), (9000, 3, 12, 2000, 60), (1, 2, 4, 5, 5),
])  # fmt: skip
@pytest.mark.parametrize("filtered", [False, True])
def test_candidates_follow_the_selection_rule(n, W, seg_bits, n1, n2, filtered) -> None:
    rng = np.random.default_rng(n + W + n1)
    codes, q, _prefix, _rest, pa, ra = _scan_setup(rng, n, W, seg_bits)
    allow = rng.random(n) < 0.3 if filtered else None
    bitmap = np.zeros(0, np.uint64)
    if allow is not None:
        padded = np.zeros(((n + 63) // 64) * 64, dtype=bool)
        padded[:n] = allow
        bitmap = np.packbits(padded, bitorder="little").view("<u8").astype(np.uint64)
    want = ref_candidates(codes, q, allow, n1, n2)
    for portable in (False, True):
        for nt in (1, 2):
            out = np.full((3, n2), -7, dtype=np.int64)
            counts = np.zeros(3, dtype=np.int64)
            qs = np.stack([q, q, q])
            assert (
                _lsh.candidates(pa, ra, seg_bits, n, qs, bitmap, n1, out, counts, nt, portable) == 0
            )
            for i in range(3):
                assert np.array_equal(out[i, : counts[i]], want)
    # stage two by weighted Hamming distance
    w = rng.random(64 * W).astype(np.float32)
    w[::7] = 0.0
    want = ref_candidates(codes, q, allow, n1, n2, w.astype(np.float64))
    for nt in (1, 2):
        out = np.full((2, n2), -7, dtype=np.int64)
        counts = np.zeros(2, dtype=np.int64)
        qs, ws = np.stack([q, q]), np.stack([w, w])
        assert _lsh.candidates(pa, ra, seg_bits, n, qs, bitmap, n1, out, counts, nt, False, ws) == 0
        for i in range(2):
            assert np.array_equal(out[i, : counts[i]], want)


def test_candidates_with_ties_keep_lowest_rows() -> None:
    codes = np.zeros((700, 2), dtype=np.uint64)  # every distance ties
    q = np.zeros(2, dtype=np.uint64)
    pa = np.array([codes[:, 0].copy().ctypes.data], np.intp)
    prefix = codes[:, 0].copy()
    rest = codes[:, 1:].copy()
    pa = np.array([prefix.ctypes.data], np.intp)
    ra = np.array([rest.ctypes.data], np.intp)
    out = np.empty((1, 40), np.int64)
    counts = np.empty(1, np.int64)
    _lsh.candidates(pa, ra, 12, 700, q[None], np.zeros(0, np.uint64), 100, out, counts, 1)
    assert counts[0] == 40
    assert np.array_equal(out[0], np.arange(40))


def test_rerank_equals_numpy() -> None:
    rng = np.random.default_rng(2)
    n, d = 500, 24
    X = rng.standard_normal((n, d)).astype(np.float32)
    rec = np.zeros((n, 16 + 4 * d), dtype=np.uint8)
    slots = rng.permutation(n).astype(np.int64)
    rec[:, :8] = slots.view(np.uint8).reshape(n, 8)
    rec[:, 16:] = X.view(np.uint8).reshape(n, 4 * d)
    Q = rng.standard_normal((3, d)).astype(np.float32)
    cand = np.stack([rng.choice(n, 100, replace=False) for _ in range(3)]).astype(np.int64)
    counts = np.array([100, 37, 0], dtype=np.int64)
    for metric in ("euclidean", "cosine", "inner_product", "cityblock"):
        k = 7
        hd = np.full((3, k), np.nan)
        hi = np.full((3, k), np.iinfo(np.int64).max, np.int64)
        hn = np.zeros(3, np.int64)
        from mmfs._kernels._dense import METRIC_CODES

        _lsh.rerank(cand, counts, np.array([rec.ctypes.data], np.intp), 20, rec.shape[1], 0, 16,
                    METRIC_CODES[metric], 2.0, np.empty(0), Q, hd, hi, hn, 2)  # fmt: skip
        for i in range(3):
            rows = cand[i, : counts[i]]
            assert hn[i] == min(k, counts[i])
            if not counts[i]:
                continue
            dist = mmfs.cdist(Q[i : i + 1], X[rows], metric)[0].astype(np.float64)
            order = np.lexsort((slots[rows], dist))[:k]
            got = np.lexsort((hi[i, : hn[i]], hd[i, : hn[i]]))
            assert np.array_equal(hi[i, got], slots[rows][order])
            np.testing.assert_allclose(hd[i, got], dist[order], rtol=1e-6)


# --------------------------------------------------------------------------- the group API


@pytest.fixture(scope="module")
def data():
    return clustered_data(0, 6000, 24, 60, 40)


def _store(tmp_path, X, keys=None, schema=None, **kw):
    st = mmfs.open(str(tmp_path / "s"), **kw)
    g = st.create_group("items", key="id", schema=schema or {"emb": mmfs.dense(X.shape[1])})
    keys = np.arange(X.shape[0], dtype=np.int64) * 7 if keys is None else keys
    g.write(keys, {"emb": X})
    st.commit("load")
    return st, g, keys


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "inner_product"])
def test_lsh_recall_on_clustered_data(tmp_path, data, metric) -> None:
    X, Q = data
    st, g, keys = _store(tmp_path, X)
    g.create_index("emb", "lsh", metric)
    st.commit("index")
    got, dist = g.search("emb", Q, k=10)
    idx, _want_d = mmfs.knn(X, Q, 10, metric)
    assert got.shape == (40, 10)
    assert dist.shape == (40, 10)
    assert recall(got, keys[idx]) >= 0.95
    # distances are exact for what is found, and sorted
    assert np.all(np.diff(dist, axis=1) >= 0)
    ev = g.evaluate_index("emb", Q, 10)
    assert ev["recall"] >= 0.95
    assert ev["kind"] == "lsh"
    assert ev["candidates"] == DEFAULT_CANDIDATES
    st.close()


def test_exact_kind_equals_knn(tmp_path, data) -> None:
    X, Q = data
    st, g, keys = _store(tmp_path, X)
    for metric in ("euclidean", "cosine", "cityblock"):
        got, dist = g.search("emb", Q, k=5, metric=metric)  # no index: exact
        idx, want = mmfs.knn(X, Q, 5, metric)
        assert np.array_equal(got, keys[idx])
        assert np.array_equal(dist, want.astype(np.float64))
    g.create_index("emb", "exact", "euclidean")
    st.commit()
    got, dist = g.search("emb", Q[0], k=5)
    idx, want = mmfs.knn(X, Q[0], 5)
    assert np.array_equal(got, keys[idx[0]])
    assert np.array_equal(dist, want[0])
    ev = g.evaluate_index("emb", Q, 5)
    assert ev["recall"] == 1.0
    assert ev["candidates"] is None
    st.close()


@pytest.mark.parametrize("metric", ["euclidean", "cityblock", "chebyshev", "minkowski"])
def test_kdtree_equals_exact(tmp_path, data, metric) -> None:
    X, Q = data
    X = X[:, :6].copy()
    Q = Q[:, :6].copy()
    st, g, keys = _store(tmp_path, X)
    g.create_index("emb", "kdtree", metric)
    st.commit()
    kw: dict[str, Any] = {"p": 3.0} if metric == "minkowski" else {}
    got, dist = g.search("emb", Q, k=8, **kw)
    idx, want = mmfs.knn(X, Q, 8, metric, **kw)
    assert np.array_equal(got, keys[idx])
    np.testing.assert_allclose(dist, want, rtol=1e-5)
    r = float(np.median(want[:, -1]))
    gk, _gd = g.search_radius("emb", Q, r, **kw)
    ridx, _rd = mmfs.radius(X, Q, r, metric, **kw)
    for q in range(Q.shape[0]):
        assert np.array_equal(np.sort(gk[q]), np.sort(keys[ridx[q]]))
    # a filter builds a tree over the filtered keys
    fk, _ = g.search("emb", Q[0], k=3, filter=keys[::3], **kw)
    sub = np.arange(X.shape[0])[::3]
    si, _ = mmfs.knn(X[sub], Q[0], 3, metric, **kw)
    assert np.array_equal(fk, keys[sub[si[0]]])
    st.close()


def test_inserts_updates_versions_and_filters(tmp_path, data) -> None:
    X, Q = data
    st, g, keys = _store(tmp_path, X)
    g.create_index("emb", "lsh", "euclidean")
    v_index = st.commit("index")
    # inserts: new keys are searchable after the commit
    rng = np.random.default_rng(9)
    new = (X[:50] + 0.01 * rng.standard_normal((50, 24))).astype(np.float32)
    new_keys = np.arange(50, dtype=np.int64) + 10**9
    g.write(new_keys, {"emb": new})
    v_ins = st.commit("insert")
    got, dist = g.search("emb", new[7], k=1)
    assert got[0] == new_keys[7]
    assert dist[0] == 0.0
    # updates: key 0 moves far away; its old vector no longer finds it
    moved = X[:1] + 50.0
    g.write(keys[:1], {"emb": moved})
    v_upd = st.commit("update")
    got, _ = g.search("emb", X[0], k=3)
    assert keys[0] not in got
    got, dist = g.search("emb", moved[0], k=1)
    assert got[0] == keys[0]
    assert dist[0] == 0.0
    # the pinned versions search the vectors they had
    got, _ = g.search("emb", X[0], k=1, version=v_ins)
    assert got[0] == keys[0]
    got, _ = g.search("emb", new[7], k=1, version=v_index)
    assert got[0] != new_keys[7]
    # ... and equal exact search at that version
    all_x = np.vstack([X, new])
    all_k = np.concatenate([keys, new_keys])
    for v, (xs, ks) in {v_index: (X, keys), v_ins: (all_x, all_k)}.items():
        got, _ = g.search("emb", Q, k=10, version=v)
        idx, _ = mmfs.knn(xs, Q, 10)
        assert recall(got, ks[idx]) >= 0.95
    # filters: a key list, and a boolean mask in key order
    allowed = all_k[::4]
    got, _ = g.search("emb", Q, k=5, filter=allowed)
    assert np.isin(got, allowed).all()
    mask = np.zeros(len(g), dtype=bool)
    mask[::4] = True
    cur = all_x.copy()
    cur[0] = moved[0]
    sel = np.flatnonzero(mask)
    got2, _d2 = g.search("emb", Q, k=5, filter=mask)
    idx, _want = mmfs.knn(cur[sel], Q, 5)
    assert recall(got2, all_k[sel][idx]) >= 0.95
    with pytest.raises(DimensionError):
        g.search("emb", Q, filter=np.ones(3, dtype=bool))
    assert v_upd > v_ins
    st.close()


def test_edges(tmp_path) -> None:
    st = mmfs.open(str(tmp_path / "s"))
    g = st.create_group(
        "items", key="id", schema={"emb": mmfs.dense(8), "x": mmfs.scalar("float32")}
    )
    g.create_index("emb", "lsh", "cosine", bits=64)
    st.commit("empty")
    keys, dist = g.search("emb", np.ones(8), k=5)
    assert keys.shape == (0,)
    assert dist.shape == (0,)
    keys, dist = g.search("emb", np.ones((3, 8)), k=5)
    assert keys.shape == (3, 0)
    X = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    g.write([1, 2, 3, 4], {"emb": X, "x": np.zeros(4, np.float32)})
    st.commit()
    keys, dist = g.search("emb", X[2], k=10)  # k > rows: k shrinks
    assert keys.shape == (4,)
    assert keys[0] == 3
    keys, dist = g.search("emb", np.zeros(8), k=2)  # a zero query: cosine distance 1
    assert np.array_equal(dist, [1.0, 1.0])
    assert np.array_equal(keys, [1, 2])
    with pytest.raises(DimensionError):
        g.search("emb", np.ones(9))
    with pytest.raises(ParameterError):
        g.search("x", np.ones(8))
    with pytest.raises(ParameterError):
        g.search("nope", np.ones(8))
    with pytest.raises(ParameterError):
        g.search("emb", np.ones(8), k=0)
    with pytest.raises(ParameterError):
        g.search_radius("emb", np.ones(8), -1.0)
    with pytest.raises(ParameterError):
        g.search("emb", np.ones(8), metric="mahalanobis")
    for bad in ({"kind": "ivf"}, {"metric": "cityblock"}, {"bits": 100}, {"bits": 0},
                {"seed": -1}, {"candidates": 0}):  # fmt: skip
        with pytest.raises(ParameterError):
            g.create_index("emb", **{"kind": "lsh", "metric": "cosine", **bad})
    with pytest.raises(ParameterError):
        g.create_index("x")
    with pytest.raises(ParameterError):
        g.create_index("emb", "kdtree", "cosine")
    g.write([5], {"emb": X[:1], "x": np.zeros(1, np.float32)})
    with pytest.raises(ParameterError, match="uncommitted"):
        g.create_index("emb")
    st.rollback()
    with pytest.raises(NotFoundError):
        g.drop_index("x")
    st.close()


def test_int8_and_bool_features_refused(tmp_path) -> None:
    st = mmfs.open(str(tmp_path / "s"))
    g = st.create_group("items", key="id", schema={
        "q": mmfs.dense(4, dtype="int8"), "b": mmfs.dense(4, dtype="bool")})  # fmt: skip
    with pytest.raises(ParameterError, match="int8"):
        g.create_index("q", "lsh")
    with pytest.raises(ParameterError):
        g.create_index("b", "exact")
    g.create_index("q", "exact", "euclidean")
    st.close()


def test_custom_metric_reranks(tmp_path, data) -> None:
    X, Q = data
    st, g, _keys = _store(tmp_path, X)
    g.create_index("emb", "lsh", "euclidean")
    st.commit()

    def l1(a, b):  # a custom metric takes two blocks of rows (mmfs.cdist)
        return np.abs(a[:, None, :].astype(np.float64) - b[None, :, :]).sum(-1)

    a, da = g.search("emb", Q[:5], k=5, metric=l1)
    b, db = g.search("emb", Q[:5], k=5, metric="cityblock")
    assert np.array_equal(a, b)
    np.testing.assert_allclose(da, db, rtol=1e-5)
    st.close()


def test_sparse_and_float16_features(tmp_path) -> None:
    rng = np.random.default_rng(4)
    n, dim = 3000, 2000
    groups = rng.integers(0, 30, n)
    support = [rng.choice(dim, 40, replace=False) for _ in range(30)]
    rows, cols, vals = [], [], []
    for i in range(n):
        c = np.concatenate([rng.choice(support[groups[i]], 30, replace=False), rng.choice(dim, 5)])
        c = np.unique(c)
        rows += [i] * len(c)
        cols += c.tolist()
        vals += rng.normal(1.0, 0.3, len(c)).tolist()
    S = sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(n, dim))
    st = mmfs.open(str(tmp_path / "s"))
    g = st.create_group(
        "docs", key="id", schema={"tf": mmfs.sparse(dim), "h": mmfs.dense(16, dtype="float16")}
    )
    H = rng.standard_normal((n, 16)).astype(np.float16)
    g.write(np.arange(n), {"tf": S, "h": H})
    st.commit()
    g.create_index("tf", "lsh", "cosine", bits=128)
    g.create_index("h", "lsh", "euclidean")
    st.commit()
    Qs = S[:20]
    got, dist = g.search("tf", Qs, k=10)
    idx, _ = mmfs.knn(S, Qs, 10, "cosine")
    assert recall(got, idx) >= 0.9
    assert np.all(got[:, 0] == np.arange(20))
    assert np.allclose(dist[:, 0], 0.0, atol=1e-6)
    got, dist = g.search("h", H[:5].astype(np.float32), k=1)
    assert np.array_equal(got, np.arange(5)[:, None])
    assert np.all(dist == 0.0)
    # the codes stored for the sparse rows are the reference codes
    idx_def = g.indexes()["tf"]
    assert idx_def.table_bits == 0  # sparse features scan by default: see docs/index.md
    assert g.indexes()["h"].table_bits == auto_table_bits(n)
    P, t = st._files("docs").projection("tf", idx_def, dim)
    prefix = st._files("docs").lsh_files("tf", idx_def).prefix.segment(0)
    assert np.array_equal(prefix[:n], ref_codes(S.toarray(), P, t)[:, 0])
    st.close()


def test_reopen_uses_the_stored_index(tmp_path, data) -> None:
    X, Q = data
    st, g, _keys = _store(tmp_path, X)
    g.create_index("emb", "lsh", "cosine", seed=5, candidates=300)
    st.commit()
    want = g.search("emb", Q, k=10)
    st.close()
    ro = mmfs.open(str(tmp_path / "s"), mode="r")
    gi = ro["items"]
    n = X.shape[0]
    assert gi.indexes()["emb"] == IndexDef("lsh", "cosine", 256, 5, 2, n,
                                           gi.indexes()["emb"].created_ns, 300,
                                           auto_table_bits(n), n, 2)  # fmt: skip
    got = gi.search("emb", Q, k=10)
    assert np.array_equal(got[0], want[0])
    assert np.array_equal(got[1], want[1])
    one = gi.search("emb", Q, k=10, n_threads=1)
    assert np.array_equal(one[0], want[0])
    files = os.listdir(tmp_path / "s" / "groups" / "g0")
    assert any(f.startswith("lshp-emb-") for f in files)
    ro.close()


def test_drop_rollback_and_recreate(tmp_path, data) -> None:
    X, _Q = data
    st, g, keys = _store(tmp_path, X[:500])
    g.create_index("emb", "lsh")
    st.rollback()
    assert g.indexes() == {}
    g.create_index("emb", "lsh", bits=64)
    st.commit()
    first = g.indexes()["emb"]
    g.create_index("emb", "lsh", bits=128)  # again: new files, by a new generation
    st.commit()
    second = g.indexes()["emb"]
    assert second.gen > first.gen
    assert second.bits == 128
    directory = tmp_path / "s" / "groups" / "g0"
    g.drop_index("emb")
    st.commit()
    g.write([10**6], {"emb": X[:1]})
    st.commit()
    assert not [f for f in os.listdir(directory) if f.startswith("lsh")]
    got, _ = g.search("emb", X[3], k=1)  # exact without an index
    assert got[0] == keys[3]
    st.close()


def test_str_keys(tmp_path, data) -> None:
    X, _Q = data
    names = np.array([f"item-{i}" for i in range(500)])
    st = mmfs.open(str(tmp_path / "s"))
    g = st.create_group("items", key="name", key_type="str", schema={"emb": mmfs.dense(24)})
    g.write(names, {"emb": X[:500]})
    g2 = st["items"]
    st.commit()
    g2.create_index("emb", "lsh", "euclidean")
    st.commit()
    got, _ = g2.search("emb", X[:3], k=1)
    assert got[:, 0].tolist() == ["item-0", "item-1", "item-2"]
    got, _ = g2.search("emb", X[0], k=2, filter=["item-5", "item-9", "nope"])
    assert set(got.tolist()) == {"item-5", "item-9"}
    st.close()


def test_damaged_index_entry_is_refused(tmp_path, data) -> None:
    from mmfs.storage.fileformat import read_json_file, write_json_file

    X, _ = data
    st, g, _ = _store(tmp_path, X[:100])
    g.create_index("emb", "lsh")
    st.commit()
    good = g.indexes()["emb"].to_json()
    st.close()
    with pytest.raises(CorruptStoreError):
        IndexDef.from_json({"kind": "lsh"}, None, "test")
    for bad in ({"bits": 65}, {"kind": "annoy"}, {"n_rows": -1}, {"seed": "0"},
                {"candidates": True}):  # fmt: skip
        with pytest.raises(CorruptStoreError):
            IndexDef.from_json({**good, **bad}, mmfs.dense(24), "test")
    path = str(tmp_path / "s" / "manifest-000000000002.mmfs")
    doc = read_json_file(path, "MNFT")
    for bad in ({"emb": {**good, "n_rows": 99}}, {"nope": good}, []):
        broken = {**doc, "groups": {**doc["groups"]}}
        broken["groups"]["items"] = {**doc["groups"]["items"], "indexes": bad}
        write_json_file(path, broken, "MNFT")
        with pytest.raises(CorruptStoreError):
            mmfs.open(str(tmp_path / "s"), mode="r")


def test_search_radius_exact_and_lsh(tmp_path, data) -> None:
    X, Q = data
    st, g, keys = _store(tmp_path, X)
    _, d10 = mmfs.knn(X, Q, 10)
    r = float(np.median(d10[:, -1]))
    ridx, rd = mmfs.radius(X, Q, r)
    gk, gd = g.search_radius("emb", Q, r)  # no index: exact
    for q in range(Q.shape[0]):
        assert np.array_equal(gk[q], keys[ridx[q]])
        assert np.array_equal(gd[q], rd[q].astype(np.float64))
    one_k, one_d = g.search_radius("emb", Q[0], r)
    assert np.array_equal(one_k, gk[0])
    assert np.array_equal(one_d, gd[0])
    g.create_index("emb", "lsh", "euclidean")
    st.commit()
    lk, ld = g.search_radius("emb", Q, r, candidates=500)
    found = sum(len(a) for a in lk)
    assert found >= 0.95 * sum(len(a) for a in gk)
    for q in range(Q.shape[0]):
        assert set(lk[q].tolist()) <= set(gk[q].tolist())
        assert np.all(ld[q] <= r)
    # a filter that leaves nothing
    ek, ed = g.search_radius("emb", Q[:2], r, filter=np.zeros(len(g), dtype=bool))
    assert [a.shape for a in ek] == [(0,), (0,)]
    assert [a.shape for a in ed] == [(0,), (0,)]
    st.close()


def test_durable_store_and_argument_checks(tmp_path, data) -> None:
    X, _Q = data
    st, g, keys = _store(tmp_path, X[:300], durability="commit", memory_budget="1GiB")
    g.create_index("emb", "kdtree", "euclidean")
    st.commit()
    got, _ = g.search("emb", X[:2], k=1)
    assert np.array_equal(got[:, 0], keys[:2])
    g.create_index("emb", "lsh", "cosine", candidates=50)
    g.write([10**7], {"emb": X[:1] * 2})
    st.commit()
    got, _ = g.search("emb", X[1], k=1, candidates=20)
    assert got[0] == keys[1]
    with pytest.raises(ParameterError):
        g.search("emb", [["a"] * 24])
    with pytest.raises(ParameterError):
        g.search("emb", np.array(["x"] * 24))
    with pytest.raises(DimensionError):
        g.search("emb", np.ones((2, 2, 24)))
    with pytest.raises(ParameterError):
        g.search("emb", X[0], filter=[object()])
    with pytest.raises(ParameterError):
        g.search("emb", X[0], candidates=-3)
    with pytest.raises(ParameterError):
        g.create_index("emb", "exact", metric=3)  # type: ignore[arg-type]
    st2 = mmfs.open(str(tmp_path / "t"))
    sg = st2.create_group("s", key="id", schema={"v": mmfs.sparse(10)})
    with pytest.raises(ParameterError, match="kdtree"):
        sg.create_index("v", "kdtree", "euclidean")
    st2.close()
    st.close()


def test_damaged_projection_file(tmp_path, data) -> None:
    from mmfs.storage.fileformat import write_array_file

    X, Q = data
    st, g, _ = _store(tmp_path, X[:100])
    idx = g.create_index("emb", "lsh")
    st.commit()
    st.close()
    path = tmp_path / "s" / "groups" / "g0" / f"lshp-emb-{idx.gen:012d}.mmfs"
    write_array_file(str(path), np.zeros((3, 64), np.float32), "META")
    ro = mmfs.open(str(tmp_path / "s"), mode="r")
    with pytest.raises(CorruptStoreError):
        ro["items"].search("emb", Q[0])
    ro.close()


def test_uncommitted_index_files_are_removed_on_reopen(tmp_path, data) -> None:
    X, _ = data
    st, g, _ = _store(tmp_path, X[:200])
    g.create_index("emb", "lsh", bits=128)
    st.commit()
    idx = g.indexes()["emb"]
    g.write([10**6], {"emb": X[:1]})  # codes written beyond the committed count
    g2 = st["items"]
    st.close()  # never committed
    directory = tmp_path / "s" / "groups" / "g0"
    st = mmfs.open(str(tmp_path / "s"))  # the writer's recovery trims what was not committed
    assert st["items"].indexes()["emb"] == idx
    del g2
    st.rollback()
    g = st["items"]
    g.create_index("emb", "lsh", bits=64)  # staged at a new generation, then abandoned
    staged = g.indexes()["emb"].gen
    st.close()
    assert any(f"-{staged:012d}" in f or f"@{staged:012d}" in f for f in os.listdir(directory))
    st = mmfs.open(str(tmp_path / "s"))
    left = os.listdir(directory)
    assert not any(f"-{staged:012d}" in f or f"@{staged:012d}" in f for f in left)
    got, dist = st["items"].search("emb", X[3], k=1)
    assert got[0] == 3 * 7
    assert dist[0] == 0.0
    st.close()


def test_versions_before_alter_group_are_searched_exactly(tmp_path, data) -> None:
    X, Q = data
    st, g, keys = _store(tmp_path, X[:300])
    v_old = st.commit("before")
    st.alter_group("items", add={"n": mmfs.scalar("float32")})
    st.commit("altered")
    g = st["items"]
    assert g.indexes() == {}  # alter_group drops the indexes: create them again
    g.create_index("emb", "lsh", "euclidean", bits=64)
    st.commit("index")
    got, dist = g.search("emb", Q[:3], k=4, version=v_old)
    idx, want = mmfs.knn(X[:300], Q[:3], 4)
    assert np.array_equal(got, keys[idx])
    assert np.array_equal(dist, want.astype(np.float64))
    st.close()


def test_another_process_searches_the_stored_index(tmp_path, data) -> None:
    import subprocess
    import sys

    X, Q = data
    st, g, _ = _store(tmp_path, X[:2000])
    g.create_index("emb", "lsh", "cosine", bits=128)
    st.commit()
    want_keys, want_dist = g.search("emb", Q[:5], k=5)
    np.save(tmp_path / "q.npy", Q[:5])
    script = (
        "import sys, numpy as np, mmfs\n"
        "with mmfs.open(sys.argv[1], mode='r') as st:\n"
        "    k, d = st['items'].search('emb', np.load(sys.argv[2]), k=5)\n"
        "    np.save(sys.argv[3], k); np.save(sys.argv[4], d)\n"
    )
    out_k, out_d = tmp_path / "k.npy", tmp_path / "d.npy"
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "s"), str(tmp_path / "q.npy"),
         str(out_k), str(out_d)],
        check=True, timeout=120,
    )  # fmt: skip
    assert np.array_equal(np.load(out_k), want_keys)
    assert np.array_equal(np.load(out_d), want_dist)
    st.close()


@pytest.mark.parametrize("weighted_stage", [False, True])
def test_a_batch_shares_its_scan_with_the_same_answers(weighted_stage: bool) -> None:
    rng = np.random.default_rng(12)
    n, W = 20000, 4
    codes, _q, _prefix, _rest, pa, ra = _scan_setup(rng, n, W, 12)
    qs = codes[rng.choice(n, 21, replace=False)] ^ (
        rng.integers(0, 2**63, (21, W), dtype=np.uint64)
        & rng.integers(0, 2**63, (21, W), dtype=np.uint64)
        & rng.integers(0, 2**63, (21, W), dtype=np.uint64)
    )
    w = rng.random((21, 64 * W)).astype(np.float32) if weighted_stage else None
    bitmap = np.zeros(0, np.uint64)
    batch = np.empty((21, 150), np.int64)
    bc = np.empty(21, np.int64)
    _lsh.candidates(pa, ra, 12, n, qs, bitmap, 600, batch, bc, 2, False, w)
    for i in range(21):
        one = np.empty((1, 150), np.int64)
        oc = np.empty(1, np.int64)
        wi = None if w is None else w[i : i + 1]
        _lsh.candidates(pa, ra, 12, n, qs[i : i + 1], bitmap, 600, one, oc, 1, False, wi)
        assert bc[i] == oc[0] == 150
        assert np.array_equal(batch[i], one[0])
        want = ref_candidates(
            codes, qs[i], None, 600, 150, None if w is None else w[i].astype(np.float64)
        )
        assert np.array_equal(one[0], want)


def test_create_again_before_commit_replaces_the_files(tmp_path, data) -> None:
    X, _ = data
    st, g, _keys = _store(tmp_path, X[:400])
    g.create_index("emb", "lsh", "cosine", bits=64, seed=1)
    g.write([10**6], {"emb": X[:1] + 1})  # coded with the first definition's projections
    st.rollback()
    g.create_index("emb", "lsh", "cosine", bits=128, seed=2)  # the same generation
    g.write([10**6], {"emb": X[:1] + 1})
    st.commit()
    idx = g.indexes()["emb"]
    files = st._files("items")
    P, t = files.projection("emb", idx, 24)
    assert np.array_equal(P, projections(24, 128, 2))
    lsh = files.lsh_files("emb", idx)
    assert lsh.rest is not None
    stored = np.column_stack([lsh.prefix.segment(0)[:401], lsh.rest.segment(0)[:401]])
    assert np.array_equal(stored, ref_codes(np.vstack([X[:400], X[:1] + 1]), P, t))
    got, dist = g.search("emb", X[0] + 1, k=1)
    assert got[0] == 10**6
    assert dist[0] == 0.0
    st.close()
