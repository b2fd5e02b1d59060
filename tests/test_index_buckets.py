"""The bucket table of an lsh index (issue 8): the table build, the probes and the pool
against numpy references, and the table's life through commits, versions, readers,
recovery and verify()."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import scipy.sparse
from test_index import _scan_setup, clustered_data, ham, recall, ref_candidates, ref_select
from test_index import weighted as ref_weighted

import mmfs
from mmfs._kernels import _lsh
from mmfs.errors import CorruptStoreError, ParameterError
from mmfs.index.lsh import IndexDef, auto_table_bits, read_table, table_due, table_path
from mmfs.storage.fileformat import open_array, write_array_file

# --------------------------------------------------------------------------- references


def ref_table(keys: np.ndarray, bits: int) -> np.ndarray:
    """Offsets of the 2^bits buckets, then the rows bucket by bucket, in row order."""
    counts = np.bincount(keys, minlength=1 << bits)
    off = np.concatenate([[0], np.cumsum(counts)])
    return np.concatenate([off, np.argsort(keys, kind="stable")]).astype(np.int32)


def ref_probes(wk: np.ndarray, qkey: int, P: int) -> np.ndarray:
    """The documented probes: subsets of the m least sure key bits (by weight, then bit;
    NaN last), their float32 weight sums taken lowest bit first, quantised to 4096 bins
    (NaN: the last), the P least by (bin, subset)."""
    K = wk.shape[0]
    m = 12
    while m < 16 and (1 << (m - 2)) < P:
        m += 1
    m = min(m, K)
    n_sub = 1 << m
    P = min(P, n_sub)
    nan = np.isnan(wk)
    order = sorted(range(K), key=lambda b: (bool(nan[b]), 0.0 if nan[b] else wk[b], b))
    score = np.zeros(n_sub, dtype=np.float32)
    mask = np.zeros(n_sub, dtype=np.int64)
    for s in range(1, n_sub):
        low = (s & -s).bit_length() - 1
        score[s] = np.float32(score[s & (s - 1)] + wk[order[low]])
        mask[s] = mask[s & (s - 1)] | (1 << order[low])
    total = score[-1]
    scale = np.float32(np.float32(4095) / total) if total > 0 else np.float32(0)
    x = score * scale
    bins = np.where(x < 4095, x, np.float32(4095)).astype(np.int64)
    chosen = np.lexsort((np.arange(n_sub), bins))[:P]
    return np.sort(qkey ^ mask[chosen])


def ref_keys(codes: np.ndarray, K: int, t: int) -> np.ndarray:
    """Table t's key of each row: bits [t * K, (t + 1) * K) of word 1 (word 0 for one
    word)."""
    word = codes[:, 1 if codes.shape[1] > 1 else 0]
    return ((word >> np.uint64(t * K)) & np.uint64((1 << K) - 1)).astype(np.int64)


def ref_bucket_candidates(codes, q, w, allow, n1, n2, K, P, T=1):
    """Stage one's pool: the rows whose key in some table t (ref_keys) is among that
    table's P probes (of the weights of its key bits); fewer than n2: every row, as the
    scan.  Then stage one keeps min(n1, 2 * n2) by prefix distance and stage two n2 by
    weighted distance."""
    kw = 1 if codes.shape[1] > 1 else 0
    hit = np.zeros(codes.shape[0], dtype=bool)
    for t in range(T):
        wk = w[64 * kw + t * K : 64 * kw + (t + 1) * K]
        probes = ref_probes(wk, int(ref_keys(q[None, :], K, t)[0]), P)
        hit |= np.isin(ref_keys(codes, K, t), probes)
    rows = np.flatnonzero(hit)
    if allow is not None:
        rows = rows[allow[rows]]
    if rows.shape[0] < n2:
        return ref_candidates(codes, q, allow, n1, n2, w.astype(np.float64))
    keep = ref_select(rows, ham(codes[rows, :1], q[None, :1]), min(n1, 2 * n2))
    if keep.shape[0] > n2:
        keep = ref_select(keep, ref_weighted(codes[keep], q, w), n2)
    return keep


def _bitmap(allow: np.ndarray | None, n: int) -> np.ndarray:
    if allow is None:
        return np.zeros(0, np.uint64)
    padded = np.zeros(((n + 63) // 64) * 64, dtype=bool)
    padded[:n] = allow
    return np.packbits(padded, bitorder="little").view("<u8").astype(np.uint64)


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize(("n", "W", "seg_bits", "bits", "t"), [
    (5000, 4, 10, 8, 0), (3000, 1, 8, 10, 0), (1, 2, 4, 8, 0), (0, 3, 6, 9, 0),
    (70000, 2, 14, 12, 0), (5000, 4, 10, 8, 7), (3000, 1, 8, 10, 5), (4000, 2, 9, 16, 3),
])  # fmt: skip
def test_table_build_equals_stable_argsort(n, W, seg_bits, bits, t) -> None:
    """Table t keys on bits [t * bits, (t + 1) * bits) of the key word (shift t * bits)."""
    rng = np.random.default_rng(n + bits)
    codes, _q, _prefix, _rest, pa, ra = _scan_setup(rng, max(n, 1), W, seg_bits)
    stride, segs = (W - 1, ra) if W > 1 else (1, pa)
    out = np.full((1 << bits) + 1 + n, -5, dtype=np.int32)
    _lsh.table_build(segs, seg_bits, stride, n, bits, out, t * bits)
    assert np.array_equal(out, ref_table(ref_keys(codes[:n], bits, t), bits))


@pytest.mark.parametrize(("n", "W", "seg_bits", "K", "n1", "n2", "P", "T"), [
    (6000, 4, 10, 8, 400, 100, 40, 1),     # the table's buckets hold a pool of >= n2
    (6000, 3, 9, 10, 300, 60, 200, 1),
    (4000, 1, 8, 8, 200, 50, 30, 1),       # one-word codes: the key is word 0
    (3000, 2, 12, 12, 300, 150, 3, 1),     # too few rows in 3 buckets: the full scan
    (2000, 2, 7, 8, 500, 100, 5000, 1),    # more probes than buckets: every bucket
    (6000, 4, 10, 8, 400, 100, 40, 2),     # two tables: a row in both is kept once
    (5000, 2, 9, 9, 300, 80, 25, 7),       # seven tables of 9 bits: 63 of word 1's bits
    (4000, 1, 8, 8, 200, 50, 30, 3),       # one-word codes: bits 0-23 of word 0
    (3000, 2, 12, 12, 300, 150, 2, 2),     # too few rows in 2 x 2 buckets: the scan
    (2000, 2, 7, 8, 500, 100, 5000, 2),    # every bucket of both tables
])  # fmt: skip
@pytest.mark.parametrize("filtered", [False, True])
def test_bucket_candidates_equal_reference(n, W, seg_bits, K, n1, n2, P, T, filtered) -> None:
    """Every table (none, part of the rows, all of them; one or T of them) gives the
    reference's rows, for any thread count and in a batch."""
    rng = np.random.default_rng(n + K + P)
    codes, q, _prefix, _rest, pa, ra = _scan_setup(rng, n, W, seg_bits)
    stride, segs = (W - 1, ra) if W > 1 else (1, pa)
    allow = rng.random(n) < 0.8 if filtered else None
    w = rng.random(64 * W).astype(np.float32)
    w[::9] = 0.0
    qs = np.stack([q, q ^ np.uint64(0b1011), rng.integers(0, 2**63, W, dtype=np.uint64)])
    ws = np.stack([w, w[::-1].copy(), w])
    want = [ref_bucket_candidates(codes, qs[i], ws[i], allow, n1, n2, K, P, T) for i in range(3)]
    for covered in (0, n // 2, n):
        block = (1 << K) + 1 + covered
        table = np.empty(T * block, dtype=np.int32)
        for t in range(T):
            _lsh.table_build(
                segs, seg_bits, stride, covered, K, table[t * block : (t + 1) * block], t * K
            )
        for nt in (1, 2):
            out = np.full((3, n2), -7, dtype=np.int64)
            counts = np.zeros(3, dtype=np.int64)
            assert _lsh.candidates(
                pa, ra, seg_bits, n, qs, _bitmap(allow, n), n1, out, counts, nt, False, ws,
                K, table if covered else None, covered, P, T,
            ) == 0  # fmt: skip
            for i in range(3):
                assert np.array_equal(np.sort(out[i, : counts[i]]), want[i])


def test_probes_with_nan_and_tied_weights() -> None:
    """NaN weights sort last, ties go by bit, and quantised ties by subset (through the
    pool: every row is its own bucket's only row)."""
    K = 8
    codes = np.zeros((256, 2), dtype=np.uint64)
    codes[:, 1] = np.arange(256, dtype=np.uint64)  # row r is bucket r
    codes[:, 0] = np.arange(256, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    prefix, rest = codes[:, 0].copy(), codes[:, 1:].copy()
    pa, ra = np.array([prefix.ctypes.data], np.intp), np.array([rest.ctypes.data], np.intp)
    q = np.array([0, 0b10110010], dtype=np.uint64)
    for wk in (np.full(K, 0.5), np.array([0.1, np.nan, 0.1, 0.3, np.nan, 0.2, 0.1, 0.9])):
        w = np.zeros(128, dtype=np.float32)
        w[64 : 64 + K] = wk
        for P in (1, 7, 37, 100):
            out = np.empty((1, P), dtype=np.int64)
            counts = np.empty(1, dtype=np.int64)
            _lsh.candidates(pa, ra, 12, 256, q[None], np.zeros(0, np.uint64), 4 * P, out, counts,
                            1, False, w[None], K, None, 0, P)  # fmt: skip
            want = ref_probes(w[64 : 64 + K], int(q[1]), P)
            assert np.array_equal(np.sort(out[0, : counts[0]]), want)


# --------------------------------------------------------------------------- the group


@pytest.fixture(scope="module")
def data():
    return clustered_data(3, 12000, 16, 40, 30)


@pytest.fixture
def kernel_calls(monkeypatch) -> list[tuple[int, int, int]]:
    """(table_bits, probes, tables) of each call to the candidates kernel (table_bits 0:
    a scan of every prefix)."""
    calls = []
    candidates = _lsh.candidates

    def spy(*args):
        calls.append((args[12], args[15], args[16]))
        return candidates(*args)

    monkeypatch.setattr("mmfs.index.search._lsh.candidates", spy)
    return calls


def _indexed(path: str, X: np.ndarray, n: int, metric: str, **index: Any) -> tuple[Any, Any, int]:
    """A store whose group "items" holds the first n rows of X as "emb", committed, then
    an lsh index on it, committed: (store, group, the index's version)."""
    st = mmfs.open(path)
    g = st.create_group("items", key="id", schema={"emb": mmfs.dense(X.shape[1])})
    g.write(np.arange(n), {"emb": X[:n]})
    st.commit()
    g.create_index("emb", "lsh", metric, **index)
    return st, g, st.commit()


def _refused(path: str, table_file: str, table: np.ndarray, match: str, Q: np.ndarray) -> None:
    """With ``table`` in place of the table file, a reader's search refuses it, saying
    ``match``."""
    os.unlink(table_file)
    write_array_file(table_file, table, "META")
    ro = mmfs.open(path, mode="r")
    with pytest.raises(CorruptStoreError, match=match):
        ro["items"].search("emb", Q, k=5)
    ro.close()


def _tables(directory) -> list[str]:
    return sorted(f for f in os.listdir(directory) if f.startswith("lsht@"))


def test_table_follows_commits_versions_and_readers(tmp_path, data, kernel_calls) -> None:
    X, Q = data
    path = str(tmp_path / "s")
    st = mmfs.open(path)
    g = st.create_group("items", key="id", schema={"emb": mmfs.dense(16)})
    g.write(np.arange(8000), {"emb": X[:8000]})
    v1 = st.commit()
    g.create_index("emb", "lsh", "euclidean", table_bits=10, candidates=100)
    v2 = st.commit()
    directory = tmp_path / "s" / "groups" / "g0"
    idx = g.indexes()["emb"]
    assert (idx.table_bits, idx.table_rows, idx.table_gen) == (10, 8000, v2)
    assert _tables(directory) == [os.path.basename(table_path(str(directory), "emb", idx))]
    got, got_d = g.search("emb", Q, k=10)
    truth, _ = mmfs.knn(X[:8000], Q, 10)
    assert recall(got, truth) >= 0.95
    assert kernel_calls == [(10, 100, 1)]  # 100 of the 1,024 buckets
    pinned = g.search("emb", Q, k=10, version=v1)
    # a reader without the table file (a newer commit removed it) gives the same answers
    ro = mmfs.open(path, mode="r")
    os.rename(table_path(str(directory), "emb", idx), tmp_path / "aside")
    for a, b in zip(ro["items"].search("emb", Q, k=10), (got, got_d), strict=True):
        assert np.array_equal(a, b)
    ro.close()
    os.rename(tmp_path / "aside", table_path(str(directory), "emb", idx))
    # a small write joins the tail: no new table, and its rows are found
    g.write(np.arange(8000, 8200), {"emb": X[8000:8200]})
    st.commit()
    assert g.indexes()["emb"].table_gen == idx.table_gen
    keys, dist = g.search("emb", X[8100:8110], k=1)
    assert np.array_equal(keys[:, 0], np.arange(8100, 8110))
    assert np.all(dist[:, 0] == 0.0)
    # a tail of max(2^10, 8200 / 8) rows or more: the table is built anew
    g.write(np.arange(8200, 12000), {"emb": X[8200:12000]})
    g.delete([5, 6])
    v4 = st.commit()
    new = g.indexes()["emb"]
    assert (new.table_rows, new.table_gen) == (12002, v4)
    assert len(_tables(directory)) == 2  # the previous commit's stays for its readers
    # the pinned version's answers do not depend on which table serves them
    for a, b in zip(g.search("emb", Q, k=10, version=v1), pinned, strict=True):
        assert np.array_equal(a, b)
    got, _ = g.search("emb", Q, k=10)
    truth, _ = mmfs.knn(np.delete(X, [5, 6], axis=0), Q, 10)
    assert recall(got, np.delete(np.arange(12000), [5, 6])[truth]) >= 0.95
    assert not np.isin(got, [5, 6]).any()
    # a filter that keeps most keys probes; one that keeps few scans; both obey it
    for share, bits in ((0.7, 10), (0.1, 0)):
        mask = np.random.default_rng(1).random(len(g)) < share
        kernel_calls.clear()
        keys, _ = g.search("emb", Q, k=10, filter=mask)
        assert np.isin(keys, np.asarray(g.keys())[mask]).all()
        assert kernel_calls == [(bits, 100, 1)]
    g.write([0], {"emb": X[:1]})
    st.commit()
    assert _tables(directory) == [os.path.basename(table_path(str(directory), "emb", new))]
    assert st.verify()["items"] == 12000
    st.close()


def test_default_candidates_probe_with_documented_recall(tmp_path, kernel_calls) -> None:
    """At the default candidates the probes reach recall@10 >= 0.95 on clustered data,
    as the scan does."""
    X, Q = clustered_data(8, 40000, 32, 200, 50)
    st = mmfs.open(str(tmp_path / "s"), durability="none")
    g = st.create_group("items", key="id", schema={"emb": mmfs.dense(32)})
    g.write(np.arange(40000), {"emb": X})
    st.commit()
    g.create_index("emb", "lsh", "euclidean", table_bits=13)
    st.commit()
    got, _ = g.search("emb", Q, k=10)
    truth, _ = mmfs.knn(X, Q, 10)
    assert kernel_calls == [(13, 700, 1)]
    assert recall(got, truth) >= 0.95
    st.close()


def test_table_damage_recovery_and_old_manifests(tmp_path, data) -> None:
    X, Q = data
    path = str(tmp_path / "s")
    st, g, _ = _indexed(path, X, 3000, "cosine", table_bits=9)
    idx = g.indexes()["emb"]
    directory = str(tmp_path / "s" / "groups" / "g0")
    table_file = table_path(directory, "emb", idx)
    good = np.array(open_array(table_file, "META"))
    st.close()
    # a stray table of a commit that never happened is removed by the writer's recovery
    later = IndexDef(**{**idx.to_json(), "table_gen": idx.table_gen + 3})
    stray = table_path(directory, "emb", later)
    write_array_file(stray, good, "META")
    st = mmfs.open(path)
    assert not os.path.exists(stray)
    # a table whose rows disagree with the codes: verify() says so, search stays in bounds
    bad = good.copy()
    n_off = (1 << 9) + 1
    bad[n_off], bad[n_off + 1] = bad[n_off + 1], 10**9
    os.unlink(table_file)
    write_array_file(table_file, bad, "META")
    with pytest.raises(CorruptStoreError, match="bucket table"):
        st.verify()
    ro = mmfs.open(path, mode="r")
    keys, _ = ro["items"].search("emb", Q, k=5)
    assert keys.shape == (30, 5)
    assert np.isin(keys, np.arange(3000)).all()
    ro.close()
    # offsets out of order are refused when the table is read
    bad = good.copy()
    bad[1] = 10**6
    _refused(path, table_file, bad, "offsets", Q)
    _refused(path, table_file, good.astype(np.int64), "bucket tables of dtype", Q)
    st.close()
    # a manifest from before the table reads as an index without one; from before the
    # second table, as an index with one
    doc = idx.to_json()
    old = {f: v for f, v in doc.items() if not f.startswith("table")}
    ftype = mmfs.dense(16)
    assert IndexDef.from_json(old, ftype, "m").table_bits == 0
    one = {f: v for f, v in doc.items() if f != "tables"}
    assert IndexDef.from_json(one, ftype, "m") == idx
    assert idx.tables == 1
    for broken in (
        {**doc, "tables": 0},
        {**doc, "tables": 2.0},
        {**doc, "tables": 8},  # 8 tables of 9 bits: more than a word
        {**old, "tables": 2},  # tables without table bits
        {**old, "table_bits": 8},  # some of the fields only
        {**doc, "table_bits": 5},
        {**doc, "table_rows": doc["n_rows"] + 1},
        {**doc, "table_gen": 0},
        {**doc, "table_bits": 0},
        {**doc, "table_bits": True},
    ):
        with pytest.raises(CorruptStoreError):
            IndexDef.from_json(broken, ftype, "m")


def test_table_bits_argument(tmp_path, data) -> None:
    X, _Q = data
    st = mmfs.open(str(tmp_path / "s"))
    g = st.create_group("items", key="id", schema={"emb": mmfs.dense(16)})
    g.write(np.arange(2000), {"emb": X[:2000]})
    st.commit()
    bad: Any
    for bad in (5, 21, True, 8.0, "8", -1):
        with pytest.raises(ParameterError, match="table_bits"):
            g.create_index("emb", "lsh", table_bits=bad)
    # chosen from the row count: about 16 rows a bucket, 10 to 20 bits, 16 when empty
    assert g.create_index("emb", "lsh").table_bits == 10
    for n, bits in ((0, 16), (1, 10), (2000, 10), (10**6, 16), (1_500_000, 17), (10**9, 20)):
        assert auto_table_bits(n) == bits
    # a commit builds the table once the tail reaches max(2^K, rows / 8), below 2^31 rows
    idx = IndexDef("lsh", "cosine", 256, 0, 1, 0, 0, None, 16, 10**6, 1)
    assert not table_due(idx, 10**6 + 124_999)
    assert table_due(idx, 10**6 + 125_000)
    assert not table_due(idx, 2**31)
    assert table_due(IndexDef("lsh", "cosine", 64, 0, 1, 0, 0, None, 10), 1024)
    assert not table_due(IndexDef("lsh", "cosine", 64, 0, 1, 0, 0, None, 10), 1023)
    assert g.create_index("emb", "exact", table_bits=None).table_bits == 0
    # a one-word code keys its buckets by word 0
    g.create_index("emb", "lsh", bits=64, table_bits=8)
    st.commit()
    idx = g.indexes()["emb"]
    files = st._files("items")
    prefix = files.lsh_files("emb", idx).prefix.segment(0)[:2000]
    table = read_table(files.directory, "emb", idx)
    assert np.array_equal(table, ref_table((prefix & np.uint64(255)).astype(np.int64), 8))
    g.create_index("emb", "lsh", table_bits=0)
    st.commit()
    none = g.indexes()["emb"]
    assert none.table_rows == 0  # no table, whatever the rows
    left = _tables(tmp_path / "s" / "groups" / "g0")  # the previous commit's only
    assert left == [os.path.basename(table_path("", "emb", idx))]
    st.close()


def test_tables_follow_commits_and_verify(tmp_path, data, kernel_calls) -> None:
    """tables=T: T tables in one file, each keyed by its own bits, kept up to date by
    commits and checked by verify(); each query probes ceil(candidates / T) buckets of
    each table."""
    X, Q = data
    path = str(tmp_path / "s")
    st, g, v = _indexed(path, X, 8000, "euclidean", table_bits=9, tables=3, candidates=100)
    idx = g.indexes()["emb"]
    assert (idx.tables, idx.table_bits, idx.table_rows, idx.table_gen) == (3, 9, 8000, v)
    files = st._files("items")
    rest = files.lsh_files("emb", idx).rest
    assert rest is not None
    codes = np.concatenate([np.zeros((8000, 1), np.uint64), rest.segment(0)[:8000]], axis=1)
    table = read_table(files.directory, "emb", idx)
    block = (1 << 9) + 1 + 8000
    assert table.shape == (3 * block,)
    for t in range(3):
        assert np.array_equal(
            table[t * block : (t + 1) * block], ref_table(ref_keys(codes, 9, t), 9)
        )
    got, _ = g.search("emb", Q, k=10)
    truth, _ = mmfs.knn(X[:8000], Q, 10)
    assert kernel_calls == [(9, 34, 3)]
    assert recall(got, truth) >= 0.95
    # the tail is found in every table; a due tail rebuilds all three
    g.write(np.arange(8000, 8300), {"emb": X[8000:8300]})
    st.commit()
    keys, dist = g.search("emb", X[8290:8300], k=1)
    assert np.array_equal(keys[:, 0], np.arange(8290, 8300))
    assert np.all(dist[:, 0] == 0.0)
    g.write(np.arange(8300, 12000), {"emb": X[8300:12000]})
    st.commit()
    new = g.indexes()["emb"]
    assert (new.tables, new.table_rows) == (3, 12000)
    assert st.verify()["items"] == 12000
    table_file = table_path(files.directory, "emb", new)
    good = np.array(open_array(table_file, "META"))
    st.close()
    # the last table's rows disagree with the codes: verify() says so
    block = (1 << 9) + 1 + 12000
    bad = good.copy()
    bad[-2:] = good[-2:][::-1]  # two distinct rows swapped
    os.unlink(table_file)
    write_array_file(table_file, bad, "META")
    st = mmfs.open(path)
    with pytest.raises(CorruptStoreError, match="bucket table"):
        st.verify()
    st.close()
    # the offsets of table 1 out of order are refused when the tables are read
    bad = good.copy()
    bad[block + 1] = 10**6
    _refused(path, table_file, bad, "offsets of table 1", Q)


def test_tables_argument(tmp_path, data) -> None:
    X, _Q = data
    st = mmfs.open(str(tmp_path / "s"))
    g = st.create_group("items", key="id", schema={"emb": mmfs.dense(16), "sp": mmfs.sparse(50)})
    rng = np.random.default_rng(0)
    dense = rng.random((2000, 50)).astype(np.float32)
    sparse = scipy.sparse.csr_matrix(np.where(dense < 0.1, dense, 0.0))
    g.write(np.arange(2000), {"emb": X[:2000], "sp": sparse})
    st.commit()
    bad: Any
    for bad in (0, -1, True, 2.0, "2", 7):  # 7 tables of 10 bits: more than a word
        with pytest.raises(ParameterError, match="tables"):
            g.create_index("emb", "lsh", tables=bad)
    with pytest.raises(ParameterError, match="tables"):
        g.create_index("emb", "lsh", table_bits=17, tables=4)
    with pytest.raises(ParameterError, match="needs bucket tables"):
        g.create_index("emb", "lsh", table_bits=0, tables=2)
    assert g.indexes() == {}  # nothing was defined by the refusals
    assert g.create_index("emb", "lsh", tables=6).table_bits == 10  # 60 bits
    assert g.create_index("emb", "lsh", table_bits=8, tables=8).tables == 8
    # a sparse feature scans by default, but asking for tables gives it buckets
    assert g.create_index("sp", "lsh").table_bits == 0
    assert g.create_index("sp", "lsh", tables=2).table_bits == 10
    # other kinds have no tables
    assert g.create_index("emb", "exact", tables=3).tables == 1
    st.commit()
    assert st.verify()["items"] == 2000
    st.close()
