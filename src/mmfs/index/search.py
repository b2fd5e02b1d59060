"""Searching a group's vector feature: ``FeatureGroup.search``, ``search_radius`` and
``evaluate_index`` are thin wrappers of the functions here.

Which rows are searched.  A version's rows are those holding a key's current value at
that version (``_Snapshot.slot_rows``: the page table for the newest version, the history search
"as of the end of time" for a pinned one), intersected with ``filter`` (a boolean mask in
the version's key order, or keys).  Superseded rows keep their codes in the arena, and a
bitmap over rows tells the scan to skip them; when every row is current and there is no
filter, there is no bitmap at all.

Results are keys and distances, (n_queries, k) for a batch or (k,) for one query, ordered
by distance, ties by slot (the order keys were first written), NaN last.  When fewer than
k rows can be searched, k shrinks to their number (a shape that never holds padding).

The index used is the one the group's newest definition has (an index created after a
version still searches that version: codes exist for every row).  Without one, search is
exact.  With an lsh index, any metric re-ranks the candidates (``metric=``), custom ones
included; the candidates themselves come from the index's own metric.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import scipy.sparse as sp

from mmfs._config import effective_n_threads
from mmfs._kernels import _lsh
from mmfs._validation import is_sparse
from mmfs.distance import DIRECT_METRICS, Metric, cdist, metric_weights, resolve_metric
from mmfs.errors import CorruptStoreError, DimensionError, ParameterError
from mmfs.index.lsh import KDTREE_METRICS, IndexDef, codes_of, is_vector, read_table
from mmfs.neighbors import _as_count, knn, radius
from mmfs.schema import Dense, Sparse

if TYPE_CHECKING:  # pragma: no cover
    from mmfs.group import FeatureGroup, _Snapshot

__all__ = ["evaluate", "search", "search_radius"]

#: rows re-ranked exactly (and buckets probed) per query by default; a scan of every
#: prefix keeps FIRST_STAGE times more in stage one (chosen on the benchmark of issue 8:
#: benchmarks/test_bench_index.py)
DEFAULT_CANDIDATES: Final = 700
FIRST_STAGE: Final = 4
_CHUNK: Final = 1 << 16  # rows gathered at a time by the exact search
_NO_SLOT: Final = np.iinfo(np.int64).max


# --------------------------------------------------------------------------- rows searched


def _bitmap(rows: np.ndarray, n_rows: int) -> np.ndarray:
    """One bit per row (bit r of word r // 64), set for ``rows``."""
    mask = np.zeros(((n_rows + 63) // 64) * 64, dtype=bool)
    mask[rows] = True
    return np.packbits(mask, bitorder="little").view("<u8").astype(np.uint64, copy=False)


def _filter_slots(group: FeatureGroup, snap: _Snapshot, flt: Any) -> np.ndarray:
    """The slots a ``filter`` names (sorted, unique).  A boolean filter has one entry
    per key of the version, in the order of ``keys()`` (deleted keys have none)."""
    n = snap.meta.n_slots
    arr = flt if isinstance(flt, np.ndarray) else None
    if arr is not None and arr.dtype == np.bool_:
        live = snap.live_slots()
        if arr.shape != live.shape:
            raise DimensionError(
                f"a boolean filter has one entry per key of the version searched "
                f"({live.shape[0]}), got shape {arr.shape}"
            )
        return live[np.flatnonzero(arr)]
    keys = [flt] if isinstance(flt, int | str | np.integer) else flt
    try:
        slots = snap.index.lookup(keys)
    except (TypeError, ValueError) as exc:
        raise ParameterError(
            f"filter must be a boolean mask or a list of keys of group {group.name!r}: {exc}"
        ) from None
    slots = slots[(slots >= 0) & (slots < n)]
    return np.unique(slots)


class _Searched:
    """The slots and rows one search covers, and the scan's bitmap."""

    def __init__(self, group: FeatureGroup, snap: _Snapshot, flt: Any) -> None:
        rows = snap.slot_rows()
        n_rows = snap.meta.n_rows
        if flt is None:
            slots = np.flatnonzero(rows >= 0)
        else:
            slots = _filter_slots(group, snap, flt)
            slots = slots[rows[slots] >= 0]
        self.slots = slots
        self.rows = rows[slots]
        self.n = slots.shape[0]
        self.n_rows = n_rows
        if flt is None and self.n == n_rows:
            self.allow = np.zeros(0, dtype=np.uint64)  # every row is current: no bitmap
        else:
            self.allow = _bitmap(self.rows, n_rows)


# --------------------------------------------------------------------------- queries


def _queries(queries: Any, ftype: Dense | Sparse, feature: str) -> tuple[Any, bool]:
    """Queries as a 2-D float array (or CSR for a sparse feature), and whether one query
    came as a 1-D vector."""
    single = False
    if is_sparse(queries):
        Q: Any = sp.csr_matrix(queries, dtype=np.float32)
    else:
        try:
            Q = np.asarray(queries)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"queries must be numbers: {exc}") from None
        if Q.dtype.kind not in "fiub":
            raise ParameterError(f"queries must be numbers, got dtype {Q.dtype}")
        if Q.ndim == 1:
            single = True
            Q = Q[None, :]
        if Q.ndim != 2:
            raise DimensionError(f"queries must be 1-D or 2-D, got shape {Q.shape}")
        Q = np.ascontiguousarray(Q, dtype=np.float32)
    if Q.shape[1] != ftype.dim:
        raise DimensionError(
            f"queries have {Q.shape[1]} dimensions but feature {feature!r} has {ftype.dim}"
        )
    return Q, single


def _metric(metric: Any, idx: IndexDef | None, kwargs: dict[str, Any]) -> Metric:
    """The metric a search ranks by: the one asked for, else the index's (else euclidean)."""
    if metric is None:
        metric = idx.metric if idx is not None else "euclidean"
    m = resolve_metric(metric, kwargs)
    if m.fn is None and m.name in ("seuclidean", "mahalanobis") and not m.params:
        raise ParameterError(
            f"search with {m.name!r} needs its parameter ({'V' if m.name == 'seuclidean' else 'VI'}"
            "=...): estimating it from the rows searched would change with every filter"
        )
    return m


def _n_candidates(candidates: int | None, idx: IndexDef) -> int:
    """Rows an lsh index re-ranks exactly per query: asked, else the index's, else the
    default."""
    return candidates or idx.candidates or DEFAULT_CANDIDATES


def _keys_of(snap: _Snapshot, slots: np.ndarray) -> Any:
    """Keys of slots (int64 array, or an object array of str)."""
    if snap.str_keys:
        out = np.empty(slots.shape, dtype=object)
        flat = out.reshape(-1)
        for i, s in enumerate(slots.reshape(-1).tolist()):
            flat[i] = snap.index.keys(s, s + 1)[0]
        return out
    keys = snap.search_cache.get("keys")
    if keys is None:
        keys = snap.search_cache["keys"] = snap.index.keys()
    return keys[slots]


def _shape(snap: _Snapshot, slots: np.ndarray, dist: np.ndarray, single: bool) -> tuple[Any, Any]:
    keys = _keys_of(snap, slots)
    return (keys[0], dist[0]) if single else (keys, dist)


# --------------------------------------------------------------------------- kinds


def _values(group: FeatureGroup, snap: _Snapshot, rows: np.ndarray, feature: str) -> Any:
    """The decoded values of ``feature`` in ``rows`` (a float32 array or CSR)."""
    batch = group._gather(snap, None, rows, [feature], 1, "search()")
    return batch[feature]


def _exact(group, snap, feature, Q, k, m, searched, n_threads) -> tuple[np.ndarray, np.ndarray]:
    """k nearest by a scan of every searched row, in chunks (equal to mmfs.knn over the
    searched rows in slot order)."""
    nq = Q.shape[0]
    best_d = np.full((nq, k), np.nan)
    best_s = np.full((nq, k), _NO_SLOT, dtype=np.int64)
    for lo in range(0, searched.n, _CHUNK):
        rows = searched.rows[lo : lo + _CHUNK]
        V = _values(group, snap, rows, feature)
        kk = min(k, rows.shape[0])
        idx, d = knn(V, Q, kk, m.fn or m.name, n_threads=n_threads, **m.params)
        s = searched.slots[lo : lo + _CHUNK][idx]
        all_d = np.concatenate([best_d, d.astype(np.float64)], axis=1)
        all_s = np.concatenate([best_s, s], axis=1)
        order = np.lexsort((all_s, all_d), axis=-1)[:, :k]
        best_d = np.take_along_axis(all_d, order, axis=1)
        best_s = np.take_along_axis(all_s, order, axis=1)
    return best_s, best_d


def _kdtree_p(m: Metric) -> float:
    p = KDTREE_METRICS[m.name]
    return float(m.params.get("p", 2.0)) if p is None else p


def _kdtree(group, snap, feature, searched, cache: bool) -> Any:
    from scipy.spatial import KDTree

    key = ("kdtree", feature)
    tree = snap.search_cache.get(key) if cache else None
    if tree is None:
        n, dim = searched.n, snap.features[feature].width
        budget = group._store.budget
        what = f"the kd-tree of {group.name}.{feature}"
        reservation = budget.reserve(n * (8 * dim + 48), what) if budget is not None else None
        data = np.empty((n, dim), dtype=np.float64)
        for lo in range(0, n, _CHUNK):
            data[lo : lo + _CHUNK] = _values(group, snap, searched.rows[lo : lo + _CHUNK], feature)
        tree = KDTree(data)
        if cache:
            snap.search_cache[key] = tree
            if reservation is not None:
                snap._reservations[f"~{key}"] = reservation
        elif reservation is not None:
            reservation.release()
    return tree


def _kdtree_knn(group, snap, feature, Q, k, m, searched, cache) -> tuple[np.ndarray, np.ndarray]:
    tree = _kdtree(group, snap, feature, searched, cache)
    d, i = tree.query(Q.astype(np.float64), k=k, p=_kdtree_p(m))
    d = np.asarray(d, dtype=np.float64).reshape(Q.shape[0], k)
    i = np.asarray(i, dtype=np.int64).reshape(Q.shape[0], k)
    s = searched.slots[i]
    order = np.lexsort((s, d), axis=-1)
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(d, order, axis=1)


class _LshReader:
    """What one snapshot needs to search one lsh index: the projections, the code and row
    arena addresses (and the mappings they point into)."""

    def __init__(self, snap: _Snapshot, feature: str, idx: IndexDef) -> None:
        files = snap.files
        ftype = snap.features[feature]
        self.P, self.t = files.projection(feature, idx, ftype.width)
        n_rows = snap.meta.n_rows
        if idx.n_rows < n_rows:
            raise CorruptStoreError(
                f"group {snap.meta.name!r}: index of {feature!r} has codes for {idx.n_rows} "
                f"rows, the version has {n_rows}"
            )
        codes = files.lsh_files(feature, idx)
        self.prefix, self.rest, maps = codes.addresses(n_rows)
        self.seg_bits = codes.seg_bits
        self.row_addrs, row_maps = files.rows.addresses(n_rows)
        self.row_bits = files.rows.seg_bits
        self._maps = maps + row_maps
        self.kernel_rerank = isinstance(ftype, Dense) and ftype.dtype == "float32"
        self.table_bits = idx.table_bits
        self.tables = idx.tables
        self.table: np.ndarray | None = None
        if idx.table_rows:  # gone: a newer commit rebuilt it, and a scan finds the same rows
            with contextlib.suppress(FileNotFoundError):
                self.table = read_table(files.directory, feature, idx)
        self.table_rows = idx.table_rows if self.table is not None else 0


def _reader(snap: _Snapshot, feature: str, idx: IndexDef) -> _LshReader:
    key = ("lsh", feature, idx.gen)
    reader = snap.search_cache.get(key)
    if reader is None:
        reader = snap.search_cache[key] = _LshReader(snap, feature, idx)
    return reader


def _lsh_knn(group, snap, feature, idx, Q, k, m, searched, n_cand, n_threads) -> Any:
    reader = _reader(snap, feature, idx)
    nq = Q.shape[0]
    cand, counts = _lsh_candidates(reader, Q, searched, max(n_cand, k), n_threads)
    if reader.kernel_rerank and m.fn is None and m.name in DIRECT_METRICS:
        heap_d = np.full((nq, k), np.nan)
        heap_i = np.full((nq, k), _NO_SLOT, dtype=np.int64)
        heap_n = np.zeros(nq, dtype=np.int64)
        files = snap.files
        _lsh.rerank(
            cand, counts, reader.row_addrs, reader.row_bits, files.record_bytes,
            files.offsets["slot"], files.offsets[feature], m.code,
            float(m.params.get("p", 2.0)), metric_weights(m, Q, None), Q, heap_d, heap_i,
            heap_n, n_threads,
        )  # fmt: skip
        return heap_i, heap_d  # sorted by the kernel; k <= the rows searched, so full
    slots = np.full((nq, k), _NO_SLOT, dtype=np.int64)
    dist = np.full((nq, k), np.nan)
    for q in range(nq):
        rows = cand[q, : counts[q]]
        if rows.shape[0] == 0:
            continue
        s, d = _rerank_generic(group, snap, feature, Q[q : q + 1], rows, m)
        kk = min(k, s.shape[0])
        slots[q, :kk], dist[q, :kk] = s[:kk], d[:kk]
    return slots, dist


def _probes_per_table(n2: int, tables: int) -> int:
    """Buckets probed in each table: n2 in all."""
    return -(-n2 // tables)


def _probe_buckets(reader: _LshReader, searched: _Searched, n2: int) -> bool:
    """Whether stage one probes buckets (else it scans every prefix): when the index has
    a table key, at least half the rows are searched (a filter that keeps fewer needs
    rows the probes would miss), the buckets hold 4 rows each on average (so that the
    probes should hold about 4 * n2 rows), and each table's probes are at most an eighth
    of its buckets (more would read most rows at random, slower than the scan)."""
    K = reader.table_bits
    return (
        K > 0 and 2 * searched.n >= searched.n_rows and searched.n >= 4 << K
        and 8 * _probes_per_table(n2, reader.tables) <= 1 << K
    )  # fmt: skip


def _lsh_candidates(reader: _LshReader, Q: Any, searched: _Searched, n2: int, n_threads: int):
    nq = Q.shape[0]
    sums = np.empty((nq, reader.P.shape[1]), dtype=np.float32)
    qcodes = codes_of(Q, reader.P, reader.t, 1, sums)
    weights = np.abs(sums - reader.t)
    cand = np.empty((nq, n2), dtype=np.int64)
    counts = np.empty(nq, dtype=np.int64)
    failed = _lsh.candidates(
        reader.prefix, reader.rest, reader.seg_bits, searched.n_rows, qcodes, searched.allow,
        FIRST_STAGE * n2, cand, counts, min(n_threads, nq), False, weights,
        reader.table_bits if _probe_buckets(reader, searched, n2) else 0, reader.table,
        reader.table_rows, _probes_per_table(n2, reader.tables), reader.tables,
    )  # fmt: skip
    if failed:
        raise MemoryError(f"the lsh scan could not allocate its buffers for {failed} queries")
    return cand, counts


def _rerank_generic(group, snap, feature, q, rows, m) -> tuple[np.ndarray, np.ndarray]:
    """(slots, distances) of rows by (distance, slot), by mmfs.cdist (any metric)."""
    V = _values(group, snap, rows, feature)
    d = cdist(q, V, m.fn or m.name, **m.params)[0].astype(np.float64)
    s = snap.row_slots(rows)
    order = np.lexsort((s, d))
    return s[order], d[order]


# --------------------------------------------------------------------------- public


def _prepare(
    group: FeatureGroup, feature: Any, queries: Any, version: Any, flt: Any, candidates: Any
):
    if candidates is not None:
        _as_count(candidates)  # a positive integer, or say so
    snap = group._store._version_snapshot(group.name, version) if version is not None else (
        group._store._snapshot(group.name))  # fmt: skip
    if not isinstance(feature, str) or feature not in snap.features:
        raise ParameterError(
            f"group {group.name!r} has no feature {feature!r}; its features are "
            f"{list(snap.features)}"
        )
    ftype = snap.features[feature]
    if not is_vector(ftype):
        raise ParameterError(f"feature {feature!r} is not a float vector ({ftype!r})")
    assert isinstance(ftype, Dense | Sparse)
    Q, single = _queries(queries, ftype, feature)
    meta = group._meta()
    # The newest definition's index serves every version of that definition; a version
    # from before alter_group (another group id, other files) is searched exactly.
    idx = meta.indexes.get(feature) if snap.meta.id == meta.id else None
    if flt is not None:
        return snap, Q, single, idx, _Searched(group, snap, flt)
    searched = snap.search_cache.get("searched")
    if searched is None:
        searched = snap.search_cache["searched"] = _Searched(group, snap, None)
    return snap, Q, single, idx, searched


def search(
    group: FeatureGroup,
    feature: Any,
    queries: Any,
    k: Any,
    *,
    version: Any,
    filter: Any,
    candidates: Any,
    metric: Any,
    n_threads: int | None,
    kwargs: dict[str, Any],
) -> tuple[Any, Any]:
    k = _as_count(k)
    snap, Q, single, idx, searched = _prepare(group, feature, queries, version, filter, candidates)
    m = _metric(metric, idx, kwargs)
    nt = effective_n_threads(n_threads)
    k = min(k, searched.n)
    nq = Q.shape[0]
    if k == 0 or nq == 0:
        return _shape(snap, np.zeros((nq, k), np.int64), np.zeros((nq, k)), single)
    kind = idx.kind if idx is not None else "exact"
    if kind == "lsh":
        assert idx is not None
        n_cand = _n_candidates(candidates, idx)
        slots, dist = _lsh_knn(group, snap, feature, idx, Q, k, m, searched, n_cand, nt)
    elif kind == "kdtree" and m.fn is None and m.name in KDTREE_METRICS:
        slots, dist = _kdtree_knn(group, snap, feature, Q, k, m, searched, filter is None)
    else:
        slots, dist = _exact(group, snap, feature, Q, k, m, searched, nt)
    return _shape(snap, slots, dist, single)


def search_radius(
    group: FeatureGroup,
    feature: Any,
    queries: Any,
    r: Any,
    *,
    version: Any,
    filter: Any,
    candidates: Any,
    metric: Any,
    n_threads: int | None,
    kwargs: dict[str, Any],
) -> tuple[Any, Any]:
    if isinstance(r, bool) or not isinstance(r, int | float | np.number) or not r >= 0:
        raise ParameterError(f"r must be a non-negative number, got {r!r}")
    snap, Q, single, idx, searched = _prepare(group, feature, queries, version, filter, candidates)
    m = _metric(metric, idx, kwargs)
    nt = effective_n_threads(n_threads)
    nq = Q.shape[0]
    kind = idx.kind if idx is not None else "exact"
    found: list[tuple[np.ndarray, np.ndarray]] = []
    if searched.n == 0:
        found = [(np.zeros(0, np.int64), np.zeros(0)) for _ in range(nq)]
    elif kind == "lsh":
        assert idx is not None
        n_cand = _n_candidates(candidates, idx)
        reader = _reader(snap, feature, idx)
        cand, counts = _lsh_candidates(reader, Q, searched, n_cand, nt)
        for q in range(nq):
            s, d = _rerank_generic(group, snap, feature, Q[q : q + 1], cand[q, : counts[q]], m)
            found.append((s[d <= r], d[d <= r]))
    elif kind == "kdtree" and m.fn is None and m.name in KDTREE_METRICS:
        tree = _kdtree(group, snap, feature, searched, filter is None)
        p = _kdtree_p(m)
        hits = tree.query_ball_point(Q.astype(np.float64), r, p=p)
        for q in range(nq):
            i = np.asarray(hits[q], dtype=np.int64)
            rows = searched.rows[i]
            s, d = _rerank_generic(group, snap, feature, Q[q : q + 1], rows, m)
            found.append((s[d <= r], d[d <= r]))
    else:
        parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(nq)]
        for lo in range(0, searched.n, _CHUNK):
            V = _values(group, snap, searched.rows[lo : lo + _CHUNK], feature)
            idxs, dists = radius(V, Q, float(r), m.fn or m.name, n_threads=nt, **m.params)
            for q in range(nq):
                parts[q].append((searched.slots[lo : lo + _CHUNK][idxs[q]], dists[q]))
        for q in range(nq):
            s = np.concatenate([a for a, _ in parts[q]])
            d = np.concatenate([b for _, b in parts[q]]).astype(np.float64)
            order = np.lexsort((s, d))
            found.append((s[order], d[order]))
    keys = [_keys_of(snap, s) for s, _ in found]
    dists = [d for _, d in found]
    return (keys[0], dists[0]) if single else (keys, dists)


def evaluate(
    group: FeatureGroup,
    feature: Any,
    queries: Any,
    k: Any,
    *,
    version: Any,
    filter: Any,
    candidates: Any,
    metric: Any,
) -> dict[str, Any]:
    """Recall@k of the index against exact search on the same rows, and the time of each."""
    k = _as_count(k)
    snap, Q, _single, idx, searched = _prepare(group, feature, queries, version, filter, candidates)
    m = _metric(metric, idx, {})
    k = min(k, searched.n)
    nq = Q.shape[0]
    t0 = time.perf_counter()
    got, _ = search(
        group, feature, Q, k, version=version, filter=filter, candidates=candidates,
        metric=metric, n_threads=1, kwargs={},
    )  # fmt: skip
    t1 = time.perf_counter()
    truth, _ = _exact(group, snap, feature, Q, k, m, searched, 1)
    t2 = time.perf_counter()
    truth_keys = _keys_of(snap, truth)
    per_query = np.array(
        [len(set(got[q].tolist()) & set(truth_keys[q].tolist())) / k if k else 1.0
         for q in range(nq)]
    )  # fmt: skip
    return {
        "kind": idx.kind if idx is not None else "exact",
        "k": k,
        "queries": nq,
        "candidates": (candidates or idx.candidates or DEFAULT_CANDIDATES)
        if idx is not None and idx.kind == "lsh"
        else None,
        "recall": float(per_query.mean()) if nq else 1.0,
        "recall_per_query": per_query,
        "index_ms_per_query": (t1 - t0) * 1e3 / max(nq, 1),
        "exact_ms_per_query": (t2 - t1) * 1e3 / max(nq, 1),
    }
