"""Vectorised, deterministic hashing of entity keys (the definitions are in
``mmfs/_kernels/mmfs_murmur.h``).

* :func:`murmur3_32` / :func:`murmur3_128`: MurmurHash3 x86_32 and x64_128 of each key,
  bit-exact with the ``mmh3`` package.  A key's bytes are its 8 little-endian bytes
  (int64) or its UTF-8 encoding (str).  With a ``salt`` the hashed message is
  ``uint32le(len(salt)) || salt || zeros to a multiple of 16 bytes || key``: the salt's
  length is part of the message, so salt "ab" with key "c" and salt "a" with key "bc"
  differ, and the kernels hash the salt once per call, not once per key.
* :func:`slots`: the slot in [0, 10000) of each key under a salt,
  ``(murmur3_32 * 10000) >> 32``.
* :func:`growthbook_hash`: GrowthBook's ``gbhash`` (FNV-1a 32 over UTF-16 code units;
  version 2 hashes twice, version 1 is the namespace hash), one float per key.

Keys are one key, a sequence, or a numpy array: int64-range integers, str (a numpy ``U``
array is read in place, without encoding every key first), or bytes (hashed as they
are; a numpy ``S`` array drops trailing NUL bytes, as numpy itself does).  Every function returns
the same values whatever ``n_threads`` is.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from mmfs._config import PARALLEL_GRAIN, effective_n_threads, threads_for
from mmfs._kernels import _assign
from mmfs.errors import ParameterError
from mmfs.storage.keyindex import _as_int_keys, _as_str_keys

__all__ = ["growthbook_hash", "murmur3_32", "murmur3_128", "slots"]

_WORK = 16  # per key, for the thread threshold (threads_for): 65,536 keys and up (at 10,000
# keys a second thread made assignment slower, 52 us against 41 us, on the 2-core VM)
_JS_SAFE = 2**53


class Keys(NamedTuple):
    """Keys in one of the kernels' three input forms."""

    form: str  # "int", "utf8" or "ucs4"
    args: tuple[np.ndarray, ...]
    n: int
    str_keys: bool


def as_keys(keys: Any) -> Keys:
    """``keys`` in the form the kernels read: int64, UTF-8 + offsets, or the UCS-4 code
    points of a numpy ``U`` array (viewed, not copied, when it is contiguous)."""
    kind = type(keys)
    if kind is int and -(2**63) <= keys < 2**63:  # one key: the online path
        return Keys("int", (np.array((keys,), dtype=np.int64),), 1, False)
    if kind is Keys:
        return keys
    if kind is bytes or isinstance(keys, bytearray):
        raw = bytes(keys)
        return Keys("utf8", (np.frombuffer(raw, np.uint8), np.array((0, len(raw)))), 1, True)
    if is_bytes(keys):
        return _bytes_keys(keys)
    if isinstance(keys, np.ndarray) and keys.dtype.kind == "U":
        a = np.ascontiguousarray(keys.reshape(-1))
        width = a.dtype.itemsize // 4
        chars = a.view(np.uint32).reshape(a.shape[0], width)
        return Keys("ucs4", (chars,), a.shape[0], True)
    if is_str(keys):
        data, offsets = _as_str_keys(keys)
        return Keys("utf8", (data, offsets), offsets.shape[0] - 1, True)
    q = _as_int_keys(keys)
    return Keys("int", (q,), q.shape[0], False)


def is_str(keys: Any) -> bool:
    if isinstance(keys, str):
        return True
    if isinstance(keys, np.ndarray):
        return keys.dtype.kind in "OT" and keys.size > 0 and isinstance(keys.flat[0], str)
    if isinstance(keys, list | tuple):
        return len(keys) > 0 and isinstance(keys[0], str)
    return False


def is_bytes(keys: Any) -> bool:
    if isinstance(keys, np.ndarray):
        return keys.dtype.kind == "S" or (
            keys.dtype.kind == "O" and keys.size > 0 and isinstance(keys.flat[0], bytes)
        )
    return isinstance(keys, list | tuple) and len(keys) > 0 and isinstance(keys[0], bytes)


def _bytes_keys(keys: Any) -> Keys:
    """bytes keys (a numpy ``S`` array -- numpy drops trailing NUL bytes, as it does when
    it hands an item out -- or a sequence of bytes) as UTF-8-form bytes and offsets."""
    if isinstance(keys, np.ndarray) and keys.dtype.kind == "S":
        a = np.ascontiguousarray(keys.reshape(-1))
        lengths = np.char.str_len(a).astype(np.int64)
        chars = a.view(np.uint8).reshape(a.shape[0], a.dtype.itemsize)
        data = chars[np.arange(a.dtype.itemsize) < lengths[:, None]]
    else:
        items = keys.reshape(-1).tolist() if isinstance(keys, np.ndarray) else list(keys)
        if not all(isinstance(k, bytes) for k in items):
            raise ParameterError("keys must be all bytes or all str, not a mix")
        lengths = np.fromiter(map(len, items), np.int64, len(items))
        data = np.frombuffer(b"".join(items), np.uint8)
    offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Keys("utf8", (np.ascontiguousarray(data), offsets), lengths.shape[0], True)


def n_threads_for(n: int, n_threads: int | None) -> int:
    if n_threads is None and n * _WORK < PARALLEL_GRAIN:  # no need to ask how many cores
        return 1
    return threads_for(effective_n_threads(n_threads), n * _WORK)


def _salt(salt: Any) -> bytes | None:
    if salt is None or isinstance(salt, bytes):
        return salt
    if isinstance(salt, str):
        return salt.encode()
    raise ParameterError(f"salt must be a str, bytes or None, got {salt!r}")


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ParameterError(f"seed must be an int in [0, 2**32), got {seed!r}")
    return int(seed)


def murmur3_32(
    keys: Any, salt: str | bytes | None = None, seed: int = 0, *, n_threads: int | None = None
) -> np.ndarray:
    """MurmurHash3 x86_32 of each key (uint32), with the salt encoding of the module
    docstring; ``salt=None`` hashes the key bytes alone, as ``mmh3.hash(key, seed,
    signed=False)`` does."""
    k = as_keys(keys)
    out = np.empty(k.n, dtype=np.uint32)
    fn = getattr(_assign, f"murmur32_{k.form}")
    fn(*k.args, _salt(salt), _seed(seed), out, n_threads_for(k.n, n_threads))
    return out


def murmur3_128(
    keys: Any, salt: str | bytes | None = None, seed: int = 0, *, n_threads: int | None = None
) -> np.ndarray:
    """MurmurHash3 x64_128 of each key as an (n, 2) uint64 array (h1, h2), equal to
    ``mmh3.hash64(key, seed, signed=False)``; the 128-bit value is ``h1 | h2 << 64``."""
    k = as_keys(keys)
    out = np.empty((k.n, 2), dtype=np.uint64)
    fn = getattr(_assign, f"murmur128_{k.form}")
    fn(*k.args, _salt(salt), _seed(seed), out, n_threads_for(k.n, n_threads))
    return out


def slots(keys: Any, salt: str | bytes, *, n_threads: int | None = None) -> np.ndarray:
    """The slot in [0, 10000) of each key under ``salt`` (uint16): the multiply-shift
    ``(murmur3_32(key, salt) * 10000) >> 32``."""
    k = as_keys(keys)
    out = np.empty(k.n, dtype=np.uint16)
    fn = getattr(_assign, f"slots_{k.form}")
    fn(*k.args, _salt(salt), out, n_threads_for(k.n, n_threads))
    return out


def utf16_units(text: str) -> np.ndarray:
    """The UTF-16 code units of ``text`` (astral characters as surrogate pairs)."""
    return np.frombuffer(text.encode("utf-16-le", "surrogatepass"), dtype="<u2").astype(np.uint16)


def gb_buckets(k: Keys, seed: str, version: int, n_threads: int | None = None) -> np.ndarray:
    """GrowthBook's integer bucket of each key: [0, 10000) for version 2, [0, 1000) for
    version 1 (gbhash times 10000 or 1000)."""
    if k.form == "int" and ((k.args[0] > _JS_SAFE) | (k.args[0] < -_JS_SAFE)).any():
        raise ParameterError(
            "GrowthBook hashes a number's JavaScript string: int keys beyond +-2**53 have "
            "none that is exact; pass them as str"
        )
    out = np.empty(k.n, dtype=np.uint16)
    fn = getattr(_assign, f"gb_bucket_{k.form}")
    fn(*k.args, utf16_units(seed), version, out, n_threads_for(k.n, n_threads))
    return out


def growthbook_hash(
    seed: str, keys: Any, version: int = 2, *, n_threads: int | None = None
) -> np.ndarray:
    """GrowthBook's ``gbhash(seed, str(key), version)`` of each key, as float64: version
    2 in [0, 1) in steps of 0.0001, version 1 (namespaces) in steps of 0.001.  int keys
    are hashed as their decimal string (JavaScript's ``String(n)``; |key| <= 2**53)."""
    if version not in (1, 2):
        raise ParameterError(f"GrowthBook hash version must be 1 or 2, got {version!r}")
    if not isinstance(seed, str):
        raise ParameterError(f"seed must be a str, got {seed!r}")
    b = gb_buckets(as_keys(keys), seed, version, n_threads)
    return b / (10000.0 if version == 2 else 1000.0)
