"""The key index of a feature group: entity key -> slot (row number), for int64 or str keys.

A :class:`KeyIndex` is an open-addressing hash table held in flat numpy arrays (the
design, the hash functions and the array layout are described at the top of
``mmfs/_kernels/_hash.pyx``).  Slots are handed out densely in order of first insertion:
the first new key gets 0, the next 1, ...; a key keeps its slot forever.

The arrays that define an index are :meth:`KeyIndex.arrays`; :meth:`KeyIndex.from_arrays`
turns them back into an index without copying them (a memory-mapped file works), after
checking them.  An index built that way is never modified in place: its first
:meth:`~KeyIndex.insert` copies the arrays, and growth always rebuilds into new arrays of
twice the capacity, so whoever holds the old arrays keeps a complete table.

Keys.
  * ``key_type="int64"``: any integer array, Python ints or numpy integer scalars within
    the int64 range.  Floats (even integral ones, and NaN), booleans, strings, None and
    unsigned values above 2**63 - 1 raise :class:`~mmfs.errors.ParameterError`.
  * ``key_type="str"``: a str, or a list/tuple/iterable or numpy array (dtype ``U``,
    ``T`` or object) of str.  A key is its UTF-8 encoding.  bytes are refused (decode
    them first) so that every stored key reads back as a str; None, numbers and mixed
    sequences raise :class:`~mmfs.errors.ParameterError`.  (A numpy ``U`` array cannot
    hold trailing NUL characters: numpy strips them before mmfs sees the keys.)

One key and many keys use the same call, and the result is always a 1-D int64 array:
``lookup(7)`` returns ``array([slot])``, the same as ``lookup([7])``.  A key array of more
than one dimension raises :class:`~mmfs.errors.DimensionError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any, Literal

import numpy as np

from mmfs._config import PARALLEL_GRAIN, effective_n_threads, threads_for
from mmfs._kernels import _hash
from mmfs.errors import CorruptStoreError, DimensionError, ParameterError

__all__ = ["KeyIndex"]

KeyType = Literal["int64", "str"]

_I64 = np.dtype(np.int64)
_I32 = np.dtype(np.int32)
_U64 = np.dtype(np.uint64)
_U8 = np.dtype(np.uint8)
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_MIN_CAPACITY = 16
_MAX_CAPACITY = 1 << 32  # slots are int32: at most 2**31 keys at load factor 1/2
# One probe (a cache miss or two) is worth this many inner-loop operations of the
# threads_for grain: batches below PARALLEL_GRAIN // _PROBE_WORK keys run on one thread.
_PROBE_WORK = 64
_PARALLEL_MIN = PARALLEL_GRAIN // _PROBE_WORK
_NO_INTS = np.zeros(1, dtype=_I64)
_NO_BYTES = np.zeros(0, dtype=_U8)

_LAYOUT: dict[str, dict[str, np.dtype]] = {
    "int64": {"keys": _I64, "slots": _I32},
    "str": {"hashes": _U64, "slots": _I32, "key_bytes": _U8, "key_offsets": _I64},
}


def _capacity_for(n_keys: int) -> int:
    """The smallest power of two >= 16 that holds n_keys at load factor 1/2."""
    return max(_MIN_CAPACITY, 1 << max(0, 2 * n_keys - 1).bit_length())


def _threads(n: int, n_threads: int | None) -> int:
    if n_threads is None and n < _PARALLEL_MIN:
        return 1
    return threads_for(effective_n_threads(n_threads), n * _PROBE_WORK)


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _as_int_keys(keys: Any) -> np.ndarray:
    """Keys as a C-contiguous 1-D int64 array (no copy when they already are one)."""
    if type(keys) is int:
        if _I64_MIN <= keys <= _I64_MAX:
            return np.array((keys,), dtype=_I64)
        raise ParameterError(f"keys must be in the int64 range, got {keys}")
    if isinstance(keys, str | bytes):
        raise ParameterError(
            f"keys must be integers (int64 range), got {type(keys).__name__} {keys!r}; "
            'this index has key_type="int64"'
        )
    try:
        arr = keys if isinstance(keys, np.ndarray) else np.asarray(keys)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ParameterError(f"keys must be integers (int64 range): {exc}") from None
    if arr.ndim > 1:
        raise DimensionError(f"keys must be a scalar or a 1-D sequence, got shape {arr.shape}")
    arr = arr.reshape(-1)
    kind = arr.dtype.kind
    if kind == "f" and not isinstance(keys, np.ndarray):
        # numpy turns [-1, 2**63] into float64: report the out-of-range int instead.
        objects = np.asarray(keys, dtype=object).reshape(-1)
        if all(_is_int(k) for k in objects.tolist()):
            arr, kind = objects, "O"
    if kind == "i" or arr.size == 0:
        return np.ascontiguousarray(arr, dtype=_I64)
    if kind == "u":
        if arr.max() > _I64_MAX:
            raise ParameterError(
                f"keys must be in the int64 range, got {arr.dtype} values up to {arr.max()}"
            )
        return arr.astype(_I64)
    if kind == "O":
        for i, k in enumerate(arr.tolist()):
            if not _is_int(k):
                raise ParameterError(
                    f"keys must be integers, got {type(k).__name__} {k!r} at position {i}"
                )
            if not _I64_MIN <= k <= _I64_MAX:
                raise ParameterError(f"keys must be in the int64 range, got {k} at position {i}")
        return arr.astype(_I64)
    if kind == "f":
        raise ParameterError(
            f"keys must be integers (int64 range), got {arr.dtype} (NaN keys are not allowed); "
            "convert integral floats with keys.astype(np.int64)"
        )
    raise ParameterError(f"keys must be integers (int64 range), got dtype {arr.dtype}")


def _not_unicode(exc: UnicodeEncodeError) -> ParameterError:
    return ParameterError(f"keys must be valid Unicode text (no lone surrogates): {exc}")


def _as_str_keys(keys: Any) -> tuple[np.ndarray, np.ndarray]:
    """Keys as (UTF-8 bytes, int64 offsets of n + 1 entries)."""
    if isinstance(keys, str):
        try:
            b = keys.encode()
        except UnicodeEncodeError as exc:
            raise _not_unicode(exc) from None
        return np.frombuffer(b, dtype=_U8), np.array((0, len(b)), dtype=_I64)
    if isinstance(keys, np.ndarray):
        if keys.ndim > 1:
            raise DimensionError(
                f"keys must be a str or a 1-D sequence of str, got shape {keys.shape}"
            )
        if keys.dtype.kind not in "UTO":
            raise ParameterError(
                f"keys must be str, got an array of dtype {keys.dtype}; "
                'this index has key_type="str"'
            )
        items: Any = keys.reshape(-1).tolist()
    elif isinstance(keys, list | tuple):
        items = keys
    elif isinstance(keys, bytes | bytearray) or not hasattr(keys, "__iter__"):
        raise ParameterError(
            f"keys must be str (bytes are refused: decode them first), got "
            f"{type(keys).__name__} {keys!r}"
        )
    else:
        items = list(keys)
    try:
        encoded = [k.encode() for k in items]
        blob = b"".join(encoded)
    except (AttributeError, TypeError):
        i, bad = next((i, k) for i, k in enumerate(items) if not isinstance(k, str))
        raise ParameterError(
            f"keys must all be str, got {type(bad).__name__} {bad!r} at position {i}"
        ) from None
    except UnicodeEncodeError as exc:
        raise _not_unicode(exc) from None
    offsets = np.zeros(len(encoded) + 1, dtype=_I64)
    np.cumsum(np.fromiter(map(len, encoded), _I64, len(encoded)), out=offsets[1:])
    return np.frombuffer(blob, dtype=_U8), offsets


class KeyIndex:
    """Entity key -> slot, for ``key_type="int64"`` or ``"str"`` keys.

    >>> ix = KeyIndex("str")
    >>> ix.insert(["ann", "bob", "ann"]).tolist()
    [0, 1, 0]
    >>> ix.lookup(["bob", "eve"]).tolist()
    [1, -1]

    ``expected_keys`` sizes the first table so that inserting that many keys never
    rebuilds it.
    """

    __slots__ = ("_bytes", "_cap", "_hashes", "_keys", "_n", "_offsets", "_owned", "_slots", "_str")

    def __init__(self, key_type: KeyType = "int64", *, expected_keys: int | np.integer = 0) -> None:
        if key_type not in _LAYOUT:
            raise ParameterError(f'key_type must be "int64" or "str", got {key_type!r}')
        if not _is_int(expected_keys) or expected_keys < 0:
            raise ParameterError(
                f"expected_keys must be a non-negative integer, got {expected_keys!r}"
            )
        if _capacity_for(int(expected_keys)) > _MAX_CAPACITY:
            raise ParameterError(f"a key index holds at most {_MAX_CAPACITY // 2} keys")
        self._str = key_type == "str"
        self._n = 0
        self._cap = _capacity_for(int(expected_keys))
        self._owned = True
        self._slots = np.full(self._cap, -1, dtype=_I32)
        self._keys = np.zeros(0 if self._str else self._cap, dtype=_I64)
        self._hashes = np.zeros(self._cap if self._str else 0, dtype=_U64)
        self._bytes = np.zeros(0, dtype=_U8)
        self._offsets = np.zeros(1, dtype=_I64)

    # -- reading -----------------------------------------------------------------------

    @property
    def key_type(self) -> KeyType:
        return "str" if self._str else "int64"

    @property
    def capacity(self) -> int:
        """Positions in the hash table (a power of two; at most half of them are used)."""
        return self._cap

    def __len__(self) -> int:
        return self._n

    def lookup(self, keys: Any, *, n_threads: int | None = None) -> np.ndarray:
        """The slot of each key, -1 where a key is absent (int64 array, one per key).

        Large batches run on ``n_threads`` OpenMP threads (None: every usable core);
        the result never depends on the thread count.
        """
        # One key (the online path): no key or output arrays, two kernel arguments fewer.
        if type(keys) is int and not self._str and _I64_MIN <= keys <= _I64_MAX:
            slot = _hash.lookup_int_one(self._keys, self._slots, self._n, keys)
            if slot < -1:
                raise self._corrupt("a lookup met a corrupt table")
            return np.array((slot,), dtype=_I64)
        if type(keys) is str and self._str:
            try:
                key = keys.encode()
            except UnicodeEncodeError as exc:
                raise _not_unicode(exc) from None
            slot = _hash.lookup_str_one(
                self._hashes, self._slots, self._bytes, self._offsets, self._n, key
            )
            if slot < -1:
                raise self._corrupt("a lookup met a corrupt table")
            return np.array((slot,), dtype=_I64)
        if self._str:
            qb, qo = _as_str_keys(keys)
            out = np.empty(qo.shape[0] - 1, dtype=_I64)
            bad = _hash.lookup_str(
                self._hashes, self._slots, self._bytes, self._offsets, self._n, qb, qo, out,
                _threads(out.shape[0], n_threads),
            )  # fmt: skip
        else:
            q = _as_int_keys(keys)
            out = np.empty(q.shape[0], dtype=_I64)
            bad = _hash.lookup_int(
                self._keys, self._slots, self._n, q, out, _threads(q.shape[0], n_threads)
            )
        if bad:
            raise self._corrupt(f"{bad} of {out.shape[0]} lookups met a corrupt table")
        return out

    def keys(self, start: int = 0, stop: int | None = None) -> np.ndarray | list[str]:
        """The keys of slots start..stop-1 (default: all), in slot order: an int64
        array, or a list of str (decoded from that range alone)."""
        stop = self._n if stop is None else min(stop, self._n)
        if self._str:
            bounds = self._offsets[start : stop + 1] - self._offsets[start]
            blob = self._bytes[self._offsets[start] : self._offsets[stop]].tobytes()
            bounds = bounds.tolist()
            try:
                return [blob[a:b].decode() for a, b in pairwise(bounds)]
            except UnicodeDecodeError as exc:
                raise self._corrupt(f"a stored key is not UTF-8 ({exc})") from None
        out = np.empty(self._n, dtype=_I64)
        used = self._slots >= 0
        out[self._slots[used]] = self._keys[used]
        return out if start == 0 and stop == self._n else out[start:stop].copy()

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that define this index, as read-only views (not copies).

        int64: ``keys`` int64[capacity], ``slots`` int32[capacity] (-1 = empty).
        str: ``hashes`` uint64[capacity], ``slots`` int32[capacity],
        ``key_bytes`` uint8[total bytes], ``key_offsets`` int64[len + 1].
        The views show the index as it is now; an insert may change them in place or,
        when it grows the table, leave them describing the old table.
        """
        if self._str:
            named = {
                "hashes": self._hashes,
                "slots": self._slots,
                "key_bytes": self._bytes[: self._offsets[self._n]],
                "key_offsets": self._offsets[: self._n + 1],
            }
        else:
            named = {"keys": self._keys, "slots": self._slots}
        views = {}
        for name, a in named.items():
            v = a.view()
            v.flags.writeable = False
            views[name] = v
        return views

    # -- writing -----------------------------------------------------------------------

    def insert(self, keys: Any) -> np.ndarray:
        """Give every key a slot and return the slots (int64 array, one per key).

        A key already present keeps its slot; new keys get the next free slots in order
        of first appearance (a key repeated in the batch gets one slot).  Bad input
        raises before anything changes.
        """
        q, qb, qo = _NO_INTS, _NO_BYTES, _NO_INTS  # the arrays of the other key type
        if self._str:
            qb, qo = _as_str_keys(keys)
            m = qo.shape[0] - 1
        else:
            q = _as_int_keys(keys)
            m = q.shape[0]
        if not self._owned:
            self._own()
        out = np.empty(m, dtype=_I64)
        start = 0
        while True:
            if self._str:
                status, start, self._n = _hash.insert_str(
                    self._hashes, self._slots, self._bytes, self._offsets, self._n, qb, qo,
                    start, out,
                )  # fmt: skip
            else:
                status, start, self._n = _hash.insert_int(
                    self._keys, self._slots, self._n, q, start, out
                )
            if status == _hash.INSERT_DONE:
                return out
            if status == _hash.INSERT_GROW_TABLE:
                self._grow()
            elif status == _hash.INSERT_GROW_ARENA:
                self._grow_arena(int(qo[m] - qo[start]), m - start)
            else:
                raise self._corrupt("an insert met a corrupt table")

    def _own(self) -> None:
        """Copy arrays that came from from_arrays (perhaps a mapped file) before writing."""
        self._slots = self._slots.copy()
        if self._str:
            self._hashes = self._hashes.copy()
            self._bytes = self._bytes[: self._offsets[self._n]].copy()
            self._offsets = self._offsets[: self._n + 1].copy()
        else:
            self._keys = self._keys.copy()
        self._owned = True

    def _grow(self) -> None:
        """Rebuild into a new table of twice the capacity (the old arrays stay valid)."""
        cap = 2 * self._cap
        if cap > _MAX_CAPACITY:
            raise ParameterError(f"a key index holds at most {_MAX_CAPACITY // 2} keys")
        slots = np.full(cap, -1, dtype=_I32)
        if self._str:
            hashes = np.zeros(cap, dtype=_U64)
            _hash.rehash_str(self._hashes, self._slots, hashes, slots)
            self._hashes = hashes
        else:
            keys = np.zeros(cap, dtype=_I64)
            _hash.rehash_int(self._keys, self._slots, keys, slots)
            self._keys = keys
        self._slots = slots
        self._cap = cap

    def _grow_arena(self, more_bytes: int, more_keys: int) -> None:
        """Room in key_bytes/key_offsets for the rest of a batch (amortised doubling)."""
        used = int(self._offsets[self._n])
        if used + more_bytes > self._bytes.shape[0]:
            grown = np.empty(max(2 * self._bytes.shape[0], used + more_bytes), dtype=_U8)
            grown[:used] = self._bytes[:used]
            self._bytes = grown
        if self._n + more_keys + 1 > self._offsets.shape[0]:
            grown = np.empty(max(2 * self._offsets.shape[0], self._n + more_keys + 1), _I64)
            grown[: self._n + 1] = self._offsets[: self._n + 1]
            self._offsets = grown

    # -- arrays in ---------------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        key_type: KeyType,
        *,
        validate: bool = True,
        n_keys: int | None = None,
    ) -> KeyIndex:
        """An index over ``arrays`` (as returned by :meth:`arrays`), without copying them.

        Shapes, dtypes and the power-of-two capacity are always checked, so lookups are
        memory-safe whatever the contents; a probe that meets a corrupt table raises
        :class:`~mmfs.errors.CorruptStoreError` instead of looping or reading outside the
        arrays.  ``validate=True`` (the default) also checks every invariant up front,
        in O(capacity + key bytes): slots are -1 or a permutation of 0..n-1, offsets rise
        monotonically, every stored hash is the hash of its key, and every key is found
        by a lookup (no duplicates, no empty position on its probe path).  Any failure
        raises CorruptStoreError.

        ``n_keys`` (int64 keys): the number of keys, when the caller knows it (a store's
        manifest does); otherwise the occupied positions are counted, O(capacity).  A
        wrong count cannot make a probe unsafe (a slot >= n_keys reads as corruption), and
        ``validate=True`` checks it.
        """
        if key_type not in _LAYOUT:
            raise ParameterError(f'key_type must be "int64" or "str", got {key_type!r}')
        if not isinstance(arrays, Mapping):
            raise ParameterError(f"arrays must be a mapping of name -> array, got {arrays!r}")
        layout = _LAYOUT[key_type]
        if set(arrays) != set(layout):
            raise CorruptStoreError(
                f"a {key_type} key index is made of the arrays {sorted(layout)}, "
                f"got {sorted(arrays)}"
            )
        for name, dtype in layout.items():
            a = arrays[name]
            if not isinstance(a, np.ndarray) or a.dtype != dtype or a.dtype.byteorder == ">":
                got = f"{type(a).__name__} of dtype {getattr(a, 'dtype', None)}"
                raise CorruptStoreError(f"key index array {name!r} must be {dtype}, got {got}")
            if a.ndim != 1 or not a.flags.c_contiguous:
                raise CorruptStoreError(
                    f"key index array {name!r} must be 1-D and contiguous, got shape {a.shape}"
                )
        self = cls.__new__(cls)
        self._str = key_type == "str"
        self._owned = False
        self._slots = slots = arrays["slots"]
        self._cap = cap = slots.shape[0]
        if cap < 1 or cap & (cap - 1):
            raise self._corrupt(f"capacity {cap} is not a power of two")
        self._keys = arrays.get("keys", np.zeros(0, _I64))
        self._hashes = arrays.get("hashes", np.zeros(0, _U64))
        table = self._hashes if self._str else self._keys
        if table.shape[0] != cap:
            raise self._corrupt(f"{table.shape[0]} keys/hashes for {cap} slots")
        if self._str:
            self._bytes = kb = arrays["key_bytes"]
            self._offsets = ko = arrays["key_offsets"]
            self._n = n = ko.shape[0] - 1
            if n < 0 or ko[0] != 0 or not 0 <= ko[n] <= kb.shape[0]:
                raise self._corrupt("key_offsets must start at 0 and end within key_bytes")
        else:
            self._bytes = np.zeros(0, dtype=_U8)
            self._offsets = np.zeros(1, dtype=_I64)
            if n_keys is not None and (type(n_keys) is not int or n_keys < 0):
                raise ParameterError(f"n_keys must be a non-negative int, got {n_keys!r}")
            self._n = n = int(np.count_nonzero(slots >= 0)) if n_keys is None else n_keys
        if 2 * n > cap:
            raise self._corrupt(f"{n} keys in {cap} positions (the load factor is at most 1/2)")
        if validate:
            self._validate(slots >= 0)
        return self

    def _validate(self, occupied: np.ndarray) -> None:
        slots, n = self._slots, self._n
        used = slots[occupied]
        if used.shape[0] != n:
            raise self._corrupt(f"{used.shape[0]} occupied positions for {n} keys")
        if np.any(slots < -1) or np.any(used >= n):
            raise self._corrupt(f"slots must be -1 (empty) or in [0, {n})")
        if n and np.bincount(used, minlength=n).max() > 1:
            raise self._corrupt("two positions hold the same slot")
        nt = _threads(self._cap, None)
        if self._str:
            if np.any(np.diff(self._offsets) < 0):
                raise self._corrupt("key_offsets are not monotone")
            bad = _hash.verify_str(self._hashes, slots, self._bytes, self._offsets, nt)
        else:
            bad = _hash.verify_int(self._keys, slots, n, nt)
        if bad:
            raise self._corrupt(
                f"{bad} keys are not found where they are stored (wrong hash, duplicate, "
                "or an empty position on the probe path)"
            )

    def _corrupt(self, what: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"{self.key_type} key index (capacity {self._cap}) is corrupt: {what}. "
            "Rebuild it from its keys, or restore the store from a copy."
        )
