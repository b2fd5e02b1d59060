"""Damaged stores: every file of a committed store, every kind of damage.

A small committed store (an int64-key and a str-key group, every feature type, three
commits, 4 KiB segments so that every arena has several segment files) is damaged one
file at a time: truncated, bits flipped in the header and the payload, headers swapped
between files, replaced by foreign files, deleted.  Each damaged copy is opened read-only
and as the writer, every key of every group is read (every feature of the batch touched,
the one-key path too) and ``store.verify()`` runs.  Allowed: the original values (the
damage is invisible, e.g. in a file of an older generation), or an mmfs error.  Never
another exception type, a hang or a crash.  Damage that the format can detect (a live
file's header, size or checksum, a record whose slot field lies, a page entry out of
range, a sparse index out of range) must raise; damage to values in a file without a
payload checksum (the arenas) may read back as wrong values.

Each case says, per mode, what is allowed besides mmfs errors (FormatError, its subclass
CorruptStoreError, NotFoundError; never StoreClosedError and friends, never an error that
a runaway recursion turned into ours):

  same          the original values (nothing reads the file, or the writer repairs it)
  same_or_prev  the original values or those of the previous commit (newest manifest gone)
  error         at least one error, and whatever was read is original
  detected      at least one error from get() or at least from verify(); values may differ
  any           values may differ (bits of a value in a file without payload checksum)

Cases run in subprocesses (this file is also the worker script, one per core, restarted
after a crash), so that a segfault or a hang is a failed case, not a dead test session.
Files of older generations, which no reader opens, get a few kinds of damage only.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import inspect
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import mmfs
from mmfs.schema import layout
from mmfs.storage import fileformat as ff
from mmfs.storage.arena import seg_bits_for

SEGMENT_BYTES = 4096
HEADER = ff.HEADER_SIZE
PAGE = 64  # slots per page-table page (mmfs.group.PAGE_BITS = 6)
SPARSE_DIM = 50
T0 = np.datetime64("2024-01-01T00:00:00", "ns")
SCHEMA: dict[str, Any] = {
    "f": mmfs.scalar("float32"),
    "i": mmfs.scalar("int64"),
    "b": mmfs.scalar("bool"),
    "c": mmfs.category(),
    "d": mmfs.dense(2),
    "q": mmfs.dense(4, "int8"),
    "m": mmfs.dense(5, "bool"),
    "s": mmfs.sparse(SPARSE_DIM),
}
FEATURES = list(SCHEMA)
GROUPS = {"ints": ("uid", "int64"), "strs": ("name", "str")}
ABSENT: dict[str, list[Any]] = {"ints": [-5, 2**62], "strs": ["absent", ""]}
KINDS = [
    "HEAD", "manifest", "lock", "rows", "pages", "dir", "kidx", "cat", "quant",
    "sp-idx", "sp-val", "hist", "hmin",
]  # fmt: skip
#: The damage done to a file of an older generation (no reader opens it any more).
DEAD_FILE_DAMAGE = ("foreign-random", "delete", "header-shape", "swap")
CASE_TIMEOUT = 30  # seconds: a case that takes longer is a hang
STATE_ERRORS = (mmfs.StoreClosedError, mmfs.ReadOnlyError, mmfs.LockedError)

# --------------------------------------------------------------------------- the store


def _values(rng: np.random.Generator, n: int, cats: list[str]) -> dict[str, Any]:
    dense_s = np.where(
        rng.random((n, SPARSE_DIM)) < 0.12, rng.standard_normal((n, SPARSE_DIM)), 0.0
    )
    return {
        "f": rng.standard_normal(n).astype(np.float32),
        "i": rng.integers(-(10**12), 10**12, n),
        "b": rng.random(n) < 0.5,
        "c": [None if rng.random() < 0.2 else cats[int(rng.integers(len(cats)))] for _ in range(n)],
        "d": rng.standard_normal((n, 2)).astype(np.float32),
        "q": rng.uniform(-2.0, 2.0, (n, 4)),
        "m": rng.random((n, 5)) < 0.5,
        "s": sp.csr_matrix(dense_s.astype(np.float32)),
    }


def build_store(path: Path, prev: Path) -> None:
    """Three commits (generations 1 to 3); ``prev`` gets a copy as of generation 2.

    The int64 group ends with 9 page-table pages (2 page segments), 228 rows (4 row
    segments) and about 1400 sparse elements (2 segments per sparse arena); its key
    index and category dictionary change at every commit or at the last one, so files
    of older generations (not read any more) are there too.
    """
    rng = np.random.default_rng(20240101)
    int_keys = (rng.choice(10**12, 200, replace=False) - 5 * 10**11).astype(np.int64)
    str_keys = [f"key-{i}-\u00e9{'x' * (i % 7)}" for i in range(50)]
    cats = ["red", "green", "blue", "cyan"]
    more = [*cats, "magenta", "yellow"]

    def times(n: int, start: int) -> np.ndarray:
        return T0 + (start + np.arange(n)) * np.timedelta64(1, "s")

    with mmfs.open(path, durability="none", segment_bytes=SEGMENT_BYTES) as st:
        gi = st.create_group("ints", key="uid", key_type="int64", schema=SCHEMA)
        gs = st.create_group("strs", key="name", key_type="str", schema=SCHEMA)
        gi.write(int_keys[:100], _values(rng, 100, cats), event_time=times(100, 0))
        gs.write(str_keys[:30], _values(rng, 30, cats), event_time=times(30, 0))
        st.commit("one")
        k2 = np.concatenate([int_keys[100:160], int_keys[:5], int_keys[100:103]])
        gi.write(k2, _values(rng, k2.shape[0], cats), event_time=times(k2.shape[0], 1000))
        s2 = str_keys[30:50] + str_keys[:5]
        gs.write(s2, _values(rng, len(s2), cats), event_time=times(len(s2), 1000))
        st.commit("two")
        shutil.copytree(path, prev)
        k3 = np.concatenate([int_keys[0:200:10], int_keys[160:200]])
        t3 = times(k3.shape[0], 5000)
        t3[:20:2] = T0 - np.timedelta64(1, "D")  # older than what they have: kept out
        gi.write(k3, _values(rng, k3.shape[0], more), event_time=t3)
        s3 = str_keys[::5]
        gs.write(s3, _values(rng, len(s3), cats), event_time=times(len(s3), 5000))
        st.commit("three")
    for p in path.rglob("*"):  # cases hard-link these files: make in-place writes fail
        if p.is_file():
            p.chmod(0o444)


# --------------------------------------------------------------------------- observing


def _same(a: Any, b: Any) -> bool:
    if sp.issparse(a) or sp.issparse(b):
        if not (sp.issparse(a) and sp.issparse(b)) or a.shape != b.shape:
            return False
        x, y = sp.csr_matrix(a), sp.csr_matrix(b)
        return (
            np.array_equal(x.indptr, y.indptr)
            and np.array_equal(x.indices, y.indices)
            and np.array_equal(x.data, y.data)
        )
    if isinstance(a, dict) or isinstance(b, dict):
        return a == b
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    if x.dtype == object:
        return x.tolist() == y.tolist()
    if x.dtype.kind in "fc":
        return bool(np.array_equal(x, y, equal_nan=True))
    if x.dtype.kind in "mM":  # NaT == NaT here
        return bool(np.array_equal(x.view(np.int64), y.view(np.int64)))
    return bool(np.array_equal(x, y))


def _runaway(exc: BaseException) -> str:
    """'file:function xN' when a RecursionError is in exc's chain and exc's traceback
    repeats one function: an unbounded loop, not a deeply nested document."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 20:
        chain.append(e)
        e = e.__cause__ or e.__context__
    if not any(isinstance(c, RecursionError) for c in chain):
        return ""
    for c in chain:
        frames = [
            f"{Path(f.filename).name}:{f.name}" for f in traceback.extract_tb(c.__traceback__)
        ]
        if frames:
            top = max(set(frames), key=frames.count)
            if frames.count(top) > 20:
                return f"{top} x{frames.count(top)}"
    return ""


def _describe(exc: BaseException, step: str) -> dict[str, Any]:
    tb = traceback.extract_tb(exc.__traceback__)
    where = [f"{Path(fr.filename).name}:{fr.lineno} {fr.name}" for fr in tb[-3:]]
    return {
        "step": step,
        "type": type(exc).__name__,
        "ours": isinstance(exc, mmfs.MmfsError),
        "state": isinstance(exc, STATE_ERRORS),
        "recursion": _runaway(exc),
        "msg": str(exc)[:300],
        "where": where,
    }


def observe(path: str, mode: str, query: dict[str, list[Any]]) -> tuple[dict[str, Any], list]:
    """Open, read everything, verify: ({label: value read}, [errors met])."""
    obs: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []

    def attempt(step: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            errors.append(_describe(exc, step))
            return None

    st = attempt("open", lambda: mmfs.open(path, mode=mode, durability="none"))  # type: ignore[arg-type]
    if st is None:
        return obs, errors
    try:
        for gname in GROUPS:
            g = attempt(f"{gname}:group", lambda gname=gname: st[gname])
            if g is None:
                continue
            keys = query[gname]
            b = attempt(f"{gname}:get", lambda g=g, keys=keys: g.get(keys))
            if b is not None:
                for f in FEATURES:
                    v = attempt(f"{gname}:get[{f}]", lambda b=b, f=f: b[f])
                    if v is not None:
                        obs[f"{gname}:get[{f}]"] = v
                for what in ("mask", "event_time", "to_numpy"):
                    v = attempt(
                        f"{gname}:get.{what}",
                        lambda b=b, what=what: (
                            b.to_numpy() if what == "to_numpy" else getattr(b, what)
                        ),
                    )
                    if v is not None:
                        obs[f"{gname}:get.{what}"] = v
            for j in (len(keys) - len(ABSENT[gname]) - 1, len(keys) - 1):
                key = keys[j]
                b1 = attempt(f"{gname}:get1", lambda g=g, key=key: g.get(key))
                if b1 is None:
                    continue
                for f in [*FEATURES, "mask", "event_time"]:
                    v = attempt(
                        f"{gname}:get1[{f}]",
                        lambda b1=b1, f=f: getattr(b1, f) if f in ("mask", "event_time") else b1[f],
                    )
                    if v is not None:
                        obs[f"{gname}:get1({j})[{f}]"] = v
            n = attempt(f"{gname}:len", lambda g=g: len(g))
            if n is not None:
                obs[f"{gname}:len"] = np.int64(n)
            k = attempt(f"{gname}:keys", lambda g=g: g.keys())
            if k is not None:
                obs[f"{gname}:keys"] = np.asarray(k, dtype=object)
        v = attempt("verify", st.verify)
        if v is not None:
            obs["verify"] = v
    finally:
        attempt("close", st.close)
    return obs, errors


def _diff(obs: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    return [k for k, v in obs.items() if k not in expected or not _same(v, expected[k])][:8]


# --------------------------------------------------------------------------- worker


def _rewrite(path: str, data: bytes) -> None:
    """Give ``path`` new contents in a new inode (case files are hard links)."""
    os.unlink(path)
    Path(path).write_bytes(data)


def _apply(root: str, ops: list[dict[str, Any]]) -> None:
    for op in ops:
        path = os.path.join(root, op["path"])
        kind = op["op"]
        if kind == "delete":
            os.unlink(path)
        elif kind == "truncate":
            _rewrite(path, Path(path).read_bytes()[: op["size"]])
        elif kind == "replace":
            _rewrite(path, bytes.fromhex(op["data"]))
        elif kind in ("xor", "put"):
            raw = bytearray(Path(path).read_bytes())
            data = bytes.fromhex(op["data"])
            at = op["offset"]
            for i, x in enumerate(data):
                raw[at + i] = raw[at + i] ^ x if kind == "xor" else x
            _rewrite(path, bytes(raw))
        elif kind == "swap_headers":
            other = os.path.join(root, op["other"])
            a, b = Path(path).read_bytes(), Path(other).read_bytes()
            _rewrite(path, b[:HEADER] + a[HEADER:])
            _rewrite(other, a[:HEADER] + b[HEADER:])
        else:  # pragma: no cover
            raise AssertionError(kind)


def clone(src: str | Path, dst: str | Path) -> None:
    """A copy of a store made of hard links (fast), except the files a writer changes
    in place (HEAD, the lock file), which are copied."""
    for dirpath, _dirs, files in os.walk(src):
        target = os.path.join(dst, os.path.relpath(dirpath, src))
        os.makedirs(target, exist_ok=True)
        for f in files:
            if f in ("HEAD.mmfs", ".writer.lock"):
                shutil.copyfile(os.path.join(dirpath, f), os.path.join(target, f))
            else:
                os.link(os.path.join(dirpath, f), os.path.join(target, f))


def _fingerprint(root: str) -> dict[str, str]:
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def _worker_main(spec_path: str) -> None:
    warnings.simplefilter("error")  # as under pytest: a warning is a failure
    faulthandler.enable()
    sys.setrecursionlimit(300)  # a runaway recursion fails fast (mmfs needs far less)
    spec = json.loads(Path(spec_path).read_text())
    query = spec["query"]
    expected = {}
    for name in ("pristine", "prev"):
        obs, errors = observe(spec[name], "r", query)
        if errors:
            raise AssertionError(f"the undamaged store {name} does not read: {errors}")
        expected[name] = obs
    case_dir = os.path.join(spec["work"], "case")
    before = _fingerprint(spec["pristine"])
    for case in spec["cases"]:
        print(json.dumps({"start": case["id"]}), flush=True)
        faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)
        shutil.rmtree(case_dir, ignore_errors=True)
        clone(spec["pristine"], case_dir)
        _apply(case_dir, case["ops"])
        out: dict[str, Any] = {"id": case["id"], "modes": {}}
        for mode in ("r", "a"):
            t = time.perf_counter()
            obs, errors = observe(case_dir, mode, query)
            out["modes"][mode] = {
                "errors": errors,
                "diff_orig": _diff(obs, expected["pristine"]),
                "diff_prev": _diff(obs, expected["prev"]),
                "seconds": round(time.perf_counter() - t, 4),
            }
        print(json.dumps(out), flush=True)
    faulthandler.cancel_dump_traceback_later()
    shutil.rmtree(case_dir, ignore_errors=True)
    if _fingerprint(spec["pristine"]) != before:
        raise AssertionError("a case changed the undamaged store")


# --------------------------------------------------------------------------- planning


def _kind_of(rel: str) -> str:
    name = os.path.basename(rel)
    if name == "HEAD.mmfs":
        return "HEAD"
    if name == ".writer.lock":
        return "lock"
    if name.startswith("manifest-"):
        return "manifest"
    for prefix in ("rows", "pages", "dir", "kidx", "cat", "quant", "hist", "hmin"):
        if name.startswith(prefix + "-"):
            return prefix
    if name.startswith("sp-"):
        return "sp-idx" if "-idx-" in name else "sp-val"
    raise AssertionError(f"unexpected file {rel}")


class StoreMap:
    """Where the live data of the undamaged store is (read with numpy, not mmfs)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        gens = [int(f[9:21]) for f in self.files if f.startswith("manifest-")]
        self.gen = max(gens)
        self.manifest = ff.read_json_file(root / f"manifest-{self.gen:012d}.mmfs", "MNFT")
        lay = layout(SCHEMA)
        self.record_bytes = lay.record_bytes
        self.offsets = lay.offsets
        self.rbits = seg_bits_for(lay.record_bytes, SEGMENT_BYTES)
        self.pbits = seg_bits_for(8 * PAGE, SEGMENT_BYTES)
        self.sbits = seg_bits_for(4, SEGMENT_BYTES, minimum=SPARSE_DIM)
        self.live: set[str] = {f"manifest-{self.gen:012d}.mmfs"}
        self.groups: dict[str, dict[str, Any]] = {}
        for name, doc in self.manifest["groups"].items():
            gdir = f"groups/g{doc['id']}"
            live = {f"{gdir}/dir-{doc['dir_gen']:012d}.mmfs"}
            prefixes = [f"{gdir}/kidx-{doc['keys_gen']:012d}-"]
            prefixes += [f"{gdir}/cat-{f}-{g:012d}-" for f, g in doc["categories"].items()]
            live |= {f"{gdir}/quant-{f}-{g:012d}.mmfs" for f, g in doc["quant"].items()}
            live |= {
                f"{gdir}/{kind}-{g:012d}-{j}.mmfs"
                for g, j, _m in doc["history"]
                for kind in ("hist", "hmin")
            }
            for f in self.files:
                if f.startswith(f"{gdir}/") and (
                    any(f.startswith(p) for p in prefixes)
                    or _kind_of(f) in ("rows", "pages", "sp-idx", "sp-val")
                ):
                    live.add(f)
            self.live |= live
            directory = self._array(f"{gdir}/dir-{doc['dir_gen']:012d}.mmfs", np.int64)
            slot_rows = {}
            for slot in range(doc["n_slots"]):
                pid = int(directory[slot // PAGE])
                rel, at = self.page_entry(gdir, pid, slot % PAGE)
                slot_rows[slot] = (int(self._array(rel, np.int64)[at]), rel, at)
            self.groups[name] = {"dir": gdir, "doc": doc, "slot_rows": slot_rows}

    def _array(self, rel: str, dtype: Any) -> np.ndarray:
        return np.fromfile(self.root / rel, dtype=dtype, offset=HEADER)

    def page_entry(self, gdir: str, pid: int, i: int) -> tuple[str, int]:
        """(pages segment, element index) of entry i of page pid."""
        mask = (1 << self.pbits) - 1
        return f"{gdir}/pages-{pid >> self.pbits:06d}.mmfs", (pid & mask) * PAGE + i

    def row_place(self, gdir: str, row: int) -> tuple[str, int]:
        """(rows segment, byte offset of the record in the file)."""
        at = HEADER + (row & ((1 << self.rbits) - 1)) * self.record_bytes
        return f"{gdir}/rows-{row >> self.rbits:06d}.mmfs", at

    def record(self, gdir: str, row: int) -> bytes:
        rel, at = self.row_place(gdir, row)
        return (self.root / rel).read_bytes()[at : at + self.record_bytes]


def _hex(b: bytes) -> str:
    return b.hex()


def _i64(v: int) -> str:
    return int(v).to_bytes(8, "little", signed=True).hex()


def _combine(*exps: dict[str, str]) -> dict[str, str]:
    rank = {"same": 0, "same_or_prev": 1, "any": 2, "detected": 3, "error": 4}
    return {m: max((e[m] for e in exps), key=rank.__getitem__) for m in ("r", "a")}


def _visible(smap: StoreMap, rel: str) -> dict[str, str]:
    """Expectation when damage to the file is detectable wherever the file is read."""
    kind = _kind_of(rel)
    if kind in ("HEAD", "lock"):  # a writer repairs HEAD; a reader may do without it
        return {"r": "same", "a": "same"}
    if rel in smap.live:
        return {"r": "error", "a": "error"}
    return {"r": "same", "a": "same"}


def plan_cases(smap: StoreMap) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    cases: list[dict[str, Any]] = []

    def add(rel: str, damage: str, ops: list[dict[str, Any]], expect: dict[str, str]) -> None:
        dead = _kind_of(rel) not in ("HEAD", "lock") and rel not in smap.live
        if dead and not damage.startswith(DEAD_FILE_DAMAGE):
            return  # nothing opens the file: a few kinds of damage show that
        cases.append(
            {"id": f"{rel}|{damage}", "file": rel, "kind": _kind_of(rel), "ops": ops,
             "expect": expect}
        )  # fmt: skip

    npy = io.BytesIO()
    np.save(npy, np.arange(40, dtype=np.int64))
    foreign = {
        "npy": npy.getvalue(),
        "pickle": pickle.dumps({"generation": 3, "groups": [1, 2]}, protocol=4),
        "random": rng.bytes(300),
    }
    headers = {f: (smap.root / f).read_bytes()[:HEADER] for f in smap.files}

    def signature(f: str) -> bytes:
        h = headers[f]
        return h[4:8] + h[12:14] + h[16:48] if len(h) == HEADER else b""

    for rel in smap.files:
        kind = _kind_of(rel)
        size = (smap.root / rel).stat().st_size
        vis = _visible(smap, rel)
        same = {"r": "same", "a": "same"}
        top_manifest = rel == f"manifest-{smap.gen:012d}.mmfs"
        for name, data in foreign.items():
            add(rel, f"foreign-{name}", [{"op": "replace", "path": rel, "data": _hex(data)}], vis)
        if top_manifest:  # the store is its newest manifest: deleting it is a rollback
            gone = {"r": "same_or_prev", "a": "same_or_prev"}
        elif kind == "HEAD":
            gone = vis
        else:
            gone = vis if rel in smap.live else same
        add(rel, "delete", [{"op": "delete", "path": rel}], gone)
        if kind == "lock":
            continue
        payload = size - HEADER
        for n in (0, 64, HEADER + payload // 2):
            if n < size:
                add(rel, f"truncate-{n}", [{"op": "truncate", "path": rel, "size": n}], vis)
        for field, at, bit in (
            ("magic", 0, 0),
            ("major", 8, 0),
            ("dtype", 12, 1),
            ("shape", 16, 0),
        ):
            ops = [{"op": "xor", "path": rel, "offset": at, "data": _hex(bytes([1 << bit]))}]
            add(rel, f"header-{field}", ops, vis)
        sig = signature(rel)
        others = [f for f in smap.files if signature(f) not in (b"", sig)]
        start = sum(map(ord, rel)) % len(others)
        partner = others[start]
        ops = [{"op": "swap_headers", "path": rel, "other": partner}]
        add(rel, f"swap-header-with:{partner}", ops, _combine(vis, _visible(smap, partner)))
        # Payload damage.
        if payload <= 0:
            continue
        if kind in ("manifest", "dir", "kidx", "cat", "quant"):  # payload checksum
            ops = [{"op": "xor", "path": rel, "offset": HEADER + payload // 2, "data": "10"}]
            add(rel, "payload-flip", ops, vis)
            continue
        if kind == "HEAD":  # the counter only announces commits: the manifest decides
            for elem in (0, 1):
                ops = [{"op": "xor", "path": rel, "offset": HEADER + 8 * elem, "data": "04"}]
                add(rel, f"payload-flip-{elem}", ops, same)
            continue
        # An arena segment: no payload checksum, values may read back wrong.
        at = HEADER + rng.integers(0, payload, 4)
        ops = [
            {"op": "xor", "path": rel, "offset": int(o), "data": _hex(bytes([1 << int(b)]))}
            for o, b in zip(at.tolist(), rng.integers(0, 8, 4).tolist(), strict=True)
        ]
        add(rel, "payload-random-bits", ops, {"r": "any", "a": "any"})
    cases += _targeted(smap)
    return cases


def _targeted(smap: StoreMap) -> list[dict[str, Any]]:
    """Arena damage the format can detect: it must raise (or stay invisible)."""
    cases: list[dict[str, Any]] = []
    error = {"r": "error", "a": "error"}
    detected = {"r": "detected", "a": "detected"}  # by get() or at least by verify()
    same = {"r": "same", "a": "same"}

    def add(rel: str, damage: str, ops: list[dict[str, Any]], expect: dict[str, str]) -> None:
        cases.append(
            {"id": f"{rel}|{damage}", "file": rel, "kind": _kind_of(rel), "ops": ops,
             "expect": expect}
        )  # fmt: skip

    for g in smap.groups.values():
        gdir, doc, slot_rows = g["dir"], g["doc"], g["slot_rows"]
        live_rows = {row: slot for slot, (row, _, _) in slot_rows.items()}
        n_rows = doc["n_rows"]
        n_elems = doc["sparse_elems"]["s"]
        s_off = smap.offsets["s"]
        # Records: every segment, a live row's slot field; a dead row's slot field.
        done: set[str] = set()
        for row in sorted(live_rows):
            rel, at = smap.row_place(gdir, row)
            if rel not in done:  # alternately a low and a high bit of the slot
                bit = 40 if len(done) % 2 else 0
                done.add(rel)
                ops = [{"op": "xor", "path": rel, "offset": at, "data": _i64(1 << bit)}]
                add(rel, f"slot-field-live-row-{row}-bit-{bit}", ops, error)
        dead = [r for r in range(n_rows) if r not in live_rows]
        for row in (dead[0], dead[-1]):
            rel, at = smap.row_place(gdir, row)
            ops = [{"op": "xor", "path": rel, "offset": at, "data": _i64(1 << 3)}]
            add(rel, f"slot-field-dead-row-{row}", ops, same)
        # Sparse fields of live rows: start beyond the arena, count beyond dim, negative.
        nonempty = []
        for row in sorted(live_rows):
            rec = smap.record(gdir, row)
            start, count = np.frombuffer(rec[s_off : s_off + 16], dtype=np.int64).tolist()
            if count > 0:
                nonempty.append((row, start, count))
        row, start, count = nonempty[len(nonempty) // 2]
        rel, at = smap.row_place(gdir, row)
        for what, field, value in (
            ("start-beyond", 0, n_elems + 5),
            ("start-negative", 0, -3),
            ("count-beyond-dim", 8, SPARSE_DIM + 1),
            ("count-negative", 8, -1),
            ("count-huge", 8, 2**62),
        ):
            ops = [{"op": "put", "path": rel, "offset": at + s_off + field, "data": _i64(value)}]
            add(rel, f"sparse-{what}-row-{row}", ops, error)
        # A category code beyond the dictionary, or negative but not -1 (no value); the
        # unused bits of a bit-packed bool vector (invisible: dim 5 uses 5 of 8 bits).
        row = sorted(live_rows)[len(live_rows) // 3]
        rel, at = smap.row_place(gdir, row)
        c_at = at + smap.offsets["c"]
        for what, value in (("beyond", 1000), ("negative", -7)):
            data = int(value).to_bytes(4, "little", signed=True).hex()
            ops = [{"op": "put", "path": rel, "offset": c_at, "data": data}]
            add(rel, f"category-code-{what}-row-{row}", ops, detected)
        ops = [{"op": "xor", "path": rel, "offset": at + smap.offsets["m"], "data": "e0"}]
        add(rel, f"bool-padding-bits-row-{row}", ops, same)
        # A sparse index out of [0, dim) in a live row.
        mask = (1 << smap.sbits) - 1
        for what, value in (("dim", SPARSE_DIM), ("negative", -1)):
            srel = f"{gdir}/sp-s-idx-{start >> smap.sbits:06d}.mmfs"
            off = HEADER + 4 * ((start + count - 1) & mask)
            data = int(value).to_bytes(4, "little", signed=True).hex()
            ops = [{"op": "put", "path": srel, "offset": off, "data": data}]
            add(srel, f"sparse-index-{what}-row-{row}", ops, error)
        # Page entries of live slots: out of range, negative, another slot's row.
        slots = sorted(slot_rows)
        for slot in (slots[0], slots[-1]):
            row, prel, elem = slot_rows[slot]
            other = slot_rows[slots[(slots.index(slot) + 1) % len(slots)]][0]
            for what, value in (
                ("beyond-rows", n_rows + 5), ("int64-max", 2**63 - 1), ("negative", -7),
                ("other-slot-row", other),
            ):  # fmt: skip
                ops = [
                    {"op": "put", "path": prel, "offset": HEADER + 8 * elem, "data": _i64(value)}
                ]
                add(prel, f"page-entry-{what}-slot-{slot}", ops, error)
        # A sealed (valid checksum) directory that points outside the page arena.
        drel = f"{gdir}/dir-{doc['dir_gen']:012d}.mmfs"
        directory = smap._array(drel, np.int64).copy()
        for what, value in (("beyond-pages", doc["n_pages"] + 3), ("negative", -9)):
            crafted = directory.copy()
            crafted[len(crafted) // 2] = value
            ops = [{"op": "replace", "path": drel, "data": _sealed(crafted, "VTAB")}]
            add(drel, f"sealed-dir-{what}", ops, error if value >= 0 else detected)
    return cases


def _sealed(array: np.ndarray, kind: str) -> str:
    """A well-formed mmfs file holding ``array`` (what a writer bug could publish)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sealed.mmfs"
        ff.write_array_file(path, array, kind, durable=False)
        return path.read_bytes().hex()


# --------------------------------------------------------------------------- running


def _run_chunk(spec: dict[str, Any], path: Path, timeout: float = 600) -> list[dict[str, Any]]:
    """Run the cases of spec in worker processes, restarting after a crash or a hang."""
    results: list[dict[str, Any]] = []
    todo = list(spec["cases"])
    while todo:
        path.write_text(json.dumps({**spec, "cases": todo}))
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            out, err = proc.communicate(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            hung = True
        started = None
        finished = set()
        for line in out.splitlines():
            doc = json.loads(line)
            if "start" in doc:
                started = doc["start"]
            else:
                results.append(doc)
                finished.add(doc["id"])
        if proc.returncode == 0:
            break
        if started is None or started in finished:
            raise AssertionError(f"worker failed outside a case (rc {proc.returncode}): {err}")
        hung = hung or "Timeout (" in err  # the worker's watchdog (faulthandler)
        what = "hang" if hung else f"crash (exit status {proc.returncode})"
        results.append({"id": started, "crash": what, "stderr": err[-3000:]})
        ids = [c["id"] for c in todo]
        todo = todo[ids.index(started) + 1 :]
    return results


def _query(store: Path) -> dict[str, list[Any]]:
    """Every committed key of every group, and a few absent ones."""
    query: dict[str, list[Any]] = {}
    with mmfs.open(store, mode="r") as st:
        for name in GROUPS:
            keys = st[name].keys()
            listed = keys.tolist() if isinstance(keys, np.ndarray) else keys
            query[name] = [*listed, *ABSENT[name]]
    return query


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("corruption")
    store, prev = root / "store", root / "prev"
    build_store(store, prev)
    return {"root": root, "store": store, "prev": prev, "query": _query(store)}


@pytest.fixture(scope="module")
def damage_results(pristine: dict[str, Any]) -> dict[str, Any]:
    root, store = pristine["root"], pristine["store"]
    smap = StoreMap(store)
    cases = plan_cases(smap)
    workers = max(1, min(4, len(os.sched_getaffinity(0))))
    specs = []
    for i in range(workers):
        work = root / f"work{i}"
        work.mkdir()
        spec = {
            "pristine": str(store), "prev": str(pristine["prev"]), "work": str(work),
            "query": pristine["query"],
            "cases": [{"id": c["id"], "ops": c["ops"]} for c in cases[i::workers]],
        }  # fmt: skip
        specs.append((spec, work / "spec.json"))
    with ThreadPoolExecutor(workers) as pool:
        runs = list(pool.map(lambda s: _run_chunk(s[0], s[1]), specs))
    by_id = {r["id"]: r for run in runs for r in run}
    return {"cases": cases, "results": by_id, "files": smap.files, "smap": smap}


def _problems(case: dict[str, Any], result: dict[str, Any] | None) -> Iterator[str]:
    if result is None:
        yield "no result"
        return
    if "crash" in result:
        yield f"{result['crash']}: {result['stderr'][-1500:]}"
        return
    for mode, res in result["modes"].items():
        expect = case["expect"][mode]
        errors = res["errors"]
        for e in errors:
            if not e["ours"]:
                yield f"[{mode}] {e['type']} escaped at {e['step']}: {e['msg']} ({e['where']})"
            elif e["state"]:
                yield f"[{mode}] state error {e['type']} at {e['step']}: {e['msg']}"
            elif e["recursion"]:
                yield (
                    f"[{mode}] {e['type']} raised by a runaway recursion ({e['recursion']}) at "
                    f"{e['step']}: {e['msg']}"
                )
        if expect in ("error", "detected") and not errors:
            yield f"[{mode}] detectable damage read without an error"
        if expect in ("error", "same") and res["diff_orig"]:
            yield f"[{mode}] read wrong values: {res['diff_orig']}"
        if expect == "same_or_prev" and res["diff_orig"] and res["diff_prev"]:
            yield (
                f"[{mode}] read values of neither the last nor the previous generation: "
                f"{res['diff_orig']}"
            )


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_files(damage_results: dict[str, Any], kind: str) -> None:
    cases = [c for c in damage_results["cases"] if c["kind"] == kind]
    assert cases, f"no {kind} file in the store"
    failures = []
    for case in cases:
        probs = list(_problems(case, damage_results["results"].get(case["id"])))
        if probs:
            failures.append(f"{case['id']} (expect {case['expect']}):\n    " + "\n    ".join(probs))
    assert not failures, f"{len(failures)} of {len(cases)} {kind} cases failed:\n" + "\n".join(
        failures[:25]
    )


def test_every_file_and_kind_is_covered(damage_results: dict[str, Any]) -> None:
    files = damage_results["files"]
    assert {c["file"] for c in damage_results["cases"]} == set(files)
    assert {_kind_of(f) for f in files} == set(KINDS)
    smap = damage_results["smap"]
    gdir = smap.groups["ints"]["dir"]
    for prefix, least in (("rows", 3), ("pages", 2), ("sp-s-idx", 2), ("sp-s-val", 2)):
        n = sum(f.startswith(f"{gdir}/{prefix}-") for f in files)
        assert n >= least, (prefix, n)  # several segments of every arena
    assert any(f not in smap.live and _kind_of(f) in ("kidx", "dir", "cat") for f in files)
    # Every case ran, in both modes.
    results = damage_results["results"]
    assert all(c["id"] in results for c in damage_results["cases"])


# --------------------------------------------------------------------------- not a store


def test_reopen_as_writer_reads_committed_values(pristine: dict[str, Any], tmp_path: Path) -> None:
    """The baseline of every mode="a" case: an undamaged store reopens as the writer."""
    clone(pristine["store"], tmp_path / "s")
    want, errors = observe(str(tmp_path / "s"), "r", pristine["query"])
    assert not errors, errors[0]
    got, errors = observe(str(tmp_path / "s"), "a", pristine["query"])
    assert not errors, errors[0]
    assert not _diff(got, want)
    assert _fingerprint(str(tmp_path / "s")).keys() == _fingerprint(str(pristine["store"])).keys()


def _set_head(path: Path, counter: int) -> None:
    with open(path / "HEAD.mmfs", "r+b") as f:
        f.seek(HEADER)
        f.write(counter.to_bytes(8, "little"))


def test_reader_with_head_behind_the_newest_manifest(
    pristine: dict[str, Any], tmp_path: Path
) -> None:
    """HEAD only announces commits; the newest manifest is the store.  HEAD at 2 while
    manifest 3 exists is what a writer killed between the manifest rename and the HEAD
    update leaves behind: readers must still read generation 3, one key or many."""
    path = tmp_path / "s"
    clone(pristine["store"], path)
    _set_head(path, 2)
    want, errors = observe(str(pristine["store"]), "r", pristine["query"])
    assert not errors
    with _shallow_recursion():  # a reload loop fails in 0.1 s, not 10
        got, errors = observe(str(path), "r", pristine["query"])
    assert not errors, f"{errors[0]['type']} ({errors[0]['recursion']}): {errors[0]['msg']}"
    assert not _diff(got, want)


def test_reader_with_head_ahead_of_every_manifest(pristine: dict[str, Any], tmp_path: Path) -> None:
    """HEAD never runs ahead of the manifests: a counter of 7 with manifest 3 newest is
    damage.  A reader says so (instead of reloading on every read); a writer repairs it."""
    path = tmp_path / "s"
    clone(pristine["store"], path)
    _set_head(path, 7)
    with _shallow_recursion():
        _got, errors = observe(str(path), "r", pristine["query"])
    assert errors
    assert all(
        e["type"] == "CorruptStoreError" and "announces generation 7" in e["msg"] for e in errors
    )
    mmfs.open(path).close()  # the writer's recovery sets HEAD back to 3
    want, _ = observe(str(pristine["store"]), "r", pristine["query"])
    got, errors = observe(str(path), "r", pristine["query"])
    assert not errors
    assert not _diff(got, want)


@contextlib.contextmanager
def _shallow_recursion(room: int = 150) -> Iterator[None]:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + room)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _make_junk(d: Path) -> None:
    d.mkdir()
    (d / "data.bin").write_bytes(np.random.default_rng(3).bytes(1000))
    (d / "notes.txt").write_text("hello")


def _make_fake_manifest(content: bytes | None) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        d.mkdir()
        target = d / "manifest-000000000000.mmfs"
        if content is None:
            target.mkdir()
        else:
            target.write_bytes(content)

    return make


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _make_head_only(d: Path) -> None:
    d.mkdir()
    ff.create_array_file(d / "HEAD.mmfs", (4,), np.uint64, "HEAD", durable=False)


NOT_STORES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    # A writer creates a store in an empty or missing directory: only readers refuse.
    "empty-dir": (lambda d: d.mkdir(), ("r",)),
    "missing-dir": (lambda d: None, ("r",)),
    "junk-dir": (_make_junk, ("r", "a")),
    "head-only": (_make_head_only, ("r", "a")),
    "manifest-random": (_make_fake_manifest(bytes(range(256)) * 2), ("r", "a")),
    "manifest-dir": (_make_fake_manifest(None), ("r", "a")),
    "manifest-pickle": (_make_fake_manifest(pickle.dumps({"format": "mmfs-store"})), ("r", "a")),
    "manifest-npy": (_make_fake_manifest(b"\x93NUMPY" + bytes(120)), ("r", "a")),
    "regular-file": (lambda d: _write(d, b"MMFS" + bytes(200)), ("r", "a")),
}


@pytest.mark.parametrize(
    ("what", "mode"), [(w, m) for w, (_f, modes) in NOT_STORES.items() for m in modes]
)
def test_not_a_store(tmp_path: Path, what: str, mode: str) -> None:
    path = tmp_path / "x"
    NOT_STORES[what][0](path)
    before = _fingerprint(str(tmp_path))
    with pytest.raises(mmfs.FormatError):
        mmfs.open(path, mode=mode)  # type: ignore[arg-type]
    after = _fingerprint(str(tmp_path))
    after.pop("x/.writer.lock", None)  # the writer may leave its lock file
    assert after == before  # a failed open writes nothing (no HEAD.mmfs) into it


# --------------------------------------------------------------------------- bad manifests


def _set(*path: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        d = doc
        for p in path[:-1]:
            d = d[p]
        d[path[-1]] = value

    return edit


def _del(*path: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        d = doc
        for p in path[:-1]:
            d = d[p]
        del d[path[-1]]

    return edit


def _dup_ids(doc: dict[str, Any]) -> None:
    doc["groups"]["strs"]["id"] = doc["groups"]["ints"]["id"]


def _feature(i: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["groups"]["ints"]["features"][i] = value

    return edit


G = ("groups", "ints")
BAD_MANIFESTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "not-an-object": lambda doc: (doc.clear(), doc.update({"0": [1, 2]}))[-1],
    "format": _set("format", value="mmfs-other"),
    "generation-mismatch": _set("generation", value=2),
    "generation-str": _set("generation", value="3"),
    "generation-negative": _set("generation", value=-2),
    "groups-list": _set("groups", value=[]),
    "missing-groups": _del("groups"),
    "missing-segment-bytes": _del("segment_bytes"),
    "segment-bytes-negative": _set("segment_bytes", value=-4096),
    "segment-bytes-float": _set("segment_bytes", value=4096.0),
    "segment-bytes-other": _set("segment_bytes", value=8192),
    "segment-bytes-zero": _set("segment_bytes", value=0),
    "next-group-id-low": _set("next_group_id", value=1),
    "duplicate-group-ids": _dup_ids,
    "group-not-object": _set(*G, value=[1, 2, 3]),
    "group-name-invalid": lambda doc: doc["groups"].__setitem__(
        "bad name!", doc["groups"].pop("ints")
    ),
    "missing-key": _del(*G, "key"),
    "missing-n-pages": _del(*G, "n_pages"),
    "missing-record-bytes": _del(*G, "record_bytes"),
    "missing-categories": _del(*G, "categories"),
    "missing-sparse-elems": _del(*G, "sparse_elems"),
    "missing-features": _del(*G, "features"),
    "key-type-unknown": _set(*G, "key_type", value="float64"),
    "key-type-int": _set(*G, "key_type", value=5),
    "key-int": _set(*G, "key", value=7),
    "n-rows-str": _set(*G, "n_rows", value="228"),
    "n-rows-float": _set(*G, "n_rows", value=228.0),
    "n-rows-bool": _set(*G, "n_rows", value=True),
    "n-rows-negative": _set(*G, "n_rows", value=-1),
    "n-slots-negative": _set(*G, "n_slots", value=-5),
    "n-pages-negative": _set(*G, "n_pages", value=-1),
    "sparse-elems-negative": _set(*G, "sparse_elems", "s", value=-10),
    "n-slots-above-rows": _set(*G, "n_slots", value=10**6),
    "n-slots-wrong": _set(*G, "n_slots", value=150),
    "n-rows-beyond-files": _set(*G, "n_rows", value=10**6),
    "n-pages-beyond-files": _set(*G, "n_pages", value=1000),
    "sparse-elems-beyond-files": _set(*G, "sparse_elems", "s", value=10**6),
    "keys-gen-null": _set(*G, "keys_gen", value=None),
    "keys-gen-no-file": _set(*G, "keys_gen", value=7),
    "dir-gen-no-file": _set(*G, "dir_gen", value=7),
    "category-gen-no-file": _set(*G, "categories", "c", value=7),
    "transform-pin-zero": _set(*G, "info", "c", "transforms", value={"onehot": 0}),
    "transform-pins-list": _set(*G, "info", "c", "transforms", value=["onehot"]),
    "quant-gen-no-file": _set(*G, "quant", "q", value=7),
    "categories-wrong-names": _set(*G, "categories", value={"zz": 1}),
    "quant-wrong-names": _set(*G, "quant", value={}),
    "sparse-wrong-names": _set(*G, "sparse_elems", value={"s": 1, "t": 2}),
    "record-bytes-mismatch": lambda doc: doc["groups"]["ints"].__setitem__(
        "record_bytes", doc["groups"]["ints"]["record_bytes"] + 8
    ),
    "feature-type-unknown": _feature(0, ["f", {"type": "matrix"}]),
    "feature-scalar-dtype": _feature(0, ["f", {"type": "scalar", "dtype": "float128"}]),
    "feature-dense-dim-zero": _feature(4, ["d", {"type": "dense", "dim": 0, "dtype": "float32"}]),
    "feature-dense-dim-str": _feature(4, ["d", {"type": "dense", "dim": "4", "dtype": "float32"}]),
    "feature-extra-field": _feature(3, ["c", {"type": "category", "extra": 1}]),
    "feature-entry-shape": _feature(0, ["f"]),
    "feature-name-int": _feature(0, [5, {"type": "scalar", "dtype": "float32"}]),
    "feature-name-reserved": _feature(0, ["slot", {"type": "scalar", "dtype": "float32"}]),
    "feature-name-duplicate": _feature(1, ["f", {"type": "scalar", "dtype": "float32"}]),
    "features-not-list": _set(*G, "features", value={"f": {"type": "scalar"}}),
}


@pytest.mark.parametrize("edit", list(BAD_MANIFESTS), ids=list(BAD_MANIFESTS))
@pytest.mark.parametrize("mode", ["r", "a"])
def test_semantically_bad_manifest(
    pristine: dict[str, Any], tmp_path: Path, edit: str, mode: str
) -> None:
    """A manifest with a valid header and checksum whose JSON says something impossible."""
    path = tmp_path / "s"
    clone(pristine["store"], path)
    mpath = path / "manifest-000000000003.mmfs"
    doc = ff.read_json_file(mpath, "MNFT")
    BAD_MANIFESTS[edit](doc)
    os.unlink(mpath)  # a hard link to the undamaged store's manifest
    ff.write_json_file(mpath, doc, "MNFT", durable=False)
    _obs, errors = observe(str(path), mode, pristine["query"])
    assert errors, "the bad manifest was accepted"
    bad = [e for e in errors if not e["ours"] or e["state"] or e["recursion"]]
    assert not bad, bad[0]
    corrupt = [e for e in errors if e["type"] == "CorruptStoreError"]
    assert corrupt, f"expected CorruptStoreError, got {errors[0]}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker_main(sys.argv[2])
    else:
        raise SystemExit("usage: test_store_corruption.py --worker SPEC.json (run by pytest)")
