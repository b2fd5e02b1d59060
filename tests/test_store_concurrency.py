"""Readers in other processes while a writer commits; the writer lock between processes.

Reader processes (``subprocess.Popen([sys.executable, "-c", ...])``) open the store
*before* the writer's commits and read in a loop, without reopening, while the writer
(this process) commits in a loop.  Commit v rewrites every key 0 .. N_BASE + v - 1 with
``version = v`` and adds one key, so one ``get`` must show one version v for all the keys
it finds, find exactly the first N_BASE + v keys, and v must lie between the store's
generation before and after the read; readers also call ``refresh()`` in between, so
reloads race the commits.  Every row also carries ``check``, a CRC32 of its key and all
its other feature values, which the reader recomputes for every row it reads (a torn or
mixed row fails it).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import scipy.sparse as sp

import mmfs

# Shared by this process (the writer) and the reader processes (prepended to their script).
_SHARED = r"""
import struct
import zlib

import numpy as np

N_BASE = 120
DIM = 8
SP_DIM = 32


def key_of(ids):
    return np.asarray(ids, dtype=np.int64) * 7 - 500


def n_keys(version):
    return N_BASE + version


def row_check(key, version, emb, cat, idx, val):
    crc = zlib.crc32(struct.pack("<qq", int(key), int(version)))
    crc = zlib.crc32(np.ascontiguousarray(emb, dtype=np.float32).tobytes(), crc)
    crc = zlib.crc32(b"\0" if cat is None else cat.encode(), crc)
    crc = zlib.crc32(np.ascontiguousarray(idx, dtype=np.int32).tobytes(), crc)
    return zlib.crc32(np.ascontiguousarray(val, dtype=np.float32).tobytes(), crc)


def version_values(version):
    # Every feature of commit `version` for its keys (sparse as COO parts).
    ids = np.arange(n_keys(version), dtype=np.int64)
    keys = key_of(ids)
    d = np.arange(DIM)
    emb = ((ids[:, None] * 13 + version * 29 + d * 5) % 997).astype(np.float32) / 4
    cats = [None if (i + version) % 7 == 0 else f"v{version % 5}-{i % 3}" for i in ids.tolist()]
    rows, idx, val, check = [], [], [], []
    for r, i in enumerate(ids.tolist()):
        j = np.arange((i + version) % 6)
        ri = np.sort((i + 3 * version + 5 * j) % SP_DIM).astype(np.int32)
        rv = (version + (ri % 8) / 8).astype(np.float32)
        rows += [r] * j.shape[0]
        idx.append(ri)
        val.append(rv)
        check.append(row_check(keys[r], version, emb[r], cats[r], ri, rv))
    idx = np.concatenate(idx)
    val = np.concatenate(val)
    return {
        "keys": keys,
        "version": np.full(ids.shape[0], version, dtype=np.int64),
        "emb": emb,
        "cat": cats,
        "tags": (val, (np.array(rows, dtype=np.int64), idx)),
        "check": np.array(check, dtype=np.int64),
    }
"""

_READER = r"""
import json
import sys
import time

import mmfs

path, final, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(seed)
errors = []
seen = []  # every generation or version observed, in order: must never decrease
versions = []
reads = 0


def err(msg):
    if len(errors) < 20:
        errors.append(msg)


def check_rows(b, where):
    # The version of the batch (-1: nothing found); checks every found row.
    found = ~b.mask
    ver, emb, cat, chk = b["version"], b["emb"], b["cat"], b["check"]
    tags = b["tags"]
    vs = set(ver[found].tolist())
    if len(vs) > 1:
        err(f"{where}: rows of several versions in one get: {sorted(vs)}")
    for r in np.flatnonzero(found).tolist():
        lo, hi = tags.indptr[r], tags.indptr[r + 1]
        c = row_check(b.keys[r], ver[r], emb[r], cat[r], tags.indices[lo:hi], tags.data[lo:hi])
        if c != chk[r]:
            err(f"{where}: torn row for key {b.keys[r]}: check {chk[r]} != {c}")
    return vs.pop() if len(vs) == 1 else -1


store = mmfs.open(path, mode="r")
g = store["g"]
all_ids = np.arange(n_keys(final) + 3)
queries = key_of(all_ids)


def one_round():
    # One round of reads; checks them, returns the version of the full read.
    g0 = store.generation
    b = g.get(queries)
    g1 = store.generation
    v = check_rows(b, f"read {reads}")
    want_found = all_ids < n_keys(v)
    if not np.array_equal(~b.mask, want_found):
        err(f"read {reads}: version {v} but found {int((~b.mask).sum())} keys, not {n_keys(v)}")
    if not g0 <= v <= g1:
        err(f"read {reads}: version {v} outside the generations {g0}..{g1} around it")
    if seen and g0 < seen[-1]:
        err(f"read {reads}: generation went back from {seen[-1]} to {g0}")
    if seen and v < max(seen):
        err(f"read {reads}: version {v} older than generation {max(seen)} already seen")
    seen.extend([g0, v, g1])
    # the one-key path, a feature selection, len(), and explicit refreshes
    k = int(rng.integers(0, N_BASE))
    one = g.get(int(key_of(k)))
    v1 = check_rows(one, f"get({int(key_of(k))})")
    if v1 < v:
        err(f"one-key read gave version {v1} after version {v}")
    sub = g.get(queries[::7], features=["check", "version"])
    vs = set(sub["version"][~sub.mask].tolist())
    if len(vs) != 1 or vs.pop() < v1:
        err(f"feature selection read versions {sorted(vs)} after version {v1}")
    n = len(g)
    if n < n_keys(v1):
        err(f"len(group) = {n} after version {v1}")
    for _ in range(3):
        r = store.refresh()
        if r < max(seen):
            err(f"refresh() gave generation {r} after generation {max(seen)}")
        seen.append(r)
    return v


first = None
deadline = time.monotonic() + 90
while time.monotonic() < deadline and len(errors) < 20:
    try:
        v = one_round()
    except Exception as exc:  # reported to the parent, which fails the test
        err(f"read {reads}: {type(exc).__name__}: {exc}")
        v = None
    reads += 1
    if reads == 1:
        first = v
        print("ready", flush=True)
    if v is not None:
        versions.append(v)
        if v == final:
            break
try:
    generation = store.generation
except Exception as exc:
    generation = f"{type(exc).__name__}: {exc}"
print(json.dumps({
    "errors": errors, "reads": reads, "first": first, "last": versions[-1] if versions else None,
    "versions": sorted(set(versions)), "generation": generation,
}), flush=True)
store.close()
"""

_LOCKER = r"""
import json
import sys
import time

import mmfs

path = sys.argv[1]
out = {}
try:
    mmfs.open(path, mode="a")
    out["at_once"] = "opened"
except mmfs.LockedError as exc:
    out["at_once"] = "locked"
    out["message"] = str(exc)
t = time.monotonic()
try:
    mmfs.open(path, mode="a", lock_timeout=0.3)
    out["timeout"] = "opened"
except mmfs.LockedError:
    out["timeout"] = time.monotonic() - t
with mmfs.open(path, mode="r") as r:  # readers need no lock
    out["reader_generation"] = r.generation
print(json.dumps(out), flush=True)
print("waiting", flush=True)
w = mmfs.open(path, mode="a", lock_timeout=60)
print(f"acquired {w.generation} {time.time()!r}", flush=True)
w["g"].write([999_999], {"x": [42.0]})
print(f"committed {w.commit('from the second writer')}", flush=True)
w.close()
"""

_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _shared() -> dict[str, Any]:
    ns: dict[str, Any] = {}
    exec(_SHARED, ns)
    return ns


class _Lines:
    """Lines of a child's stdout, with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.poll = select.poll()  # not select(): it fails for descriptors >= 1024
        self.poll.register(self.fd, select.POLLIN)
        self.buf = b""

    def ready(self) -> bool:
        return b"\n" in self.buf or bool(self.poll.poll(0))

    def line(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line within {timeout} s (have {self.buf[-200:]!r})")
            if self.poll.poll(max(1, int(left * 1000))):
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise EOFError(f"the child exited (have {self.buf[-200:]!r})")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


def _spawn(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, env=_ENV)


def _finish(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        if p.stdout is not None:
            p.stdout.close()


def _beside_readers(
    writer: mmfs.Store,
    script: str,
    path: str,
    final: int,
    commits: Any,
    *,
    timeout: float,
) -> list[dict[str, Any]]:
    """Start two reader processes running ``script``, wait until both read, run
    ``commits()``, and return their reports (asserting none found a problem); the
    writer is closed at the end."""
    procs = [_spawn(_SHARED + script, path, str(final), str(seed)) for seed in range(2)]
    try:
        lines = [_Lines(p) for p in procs]
        for rd in lines:  # each reader opened the store and read
            assert rd.line(120) == "ready"
        commits()
        results = [json.loads(rd.line(timeout)) for rd in lines]
        for p in procs:
            assert p.wait(60) == 0
    finally:
        _finish(procs)
        writer.close()
    problems = [f"reader {i}: {e}" for i, res in enumerate(results) for e in res["errors"]]
    assert not problems, "\n".join(problems[:10])
    return results


def _writer(path: str, ns: dict[str, Any]) -> mmfs.Store:
    """The writer, its group created.  Small segments: commits cross them.  No fsync:
    commits come fast, one after another."""
    writer = mmfs.open(path, segment_bytes=4096, durability="none")
    writer.create_group("g", key="k", schema={
        "version": mmfs.scalar("int64"), "emb": mmfs.dense(ns["DIM"]), "cat": mmfs.category(),
        "tags": mmfs.sparse(ns["SP_DIM"]), "check": mmfs.scalar("int64"),
    })  # fmt: skip
    return writer


def _write_version(
    store: mmfs.Store, ns: dict[str, Any], version: int, labels: list[str] | None = None
) -> int:
    v = ns["version_values"](version)
    n = v["keys"].shape[0]
    tags = sp.csr_matrix(sp.coo_matrix(v["tags"], shape=(n, ns["SP_DIM"])))
    store["g"].write(
        v["keys"],
        {"version": v["version"], "emb": v["emb"], "cat": v["cat"], "tags": tags,
         "check": v["check"]},
    )  # fmt: skip
    return store.commit(f"version {version}", tags=labels)


def test_readers_see_whole_commits_while_a_writer_commits(tmp_path: Path) -> None:
    ns = _shared()
    final = 60
    path = str(tmp_path / "s")
    writer = _writer(path, ns)
    assert _write_version(writer, ns, 1) == 1

    def commits() -> None:
        for version in range(2, final + 1):
            assert _write_version(writer, ns, version) == version

    results = _beside_readers(writer, _READER, path, final, commits, timeout=120)
    union: set[int] = set()
    for res in results:
        assert res["first"] == 1  # opened before the commits ...
        assert res["last"] == final  # ... and saw the last one without reopening
        assert res["generation"] == final
        assert len(res["versions"]) >= 3, res["versions"]
        union |= set(res["versions"])
    assert len(union) >= 5, sorted(union)


_PINNED_READER = (
    r"""
import json
import sys

import mmfs

path, final, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(seed)
errors = []
"""
    + _READER[_READER.index("def err(msg):") : _READER.index("store = mmfs.open(")]
    + r"""
store = mmfs.open(path, mode="r")
g = store["g"]
print("ready", flush=True)
checked = gone = 0
while True:
    done = store.refresh() >= final
    listed = store.versions()
    v = int(rng.choice([x.id for x in listed if x.id >= 1]))
    tagged = any(x.tags for x in listed if x.id == v)
    try:
        b = g.get(key_of(np.arange(n_keys(v) + 3)), version=v)
    except mmfs.NotFoundError:
        gone += 1  # dropped by gc since it was listed: allowed unless it is tagged
        if tagged:
            err(f"tagged version {v} is gone")
        continue
    if b.found[: n_keys(v)].sum() != n_keys(v) or b.found[n_keys(v) :].any():
        err(f"version {v}: found {int(b.found.sum())} keys, expected {n_keys(v)}")
    seen = check_rows(b, f"version {v}")
    if seen != v:
        err(f"version {v}: read rows of version {seen}")
    checked += 1
    if done and checked >= 30:
        break
print(json.dumps({"errors": errors, "checked": checked, "gone": gone}), flush=True)
"""
)


def test_pinned_readers_keep_their_versions_while_a_writer_commits_and_collects(
    tmp_path: Path,
) -> None:
    """Reader processes read random earlier versions (every key, version=v) while the
    writer commits and runs store.gc: a version read is exactly that version, torn
    rows never show, and tagged versions are never collected."""
    ns = _shared()
    final = 40
    path = str(tmp_path / "s")
    writer = _writer(path, ns)
    for version in range(1, 4):
        _write_version(writer, ns, version)

    def commits() -> None:
        for version in range(4, final + 1):
            _write_version(writer, ns, version, [f"t{version}"] if version % 7 == 0 else None)
            if version % 5 == 0:
                writer.gc(keep=4)

    results = _beside_readers(writer, _PINNED_READER, path, final, commits, timeout=180)
    assert all(res["checked"] >= 30 for res in results)
    with mmfs.open(path, mode="r") as reader:  # tagged versions survived every gc
        kept = [v.id for v in reader.versions()]
        assert {7, 14, 21, 28, 35} <= set(kept)
        assert len(kept) <= 5 + 4 + 1


def test_reader_sees_a_group_created_after_it_opened(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    with mmfs.open(path) as writer:
        reader = mmfs.open(path, mode="r")
        try:
            assert reader.groups() == []
            g = writer.create_group("g", schema={"x": mmfs.scalar("float64")})
            g.write([1, 2], {"x": [1.0, 2.0]})
            assert reader.groups() == []  # not committed yet
            writer.commit()
            assert reader.groups() == ["g"]
            assert reader["g"].get([2, 1, 3])["x"][:2].tolist() == [2.0, 1.0]
        finally:
            reader.close()


def test_writer_lock_between_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    first = mmfs.open(path)
    g = first.create_group("g", schema={"x": mmfs.scalar("float64")})
    g.write([1], {"x": [1.0]})
    first.commit()
    with pytest.raises(mmfs.LockedError):  # a second writer in this process, too
        mmfs.open(path)
    proc = _spawn(_LOCKER, path)
    try:
        out = _Lines(proc)
        report = json.loads(out.line(120))
        assert report["at_once"] == "locked"
        assert f"pid {os.getpid()}" in report["message"]
        assert isinstance(report["timeout"], float)
        assert report["timeout"] >= 0.29
        assert report["reader_generation"] == 1
        assert out.line() == "waiting"
        time.sleep(0.5)
        assert not out.ready()  # still waiting for the lock
        assert proc.poll() is None
        g.write([2], {"x": [2.0]})
        assert first.commit() == 2
        released = time.time()
        first.close()
        word, gen, at = out.line().split()
        assert word == "acquired"
        assert int(gen) == 2  # it sees the first writer's last commit
        assert float(at) >= released
        assert out.line() == "committed 3"
        assert proc.wait(60) == 0
    finally:
        _finish([proc])
        first.close()
    with mmfs.open(path, mode="r") as reader:
        assert reader.generation == 3
        assert reader["g"].get([1, 2, 999_999])["x"].tolist() == [1.0, 2.0, 42.0]
