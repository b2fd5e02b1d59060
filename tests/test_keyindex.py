"""The key index (mmfs.storage.keyindex, kernels in mmfs._kernels._hash) against a dict."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfs._kernels import _hash
from mmfs.errors import CorruptStoreError, DimensionError, ParameterError
from mmfs.storage import keyindex as keyindex_module
from mmfs.storage.keyindex import KeyIndex

SEED = 20261127
M64 = (1 << 64) - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


# -- references -----------------------------------------------------------------------


def fmix64_ref(k: int) -> int:
    k &= M64
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & M64
    return k ^ (k >> 33)


def fmix64_inverse(h: int) -> int:
    """The int64 key whose fmix64 is h (x ^= x >> 33 is its own inverse)."""
    h ^= h >> 33
    h = (h * pow(0xC4CEB9FE1A85EC53, -1, 1 << 64)) & M64
    h ^= h >> 33
    h = (h * pow(0xFF51AFD7ED558CCD, -1, 1 << 64)) & M64
    h ^= h >> 33
    return h - (1 << 64) if h >= 1 << 63 else h


P1, P2, P3, P4, P5 = (
    0x9E3779B185EBCA87,
    0xC2B2AE3D27D4EB4F,
    0x165667B19E3779F9,
    0x85EBCA77C2B2AE63,
    0x27D4EB2F165667C5,
)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & M64


def _round(acc: int, v: int) -> int:
    return (_rotl((acc + v * P2) & M64, 31) * P1) & M64


def xxh64_ref(data: bytes) -> int:
    """XXH64, seed 0, straight from the specification (an independent transcription)."""
    n, p = len(data), 0

    def u64(i: int) -> int:
        return int.from_bytes(data[i : i + 8], "little")

    if n >= 32:
        v = [(P1 + P2) & M64, P2, 0, (-P1) & M64]
        while p + 32 <= n:
            v = [_round(v[i], u64(p + 8 * i)) for i in range(4)]
            p += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & M64
        for x in v:
            h = ((h ^ _round(0, x)) * P1 + P4) & M64
    else:
        h = P5
    h = (h + n) & M64
    while p + 8 <= n:
        h = (_rotl(h ^ _round(0, u64(p)), 27) * P1 + P4) & M64
        p += 8
    if p + 4 <= n:
        h = (_rotl(h ^ (int.from_bytes(data[p : p + 4], "little") * P1 & M64), 23) * P2 + P3) & M64
        p += 4
    while p < n:
        h = (_rotl(h ^ (data[p] * P5 & M64), 11) * P1) & M64
        p += 1
    h = ((h ^ (h >> 33)) * P2) & M64
    h = ((h ^ (h >> 29)) * P3) & M64
    return h ^ (h >> 32)


def check_against(ix: KeyIndex, model: dict[Any, int], probes: list[Any]) -> None:
    """Every key of the model and every probe gives the model's slot (or -1)."""
    keys = list(model) + probes
    got = ix.lookup(keys if ix.key_type == "str" else np.array(keys, dtype=np.int64))
    assert got.dtype == np.int64
    assert got.tolist() == [model.get(k, -1) for k in keys]
    assert len(ix) == len(model)
    assert 2 * len(ix) <= ix.capacity
    assert ix.capacity & (ix.capacity - 1) == 0
    stored = ix.keys()
    assert list(stored) == list(model)  # slot order = order of first insertion


def insert_model(model: dict[Any, int], keys: list[Any]) -> list[int]:
    return [model.setdefault(k, len(model)) for k in keys]


# -- hash functions ---------------------------------------------------------------------


def test_xxh64_known_values_and_reference() -> None:
    def xxh(b: bytes) -> int:
        return _hash.xxh64(np.frombuffer(b, dtype=np.uint8))

    # Published XXH64 values (seed 0): these pin the function for stored tables.
    assert xxh(b"") == 0xEF46DB3751D8E999
    assert xxh(b"a") == 0xD24EC4F1A98C6E5B
    assert xxh(b"abc") == 0x44BC2CF5AD770999
    assert xxh(b"Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1
    rng = np.random.default_rng(SEED)
    for n in [*range(70), 100, 1000]:  # every tail length, one and several stripes
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert xxh(data) == xxh64_ref(data), n


def test_fmix64_matches_reference_and_inverse() -> None:
    for k in [0, 1, -1, I64_MIN, I64_MAX, 12345, -987654321]:
        assert _hash.fmix64(k) == fmix64_ref(k)
        assert fmix64_inverse(fmix64_ref(k)) == k


# -- int64 keys ---------------------------------------------------------------------------


def _int_patterns() -> dict[str, list[int]]:
    rng = np.random.default_rng(SEED)
    extremes = [I64_MIN, I64_MAX, 0, -1, 1, I64_MIN + 1, I64_MAX - 1]
    rand = rng.integers(I64_MIN, I64_MAX, 3000, dtype=np.int64, endpoint=True).tolist()
    return {
        "random+extremes": extremes + rand + extremes,
        "sequential": list(range(-500, 4000)),
        "low-bits-equal": [i << 40 for i in range(-1000, 1000)],
        # Keys whose hashes agree in the low 24 bits: one probe chain for any capacity
        # up to 2**24, the worst case of linear probing.
        "hash-collisions": [fmix64_inverse((j << 24) | 0xABCDE) for j in range(400)],
    }


@pytest.mark.parametrize("pattern", list(_int_patterns()))
@pytest.mark.parametrize("batch", [1, 7, 1000, 10**6])
def test_int_keys_against_dict(pattern: str, batch: int) -> None:
    keys = _int_patterns()[pattern]
    ix, model = KeyIndex("int64"), {}
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        assert ix.insert(np.array(chunk, dtype=np.int64)).tolist() == insert_model(model, chunk)
    rng = np.random.default_rng(SEED + 1)
    missing = [k for k in rng.integers(-(10**6), 10**6, 300).tolist() if k not in model]
    check_against(ix, model, missing)


def test_growth_across_doublings_one_key_at_a_time() -> None:
    ix = KeyIndex("int64")
    caps = []
    for i in range(2000):
        assert ix.insert(3 * i - 1000).tolist() == [i]
        caps.append(ix.capacity)
    assert sorted(set(caps)) == [16 << d for d in range(9)]  # 16, 32, ..., 4096
    assert ix.capacity == 4096
    assert ix.lookup(np.arange(-1000, 5000, 3)).tolist() == list(range(2000))
    before = ix.arrays()  # views: filled in place up to the load limit, then left behind
    ix.insert(np.arange(10**5, 10**5 + 3000))  # grows: the old arrays stay a valid table
    old = KeyIndex.from_arrays(before, "int64")
    assert len(old) == 2048
    assert old.lookup(np.arange(-1000, 5000, 3)).tolist() == list(range(2000))
    assert old.lookup(np.arange(10**5, 10**5 + 3000)).tolist() == [
        *range(2000, 2048),
        *[-1] * 2952,
    ]
    assert len(ix) == 5000


def test_expected_keys_presizes() -> None:
    ix = KeyIndex("int64", expected_keys=1000)
    assert ix.capacity == 2048
    ix.insert(np.arange(1000))
    assert ix.capacity == 2048
    assert KeyIndex("str", expected_keys=0).capacity == 16
    assert KeyIndex(expected_keys=np.int64(9)).capacity == 32


def test_duplicates_within_one_batch_get_one_slot() -> None:
    ix = KeyIndex()
    assert ix.insert([5, 7, 5, 5, 9, 7]).tolist() == [0, 1, 0, 0, 2, 1]
    assert ix.insert([9, 11, 11, 5]).tolist() == [2, 3, 3, 0]
    assert len(ix) == 4
    s = KeyIndex("str")
    assert s.insert(["b", "a", "b", "", ""]).tolist() == [0, 1, 0, 2, 2]
    assert s.keys() == ["b", "a", ""]


def test_missing_and_empty() -> None:
    ix = KeyIndex()
    assert ix.lookup([1, 2, 3]).tolist() == [-1, -1, -1]  # empty index
    assert ix.lookup([]).shape == (0,)
    assert ix.insert([]).shape == (0,)
    assert ix.lookup(np.array([], dtype=np.float64)).shape == (0,)
    s = KeyIndex("str")
    assert s.lookup(["x", ""]).tolist() == [-1, -1]
    assert s.lookup([]).shape == (0,)
    assert s.insert([]).shape == (0,)
    assert s.keys() == []
    assert len(ix.keys()) == 0


def test_scalar_keys_return_one_element_arrays() -> None:
    ix = KeyIndex()
    ix.insert([10, 20, 30])
    for key in [20, np.int64(20), np.int32(20), np.uint8(20), np.array(20)]:
        got = ix.lookup(key)
        assert got.dtype == np.int64
        assert got.shape == (1,)
        assert got.tolist() == [1]
    assert ix.lookup(99).tolist() == [-1]
    assert ix.insert(40).tolist() == [3]
    s = KeyIndex("str")
    s.insert(["u", "é"])
    assert s.lookup("é").tolist() == [1]
    assert s.lookup(np.str_("u")).tolist() == [0]
    assert s.lookup("missing").tolist() == [-1]
    assert s.insert("new").tolist() == [2]


@pytest.mark.parametrize(
    "keys",
    [
        [1, 2, 3],
        (1, 2, 3),
        np.array([1, 2, 3], dtype=np.int8),
        np.array([1, 2, 3], dtype=np.uint64),
        np.array([1, 2, 3], dtype=np.int32)[::-1][::-1],
        np.array([1, 2, 3], dtype=object),
        np.array([np.int16(1), 2, np.uint32(3)], dtype=object),
        np.array([[1, 2, 3]]).T[:, 0],  # non-contiguous view
    ],
)
def test_int_keys_from_any_integer_input(keys: Any) -> None:
    ix = KeyIndex()
    ix.insert(np.array([3, 2, 1]))
    assert ix.lookup(keys).tolist() == [2, 1, 0]


def test_int_extreme_values_through_every_input() -> None:
    ix = KeyIndex()
    ix.insert([I64_MIN, I64_MAX])
    assert ix.lookup(I64_MIN).tolist() == [0]
    assert ix.lookup([I64_MAX, I64_MIN]).tolist() == [1, 0]
    assert ix.lookup(np.array([I64_MAX], dtype=np.uint64)).tolist() == [1]


# -- str keys -------------------------------------------------------------------------------


def _str_patterns() -> dict[str, list[str]]:
    rng = np.random.default_rng(SEED)
    base = "x" * 300
    return {
        "mixed": [
            "",
            "a",
            "é",
            "日本語",
            "🙂",
            "a\x00b",
            "\x00",
            "A" * 10_000,
            "A" * 10_001,
            *(f"user-{i}" for i in range(2000)),
        ],
        # keys that differ in exactly one byte, at the start, middle and end
        "one-byte-apart": [
            base[:i] + c + base[i + 1 :] for i in (0, 7, 8, 31, 32, 150, 299) for c in "xyz"
        ],
        "random": [
            "".join(chr(c) for c in rng.integers(32, 0x3000, rng.integers(0, 40)))
            for _ in range(2000)
        ],
        "prefixes": ["k" * i for i in range(300)],
    }


@pytest.mark.parametrize("pattern", list(_str_patterns()))
@pytest.mark.parametrize("batch", [1, 50, 10**6])
def test_str_keys_against_dict(pattern: str, batch: int) -> None:
    keys = _str_patterns()[pattern]
    ix, model = KeyIndex("str"), {}
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        assert ix.insert(chunk).tolist() == insert_model(model, chunk)
    check_against(ix, model, ["missing", "user-", "A" * 9_999, "e\u0301", "x" * 301])


@pytest.mark.parametrize(
    "make",
    [
        list,
        tuple,
        iter,
        lambda k: np.array(k),
        lambda k: np.array(k, dtype=object),
        lambda k: np.array(k, dtype=np.dtypes.StringDType()),
    ],
)
def test_str_keys_from_every_container(make: Any) -> None:
    ix = KeyIndex("str")
    ix.insert(["b", "aa", "é"])
    assert ix.lookup(make(["é", "b", "zz"])).tolist() == [2, 0, -1]


# -- arrays round trip ------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["int64", "str"])
def test_arrays_round_trip(key_type: Any, tmp_path: Any) -> None:
    rng = np.random.default_rng(SEED)
    ints = rng.integers(I64_MIN, I64_MAX, 5000, dtype=np.int64)
    keys: Any = [f"k{i}é" for i in ints.tolist()] if key_type == "str" else ints
    ix = KeyIndex(key_type)
    ix.insert(keys)
    arrays = ix.arrays()
    assert all(not a.flags.writeable for a in arrays.values())
    back = KeyIndex.from_arrays(arrays, key_type)
    assert len(back) == len(ix)
    assert back.capacity == ix.capacity
    probes = keys[::3] if key_type == "int64" else [*keys[::3], "nope"]
    assert np.array_equal(back.lookup(probes), ix.lookup(probes))
    # Through files and read-only memory maps, as a store will hold them.
    mapped = {}
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)
        mapped[name] = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
    reader = KeyIndex.from_arrays(mapped, key_type)
    assert np.array_equal(reader.lookup(probes), ix.lookup(probes))
    # Writing to an index over mapped arrays copies them first: the files never change.
    new = ["fresh"] if key_type == "str" else [12345]
    assert reader.insert(new).tolist() == [len(ix)]
    assert reader.insert(keys[:5]).tolist() == ix.lookup(keys[:5]).tolist()
    for name, a in arrays.items():
        assert np.array_equal(np.load(tmp_path / f"{name}.npy"), a)
    assert KeyIndex.from_arrays(mapped, key_type).lookup(new).tolist() == [-1]


def test_str_arena_grows_in_place_and_keeps_old_views() -> None:
    ix = KeyIndex("str")
    ix.insert(["a" * 100])
    view = ix.arrays()
    ix.insert([f"{i}" * 50 for i in range(200)])  # the arena is append-only
    assert bytes(view["key_bytes"]) == b"a" * 100
    assert view["key_offsets"].tolist() == [0, 100]
    assert ix.lookup([f"{i}" * 50 for i in range(200)]).tolist() == list(range(1, 201))


# -- corrupted tables -------------------------------------------------------------------------


def _int_arrays() -> dict[str, np.ndarray]:
    ix = KeyIndex()
    ix.insert(np.arange(0, 300, 3))
    return {k: v.copy() for k, v in ix.arrays().items()}


def _str_arrays() -> dict[str, np.ndarray]:
    ix = KeyIndex("str")
    ix.insert([f"key{i}" for i in range(100)])
    return {k: v.copy() for k, v in ix.arrays().items()}


def _occupied(a: dict[str, np.ndarray]) -> np.ndarray:
    return np.flatnonzero(a["slots"] >= 0)


def _corruptions() -> dict[str, tuple[Any, Any]]:
    def edit(key_type: str, fn: Any) -> tuple[Any, Any]:
        return key_type, fn

    def full(a: dict[str, np.ndarray]) -> None:
        a["slots"][:] = np.arange(a["slots"].shape[0])

    def set_slot(value: int) -> Any:
        def f(a: dict[str, np.ndarray]) -> None:
            a["slots"][_occupied(a)[3]] = value

        return f

    def dup_slot(a: dict[str, np.ndarray]) -> None:
        occ = _occupied(a)
        a["slots"][occ[3]] = a["slots"][occ[4]]

    def dup_key(a: dict[str, np.ndarray]) -> None:
        occ = _occupied(a)
        a["keys"][occ[3]] = a["keys"][occ[4]]

    def move_key(a: dict[str, np.ndarray]) -> None:
        """A key moved to an empty position off its probe path: unreachable."""
        i = _occupied(a)[0]
        j = int(np.flatnonzero(a["slots"] < 0)[-1])
        if j == i + 1:
            j = int(np.flatnonzero(a["slots"] < 0)[-2])
        for name in ("keys", "hashes", "slots"):
            if name in a:
                a[name][j] = a[name][i]
        a["slots"][i] = -1

    def wrong_hash(a: dict[str, np.ndarray]) -> None:
        a["hashes"][_occupied(a)[5]] ^= 1 << 40

    def offsets(fn: Any) -> Any:
        def f(a: dict[str, np.ndarray]) -> None:
            fn(a["key_offsets"])

        return f

    def drop(name: str) -> Any:
        return lambda a: a.pop(name)

    def retype(name: str, dtype: Any) -> Any:
        def f(a: dict[str, np.ndarray]) -> None:
            a[name] = a[name].astype(dtype)

        return f

    def swap(o: np.ndarray) -> None:
        o[10], o[11] = o[11], o[10]

    return {
        "int full table": edit("int64", full),
        "int slot out of range": edit("int64", set_slot(10**6)),
        "int slot below -1": edit("int64", set_slot(-5)),
        "int duplicate slot": edit("int64", dup_slot),
        "int duplicate key": edit("int64", dup_key),
        "int unreachable key": edit("int64", move_key),
        "int wrong dtype": edit("int64", retype("keys", np.int32)),
        "int big-endian": edit("int64", retype("slots", ">i8")),
        "int not an array": edit("int64", lambda a: a.update(keys=a["keys"].tolist())),
        "int 2-D": edit("int64", lambda a: a.update(keys=a["keys"].reshape(2, -1))),
        "int strided": edit("int64", lambda a: a.update(keys=np.repeat(a["keys"], 2)[::2])),
        "int not power of two": edit("int64", lambda a: a.update(
            keys=a["keys"][:100].copy(), slots=a["slots"][:100].copy())),
        "int length mismatch": edit("int64", lambda a: a.update(keys=a["keys"][:128].copy())),
        "int empty table": edit("int64", lambda a: a.update(
            keys=np.zeros(0, np.int64), slots=np.zeros(0, np.int64))),
        "int missing array": edit("int64", drop("keys")),
        "int extra array": edit("int64", lambda a: a.update(extra=a["keys"])),
        "str full table": edit("str", full),
        "str slot out of range": edit("str", set_slot(100)),
        "str duplicate slot": edit("str", dup_slot),
        "str wrong hash": edit("str", wrong_hash),
        "str unreachable key": edit("str", move_key),
        "str offsets not monotone": edit("str", offsets(swap)),
        "str offsets start": edit("str", offsets(lambda o: o.__setitem__(0, 1))),
        "str offsets past bytes": edit("str", offsets(lambda o: o.__setitem__(-1, 10**6))),
        "str no offsets": edit("str", lambda a: a.update(key_offsets=np.zeros(0, np.int64))),
        "str wrong dtype": edit("str", retype("key_bytes", np.int8)),
        "str count mismatch": edit("str", lambda a: a.update(
            key_offsets=a["key_offsets"][:-1].copy())),
    }  # fmt: skip


@pytest.mark.parametrize("case", list(_corruptions()))
def test_corrupt_tables_raise(case: str) -> None:
    key_type, fn = _corruptions()[case]
    arrays = _int_arrays() if key_type == "int64" else _str_arrays()
    fn(arrays)
    with pytest.raises(CorruptStoreError, match="key index"):
        KeyIndex.from_arrays(arrays, key_type)


@pytest.mark.parametrize("key_type", ["int64", "str"])
def test_unvalidated_corrupt_tables_raise_on_use_never_hang(key_type: Any) -> None:
    arrays = _int_arrays() if key_type == "int64" else _str_arrays()
    n = len(_occupied(arrays))
    # Slots out of range, on every position: no probe can end at an empty position.
    arrays["slots"][_occupied(arrays)] = 10**6
    ix = KeyIndex.from_arrays(arrays, key_type, validate=False)
    probe: Any = [f"key{i}" for i in range(300)] if key_type == "str" else np.arange(0, 900, 3)
    with pytest.raises(CorruptStoreError, match="lookups met a corrupt table"):
        ix.lookup(probe)
    with pytest.raises(CorruptStoreError, match="lookups met a corrupt table"):
        ix.lookup(probe, n_threads=2)
    with pytest.raises(CorruptStoreError, match="a lookup met a corrupt table"):
        ix.lookup(probe[3] if key_type == "str" else int(probe[3]))
    with pytest.raises(CorruptStoreError, match="an insert met a corrupt table"):
        ix.insert(probe)
    assert n == 100


def test_unvalidated_full_str_table_is_bounded() -> None:
    arrays = _str_arrays()
    arrays["slots"][:] = 0  # every position occupied: a missing key finds no empty position
    ix = KeyIndex.from_arrays(arrays, "str", validate=False)
    assert ix.lookup("key0").tolist() == [0]
    with pytest.raises(CorruptStoreError):
        ix.lookup("absent")
    with pytest.raises(CorruptStoreError):
        ix.insert(["absent"])


def test_kernels_bounded_on_a_full_table() -> None:
    cap = 64
    tk = np.arange(cap, dtype=np.int64)
    ts = np.arange(cap, dtype=np.int32)  # full: no empty position anywhere
    q = np.array([10**9, 5, -3], dtype=np.int64)
    out = np.empty(3, np.int64)
    assert _hash.lookup_int(tk, ts, cap, q, out, 1) == 2
    assert out.tolist() == [-1, 5, -1]
    assert _hash.lookup_int_one(tk, ts, cap, 10**9) == -2
    status, stop, n = _hash.insert_int(tk, ts, cap, q, 0, out)
    assert (status, stop, n) == (_hash.INSERT_CORRUPT, 0, cap)
    th = np.zeros(cap, np.uint64)
    kb = np.zeros(0, np.uint8)
    ko = np.zeros(cap + 1, np.int64)
    qo = np.array([0, 1], np.int64)
    qb = np.array([65], np.uint8)
    out1 = np.empty(1, np.int64)
    assert _hash.lookup_str(th, ts, kb, ko, cap, qb, qo, out1, 1) == 1
    assert _hash.lookup_str_one(th, ts, kb, ko, cap, b"A") == -2
    assert _hash.insert_str(th, ts, kb, ko, cap, qb, qo, 0, out1)[0] == _hash.INSERT_CORRUPT
    # Inconsistent arena bounds are refused before any probe.
    assert _hash.lookup_str(th, ts, kb, ko, cap + 5, qb, qo, out1, 1) == 1
    assert _hash.lookup_str_one(th, ts, kb, ko, cap + 5, b"A") == -2
    assert _hash.insert_str(th, ts, kb, ko, cap + 5, qb, qo, 0, out1)[0] == _hash.INSERT_CORRUPT
    bad_end = ko.copy()
    bad_end[-1] = 7
    assert _hash.lookup_str(th, ts, kb, bad_end, cap, qb, qo, out1, 1) == 1
    assert _hash.lookup_str_one(th, ts, kb, bad_end, cap, b"A") == -2
    assert _hash.insert_str(th, ts, kb, bad_end, cap, qb, qo, 0, out1)[0] == _hash.INSERT_CORRUPT


def test_stored_key_not_utf8() -> None:
    arrays = _str_arrays()
    arrays["key_bytes"][0] = 0xFF  # key0's bytes change: its hash no longer matches
    with pytest.raises(CorruptStoreError):
        KeyIndex.from_arrays(arrays, "str")
    ix = KeyIndex.from_arrays(arrays, "str", validate=False)
    with pytest.raises(CorruptStoreError, match="not UTF-8"):
        ix.keys()


# -- threads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["int64", "str"])
def test_thread_counts_agree(key_type: Any) -> None:
    rng = np.random.default_rng(SEED)
    ints = rng.integers(-(10**12), 10**12, 60_000, dtype=np.int64)
    keys: Any = [str(k) for k in ints.tolist()] if key_type == "str" else ints
    ix = KeyIndex(key_type)
    ix.insert(keys[:40_000])
    one = ix.lookup(keys, n_threads=1)
    assert np.array_equal(one, ix.lookup(keys, n_threads=2))
    assert np.array_equal(one, ix.lookup(keys))  # None: every core
    assert (one[:40_000] >= 0).all()
    # A validated round trip of a large table runs the verify kernels on threads.
    assert len(KeyIndex.from_arrays(ix.arrays(), key_type)) == len(ix)
    with pytest.raises(ParameterError, match="n_threads"):
        ix.lookup(keys[:3], n_threads=0)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "error", "match"),
    [
        (np.array([1.0, np.nan]), ParameterError, r"got float64 \(NaN keys are not allowed\)"),
        ([1.5, 2.0], ParameterError, "got float64"),
        (1.0, ParameterError, "got float64"),
        (np.array([1, 2], dtype=np.float32), ParameterError, "got float32"),
        ([True, False], ParameterError, "dtype bool"),
        (True, ParameterError, "dtype bool"),
        ([1, None], ParameterError, "NoneType None at position 1"),
        (None, ParameterError, "NoneType None at position 0"),
        ([1, 2.5, None], ParameterError, "float 2.5 at position 1"),
        ([1, "a"], ParameterError, "dtype <U21"),
        ("abc", ParameterError, 'key_type="int64"'),
        (b"abc", ParameterError, "bytes"),
        (2**63, ParameterError, "int64 range"),
        (-(2**63) - 1, ParameterError, "int64 range"),
        ([2**64], ParameterError, "int64 range, got 18446744073709551616 at position 0"),
        ([-1, 2**63], ParameterError, "int64 range, got 9223372036854775808 at position 1"),
        (np.array([2**63], dtype=np.uint64), ParameterError, "uint64 values up to"),
        ([[1, 2], [3, 4]], DimensionError, r"shape \(2, 2\)"),
        ([[1], [2, 3]], ParameterError, "int64 range"),
        (np.array(["a"]), ParameterError, "dtype <U1"),
    ],
)
def test_bad_int_keys(keys: Any, error: type, match: str) -> None:
    ix = KeyIndex()
    ix.insert([1])
    with pytest.raises(error, match=match):
        ix.lookup(keys)
    with pytest.raises(error, match=match):
        ix.insert(keys)
    assert len(ix) == 1  # nothing half-written


@pytest.mark.parametrize(
    ("keys", "error", "match"),
    [
        (b"abc", ParameterError, "bytes are refused"),
        ([b"abc"], ParameterError, "bytes b'abc' at position 0"),
        (["a", b"b"], ParameterError, "bytes b'b' at position 1"),
        (["a", None], ParameterError, "NoneType None at position 1"),
        (["a", 1], ParameterError, "int 1 at position 1"),
        (5, ParameterError, "got int 5"),
        (np.array([1, 2]), ParameterError, "dtype int64"),
        (np.array([b"a"]), ParameterError, "dtype |S1"),
        (np.array([["a"]]), DimensionError, r"shape \(1, 1\)"),
        ("\ud800", ParameterError, "lone surrogates"),
        (["ok", "\udfff"], ParameterError, "lone surrogates"),
    ],
)
def test_bad_str_keys(keys: Any, error: type, match: str) -> None:
    ix = KeyIndex("str")
    ix.insert(["a"])
    with pytest.raises(error, match=match):
        ix.lookup(keys)
    with pytest.raises(error, match=match):
        ix.insert(keys)
    assert len(ix) == 1


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ParameterError, match='key_type must be "int64" or "str"'):
        KeyIndex("float")  # type: ignore[arg-type]
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(ParameterError, match="expected_keys"):
            KeyIndex(expected_keys=bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="key_type"):
        KeyIndex.from_arrays(_int_arrays(), "bytes")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="mapping"):
        KeyIndex.from_arrays([1, 2], "int64")  # type: ignore[arg-type]
    with pytest.raises(CorruptStoreError, match="made of the arrays"):
        KeyIndex.from_arrays(_int_arrays(), "str")


# -- a model-based property test ---------------------------------------------------------------

_int_key = st.one_of(
    st.integers(-8, 8), st.sampled_from([I64_MIN, I64_MAX]), st.integers(I64_MIN, I64_MAX)
)
_str_key = st.one_of(st.sampled_from(["", "a", "b", "é", "ab"]), st.text(max_size=12))


def _ops(key: Any) -> Any:
    batch = st.lists(key, max_size=40)
    return st.lists(
        st.tuples(st.sampled_from(["insert", "lookup", "roundtrip"]), batch), max_size=25
    )


@settings(max_examples=60, deadline=None)
@given(ops=_ops(_int_key))
def test_int_index_matches_dict_model(ops: list[tuple[str, list[int]]]) -> None:
    _run_model("int64", ops)


@settings(max_examples=60, deadline=None)
@given(ops=_ops(_str_key))
def test_str_index_matches_dict_model(ops: list[tuple[str, list[str]]]) -> None:
    _run_model("str", ops)


def _run_model(key_type: Any, ops: list[tuple[str, list[Any]]]) -> None:
    ix, model = KeyIndex(key_type), {}
    for op, keys in ops:
        batch: Any = keys if key_type == "str" else np.array(keys, dtype=np.int64)
        if op == "insert":
            assert ix.insert(batch).tolist() == insert_model(model, keys)
        elif op == "lookup":
            assert ix.lookup(batch).tolist() == [model.get(k, -1) for k in keys]
        else:
            ix = KeyIndex.from_arrays(ix.arrays(), key_type)
        assert len(ix) == len(model)
    assert list(ix.keys()) == list(model)


def test_at_most_2_to_31_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slots are int32: the table refuses to grow past 2**32 positions (checked before
    allocating; shown with the limit lowered)."""
    with pytest.raises(ParameterError, match="at most 2147483648 keys"):
        KeyIndex(expected_keys=2**31 + 1)
    monkeypatch.setattr(keyindex_module, "_MAX_CAPACITY", 32)
    ix = KeyIndex()
    ix.insert(np.arange(16))
    with pytest.raises(ParameterError, match="at most 16 keys"):
        ix.insert([99])
    assert len(ix) == 16


def test_from_arrays_with_a_known_count() -> None:
    ix = KeyIndex()
    ix.insert(np.arange(100) * 3)
    arrays = ix.arrays()
    same = KeyIndex.from_arrays(arrays, "int64", validate=False, n_keys=100)
    assert len(same) == 100
    assert same.lookup([3, 4]).tolist() == [1, -1]
    with pytest.raises(CorruptStoreError):  # the full check counts for itself
        KeyIndex.from_arrays(arrays, "int64", validate=True, n_keys=99)
    with pytest.raises(ParameterError, match="n_keys"):
        KeyIndex.from_arrays(arrays, "int64", n_keys=-1)
    low = KeyIndex.from_arrays(arrays, "int64", validate=False, n_keys=10)
    with pytest.raises(CorruptStoreError):  # a slot at or above the count is corruption
        low.lookup([30])
