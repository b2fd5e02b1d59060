"""Crash-safety stress test of the store: SIGKILL a writer at random moments, check recovery.

    python tools/crash_stress.py [--trials 1000] [--seed 0] [--dir DIR] [--spawn]

A writer process opens a store with tiny segments (``segment_bytes=4096``, so commits
cross segment boundaries all the time) and runs a deterministic sequence of commits:
commit ``i`` writes a deterministic set of int64 keys (new keys and updates of older
ones, in one to three ``write`` calls) whose feature values are a pure function of
``(i, key)`` (features: a float64 scalar, a dense(16) float32, a category, a sparse(64)).
Commits share event times in threes (a tie goes to the later row, so the later commit
must still win), and some commits also write a few *late* rows of older keys, with an
event time older than every other row, which must never become current.  After each
commit returns, the writer appends the generation to a side file (flush + fsync).  The
parent kills it with SIGKILL at a random moment:

  delay     a random delay after the writer opened the store, from 0 up to the time a
            few commits take (lands in writes, in commits, between commits)
  marker-W  right after the writer announces the writes of a commit
  marker-C  right after the writer announces a commit (just before ``store.commit``)
  marker-M  right after the commit point: the writer process wraps ``os.replace`` to
            announce each manifest it has just renamed into place, and pauses 2 ms
            there, so the kill lands between the manifest rename and the HEAD write
  open      a random delay after the process starts (lands in opening and recovery,
            and in the creation of a fresh store)

After each kill the parent checks, with a pure-Python model of the commits, that the
store holds exactly the state after the last completed commit k, where k is the last
generation in the side file or one more (a kill after the manifest rename but before the
side file was written):

  1. a reader (``mode="r"``) opened *before* any writer recovered sees state k and
     ``verify()`` passes;
  2. a writer (``mode="a"``, which recovers) sees state k, ``verify()`` passes, and no
     leftovers of the dead commit remain (``*.tmp``, files of later generations);
  3. the writer continues: commit k + 1 (same deterministic plan), read back by the
     writer and by the still-open reader, which sees it without reopening;
  4. the next trial's writer starts from there.

With probability ``defer`` (0.25) a trial stops after step 1 and leaves the recovery to
the next trial's writer, which may itself be killed while it recovers (the run ends with
a recovery and its checks).  In half the trials a reader opened before the writer
started stays open through the kill: it must read state k too, or -- only while HEAD
still names its old generation, i.e. the writer died between the manifest rename and
the HEAD write, and until a writer repairs HEAD -- the state it opened on.

Every check reads every key that any commit up to k + 3 may have written, plus keys
never written and repeated keys; a key not in state k must be masked.  Each trial
continues the sequence in the same store; with probability ``--fresh`` a trial starts a
new store (so creation and the first commit are killed too).

Writer processes: by default a *fork server* -- one interpreter started with
``subprocess.Popen([sys.executable, "-c", SCRIPT, ...])`` that imports mmfs once and
forks a fresh child per trial (it never opens a store itself, so a child inherits no
lock, mapping or descriptor of a store).  This avoids paying the interpreter start-up
and the numpy / scipy import (over a second on small machines) per trial.  ``--spawn``
starts every writer as its own ``Popen`` of a fresh interpreter instead.

``tests/test_store_crash.py`` imports this module (by path) and runs the same trials.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

import mmfs

TOOL_PATH = Path(__file__).resolve()
GROUP = "users"
SEGMENT_BYTES = 4096
SPARSE_DIM = 64
DENSE_DIM = 16
PLAN_SEED = 0x5EED_C0DE
EPOCH_NS = 1_600_000_000_000_000_000  # event times: see event_time_ns
NEVER_WRITTEN = np.array([2**40, 2**40 + 1, 2**62, -(2**62)], dtype=np.int64)
MODES = {"delay": 0.45, "marker-W": 0.12, "marker-C": 0.18, "marker-M": 0.1, "open": 0.15}
_WRITER_FOREVER = 10**9

# The bootstrap every writer process runs: load this file as a module, run its child_main.
SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("mmfs_crash_stress", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
sys.exit(mod.child_main(sys.argv[2:]))
"""


def schema() -> dict[str, Any]:
    return {
        "x": mmfs.scalar("float64"),
        "emb": mmfs.dense(DENSE_DIM),
        "cat": mmfs.category(),
        "tags": mmfs.sparse(SPARSE_DIM),
    }


# --------------------------------------------------------------------------- the commits


def n_new(i: int) -> int:
    """Keys first written by commit i (i >= 1)."""
    return 4 + i % 5


def base(i: int) -> int:
    """Key ids used by commits 1 .. i-1 are [0, base(i)); commit i adds [base(i), base(i+1))."""
    m = i - 1
    return 4 * m + 10 * (m // 5) + (m % 5) * (m % 5 + 1) // 2


def key_of(ids: np.ndarray) -> np.ndarray:
    """The int64 key of each key id: a bijection onto [-2**39, 2**39), both signs."""
    ids = np.asarray(ids, dtype=np.int64)
    return (ids * 0x9E3779B1) % (1 << 40) - (1 << 39)


def commit_chunks(i: int) -> list[np.ndarray]:
    """The key ids commit i writes, as the write() calls that write them (in order)."""
    rng = np.random.default_rng([PLAN_SEED, i])
    new = np.arange(base(i), base(i + 1), dtype=np.int64)
    old = base(i)
    upd = rng.integers(0, old, int(rng.integers(0, 10))) if old else np.zeros(0, np.int64)
    ids = rng.permutation(np.concatenate([new, upd]))
    return [c for c in np.array_split(ids, int(rng.integers(1, 4))) if c.shape[0]]


def commit_writes(i: int) -> list[tuple[np.ndarray, bool]]:
    """The write() calls of commit i: (key ids, late).  The chunks of commit_chunks, and
    maybe one *late* write of a few older keys with an event time older than every other
    row's: it never becomes the current value of its keys."""
    writes = [(c, False) for c in commit_chunks(i)]
    rng = np.random.default_rng([PLAN_SEED, i, 1])
    if base(i) and rng.random() < 0.5:
        late = rng.integers(0, base(i), int(rng.integers(1, 4)))
        writes.insert(int(rng.integers(0, len(writes) + 1)), (late, True))
    return writes


LATE = 1_000_000  # a late row of commit i holds the values of "commit" i + LATE


def event_time_ns(i: int | np.ndarray) -> Any:
    """The event time of the rows of commit i (equal for i // 3 equal: a tie goes to the
    later row, so the later commit still wins); late rows get EPOCH_NS - 1000 * i."""
    return EPOCH_NS + 1000 * (np.asarray(i) // 3)


def values(gen: np.ndarray, ids: np.ndarray) -> dict[str, Any]:
    """Feature values of the rows that commits ``gen`` wrote for key ids ``ids`` (arrays of
    equal length; a pure function of each (gen, id)).  ``tags`` is returned dense."""
    g = np.asarray(gen, dtype=np.int64)
    k = np.asarray(ids, dtype=np.int64)
    n = k.shape[0]
    x = ((g * 1_000_003 + k * 7919) % 1_000_000_007).astype(np.float64) / 1024.0 - 1e5
    d = np.arange(DENSE_DIM, dtype=np.int64)
    emb = ((k[:, None] * 31 + g[:, None] * 17 + d * 7) % 1009).astype(np.float32) / 8 - 60
    cat = [
        None if (3 * gi + ki) % 11 == 0 else f"c{(gi + 2 * ki) % 13}"
        for gi, ki in zip(g.tolist(), k.tolist(), strict=True)
    ]
    nnz = (7 * g + 3 * k) % 23
    rows = np.repeat(np.arange(n), nnz)
    j = np.arange(rows.shape[0]) - np.repeat(np.cumsum(nnz) - nnz, nnz)
    kr, gr = k[rows], g[rows]
    tags = np.zeros((n, SPARSE_DIM), dtype=np.float32)
    tags[rows, (5 * kr + 3 * gr + 7 * j) % SPARSE_DIM] = ((kr + gr + j) % 17 + 1).astype(np.float32)
    return {"x": x, "emb": emb, "cat": cat, "tags": tags, "nnz": nnz}


def _say(line: str) -> None:
    """One line to stdout in one write(2): a kill cannot leave half of it (a print() may
    write the text and its newline apart, unbuffered, and a kill between the two would
    glue the next line onto it)."""
    data = (line + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def apply_commit(store: mmfs.Store, i: int, announce: bool = False) -> int:
    """Run commit i (the next one) on a writer store; returns the new generation."""
    if store.generation != i - 1:
        raise AssertionError(f"commit {i} on a store at generation {store.generation}")
    if GROUP not in store.groups():
        store.create_group(GROUP, key="uid", key_type="int64", schema=schema())
    grp = store[GROUP]
    if announce:
        _say(f"W {i}")
    for chunk, late in commit_writes(i):
        v = values(np.full(chunk.shape[0], i + LATE if late else i), chunk)
        feats = {"x": v["x"], "emb": v["emb"], "cat": v["cat"], "tags": sp.csr_matrix(v["tags"])}
        t = EPOCH_NS - 1000 * i if late else int(event_time_ns(i))
        grp.write(key_of(chunk), feats, event_time=np.datetime64(t, "ns"))
    if announce:
        _say(f"C {i}")
    gen = store.commit(f"commit {i}", tags=[f"crash-stress-{i}"])
    if gen != i:
        raise AssertionError(f"commit {i} returned generation {gen}")
    return gen


class Model:
    """The state after commits 1..gen, in plain Python: key id -> the last commit that wrote
    it (late rows never win, so they are not in the model), and the order of first writes.
    Feature values follow from (commit, key id) by ``values``."""

    def __init__(self) -> None:
        self.gen = 0
        self.last: dict[int, int] = {}
        self.order: list[int] = []  # key ids in order of first write

    def advance(self, to: int) -> None:
        """Replay commits gen + 1 .. to."""
        while self.gen < to:
            i = self.gen + 1
            for chunk in commit_chunks(i):
                for key_id in chunk.tolist():
                    if key_id not in self.last:
                        self.order.append(key_id)
                    self.last[key_id] = i
            self.gen = i

    def last_of(self, ids: np.ndarray) -> np.ndarray:
        """The last commit of each key id, -1 for keys not in the state."""
        get = self.last.get
        return np.array([get(k, -1) for k in ids.tolist()], dtype=np.int64)


# --------------------------------------------------------------------------- checking


def _fail(what: str, got: Any, want: Any) -> AssertionError:
    return AssertionError(f"{what}: got {got!r}, expected {want!r}")


def check_state(store: mmfs.Store, model: Model, rng: np.random.Generator, where: str) -> None:
    """Check that ``store`` holds exactly the state of ``model`` (every key, every feature)."""
    gen = store.generation
    if gen != model.gen:
        raise _fail(f"{where}: generation", gen, model.gen)
    if model.gen == 0:
        if store.groups():
            raise _fail(f"{where}: groups at generation 0", store.groups(), [])
        return
    if store.groups() != [GROUP]:
        raise _fail(f"{where}: groups", store.groups(), [GROUP])
    grp = store[GROUP]
    ids = np.arange(base(model.gen + 4), dtype=np.int64)  # every key any commit <= k+3 writes
    ids = np.concatenate([ids, rng.choice(ids, min(ids.shape[0], 25))])  # repeated keys
    ids = rng.permutation(ids)
    last = model.last_of(ids)
    present = last >= 0
    keys = np.concatenate([key_of(ids), NEVER_WRITTEN])
    present = np.concatenate([present, np.zeros(NEVER_WRITTEN.shape[0], dtype=bool)])
    last = np.concatenate([last, np.full(NEVER_WRITTEN.shape[0], -1, dtype=np.int64)])
    ids = np.concatenate([ids, np.zeros(NEVER_WRITTEN.shape[0], dtype=np.int64)])
    want = values(np.where(present, last, 0), ids)

    n_keys = len(model.last)
    if len(grp) != n_keys:
        raise _fail(f"{where}: len(group)", len(grp), n_keys)
    got_keys = np.asarray(grp.keys())
    want_keys = key_of(np.array(model.order, dtype=np.int64))
    if not np.array_equal(got_keys, want_keys):
        raise AssertionError(f"{where}: group.keys() differs from the keys in order of first write")

    b = grp.get(keys)
    _check_batch(b, present, last, want, f"{where}: get(all keys)")
    sel = rng.permutation(keys.shape[0])[: max(1, keys.shape[0] // 3)]
    sub = grp.get(keys[sel], features=["tags", "x"])
    if sub.names != ("tags", "x"):
        raise _fail(f"{where}: names of a feature selection", sub.names, ("tags", "x"))
    _check_batch(
        sub, present[sel], last[sel], {n: _take(v, sel) for n, v in want.items()},
        f"{where}: get(some keys, features=['tags', 'x'])",
    )  # fmt: skip
    for p in rng.choice(keys.shape[0], 3).tolist():  # the one-key path
        one = grp.get(int(keys[p]))
        _check_batch(
            one, present[p : p + 1], last[p : p + 1], {n: _take(v, [p]) for n, v in want.items()},
            f"{where}: get({int(keys[p])})",
        )  # fmt: skip


def _take(v: Any, sel: Any) -> Any:
    if isinstance(v, list):
        return [v[i] for i in np.asarray(sel).tolist()]
    return v[sel]


def _check_batch(
    b: mmfs.FeatureBatch, present: np.ndarray, last: np.ndarray, want: dict[str, Any], where: str
) -> None:
    if not np.array_equal(b.mask, ~present):
        bad = np.flatnonzero(b.mask != ~present)[:5].tolist()
        raise AssertionError(f"{where}: mask wrong at positions {bad} (found vs expected)")
    miss = ~present
    et = b.event_time
    want_et = np.where(present, event_time_ns(last), 0).astype("datetime64[ns]")
    if not (np.array_equal(et[present], want_et[present]) and np.isnat(et[miss]).all()):
        raise AssertionError(f"{where}: event_time differs from the model")
    names = b.names
    if "x" in names:
        x = b["x"]
        if not (np.array_equal(x[present], want["x"][present]) and np.isnan(x[miss]).all()):
            bad = np.flatnonzero(present & (x != want["x"]))[:5].tolist()
            raise AssertionError(f"{where}: feature 'x' differs at positions {bad}")
    if "emb" in names:
        emb = b["emb"]
        if not (np.array_equal(emb[present], want["emb"][present]) and np.isnan(emb[miss]).all()):
            raise AssertionError(f"{where}: feature 'emb' differs from the model")
    if "cat" in names:
        cat = b["cat"].tolist()
        wcat = [c if p else None for c, p in zip(want["cat"], present.tolist(), strict=True)]
        if cat != wcat:
            bad = [i for i, (a, c) in enumerate(zip(cat, wcat, strict=True)) if a != c][:5]
            raise AssertionError(f"{where}: feature 'cat' differs at positions {bad}")
    if "tags" in names:
        tags = b["tags"]
        if not isinstance(tags, sp.csr_matrix) or tags.shape != (present.shape[0], SPARSE_DIM):
            raise AssertionError(f"{where}: feature 'tags' is not a csr_matrix of the right shape")
        wt = np.where(present[:, None], want["tags"], 0)
        if not np.array_equal(np.diff(tags.indptr), np.where(present, want["nnz"], 0)):
            raise AssertionError(f"{where}: feature 'tags' has wrong row lengths")
        if not np.array_equal(tags.toarray(), wt):
            raise AssertionError(f"{where}: feature 'tags' differs from the model")


def _leftovers(path: str, gen: int) -> list[str]:
    """Files of the store that a commit beyond ``gen`` wrote, or unfinished files (and the
    folder of a group whose creating commit never happened: the group is g0, from
    commit 1)."""
    out = []
    groups = os.path.join(path, "groups")
    if os.path.isdir(groups):
        out += [f"groups/{d}" for d in os.listdir(groups) if gen == 0 or d != "g0"]
    for root, _dirs, files in os.walk(path):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), path)
            if f.endswith(".tmp"):
                out.append(rel)
                continue
            parts = f.split("-")
            gens = [int(p[:12]) for p in parts[1:] if len(p) >= 12 and p[:12].isdigit()]
            if (f.startswith(("manifest-", "dir-", "kidx-", "cat-", "quant-"))) and any(
                g > gen for g in gens
            ):
                out.append(rel)
    return sorted(out)


# --------------------------------------------------------------------------- the writer


def run_writer(args: dict[str, Any]) -> int:
    """The body of a writer process: open, announce, commit until killed (or n commits)."""
    _say(f"start {os.getpid()}")
    t0 = time.perf_counter()
    store = mmfs.open(
        args["store"], mode="a", durability=args["durability"], segment_bytes=SEGMENT_BYTES
    )
    t_open = time.perf_counter() - t0
    gen = store.generation
    _say(f"ready {gen} {t_open:.6f}")
    announce = args["announce"]
    if announce:
        _announce_manifests()
    t0 = time.perf_counter()
    with open(args["side"], "a") as side:
        for _ in range(args["commits"]):
            gen = apply_commit(store, gen + 1, announce)
            side.write(f"{gen}\n")
            side.flush()
            os.fsync(side.fileno())
            _say(f"K {gen} {time.perf_counter() - t0:.6f}")
    per_commit = (time.perf_counter() - t0) / max(1, args["commits"])
    store.close()
    _say(f"done {gen} {per_commit:.6f}")
    return 0


def _announce_manifests() -> None:
    """Make this (writer) process say ``M <gen>`` right after each manifest rename, the
    commit point, and pause there a little (only the timing changes)."""
    real_replace = os.replace

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        real_replace(src, dst, **kwargs)
        name = os.path.basename(os.fspath(dst))
        if name.startswith("manifest-"):
            _say(f"M {int(name[9:21])}")
            time.sleep(0.002)

    os.replace = replace


def _run_writer_reporting(args: dict[str, Any]) -> int:
    try:
        return run_writer(args)
    except BaseException:
        _say("error " + json.dumps(traceback.format_exc()))
        return 3


def _serve() -> int:
    """The fork server: one JSON command per stdin line.

    {"cmd": "write", "args": {...}} forks a writer child (which prints ``start <pid>``
    first); {"cmd": "reap", "pid": P} waits for child P and prints ``status P <code>``
    (negative: killed by that signal).  A child is reaped only when asked, so its pid
    cannot be reused before the parent has killed it.  EOF ends the server."""
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "write":
            pid = os.fork()
            if pid == 0:  # the writer child
                code = 3
                try:
                    code = _run_writer_reporting(cmd["args"])
                finally:
                    os._exit(code)
        elif cmd["cmd"] == "reap":
            _, status = os.waitpid(cmd["pid"], 0)
            _say(f"status {cmd['pid']} {os.waitstatus_to_exitcode(status)}")
    return 0


def child_main(argv: list[str]) -> int:
    """Entry point of the processes started with SCRIPT: ``serve`` or ``write <json>``."""
    if argv[0] == "serve":
        return _serve()
    return _run_writer_reporting(json.loads(argv[1]))


# --------------------------------------------------------------------------- launching


class LineReader:
    """Lines from a pipe, with a deadline (no thread, no blocking read)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.poll = select.poll()  # not select(): it fails for descriptors >= 1024
        self.poll.register(fd, select.POLLIN)
        self.buf = b""
        self.eof = False
        self.seen: list[str] = []

    def readline(self, timeout: float) -> str | None:
        """The next line; None at EOF.  TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line from the writer within {timeout} s: {self.seen[-5:]}")
            if self.poll.poll(max(1, int(left * 1000))):
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    self.eof = True
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        text = line.decode()
        self.seen.append(text)
        del self.seen[:-50]
        return text


_CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Writer:
    """One writer process, however it was started."""

    def __init__(self, lines: LineReader, pid: int, reap: Any) -> None:
        self.lines = lines
        self.pid = pid
        self._reap = reap

    def kill(self) -> None:
        # Safe: the child is not reaped before wait(), so the pid cannot have been reused.
        os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = 60.0) -> tuple[int, list[str]]:
        """Reap the writer: (exit code, negative for a signal; lines it printed since)."""
        return self._reap(self, timeout)


class ForkServer:
    """Writers forked from one pre-imported interpreter (started with Popen + SCRIPT)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(TOOL_PATH), "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, **_CHILD_ENV},
        )  # fmt: skip
        assert self.proc.stdout is not None
        assert self.proc.stdin is not None
        self.lines = LineReader(self.proc.stdout.fileno())

    def _send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def start(self, args: dict[str, Any], timeout: float = 120.0) -> Writer:
        self._send({"cmd": "write", "args": args})
        line = self.lines.readline(timeout)  # the first start also waits for the import
        if line is None or not line.startswith("start "):
            raise RuntimeError(f"the fork server did not start a writer: {line!r}")
        return Writer(self.lines, int(line.split()[1]), self._reap)

    def _reap(self, w: Writer, timeout: float) -> tuple[int, list[str]]:
        self._send({"cmd": "reap", "pid": w.pid})
        rest = []
        while True:
            line = self.lines.readline(timeout)
            if line is None:
                raise RuntimeError("the fork server died")
            if line.startswith(f"status {w.pid} "):
                return int(line.split()[2]), rest
            rest.append(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class Spawner:
    """Every writer a fresh interpreter: ``Popen([sys.executable, "-c", SCRIPT, ...])``."""

    def __init__(self) -> None:
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, args: dict[str, Any], timeout: float = 120.0) -> Writer:
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(TOOL_PATH), "write", json.dumps(args)],
            stdout=subprocess.PIPE, env={**os.environ, **_CHILD_ENV},
        )  # fmt: skip
        assert proc.stdout is not None
        self.procs[proc.pid] = proc
        lines = LineReader(proc.stdout.fileno())
        line = lines.readline(timeout)
        if line is None or not line.startswith("start "):
            proc.kill()
            self._reap(Writer(lines, proc.pid, self._reap), timeout)
            raise RuntimeError(f"the writer did not start: {line!r}")
        return Writer(lines, proc.pid, self._reap)

    def _reap(self, w: Writer, timeout: float) -> tuple[int, list[str]]:
        proc = self.procs.pop(w.pid)
        assert proc.stdout is not None
        rest = []
        try:
            while (line := w.lines.readline(timeout)) is not None:
                rest.append(line)
            code = proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        return code, rest

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()


@contextlib.contextmanager
def launcher(spawn: bool) -> Iterator[ForkServer | Spawner]:
    lau: ForkServer | Spawner = Spawner() if spawn else ForkServer()
    try:
        yield lau
    finally:
        lau.close()


# --------------------------------------------------------------------------- the trials


@dataclass
class Stats:
    trials: int = 0
    modes: Counter[str] = field(default_factory=Counter)
    durability: Counter[str] = field(default_factory=Counter)
    progress: Counter[int] = field(default_factory=Counter)  # commits completed per trial
    after_rename: int = 0  # kills between the manifest rename and the side file
    head_behind: int = 0  # kills between the manifest rename and the HEAD write
    debris: int = 0  # kills that left files of an unfinished commit (mid-commit kills)
    fresh_stores: int = 0
    deferred: int = 0  # trials that left the recovery to the next writer
    on_leftovers: int = 0  # writers started on the leftovers of a killed one
    lagging: int = 0  # readers open all along that still read the old generation (HEAD old)
    commits: int = 0
    seconds: float = 0.0
    writer_seconds: float = 0.0  # writers running, until the kill
    check_seconds: float = 0.0  # checking and going on after the kills
    calibration: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        p = sorted(self.progress.items())
        return "\n".join(
            [
                f"{self.trials} kill trials in {self.seconds:.1f} s, all recovered exactly",
                f"  modes: {dict(sorted(self.modes.items()))}",
                f"  durability: {dict(sorted(self.durability.items()))}",
                f"  commits completed before the kill (count of trials): {dict(p)}",
                f"  kills after the commit point but before the side file: {self.after_rename}"
                f" (before the HEAD write: {self.head_behind})",
                f"  kills that left files of an unfinished commit: {self.debris}",
                f"  recoveries left to the next writer: {self.deferred}; writers started on "
                f"leftovers of a killed commit: {self.on_leftovers}",
                f"  readers open all along that still read the generation HEAD named: "
                f"{self.lagging}",
                f"  fresh stores: {self.fresh_stores}; commits in all: {self.commits}",
                f"  time: writers {self.writer_seconds:.1f} s, checks {self.check_seconds:.1f} s",
                "  calibration: "
                + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in self.calibration.items()),
            ]
        )


class TrialFailure(AssertionError):
    pass


def _created(path: str) -> bool:
    """Whether the creation of the store at path got as far as HEAD (readers need it)."""
    return os.path.exists(os.path.join(path, "manifest-000000000000.mmfs")) and (
        os.path.exists(os.path.join(path, "HEAD.mmfs"))
    )


def _head(path: str) -> int:
    """The generation counter in HEAD, read from the file."""
    return int(np.fromfile(os.path.join(path, "HEAD.mmfs"), dtype="<u8", count=1, offset=128)[0])


def _side_gen(side: Path, prev: int) -> int:
    """The last generation the writer recorded (complete lines only), else prev."""
    if not side.exists():
        return prev
    lines = side.read_text().split("\n")[:-1]  # the part after the last newline is partial
    return int(lines[-1]) if lines else prev


class Trials:
    """The trial loop (see the module docstring); one store sequence in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        lau: ForkServer | Spawner,
        seed: int,
        fresh: float = 0.05,
        modes: dict[str, float] | None = None,
        defer: float = 0.25,
    ) -> None:
        self.workdir = workdir
        self.lau = lau
        self.rng = np.random.default_rng(seed)  # delays and the keys each check reads
        self.plan_rng = np.random.default_rng([seed, 1])
        self.fresh = fresh
        self.defer = defer
        modes = dict(MODES if modes is None else modes)
        if not set(modes) <= set(MODES):
            raise ValueError(f"unknown modes {sorted(set(modes) - set(MODES))}")
        total = sum(modes.values())
        self.modes = list(modes)
        self.mode_p = [p / total for p in modes.values()]
        self.stats = Stats()
        self.model = Model()
        self.n_store = 0
        self.store = self._new_store()
        self.open_s = 0.01
        self.commit_s = {"none": 0.03, "commit": 0.1}

    def _new_store(self) -> Path:
        path = self.workdir / f"store{self.n_store}"
        if self.n_store:
            shutil.rmtree(self.workdir / f"store{self.n_store - 1}", ignore_errors=True)
        self.n_store += 1
        self.model = Model()
        self.stats.fresh_stores += 1
        return path

    def _args(self, durability: str, announce: bool, commits: int, side: Path) -> dict[str, Any]:
        return {
            "store": str(self.store),
            "side": str(side),
            "durability": durability,
            "announce": announce,
            "commits": commits,
        }

    def calibrate(self, commits: int = 4) -> None:
        """Time opening and commits (one uninterrupted writer per durability), and check the
        store after them: the no-crash path of the same machinery."""
        for durability in ("none", "commit"):
            side = self.workdir / "side-calibrate.txt"
            side.unlink(missing_ok=True)
            w = self.lau.start(self._args(durability, False, commits, side))
            code, lines = w.wait()
            ready = [ln for ln in lines if ln.startswith("ready ")]
            done = [ln for ln in lines if ln.startswith("done ")]
            if code != 0 or not ready or not done:
                raise TrialFailure(f"calibration writer failed (exit {code}): {lines}")
            self.open_s = max(self.open_s, float(ready[0].split()[2]))
            self.commit_s[durability] = float(done[0].split()[2])
            self.stats.calibration[f"commit ({durability})"] = self.commit_s[durability]
            gen = self.model.gen + commits
            if _side_gen(side, -1) != gen:
                raise TrialFailure("calibration: the side file does not end at the last commit")
            self._check_after_kill(gen, gen, "calibration", count=False)
        self.stats.calibration["open"] = self.open_s

    def run(self, n: int, calibrate: bool = True) -> Stats:
        """Run n trials (after calibrating, unless ``calibrate`` is False: then the kill
        delays assume 10 ms to open, 30 ms per commit without fsync and 100 ms with)."""
        t0 = time.perf_counter()
        if calibrate and not self.stats.calibration:
            self.calibrate()
        for _ in range(n):
            self.trial()
        # The last trial may have left the recovery to a next writer: recover and check.
        self._check_after_kill(self.model.gen, self.model.gen, "after the last trial", False)
        self.stats.seconds += time.perf_counter() - t0
        return self.stats

    def trial(self) -> None:
        t = self.stats.trials
        plan = self.plan_rng  # the choices of the trial: a sequence fixed by the seed
        if t and plan.random() < self.fresh:
            self.store = self._new_store()
        mode = self.modes[int(plan.choice(len(self.modes), p=self.mode_p))]
        durability = "commit" if plan.random() < 0.5 else "none"
        defer = bool(plan.random() < self.defer)
        with_old = bool(plan.random() < 0.5)
        prev = self.model.gen
        what = f"trial {t} (mode {mode}, durability {durability}, store {self.store}, from {prev}"
        if self.store.exists() and _leftovers(str(self.store), prev):
            what += ", on the leftovers of a killed writer"
            self.stats.on_leftovers += 1
        # Half the time a reader is open all along: it lives through the writer's death.
        old = None
        if with_old and _created(str(self.store)):
            old = mmfs.open(self.store, mode="r")
            what += ", a reader open all along"
        if defer:
            what += ", recovery left to the next writer"
        try:
            t0 = time.perf_counter()
            what, s = self._kill_a_writer(mode, durability, what + ")")
            t1 = time.perf_counter()
            self.stats.deferred += defer
            self._check_after_kill(s, s + 1, what, defer=defer, old=old)
        finally:
            if old is not None:
                old.close()
        self.stats.writer_seconds += t1 - t0
        self.stats.check_seconds += time.perf_counter() - t1
        self.stats.trials += 1
        self.stats.modes[mode] += 1
        self.stats.durability[durability] += 1

    def _kill_a_writer(self, mode: str, durability: str, what: str) -> tuple[str, int]:
        """Start a writer, kill it as ``mode`` says; returns (what, last generation it
        recorded in the side file)."""
        rng = self.rng
        side = self.workdir / "side.txt"
        side.unlink(missing_ok=True)
        w = self.lau.start(self._args(durability, mode.startswith("marker"), _WRITER_FOREVER, side))
        lines: list[str] = []
        try:
            if mode == "open":
                time.sleep(rng.uniform(0, 1.5 * self.open_s))
            else:
                line = w.lines.readline(60)
                if line is None or not line.startswith("ready "):
                    raise TrialFailure(f"{what}: the writer did not open the store: {line!r}")
                if mode == "delay":
                    delay = rng.uniform(0, 3 * self.commit_s[durability])
                    what += f" delay {delay * 1e3:.2f} ms"
                    time.sleep(delay)
                else:
                    nth = int(rng.integers(1, 4))
                    tag = mode[-1]
                    what += f" at marker {tag} #{nth}"
                    seen = 0
                    while seen < nth:
                        line = w.lines.readline(60)
                        if line is None or line.startswith("error"):
                            break
                        lines.append(line)
                        seen += line.startswith(f"{tag} ")
        finally:
            w.kill()
            code, rest = w.wait()
        errors = [ln for ln in rest + w.lines.seen[-3:] if ln.startswith("error ")]
        if errors or code != -signal.SIGKILL:
            detail = json.loads(errors[0][6:]) if errors else rest
            raise TrialFailure(f"{what}: the writer exited with {code}:\n{detail}")
        # Keep the kill delays scaled to the commit times of the moment (they vary a lot
        # with the load of the machine): a running average over the commits just done.
        done = [ln.split() for ln in lines + rest if ln.startswith("K ")]
        if done:
            per = float(done[-1][2]) / len(done)
            self.commit_s[durability] += 0.2 * (per - self.commit_s[durability])
        return what, _side_gen(side, self.model.gen)

    def _check_after_kill(
        self,
        lo: int,
        hi: int,
        what: str,
        count: bool = True,
        defer: bool = False,
        old: mmfs.Store | None = None,
    ) -> None:
        """The store must hold the state of commit k, lo <= k <= hi; then the writer goes on.
        ``defer``: check with a reader only, and leave the recovery to the next trial's writer
        (which may be killed while it recovers).  ``old``: a reader opened before the writer
        started; until a writer repairs HEAD it may still read the generation HEAD names."""
        path = str(self.store)
        prev = self.model.gen
        rng = self.rng
        reader = None
        try:
            if _created(path):  # a reader before any recovery (a store whose creation was
                # cut short has no HEAD yet, so nothing to read)
                reader = mmfs.open(path, mode="r")
                k = reader.generation
            else:
                k = 0
            if not lo <= k <= hi:
                raise TrialFailure(f"{what}: generation {k} after the kill, expected {lo}..{hi}")
            if count:
                self.stats.after_rename += k == hi and lo != hi
                self.stats.progress[k - prev] += 1
                self.stats.debris += bool(_leftovers(path, k))
                self.stats.head_behind += reader is not None and _head(path) < k
            if old is not None:
                g_old = old.generation
                if g_old != k:
                    head = _head(path)
                    if not g_old == prev == head:
                        raise TrialFailure(
                            f"{what}: a reader open all along reads generation {g_old}, the "
                            f"store is at {k} (HEAD {head}, the reader opened at {prev})"
                        )
                    check_state(old, self.model, rng, f"{what}: old reader before recovery")
                    self.stats.lagging += count
            self.model.advance(k)
            self.stats.commits += k - prev
            if reader is not None:
                check_state(reader, self.model, rng, f"{what}: reader before recovery")
                reader.verify()
            if old is not None and old.generation == k:
                check_state(old, self.model, rng, f"{what}: old reader before recovery")
            if defer:
                return
            with mmfs.open(path, mode="a", durability="none") as w:
                check_state(w, self.model, rng, f"{what}: writer after recovery")
                w.verify()
                left = _leftovers(path, k)
                if left:
                    raise TrialFailure(f"{what}: recovery left {left[:5]}")
                if reader is None:
                    reader = mmfs.open(path, mode="r")
                check_state(reader, self.model, rng, f"{what}: reader after recovery")
                apply_commit(w, k + 1)  # the writer goes on
                self.model.advance(k + 1)
                self.stats.commits += 1
                check_state(w, self.model, rng, f"{what}: writer after commit {k + 1}")
                check_state(reader, self.model, rng, f"{what}: open reader after commit {k + 1}")
                if old is not None:
                    check_state(old, self.model, rng, f"{what}: old reader after commit {k + 1}")
        except TrialFailure:
            raise
        except Exception as exc:  # a wrong value, or a store that fails to open or read
            raise TrialFailure(f"{what}: {type(exc).__name__}: {exc}") from exc
        finally:
            if reader is not None:
                reader.close()


def run_trials(
    workdir: Path,
    trials: int,
    seed: int,
    *,
    spawn: bool = False,
    fresh: float = 0.05,
    defer: float = 0.25,
) -> Stats:
    """Run ``trials`` kill trials in ``workdir``; raises TrialFailure at the first failure."""
    with launcher(spawn) as lau:
        return Trials(workdir, lau, seed, fresh=fresh, defer=defer).run(trials)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", help="work directory (default: a new temporary one)")
    parser.add_argument("--fresh", type=float, default=0.05, help="chance of a new store")
    parser.add_argument(
        "--defer", type=float, default=0.25, help="chance of leaving recovery to the next writer"
    )
    parser.add_argument(
        "--spawn", action="store_true", help="a fresh interpreter per writer (slow)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="mmfs-crash-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        stats = run_trials(
            workdir, args.trials, args.seed, spawn=args.spawn, fresh=args.fresh, defer=args.defer
        )
    except TrialFailure as exc:
        if exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__)
        print(f"FAILED (seed {args.seed}): {exc}", file=sys.stderr)
        print(f"the store is kept in {workdir}", file=sys.stderr)
        return 1
    print(stats.summary())
    if not args.keep and not args.dir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
