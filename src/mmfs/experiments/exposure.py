"""Exposure logging: which key was served which arm of which experiment, and when.

An experiment created with ``log_exposures=True`` has every assignment that
``group.get(..., experiment=)`` serves recorded: experiment, phase, arm, key, the hash
scheme (``hash_version``), the configuration checksum, and the time.  Each process
appends to a file of its own under ``<store>/exposures/`` (no locks between serving
processes, readers or the writer), and records each (experiment, phase, key) once: the
first time it is served.  :meth:`ExposureLog.read` merges every process's file and keeps
each (experiment, phase, key)'s earliest record, so the result is deduplicated across
processes too.

A file is a sequence of chunks, each written by one ``write`` call::

    b"MMXP" | uint32 n_header | header (JSON) | keys | arms (int16) | uint32 crc32

The header holds the experiment, phase, variants, hash version, checksum, time, the key
type and the count; keys are int64 or (int64 offsets, UTF-8 bytes).  A reader skips a
chunk that is cut short or fails its checksum (a process killed while writing) and goes
on at the next magic, so a torn write loses only its own chunk.  Nothing read is ever
unpickled or executed.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import struct
import threading
import zlib
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from mmfs._times import now_ns
from mmfs.errors import MissingDependencyError
from mmfs.experiments.hashing import is_str
from mmfs.storage.keyindex import KeyIndex, _as_int_keys

if TYPE_CHECKING:  # pragma: no cover
    from mmfs.experiments._model import ExperimentDef

__all__ = ["ExposureLog", "to_frame"]

MAGIC: Final = b"MMXP"
_COLUMNS: Final = ("experiment", "phase", "arm", "key", "hash_version", "checksum", "time")


class ExposureLog:
    """One process's exposure log of one store (``store.experiments.log``)."""

    def __init__(self, store_path: str) -> None:
        self.directory = os.path.join(store_path, "exposures")
        self._fd: int | None = None
        self._pid = -1
        self._seen: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child starts its own
            os.makedirs(self.directory, exist_ok=True)
            name = f"{os.getpid()}-{secrets.token_hex(6)}.log"
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            self._fd = os.open(os.path.join(self.directory, name), flags, 0o644)
            self._pid = os.getpid()
            self._seen = {}
        return self._fd

    def record(self, d: ExperimentDef, keys: Any, codes: np.ndarray) -> int:
        """Append the assigned keys (code >= 0) this process has not logged for this
        experiment phase yet; returns how many were new.  The keys seen are kept in a
        key index (the store's own hash table), so a call costs O(its keys), however
        many were logged before."""
        assigned = np.flatnonzero(codes >= 0)
        if not assigned.size:
            return 0
        str_keys = is_str(keys)
        if not str_keys:
            keys = _as_int_keys(keys)
        with self._lock:
            fd = self._file()
            seen = self._seen.get((d.name, d.phase))
            if seen is None:
                seen = self._seen[(d.name, d.phase)] = KeyIndex("str" if str_keys else "int64")
            picked = keys[assigned] if isinstance(keys, np.ndarray) else _pick(keys, assigned)
            before = len(seen)
            slot = seen.insert(picked)
            new = slot >= before
            if not new.any():
                return 0
            _, first = np.unique(slot[new], return_index=True)  # once per key, first seen
            at = np.flatnonzero(new)[np.sort(first)]
            ks = picked[at] if not str_keys else [str(picked[i]) for i in at.tolist()]
            os.write(fd, _chunk(d, ks, codes[assigned[at]]))
        return len(ks)

    def read(self, experiment: str | None = None) -> dict[str, np.ndarray]:
        """Every process's records (of ``experiment``), each (experiment, phase, key)
        once -- its earliest -- ordered by time."""
        parts: list[dict[str, Any]] = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            names = []
        for name in names:
            if name.endswith(".log"):
                with open(os.path.join(self.directory, name), "rb") as fh:
                    parts.extend(_chunks(fh.read(), experiment))
        return _merge(parts)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


def _pick(keys: Any, at: np.ndarray) -> Any:
    return [keys[i] for i in at.tolist()]


def _chunk(d: ExperimentDef, keys: Any, arms: np.ndarray) -> bytes:
    if isinstance(keys, np.ndarray):
        kind, payload = "int64", keys.astype("<i8").tobytes()
    else:
        encoded = [k.encode() for k in keys]
        offsets = np.zeros(len(encoded) + 1, dtype="<i8")
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        kind, payload = "str", offsets.tobytes() + b"".join(encoded)
    header = json.dumps(
        {
            "experiment": d.name,
            "phase": d.phase,
            "variants": list(d.variants),
            "hash_version": d.hash_version,
            "checksum": d.checksum(),
            "time_ns": now_ns(),
            "key_type": kind,
            "n": len(keys),
        }
    ).encode()
    body = MAGIC + struct.pack("<I", len(header)) + header + payload + arms.astype("<i2").tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def _chunks(data: bytes, experiment: str | None) -> list[dict[str, Any]]:
    out = []
    at = 0
    while at >= 0 and at + 8 <= len(data):
        try:
            if data[at : at + 4] != MAGIC:
                raise ValueError("no chunk here")
            h, keys, arms, end = _parse(data, at)
            if struct.unpack_from("<I", data, end)[0] != zlib.crc32(data[at:end]):
                raise ValueError("checksum")
        except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
            at = data.find(MAGIC, at + 1)  # cut short (its writer died): the next chunk
            continue
        at = end + 4
        if experiment is None or h["experiment"] == experiment:
            out.append({**h, "keys": keys, "arms": arms})
    return out


def _parse(data: bytes, at: int) -> tuple[dict[str, Any], Any, np.ndarray, int]:
    """The chunk at ``at``: header, keys, arms, and where its checksum is."""
    (hl,) = struct.unpack_from("<I", data, at + 4)
    h = json.loads(data[at + 8 : at + 8 + hl])
    n = int(h["n"])
    p = at + 8 + hl
    if h["key_type"] == "int64":
        keys: Any = np.frombuffer(data, "<i8", n, p).astype(np.int64)
        keys_bytes = 8 * n
    else:
        offsets = np.frombuffer(data, "<i8", n + 1, p)
        base = p + 8 * (n + 1)
        keys = [data[base + a : base + b].decode() for a, b in itertools.pairwise(offsets.tolist())]
        keys_bytes = 8 * (n + 1) + int(offsets[-1])
    arms = np.frombuffer(data, "<i2", n, p + keys_bytes)
    return h, keys, arms, p + keys_bytes + 2 * n


def _merge(parts: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    best: dict[tuple[str, int, Any], tuple[int, str, str, str, str]] = {}
    for c in parts:
        names = c["variants"]
        keys = c["keys"].tolist() if isinstance(c["keys"], np.ndarray) else c["keys"]
        for k, a in zip(keys, c["arms"].tolist(), strict=True):
            ident = (c["experiment"], c["phase"], k)
            rec = (c["time_ns"], names[a], c["hash_version"], c["checksum"], c["experiment"])
            old = best.get(ident)
            if old is None or rec < old:
                best[ident] = rec
    items = sorted(best.items(), key=lambda kv: (kv[1][0], kv[0][0], kv[0][1], str(kv[0][2])))
    cols: dict[str, list[Any]] = {c: [] for c in _COLUMNS}
    for (exp, phase, key), (t, arm, hv, cs, _) in items:
        for c, v in zip(_COLUMNS, (exp, phase, arm, key, hv, cs, t), strict=True):
            cols[c].append(v)
    keys_all = cols["key"]
    return {
        "experiment": np.array(cols["experiment"], dtype=object),
        "phase": np.array(cols["phase"], dtype=np.int64),
        "arm": np.array(cols["arm"], dtype=object),
        "key": (
            np.array(keys_all, dtype=np.int64)
            if all(isinstance(k, int) for k in keys_all)
            else np.array(keys_all, dtype=object)
        ),
        "hash_version": np.array(cols["hash_version"], dtype=object),
        "checksum": np.array(cols["checksum"], dtype=object),
        "time": np.array(cols["time"], dtype=np.int64).view("datetime64[ns]"),
    }


def to_frame(columns: dict[str, np.ndarray]) -> Any:
    """Exposure columns (``store.experiments.exposures()``) as a pandas DataFrame."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is in the test environment
        raise MissingDependencyError("to_frame needs pandas: pip install pandas") from None
    return pd.DataFrame({c: columns[c] for c in _COLUMNS})
