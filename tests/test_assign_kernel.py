"""The experiment-assignment kernels (mmfs._kernels._assign) against their references:
the `mmh3` package for salted MurmurHash3 and slots, `growthbook.core` for GrowthBook
buckets.  The contract itself is written down at the top of mmfs_murmur.h."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import mmh3
import numpy as np
import pytest
from growthbook.core import fnv1a32, gbhash

from mmfs._kernels import _assign

SEED = 20261127
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
SALTS: list[bytes | None] = [None, b"", b"exp:1", b"thirteen-byte", b"sixteen-byte-slt", b"s" * 33]
THREADS = (1, 2, 4)
FORMS = ("utf8", "ucs4")


# ---- helpers -------------------------------------------------------------------------------


def prefix(salt: bytes | None) -> bytes:
    """uint32_le(len(salt)) || salt || zeros up to a multiple of 16 (b"" for no salt)."""
    if salt is None:
        return b""
    total = (4 + len(salt) + 15) // 16 * 16
    return len(salt).to_bytes(4, "little") + salt + bytes(total - 4 - len(salt))


def utf8_form(strs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode() for s in strs]
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    offsets = np.zeros(len(strs) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return data, offsets


def ucs4_form(strs: list[str]) -> np.ndarray:
    arr = np.array(strs, dtype=str)
    return arr.view(np.uint32).reshape(len(strs), arr.dtype.itemsize // 4)


def key_args(form: str, strs: list[str]) -> tuple[np.ndarray, ...]:
    return utf8_form(strs) if form == "utf8" else (ucs4_form(strs),)


def same_for_all_threads(call: Callable[[int], np.ndarray]) -> np.ndarray:
    """call(n_threads) for 1, 2 and 4 threads; the results must be identical."""
    first = call(THREADS[0])
    for n_threads in THREADS[1:]:
        assert np.array_equal(call(n_threads), first)
    return first


def random_ids(n: int, seed: Any) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(INT64_MIN, INT64_MAX, n, dtype=np.int64, endpoint=True)
    ids[: n // 4] >>= rng.integers(0, 63, n // 4)  # small magnitudes too, both signs
    ids[:7] = [INT64_MIN, INT64_MAX, 0, -1, 1, INT64_MIN + 1, INT64_MAX - 1]
    return ids


def random_strings(n: int, seed: Any) -> list[str]:
    """ASCII, non-ASCII BMP (2- and 3-byte UTF-8) and astral characters, lengths 0..40,
    plus every ASCII length 0..40 so that every tail length of both hashes occurs."""
    rng = np.random.default_rng(seed)
    pools = np.array(
        [
            (0x20, 0x7F),  # ASCII
            (0x80, 0x800),  # 2 UTF-8 bytes
            (0x800, 0xD800),  # 3 bytes below the surrogates
            (0xE000, 0x10000),  # 3 bytes above them
            (0x1F300, 0x1F650),  # emoji
            (0x10000, 0x110000),  # any astral
        ]
    )
    lengths = rng.integers(0, 41, n)
    kinds = rng.choice(len(pools), n, p=[0.5, 0.1, 0.1, 0.05, 0.15, 0.1])
    # Most characters of a string come from its own pool, the rest from any pool.
    per_char = np.repeat(kinds, lengths)
    pick = np.where(rng.random(len(per_char)) < 0.7, per_char, rng.integers(0, 6, len(per_char)))
    text = "".join(map(chr, rng.integers(pools[pick, 0], pools[pick, 1])))
    ends = np.cumsum(lengths).tolist()
    out = ["x" * k for k in range(41)] + ["", "é", "😀", "\U0010ffff", "\u07ff\u0800\uffff"]
    out += [text[e - k : e] for e, k in zip(ends, lengths.tolist(), strict=True)]
    return out


@pytest.fixture(scope="module")
def ids() -> np.ndarray:
    return random_ids(100_000, SEED)


@pytest.fixture(scope="module")
def ids_le(ids: np.ndarray) -> list[bytes]:
    raw = ids.astype("<i8").tobytes()
    return [raw[i : i + 8] for i in range(0, len(raw), 8)]


@pytest.fixture(scope="module")
def strings() -> list[str]:
    return random_strings(20_000, [SEED, 1])


@pytest.fixture(scope="module")
def strings_utf8(strings: list[str]) -> list[bytes]:
    return [s.encode() for s in strings]


# ---- MurmurHash3 ---------------------------------------------------------------------------


def test_scalar_helpers_match_references() -> None:
    rng = np.random.default_rng(SEED)
    for length in range(70):
        msg = rng.bytes(length)
        for seed in (0, 1, 12345, 2**32 - 1):
            assert _assign.murmur32_bytes(msg, seed) == mmh3.hash(msg, seed, signed=False)
            assert _assign.murmur128_bytes(msg, seed) == mmh3.hash64(msg, seed, signed=False)
            h1, h2 = _assign.murmur128_bytes(msg, seed)
            assert h1 | h2 << 64 == mmh3.hash128(msg, seed, signed=False)
    for s in ["", "a", "exp-checkout123", "ñandú", "😀 rocket 🚀", "\U0010ffff\u0800"]:
        units = np.frombuffer(s.encode("utf-16-le"), dtype=np.uint16)
        assert _assign.fnv1a32_units(units) == fnv1a32(s)


@pytest.mark.parametrize("seed", [0, 12345])
@pytest.mark.parametrize("salt", SALTS)
def test_murmur_int_matches_mmh3(
    ids: np.ndarray, ids_le: list[bytes], salt: bytes | None, seed: int
) -> None:
    p = prefix(salt)
    ref32 = np.array([mmh3.hash(p + k, seed, signed=False) for k in ids_le], dtype=np.uint32)
    ref128 = np.array([mmh3.hash64(p + k, seed, signed=False) for k in ids_le], dtype=np.uint64)

    def m32(n_threads: int) -> np.ndarray:
        out = np.empty(len(ids), np.uint32)
        _assign.murmur32_int(ids, salt, seed, out, n_threads)
        return out

    def m128(n_threads: int) -> np.ndarray:
        out = np.empty((len(ids), 2), np.uint64)
        _assign.murmur128_int(ids, salt, seed, out, n_threads)
        return out

    assert np.array_equal(same_for_all_threads(m32), ref32)
    assert np.array_equal(same_for_all_threads(m128), ref128)


@pytest.mark.parametrize("seed", [0, 12345])
@pytest.mark.parametrize("salt", SALTS)
def test_murmur_str_matches_mmh3(
    strings: list[str], strings_utf8: list[bytes], salt: bytes | None, seed: int
) -> None:
    p = prefix(salt)
    ref32 = np.array([mmh3.hash(p + b, seed, signed=False) for b in strings_utf8], np.uint32)
    ref128 = np.array([mmh3.hash64(p + b, seed, signed=False) for b in strings_utf8], np.uint64)
    for form in FORMS:
        args = key_args(form, strings)

        def m32(n_threads: int, form: str = form, args: tuple = args) -> np.ndarray:
            out = np.empty(len(strings), np.uint32)
            getattr(_assign, f"murmur32_{form}")(*args, salt, seed, out, n_threads)
            return out

        def m128(n_threads: int, form: str = form, args: tuple = args) -> np.ndarray:
            out = np.empty((len(strings), 2), np.uint64)
            getattr(_assign, f"murmur128_{form}")(*args, salt, seed, out, n_threads)
            return out

        assert np.array_equal(same_for_all_threads(m32), ref32), form
        assert np.array_equal(same_for_all_threads(m128), ref128), form


def test_salt_prefix_is_unambiguous() -> None:
    keys = np.array([ord("c"), 0], dtype=np.int64)
    a, b = np.empty(2, np.uint32), np.empty(2, np.uint32)
    _assign.murmur32_int(keys, b"ab", 0, a, 1)
    _assign.murmur32_int(keys, b"a", 0, b, 1)
    assert not np.any(a == b)
    data, offsets = utf8_form(["c", "bc"])
    _assign.murmur32_utf8(data, offsets, b"ab", 0, a, 1)
    _assign.murmur32_utf8(data, offsets, b"a", 0, b, 1)
    assert a[0] != b[1]
    # No salt and the empty salt differ too.
    _assign.murmur32_utf8(data, offsets, None, 0, a, 1)
    _assign.murmur32_utf8(data, offsets, b"", 0, b, 1)
    assert not np.any(a == b)


def test_utf8_form_hashes_bytes_as_they_are() -> None:
    raw = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"abc\x00def"]
    data = np.frombuffer(b"".join(raw), np.uint8)
    offsets = np.array([0, 1, 3, 6, 13], dtype=np.int64)
    out = np.empty(4, np.uint32)
    _assign.murmur32_utf8(data, offsets, b"s", 9, out, 1)
    assert out.tolist() == [mmh3.hash(prefix(b"s") + r, 9, signed=False) for r in raw]


def test_ucs4_row_ends_at_first_zero_or_width() -> None:
    chars = np.array(
        [[0x61, 0x62, 0, 0x63], [0x61, 0x62, 0x63, 0x64], [0, 0x61, 0, 0], [0xE9, 0, 0, 0]],
        dtype=np.uint32,
    )
    out = np.empty(4, np.uint32)
    _assign.murmur32_ucs4(chars, None, 3, out, 1)
    expect = [mmh3.hash(s.encode(), 3, signed=False) for s in ["ab", "abcd", "", "é"]]
    assert out.tolist() == expect
    empty_rows = np.zeros((3, 0), dtype=np.uint32)
    out3 = np.empty(3, np.uint32)
    _assign.murmur32_ucs4(empty_rows, b"x", 3, out3, 1)
    assert out3.tolist() == [mmh3.hash(prefix(b"x"), 3, signed=False)] * 3


# ---- slots and assignment ------------------------------------------------------------------


def slots_ref(msgs: list[bytes], salt: bytes | None) -> np.ndarray:
    p = prefix(salt)
    h = np.array([mmh3.hash(p + m, 0, signed=False) for m in msgs], dtype=np.uint64)
    return ((h * np.uint64(10000)) >> np.uint64(32)).astype(np.uint16)


@pytest.mark.parametrize("salt", [None, b"exp:1", b"s" * 33])
def test_slots_match_mmh3(
    ids: np.ndarray,
    ids_le: list[bytes],
    strings: list[str],
    strings_utf8: list[bytes],
    salt: bytes | None,
) -> None:
    ref = slots_ref(ids_le, salt)
    assert ref.max() < 10000

    def run_int(n_threads: int) -> np.ndarray:
        out = np.empty(len(ids), np.uint16)
        _assign.slots_int(ids, salt, out, n_threads)
        return out

    assert np.array_equal(same_for_all_threads(run_int), ref)
    ref = slots_ref(strings_utf8, salt)
    for form in FORMS:
        args = key_args(form, strings)

        def run(n_threads: int, form: str = form, args: tuple = args) -> np.ndarray:
            out = np.empty(len(strings), np.uint16)
            getattr(_assign, f"slots_{form}")(*args, salt, out, n_threads)
            return out

        assert np.array_equal(same_for_all_threads(run), ref), form


def random_tables(seed: Any) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dom = rng.integers(0, 256, 10000).astype(np.uint8)
    dom[rng.random(10000) < 0.5] = 0  # any non-zero byte means "in the domain"
    arm = rng.integers(-(2**15), 2**15, 10000).astype(np.int16)
    return dom, arm


@pytest.mark.parametrize(
    ("dom_salt", "arm_salt"), [(b"layer:1", b"exp:1"), (None, b""), (b"d" * 20, None)]
)
def test_assign_matches_slot_lookup(
    ids: np.ndarray,
    ids_le: list[bytes],
    strings: list[str],
    strings_utf8: list[bytes],
    dom_salt: bytes | None,
    arm_salt: bytes | None,
) -> None:
    dom, arm = random_tables([SEED, 2])

    def ref(msgs: list[bytes]) -> np.ndarray:
        sd, sa = slots_ref(msgs, dom_salt), slots_ref(msgs, arm_salt)
        return np.where(dom[sd] != 0, arm[sa], np.int16(-1)).astype(np.int16)

    def run_int(n_threads: int) -> np.ndarray:
        out = np.empty(len(ids), np.int16)
        _assign.assign_int(ids, dom_salt, dom, arm_salt, arm, out, n_threads)
        return out

    expect = ref(ids_le)
    assert np.array_equal(same_for_all_threads(run_int), expect)
    assert 0.4 < np.mean(expect == -1) < 0.6
    expect = ref(strings_utf8)
    for form in FORMS:
        args = key_args(form, strings)

        def run(n_threads: int, form: str = form, args: tuple = args) -> np.ndarray:
            out = np.empty(len(strings), np.int16)
            getattr(_assign, f"assign_{form}")(*args, dom_salt, dom, arm_salt, arm, out, n_threads)
            return out

        assert np.array_equal(same_for_all_threads(run), expect), form


# ---- GrowthBook ----------------------------------------------------------------------------


GB_SEEDS = ["exp-checkout", "", "ñandú-🚀", "__checkout-ns"]


def gb_ref(seed: str, values: list[str], version: int) -> np.ndarray:
    return np.array([gbhash(seed, v, version) for v in values], dtype=np.float64)


def seed_units(seed: str) -> np.ndarray:
    return np.frombuffer(seed.encode("utf-16-le"), dtype=np.uint16)


@pytest.mark.parametrize("seed", GB_SEEDS[:3])
def test_gb_bucket_int_matches_growthbook(seed: str) -> None:
    rng = np.random.default_rng([SEED, 3])
    keys = np.concatenate(
        [
            np.arange(-100, 49_900, dtype=np.int64),
            rng.integers(-(2**53), 2**53, 50_000, dtype=np.int64, endpoint=True),
        ]
    )
    keys[-2:] = [-(2**53), 2**53]
    values = [str(k) for k in keys.tolist()]
    for version, scale in ((2, 10000), (1, 1000)):
        expect = gb_ref(seed, values, version)

        def run(n_threads: int, version: int = version) -> np.ndarray:
            out = np.empty(len(keys), np.uint16)
            _assign.gb_bucket_int(keys, seed_units(seed), version, out, n_threads)
            return out

        got = same_for_all_threads(run)
        assert got.max() < scale
        # The Python layer divides exactly like gbhash: the floats agree to the bit.
        assert np.array_equal(got / scale, expect)


def test_gb_bucket_int_prints_any_int64_in_decimal() -> None:
    keys = np.array([INT64_MIN, INT64_MAX, 2**53 + 1, -(2**60)], dtype=np.int64)
    out = np.empty(4, np.uint16)
    _assign.gb_bucket_int(keys, seed_units("s"), 2, out, 1)
    assert np.array_equal(out / 10000, gb_ref("s", [str(k) for k in keys.tolist()], 2))


@pytest.mark.parametrize("seed", GB_SEEDS)
def test_gb_bucket_str_matches_growthbook(strings: list[str], seed: str) -> None:
    rng = np.random.default_rng([SEED, 4])
    values = (
        [f"user-{i}" for i in range(5000)]
        + [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(5000)]
        + strings[:10_000]
    )
    for version, scale in ((2, 10000), (1, 1000)):
        expect = gb_ref(seed, values, version)
        for form in FORMS:
            args = key_args(form, values)

            def run(
                n_threads: int, form: str = form, args: tuple = args, version: int = version
            ) -> np.ndarray:
                out = np.empty(len(values), np.uint16)
                getattr(_assign, f"gb_bucket_{form}")(
                    *args, seed_units(seed), version, out, n_threads
                )
                return out

            got = same_for_all_threads(run)
            assert got.max() < scale
            assert np.array_equal(got / scale, expect), (form, version)


# ---- inputs --------------------------------------------------------------------------------


def test_empty_inputs() -> None:
    dom, arm = random_tables(SEED)
    data, offsets = np.empty(0, np.uint8), np.zeros(1, np.int64)
    units = seed_units("s")
    forms = [
        ("int", (np.empty(0, np.int64),)),
        ("utf8", (data, offsets)),
        ("ucs4", (np.empty((0, 4), np.uint32),)),
    ]
    for form, args in forms:
        getattr(_assign, f"murmur32_{form}")(*args, b"s", 0, np.empty(0, np.uint32), 2)
        getattr(_assign, f"murmur128_{form}")(*args, None, 0, np.empty((0, 2), np.uint64), 2)
        getattr(_assign, f"slots_{form}")(*args, b"s", np.empty(0, np.uint16), 2)
        getattr(_assign, f"assign_{form}")(*args, b"d", dom, b"a", arm, np.empty(0, np.int16), 2)
        getattr(_assign, f"gb_bucket_{form}")(*args, units, 2, np.empty(0, np.uint16), 2)
    # Keys that are all empty strings, from an empty data buffer.
    out = np.empty(3, np.uint32)
    _assign.murmur32_utf8(data, np.zeros(4, np.int64), None, 5, out, 1)
    assert out.tolist() == [mmh3.hash(b"", 5, signed=False)] * 3
    gb = np.empty(3, np.uint16)
    _assign.gb_bucket_utf8(data, np.zeros(4, np.int64), np.empty(0, np.uint16), 1, gb, 1)
    assert np.array_equal(gb / 1000, gb_ref("", ["", "", ""], 1))


def test_bad_shapes_raise() -> None:
    dom, arm = random_tables(SEED)
    strs = ["a", "bc", "", "def", "g"]
    units = seed_units("s")
    forms = [("int", (np.arange(5, dtype=np.int64),)), ("utf8", utf8_form(strs))]
    forms.append(("ucs4", (ucs4_form(strs),)))
    for form, args in forms:
        with pytest.raises(ValueError, match="rows"):
            getattr(_assign, f"murmur32_{form}")(*args, None, 0, np.empty(4, np.uint32), 1)
        with pytest.raises(ValueError, match="rows"):
            getattr(_assign, f"murmur128_{form}")(*args, None, 0, np.empty((6, 2), np.uint64), 1)
        with pytest.raises(ValueError, match="shape"):
            getattr(_assign, f"murmur128_{form}")(*args, None, 0, np.empty((5, 3), np.uint64), 1)
        with pytest.raises(ValueError, match="rows"):
            getattr(_assign, f"slots_{form}")(*args, None, np.empty(6, np.uint16), 1)
        with pytest.raises(ValueError, match="rows"):
            getattr(_assign, f"assign_{form}")(
                *args, None, dom, None, arm, np.empty(4, np.int16), 1
            )
        with pytest.raises(ValueError, match="10000"):
            getattr(_assign, f"assign_{form}")(
                *args, None, dom[:-1], None, arm, np.empty(5, np.int16), 1
            )
        with pytest.raises(ValueError, match="10000"):
            getattr(_assign, f"assign_{form}")(
                *args, None, dom, None, np.resize(arm, 10001), np.empty(5, np.int16), 1
            )
        with pytest.raises(ValueError, match="rows"):
            getattr(_assign, f"gb_bucket_{form}")(*args, units, 2, np.empty(4, np.uint16), 1)
        with pytest.raises(ValueError, match="version"):
            getattr(_assign, f"gb_bucket_{form}")(*args, units, 3, np.empty(5, np.uint16), 1)
        with pytest.raises(TypeError, match="salt"):
            getattr(_assign, f"slots_{form}")(*args, "exp:1", np.empty(5, np.uint16), 1)


@pytest.mark.parametrize(
    "offsets",
    [[0, 2, 1, 4], [0, 1, 2, 99], [-1, 1, 2, 3], []],
    ids=["not-monotonic", "past-data", "negative", "empty"],
)
def test_bad_offsets_raise(offsets: list[int]) -> None:
    data = np.frombuffer(b"abcdef", np.uint8)
    off = np.array(offsets, dtype=np.int64)
    n = max(len(offsets) - 1, 0)
    dom, arm = random_tables(SEED)
    calls: list[Callable[[], object]] = [
        lambda: _assign.murmur32_utf8(data, off, None, 0, np.empty(n, np.uint32), 1),
        lambda: _assign.murmur128_utf8(data, off, None, 0, np.empty((n, 2), np.uint64), 1),
        lambda: _assign.slots_utf8(data, off, None, np.empty(n, np.uint16), 1),
        lambda: _assign.assign_utf8(data, off, None, dom, None, arm, np.empty(n, np.int16), 1),
        lambda: _assign.gb_bucket_utf8(data, off, seed_units(""), 2, np.empty(n, np.uint16), 1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="offsets"):
            call()


@pytest.mark.parametrize("bad", [0xD800, 0xDFFF, 0x110000, 0xFFFFFFFF])
def test_invalid_ucs4_code_points_raise(bad: int) -> None:
    chars = np.array([[0x61, 0x62, 0, 0], [0x61, bad, 0x62, 0]], dtype=np.uint32)
    dom, arm = random_tables(SEED)
    calls: list[Callable[[], object]] = [
        lambda: _assign.murmur32_ucs4(chars, None, 0, np.empty(2, np.uint32), 1),
        lambda: _assign.murmur128_ucs4(chars, b"s", 0, np.empty((2, 2), np.uint64), 1),
        lambda: _assign.slots_ucs4(chars, None, np.empty(2, np.uint16), 1),
        lambda: _assign.assign_ucs4(chars, None, dom, None, arm, np.empty(2, np.int16), 1),
        lambda: _assign.gb_bucket_ucs4(chars, seed_units("s"), 2, np.empty(2, np.uint16), 1),
        lambda: _assign.gb_bucket_ucs4(chars, seed_units("s"), 1, np.empty(2, np.uint16), 1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="Unicode"):
            call()


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff",
        b"\x80",
        b"\xc0\x80",
        b"\xe0\x80\xaf",
        b"\xed\xa0\x80",
        b"\xe2\x82",
        b"\xf4\x90\x80\x80",
    ],
)
def test_gb_bucket_utf8_rejects_malformed_utf8(raw: bytes) -> None:
    data = np.frombuffer(b"ok" + raw, np.uint8)
    off = np.array([0, 2, 2 + len(raw)], dtype=np.int64)
    for version in (1, 2):
        with pytest.raises(ValueError, match="Unicode"):
            _assign.gb_bucket_utf8(data, off, seed_units("s"), version, np.empty(2, np.uint16), 1)
