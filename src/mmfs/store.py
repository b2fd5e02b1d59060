"""The store: a directory of memory-mapped files, one writer, any number of readers.

Layout of a store directory::

    HEAD.mmfs                 generation counter (uint64 [4], element 0), kind HEAD
    manifest-<gen>.mmfs       one JSON manifest per committed generation, kind MNFT
    groups/g<id>/...          the files of each feature group (see mmfs.group)
    .writer.lock              the writer lock (mmfs.storage.locking)

Commit protocol (``Store.commit``):
  1. rows, sparse elements and page-table pages written since the last commit are
     fsynced (``durability="commit"``; ``"none"`` skips every fsync: fast, and safe
     against a killed process but not against a power cut);
  2. the new directory, key index, category dictionaries and quantisation parameters
     are published as new files (never over a file a reader may hold);
  3. ``manifest-<gen>.mmfs`` is published by atomic rename -- **the commit point**;
  4. HEAD's counter is set to gen (8 bytes written in place), which is how running
     readers learn of the commit: every read compares it with the generation it holds
     and reloads when they differ.

Any process opening the store reads the newest manifest (by name, not HEAD, so a commit
whose writer died between steps 3 and 4 is still found).  A writer killed at any
instant therefore leaves either the old or the new generation complete; what it wrote
after the last commit point is ignored, and the next writer that opens the store
deletes the leftovers (``*.tmp`` files, segments and files beyond the manifest) and
repairs HEAD.  Nothing is unpickled or executed when a store is opened: every file is
an mmfs file whose header is checked before it is mapped, and the manifest is strict
JSON checked field by field.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import itertools
import os
import re
import shutil
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

from mmfs import lineage, training
from mmfs._kernels import _store
from mmfs._times import now_ns
from mmfs.budget import MemoryBudget
from mmfs.errors import (
    CorruptStoreError,
    FormatError,
    NotFoundError,
    ParameterError,
    ReadOnlyError,
    StoreClosedError,
)
from mmfs.experiments._model import ExperimentState
from mmfs.experiments.catalog import ExperimentCatalog
from mmfs.group import (
    PAGE_BITS,
    FeatureGroup,
    GroupFiles,
    GroupMeta,
    _deleted_keys,
    _Pending,
    _save_key_index,
    _Snapshot,
    gen_name,
    hist_name,
    hmin_name,
)
from mmfs.index.lsh import (
    IndexDef,
    build_table,
    read_table,
    table_due,
    table_path,
    write_table,
)
from mmfs.schema import Dense, check_name, check_schema, feature_from_json, layout
from mmfs.storage.fileformat import (
    HEADER_SIZE,
    create_array_file,
    open_array,
    read_json_file,
    write_array_file,
    write_json_file,
)
from mmfs.storage.keyindex import KeyIndex
from mmfs.storage.locking import WriterLock
from mmfs.training import TrainingSet
from mmfs.transforms.catalog import TransformCatalog

__all__ = ["Store", "Version", "open"]

HEAD_NAME: Final = "HEAD.mmfs"
MANIFEST_RE: Final = re.compile(r"manifest-(\d{12})\.mmfs")
DEFAULT_SEGMENT_BYTES: Final = 64 << 20
_GEN_FILE_RE: Final = re.compile(
    r"(?:dir|kidx|hist|hmin|cat-\w+?|quant-\w+?|pages@|lshp-\w+?|lsht?@)-?(\d{12})(?:-\w+)*\.mmfs"
)
_SUPERSEDED_RE: Final = re.compile(r"(kidx|dir|hist|hmin|cat-\w+?)-(\d{12})(?:-(\w+))?\.mmfs")
_PAGES_RE: Final = re.compile(r"pages(?:@(\d{12}))?-\d{6}\.mmfs")
#: an lsh index's projections or code segments: (feature, generation that created it)
_LSH_RE: Final = re.compile(r"lshp-(\w+)-(\d{12})\.mmfs|lsh@(\d{12})-(\w+)-[pr]-\d{6}\.mmfs")
#: an lsh index's bucket table: (the commit that wrote it, feature, the index's generation)
_LSH_TABLE_RE: Final = re.compile(r"lsht@(\d{12})-(\w+)-(\d{12})\.mmfs")
_MAX_RETRIES: Final = 8
_MAX_PINNED: Final = 64  # snapshots of pinned versions kept open (least recently used out)
_PINNED: Final = (1 << 64) - 1  # the generation of a pinned snapshot: never stale


@dataclass(frozen=True)
class Version:
    """One committed version of a store."""

    id: int
    message: str
    tags: tuple[str, ...]
    created: np.datetime64


@dataclass(frozen=True)
class Manifest:
    """One parsed, checked manifest."""

    gen: int
    message: str
    tags: tuple[str, ...]
    created_ns: int
    segment_bytes: int
    next_group_id: int
    groups: dict[str, GroupMeta]
    #: dropped groups that versions still kept name: id -> their last meta (their files
    #: stay until store.gc drops the last such version)
    retired: dict[int, GroupMeta]
    experiments: ExperimentState


def _read_manifest(source: str, gen: int) -> Manifest:
    doc = read_json_file(source, "MNFT")
    if not isinstance(doc, dict) or doc.get("format") != "mmfs-store":
        raise CorruptStoreError(f"{source}: not an mmfs store manifest")
    if _int(doc, "generation", source) != gen:
        raise CorruptStoreError(f"{source}: holds generation {doc.get('generation')!r}")
    groups = doc.get("groups")
    if not isinstance(groups, dict):
        raise CorruptStoreError(f"{source}: groups must be an object")
    tags = doc.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise CorruptStoreError(f"{source}: tags must be a list of str")
    parsed = {name: _parse_group(name, g, source) for name, g in groups.items()}
    retired_docs = doc.get("retired", [])
    if not isinstance(retired_docs, list) or not all(
        isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) for r in retired_docs
    ):
        raise CorruptStoreError(f"{source}: retired must be a list of [name, group]")
    retired_list = [_parse_group(n, g, source) for n, g in retired_docs]
    next_id = _int(doc, "next_group_id", source)
    ids = [m.id for m in parsed.values()] + [m.id for m in retired_list]
    if len(set(ids)) != len(ids) or any(i >= next_id for i in ids):
        raise CorruptStoreError(f"{source}: group ids are not unique and below next_group_id")
    return Manifest(
        gen=gen,
        message=str(doc.get("message", "")),
        tags=tuple(tags),
        created_ns=_int(doc, "created_ns", source),
        segment_bytes=_int(doc, "segment_bytes", source),
        next_group_id=next_id,
        groups=parsed,
        retired={m.id: m for m in retired_list},
        experiments=ExperimentState.from_json(doc.get("experiments"), source),
    )


def open(
    path: str | os.PathLike[str],
    memory_budget: Any = None,
    mode: Literal["a", "r"] = "a",
    *,
    durability: Literal["commit", "none"] = "commit",
    lock_timeout: float | None = 0.0,
    segment_bytes: int | None = None,
) -> Store:
    """Open the store at ``path``, creating it when ``mode="a"`` and it does not exist.

    ``mode="a"``: read and write; takes the writer lock (a second writer gets
    :class:`~mmfs.errors.LockedError`, or waits up to ``lock_timeout`` seconds; None
    waits forever).  ``mode="r"``: read only, no lock; sees each new commit of the
    writer on its next read.  A path under ``/dev/shm`` is an in-memory store that other
    processes can still open.  ``memory_budget``: bytes, a string like ``"4GiB"`` or a
    fraction of RAM (see :mod:`mmfs.budget`); None is unlimited.  ``segment_bytes``
    (creation only): the size of arena segment files (default 64 MiB).
    """
    return Store(
        path, memory_budget=memory_budget, mode=mode, durability=durability,
        lock_timeout=lock_timeout, segment_bytes=segment_bytes,
    )  # fmt: skip


def _latest_generation(path: str) -> int | None:
    gens = [int(m.group(1)) for f in os.listdir(path) if (m := MANIFEST_RE.fullmatch(f))]
    return max(gens) if gens else None


def _manifest_path(path: str, gen: int) -> str:
    return os.path.join(path, f"manifest-{gen_name(gen)}.mmfs")


def _int(doc: dict[str, Any], key: str, source: str, *, nullable: bool = False) -> Any:
    v = doc.get(key)
    if v is None and nullable and key in doc:
        return None
    if type(v) is not int or v < 0:
        raise CorruptStoreError(
            f"{source}: field {key!r} must be a non-negative integer, got {v!r}"
        )
    return v


def _parse_group(name: str, doc: Any, source: str) -> GroupMeta:
    src = f"{source} group {name!r}"
    if not isinstance(doc, dict):
        raise CorruptStoreError(f"{src}: not an object")
    try:
        check_name(name, "group name")
        key, key_type = doc["key"], doc["key_type"]
        if key_type not in ("int64", "str") or not isinstance(key, str):
            raise CorruptStoreError(f"{src}: invalid key {key!r} of type {key_type!r}")
        feats = doc["features"]
        if not isinstance(feats, list):
            raise CorruptStoreError(f"{src}: features must be a list")
        features = {}
        for item in feats:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise CorruptStoreError(f"{src}: invalid feature entry {item!r}")
            features[item[0]] = feature_from_json(item[1], src)
        features = check_schema(features)
        meta = GroupMeta(
            name=name, id=_int(doc, "id", src), key=key, key_type=key_type, features=features,
            description=str(doc["description"]), created_ns=_int(doc, "created_ns", src),
            written_ns=_int(doc, "written_ns", src, nullable=True),
            n_rows=_int(doc, "n_rows", src), n_slots=_int(doc, "n_slots", src),
            n_pages=_int(doc, "n_pages", src),
            keys_gen=_int(doc, "keys_gen", src, nullable=True),
            dir_gen=_int(doc, "dir_gen", src, nullable=True),
            pages_base=_int(doc, "pages_base", src),
            n_deleted=_int(doc, "n_deleted", src) if "n_deleted" in doc else 0,  # issue 8
        )  # fmt: skip
        if layout(features).record_bytes != doc["record_bytes"]:
            raise CorruptStoreError(f"{src}: record size does not match its schema")
        for field_name, kinds in (("categories", "category"), ("quant", "dense")):
            entries = doc[field_name]
            want = {
                n for n, t in features.items()
                if t.kind == kinds and (kinds != "dense" or getattr(t, "dtype", "") == "int8")
            }  # fmt: skip
            if not isinstance(entries, dict) or set(entries) != want:
                raise CorruptStoreError(f"{src}: {field_name} must name {sorted(want)}")
            setattr(meta, field_name, {n: _int(entries, n, src, nullable=True) for n in entries})
        sparse = doc["sparse_elems"]
        want = {n for n, t in features.items() if t.kind == "sparse"}
        if not isinstance(sparse, dict) or set(sparse) != want:
            raise CorruptStoreError(f"{src}: sparse_elems must name {sorted(want)}")
        meta.sparse_elems = {n: _int(sparse, n, src) for n in sparse}
        history = doc["history"]
        if not isinstance(history, list) or not all(
            isinstance(r, list) and len(r) == 3 and all(type(x) is int and x >= 0 for x in r)
            for r in history
        ):
            raise CorruptStoreError(f"{src}: history must be a list of [gen, number, entries]")
        meta.history = [(r[0], r[1], r[2]) for r in history]
        meta.definition = _int(doc, "definition", src)
        meta.info = lineage.check_info(doc["info"], features, src)
        indexes = doc.get("indexes", {})  # manifests before issue 8 have none
        if not isinstance(indexes, dict) or not set(indexes) <= set(features):
            raise CorruptStoreError(f"{src}: indexes must map features to index definitions")
        meta.indexes = {
            f: IndexDef.from_json(d, features[f], f"{src} index {f!r}") for f, d in indexes.items()
        }
        for f, idx in meta.indexes.items():
            if idx.kind == "lsh" and idx.n_rows != meta.n_rows:
                raise CorruptStoreError(f"{src}: the index of {f!r} does not code every row")
        if sum(r[2] for r in history) != meta.n_rows:
            raise CorruptStoreError(f"{src}: its history runs do not hold every row once")
    except KeyError as exc:
        raise CorruptStoreError(f"{src}: missing field {exc}") from None
    except ParameterError as exc:
        raise CorruptStoreError(f"{src}: {exc}") from None
    if (
        meta.n_slots > meta.n_rows
        or meta.n_deleted > meta.n_slots
        or (meta.n_slots and (meta.keys_gen is None or meta.dir_gen is None))
    ):
        raise CorruptStoreError(f"{src}: inconsistent counts")
    return meta


def _is_int8(ftype: object) -> bool:
    return isinstance(ftype, Dense) and ftype.dtype == "int8"


class Store:
    """An open store (see :func:`mmfs.open`).  Use it as a context manager, or close()."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        memory_budget: Any = None,
        mode: str = "a",
        durability: str = "commit",
        lock_timeout: float | None = 0.0,
        segment_bytes: int | None = None,
    ) -> None:
        if mode not in ("a", "r"):
            raise ParameterError(
                f'mode must be "a" (read and write) or "r" (read only), got {mode!r}'
            )
        if durability not in ("commit", "none"):
            raise ParameterError(f'durability must be "commit" or "none", got {durability!r}')
        if segment_bytes is not None and (
            type(segment_bytes) is not int or not 4096 <= segment_bytes <= 1 << 30
        ):
            raise ParameterError(
                f"segment_bytes must be an int in [4096, 2**30], got {segment_bytes!r}"
            )
        self.path = os.path.abspath(os.fspath(path))
        self.mode = mode
        self._closed = True
        self._durable = durability == "commit"
        self._budget = MemoryBudget(memory_budget) if memory_budget is not None else None
        self._lock: WriterLock | None = None
        self._head_fd: int | None = None
        self._files_by_id: dict[int, GroupFiles] = {}
        self._snaps: dict[str, _Snapshot] = {}
        self._pinned: dict[tuple[str, int], _Snapshot] = {}
        self._manifests: dict[int, Manifest] = {}
        self._pendings: dict[str, _Pending] = {}
        self._dropped: list[GroupMeta] = []
        self._retired: dict[int, GroupMeta] = {}
        self._tags: dict[str, int] = {}
        self._read_totals: dict[str, dict[str, list[int]]] = {}
        self._cached_transforms: set[str] = set()  # see TransformCatalog.cache
        if mode == "a":
            if os.path.exists(self.path) and not os.path.isdir(self.path):
                raise FormatError(f"{self.path} is not an mmfs store (it is not a directory)")
            os.makedirs(self.path, exist_ok=True)
            self._lock = WriterLock(self.path, timeout=lock_timeout).acquire()
            try:
                self._open_writer(segment_bytes or DEFAULT_SEGMENT_BYTES)
            except BaseException:
                self._lock.release()
                raise
        else:
            if not os.path.isdir(self.path):
                raise FormatError(f"{self.path} is not an mmfs store (no such directory)")
            latest = self._find_latest()
            self._head = self._map_head()
            self._load(latest)
        self._gc_seen = int(self._head[1])
        if self._budget is not None:
            self._budget.register_cache(f"mmfs store {self.path} {id(self)}", self._evict)
        self._closed = False

    # -- opening -------------------------------------------------------------------------

    def _find_latest(self) -> int:
        gen = _latest_generation(self.path)
        if gen is None:
            raise FormatError(f"{self.path} is not an mmfs store (it has no manifest)")
        return gen

    def _map_head(self) -> np.ndarray:
        path = os.path.join(self.path, HEAD_NAME)
        try:
            head = open_array(path, "HEAD")
        except FileNotFoundError:
            raise CorruptStoreError(
                f"{path} is missing; opening the store for writing (mode='a') recreates it"
            ) from None
        if head.dtype != np.uint64 or head.shape != (4,):
            raise CorruptStoreError(f"{self.path}/{HEAD_NAME}: expected uint64 (4,)")
        return head.view(np.ndarray)  # the same mapping; indexing a memmap costs a microsecond

    def _open_writer(self, segment_bytes: int) -> None:
        gen = _latest_generation(self.path)
        if gen is None:
            leftovers = [
                f for f in os.listdir(self.path) if f != ".writer.lock" and not f.endswith(".tmp")
            ]
            if leftovers:
                raise FormatError(
                    f"{self.path} is not an mmfs store and not empty ({sorted(leftovers)[:3]}); "
                    "choose a new or empty directory"
                )
            doc = self._manifest_doc(0, "create store", [], {}, segment_bytes, 0)
            write_json_file(_manifest_path(self.path, 0), doc, "MNFT", durable=self._durable)
            gen = 0
        self._load(gen)  # before touching anything: a foreign directory is refused here
        head_path = os.path.join(self.path, HEAD_NAME)
        try:
            self._head = self._map_head()
        except (OSError, FormatError):  # missing or damaged: it is only an announcement
            create_array_file(head_path, (4,), np.uint64, "HEAD", durable=self._durable)
            self._head = self._map_head()
        self._head_fd = os.open(head_path, os.O_WRONLY | os.O_CLOEXEC)
        self._recover()

    def _recover(self) -> None:
        """Delete what a writer that died left beyond the last commit; repair HEAD."""
        gen = self._gen
        for f in os.listdir(self.path):
            if f.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.path, f))
        groups_dir = os.path.join(self.path, "groups")
        live = {f"g{m.id}": m for m in [*self._groups.values(), *self._retired.values()]}
        if os.path.isdir(groups_dir):
            for d in os.listdir(groups_dir):
                if d not in live:
                    shutil.rmtree(os.path.join(groups_dir, d), ignore_errors=True)
        for meta in self._groups.values():
            files = self._files(meta.name)
            for f in os.listdir(files.directory):
                m = _GEN_FILE_RE.fullmatch(f)
                if f.endswith(".tmp") or (m and int(m.group(1)) > gen):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(files.path(f))
            files.rows.remove_segments_from(files.rows.segments_for(meta.n_rows))
            pages = files.pages(meta.pages_base)
            pages.remove_segments_from(pages.segments_for(meta.n_pages))
            for name, (ia, va) in files.sparse.items():
                n = meta.sparse_elems[name]
                ia.remove_segments_from(ia.segments_for(n))
                va.remove_segments_from(va.segments_for(n))
            for name, idx in meta.indexes.items():
                if idx.kind == "lsh":
                    files.lsh_files(name, idx).remove_from(idx.n_rows)
        if int(self._head[0]) != gen:
            self._write_head(gen)

    def _bump_gc_epoch(self) -> None:
        """Announce a gc (HEAD word 1): readers then forget the versions they cached."""
        assert self._head_fd is not None
        os.pwrite(self._head_fd, struct.pack("<Q", int(self._head[1]) + 1), HEADER_SIZE + 8)
        self._gc_seen = int(self._head[1])

    def _write_head(self, gen: int) -> None:
        assert self._head_fd is not None
        os.pwrite(self._head_fd, struct.pack("<Q", gen), HEADER_SIZE)

    def _manifest(self, gen: int) -> Manifest:
        """Manifest gen, parsed and checked (cached: a published manifest never changes)."""
        manifest = self._manifests.get(gen)
        if manifest is None:
            try:
                manifest = _read_manifest(_manifest_path(self.path, gen), gen)
            except FileNotFoundError:
                raise NotFoundError(f"the store {self.path} has no version {gen}") from None
            self._manifests[gen] = manifest
        return manifest

    def _load(self, gen: int) -> None:
        """Read manifest gen and make it the generation this object reads."""
        manifest = self._manifest(gen)
        self._segment_bytes = manifest.segment_bytes
        self._next_id = manifest.next_group_id
        self._groups = manifest.groups
        self._retired = manifest.retired
        self._experiments = self._exp_work = manifest.experiments
        self._gen = gen
        self._drop_snaps()
        if self.mode == "a":
            self._work = copy.deepcopy(self._groups)

    # -- versions --------------------------------------------------------------------------

    def versions(self) -> list[Version]:
        """Every committed version (generation), oldest first: id, message, tags, created."""
        self._check_open()
        self._refresh_if_stale()
        gens = sorted(
            int(m.group(1)) for f in os.listdir(self.path) if (m := MANIFEST_RE.fullmatch(f))
        )
        out = []
        for g in gens:
            if g > self._gen:
                continue  # committed after this object's generation: not visible yet
            m = self._manifest(g)
            out.append(Version(g, m.message, m.tags, np.datetime64(m.created_ns, "ns")))
        return out

    def version(self, ref: int | str) -> int:
        """The id of a version given by id or by tag (NotFoundError when there is none)."""
        self._check_open()
        if isinstance(ref, bool) or not isinstance(ref, int | np.integer | str):
            raise ParameterError(f"a version is an int id or a str tag, got {ref!r}")
        if not isinstance(ref, str):
            self._refresh_if_stale()
            if not 0 <= ref <= self._gen:
                raise NotFoundError(
                    f"the store {self.path} has versions 0 to {self._gen}, not {ref}"
                )
            return int(ref)
        v = self._tags.get(ref)  # tags are unique, immutable and never collected
        if v is None:
            self._tags = {t: x.id for x in self.versions() for t in x.tags}
            v = self._tags.get(ref)
            if v is None:
                raise NotFoundError(f"no version of the store {self.path} is tagged {ref!r}")
        return v

    def diff(self, v1: int | str, v2: int | str) -> dict[str, np.ndarray | list[str]]:
        """{group: keys whose current row differs between versions v1 and v2} (a key
        written again counts, even with an equal value), for the groups present in both
        (keys written at one and not the other included).  Only
        the rows written between the two versions are looked at: the cost is what
        changed, not the size of the group."""
        a, b = self.version(v1), self.version(v2)
        out: dict[str, np.ndarray | list[str]] = {}
        manifest_a = self._kept_manifest(a)  # a version gc dropped is NotFoundError,
        manifest_b = self._kept_manifest(b)  # even when no group is in both
        for name, meta_b in manifest_b.groups.items():
            meta_a = manifest_a.groups.get(name)
            if meta_a is None or meta_a.id != meta_b.id:
                continue
            sa, sb = self._version_snapshot(name, a), self._version_snapshot(name, b)
            lo, hi = sorted((meta_a.n_rows, meta_b.n_rows))
            newer = sb if meta_b.n_rows >= meta_a.n_rows else sa
            slots = np.unique(newer.row_slots(np.arange(lo, hi, dtype=np.int64)))
            if slots.shape[0] and (slots[0] < 0 or slots[-1] >= newer.meta.n_slots):
                raise CorruptStoreError(f"group {name!r}: a record names a slot out of range")
            end = np.full(slots.shape[0], np.iinfo(np.int64).max, dtype=np.int64)
            ra = np.empty_like(slots)
            rb = np.empty_like(slots)
            if sa.table.asof_rows(slots, end, ra) or sb.table.asof_rows(slots, end, rb):
                raise CorruptStoreError(f"group {name!r}: a history run is corrupt")
            changed = slots[ra != rb]
            keys = sb.index.keys()
            out[name] = (
                [keys[i] for i in changed.tolist()] if isinstance(keys, list) else keys[changed]
            )
        return out

    def gc(self, keep: int = 1, *, also: Any = ()) -> dict[str, Any]:
        """Drop old versions: keep the newest ``keep`` ones, every tagged one (a tag pins
        its version) and those named in ``also`` (ids or tags); delete the rest, and the
        files of dropped groups that no kept version names.  Returns
        {"dropped": [version ids], "bytes_freed": int}.

        Safe beside readers: batches already read stay valid (a reader keeps the files
        it mapped); a read of a dropped version afterwards, in any process, gets
        NotFoundError (gc announces itself in HEAD, which every pinned read checks).  What the
        newest version knows is never touched: every row stays readable with as_of=,
        and each commit already deletes the index, page and history files that newer
        ones replaced."""
        self._check_writable()
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ParameterError(f"keep must be an int >= 1 (the newest versions), got {keep!r}")
        refs = [also] if isinstance(also, int | str) else list(also)
        kept = {self.version(r) for r in refs}
        versions = self.versions()
        kept.update(v.id for v in versions[-keep:])
        kept.update(v.id for v in versions if v.tags)
        kept.add(self._gen)
        dropped = [v.id for v in versions if v.id not in kept]
        named = {m.id for v in kept for m in self._manifest(v).groups.values()}
        freed = 0
        for v in dropped:
            path = _manifest_path(self.path, v)
            with contextlib.suppress(FileNotFoundError):
                freed += os.stat(path).st_size
                os.unlink(path)
            self._manifests.pop(v, None)
        for group_id in [i for i in self._retired if i not in named]:
            directory = os.path.join(self.path, "groups", f"g{group_id}")
            freed += _tree_bytes(directory)
            self._delete_group_files(group_id)
            del self._retired[group_id]  # the next commit's manifest no longer lists it
        for key in [k for k in self._pinned if k[1] not in kept]:
            self._retire(self._pinned.pop(key))
        if dropped:
            self._bump_gc_epoch()
        return {"dropped": dropped, "bytes_freed": freed}

    def _version_snapshot(self, name: str, ref: int | str) -> _Snapshot:
        """The snapshot of group ``name`` as version ``ref`` had it: its manifest's row
        and slot counts over the newest key index and history runs (independent of the
        number of versions; the 64 most recently used are cached)."""
        v = self.version(ref)
        if self._head[1] != self._gc_seen:  # a gc since: cached versions may be gone
            self._gc_seen = int(self._head[1])
            self._drop_pinned()
            self._manifests = {g: m for g, m in self._manifests.items() if g == self._gen}
        # Even the newest version gets a pinned snapshot: the live one moves on with the
        # next commit, a pinned read must not.
        snap = self._pinned.pop((name, v), None)
        if snap is not None:
            self._pinned[(name, v)] = snap  # least recently used first
            return snap
        meta = self._version_meta(name, v)
        # Keys keep their slots and categories their codes forever, so the newest key
        # index and dictionaries serve every version (bounded by the version's n_slots),
        # and the newest history runs hold every row (read below the version's n_rows).
        for attempt in range(_MAX_RETRIES):
            latest = self._newest_meta(meta.id)
            try:
                snap = _Snapshot(
                    meta, self._files_of(latest), self._head, _PINNED, self._budget,
                    index_meta=latest, cached=self._cached_transforms,
                )  # fmt: skip
                break
            except FileNotFoundError as exc:  # superseded by a commit since: reload
                if not os.path.exists(_manifest_path(self.path, v)):
                    raise NotFoundError(
                        f"version {v} of the store {self.path} has been dropped (store.gc)"
                    ) from None
                if self.mode == "a" or attempt == _MAX_RETRIES - 1:
                    raise CorruptStoreError(
                        f"group {name!r}: the file {exc.filename} is missing; restore the "
                        "store from a copy"
                    ) from None
                self.refresh()
        assert snap is not None
        if len(self._pinned) >= _MAX_PINNED:
            self._retire(self._pinned.pop(next(iter(self._pinned))))
        self._pinned[(name, v)] = snap
        return snap

    def _newest_meta(self, group_id: int) -> GroupMeta:
        """The newest committed meta of the group with id ``group_id`` (retired when it
        has been dropped)."""
        for meta in self._groups.values():
            if meta.id == group_id:
                return meta
        meta = self._retired.get(group_id)
        if meta is None:
            raise NotFoundError(f"group {group_id} is gone from the store {self.path}")
        return meta

    def _manifest_doc(
        self,
        gen: int,
        message: str,
        tags: list[str],
        groups: dict[str, GroupMeta],
        segment_bytes: int,
        next_id: int,
        retired: dict[int, GroupMeta] | None = None,
        experiments: ExperimentState | None = None,
    ) -> dict[str, Any]:
        return {
            "format": "mmfs-store",
            "generation": gen,
            "parent": gen - 1 if gen else None,
            "message": message,
            "tags": tags,
            "created_ns": now_ns(),
            "segment_bytes": segment_bytes,
            "next_group_id": next_id,
            "groups": {name: m.to_json() for name, m in groups.items()},
            "retired": [[m.name, m.to_json()] for m in (retired or {}).values()],
            "experiments": (experiments or ExperimentState()).to_json(),
        }

    # -- state -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the store {self.path} is closed; open it again with mmfs.open")

    def _check_writable(self) -> None:
        self._check_open()
        if self.mode != "a":
            raise ReadOnlyError(f"the store {self.path} was opened read-only (mode='r')")

    @property
    def generation(self) -> int:
        """The committed generation this object reads (refreshed by every read)."""
        self._check_open()
        self._refresh_if_stale()
        return self._gen

    def _refresh_if_stale(self) -> None:
        if self.mode == "r" and int(self._head[0]) > self._gen:
            self.refresh()

    def refresh(self) -> int:
        """Load the newest committed generation now (reads do this by themselves)."""
        self._check_open()
        if self.mode == "a":
            return self._gen
        # HEAD first: it is written after its manifest, so a HEAD ahead of the newest
        # manifest listed after reading it is damage, not a commit landing in between.
        announced = int(self._head[0])
        self._load(self._find_latest())
        if announced > self._gen:
            raise CorruptStoreError(
                f"{self.path}/{HEAD_NAME} announces generation {announced}, but the newest "
                f"manifest is generation {self._gen}; opening the store for writing "
                "(mode='a') repairs it"
            )
        return self._gen

    def _group_meta(self, name: str) -> GroupMeta:
        self._check_open()
        if self.mode == "a":
            meta = self._work.get(name)
        else:
            self._refresh_if_stale()
            meta = self._groups.get(name)
        if meta is None:
            raise NotFoundError(
                f"no group {name!r} in the store {self.path}; it has {self.groups()}"
            )
        return meta

    def _committed(self, name: str) -> GroupMeta | None:
        """The committed group ``name`` is, or None.  For a writer, a group dropped or
        dropped and created again since the commit is not the committed one."""
        meta = self._groups.get(name)
        if meta is not None and self.mode == "a":
            work = self._work.get(name)
            if work is None or work.id != meta.id:
                return None
        return meta

    def _files(self, name: str) -> GroupFiles:
        return self._files_of(self._work[name] if self.mode == "a" else self._groups[name])

    def _files_of(self, meta: GroupMeta) -> GroupFiles:
        files = self._files_by_id.get(meta.id)
        if files is None:
            directory = os.path.join(self.path, "groups", f"g{meta.id}")
            files = GroupFiles(directory, meta, self._segment_bytes)
            self._files_by_id[meta.id] = files
        return files

    def _snapshot(self, name: str, *, refresh: bool = False) -> _Snapshot:
        """The committed snapshot of a group, reloading the store when it is stale."""
        if self._closed:
            self._check_open()
        if refresh and self.mode == "r":
            self.refresh()
        snap = self._snaps.get(name)
        if snap is not None:
            return snap
        snap = None
        for attempt in range(_MAX_RETRIES):
            meta = self._committed(name)
            if meta is None:
                if self.mode == "a" and name in self._work:  # created, not yet committed
                    meta = self._work[name]
                else:
                    raise NotFoundError(
                        f"no committed group {name!r} in the store {self.path}; "
                        f"it has {self.groups()}"
                    )
            try:
                snap = _Snapshot(
                    meta, self._files(name), self._head, self._gen, self._budget,
                    cached=self._cached_transforms,
                )  # fmt: skip
                break
            except FileNotFoundError as exc:
                # A writer replaced the files of this generation after we read its
                # manifest: read the newer one.  A file the newest manifest names and
                # that does not exist is damage.
                newer = self.mode == "r" and _latest_generation(self.path) != self._gen
                if not newer or attempt == _MAX_RETRIES - 1:
                    raise CorruptStoreError(
                        f"group {name!r} of generation {self._gen}: the file "
                        f"{exc.filename} is missing; restore the store from a copy"
                    ) from None
                self.refresh()
        assert snap is not None
        self._snaps[name] = snap
        return snap

    def _pending(self, name: str) -> _Pending:
        pending = self._pendings.get(name)
        if pending is None:
            meta = self._work[name]
            snap = self._snapshot(name) if self._committed(name) is not None else None
            if meta.n_slots:
                self._charge_now(16 * meta.n_slots, f"the page table of {name}")
            pending = _Pending(meta, snap)
            self._pendings[name] = pending
        return pending

    def _charge(self, nbytes: int, what: str) -> contextlib.AbstractContextManager[Any]:
        if self._budget is None:
            return contextlib.nullcontext()
        return self._budget.charge(nbytes, what)

    def _charge_now(self, nbytes: int, what: str) -> None:
        with self._charge(nbytes, what):
            pass

    def _evict(self, _need: int) -> int:
        """Drop decoded caches (category tables) when the budget runs short."""
        return sum(snap.drop_caches() for snap in self._snaps.values())

    def _drop_snaps(self) -> None:
        for snap in getattr(self, "_snaps", {}).values():
            self._retire(snap)
        self._snaps = {}

    def _drop_pinned(self) -> None:
        for snap in self._pinned.values():
            self._retire(snap)
        self._pinned = {}

    def _retire(self, snap: _Snapshot) -> None:
        """Release a snapshot's caches and keep its read counts."""
        snap.drop_caches()
        self._retire_counts(snap)

    def read_counts(self, group: str) -> dict[str, dict[str, int]]:
        """{feature: {"calls": n, "keys": n}}: reads of a group's features by this process
        since it opened the store (readers cannot write the store, so counts are per
        process; export them through a monitoring hook to aggregate)."""
        for snap in [*self._snaps.values(), *self._pinned.values()]:
            if snap.meta.name == group:
                self._retire_counts(snap)
        totals = self._read_totals.get(group, {})
        return {f: {"calls": c, "keys": k} for f, (c, k) in totals.items()}

    def _retire_counts(self, snap: _Snapshot) -> None:
        totals = self._read_totals.setdefault(snap.meta.name, {})
        for name, (calls, keys) in snap.take_reads().items():
            c = totals.setdefault(name, [0, 0])
            c[0] += calls
            c[1] += keys

    @functools.cached_property
    def transforms(self) -> TransformCatalog:
        """The store's transforms: fit, add, list, describe, pin (mmfs.transforms.catalog)."""
        return TransformCatalog(self)

    @functools.cached_property
    def experiments(self) -> ExperimentCatalog:
        """The store's experiments: create, ramp, restart, stop, read at a version
        (mmfs.experiments.catalog)."""
        return ExperimentCatalog(self)

    @property
    def budget(self) -> MemoryBudget | None:
        """The memory budget ledger (None when the store was opened without a budget)."""
        return self._budget

    # -- groups ----------------------------------------------------------------------------

    def groups(self) -> list[str]:
        """Names of the groups (a writer also sees the ones it created since its commit)."""
        self._check_open()
        if self.mode == "a":
            return sorted(self._work)
        self._refresh_if_stale()
        return sorted(self._groups)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.groups()

    def __getitem__(self, name: str) -> FeatureGroup:
        return self.group(name)

    def group(self, name: str, *, version: int | str | None = None) -> FeatureGroup:
        """The feature group ``name`` (NotFoundError when there is none); with
        ``version``, the group as that version had it (dropped since or not), its reads
        pinned to that version."""
        if version is None:
            self._group_meta(name)
            return FeatureGroup(self, name)
        v = self.version(version)
        self._version_meta(name, v)
        return FeatureGroup(self, name, v)

    def _kept_manifest(self, v: int) -> Manifest:
        """Manifest v, or NotFoundError when store.gc has dropped it (even after it was
        read and cached)."""
        if v in self._manifests and not os.path.exists(_manifest_path(self.path, v)):
            del self._manifests[v]  # dropped by store.gc since it was read
        return self._manifest(v)

    def _version_meta(self, name: str, v: int) -> GroupMeta:
        meta = self._kept_manifest(v).groups.get(name)
        if meta is None:
            raise NotFoundError(f"version {v} of the store {self.path} has no group {name!r}")
        return meta

    def create_group(
        self,
        name: str,
        key: str = "id",
        key_type: str = "int64",
        schema: Any = None,
        *,
        description: str = "",
    ) -> FeatureGroup:
        """Create a feature group (visible to readers after the next commit).

        ``schema`` maps feature names to :func:`mmfs.scalar`, :func:`mmfs.category`,
        :func:`mmfs.dense` or :func:`mmfs.sparse`.  ``key`` names the entity key and
        ``key_type`` is ``"int64"`` or ``"str"``.
        """
        self._check_writable()
        check_name(name, "a group name")
        check_name(key, "the key name")
        if key_type not in ("int64", "str"):
            raise ParameterError(f'key_type must be "int64" or "str", got {key_type!r}')
        features = check_schema(schema)
        if key in features:
            raise ParameterError(f"the key {key!r} is also a feature name; rename one of them")
        if name in self._work:
            raise ParameterError(f"a group named {name!r} already exists in {self.path}")
        if not isinstance(description, str):
            raise ParameterError(f"description must be a str, got {description!r}")
        meta = GroupMeta(
            name=name, id=self._next_id, key=key, key_type=key_type, features=features,
            description=description, created_ns=now_ns(), written_ns=None,
            categories={n: None for n, t in features.items() if t.kind == "category"},
            quant={n: None for n, t in features.items() if _is_int8(t)},
            sparse_elems={n: 0 for n, t in features.items() if t.kind == "sparse"},
        )  # fmt: skip
        meta.info = {n: lineage.new_info(meta.created_ns, 1) for n in features}
        os.makedirs(os.path.join(self.path, "groups", f"g{meta.id}"), exist_ok=True)
        self._next_id += 1
        self._work[name] = meta
        return FeatureGroup(self, name)

    def drop_group(self, name: str) -> None:
        """Drop a group and its data (takes effect at the next commit)."""
        self._check_writable()
        meta = self._group_meta(name)
        del self._work[name]
        self._pendings.pop(name, None)
        dropped_snap = self._snaps.pop(name, None)
        if dropped_snap is not None:
            self._retire(dropped_snap)
        self._dropped.append(meta)

    def describe(self, name: str | None = None) -> dict[str, Any]:
        """Metadata of the store and all its groups; of one group (``"users"``); or of one
        feature (``"users.clicks"``, or ``"users.clicks@12"`` as version 12 had it):
        type, description, owner, tags, created, last written, definition version, how
        it was derived, and this process's read counts."""
        if name is not None and "." in name:
            return self._describe_feature(name)
        if name is None:
            return {
                "path": self.path,
                "generation": self.generation,
                "groups": {g: self.describe(g) for g in self.groups()},
            }
        meta = self._group_meta(name)
        committed = self._committed(name)
        return {
            "name": name,
            "key": meta.key,
            "key_type": meta.key_type,
            "features": {n: t.to_json() for n, t in meta.features.items()},
            "description": meta.description,
            "keys": committed.n_keys if committed else 0,
            "rows": committed.n_rows if committed else 0,
            "record_bytes": layout(meta.features).record_bytes,
            "created": np.datetime64(meta.created_ns, "ns"),
            "last_written": None if committed is None or committed.written_ns is None
            else np.datetime64(committed.written_ns, "ns"),
            "definition": meta.definition,
        }  # fmt: skip

    def _describe_feature(self, ref: str) -> dict[str, Any]:
        name, _, at = ref.partition("@")
        group, feature = lineage.split_feature(name)
        if at:
            if not at.isdigit():
                raise ParameterError(f'a feature at a version is "group.feature@<id>", got {ref!r}')
            meta = self._version_meta(group, self.version(int(at)))
            committed: GroupMeta | None = meta
        else:
            meta = self._group_meta(group)
            committed = self._committed(group)
        if feature not in meta.features:
            raise NotFoundError(
                f"group {group!r} has no feature {feature!r}: {list(meta.features)}"
            )
        info = meta.info[feature]
        reads = self.read_counts(group).get(feature, {"calls": 0, "keys": 0})
        return {
            "feature": ref,
            "group": group,
            "type": meta.features[feature].to_json(),
            "description": info["description"],
            "owner": info["owner"],
            "tags": list(info["tags"]),
            "created": np.datetime64(info["created_ns"], "ns"),
            "last_written": None if committed is None or committed.written_ns is None
            else np.datetime64(committed.written_ns, "ns"),
            "definition": info["definition"],
            "derived": copy.deepcopy(info["derived"]),
            "transforms": dict(info.get("transforms", {})),
            "reads": reads,
        }  # fmt: skip

    def annotate(
        self,
        feature: str,
        *,
        description: str | None = None,
        owner: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> None:
        """Set a feature's description, owner or tags (published by the next commit)."""
        self._check_writable()
        group, name = lineage.split_feature(feature)
        meta = self._group_meta(group)
        if name not in meta.features:
            raise NotFoundError(f"group {group!r} has no feature {name!r}: {list(meta.features)}")
        for what, value in (("description", description), ("owner", owner)):
            if value is not None and not isinstance(value, str):
                raise ParameterError(f"{what} must be a str, got {value!r}")
        if tags is not None and (
            isinstance(tags, str) or not all(isinstance(t, str) for t in tags)
        ):
            raise ParameterError(f"tags must be a list of str, got {tags!r}")
        info = meta.info[name]
        if description is not None:
            info["description"] = description
        if owner is not None:
            info["owner"] = owner
        if tags is not None:
            info["tags"] = list(dict.fromkeys(tags))

    def lineage(self, feature: str) -> dict[str, Any]:
        """The dependency graph of a feature: {"feature", "nodes": {"group.feature[@v]":
        describe() of it}, "edges": [[source, target], ...]}, following derived
        features' sources (each ``group.feature@version``) transitively."""
        self._check_open()
        return lineage.graph(self._describe_feature, feature)

    def alter_group(
        self,
        name: str,
        *,
        add: Mapping[str, Any] | None = None,
        drop: Sequence[str] = (),
        retype: Mapping[str, Any] | None = None,
    ) -> FeatureGroup:
        """A new definition version of a group (published by the next commit): ``add``
        features (rows written before read them as missing values: NaN, 0, False,
        None or empty), ``drop`` features, ``retype`` features (every stored value is
        read and written again under the new type, as a write would take it).  Rows,
        event times, keys and their order are kept; versions committed before keep the
        old definition (their files stay until store.gc drops them).  Costs one pass over
        the group's rows."""
        self._check_writable()
        old = self._group_meta(name)
        pending = self._pendings.get(name)
        if pending is not None and pending.written:
            raise ParameterError(
                f"group {name!r} has uncommitted writes: commit or roll back first"
            )
        add = dict(add or {})
        retype = dict(retype or {})
        drop = [drop] if isinstance(drop, str) else list(drop)
        for f in [*drop, *retype]:
            if f not in old.features:
                raise ParameterError(f"group {name!r} has no feature {f!r}: {list(old.features)}")
        for f in add:
            if f in old.features:
                raise ParameterError(f"group {name!r} already has a feature {f!r}")
        if set(drop) & set(retype):
            raise ParameterError("a feature cannot be both dropped and retyped")
        features = {f: retype.get(f, t) for f, t in old.features.items() if f not in drop}
        features = check_schema({**features, **add})
        if old.key in features:
            raise ParameterError(f"the key {old.key!r} is also a feature name; rename one of them")
        committed = self._committed(name)
        snap = self._snapshot(name) if committed is not None and committed.n_rows else None
        created = now_ns()
        new = GroupMeta(
            name=name, id=self._next_id, key=old.key, key_type=old.key_type, features=features,
            description=old.description, created_ns=old.created_ns, written_ns=None,
            categories={n: None for n, t in features.items() if t.kind == "category"},
            quant={n: None for n, t in features.items() if _is_int8(t)},
            sparse_elems={n: 0 for n, t in features.items() if t.kind == "sparse"},
        )  # fmt: skip
        new.definition = old.definition + 1
        new.info = {
            f: copy.deepcopy(old.info[f])
            if f in old.features and f not in retype
            else lineage.new_info(created, new.definition)
            for f in features
        }
        os.makedirs(os.path.join(self.path, "groups", f"g{new.id}"), exist_ok=True)
        self._next_id += 1
        self._pendings.pop(name, None)
        self._work[name] = new
        try:
            if snap is not None:
                _copy_rows(snap, FeatureGroup(self, name), features, list(add))
        except BaseException:
            self._pendings.pop(name, None)
            self._work[name] = old
            self._delete_group_files(new.id)
            raise
        self._dropped.append(old)
        return FeatureGroup(self, name)

    def derive(
        self,
        target: str,
        fn: Any,
        inputs: Sequence[str],
        *,
        version: int | str | None = None,
    ) -> int:
        """Compute feature ``target`` (``"group.feature"``) as ``fn(*inputs)`` for every
        key of the inputs' group, as version ``version`` (default: the newest) had them,
        and write it with each key's event time (published by the next commit).  ``fn``
        is a function registered with :func:`mmfs.register_function` (or its name); it
        takes one numpy array per input and returns one value per key (an (n,) or
        (n, dim) array).  The target group is created (keyed like the source) or altered
        to hold the feature when needed, and the feature records its lineage: sources
        ``group.feature@version``, the function's name, version and code fingerprint.
        Returns the number of rows written."""
        self._check_writable()
        rf = lineage.function(fn)
        if isinstance(inputs, str) or not inputs:
            raise ParameterError('inputs must be a non-empty list of "group.feature" names')
        parts = [lineage.split_feature(i) for i in inputs]
        groups = {g for g, _ in parts}
        if len(groups) != 1:
            raise ParameterError(f"inputs must come from one group, got {sorted(groups)}")
        (src_group,) = groups
        tgroup, tfeature = lineage.split_feature(target)
        if tgroup == src_group and tfeature in [f for _, f in parts]:
            raise ParameterError(f"{target!r} cannot be derived from itself")
        v = self._gen if version is None else self.version(version)
        src = self.group(src_group, version=v)
        meta = self._version_meta(src_group, v)
        keys = self._version_snapshot(src_group, v).committed_keys()
        batch = src.get(keys, list(dict.fromkeys(f for _, f in parts)))
        with np.errstate(all="ignore"):
            out = np.asarray(rf.fn(*[batch[f] for _, f in parts]))
        if out.ndim not in (1, 2) or out.shape[0] != len(batch):
            raise ParameterError(
                f"function {rf.name!r} returned shape {out.shape}; expected ({len(batch)},) "
                f"or ({len(batch)}, dim)"
            )
        ftype = _type_of(out)
        if tgroup not in self._work:
            self.create_group(
                tgroup, key=meta.key, key_type=meta.key_type, schema={tfeature: ftype}
            )
        elif tfeature not in self._work[tgroup].features:
            self.alter_group(tgroup, add={tfeature: ftype})
        tmeta = self._work[tgroup]
        if list(tmeta.features) != [tfeature]:
            raise ParameterError(
                f"group {tgroup!r} holds other features {list(tmeta.features)}: a write needs "
                "them all; derive into a group of its own"
            )
        target_group = FeatureGroup(self, tgroup)
        n = target_group.write(keys, {tfeature: out}, event_time=batch.event_time)
        tmeta.info[tfeature]["derived"] = {
            "function": rf.name,
            "function_version": rf.version,
            "fingerprint": rf.fingerprint,
            "sources": [f"{g}.{f}@{v}" for g, f in parts],
            "inputs": list(inputs),
        }
        return n

    # -- commit ----------------------------------------------------------------------------

    def commit(self, message: str = "", tags: Any = None) -> int:
        """Publish everything written since the last commit, atomically; returns the new
        generation.  Readers see all of it on their next read, or none of it."""
        self._check_writable()
        if not isinstance(message, str):
            raise ParameterError(f"message must be a str, got {message!r}")
        raw_tags: list[Any] = (
            [] if tags is None
            else [tags] if isinstance(tags, str)
            else list(tags) if isinstance(tags, list | tuple | set | frozenset)
            else [None]
        )  # fmt: skip
        tag_list = [t for t in raw_tags if isinstance(t, str) and t]
        if len(tag_list) != len(raw_tags):
            raise ParameterError(f"tags must be a str or a list of non-empty str, got {tags!r}")
        taken = {t: v.id for v in self.versions() for t in v.tags}
        for t in tag_list:
            if t in taken:
                raise ParameterError(f"the tag {t!r} already names version {taken[t]}")
        tag_list = list(dict.fromkeys(tag_list))
        gen = self._gen + 1
        new: dict[str, GroupMeta] = {}
        for name, work in self._work.items():
            meta = copy.deepcopy(work)
            pending = self._pendings.get(name)
            if pending is not None and pending.written:
                self._commit_group(name, meta, pending, gen)
            self._commit_indexes(name, meta, gen)
            new[name] = meta
        retired = dict(self._retired)
        for meta in self._dropped:
            committed = self._groups.get(meta.name)
            if committed is not None and committed.id == meta.id:
                retired[meta.id] = committed  # older versions still read it: see gc()
        doc = self._manifest_doc(
            gen, message, tag_list, new, self._segment_bytes, self._next_id, retired,
            self._exp_work,
        )  # fmt: skip
        write_json_file(_manifest_path(self.path, gen), doc, "MNFT", durable=self._durable)
        # ---- the commit point: from here on, generation gen is the store ----
        self._write_head(gen)
        for pending in self._pendings.values():
            pending.dirty.clear()
            pending.keys_changed = False
            pending.categories_changed.clear()
            pending.quant.clear()
            pending.hist.clear()
            pending.written = False
        dropped, self._dropped = self._dropped, []
        old_groups = self._groups
        self._groups = new
        self._retired = retired
        self._experiments = self._exp_work
        self._work = copy.deepcopy(new)
        self._gen = gen
        self._drop_snaps()
        self._drop_pinned()
        for meta in dropped:
            if meta.id not in retired:  # never committed: nothing names its files
                self._delete_group_files(meta.id)
        for name, meta in new.items():
            previous = old_groups.get(name)
            changed = self._pendings.get(name) is not None or (
                previous is not None and previous.indexes != meta.indexes)  # fmt: skip
            if changed and previous and previous.id == meta.id:
                self._remove_superseded(meta, previous)
        return gen

    def _commit_indexes(self, name: str, meta: GroupMeta, gen: int) -> None:
        """The lsh codes written with the rows are published with them, and the bucket
        table built anew when its tail is due (see mmfs.index.lsh)."""
        for f, idx in meta.indexes.items():
            if idx.kind != "lsh":
                continue
            files = self._files(name)
            if idx.n_rows != meta.n_rows:
                if self._durable:
                    files.lsh_files(f, idx).flush(idx.n_rows, meta.n_rows)
                idx = dataclasses.replace(idx, n_rows=meta.n_rows)
            if table_due(idx, meta.n_rows):
                idx = dataclasses.replace(idx, table_rows=meta.n_rows, table_gen=gen)
                write_table(files.directory, f, idx, files.lsh_files(f, idx), self._durable)
            meta.indexes[f] = idx

    def _delete_group_files(self, group_id: int) -> None:
        files = self._files_by_id.pop(group_id, None)
        if files is not None:
            files.close()
        shutil.rmtree(os.path.join(self.path, "groups", f"g{group_id}"), ignore_errors=True)

    def _remove_superseded(self, meta: GroupMeta, previous: GroupMeta) -> None:
        """Delete the key index, category, page table and history files that neither this
        commit nor the one before it names.  Every version reads the newest ones: keys
        and codes never change, and the newest history runs hold every row (a version
        reads them below its row count).  The previous generation's are kept for a
        reader that is loading it right now (a reader that finds a file gone reloads the
        newest manifest); a snapshot already loaded keeps what it mapped."""
        both = (meta, previous)
        keep: dict[str, set[Any]] = {
            "kidx": {m.keys_gen for m in both},
            "dir": {m.dir_gen for m in both},
            "hist": {(g, str(j)) for m in both for g, j, _ in m.history},
        }
        keep["hmin"] = keep["hist"]
        for n, g in meta.categories.items():
            keep[f"cat-{n}"] = {g, previous.categories.get(n)}
        bases = {m.pages_base for m in both}
        files = self._files_of(meta)
        indexes = {(f, idx.gen) for m in both for f, idx in m.indexes.items()}
        tables = {(idx.table_gen, f, idx.gen) for m in both for f, idx in m.indexes.items()}
        for f in os.listdir(files.directory):
            m = _SUPERSEDED_RE.fullmatch(f)
            lsh = _LSH_RE.fullmatch(f)
            table = _LSH_TABLE_RE.fullmatch(f)
            if table is not None:
                tgen, feature, g = table.groups()
                stale = (int(tgen), feature, int(g)) not in tables
            elif lsh is not None:
                feature, g = lsh.group(1) or lsh.group(4), int(lsh.group(2) or lsh.group(3))
                stale = (feature, g) not in indexes
            elif m is not None:
                kind, gen, part = m.group(1), int(m.group(2)), m.group(3)
                stale = (gen, part) not in keep[kind] if kind in ("hist", "hmin") else (
                    gen not in keep.get(kind, (gen,)))  # fmt: skip
            else:
                m = _PAGES_RE.fullmatch(f)
                stale = m is not None and int(m.group(1) or 0) not in bases
            if stale:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(files.path(f))
        for base in list(files.page_bases()):
            if base not in bases:
                files.forget_pages(base)

    def _commit_group(self, name: str, meta: GroupMeta, pending: _Pending, gen: int) -> None:
        files = self._files(name)
        durable = self._durable
        if durable:
            files.rows.flush(meta.n_rows, pending.n_rows)
            for fname, (ia, va) in files.sparse.items():
                ia.flush(meta.sparse_elems[fname], pending.sparse_elems[fname])
                va.flush(meta.sparse_elems[fname], pending.sparse_elems[fname])
        size = 1 << PAGE_BITS
        n_dir = (pending.n_slots + size - 1) >> PAGE_BITS
        directory = np.full(n_dir, -1, dtype=np.int64)
        if meta.dir_gen is not None and self._committed(name) is not None:
            old = self._snapshot(name).directory
            directory[: old.shape[0]] = old
        dirty = np.array(sorted(pending.dirty), dtype=np.int64)
        # Only the newest page table is read (versions read the history runs), so the
        # pages a commit replaces are garbage: once they outnumber the live ones, the
        # commit writes the whole table afresh into a new arena (amortised O(changes)).
        if meta.n_pages + dirty.shape[0] > 2 * n_dir + 64:
            meta.pages_base, meta.n_pages = gen, 0
            dirty = np.arange(n_dir, dtype=np.int64)
        pages = np.full((dirty.shape[0], size), -1, dtype=np.int64)
        if dirty.shape[0] == n_dir:
            pages.reshape(-1)[: pending.n_slots] = pending.latest[: pending.n_slots]
        else:
            for k, p in enumerate(dirty.tolist()):
                part = pending.latest[p * size : min((p + 1) * size, pending.n_slots)]
                pages[k, : part.shape[0]] = part
        arena = files.pages(meta.pages_base)
        with self._charge(pages.nbytes + directory.nbytes, f"the page table of {name}"):
            arena.write(meta.n_pages, pages, durable=durable)
            if durable:
                arena.flush(meta.n_pages, meta.n_pages + dirty.shape[0])
            directory[dirty] = meta.n_pages + np.arange(dirty.shape[0])
            write_array_file(
                files.path(f"dir-{gen_name(gen)}.mmfs"), directory, "VTAB", durable=durable
            )
        meta.n_pages += dirty.shape[0]
        meta.dir_gen = gen
        if pending.keys_changed:
            _save_key_index(files, "kidx", gen, pending.index, durable)
            meta.keys_gen = gen
        for fname in pending.categories_changed:
            _save_key_index(files, f"cat-{fname}", gen, pending.categories[fname], durable)
            meta.categories[fname] = gen
        for fname, q in pending.quant.items():
            write_array_file(
                files.path(f"quant-{fname}-{gen_name(gen)}.mmfs"), q, "META", durable=durable
            )
            meta.quant[fname] = gen
        if pending.hist:
            meta.history = self._commit_history(files, meta.history, pending, gen)
        meta.n_rows = pending.n_rows
        meta.n_slots = pending.n_slots
        meta.n_deleted = pending.n_deleted
        meta.sparse_elems = dict(pending.sparse_elems)
        meta.written_ns = now_ns()

    def _commit_history(
        self,
        files: GroupFiles,
        runs: list[tuple[int, int, int]],
        pending: _Pending,
        gen: int,
    ) -> list[tuple[int, int, int]]:
        """Add the rows written since the commit as a new event-time history run, sorted
        by (slot, event time, row), then merge runs while the newest holds at least half
        as many entries as the one before (a binary counter: O(log rows) runs, each row
        rewritten O(log rows) times).  The merged ones are new files of this generation,
        each with its row-minimum levels; every version reads the newest runs (below its
        own row count), so the merged-away ones go once no reader can be loading them
        (_remove_superseded)."""
        parts = pending.hist
        new = np.stack([np.concatenate([p[k] for p in parts]) for k in range(3)])
        stack: list[tuple[tuple[int, int, int] | None, np.ndarray]] = [
            (run, open_array(files.path(hist_name(run[0], run[1])), "VTAB")) for run in runs
        ]
        stack.append((None, new))
        while len(stack) >= 2 and stack[-2][1].shape[1] <= 2 * stack[-1][1].shape[1]:
            (_, a), (_, b) = stack.pop(), stack.pop()
            stack.append((None, np.concatenate([b, a], axis=1)))
        out: list[tuple[int, int, int]] = []
        j = 0
        for run, arr in stack:
            if run is None:  # made by this commit: sort and publish it
                order = np.lexsort((arr[2], arr[1], arr[0]))
                arr = np.ascontiguousarray(arr[:, order])
                with self._charge(arr.nbytes, "an event-time history run"):
                    write_array_file(
                        files.path(hist_name(gen, j)), arr, "VTAB", durable=self._durable
                    )
                    write_array_file(
                        files.path(hmin_name(gen, j)),
                        _store.min_levels(arr[2]),
                        "VTAB",
                        durable=self._durable,
                    )
                run = (gen, j, arr.shape[1])
                j += 1
            out.append(run)
        return out

    def rollback(self) -> None:
        """Forget everything written, created or dropped since the last commit."""
        self._check_writable()
        self._pendings.clear()
        self._dropped.clear()
        self._work = copy.deepcopy(self._groups)
        self._exp_work = self._experiments
        self._next_id = max([m.id + 1 for m in self._groups.values()] + [self._next_id])
        self._drop_snaps()

    # -- checking --------------------------------------------------------------------------

    def training_set(
        self,
        entity_df: Any,
        features: Sequence[str],
        *,
        version: int | str | None = None,
        ttl: Any = None,
        time_column: str = "event_time",
        key_columns: Mapping[str, str] | None = None,
        n_threads: int | None = None,
        transform: Any = None,
    ) -> TrainingSet:
        """A point-in-time training set: one row per row of ``entity_df``, in order, its
        columns kept, and for each of ``features`` (``"group.feature"``, or
        ``"group.*"`` for all of a group's) the value of the key's row with the greatest
        event time <= the row's ``time_column`` (and >= it minus ``ttl``, when given);
        missing otherwise.  Ties in event time: the later write.  ``version`` pins what
        the store knew (byte-identical after any later writes).  Key columns default to
        each group's key name.  The whole result is charged to the memory budget; see
        :meth:`training_batches` for results larger than it.  Specification and
        examples: docs/training_sets.md.

        ``transform``: stored transforms (``"scale@2"``, or ``"scale"`` for the version
        pinned at the version read) applied as ``group.get(..., transform=)`` applies
        them, by the same code: their outputs follow the features, named
        ``"group.feature:scale"`` (``"group.scale"`` for one that mixes its inputs);
        ``features`` may then be empty."""
        self._check_open()
        return training.build(
            self, entity_df, features, version=version, ttl=ttl, time_column=time_column,
            key_columns=key_columns, n_threads=n_threads, transform=transform,
        )  # fmt: skip

    def training_batches(
        self,
        entity_df: Any,
        features: Sequence[str],
        *,
        chunk_rows: int = 1 << 20,
        version: int | str | None = None,
        ttl: Any = None,
        time_column: str = "event_time",
        key_columns: Mapping[str, str] | None = None,
        n_threads: int | None = None,
        transform: Any = None,
    ) -> Iterator[TrainingSet]:
        """:meth:`training_set` streamed: one TrainingSet per ``chunk_rows`` consecutive
        entity rows, in order, so that only one chunk's output is in memory at a time.
        ``entity_df`` may also be an iterable of frames (each is cut into chunks).  With
        ``version=None`` each chunk reads the newest version at the time it is built; pin
        a version for one consistent answer."""
        self._check_open()
        return training.chunks(
            self, entity_df, features, chunk_rows=chunk_rows, version=version, ttl=ttl,
            time_column=time_column, key_columns=key_columns, n_threads=n_threads,
            transform=transform,
        )  # fmt: skip

    def verify(self) -> dict[str, int]:
        """Check every committed file in full (payload checksums, key index invariants,
        every key's row); returns {group: keys checked}.  Raises CorruptStoreError."""
        self._check_open()
        out = {}
        for name in list(self._groups):
            snap = self._snapshot(name)
            meta = snap.meta
            files = snap.files
            named = [f"dir-{gen_name(meta.dir_gen)}.mmfs"] if meta.dir_gen is not None else []
            if meta.keys_gen is not None:
                named += [f"kidx-{gen_name(meta.keys_gen)}-{a}.mmfs" for a in snap.index.arrays()]
                full = KeyIndex.from_arrays(snap.index.arrays(), meta.key_type, validate=True)  # type: ignore[arg-type]
                if len(full) != meta.n_slots:
                    raise CorruptStoreError(
                        f"group {name!r}: the key index holds {len(full)} keys, the manifest "
                        f"says {meta.n_slots}"
                    )
            for fname, cgen in meta.categories.items():
                if cgen is not None:
                    named += [
                        f"cat-{fname}-{gen_name(cgen)}-{a}.mmfs"
                        for a in ("hashes", "slots", "key_bytes", "key_offsets")
                    ]
            for fname, qgen in meta.quant.items():
                if qgen is not None:
                    named.append(f"quant-{fname}-{gen_name(qgen)}.mmfs")
            named += [f(g, j) for g, j, _ in meta.history for f in (hist_name, hmin_name)]
            for f in named:  # payload checksums: every byte of every checksummed file
                open_array(files.path(f), None, verify=True)
            self._verify_history(name, snap)
            rows = np.arange(meta.n_slots, dtype=np.int64)
            if snap.table.rows_of_slots(rows):
                raise CorruptStoreError(f"group {name!r}: a key has no valid row")
            _deleted_keys(snap, rows)  # as many as the manifest says, each by a tombstone
            for f, idx in meta.indexes.items():
                if idx.table_rows:
                    open_array(table_path(files.directory, f, idx), None, verify=True)
                    table = read_table(files.directory, f, idx)
                    built = build_table(
                        files.lsh_files(f, idx), idx.table_rows, idx.table_bits, idx.tables
                    )
                    if not np.array_equal(table, built):
                        raise CorruptStoreError(
                            f"group {name!r}: the bucket table of {f!r} disagrees with the codes"
                        )
            for fname in meta.categories:
                snap.category_table(fname)
            out[name] = meta.n_slots
        return out

    def _verify_history(self, name: str, snap: _Snapshot) -> None:
        """Every history run sorted, with its row minima; every row in exactly one run,
        under the slot and event time its record holds."""
        seen = []
        for run in snap.runs:
            order = np.lexsort((run[2], run[1], run[0]))
            if not np.array_equal(order, np.arange(run.shape[1])):
                raise CorruptStoreError(f"group {name!r}: a history run is out of order")
            rows = run[2]
            if rows.shape[0] and (rows.min() < 0 or rows.max() >= snap.meta.n_rows):
                raise CorruptStoreError(f"group {name!r}: a history run names a missing row")
            if not np.array_equal(snap.row_slots(rows), run[0]) or not np.array_equal(
                snap.event_times(rows), run[1]
            ):
                raise CorruptStoreError(f"group {name!r}: a history run disagrees with a record")
            seen.append(rows)
        all_rows = np.sort(np.concatenate(seen)) if seen else np.zeros(0, np.int64)
        if not np.array_equal(all_rows, np.arange(snap.meta.n_rows)):
            raise CorruptStoreError(f"group {name!r}: the history runs do not hold every row once")
        for run, mins in zip(snap.runs, snap.run_mins, strict=True):
            if not np.array_equal(mins, _store.min_levels(run[2])):
                raise CorruptStoreError(f"group {name!r}: a history run's row minima are wrong")

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Release the writer lock and every file (idempotent).  Uncommitted writes are
        dropped.  Batches already returned stay valid: they own their memory."""
        if self._closed:
            return
        self._closed = True
        if self._budget is not None:
            with contextlib.suppress(Exception):
                self._budget.unregister_cache(f"mmfs store {self.path} {id(self)}")
        for files in self._files_by_id.values():
            files.close()
        self._files_by_id.clear()
        self._drop_snaps()
        self._drop_pinned()
        self._pendings.clear()
        catalog = self.__dict__.get("experiments")  # its exposure log, when one was opened
        if catalog is not None:
            catalog.close()
        if self._head_fd is not None:
            os.close(self._head_fd)
            self._head_fd = None
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"generation {self._gen}"
        return f"<mmfs.Store {self.path!r} mode={self.mode!r} {state}>"

    def __reduce__(self) -> tuple[Any, ...]:
        """A store pickles as its path and reopens read-only in the other process."""
        return (_reopen_store, (self.path,))

    def __iter__(self) -> Iterator[str]:
        return iter(self.groups())


def _type_of(values: np.ndarray) -> Any:
    """The feature type that holds a derived array."""
    from mmfs.schema import dense, scalar

    kind = values.dtype.kind
    if values.ndim == 2:
        return dense(values.shape[1])
    if kind == "b":
        return scalar("bool")
    if kind in "iu":
        return scalar("int64")
    if values.dtype == np.float32:
        return scalar("float32")
    if kind == "f":
        return scalar("float64")
    raise ParameterError(f"a derived feature must be numeric, got dtype {values.dtype}")


_COPY_CHUNK: Final = 1 << 16


def _copy_rows(
    snap: _Snapshot, target: FeatureGroup, features: dict[str, Any], added: list[str]
) -> None:
    """Write every row of ``snap`` again, in order, into ``target`` (its features:
    ``features``; the ``added`` ones get missing values); tombstones are deletes again."""
    kept = [f for f in features if f not in added]
    keys = snap.index.keys()
    for lo in range(0, snap.meta.n_rows, _COPY_CHUNK):
        chunk = np.arange(lo, min(lo + _COPY_CHUNK, snap.meta.n_rows), dtype=np.int64)
        tomb = snap.tombstones(chunk)
        cuts = [0, *(np.flatnonzero(tomb[1:] != tomb[:-1]) + 1).tolist(), chunk.shape[0]]
        for a, b in itertools.pairwise(cuts):  # runs of rows, and of tombstones, in order
            rows = chunk[a:b]
            slots = snap.row_slots(rows)
            ks: Any = [keys[i] for i in slots.tolist()] if isinstance(keys, list) else keys[slots]
            times = snap.event_times(rows).view("datetime64[ns]")
            if tomb[a]:
                target.delete(ks, event_time=times)
                continue
            batch = target._gather(snap, ks, rows, kept, None)
            values = {f: batch[f] for f in kept}
            for f in added:
                values[f] = _missing_values(features[f], rows.shape[0])
            target.write(ks, values, event_time=times)


def _missing_values(ftype: Any, n: int) -> Any:
    """What a row written before feature ``ftype`` existed reads as."""
    import scipy.sparse as sp

    from mmfs.schema import Category, Dense, Scalar, Sparse

    if isinstance(ftype, Scalar):
        fill = {"float32": np.nan, "float64": np.nan, "int64": 0, "bool": False}[ftype.dtype]
        return np.full(n, fill, dtype=ftype.dtype)
    if isinstance(ftype, Category):
        return [None] * n
    if isinstance(ftype, Sparse):
        return sp.csr_matrix((n, ftype.dim), dtype=np.float32)
    assert isinstance(ftype, Dense)
    if ftype.dtype.startswith("float"):
        return np.full((n, ftype.dim), np.nan, dtype=np.float32)
    return np.zeros((n, ftype.dim), dtype=bool if ftype.dtype == "bool" else np.float32)


def _tree_bytes(directory: str) -> int:
    """Bytes allocated on disk to the files under directory (sparse files count what
    they hold)."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, f)).st_blocks * 512
    return total


def _reopen_store(path: str) -> Store:
    return Store(path, mode="r")
