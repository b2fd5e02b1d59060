"""Index definitions and the sign-random-projection codes of an LSH index.

An index is part of its group's definition: the manifest's ``indexes`` entry maps a
vector feature to an :class:`IndexDef` (strict JSON, checked field by field when the
manifest is read).  Three kinds exist:

* ``exact``: no files; a search scans every row (the reference).
* ``kdtree``: no files; each process builds a ``scipy.spatial.cKDTree`` over the rows of
  the version it searches, once, charged to the memory budget.
* ``lsh``: a projection file and one code per row, in the group directory:

    lshp-<feature>-<gen>.mmfs        float32 [d + 1, B]: P (d x B), then the thresholds t
    lsh@<gen>-<feature>-p-NNNNNN.mmfs arena of uint64: word 0 of every row's code
    lsh@<gen>-<feature>-r-NNNNNN.mmfs arena of uint64 [W - 1]: the other words
    lsht@<tgen>-<feature>-<gen>.mmfs int32 [T * (2^K + 1 + n)]: the bucket tables (below)

  ``<gen>`` is the generation that created the index, so an index created again never
  writes over files a reader may hold.  Codes are computed by ``mmfs._kernels._lsh``
  (bit b of a row: the float32 sum of x_j * P[j, b] over j in order, > t_b; see
  mmfs_lsh.h) for the rows that exist when the index is created, and by every later
  write for its own rows; the commit publishes them with the rows (``n_rows``).
  P is ``numpy.random.default_rng(seed).standard_normal((d, B), dtype=float32)``; t is
  0 for cosine and inner product, and P's projection of the rows' mean for euclidean
  (the codes then split the data around its centre, not around the origin).

The bucket tables.  A row's bucket in table t (of T = ``tables``) is bits
[t * K, (t + 1) * K) of its code's word 1 (word 0 when the code has one word), K =
``table_bits``; a search probes the buckets near the query's in each table (see
``mmfs._kernels._lsh``) instead of scanning every prefix.  A table lists the rows of each
bucket (the offsets of the 2^K buckets, then the rows, bucket by bucket, in row order)
for the first ``table_rows`` rows, and the file holds the T tables one after the other;
rows written since (the tail) are found by a scan of their keys, so the tables only make
a search faster, never change its answer.  A commit builds them anew (``<tgen>``: that
commit's generation) once the tail reaches max(2^K, table_rows / 8) rows, a counting sort
over the codes already written.  Each table costs 4 bytes a row.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import scipy.sparse as sp

from mmfs._kernels import _lsh
from mmfs.errors import CorruptStoreError, ParameterError
from mmfs.schema import Dense, FeatureType, Sparse
from mmfs.storage.arena import Arena, seg_bits_for
from mmfs.storage.fileformat import open_array, write_array_file

__all__ = ["IndexDef", "LshFiles", "codes_of", "projections", "read_table", "write_table"]

KINDS: Final = ("lsh", "exact", "kdtree")
LSH_METRICS: Final = ("cosine", "inner_product", "euclidean")
#: scipy's cKDTree serves these (the value: its Minkowski p; None: given at search time)
KDTREE_METRICS: Final = {"euclidean": 2.0, "cityblock": 1.0, "chebyshev": np.inf, "minkowski": None}
MAX_BITS: Final = 4096
#: key lengths a bucket table may have (0: none; every search scans every prefix)
TABLE_BITS: Final = range(8, 21)
_FIELDS: Final = {
    "kind": str, "metric": str, "bits": int, "seed": int, "gen": int, "n_rows": int,
    "created_ns": int, "candidates": (int, type(None)),
}  # fmt: skip
#: fields added with the bucket table; a manifest from before has none (read as 0)
_TABLE_FIELDS: Final = ("table_bits", "table_rows", "table_gen")


@dataclass(frozen=True)
class IndexDef:
    """One index of a group, as its manifest records it."""

    kind: str
    metric: str
    bits: int  # lsh: code length (a multiple of 64); other kinds: 0
    seed: int
    gen: int  # the generation that created it (names its files)
    n_rows: int  # lsh: rows that have a code (all of the group's committed rows)
    created_ns: int
    candidates: int | None  # lsh: rows re-ranked exactly per query (None: the default)
    table_bits: int = 0  # lsh: the key length K of the bucket table (0: no buckets)
    table_rows: int = 0  # rows the bucket table file lists (0: no file)
    table_gen: int = 0  # the commit that wrote that file (names it)
    tables: int = 1  # lsh: bucket tables, each keyed by its own table_bits code bits

    @property
    def words(self) -> int:
        return self.bits // 64

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: Any, ftype: FeatureType | None, src: str) -> IndexDef:
        if isinstance(doc, dict) and not set(_TABLE_FIELDS) & set(doc):
            doc = {**doc, **dict.fromkeys(_TABLE_FIELDS, 0)}
        if isinstance(doc, dict) and "tables" not in doc:  # from before tables=: one
            doc = {**doc, "tables": 1}
        fields = {**_FIELDS, **dict.fromkeys((*_TABLE_FIELDS, "tables"), int)}
        if not isinstance(doc, dict) or set(doc) != set(fields):
            raise CorruptStoreError(f"{src}: an index must have the fields {sorted(fields)}")
        for name, kind in fields.items():
            if not isinstance(doc[name], kind) or isinstance(doc[name], bool):
                raise CorruptStoreError(f"{src}: index field {name!r} is {doc[name]!r}")
        idx = cls(**doc)
        try:
            check(
                idx.kind, idx.metric, idx.bits, idx.seed, idx.candidates, ftype, idx.table_bits,
                idx.tables,
            )  # fmt: skip
        except ParameterError as exc:
            raise CorruptStoreError(f"{src}: {exc}") from None
        if idx.gen < 0 or idx.n_rows < 0 or (idx.kind != "lsh" and idx.n_rows):
            raise CorruptStoreError(f"{src}: index counts out of range")
        if (
            (idx.table_bits and idx.kind != "lsh")
            or not 0 <= idx.table_rows <= idx.n_rows
            or (idx.table_rows > 0) != (idx.table_gen > 0)
            or (idx.table_rows and not idx.table_bits)
            or (idx.tables > 1 and not idx.table_bits)
        ):
            raise CorruptStoreError(f"{src}: the index's bucket table fields are out of range")
        return idx


def is_vector(ftype: Any) -> bool:
    """True for the features similarity search serves: float vectors, dense or sparse."""
    return isinstance(ftype, Sparse) or (isinstance(ftype, Dense) and ftype.dtype != "bool")


def check(
    kind: Any,
    metric: Any,
    bits: Any,
    seed: Any,
    candidates: Any,
    ftype: FeatureType | None,
    table_bits: Any = None,
    tables: Any = 1,
) -> None:
    """Refuse an index definition that cannot work, saying why."""
    if kind not in KINDS:
        raise ParameterError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if not is_vector(ftype):
        raise ParameterError(
            f"an index needs a dense or sparse float vector feature, got {ftype!r}"
        )
    for name, v in (("seed", seed), ("bits", bits)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ParameterError(f"{name} must be a non-negative integer, got {v!r}")
    if candidates is not None and (
        not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1
    ):
        raise ParameterError(f"candidates must be a positive integer or None, got {candidates!r}")
    if table_bits is not None and (
        not isinstance(table_bits, int) or isinstance(table_bits, bool)
        or (table_bits and table_bits not in TABLE_BITS)
    ):  # fmt: skip
        raise ParameterError(
            f"table_bits must be None, 0 or an int in [{TABLE_BITS.start}, "
            f"{TABLE_BITS.stop - 1}], got {table_bits!r}"
        )
    if (
        not isinstance(tables, int)
        or isinstance(tables, bool)
        or not 1 <= tables <= 64 // (table_bits or TABLE_BITS.start)
    ):
        raise ParameterError(
            f"tables must be an int from 1 to 64 // table_bits (the tables key on disjoint "
            f"bits of one code word), got {tables!r} for table_bits={table_bits!r}"
        )
    if kind == "lsh" and table_bits == 0 and tables != 1:
        raise ParameterError(f"tables={tables} needs bucket tables, not table_bits=0")
    if kind == "lsh":
        if metric not in LSH_METRICS:
            raise ParameterError(
                f"an lsh index serves the metrics {list(LSH_METRICS)}, got {metric!r} "
                "(any metric can re-rank at search time: search(..., metric=...))"
            )
        if bits < 64 or bits % 64 or bits > MAX_BITS:
            raise ParameterError(f"bits must be a multiple of 64 in [64, {MAX_BITS}], got {bits}")
        if isinstance(ftype, Dense) and ftype.dtype == "int8":
            raise ParameterError(
                "an lsh index reads float32, float16 or sparse vectors; for an int8 feature "
                "use kind='exact'"
            )
    elif kind == "kdtree":
        if metric not in KDTREE_METRICS:
            raise ParameterError(
                f"a kdtree index serves the metrics {list(KDTREE_METRICS)}, got {metric!r}"
            )
        if isinstance(ftype, Sparse):
            raise ParameterError("a kdtree index needs a dense feature (scipy's cKDTree)")
    elif not isinstance(metric, str):
        raise ParameterError(f"metric must be a metric name, got {metric!r}")


def projections(dim: int, bits: int, seed: int) -> np.ndarray:
    """The projection matrix P (float32, dim x bits) of an lsh index."""
    return np.random.default_rng(seed).standard_normal((dim, bits), dtype=np.float32)


def thresholds(P: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """t_b = mean . P[:, b] (float64, rounded to float32); zeros without a mean."""
    if mean is None:
        return np.zeros(P.shape[1], dtype=np.float32)
    return (mean.astype(np.float64) @ P.astype(np.float64)).astype(np.float32)


def codes_of(
    values: Any, P: np.ndarray, t: np.ndarray, n_threads: int, sums: np.ndarray | None = None
) -> np.ndarray:
    """The codes (uint64, n x W) of rows given as a dense array or a CSR matrix; ``sums``
    (float32, n x B), when given, receives the projections themselves."""
    W = P.shape[1] // 64
    if sp.issparse(values):
        csr = sp.csr_matrix(values, dtype=np.float32)
        if not csr.has_sorted_indices:
            csr = csr.sorted_indices()
        out = np.empty((len(csr.indptr) - 1, W), dtype=np.uint64)
        _lsh.srp_csr(
            csr.indptr.astype(np.int64), csr.indices.astype(np.int32, copy=False),
            csr.data, P, t, out, n_threads, sums,
        )  # fmt: skip
        return out
    X = np.ascontiguousarray(values)
    if X.dtype != np.float64:
        X = np.ascontiguousarray(X, dtype=np.float32)
    out = np.empty((X.shape[0], W), dtype=np.uint64)
    _lsh.srp_dense(X, P, t, out, n_threads, sums)
    return out


def auto_table_bits(n_rows: int) -> int:
    """The key length of a new index's bucket table: about 16 rows a bucket for the rows
    it starts with, 10 to 20 bits; 16 for an empty group (chosen on the benchmark of
    issue 8)."""
    return 16 if n_rows == 0 else min(20, max(10, round(np.log2(n_rows / 16))))


def table_due(idx: IndexDef, n_rows: int) -> bool:
    """Whether a commit that leaves ``n_rows`` coded rows builds the table anew (never
    past 2^31 rows, which int32 rows cannot name: the rows beyond are the tail)."""
    tail = n_rows - idx.table_rows
    return (
        idx.table_bits > 0 and tail > 0 and tail >= max(1 << idx.table_bits, idx.table_rows // 8)
        and n_rows < 1 << 31
    )  # fmt: skip


def table_path(directory: str, feature: str, idx: IndexDef) -> str:
    return os.path.join(directory, f"lsht@{idx.table_gen:012d}-{feature}-{idx.gen:012d}.mmfs")


def table_block(bits: int, n_rows: int) -> int:
    """int32 words of one bucket table over n_rows rows: the offsets, then the rows."""
    return (1 << bits) + 1 + n_rows


def build_table(files: LshFiles, n_rows: int, bits: int, tables: int) -> np.ndarray:
    """The bucket tables of the first n_rows (< 2^31) coded rows, one after the other
    (see the module docstring)."""
    prefix, rest, _maps = files.addresses(n_rows)
    block = table_block(bits, n_rows)
    out = np.empty(tables * block, dtype=np.int32)
    segs, stride = (rest, files.rest.width or 1) if files.rest is not None else (prefix, 1)
    for t in range(tables):
        part = out[t * block : (t + 1) * block]
        _lsh.table_build(segs, files.seg_bits, stride, n_rows, bits, part, t * bits)
    return out


def write_table(
    directory: str, feature: str, idx: IndexDef, files: LshFiles, durable: bool
) -> None:
    """Build and write the table that ``idx`` names (its first ``table_rows`` rows)."""
    write_array_file(
        table_path(directory, feature, idx),
        build_table(files, idx.table_rows, idx.table_bits, idx.tables), "META", durable=durable,
    )  # fmt: skip


def read_table(directory: str, feature: str, idx: IndexDef) -> np.ndarray:
    """The bucket tables of an lsh index, mapped and checked (their offsets; the kernel
    checks each row it reads)."""
    path = table_path(directory, feature, idx)
    a = open_array(path, "META")
    n_buckets = 1 << idx.table_bits
    block = table_block(idx.table_bits, idx.table_rows)
    if a.dtype != np.int32 or a.shape != (idx.tables * block,):
        raise CorruptStoreError(
            f"{path}: bucket tables of dtype {a.dtype} and shape {a.shape}, expected int32 "
            f"({idx.tables * block},)"
        )
    for t in range(idx.tables):
        off = a[t * block : t * block + n_buckets + 1]
        if off[0] != 0 or off[-1] != idx.table_rows or np.any(np.diff(off) < 0):
            raise CorruptStoreError(f"{path}: the bucket offsets of table {t} are out of order")
    return a


def projection_path(directory: str, feature: str, gen: int) -> str:
    return os.path.join(directory, f"lshp-{feature}-{gen:012d}.mmfs")


def write_projection(
    directory: str, feature: str, gen: int, P: np.ndarray, t: np.ndarray, durable: bool
) -> None:
    write_array_file(
        projection_path(directory, feature, gen), np.vstack([P, t[None, :]]), "META",
        durable=durable,
    )  # fmt: skip


def read_projection(
    directory: str, feature: str, idx: IndexDef, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """(P, t) of an lsh index, mapped from its file and checked."""
    path = projection_path(directory, feature, idx.gen)
    a = open_array(path, "META")
    if a.dtype != np.float32 or a.shape != (dim + 1, idx.bits):
        raise CorruptStoreError(
            f"{path}: projections of dtype {a.dtype} and shape {a.shape}, expected float32 "
            f"({dim + 1}, {idx.bits})"
        )
    return a[:dim], a[dim]


class LshFiles:
    """The two code arenas of one lsh index (both with the same elements per segment,
    which the scan kernel relies on)."""

    def __init__(self, directory: str, feature: str, idx: IndexDef, segment_bytes: int) -> None:
        W = idx.words
        bits = seg_bits_for(8 * W, segment_bytes)
        stem = f"lsh@{idx.gen:012d}-{feature}"
        self.prefix = Arena(directory, f"{stem}-p", np.uint64, None, bits)
        self.rest = Arena(directory, f"{stem}-r", np.uint64, W - 1, bits) if W > 1 else None
        self.seg_bits = bits

    def arenas(self) -> list[Arena]:
        return [self.prefix] if self.rest is None else [self.prefix, self.rest]

    def write(self, start: int, codes: np.ndarray, durable: bool) -> None:
        self.prefix.write(start, np.ascontiguousarray(codes[:, 0]), durable=durable)
        if self.rest is not None:
            self.rest.write(start, np.ascontiguousarray(codes[:, 1:]), durable=durable)

    def flush(self, start: int, stop: int) -> None:
        for a in self.arenas():
            a.flush(start, stop)

    def remove_from(self, n_rows: int) -> None:
        for a in self.arenas():
            a.remove_segments_from(a.segments_for(n_rows))

    def addresses(self, n_rows: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        pa, pm = self.prefix.addresses(n_rows)
        if self.rest is None:
            return pa, np.zeros(0, dtype=np.intp), pm
        ra, rm = self.rest.addresses(n_rows)
        return pa, ra, pm + rm
