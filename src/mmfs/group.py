"""Feature groups: writing rows, and reading a committed generation of them.

Files of a group (in ``<store>/groups/g<id>/``; ``<gen>`` is a 12-digit generation):

  rows-NNNNNN.mmfs                 record arena (uint8 [R, record_bytes]; mmfs.schema)
  pages-NNNNNN.mmfs                page arena (int64 [PS, P]): copies of page-table pages
  dir-<gen>.mmfs                   directory of generation gen (int64 [ceil(slots / P)]):
                                   the page id holding each run of P slots
  kidx-<gen>-<array>.mmfs          the key index arrays as of gen (mmfs.storage.keyindex)
  cat-<feature>-<gen>-<array>.mmfs a category dictionary (a str key index: code = slot)
  quant-<feature>-<gen>.mmfs       int8 scale and offset (float32 [2, dim])
  sp-<feature>-idx/val-NNNNNN.mmfs sparse element arenas (int32 indices, float32 values)
  lshp-<feature>-<gen>.mmfs, lsh@<gen>-<feature>-p/r-NNNNNN.mmfs
                                   an lsh index: projections and codes (mmfs.index.lsh)

The manifest of a generation names which ``<gen>`` of each file is current and how many
rows, slots, pages and sparse elements are committed; nothing else is trusted.

Writing.  ``write`` validates everything first (keys, every feature's values, event
times), charges the memory budget, then appends one record per key to the row arena
beyond the committed count, and updates the writer's in-memory page table (slot -> the
row with the greatest event time; a tie goes to the row written later, so duplicate keys
in one write resolve to the last one).  New keys and new category values get their slots
and codes only after the records are written, so a failed write leaves the group as it
was.  ``Store.commit`` then writes the changed pages (copy-on-write: a page a reader may
hold is never rewritten), the new directory, the key index if keys were added, and
publishes a manifest.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np
import scipy.sparse as sp

from mmfs._config import PARALLEL_GRAIN, effective_n_threads, threads_for
from mmfs._kernels import _assign, _store
from mmfs._times import now_ns, one_ns, to_ns
from mmfs.budget import MemoryBudget, Reservation
from mmfs.errors import (
    CorruptStoreError,
    DimensionError,
    NotFoundError,
    ParameterError,
    TransformError,
)
from mmfs.experiments.catalog import assign_codes
from mmfs.experiments.hashing import as_keys, n_threads_for
from mmfs.featurebatch import FeatureBatch, compute
from mmfs.index import search as _search
from mmfs.index.lsh import (
    IndexDef,
    LshFiles,
    auto_table_bits,
    check,
    codes_of,
    projections,
    read_projection,
    thresholds,
    write_projection,
)
from mmfs.schema import Category, Dense, FeatureType, Scalar, Sparse, layout
from mmfs.storage.arena import Arena, seg_bits_for
from mmfs.storage.fileformat import open_array, write_array_file
from mmfs.storage.keyindex import KeyIndex, _as_int_keys, _as_str_keys
from mmfs.transforms._base import Affine, Affine32, Transform, affine32, affine_flags
from mmfs.transforms.catalog import StoredTransform, outputs

if TYPE_CHECKING:  # pragma: no cover
    from mmfs.store import Store

__all__ = ["FeatureGroup"]

PAGE_BITS: Final = 6  # 64 slots (512 bytes) per page-table page
_STR_OVERHEAD: Final = 49  # bytes of a Python str object beyond its characters
_INDEX_VERIFY_LIMIT: Final = 1 << 20  # key index files checksummed on load up to 1 MiB
_I64 = np.dtype(np.int64)
_TOMB: Final = _store.TOMBSTONE  # the flag of a tombstone's slot (see FeatureGroup.delete)
_NO_ROW_T: Final = np.iinfo(np.int64).min  # _Pending.latest_t of a slot without a row
_MAX_AUTO_BATCH: Final = 1 << 17  # iter_batches' default batch size, at most
# A fused read (RowTable.get_int) hands its threads 1,024 keys at a time; on the 2-core
# development VM two threads read 1.9x as fast as one from 2,048 keys on, and 0.94x at
# 1,024 (tools/tune_batch_threshold.py, 1M keys of 8 scalars + 128-d float32).
_PARALLEL_KEYS: Final = 2048
_SCALAR_DTYPES: Final = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "int64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}


def gen_name(gen: int) -> str:
    return f"{gen:012d}"


def hist_name(gen: int, j: int) -> str:
    return f"hist-{gen_name(gen)}-{j}.mmfs"


def hmin_name(gen: int, j: int) -> str:
    """The row-minimum levels of history run (gen, j) (see _store.min_levels)."""
    return f"hmin-{gen_name(gen)}-{j}.mmfs"


def pages_prefix(base: int) -> str:
    """The page arena of a group whose page table was last rewritten whole at
    generation ``base`` (0: never)."""
    return "pages" if base == 0 else f"pages@{gen_name(base)}"


# --------------------------------------------------------------------------- metadata


@dataclass
class GroupMeta:
    """A group as one manifest describes it (parsed and checked by mmfs.store)."""

    name: str
    id: int
    key: str
    key_type: str
    features: dict[str, FeatureType]
    description: str
    created_ns: int
    written_ns: int | None
    n_rows: int = 0
    n_slots: int = 0
    n_pages: int = 0
    keys_gen: int | None = None
    dir_gen: int | None = None
    #: the generation whose page arena holds the pages (compacted: see Store._commit_group)
    pages_base: int = 0
    categories: dict[str, int | None] = field(default_factory=dict)
    quant: dict[str, int | None] = field(default_factory=dict)
    sparse_elems: dict[str, int] = field(default_factory=dict)
    #: event-time history runs (generation, number, entries): see _Snapshot.asof_rows
    history: list[tuple[int, int, int]] = field(default_factory=list)
    #: the group's definition version: 1 at creation, +1 at each store.alter_group
    definition: int = 1
    #: per feature: created_ns, definition (the one that gave it its type), description,
    #: owner, tags, derived (None, or how it was computed: see mmfs.lineage)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: feature -> its similarity index (mmfs.index)
    indexes: dict[str, IndexDef] = field(default_factory=dict)
    #: slots whose latest row is a tombstone (FeatureGroup.delete): keys without a value
    n_deleted: int = 0

    @property
    def n_keys(self) -> int:
        """Keys with a value (the committed keys less the deleted ones)."""
        return self.n_slots - self.n_deleted

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "key_type": self.key_type,
            "features": [[n, t.to_json()] for n, t in self.features.items()],
            "record_bytes": layout(self.features).record_bytes,
            "description": self.description,
            "created_ns": self.created_ns,
            "written_ns": self.written_ns,
            "n_rows": self.n_rows,
            "n_slots": self.n_slots,
            "n_pages": self.n_pages,
            "keys_gen": self.keys_gen,
            "dir_gen": self.dir_gen,
            "pages_base": self.pages_base,
            "categories": self.categories,
            "quant": self.quant,
            "sparse_elems": self.sparse_elems,
            "history": [list(run) for run in self.history],
            "definition": self.definition,
            "info": self.info,
            "indexes": {f: idx.to_json() for f, idx in self.indexes.items()},
            "n_deleted": self.n_deleted,
        }


class GroupFiles:
    """The arenas and file names of one group directory (shared by reader and writer)."""

    def __init__(self, directory: str, meta: GroupMeta, segment_bytes: int) -> None:
        self.directory = directory
        lay = layout(meta.features)
        self.record_bytes = lay.record_bytes
        self.offsets = lay.offsets
        self.rows = Arena(
            directory, "rows", np.uint8, lay.record_bytes,
            seg_bits_for(lay.record_bytes, segment_bytes),
        )  # fmt: skip
        self._page_bits = seg_bits_for(8 << PAGE_BITS, segment_bytes)
        self._pages: dict[int, Arena] = {}
        self.segment_bytes = segment_bytes
        self._lsh: dict[tuple[str, int], LshFiles] = {}
        self._projections: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        self.sparse: dict[str, tuple[Arena, Arena]] = {}
        for name, ftype in meta.features.items():
            if isinstance(ftype, Sparse):
                bits = seg_bits_for(4, segment_bytes, minimum=ftype.dim)
                self.sparse[name] = (
                    Arena(directory, f"sp-{name}-idx", np.int32, None, bits),
                    Arena(directory, f"sp-{name}-val", np.float32, None, bits),
                )

    def pages(self, base: int) -> Arena:
        """The page arena of page-table base generation ``base``."""
        arena = self._pages.get(base)
        if arena is None:
            arena = Arena(self.directory, pages_prefix(base), _I64, 1 << PAGE_BITS, self._page_bits)
            self._pages[base] = arena
        return arena

    def lsh_files(self, feature: str, idx: IndexDef) -> LshFiles:
        """The code arenas of an lsh index."""
        files = self._lsh.get((feature, idx.gen))
        if files is None:
            files = self._lsh[(feature, idx.gen)] = LshFiles(
                self.directory, feature, idx, self.segment_bytes
            )
        return files

    def projection(self, feature: str, idx: IndexDef, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(P, t) of an lsh index, mapped once."""
        pt = self._projections.get((feature, idx.gen))
        if pt is None:
            pt = self._projections[(feature, idx.gen)] = read_projection(
                self.directory, feature, idx, dim
            )
        return pt

    def forget_lsh(self, feature: str, gen: int) -> None:
        """Drop what is cached of an index's files: a writer that creates an index again
        before committing (the same generation, other bits or seed) writes them anew."""
        self._projections.pop((feature, gen), None)
        files = self._lsh.pop((feature, gen), None)
        if files is not None:
            for a in files.arenas():
                a.close()

    def page_bases(self) -> list[int]:
        return list(self._pages)

    def forget_pages(self, base: int) -> None:
        arena = self._pages.pop(base, None)
        if arena is not None:
            arena.close()

    def arenas(self) -> list[Arena]:
        out = [self.rows, *self._pages.values()]
        for a, b in self.sparse.values():
            out += [a, b]
        for lsh in self._lsh.values():
            out += lsh.arenas()
        return out

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def close(self) -> None:
        for a in self.arenas():
            a.close()


def min_levels_size(m: int) -> int:
    """The length of the row-minimum levels of a history run of m entries."""
    total = 0
    while m > 1:
        m = (m + 63) >> 6
        total += m
    return total


def _load_key_index(
    files: GroupFiles, prefix: str, gen: int | None, key_type: str, n_keys: int | None = None
) -> KeyIndex:
    """Map a key index.  Payload checksums are checked here for files up to
    _INDEX_VERIFY_LIMIT bytes and left to Store.verify() above that: checking them would
    read every page of a large index on each reload (the probes never trust the contents:
    a damaged table reads as CorruptStoreError, never as a crash)."""
    if gen is None:
        return KeyIndex(key_type)  # type: ignore[arg-type]
    names = (
        ("hashes", "slots", "key_bytes", "key_offsets") if key_type == "str" else ("keys", "slots")
    )
    arrays = {}
    for n in names:
        path = files.path(f"{prefix}-{gen_name(gen)}-{n}.mmfs")
        arrays[n] = open_array(path, "KIDX", verify_limit=_INDEX_VERIFY_LIMIT)
    if key_type == "str":
        n_keys = None  # a str index knows its count from key_offsets
    return KeyIndex.from_arrays(arrays, key_type, validate=False, n_keys=n_keys)  # type: ignore[arg-type]


def _save_key_index(
    files: GroupFiles, prefix: str, gen: int, index: KeyIndex, durable: bool
) -> None:
    for n, a in index.arrays().items():
        write_array_file(
            files.path(f"{prefix}-{gen_name(gen)}-{n}.mmfs"), a, "KIDX", durable=durable
        )


# --------------------------------------------------------------------------- reading


class _Post(NamedTuple):
    """A transform computed after the copy (one that is not affine): from the record
    fields ``inputs`` (features ``features`` of types ``types``) into ``outputs``."""

    transform: Transform
    inputs: tuple[str, ...]
    types: tuple[FeatureType, ...]
    outputs: tuple[str, ...]
    widths: tuple[int, ...]  # columns of each output
    ref: str  # the stored transform's name@version


class _Plan(NamedTuple):
    names: tuple[str, ...]
    fields: _store.FieldPlan
    row_bytes: int
    dtype: np.dtype  # the record dtype of the output block
    all_f32: bool  # every feature float32 (scalar or dense): the block is the matrix
    # Features read straight from the block (scalars, float32/float16 vectors):
    # name -> (dtype, byte offset in a record, shape and strides after the key axis).
    views: dict[str, tuple[np.dtype, int, tuple[int, ...], tuple[int, ...]]]
    reads: list[int]  # [calls, keys] read with this plan (folded into Store.read_counts)
    # The type of every field (names, and a transformed read's hidden inputs "~feature"),
    # and the stored feature each field reads (a transformed output: its input).
    types: Mapping[str, FeatureType]
    sources: Mapping[str, str]
    post: tuple[_Post, ...] = ()  # transforms FeatureBatch computes into their fields
    # What built ``fields`` (record offsets, sizes, fused affine arrays): experiment arms'
    # plans are merged into one FieldPlan with variants from these (_merged_plan).
    parts: Any = None


class Selection(NamedTuple):
    """A transformed read's selection: raw features, then the transforms' outputs."""

    raw: tuple[str, ...]
    transforms: tuple[StoredTransform, ...]


def _stored_format(ftype: FeatureType) -> Any:
    if isinstance(ftype, Scalar):
        return _SCALAR_DTYPES[ftype.dtype].newbyteorder("<")
    if isinstance(ftype, Category):
        return np.dtype("<i4")
    if isinstance(ftype, Sparse):
        return (np.dtype("<i8"), (2,))
    fmt = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "int8": "i1", "bool": "u1"}[
        ftype.dtype
    ]
    return (np.dtype(fmt), (ftype.stored_bytes if ftype.dtype == "bool" else ftype.dim,))


def _build_plan(
    snap: _Snapshot,
    entries: list[tuple[str, str | None, FeatureType, bool]],
    affine: list[tuple[str, Affine, int, Affine32 | None]] = (),  # type: ignore[assignment]
    post: tuple[_Post, ...] = (),
) -> _Plan:
    """The plan of record fields ``entries``: (field name, stored feature it copies or
    None for a field the read reserves for a post transform, type, public).  Public
    fields are the batch's features, in order; ``affine``: (field, its columns of an
    affine step, the step's flags, its float32 form or None) to fuse.  Adjacent fields of
    one kind make one kernel segment (a transform over many scalars is one call per row,
    not one per scalar)."""
    fo = np.array([-1 if src is None else snap.offsets[src] for _, src, _, _ in entries], _I64)
    fs = np.array([_stored_size(t) for _, _, t, _ in entries], dtype=_I64)
    starts = np.concatenate(([0], np.cumsum(fs)[:-1])).astype(_I64)
    names = tuple(n for n, _, _, public in entries if public)
    types = {n: t for n, src, t, public in entries if public or src is not None}
    all_f32 = len(names) == len(entries) and all(
        isinstance(t, Scalar | Dense) and t.dtype == "float32" for t in types.values()
    )
    fused = None
    if affine:
        at = {n: int(starts[i]) for i, (n, _, _, _) in enumerate(entries)}
        segs: list[list[int]] = []  # [byte offset, elements, kind, first parameter]
        col = 0
        for n, _, flags, p32 in affine:
            t = types[n]
            wide = t.dtype == "float64"  # type: ignore[union-attr]
            kind = (1 | flags) if wide else (flags if p32 is None else p32.flags)
            last = segs[-1] if segs else None
            if last and last[2] == kind and last[0] + last[1] * _itemsize(t) == at[n]:
                last[1] += t.width
            else:
                segs.append([at[n], t.width, kind, col])
            col += t.width
        params = np.concatenate([np.stack(a) for _, a, _, _ in affine], axis=1)
        params32 = np.concatenate(
            [
                np.zeros((7, a.sub.shape[0]), np.float32) if p32 is None else np.stack(p32[:7])
                for _, a, _, p32 in affine
            ],
            axis=1,
        )
        at_, counts, kinds, first = (np.array(c, dtype=_I64) for c in zip(*segs, strict=True))
        fused = (at_, counts, kinds, first, params, params32)
    fields = _store.FieldPlan(fo, fs, all_f32, fused)
    dtype = np.dtype(
        {
            "names": [n for n, _, _, _ in entries],
            "formats": [_stored_format(t) for _, _, t, _ in entries],
            "offsets": starts.tolist(),
            "itemsize": max(1, fields.row_bytes),
        }
    )
    views = {}
    fields_of: Any = dtype.fields
    for n, _, t, _ in entries:
        sub, offset = fields_of[n][0], fields_of[n][1]
        if isinstance(t, Scalar) or (isinstance(t, Dense) and t.dtype.startswith("float")):
            views[n] = (sub.base, offset, sub.shape, (sub.base.itemsize,) * len(sub.shape))
    sources = {n: src or n for n, src, _, _ in entries}
    return _Plan(
        names, fields, fields.row_bytes, dtype, fields.float_rows, views, [0, 0], types,
        sources, post, (fo, fs, fused),
    )  # fmt: skip


def _stored_size(t: FeatureType) -> int:
    if isinstance(t, Dense) and t.dtype == "float64":  # a transform's float64 vector output
        return 8 * t.dim
    return t.stored_bytes


def _fusable(t: FeatureType) -> bool:
    """A feature whose stored bytes are its float values (the kernel's affine step works
    on them in place)."""
    return (isinstance(t, Scalar) and t.dtype in ("float32", "float64")) or (
        isinstance(t, Dense) and t.dtype == "float32"
    )


def _transformed_plan(snap: _Snapshot, sel: Selection) -> _Plan:
    """The plan of a transformed read: the raw features, then each transform's outputs
    (``feature:name`` per input feature for a column-wise transform, ``name`` for one
    that mixes its inputs).  An affine transform over float features is fused into the
    kernel's copy (its outputs copy their inputs, then the step runs in place, aligned);
    any other one reads its inputs into hidden fields and runs after the copy."""
    entries: list[tuple[str, str | None, FeatureType, bool]] = [
        (n, n, snap.features[n], True) for n in snap.check_names(sel.raw)
    ]
    hidden: list[tuple[str, str | None, FeatureType, bool]] = []
    affine: list[tuple[str, Affine, int, Affine32 | None]] = []
    posts: list[_Post] = []
    taken = {n for n, _, _, _ in entries}
    for st in sel.transforms:
        t = st.transform
        if st.group != snap.meta.name:
            raise ParameterError(
                f"transform {st.ref} is over group {st.group!r}, not {snap.meta.name!r}"
            )
        for f, ty in zip(st.features, st.types, strict=True):
            if snap.features.get(f) != ty:
                raise TransformError(
                    f"transform {st.ref} was fitted on {st.group}.{f} of type {ty}; at this "
                    f"version it is {snap.features.get(f, 'absent')}: refit it"
                )
        outs = [o for o, _ in outputs(st)]
        clash = [o for o in outs if o in taken]
        if clash:
            raise ParameterError(f"transform {st.ref}: outputs {clash} are already in the read")
        taken.update(outs)
        step = t.affine()
        if step is not None and all(_fusable(ty) for ty in st.types):
            flags = affine_flags(step)  # the whole step's, as apply_affine uses them
            p32 = affine32(step)
            col = 0
            for f, ty, o in zip(st.features, st.types, outs, strict=True):
                gap = -sum(_stored_size(e[2]) for e in entries) % _itemsize(ty)
                if gap:  # the kernel works on aligned values: pad (a hidden field)
                    entries.append((f"~pad{len(entries)}", None, Dense(gap, "int8"), False))
                w = ty.width
                entries.append((o, f, ty, True))
                part32 = None
                if p32 is not None:
                    part32 = Affine32(*(p[col : col + w] for p in p32[:7]), flags=p32.flags)
                affine.append((o, Affine(*(p[col : col + w] for p in step)), flags, part32))
                col += w
            continue
        inputs = []
        for f, ty in zip(st.features, st.types, strict=True):
            field = f"~{f}"
            if field not in {h[0] for h in hidden}:
                hidden.append((field, f, ty, False))
            inputs.append(field)
        outs_typed = outputs(st)
        for o, ty in outs_typed:
            entries.append((o, None, ty, True))
        widths = tuple(ty.width for _, ty in outs_typed)
        posts.append(_Post(t, tuple(inputs), st.types, tuple(outs), widths, st.ref))
    return _build_plan(snap, entries + hidden, affine, tuple(posts))


def _itemsize(t: FeatureType) -> int:
    return 8 if t.dtype == "float64" else 4  # type: ignore[union-attr]


#: as-of lookups of at least this many keys sort them by slot and merge (_as_of_batch)
_SORTED_ASOF: Final = 2048
_END_NS: Final = np.iinfo(np.int64).max
_END_OF_TIME: Final = np.datetime64(_END_NS, "ns")  # int64: never NaT
_FOUND: Final = np.ones(1, dtype=bool)
_NOT_FOUND: Final = np.zeros(1, dtype=bool)
_FOUND.flags.writeable = False
_NOT_FOUND.flags.writeable = False


class _Snapshot:
    """One committed generation of one group, mapped and ready for the read kernel."""

    def __init__(
        self,
        meta: GroupMeta,
        files: GroupFiles,
        head: np.ndarray,
        gen: int,
        budget: MemoryBudget | None = None,
        *,
        index_meta: GroupMeta | None = None,
        cached: set[str] | None = None,
    ) -> None:
        """``index_meta``: for a pinned older version (``meta``), the newest generation of
        the group, whose key index, category dictionaries and history runs to read: keys
        keep their slots and categories their codes, so newer ones are supersets, and the
        runs are read up to the version's row count.  A pinned snapshot has no page
        table: it reads every key through the history (get as of the end of time)."""
        self.meta = meta
        self.gen = gen  # the generation read (a pinned snapshot: a sentinel)
        self.budget = budget
        self._reservations: dict[str, Reservation] = {}
        #: what searches of this snapshot keep (mmfs.index.search): current rows, bitmaps,
        #: kd-trees, lsh readers
        self.search_cache: dict[Any, Any] = {}
        self.files = files
        self.features = meta.features
        self.str_keys = meta.key_type == "str"
        self.sizes = {n: t.stored_bytes for n, t in meta.features.items()}
        self.sizes["event_time"] = 8
        self.offsets = files.offsets
        src = meta if index_meta is None else index_meta
        index = _load_key_index(files, "kidx", src.keys_gen, meta.key_type, src.n_slots)
        if len(index) != src.n_slots or meta.n_slots > src.n_slots:
            raise CorruptStoreError(
                f"group {meta.name!r}: key index holds {len(index)} keys, the manifest "
                f"says {src.n_slots}"
            )
        self.pinned = index_meta is not None
        n_dir = (meta.n_slots + (1 << PAGE_BITS) - 1) >> PAGE_BITS
        if meta.dir_gen is None or self.pinned:
            n_dir = 0
            directory = np.zeros(0, dtype=_I64)
        else:
            directory = open_array(files.path(f"dir-{gen_name(meta.dir_gen)}.mmfs"), "VTAB")
        if directory.dtype != _I64 or directory.shape != (n_dir,):
            raise CorruptStoreError(
                f"group {meta.name!r}: page directory of shape {directory.shape} and dtype "
                f"{directory.dtype}, expected ({n_dir},) int64"
            )
        self.index = index
        n_pages = 0 if self.pinned else meta.n_pages
        pages = files.pages(meta.pages_base)
        page_addrs, page_maps = pages.addresses(n_pages)
        row_addrs, row_maps = files.rows.addresses(meta.n_rows)
        # The kernel reads through raw addresses: this snapshot keeps what they point at
        # mapped for as long as it lives (a FeatureBatch holds its snapshot).
        self._mapped: list[np.ndarray] = [*page_maps, *row_maps]
        self.table = _store.RowTable(
            index.arrays(), self.str_keys, len(index), meta.n_slots, directory,
            page_addrs, n_pages, PAGE_BITS, pages.seg_bits,
            row_addrs, meta.n_rows, files.rows.seg_bits,
            files.record_bytes, head, gen,
        )  # fmt: skip
        self.directory = directory
        self._plans: dict[Any, _Plan] = {}
        self.selections: dict[Any, Selection] = {}
        # experiment arms' substituted plans, and the (request, arm) plan pairs checked
        self.arm_plans: dict[Any, Any] = {}
        # Transform outputs cached per row (TransformCatalog.cache): the refs the store
        # caches, and what this snapshot has computed of them (ref -> (row of each slot,
        # the outputs of each slot)).
        self.cached_refs = cached if cached is not None else set()
        self.transformed: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}
        self._pins: dict[str, int] | None = None
        self.read_counts: dict[str, list[int]] = {}
        self.default_plan = self.plan(None)
        self._categories: dict[str, np.ndarray] = {}
        self._quant: dict[str, np.ndarray] = {}
        # Map every file of the generation now: a writer may delete superseded files
        # (mmfs.store), and a mapping keeps what it maps.
        self._cat_index = {
            name: _load_key_index(files, f"cat-{name}", gen_, "str")
            for name, gen_ in src.categories.items()
        }
        for name in meta.quant:
            self.quant(name)
        runs, mins = [], []
        for g, j, m in src.history:
            run = open_array(files.path(hist_name(g, j)), "VTAB")
            low = open_array(files.path(hmin_name(g, j)), "VTAB")
            if run.dtype != _I64 or run.shape != (3, m):
                raise CorruptStoreError(
                    f"{files.path(hist_name(g, j))}: history run of dtype {run.dtype} and "
                    f"shape {run.shape}, expected int64 (3, {m})"
                )
            if low.dtype != _I64 or low.shape != (min_levels_size(m),):
                raise CorruptStoreError(
                    f"{files.path(hmin_name(g, j))}: row minima of dtype {low.dtype} and shape "
                    f"{low.shape}, expected int64 ({min_levels_size(m)},)"
                )
            if m:
                runs.append(run)
                mins.append(low)
        self._mapped += runs + mins
        self.runs = runs
        self.run_mins = mins
        self.table.set_history(
            np.array([r.ctypes.data for r in runs], dtype=np.intp),
            np.array([r.shape[1] for r in runs], dtype=_I64),
            np.array([x.ctypes.data for x in mins], dtype=np.intp),
        )
        self._sparse_addrs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, (ia, va) in files.sparse.items():
            idx_addrs, idx_maps = ia.addresses(meta.sparse_elems[name])
            val_addrs, val_maps = va.addresses(meta.sparse_elems[name])
            self._sparse_addrs[name] = (idx_addrs, val_addrs)
            self._mapped += idx_maps + val_maps

    def plan(self, features: Any) -> _Plan:
        """The read plan of a feature selection (None: all features; a Selection: with
        transforms)."""
        key = (
            features if features is None or isinstance(features, str | Selection)
            else tuple(features)
        )  # fmt: skip
        plan = self._plans.get(key)
        if plan is None:
            if isinstance(features, Selection):
                plan = _transformed_plan(self, features)
            else:
                names = self.check_names(features)
                plan = _build_plan(self, [(n, n, self.features[n], True) for n in names])
            if len(self._plans) >= 64:  # keep the newest plans; keep the counts of all
                self.fold_reads(self._plans.pop(next(iter(self._plans))))
            self._plans[key] = plan
        return plan

    def committed_keys(self) -> Any:
        """Every key the snapshot's version has a value for, in slot order (a pinned
        version's key index may hold newer keys beyond its n_slots; deleted keys are
        left out)."""
        keys = self.index.keys()
        n = self.meta.n_slots
        if self.meta.n_deleted:
            live = self.live_slots()
            return [keys[i] for i in live.tolist()] if isinstance(keys, list) else keys[live]
        return keys[:n] if isinstance(keys, list) else keys[:n].copy()

    def slot_rows(self) -> np.ndarray:
        """The current row of every slot of the version (-1: deleted), cached: the page
        table's, or for a pinned version its history's as of the end of time."""
        rows = self.search_cache.get("slot_rows")
        if rows is None:
            n = self.meta.n_slots
            slots = np.arange(n, dtype=_I64)
            if self.pinned:
                rows = np.empty(n, dtype=_I64)
                bad = self.table.asof_rows(slots, np.full(n, _END_NS, dtype=_I64), rows, -1, 1)
            else:
                rows = slots
                bad = self.table.rows_of_slots(rows)
            if bad:
                raise CorruptStoreError(
                    f"group {self.meta.name!r}: a damaged page table or history"
                )
            rows.flags.writeable = False
            self.search_cache["slot_rows"] = rows
        return rows

    def live_slots(self) -> np.ndarray:
        """The slots with a value at this version (every slot but the deleted ones)."""
        if not self.meta.n_deleted:
            return np.arange(self.meta.n_slots, dtype=_I64)
        return np.flatnonzero(self.slot_rows() >= 0)

    def pins(self) -> dict[str, int]:
        """{transform name: version} pinned to this version's features."""
        if self._pins is None:
            pins: dict[str, int] = {}
            for info in self.meta.info.values():
                pins.update(info.get("transforms", {}))
            self._pins = pins
        return self._pins

    def check_names(self, features: Any) -> tuple[str, ...]:
        """A feature selection as a tuple of names (None: all), checked."""
        if features is None:
            names = tuple(self.features)
        elif isinstance(features, str):
            names = (features,)
        else:
            names = tuple(features)
        unknown = [n for n in names if n not in self.features]
        if unknown or len(set(names)) != len(names):
            what = f"unknown features {unknown}" if unknown else "a feature named twice"
            raise ParameterError(
                f"group {self.meta.name!r}: {what}; its features are {list(self.features)}"
            )
        return names

    def fold_reads(self, plan: _Plan) -> None:
        calls, keys = plan.reads
        for name in plan.names:
            c = self.read_counts.setdefault(name, [0, 0])
            c[0] += calls
            c[1] += keys
        plan.reads[:] = [0, 0]

    def take_reads(self) -> dict[str, list[int]]:
        """{feature: [calls, keys]} read through this snapshot since the last take."""
        for plan in [self.default_plan, *self._plans.values()]:
            self.fold_reads(plan)
        out, self.read_counts = self.read_counts, {}
        return out

    # -- decoding (FeatureBatch calls these) ---------------------------------------------

    def decode(self, name: str, field: np.ndarray, found: np.ndarray) -> Any:
        """A feature's values from its field of the batch's record array."""
        ftype = self.features[name]
        missing = not found.all()
        if isinstance(ftype, Category):
            table = self.category_table(name)
            codes = self.check_codes(name, np.where(found, field, -1), table.shape[0] - 1)
            return table[codes]  # code -1 picks the trailing None
        if isinstance(ftype, Sparse):
            return self.decode_sparse(name, ftype, field, found)
        # Scalars and float vectors are read as views of the block (FeatureBatch): what is
        # left is unpacking bits and dequantising int8.
        assert isinstance(ftype, Dense)
        if ftype.dtype == "bool":
            return np.unpackbits(field, axis=1, count=ftype.dim, bitorder="little").view(np.bool_)
        scale, offset = self.quant(name)
        out = field.astype(np.float32)
        out *= scale
        out += offset
        if missing:
            out[~found] = np.nan
        return out

    def category_table(self, name: str) -> np.ndarray:
        """code -> str of a category feature (last entry None, for code -1), decoded once
        and cached; the cache is charged to the store's memory budget, which may evict it."""
        table = self._categories.get(name)
        if table is None:
            index = self._cat_index[name]
            n = len(index)
            nbytes = 8 * (n + 1) + 2 * index.arrays()["key_bytes"].nbytes + _STR_OVERHEAD * n
            if self.budget is not None:
                self._reservations[name] = self.budget.reserve(
                    nbytes, f"the decoded categories of {self.meta.name}.{name}"
                )
            values = index.keys()
            table = np.empty(n + 1, dtype=object)
            table[:n] = values
            table[-1] = None
            self._categories[name] = table
        return table

    def check_codes(self, name: str, codes: np.ndarray, n: int | None = None) -> np.ndarray:
        """codes, checked against the dictionary size (-1: no value)."""
        if n is None:
            n = len(self._cat_index[name])
        if codes.size and (codes.min() < -1 or codes.max() >= n):
            raise CorruptStoreError(
                f"group {self.meta.name!r}: category codes of {name!r} outside its "
                f"dictionary of {n} values"
            )
        return codes

    def drop_caches(self) -> int:
        """Forget decoded category tables; returns the bytes released from the budget."""
        freed = 0
        for reservation in self._reservations.values():
            freed += reservation.nbytes
            reservation.release()
        self._reservations.clear()
        self._categories.clear()
        self.transformed.clear()
        self.search_cache.clear()
        return freed

    def cached_outputs(self, post: _Post) -> tuple[np.ndarray, list[np.ndarray]] | None:
        """The cached outputs of a post transform at this snapshot (computed for every
        key's latest row at the first read that asks, charged to the memory budget), or
        None when the store does not cache it."""
        if post.ref not in self.cached_refs or self.pinned:
            return None
        cache = self.transformed.get(post.ref)
        if cache is None:
            n = self.meta.n_slots
            rows = np.arange(n, dtype=_I64)
            if self.table.rows_of_slots(rows):
                raise CorruptStoreError(f"group {self.meta.name!r}: a damaged page table")
            features = [f[1:] for f in post.inputs]  # the inputs' hidden fields are "~feature"
            plan = self.plan(tuple(features))
            nbytes = 8 * n * (1 + sum(post.widths))
            if self.budget is not None:
                self._reservations[f"~{post.ref}"] = self.budget.reserve(
                    nbytes, f"the cached outputs of transform {post.ref}"
                )
            block = np.empty(n * plan.row_bytes, dtype=np.uint8)
            self.table.gather_plan(rows, plan.fields, block, 1)
            batch = FeatureBatch(self, plan, None, block, rows, np.ones(n, dtype=bool), True)
            values = compute(post, [batch[f] for f in features], n)
            cache = self.transformed[post.ref] = (rows, values)
        return cache

    def quant(self, name: str) -> np.ndarray:
        q = self._quant.get(name)
        if q is None:
            gen = self.meta.quant[name]
            ftype = self.features[name]
            assert isinstance(ftype, Dense)
            if gen is None:  # nothing written yet: any parameters decode zero rows
                q = np.zeros((2, ftype.dim), dtype=np.float32)
            else:
                path = self.files.path(f"quant-{name}-{gen_name(gen)}.mmfs")
                q = np.array(open_array(path, "META"))
                if q.dtype != np.float32 or q.shape != (2, ftype.dim):
                    raise CorruptStoreError(f"{path}: expected float32 (2, {ftype.dim})")
            self._quant[name] = q
        return q

    def decode_sparse(self, name: str, ftype: Sparse, field: np.ndarray, found: np.ndarray) -> Any:
        n = found.shape[0]
        starts = np.ascontiguousarray(field[:, 0])
        sc = field
        counts = np.ascontiguousarray(np.where(found, sc[:, 1], 0))
        if np.any(counts < 0) or np.any(counts > ftype.dim):
            raise CorruptStoreError(f"group {self.meta.name!r}: sparse row counts out of range")
        indptr = np.zeros(n + 1, dtype=_I64)
        np.cumsum(counts, out=indptr[1:])
        indices = np.empty(int(indptr[-1]), dtype=np.int32)
        data = np.empty(int(indptr[-1]), dtype=np.float32)
        addrs = self._sparse_addrs[name]
        n_elems = self.meta.sparse_elems[name]
        ia = self.files.sparse[name][0]
        bad = _store.gather_sparse(
            starts, counts, addrs[0], addrs[1], ia.seg_bits, n_elems, ftype.dim, indptr,
            indices, data,
        )  # fmt: skip
        if bad:
            raise CorruptStoreError(
                f"group {self.meta.name!r}: {bad} sparse rows of {name!r} point outside their "
                "arena or hold indices out of range"
            )
        return sp.csr_matrix((data, indices, indptr), shape=(n, ftype.dim))

    def event_times(self, rows: np.ndarray) -> np.ndarray:
        """Event times (int64 ns) of rows (-1 rows read 0)."""
        return self._header_field(rows, 8)

    def row_slots(self, rows: np.ndarray) -> np.ndarray:
        """The slot each of rows was written for (-1 rows read 0; a tombstone's too)."""
        return self._header_field(rows, 0) & ~_TOMB

    def tombstones(self, rows: np.ndarray) -> np.ndarray:
        """Which of rows are tombstones (written by a delete)."""
        return (self._header_field(rows, 0) & _TOMB) != 0

    def _header_field(self, rows: np.ndarray, offset: int) -> np.ndarray:
        out = np.zeros(rows.shape[0], dtype=_I64)
        where = np.array([offset], dtype=_I64)
        size = np.array([8], dtype=_I64)
        self.table.gather_plan(rows, _store.FieldPlan(where, size), out.view(np.uint8), 1)
        return out


# --------------------------------------------------------------------------- writing


class _Pending:
    """The writer's uncommitted state of one group."""

    def __init__(self, meta: GroupMeta, snap: _Snapshot | None) -> None:
        if snap is not None:  # its own index object: inserts must not change the snapshot's
            self.index = KeyIndex.from_arrays(snap.index.arrays(), meta.key_type, validate=False)  # type: ignore[arg-type]
        else:
            self.index = KeyIndex(meta.key_type)  # type: ignore[arg-type]
        self.keys_changed = False
        n = meta.n_slots
        # per slot: the row of its greatest event time (-1: none, or deleted) and that
        # time (a deleted key's: its tombstone's; _NO_ROW_T: a slot of this write)
        if snap is not None and n:
            rows = np.arange(n, dtype=_I64)
            if snap.table.rows_of_slots(rows):
                raise CorruptStoreError(f"group {meta.name!r}: its page table is corrupt")
            self.latest = rows
            self.latest_t = snap.event_times(rows)
            dead, when = _deleted_keys(snap, rows)
            self.latest_t[dead] = when
        else:
            self.latest = np.full(n, -1, dtype=_I64)
            self.latest_t = np.full(n, _NO_ROW_T, dtype=_I64)
        self.n_rows = meta.n_rows
        self.n_slots = n
        self.n_deleted = meta.n_deleted
        self.dirty: set[int] = set()
        self.sparse_elems = dict(meta.sparse_elems)
        self.categories: dict[str, KeyIndex] = {}
        self.categories_changed: set[str] = set()
        self.quant: dict[str, np.ndarray] = {}
        self.written = False
        # (slots, event times, rows) of every write since the commit: the next history run
        self.hist: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def grow(self, n_slots: int) -> None:
        if n_slots > self.latest.shape[0]:
            cap = max(n_slots, 2 * self.latest.shape[0])
            latest = np.full(cap, -1, dtype=_I64)
            latest[: self.n_slots] = self.latest[: self.n_slots]
            latest_t = np.full(cap, _NO_ROW_T, dtype=_I64)
            latest_t[: self.n_slots] = self.latest_t[: self.n_slots]
            self.latest, self.latest_t = latest, latest_t
        self.n_slots = n_slots


def _deleted_keys(snap: _Snapshot, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(deleted slots, when each was deleted) from ``rows``, the page table's row of
    every slot: their number checked against the manifest's, and each one's latest
    history row against its tombstone."""
    dead = np.flatnonzero(rows < 0)
    if dead.shape[0] != snap.meta.n_deleted:
        raise CorruptStoreError(
            f"group {snap.meta.name!r}: {dead.shape[0]} keys without a row, the manifest "
            f"says {snap.meta.n_deleted} deleted"
        )
    return dead, _deletion_times(snap, dead) if dead.shape[0] else np.zeros(0, dtype=_I64)


def _deletion_times(snap: _Snapshot, slots: np.ndarray) -> np.ndarray:
    """The event times of the tombstones that deleted slots (their latest rows)."""
    rows = np.empty_like(slots)
    snap.table.latest_rows(slots, rows)
    if (
        (rows < 0).any()
        or not snap.tombstones(rows).all()
        or not np.array_equal(snap.row_slots(rows), slots)
    ):
        raise CorruptStoreError(
            f"group {snap.meta.name!r}: a key without a row in the page table has no "
            "tombstone of its own in its history"
        )
    return snap.event_times(rows)


def _new_keys(index: KeyIndex, keys: Any, str_keys: bool) -> tuple[np.ndarray, Any, int]:
    """Slots of keys, with provisional slots for keys not in the index (in order of
    first appearance, as insert() will give them).  Returns (slots, new keys, count)."""
    slots = index.lookup(keys)
    absent = slots < 0
    if not absent.any():
        return slots, None, 0
    if str_keys:
        pos = np.flatnonzero(absent)
        seen: dict[str, int] = {}
        klist = [keys] if isinstance(keys, str) else list(keys)
        for p in pos.tolist():
            k = klist[p]
            s = seen.get(k)
            if s is None:
                s = seen[k] = len(index) + len(seen)
            slots[p] = s
        return slots, list(seen), len(seen)
    q = _as_int_keys(keys)
    missing_keys = q[absent]
    uniq, first, inverse = np.unique(missing_keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # rank of each unique key by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    slots[absent] = len(index) + rank[inverse]
    return slots, uniq[order], int(uniq.shape[0])


class FeatureGroup:
    """Features of one entity kind, keyed by ``key`` (see :mod:`mmfs.group`).

    Get one from :meth:`mmfs.Store.create_group` or ``store[name]``, or bound to a
    version with ``store.group(name, version=v)`` (reads default to that version; a
    group dropped since is still there)."""

    __slots__ = ("_store", "_version", "name")

    def __init__(self, store: Store, name: str, version: int | None = None) -> None:
        self._store = store
        self.name = name
        self._version = version

    def __repr__(self) -> str:
        meta = self._meta()
        return (
            f"<FeatureGroup {self.name!r} key={meta.key!r} ({meta.key_type}), "
            f"{meta.n_keys} keys, features {list(meta.features)}>"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_group, (self._store.path, self.name, self._version))

    def _meta(self) -> GroupMeta:
        if self._version is not None:
            return self._store._version_meta(self.name, self._version)
        return self._store._group_meta(self.name)

    @property
    def key(self) -> str:
        return self._meta().key

    @property
    def key_type(self) -> str:
        return self._meta().key_type

    @property
    def schema(self) -> dict[str, FeatureType]:
        return dict(self._meta().features)

    @property
    def features(self) -> list[str]:
        return list(self._meta().features)

    def __len__(self) -> int:
        """Committed keys with a value (deleted ones are not counted)."""
        return self._meta().n_keys

    def keys(self) -> np.ndarray | list[str]:
        """Every committed key with a value (at the group's version), in order of first
        write."""
        return self._resolve(None, None)[0].committed_keys()

    def describe(self) -> dict[str, Any]:
        return self._store.describe(self.name)

    # -- reading -----------------------------------------------------------------------

    def get(
        self,
        keys: Any,
        features: Any = None,
        *,
        version: int | str | None = None,
        as_of: Any = None,
        missing: str = "nan",
        n_threads: int | None = None,
        out: np.ndarray | None = None,
        transform: Any = None,
        experiment: str | None = None,
    ) -> FeatureBatch:
        """The latest committed values of ``features`` (default: all) for ``keys``.

        ``version``: read the store as that version (an id from ``store.commit()`` or a
        tag) had it, in O(1) whatever the number of versions; a pinned read gives the
        same bytes forever.  ``as_of``: an event time (one, or one per key): each key's
        row with the greatest event time <= as_of (ties: the later write), found by
        binary search in the key's own history; missing where there is none.  The two
        combine: what version v knew about the facts as of time t.

        One key or many: the result is a :class:`FeatureBatch` with one entry per key, in
        order (a key may repeat).  ``missing="nan"`` (default) marks absent keys in
        ``batch.mask`` and fills them (NaN in floats); ``missing="raise"`` raises
        :class:`~mmfs.errors.NotFoundError` naming them.  Each call first checks whether
        the store has committed since the last read (one load from a mapped counter) and
        then reads the newest generation.

        Many keys are resolved and their rows copied by one nogil kernel call each
        (OpenMP-parallel above a size threshold; ``n_threads`` as everywhere in mmfs).
        The batch's values live in one block charged to the memory budget; ``out=``, a
        writable C-contiguous array of at least ``len(keys) * batch.row_bytes`` bytes
        (for example the ``to_numpy()`` of an earlier batch of the same features),
        becomes that block instead: nothing is allocated or charged, and ``to_numpy()``
        is a view of ``out`` when every feature is float32.

        ``transform``: a stored transform (``"scale@2"``; ``"scale"`` is the version
        pinned to its features at the store version read) or a list of them, applied
        during the read: the batch holds ``features`` (default with a transform: none)
        raw, then each transform's outputs (``"age:scale"`` per input feature, or
        ``"scale"`` for one that mixes its inputs).  Affine transforms over float
        features run inside the read kernel.  See docs/transforms.md.

        ``experiment``: the name of an experiment (``store.experiments``, as committed
        at the version read): each key is assigned its arm and read with that arm's
        serving configuration (another store version, alternative features, other
        transform versions; keys outside the experiment get the request as asked), in
        one call.  ``batch.arms`` holds the arm codes.  See docs/experiments.md.
        """
        if missing != "nan" and missing != "raise":
            _check_missing_arg(missing)
        if experiment is not None:
            return self._served(
                keys, features, experiment, version, as_of, missing, n_threads, out, transform
            )
        if version is None and self._version is None:  # the online path: no calls
            snap = self._store._snaps.get(self.name) or self._store._snapshot(self.name)
        else:
            snap, as_of = self._resolve(version, as_of)
        if transform is not None:
            features = self._selection(snap, features, transform)
        kind = type(keys)
        if out is not None:
            pass  # one key goes through the many-key path, which fills out
        elif (kind is int and not snap.str_keys) or (kind is str and snap.str_keys):
            if as_of is None:
                return self._get_one(snap, keys, features, missing)
            return self._get_one_as_of(snap, keys, features, missing, as_of)
        if snap.pinned:
            live = self._live_at(snap, version) if as_of is _END_OF_TIME else snap
            if live is not snap:
                snap, as_of = live, None
        elif snap.table.stale():
            snap = self._store._snapshot(self.name, refresh=True)
        return self._read(snap, keys, features, as_of, missing, n_threads, out)

    def _served(
        self,
        keys: Any,
        features: Any,
        name: str,
        version: int | str | None,
        as_of: Any,
        missing: str,
        n_threads: int | None,
        out: np.ndarray | None,
        transform: Any,
    ) -> FeatureBatch:
        """``get(..., experiment=name)``: assign every key its arm, then read each arm's
        keys with its serving configuration into one block."""
        store = self._store
        pinned = version if version is not None else self._version
        state = store.experiments.served_state(pinned)
        d = state.experiments.get(name)
        if d is None:
            raise NotFoundError(
                f"no experiment {name!r} at the version read (an experiment serves once "
                f"committed); there are {sorted(state.experiments)}"
            )
        if d.unit is not None and d.unit != self.key:
            raise ParameterError(
                f"experiment {name!r} randomises {d.unit!r}; group {self.name!r} is keyed "
                f"by {self.key!r}"
            )
        one = type(keys) is (str if self._meta().key_type == "str" else int)
        ks = [keys] if one else key_sequence(keys)
        k = as_keys(keys if one else ks)
        codes = assign_codes(state, d, k, n_threads_for(k.n, n_threads))
        configs, config_of, config_list = d.serving()
        c = config_list[int(codes[0]) + 1] if one else -1
        which = None if one or len(configs) == 1 else _configs_of(codes, config_of)
        if c == 0 or (which is not None and not which.any()) or len(configs) == 1:
            batch = self.get(
                keys if one else ks, features, version=version, as_of=as_of,
                missing=missing, n_threads=n_threads, out=out, transform=transform,
            )  # fmt: skip
        elif (
            c > 0
            and out is None
            and as_of is None
            and pinned is None
            and (not (configs[c] or {}).get("version"))
        ):  # one key of an arm: the online path with the arm's plan
            snap = store._snaps.get(self.name) or store._snapshot(self.name)
            plan = self._checked_arm_plan(snap, features, transform, configs[c])
            batch = self._get_one(snap, keys, plan, missing)
        else:
            if which is None:
                which = _configs_of(codes, config_of)
            batch = self._variant_read(
                ks, features, transform, version, as_of, configs, which, n_threads, out
            )
            if missing != "nan":
                self._check_missing(batch._snap, ks, batch._found, missing)
        batch._arms = codes
        batch._variants = d.variants
        if d.log_exposures:
            store.experiments.log.record(d, ks, codes)
        return batch

    def _variant_read(
        self,
        keys: Any,
        features: Any,
        transform: Any,
        version: int | str | None,
        as_of: Any,
        configs: list[dict[str, Any] | None],
        which: np.ndarray,
        n_threads: int | None,
        out: np.ndarray | None,
    ) -> FeatureBatch:
        """Keys read with configuration ``configs[which[i]]`` each, into one block laid
        out as the request's own read.  When every configuration reads the request's
        snapshot (alternative features, transform versions) and no as_of: one fused
        kernel pass, each key reading its configuration's variant of one merged plan.
        Otherwise per configuration: a fused read into its keys' records, or (another
        version, as_of) the rows of its keys and one gather into their records."""
        snap, at = self._resolve(version, as_of)
        if not snap.pinned and snap.table.stale():
            snap = self._store._snapshot(self.name, refresh=True)
        n = which.shape[0]
        if at is None and not snap.pinned:  # the merged plan of this request, made before?
            key = ("served", id(configs), _selection_key(features), _selection_key(transform))
            hit = snap.arm_plans.get(key)
            if hit is None:
                hit = snap.arm_plans[key] = (
                    *self._merged_request(snap, features, transform, configs),
                    configs,
                )  # (configs keeps its id)
            plan0, merged = hit[0], hit[1]
            if merged is not None:
                block = self._block(plan0, n, "get()", out)
                flat = block.view(np.uint8).reshape(-1)
                rows = np.empty(n, dtype=_I64)
                threads = _read_threads(n, n_threads)
                if snap.str_keys:
                    qb, qo = _as_str_keys(keys)
                    bad = snap.table.get_str(qb, qo, rows, merged, flat, threads, None, which)
                else:
                    q = _as_int_keys(keys)
                    bad = snap.table.get_int(q, rows, merged, flat, threads, None, which)
                if bad:
                    raise self._corrupt()
                found = rows >= 0
                return FeatureBatch(snap, plan0, keys, block, rows, found, bool(found.all()))
        plan0 = snap.plan(self._selection(snap, features, transform) if transform else features)
        arms: list[tuple[_Snapshot, _Plan]] = []
        for cfg in configs:
            v = None if cfg is None else cfg.get("version")
            csnap = snap if v is None else self._arm_snapshot(v, version)
            plan = self._arm_plan(csnap, features, transform, cfg)
            if (id(plan0), id(plan)) not in snap.arm_plans:  # checked once per pair
                _same_layout(plan0, plan, cfg)
                snap.arm_plans[(id(plan0), id(plan))] = (plan0, plan)  # (ids stay theirs)
            arms.append((csnap, plan))
        block = self._block(plan0, n, "get()", out)
        flat = block.view(np.uint8).reshape(-1)
        rows = np.full(n, -1, dtype=_I64)
        arr = keys if isinstance(keys, np.ndarray) else np.asarray(keys)
        times = None if at is None else to_ns(at, n).view("datetime64[ns]")
        shared: np.ndarray | None = None  # rows of every key in the request's snapshot
        for c, (csnap, plan) in enumerate(arms):
            idx = np.flatnonzero(which == c)
            if not idx.size:
                continue
            if times is None and not csnap.pinned:  # the fused read, into records idx
                rows[idx] = self._fetch_at(csnap, arr[idx], idx, plan, flat, n, n_threads)
                continue
            if csnap is snap:
                if shared is None:
                    shared = self._rows_of(snap, arr, times, n_threads)
                r = shared[idx]
            else:  # a pinned version: read through the history, as of the end of time
                t = _END_OF_TIME if times is None else times[idx]
                r = self._rows_of(csnap, arr[idx], t, n_threads)
            csnap.table.gather_plan(r, plan.fields, flat, _threads(idx.size, n_threads), idx)
            rows[idx] = r
        found = rows >= 0
        return FeatureBatch(snap, plan0, keys, block, rows, found, bool(found.all()))

    def _merged_request(
        self,
        snap: _Snapshot,
        features: Any,
        transform: Any,
        configs: list[dict[str, Any] | None],
    ) -> tuple[_Plan, _store.FieldPlan | None]:
        """The request's plan and the merged plan of its arms (None when an arm reads
        another version, or the arms differ in more than offsets and parameters)."""
        plan0 = snap.plan(self._selection(snap, features, transform) if transform else features)
        if any(cfg and cfg.get("version") is not None for cfg in configs):
            return plan0, None
        plans = [self._checked_arm_plan(snap, features, transform, cfg) for cfg in configs]
        return plan0, _merged_plan(snap, plans)

    def _fetch_at(
        self,
        snap: _Snapshot,
        keys: Any,
        at: np.ndarray,
        plan: _Plan,
        flat: np.ndarray,
        n: int,
        n_threads: int | None,
    ) -> np.ndarray:
        """_fetch of ``keys`` into records ``at`` of a block of n records."""
        rows = np.empty(at.shape[0], dtype=_I64)
        threads = _read_threads(n, n_threads)
        if snap.str_keys:
            qb, qo = _as_str_keys(keys)
            bad = snap.table.get_str(qb, qo, rows, plan.fields, flat, threads, at)
        else:
            bad = snap.table.get_int(_as_int_keys(keys), rows, plan.fields, flat, threads, at)
        if bad:
            raise self._corrupt()
        return rows

    def _rows_of(self, snap: _Snapshot, keys: Any, times: Any, n_threads: int | None) -> np.ndarray:
        """The row of each key in ``snap`` as of ``times`` (-1: none), nothing copied: the
        history search of an as_of read or a pinned version's read."""
        slots = snap.index.lookup(keys, n_threads=n_threads)
        n = slots.shape[0]
        rows = np.empty(n, dtype=_I64)
        if snap.table.asof_rows(slots, to_ns(times, n), rows, -1, _threads(n, n_threads)):
            raise self._corrupt()
        return rows

    def _arm_snapshot(self, v: int | str, read: int | str | None) -> _Snapshot:
        store = self._store
        arm_v = store.version(v)
        if read is not None and arm_v > store.version(read):
            raise ParameterError(
                f"an arm serves version {arm_v}, newer than the version read ({read})"
            )
        return store._version_snapshot(self.name, arm_v)

    def _checked_arm_plan(
        self, snap: _Snapshot, features: Any, transform: Any, cfg: dict[str, Any] | None
    ) -> _Plan:
        """_arm_plan, its layout checked against the request's, cached per request."""
        key = ("arm", id(cfg), _selection_key(features), _selection_key(transform))
        hit = snap.arm_plans.get(key)
        if hit is None:
            plan0 = snap.plan(self._selection(snap, features, transform) if transform else features)
            plan = self._arm_plan(snap, features, transform, cfg)
            _same_layout(plan0, plan, cfg)
            hit = snap.arm_plans[key] = (plan, cfg)  # (cfg keeps its id)
        return hit[0]

    def _arm_plan(
        self, snap: _Snapshot, features: Any, transform: Any, cfg: dict[str, Any] | None
    ) -> _Plan:
        """The request's plan with an arm's substitutions: its alternative features read
        into the fields of the features they replace, its transform versions."""
        if cfg is None:
            return snap.plan(self._selection(snap, features, transform) if transform else features)
        swap = cfg.get("features", {})
        if transform:
            refs = [transform] if isinstance(transform, str | StoredTransform) else transform
            tswap = cfg.get("transforms", {})
            refs = [tswap.get(_transform_name(r), r) for r in refs]
            if features is not None:
                names = [features] if isinstance(features, str) else list(features)
                features = [swap.get(f, f) for f in names]
            return snap.plan(self._selection(snap, features, refs))
        names = snap.check_names(features)
        sources = [swap.get(f, f) for f in names]
        key = ("arm", names, tuple(sources))
        plan = snap.arm_plans.get(key)
        if plan is None:
            snap.check_names(list(dict.fromkeys(sources)))
            entries = [
                (f, src, snap.features[src], True) for f, src in zip(names, sources, strict=True)
            ]
            plan = snap.arm_plans[key] = _build_plan(snap, entries)
        return plan

    # -- similarity search (mmfs.index) ---------------------------------------------------

    def indexes(self) -> dict[str, IndexDef]:
        """The group's indexes by feature (as its newest definition has them; a writer
        sees the ones it created before they are committed)."""
        return dict(self._meta().indexes)

    def create_index(
        self,
        feature: str,
        kind: str = "lsh",
        metric: str = "cosine",
        *,
        bits: int = 256,
        seed: int = 0,
        candidates: int | None = None,
        table_bits: int | None = None,
        tables: int = 1,
        n_threads: int | None = None,
    ) -> IndexDef:
        """Define a similarity index over a vector feature, published by the next commit.

        ``kind="lsh"``: sign-random-projection codes of ``bits`` bits (seeded Gaussian
        projections) for ``metric`` "cosine", "inner_product" or "euclidean"; a search
        probes ``candidates`` buckets in all of ``tables`` bucket tables, each keyed by
        its own ``table_bits`` code bits (None: chosen from the row count, and 0 for a
        sparse feature with one table; 0: no table, every search scans every code), ranks
        their rows by code, and re-ranks ``candidates`` rows exactly (default 700).  Each
        table costs 4 bytes a row.  The codes of the rows written so far are computed
        now, those of later writes by each write; commits keep the tables up to date.
        ``kind="exact"``: every search scans every row.  ``kind="kdtree"``: scipy's
        cKDTree for low-dimensional dense data ("euclidean", "cityblock", "chebyshev",
        "minkowski"), built by each process at its first search of a version.  Creating
        an index again replaces it.  Refused while the group has uncommitted writes.
        """
        store = self._store
        store._check_writable()
        meta = self._meta()
        pending = store._pendings.get(self.name)
        if pending is not None and pending.written:
            raise ParameterError(
                f"group {self.name!r} has uncommitted writes: commit or roll back first"
            )
        if not isinstance(feature, str) or feature not in meta.features:
            raise ParameterError(
                f"group {self.name!r} has no feature {feature!r}: {list(meta.features)}"
            )
        ftype = meta.features[feature]
        if kind == "lsh" and table_bits is None:
            committed = store._committed(self.name)
            n_rows = committed.n_rows if committed is not None else 0
            sparse_scan = isinstance(ftype, Sparse) and tables == 1
            table_bits = 0 if sparse_scan else auto_table_bits(n_rows)
        lsh = kind == "lsh"
        check(kind, metric, bits if lsh else 0, seed, candidates, ftype, table_bits, tables)
        idx = IndexDef(
            kind, metric, bits if lsh else 0, seed, store._gen + 1, 0, now_ns(), candidates,
            table_bits=(table_bits or 0) if lsh else 0, tables=tables if lsh else 1,
        )  # fmt: skip
        if kind == "lsh":
            idx = _build_lsh(self, feature, idx, effective_n_threads(n_threads))
        meta.indexes[feature] = idx
        return idx

    def drop_index(self, feature: str) -> None:
        """Remove the index of ``feature`` (published by the next commit)."""
        self._store._check_writable()
        meta = self._meta()
        if meta.indexes.pop(feature, None) is None:
            raise NotFoundError(f"group {self.name!r} has no index on {feature!r}")

    def search(
        self,
        feature: str,
        queries: Any,
        k: int = 10,
        *,
        version: int | str | None = None,
        filter: Any = None,
        candidates: int | None = None,
        metric: Any = None,
        n_threads: int | None = None,
        **metric_kwargs: Any,
    ) -> tuple[Any, Any]:
        """The k nearest keys to each query by ``feature``, and their distances.

        One query (1-D) gives (keys (k,), distances (k,)); a batch gives (n, k) arrays.
        Searches the feature's index (exact without one) over the keys of ``version``
        (default: the newest), restricted by ``filter`` (a boolean mask in key order, or
        keys).  ``metric`` re-ranks candidates (default: the index's; any metric of
        :func:`mmfs.cdist`, custom ones included); ``candidates``: rows an lsh index
        re-ranks exactly per query.  Ordered by distance, ties by the order keys were
        first written; k shrinks to the number of keys searched.
        """
        return _search.search(
            self, feature, queries, k, version=version, filter=filter, candidates=candidates,
            metric=metric, n_threads=n_threads, kwargs=metric_kwargs,
        )  # fmt: skip

    def search_radius(
        self,
        feature: str,
        queries: Any,
        r: float,
        *,
        version: int | str | None = None,
        filter: Any = None,
        candidates: int | None = None,
        metric: Any = None,
        n_threads: int | None = None,
        **metric_kwargs: Any,
    ) -> tuple[Any, Any]:
        """Every key within distance ``r`` (inclusive) of each query: (keys, distances)
        for one query, two lists of arrays for a batch, each ordered as by search().  An
        lsh index finds them among its candidates (approximate); exact and kdtree
        indexes find all."""
        return _search.search_radius(
            self, feature, queries, r, version=version, filter=filter, candidates=candidates,
            metric=metric, n_threads=n_threads, kwargs=metric_kwargs,
        )  # fmt: skip

    def evaluate_index(
        self,
        feature: str,
        queries: Any,
        k: int = 10,
        *,
        version: int | str | None = None,
        filter: Any = None,
        candidates: int | None = None,
        metric: Any = None,
    ) -> dict[str, Any]:
        """Recall@k of the feature's index against exact search of the same keys for
        these queries, with the time per query of both: the way to tune ``bits`` and
        ``candidates`` on one's own data."""
        return _search.evaluate(
            self, feature, queries, k, version=version, filter=filter, candidates=candidates,
            metric=metric,
        )  # fmt: skip

    def iter_batches(
        self,
        keys: Any = None,
        batch_size: int | None = None,
        features: Any = None,
        *,
        version: int | str | None = None,
        as_of: Any = None,
        missing: str = "nan",
        n_threads: int | None = None,
        transform: Any = None,
    ) -> Iterator[FeatureBatch]:
        """``get`` in batches of ``batch_size`` keys, for key sets whose values do not
        fit in memory at once: one :class:`FeatureBatch` per chunk, in key order.

        ``keys=None`` walks every key of the group with a value (at ``version``) in the
        order of first write; with ``as_of``, every key ever written (missing where it
        had no value at that time).  ``batch_size=None`` sizes the batches from the store's
        memory budget: a quarter of what it has free, at most 131,072 keys.  The store is
        read as it was when the iteration started: commits made meanwhile are not seen.
        ``as_of`` is one event time or one per key.  The arguments are checked at the
        call, before the first batch."""
        _check_missing_arg(missing)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ParameterError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
        snap, as_of = self._resolve(version, as_of)
        if snap.table.stale():
            snap = self._store._snapshot(self.name, refresh=True)
        if transform is not None:
            features = self._selection(snap, features, transform)
        plan = snap.plan(features)
        if keys is None:
            n = snap.meta.n_slots
            if as_of is _END_OF_TIME:  # a pinned version's rows: _Snapshot.slot_rows
                as_of = None
        else:
            keys = key_sequence(keys)
            n = len(keys)
        times = None if as_of is None else to_ns(as_of, n).view("datetime64[ns]")
        if batch_size is None:
            budget = self._store.budget
            per_key = plan.row_bytes + 24  # the block, rows, keys and times of a batch
            batch_size = (
                _MAX_AUTO_BATCH
                if budget is None
                else budget.rows_for_budget(per_key, maximum=_MAX_AUTO_BATCH)
            )
        selection = features if isinstance(features, Selection) else plan.names
        return self._batches(snap, keys, n, batch_size, selection, times, missing, n_threads)

    def _batches(
        self,
        snap: _Snapshot,
        keys: Any,
        n: int,
        size: int,
        features: Any,
        times: np.ndarray | None,
        missing: str,
        n_threads: int | None,
    ) -> Iterator[FeatureBatch]:
        every = keys is None
        if every and not snap.str_keys:
            keys = snap.index.keys()
        for a in range(0, n, size):
            b = min(n, a + size)
            if every and snap.str_keys:
                chunk = snap.index.keys(a, b)
            else:
                assert keys is not None
                chunk = keys[a:b]
            if every and times is None:  # rows straight from slots; deleted keys skipped
                if snap.pinned:
                    rows = snap.slot_rows()[a:b]
                else:
                    rows = np.arange(a, b, dtype=_I64)
                    if snap.table.rows_of_slots(rows):
                        raise self._corrupt()
                live = rows >= 0
                if not live.all():
                    if not snap.meta.n_deleted:
                        raise self._corrupt()
                    if not live.any():  # every key of the chunk deleted: no empty batch
                        continue
                    rows = rows[live]
                    if isinstance(chunk, list):
                        chunk = list(itertools.compress(chunk, live.tolist()))
                    else:
                        chunk = chunk[live]
                yield self._gather(snap, chunk, rows, features, n_threads, "iter_batches()")
            else:
                t = None if times is None else times[a:b]
                yield self._read(snap, chunk, features, t, missing, n_threads, None)

    def _selection(self, snap: _Snapshot, features: Any, transform: Any) -> Selection:
        """A transformed read's selection, its transforms resolved (a name without a
        version: the one pinned at the snapshot's version).  Cached per snapshot."""
        key = (
            features if features is None or isinstance(features, str) else tuple(features),
            transform if isinstance(transform, str | StoredTransform) else tuple(transform),
        )
        sel = snap.selections.get(key)
        if sel is None:
            refs = [transform] if isinstance(transform, str | StoredTransform) else transform
            catalog = self._store.transforms
            found = []
            for ref in refs:
                st = catalog.resolve(ref, snap.pins())
                if st is None:
                    have = catalog.versions(str(ref)) if catalog.list() else []
                    raise NotFoundError(
                        f"transform {ref!r} is not pinned to a feature of group "
                        f"{self.name!r} at the version read; name a version"
                        + (f" ({ref}@{have[-1]})" if have else "")
                        + " or pin one (store.transforms.pin) and commit"
                    )
                found.append(st)
            raw = () if features is None else snap.check_names(features)
            sel = snap.selections[key] = Selection(raw, tuple(found))
        return sel

    def _resolve(self, version: int | str | None, as_of: Any) -> tuple[_Snapshot, Any]:
        """The snapshot a read of ``version`` (default: the group's own, else the newest)
        sees, and its as_of (a pinned version reads through the history)."""
        if version is None:
            version = self._version
        if version is None:
            snap = self._store._snaps.get(self.name) or self._store._snapshot(self.name)
            return snap, as_of
        snap = self._store._version_snapshot(self.name, version)
        return snap, _END_OF_TIME if as_of is None else as_of

    def _live_at(self, snap: _Snapshot, version: int | str | None) -> _Snapshot:
        """For a many-key read of a pinned version that is the newest one: the live
        snapshot (its page table is faster than the history; a reader's live snapshot
        reads its own generation forever, whatever commits later).  Else snap."""
        store = self._store
        if version is None:
            version = self._version
        if store.mode != "r" or version is None:  # a writer's live state is its own
            return snap
        try:
            live = store._snapshot(self.name)
        except NotFoundError:  # dropped since
            return snap
        if live.gen != store.version(version) or live.table.stale():
            return snap
        return live

    def _read(
        self,
        snap: _Snapshot,
        keys: Any,
        features: Any,
        as_of: Any,
        missing: str,
        n_threads: int | None,
        out: np.ndarray | None,
    ) -> FeatureBatch:
        """Many keys of one snapshot: one kernel call resolves the keys and copies their
        rows (as_of: searches their histories, see _as_of_batch)."""
        if as_of is None:
            batch = self._fetch(snap, keys, features, n_threads, out)
        else:
            batch = self._as_of_batch(snap, keys, as_of, features, n_threads=n_threads, out=out)
        if missing != "nan":
            self._check_missing(snap, keys, batch._found, missing)
        return batch

    def _fetch(
        self,
        snap: _Snapshot,
        keys: Any,
        features: Any,
        n_threads: int | None,
        out: np.ndarray | None,
    ) -> FeatureBatch:
        """The latest rows of many keys: lookup, page-table hop and copy in one pass."""
        plan = snap.plan(features)
        if snap.str_keys:
            qb, qo = _as_str_keys(keys)
            n = qo.shape[0] - 1
            read = functools.partial(snap.table.get_str, qb, qo)
        else:
            q = _as_int_keys(keys)
            n = q.shape[0]
            read = functools.partial(snap.table.get_int, q)
        block = self._block(plan, n, "get()", out)
        rows = np.empty(n, dtype=_I64)
        bad = read(rows, plan.fields, block.view(np.uint8).reshape(-1), _read_threads(n, n_threads))
        if bad:
            raise self._corrupt()
        found = rows >= 0
        return FeatureBatch(snap, plan, keys, block, rows, found, bool(found.all()))

    def _block(
        self, plan: _Plan, n: int, call: str = "get()", out: np.ndarray | None = None
    ) -> np.ndarray:
        """An output block for n records of plan, charged to the memory budget (or the
        first bytes of the caller's ``out``)."""
        nbytes = n * plan.row_bytes
        plan.reads[0] += 1
        plan.reads[1] += n
        if out is not None:
            return _out_block(out, nbytes, plan)
        if nbytes > 1 << 20:
            self._store._charge_now(nbytes, f"the result of {self.name}.{call} for {n} keys")
        if plan.all_f32:  # the block is the (n, d) float32 feature matrix
            return np.empty((n, plan.row_bytes // 4), dtype=np.float32)
        return np.empty(nbytes, dtype=np.uint8)

    def _gather(
        self,
        snap: _Snapshot,
        keys: Any,
        rows: np.ndarray,
        features: Any,
        n_threads: int | None,
        call: str = "get()",
        out: np.ndarray | None = None,
    ) -> FeatureBatch:
        """The batch of ``features`` of ``rows`` (-1: missing) of snapshot ``snap``,
        gathered by one kernel call into one block charged to the memory budget."""
        found = rows >= 0
        plan = snap.plan(features)
        n = rows.shape[0]
        block = self._block(plan, n, call, out)
        snap.table.gather_plan(
            rows, plan.fields, block.view(np.uint8).reshape(-1), _threads(n, n_threads)
        )
        return FeatureBatch(snap, plan, keys, block, rows, found, bool(found.all()))

    def _as_of_batch(
        self,
        snap: _Snapshot,
        keys: Any,
        as_of: Any,
        features: Any,
        *,
        ttl: int = -1,
        n_threads: int | None = None,
        call: str = "get()",
        out: np.ndarray | None = None,
    ) -> FeatureBatch:
        """The batch of ``features`` of keys as of event time(s) as_of (and, with ``ttl``
        >= 0 ns, no older than as_of - ttl).  Many keys are sorted by slot (counting sort)
        and merged with each history run, each row copied as it is found."""
        slots = snap.index.lookup(keys)  # slots of keys newer than the version read -1
        n = slots.shape[0]
        times = to_ns(as_of, n)
        if n < _SORTED_ASOF:
            rows = np.empty(n, dtype=_I64)
            if snap.table.asof_rows(slots, times, rows, ttl, _threads(n, n_threads)):
                raise self._corrupt()
            return self._gather(snap, keys, rows, features, n_threads, call, out)
        n_slots = snap.meta.n_slots
        threads = _threads(n, n_threads)
        if n_slots <= 8 * n:
            order, ss, st = _store.slot_order(slots, n_slots, times, threads)
        else:
            order = np.argsort(slots, kind="stable")
            ss, st = slots[order], times[order]
        plan = snap.plan(features)
        block = self._block(plan, n, call, out)
        rows = np.empty(n, dtype=_I64)
        bad = snap.table.asof_sorted(
            slots, times, order, ss, st, rows, ttl, threads, plan.fields,
            block.view(np.uint8).reshape(-1),
        )  # fmt: skip
        if bad:
            raise self._corrupt()
        found = rows >= 0
        return FeatureBatch(snap, plan, keys, block, rows, found, bool(found.all()))

    def _get_one(self, snap: _Snapshot, key: Any, features: Any, missing: str) -> FeatureBatch:
        """One key: the online path (one kernel call that probes, hops and copies).
        ``features`` may be a plan already made (an experiment arm's)."""
        plan = (
            features if isinstance(features, _Plan)
            else snap.default_plan if features is None
            else snap.plan(features)
        )  # fmt: skip
        if snap.str_keys:
            try:
                kb = key.encode()
            except UnicodeEncodeError:
                raise ParameterError(f"key {key!r} is not valid Unicode text") from None
            row, block = snap.table.get_one_str(kb, plan.fields)
        elif -(2**63) <= key < 2**63:
            row, block = snap.table.get_one_int(key, plan.fields)
        else:  # outside int64: absent
            row, block = -1, np.zeros(plan.row_bytes, dtype=np.uint8)
            if plan.all_f32:
                block = block.view(np.float32).reshape(1, -1)
        if block is None:
            if row == _store.STALE:
                snap = self._store._snapshot(self.name, refresh=True)
                return self._get_one(snap, key, features, missing)
            raise self._corrupt()
        return self._one_batch(snap, plan, key, row, block, missing)

    def _get_one_as_of(
        self, snap: _Snapshot, key: Any, features: Any, missing: str, as_of: Any
    ) -> FeatureBatch:
        """One key as of one event time: the key's slot, then one kernel call that
        searches its history and copies the row."""
        if snap.table.stale():
            snap = self._store._snapshot(self.name, refresh=True)
        plan = snap.default_plan if features is None else snap.plan(features)
        t = one_ns(as_of)
        in_range = snap.str_keys or -(2**63) <= key < 2**63  # outside int64: absent
        slot = int(snap.index.lookup(key)[0]) if in_range else -1
        row, block = snap.table.asof_one(slot, t, plan.fields)
        if block is None:
            raise self._corrupt()
        return self._one_batch(snap, plan, key, row, block, missing)

    def _one_batch(
        self, snap: _Snapshot, plan: _Plan, key: Any, row: int, block: np.ndarray, missing: str
    ) -> FeatureBatch:
        """The batch of a one-key read (row -1: the key is missing)."""
        counts = plan.reads
        counts[0] += 1
        counts[1] += 1
        if row < 0:
            if missing != "nan":
                self._check_missing(snap, key, _NOT_FOUND, missing)
            return FeatureBatch(snap, plan, key, block, row, _NOT_FOUND, False)
        return FeatureBatch(snap, plan, key, block, row, _FOUND, True)

    def _corrupt(self) -> CorruptStoreError:
        return CorruptStoreError(
            f"group {self.name!r}: a lookup met a corrupt key index or page table; "
            "run store.verify() or restore the store from a copy"
        )

    def _check_missing(self, snap: _Snapshot, keys: Any, found: np.ndarray, missing: str) -> None:
        if not found.all():
            absent = np.flatnonzero(~found)[:5]
            ks = (
                FeatureBatch(snap, snap.default_plan, keys, found, None, found, False)
                .keys[absent]
                .tolist()
            )
            raise NotFoundError(
                f"group {self.name!r}: {int((~found).sum())} of {found.shape[0]} keys not "
                f"found, e.g. {ks}"
            )

    # -- writing -----------------------------------------------------------------------

    def write(self, keys: Any, values: Mapping[str, Any], event_time: Any = None) -> int:
        """Append one row per key; visible to readers after ``store.commit()``.

        ``values`` maps every feature of the group to one value per key (numpy arrays,
        lists, pandas or Arrow columns; scipy.sparse matrices for sparse features).
        ``event_time``: one time for all rows, or one per key (datetime64, datetime or
        pandas timestamps; default: now).  A key's current value is its row with the
        greatest event time; a tie goes to the row written later (so a key repeated in one
        write keeps its last row).  Returns the number of rows written.  Bad input raises
        before anything is written.
        """
        store = self._store
        store._check_writable()
        meta = self._meta()
        str_keys = meta.key_type == "str"
        if not isinstance(keys, int | str | list | tuple | np.ndarray | np.generic):
            keys = _materialise(keys)  # an iterator is read once, and keys are used twice
        if str_keys:
            _qb, qo = _as_str_keys(keys)
            n = qo.shape[0] - 1
        else:
            n = _as_int_keys(keys).shape[0]
        if not isinstance(values, Mapping):
            raise ParameterError(
                f"values must be a mapping of feature name -> values, got {type(values).__name__}"
            )
        unknown = sorted(set(values) - set(meta.features))
        absent = [f for f in meta.features if f not in values]
        if unknown or absent:
            raise ParameterError(
                f"group {self.name!r}: a write gives every feature one value per key; "
                + (f"unknown features {unknown}" if unknown else "")
                + ("; " if unknown and absent else "")
                + (f"missing features {absent}" if absent else "")
                + f" (its features are {list(meta.features)})"
            )
        times = to_ns(event_time, n)
        pending = store._pending(self.name)
        files = store._files(self.name)
        with store._charge(n * files.record_bytes * 3 + n * 64, f"{self.name}.write() of {n} rows"):
            fitted: dict[str, np.ndarray] = {}  # int8 parameters fitted by this write
            encoded = {
                name: self._encode(name, ftype, values[name], n, pending, fitted)
                for name, ftype in meta.features.items()
            }
            if n == 0:
                return 0
            index_keys = keys if str_keys else _as_int_keys(keys)
            slots, new_keys, n_new = _new_keys(pending.index, index_keys, str_keys)
            records = np.zeros((n, files.record_bytes), dtype=np.uint8)
            offsets = files.offsets
            _put(records, offsets["slot"], slots)
            _put(records, offsets["event_time"], times)
            cat_new: dict[str, Any] = {}
            for name, ftype in meta.features.items():
                value = encoded[name]
                if isinstance(ftype, Sparse):
                    value = self._write_sparse(name, value, pending, files, store._durable)
                elif isinstance(ftype, Category):
                    value, cat_new[name] = value
                _put(records, offsets[name], value)
            files.rows.write(pending.n_rows, records, durable=store._durable)
            for fname, idx in meta.indexes.items():
                if idx.kind == "lsh":
                    P, t = files.projection(fname, idx, meta.features[fname].width)
                    codes = codes_of(encoded[fname], P, t, _threads(n, None))
                    files.lsh_files(fname, idx).write(pending.n_rows, codes, durable=store._durable)
            # Everything is on its way to disk: now the bookkeeping, which cannot fail.
            if n_new:
                pending.index.insert(new_keys)
                pending.keys_changed = True
            for name, fresh in cat_new.items():
                if fresh is not None:
                    pending.categories[name].insert(fresh)
                    pending.categories_changed.add(name)
            pending.quant.update(fitted)
            pending.grow(max(pending.n_slots, int(slots.max()) + 1))
            self._appended(pending, slots, times)
        return n

    def delete(self, keys: Any, event_time: Any = None) -> int:
        """Delete keys: from ``event_time`` on (default: now) each has no value.

        A delete is a row of each key's history, like a write (a *tombstone*), and
        visible after ``store.commit()``.  Then a read misses the key (as one never
        written: NaN and a mask, or ``missing="raise"``), and so does a read ``as_of`` a
        time at or after event_time; reads as of earlier times, and of versions committed
        before, still find its older rows.  ``len``, ``keys()``, ``iter_batches`` and
        searches leave it out.  As for writes, the row of greatest event time wins
        (ties: the later one): a later write with a newer event time gives the key a value
        again, one with an older event time does not.  Keys the group has never had
        are ignored.  Returns the number of keys deleted.  Bad input raises before
        anything is written.
        """
        store = self._store
        store._check_writable()
        meta = self._meta()
        if not isinstance(keys, int | str | list | tuple | np.ndarray | np.generic):
            keys = _materialise(keys)
        if meta.key_type == "str":
            _qb, qo = _as_str_keys(keys)
            n = qo.shape[0] - 1
        else:
            keys = _as_int_keys(keys)
            n = keys.shape[0]
        times = to_ns(event_time, n)
        pending = store._pending(self.name)
        files = store._files(self.name)
        slots = pending.index.lookup(keys)
        known = slots >= 0
        slots, times = slots[known], times[known]
        m = slots.shape[0]
        if not m:
            return 0
        with store._charge(m * files.record_bytes * 2, f"{self.name}.delete() of {m} keys"):
            records = np.zeros((m, files.record_bytes), dtype=np.uint8)
            _put(records, files.offsets["slot"], slots | _TOMB)
            _put(records, files.offsets["event_time"], times)
            files.rows.write(pending.n_rows, records, durable=store._durable)
            for fname, idx in meta.indexes.items():
                if idx.kind == "lsh":  # a code per row: a tombstone's is never searched
                    zeros = np.zeros((m, idx.bits // 64), dtype=np.uint64)
                    files.lsh_files(fname, idx).write(pending.n_rows, zeros, store._durable)
            self._appended(pending, slots, times, deleted=True)
        return m

    def _appended(
        self, pending: _Pending, slots: np.ndarray, times: np.ndarray, deleted: bool = False
    ) -> None:
        """The bookkeeping of rows just written at pending.n_rows (which cannot fail)."""
        first_row = pending.n_rows
        n = slots.shape[0]
        pending.n_rows += n
        self._update_latest(pending, slots, times, first_row, deleted)
        pending.hist.append((slots, times, np.arange(first_row, first_row + n, dtype=_I64)))
        pending.written = True

    def _update_latest(
        self,
        pending: _Pending,
        slots: np.ndarray,
        times: np.ndarray,
        first_row: int,
        deleted: bool = False,
    ) -> None:
        """Make the new rows (tombstones when ``deleted``) their slots' latest where
        they are (greatest event time; ties: the later row), counting deleted keys."""
        n = slots.shape[0]
        order = np.lexsort((np.arange(n), times, slots))  # by slot, then time, then position
        s_sorted = slots[order]
        last = np.ones(n, dtype=bool)
        last[:-1] = s_sorted[1:] != s_sorted[:-1]
        win = order[last]  # per slot: greatest event time, ties to the later row
        ws, wt = slots[win], times[win]
        newer = wt >= pending.latest_t[ws]
        ws, wt, wrow = ws[newer], wt[newer], win[newer] + first_row
        was_deleted = int(np.count_nonzero(
            (pending.latest[ws] < 0) & (pending.latest_t[ws] != _NO_ROW_T)
        ))  # fmt: skip
        pending.n_deleted += (ws.shape[0] if deleted else 0) - was_deleted
        pending.latest[ws] = -1 if deleted else wrow
        pending.latest_t[ws] = wt
        pending.dirty.update(np.unique(ws >> PAGE_BITS).tolist())

    def _encode(
        self,
        name: str,
        ftype: FeatureType,
        value: Any,
        n: int,
        pending: _Pending,
        fitted: dict[str, np.ndarray],
    ) -> Any:
        where = f"feature {name!r} of group {self.name!r}"
        if isinstance(ftype, Sparse):
            return _as_csr(value, n, ftype.dim, where)
        if isinstance(ftype, Category):
            return self._encode_category(name, value, n, pending, where)
        arr = _as_array(value, where)
        if isinstance(ftype, Scalar):
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
            if arr.shape != (n,):
                raise DimensionError(
                    f"{where}: expected {n} values (shape ({n},)), got {arr.shape}"
                )
            return _cast_scalar(arr, ftype.dtype, where)
        if arr.ndim == 1 and n == 1 and arr.shape[0] == ftype.dim:
            arr = arr.reshape(1, -1)
        if arr.shape != (n, ftype.dim):
            raise DimensionError(
                f"{where}: expected shape ({n}, {ftype.dim}) ({n} keys x dim {ftype.dim}), "
                f"got {arr.shape}"
            )
        if ftype.dtype == "bool":
            if arr.dtype != np.bool_:
                raise ParameterError(f"{where}: expected bool values, got dtype {arr.dtype}")
            return np.packbits(arr, axis=1, bitorder="little")
        if arr.dtype.kind not in "fiu":
            raise ParameterError(f"{where}: expected numbers, got dtype {arr.dtype}")
        if ftype.dtype == "int8":
            return self._quantize(name, ftype, arr.astype(np.float64), pending, fitted, where)
        return arr.astype(np.float32 if ftype.dtype == "float32" else np.float16)

    def _quantize(
        self,
        name: str,
        ftype: Dense,
        x: np.ndarray,
        pending: _Pending,
        fitted: dict[str, np.ndarray],
        where: str,
    ) -> np.ndarray:
        if not np.isfinite(x).all():
            raise ParameterError(f"{where}: int8-quantised values must be finite (no NaN/inf)")
        if x.shape[0] == 0:
            return np.zeros(x.shape, dtype=np.int8)
        q = pending.quant.get(name)
        if q is None and self._meta().quant.get(name) is not None:
            q = self._store._snapshot(self.name).quant(name)
        if q is None:
            if ftype.range is not None:
                lo, hi = np.array(ftype.range[0]), np.array(ftype.range[1])
            else:
                lo, hi = x.min(axis=0), x.max(axis=0)
            scale = (hi - lo) / 255.0
            q = np.stack([scale, lo + 128.0 * scale]).astype(np.float32)
            fitted[name] = q  # the group's parameters once the write succeeds
        scale, offset = q[0].astype(np.float64), q[1].astype(np.float64)
        safe = np.where(scale > 0, scale, 1.0)
        codes = np.rint((x - offset) / safe)
        return np.clip(codes, -128, 127).astype(np.int8)

    def _encode_category(
        self, name: str, value: Any, n: int, pending: _Pending, where: str
    ) -> tuple[np.ndarray, Any]:
        if isinstance(value, str):
            value = [value]
        seq = list(value.tolist() if isinstance(value, np.ndarray) else value)
        if len(seq) != n:
            raise DimensionError(f"{where}: expected {n} values, got {len(seq)}")
        present = [i for i, v in enumerate(seq) if not _no_category(v)]
        strs = [seq[i] for i in present]
        if not all(isinstance(v, str) for v in strs):
            bad = next(v for v in strs if not isinstance(v, str))
            raise ParameterError(
                f"{where}: categories are str (None, NaN or pandas.NA: no value), got {bad!r}"
            )
        index = pending.categories.get(name)
        if index is None:
            meta = self._meta()
            gen = meta.categories.get(name)
            index = _load_key_index(self._store._files(self.name), f"cat-{name}", gen, "str")
            pending.categories[name] = index
        codes = np.full(n, -1, dtype=np.int32)
        fresh = None
        if strs:
            slots, fresh, _count = _new_keys(index, strs, True)
            if slots.max() >= 2**31 - 1:
                raise ParameterError(f"{where}: more than 2**31 - 1 distinct categories")
            codes[present] = slots
        return codes, fresh

    def _write_sparse(
        self, name: str, csr: sp.csr_matrix, pending: _Pending, files: GroupFiles, durable: bool
    ) -> np.ndarray:
        ia, va = files.sparse[name]
        counts = np.diff(csr.indptr).astype(_I64)
        cum = csr.indptr.astype(_I64)
        n = counts.shape[0]
        starts = np.empty(n, dtype=_I64)
        pos = pending.sparse_elems[name]
        size = ia.seg_len
        i = 0
        while i < n:
            room = size - (pos & (size - 1))
            j = int(np.searchsorted(cum, cum[i] + room, side="right")) - 1
            if j <= i:  # row i does not fit in what is left of this segment
                pos = ((pos >> ia.seg_bits) + 1) << ia.seg_bits
                continue
            j = min(j, n)
            starts[i:j] = pos + cum[i:j] - cum[i]
            a, b = int(cum[i]), int(cum[j])
            ia.write(pos, csr.indices[a:b].astype(np.int32), durable=durable)
            va.write(pos, csr.data[a:b].astype(np.float32), durable=durable)
            pos += b - a
            i = j
        pending.sparse_elems[name] = pos
        return np.stack([starts, counts], axis=1)


def _selection_key(x: Any) -> Any:
    return x if x is None or isinstance(x, str | StoredTransform) else tuple(x)


def _configs_of(codes: np.ndarray, config_of: np.ndarray) -> np.ndarray:
    """The serving configuration of each key from its arm code (one kernel loop)."""
    which = np.empty(codes.shape[0], dtype=np.int8)
    _assign.remap_codes(codes, config_of, which)
    return which


def _transform_name(ref: Any) -> str:
    return ref.name if isinstance(ref, StoredTransform) else str(ref).split("@")[0]


def _merged_plan(snap: _Snapshot, plans: list[_Plan]) -> _store.FieldPlan | None:
    """One FieldPlan whose variant v is ``plans[v]`` (same fields and affine segments,
    other record offsets and affine parameters), or None when they differ otherwise.
    Cached on the snapshot."""
    key = ("merged", *map(id, plans))
    hit = snap.arm_plans.get(key)
    if hit is None:
        fo0, fs0, fused0 = plans[0].parts
        same = len(plans) <= 127 and all(
            np.array_equal(p.parts[1], fs0)
            and (p.parts[2] is None) == (fused0 is None)
            and (
                fused0 is None
                or all(
                    np.array_equal(a, b) for a, b in zip(p.parts[2][:3], fused0[:3], strict=True)
                )
            )
            for p in plans
        )
        merged = None
        if same:
            offsets = np.concatenate([p.parts[0] for p in plans])
            if fused0 is None:
                merged = _store.FieldPlan(fo0, fs0, plans[0].all_f32, None)
                merged.set_variants(offsets, np.zeros(0, dtype=_I64))
            else:
                params = np.concatenate([p.parts[2][4] for p in plans], axis=1)
                params32 = np.concatenate([p.parts[2][5] for p in plans], axis=1)
                cols = np.cumsum([0] + [p.parts[2][4].shape[1] for p in plans])
                firsts = np.concatenate(
                    [p.parts[2][3] + c for p, c in zip(plans, cols, strict=False)]
                )
                at, counts, kinds, first = fused0[:4]
                merged = _store.FieldPlan(
                    fo0, fs0, plans[0].all_f32, (at, counts, kinds, first, params, params32)
                )
                merged.set_variants(offsets, firsts)
        hit = snap.arm_plans[key] = (merged, plans)  # (the plans keep their ids)
    return hit[0]


def _same_layout(plan0: _Plan, plan: _Plan, cfg: dict[str, Any] | None) -> None:
    """An arm's plan must fill the request's records: the same field types at the same
    places, and the same transforms computed after the copy (those run once per batch)."""
    d0, d1 = plan0.dtype, plan.dtype
    fields0 = [(d0.fields[n][0], d0.fields[n][1]) for n in d0.names]  # type: ignore[index]
    fields1 = [(d1.fields[n][0], d1.fields[n][1]) for n in d1.names]  # type: ignore[index]
    if fields0 != fields1 or d0.itemsize != d1.itemsize:
        raise ParameterError(
            f"an arm's configuration {cfg} reads features of other types than the request "
            f"({list(plan.names)} vs {list(plan0.names)}); an alternative feature must have "
            "the type of the one it replaces"
        )
    if [p.ref for p in plan.post] != [p.ref for p in plan0.post]:
        raise TransformError(
            f"an arm's configuration {cfg} changes a transform that runs after the copy "
            f"({[p.ref for p in plan0.post]} -> {[p.ref for p in plan.post]}); only "
            "kernel-fused (affine) transforms can differ between arms"
        )


def _check_missing_arg(missing: object) -> None:
    if missing != "nan" and missing != "raise":
        raise ParameterError(f'missing must be "nan" or "raise", got {missing!r}')


def _out_block(out: object, nbytes: int, plan: _Plan) -> np.ndarray:
    """The first nbytes of the caller's buffer as a batch block of plan."""
    if not isinstance(out, np.ndarray):
        raise ParameterError(f"out must be a numpy array, got {type(out).__name__}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ParameterError("out must be a writable C-contiguous array")
    if out.nbytes < nbytes:
        raise ParameterError(
            f"out holds {out.nbytes} bytes; this batch needs {nbytes} "
            f"({plan.row_bytes} bytes a key)"
        )
    block = out.reshape(-1).view(np.uint8)[:nbytes]
    if plan.all_f32:  # the (n, d) float32 feature matrix, as _block makes it
        return block.view(np.float32).reshape(-1, plan.row_bytes // 4)
    return block


def _read_threads(n: int, n_threads: int | None) -> int:
    """Threads of a fused many-key read: from _PARALLEL_KEYS keys on, all of them."""
    return 1 if n < _PARALLEL_KEYS else effective_n_threads(n_threads)


def _threads(n: int, n_threads: int | None) -> int:
    if n_threads is None and n * 64 < PARALLEL_GRAIN:
        return 1
    return threads_for(effective_n_threads(n_threads), n * 64)


def _put(records: np.ndarray, offset: int, value: np.ndarray) -> None:
    """Write one field of every record (value: n rows of any dtype)."""
    flat = np.ascontiguousarray(value).reshape(value.shape[0], -1).view(np.uint8)
    records[:, offset : offset + flat.shape[1]] = flat


def _as_array(value: Any, where: str) -> np.ndarray:
    if sp.issparse(value):
        raise ParameterError(f"{where}: got a sparse matrix for a dense feature; use .toarray()")
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise ParameterError(
            f"{where}: cannot make an array of {type(value).__name__}: {exc}"
        ) from None
    if arr.dtype == object:
        raise ParameterError(f"{where}: expected numbers, got an object array")
    return arr


def _cast_scalar(arr: np.ndarray, dtype: str, where: str) -> np.ndarray:
    kind = arr.dtype.kind
    if dtype == "bool":
        if kind != "b":
            raise ParameterError(f"{where}: expected bool values, got dtype {arr.dtype}")
        return arr
    if dtype == "int64":
        if kind not in "iu":
            raise ParameterError(f"{where}: expected integers, got dtype {arr.dtype}")
        if kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ParameterError(f"{where}: values above the int64 range")
        return arr.astype(np.int64)
    if kind not in "fiu":
        raise ParameterError(f"{where}: expected numbers, got dtype {arr.dtype}")
    return arr.astype(_SCALAR_DTYPES[dtype])


def _as_csr(value: Any, n: int, dim: int, where: str) -> sp.csr_matrix:
    if sp.issparse(value):
        m = sp.csr_matrix(value)
    else:
        arr = _as_array(value, where)
        if arr.ndim != 2:
            raise DimensionError(f"{where}: expected a ({n}, {dim}) matrix, got shape {arr.shape}")
        if arr.dtype.kind not in "fiub":
            raise ParameterError(f"{where}: expected numbers, got dtype {arr.dtype}")
        m = sp.csr_matrix(arr)
    if m.shape != (n, dim):
        raise DimensionError(f"{where}: expected shape ({n}, {dim}), got {m.shape}")
    if m.dtype.kind not in "fiub":
        raise ParameterError(f"{where}: expected numbers, got dtype {m.dtype}")
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    m.sum_duplicates()  # canonical: sorted indices, no duplicates
    return m


def _no_category(v: object) -> bool:
    """None, a float NaN or pandas.NA: a missing category (pandas writes all three)."""
    return v is None or (isinstance(v, float) and v != v) or type(v).__name__ == "NAType"


def _materialise(keys: Any) -> Any:
    try:
        return list(keys)
    except TypeError:
        return keys  # not iterable: the key checks say what is wrong with it


def key_sequence(keys: Any) -> Any:
    """keys as something with len() and slices: an array or list as it is, one key as a
    list of one, any other iterable (a generator, a pandas Series) listed."""
    if isinstance(keys, np.ndarray):
        return keys.reshape(-1) if keys.ndim == 0 else keys
    if isinstance(keys, list | tuple):
        return keys
    if isinstance(keys, int | str | bytes | np.integer):
        return [keys]
    values = getattr(keys, "to_numpy", None)  # pandas: its array, not boxed scalars
    return values() if callable(values) else _materialise(keys)


def _reopen_group(path: str, name: str, version: int | None = None) -> FeatureGroup:
    from mmfs.store import open as open_store

    return open_store(path, mode="r").group(name, version=version)


_INDEX_CHUNK: Final = 1 << 16


def _build_lsh(group: FeatureGroup, feature: str, idx: IndexDef, n_threads: int) -> IndexDef:
    """Write the projections of a new lsh index and the codes of every committed row."""
    store = group._store
    files = store._files(group.name)
    ftype = group._meta().features[feature]
    committed = store._committed(group.name)
    n_rows = committed.n_rows if committed is not None else 0
    snap = store._snapshot(group.name) if n_rows else None
    files.forget_lsh(feature, idx.gen)
    P = projections(ftype.width, idx.bits, idx.seed)
    mean = None
    if idx.metric == "euclidean" and snap is not None:
        current = snap.slot_rows()
        current = current[current >= 0]
        total = np.zeros(ftype.width, dtype=np.float64)
        for lo in range(0, current.shape[0], _INDEX_CHUNK):
            V = _search._values(group, snap, current[lo : lo + _INDEX_CHUNK], feature)
            total += np.asarray(V.sum(axis=0), dtype=np.float64).reshape(-1)
        mean = total / max(1, current.shape[0])
    t = thresholds(P, mean)
    write_projection(files.directory, feature, idx.gen, P, t, store._durable)
    codes_files = files.lsh_files(feature, idx)
    for lo in range(0, n_rows, _INDEX_CHUNK):
        assert snap is not None
        rows = np.arange(lo, min(n_rows, lo + _INDEX_CHUNK), dtype=np.int64)
        V = _search._values(group, snap, rows, feature)
        codes_files.write(lo, codes_of(V, P, t, n_threads), durable=store._durable)
    return dataclasses.replace(idx, n_rows=n_rows)
