"""The mmfs file header: round trips, atomic publishing, and every kind of damage.

Every damaged or foreign file must give FormatError (or its subclass CorruptStoreError),
never a crash, another exception or a wrong array.
"""

from __future__ import annotations

import errno
import importlib.util
import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmfs.errors import CorruptStoreError, FormatError, ParameterError
from mmfs.storage import fileformat as ff

DATA = Path(__file__).parent / "data"
DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
]
SHAPES = [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2)]


def _random(rng: np.random.Generator, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    return (rng.standard_normal(shape) * 100).astype(dt)


def _write(path: Path, array: Any, kind: str = "TEST", **kw: Any) -> bytes:
    ff.write_array_file(path, array, kind, durable=False, **kw)
    return path.read_bytes()


def _sealed(payload: bytes, **fields: Any) -> bytes:
    """A well-sealed header (valid CRC) with the given raw fields, plus ``payload``."""
    defaults: dict[str, Any] = {
        "kind": b"TEST",
        "dtype_code": 6,
        "shape": (len(payload),),
        "data_length": len(payload),
        "flags": ff.FLAG_PAYLOAD_CRC,
        "payload_crc32": zlib.crc32(payload),
    }
    defaults.update(fields)
    return ff._pack_fields(**defaults) + payload


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_dtype_and_ndim(tmp_path: Path, dtype: Any) -> None:
    rng = np.random.default_rng(1234)
    for shape in SHAPES:
        x = _random(rng, dtype, shape)
        path = tmp_path / f"{len(shape)}.mmfs"
        header = ff.write_array_file(path, x, "TEST")
        y = ff.open_array(path, "TEST")
        assert isinstance(y, np.memmap)
        assert y.dtype == x.dtype
        assert y.shape == shape
        np.testing.assert_array_equal(y, x)
        assert not y.flags.writeable
        assert y.ctypes.data % ff.PAYLOAD_ALIGNMENT == 0
        assert header == ff.read_header(path, "TEST")
        assert header.data_offset % ff.PAYLOAD_ALIGNMENT == 0
        assert header.data_length == x.nbytes
        assert header.file_size == path.stat().st_size == ff.HEADER_SIZE + x.nbytes
        assert header.has_payload_checksum
        assert (header.major, header.minor) == (ff.FORMAT_MAJOR, ff.FORMAT_MINOR)
        with pytest.raises(ValueError, match="read-only"):
            y[(0,) * len(shape)] = 0


def test_round_trip_keeps_special_values(tmp_path: Path) -> None:
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324, np.finfo(np.float64).max])
    _write(tmp_path / "a", x)
    assert ff.open_array(tmp_path / "a", "TEST").tobytes() == x.tobytes()


def test_big_endian_and_strided_inputs_are_stored_little_endian_c_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 6))
    raw = _write(tmp_path / "be", x.astype(">f8"))
    assert raw[ff.HEADER_SIZE :] == x.astype("<f8").tobytes()
    np.testing.assert_array_equal(ff.open_array(tmp_path / "be", "TEST"), x)
    strided = x[::2, ::-3].T  # neither C- nor F-contiguous
    _write(tmp_path / "st", strided)
    np.testing.assert_array_equal(ff.open_array(tmp_path / "st", "TEST"), strided)
    fortran = np.asfortranarray(x)
    _write(tmp_path / "f", fortran)
    np.testing.assert_array_equal(ff.open_array(tmp_path / "f", "TEST"), x)


def test_python_lists_and_memmaps_are_accepted(tmp_path: Path) -> None:
    _write(tmp_path / "list", [[1, 2], [3, 4]])
    m = ff.open_array(tmp_path / "list", "TEST")
    np.testing.assert_array_equal(m, [[1, 2], [3, 4]])
    _write(tmp_path / "copy", m)  # an open memmap is written like any array
    assert (tmp_path / "copy").read_bytes() == (tmp_path / "list").read_bytes()


@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0, 2), (1, 2, 3, 0)])
def test_empty_arrays(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "e.mmfs"
    header = ff.write_array_file(path, np.zeros(shape, np.float32), "TEST")
    assert header.data_length == 0
    assert path.stat().st_size == ff.HEADER_SIZE
    y = ff.open_array(path, "TEST")
    assert type(y) is np.ndarray
    assert y.shape == shape
    assert y.dtype == np.float32
    assert not y.flags.writeable
    assert ff.open_array(path, "TEST", "c").flags.writeable


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.float64(1.0), "reshape"),
        (np.zeros((1, 1, 1, 1, 1)), "1 to 4 dimensions"),
        (np.array(["a", "b"]), "cannot store dtype"),
        (np.array([1 + 2j]), "cannot store dtype"),
        (np.array([object()]), "cannot store dtype"),
        (np.zeros(2, dtype="datetime64[s]"), "cannot store dtype"),
        (np.zeros(2, dtype=[("a", "i4")]), "cannot store dtype"),
        ([[1], [1, 2]], "expected an array"),
    ],
)
def test_unstorable_arrays_are_refused(tmp_path: Path, value: Any, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        ff.write_array_file(tmp_path / "x", value, "TEST")
    assert os.listdir(tmp_path) == []


def test_kind_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="file kind must be one of"):
        ff.write_array_file(tmp_path / "x", np.zeros(2), "NOPE")
    with pytest.raises(ParameterError, match="file kind"):
        ff.write_json_file(tmp_path / "x", {}, b"MNFT")  # type: ignore[arg-type]
    _write(tmp_path / "a", np.zeros(2))
    with pytest.raises(ParameterError, match="file kind"):
        ff.open_array(tmp_path / "a", "test")
    with pytest.raises(ParameterError, match="file kind"):
        ff.read_header(tmp_path / "a", "ARNAX")
    with pytest.raises(ParameterError, match="mode must be"):
        ff.open_array(tmp_path / "a", "TEST", "w")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="verify must be"):
        ff.open_array(tmp_path / "a", "TEST", verify=1)  # type: ignore[arg-type]
    assert ff.open_array(tmp_path / "a", None).shape == (2,)  # None: any kind


def test_read_header_from_file_objects(tmp_path: Path) -> None:
    raw = _write(tmp_path / "a", np.arange(10, dtype=np.int16), "KIDX")
    with open(tmp_path / "a", "rb") as f:
        h = ff.read_header(f, "KIDX")
    assert h == ff.read_header(io.BytesIO(raw))
    assert (h.kind, h.dtype, h.shape) == ("KIDX", np.dtype(np.int16), (10,))
    with pytest.raises(FormatError, match="<file object>"):
        ff.read_header(io.BytesIO(raw[:-1]))


def test_modes_copy_on_write_and_read_write(tmp_path: Path) -> None:
    x = np.arange(6, dtype=np.int32)
    path = tmp_path / "a"
    raw = _write(path, x)
    c = ff.open_array(path, "TEST", "c")
    c[0] = 99  # stays in this process
    assert path.read_bytes() == raw
    with pytest.raises(ParameterError, match="payload_checksum=False"):
        ff.open_array(path, "TEST", "r+")
    _write(path, x, payload_checksum=False)
    w = ff.open_array(path, "TEST", "r+")
    assert isinstance(w, np.memmap)
    w[1] = 42
    w.flush()
    del w
    np.testing.assert_array_equal(ff.open_array(path, "TEST"), [0, 42, 2, 3, 4, 5])


def test_mapped_reader_keeps_the_old_file_after_a_new_publish(tmp_path: Path) -> None:
    path = tmp_path / "a"
    _write(path, np.full(1000, 1.0))
    old = ff.open_array(path, "TEST")
    _write(path, np.full(1000, 2.0))
    assert float(old.sum()) == 1000.0  # the old inode, untouched
    assert float(ff.open_array(path, "TEST").sum()) == 2000.0


# --------------------------------------------------------------------------- JSON


def test_json_round_trip_is_strict_and_deterministic(tmp_path: Path) -> None:
    doc = {"b": [1, 2.5, None, True], "a": {"z": "héllo ✓", "y": -3}, "c": ""}
    header = ff.write_json_file(tmp_path / "m", doc, "MNFT")
    assert (header.kind, header.dtype, header.has_payload_checksum) == ("MNFT", np.uint8, True)
    assert ff.read_json_file(tmp_path / "m", "MNFT") == doc
    ff.write_json_file(tmp_path / "m2", dict(reversed(doc.items())), "MNFT", durable=False)
    assert (tmp_path / "m").read_bytes() == (tmp_path / "m2").read_bytes()
    assert (tmp_path / "m").read_bytes()[ff.HEADER_SIZE :].startswith(b'{"a":{"y":-3')
    assert sorted(os.listdir(tmp_path)) == ["m", "m2"]


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"x": float("nan")}, "strict JSON"),
        ({"x": float("inf")}, "strict JSON"),
        ({"x": {1, 2}}, "strict JSON"),
        ({1: "a", "b": 2}, "strict JSON"),  # mixed keys cannot be sorted
    ],
)
def test_json_write_refuses_non_json(tmp_path: Path, doc: Any, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        ff.write_json_file(tmp_path / "m", doc, "MNFT")
    assert os.listdir(tmp_path) == []


def test_json_write_refuses_too_deep_and_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ParameterError, match="strict JSON"):
        ff.write_json_file(tmp_path / "m", deep, "MNFT")
    monkeypatch.setattr(ff, "MAX_JSON_BYTES", 10)
    with pytest.raises(ParameterError, match="over the 10-byte limit"):
        ff.write_json_file(tmp_path / "m", "x" * 20, "MNFT")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"a": ', "JSON"),
        (b'{"a": NaN}', "NaN"),
        (b"[Infinity]", "Infinity"),
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
def test_json_read_refuses_non_json_payloads(tmp_path: Path, payload: bytes, match: str) -> None:
    _write(tmp_path / "m", np.frombuffer(payload, np.uint8), "MNFT")  # sealed, checksummed
    with pytest.raises(CorruptStoreError, match=match):
        ff.read_json_file(tmp_path / "m", "MNFT")


def test_json_read_checks_header_checksum_and_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "f", np.zeros(4, np.float32), "MNFT")
    with pytest.raises(CorruptStoreError, match="not a JSON document"):
        ff.read_json_file(tmp_path / "f", "MNFT")
    _write(tmp_path / "n", np.frombuffer(b"{}", np.uint8), "MNFT", payload_checksum=False)
    with pytest.raises(CorruptStoreError, match="no checksum"):
        ff.read_json_file(tmp_path / "n", "MNFT")
    with pytest.raises(FormatError, match="expected a version table file"):
        ff.read_json_file(tmp_path / "n", "VTAB")
    ff.write_json_file(tmp_path / "m", {"a": 1}, "MNFT")
    raw = bytearray((tmp_path / "m").read_bytes())
    raw[-2] ^= 0x01
    (tmp_path / "m").write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError, match="payload checksum"):
        ff.read_json_file(tmp_path / "m", "MNFT")
    ff.write_json_file(tmp_path / "big", "x" * 100, "MNFT")
    monkeypatch.setattr(ff, "MAX_JSON_BYTES", 50)
    with pytest.raises(CorruptStoreError, match="over the 50-byte limit"):
        ff.read_json_file(tmp_path / "big", "MNFT")


# --------------------------------------------------------------------------- damage


def _assert_refused(path: Path, kind: str | None = "TEST") -> FormatError:
    """Every reader entry point refuses ``path`` with a FormatError."""
    with pytest.raises(FormatError) as info:
        ff.read_header(path, kind)
    with pytest.raises(FormatError):
        ff.open_array(path, kind)
    with pytest.raises(FormatError):
        ff.open_array(path, kind, verify=False)
    return info.value


def test_truncation_at_every_offset(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    raw = _write(tmp_path / "full", rng.standard_normal((3, 4)).astype(np.float32))
    path = tmp_path / "t"
    for n in range(len(raw)):
        path.write_bytes(raw[:n])
        err = _assert_refused(path)
        if n == 0:
            assert "is empty" in str(err)
        else:
            assert isinstance(err, CorruptStoreError), n
            assert "truncated" in str(err)
            assert str(path) in str(err)


def test_trailing_bytes_are_refused(tmp_path: Path) -> None:
    raw = _write(tmp_path / "a", np.arange(4, dtype=np.uint8))
    (tmp_path / "a").write_bytes(raw + b"\0")
    assert "unexpected bytes follow" in str(_assert_refused(tmp_path / "a"))


def test_every_header_bit_flip_is_detected(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    raw = _write(tmp_path / "full", rng.integers(0, 1000, (5, 3)), "TEST")
    path = tmp_path / "flip"
    for bit in range(ff.HEADER_SIZE * 8):
        damaged = bytearray(raw)
        damaged[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(damaged))
        _assert_refused(path)
        with pytest.raises(FormatError):
            ff.open_array(path, None, verify=False)


def test_payload_bit_flip_with_and_without_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = np.arange(16, dtype=np.float64)
    for checksum in (True, False):
        raw = bytearray(_write(tmp_path / "a", x, payload_checksum=checksum))
        raw[ff.HEADER_SIZE + 8 * 3 + 7] ^= 0x80  # the sign bit of x[3]
        (tmp_path / "a").write_bytes(bytes(raw))
        expected = x.copy()
        expected[3] = -3.0
        if checksum:
            for verify in (True, None):
                with pytest.raises(CorruptStoreError, match="payload checksum"):
                    ff.open_array(tmp_path / "a", "TEST", verify=verify)
        else:  # nothing to verify: the header still holds, the values are not guaranteed
            np.testing.assert_array_equal(ff.open_array(tmp_path / "a", "TEST"), expected)
        # verify=False (and large files by default) map without reading the payload
        np.testing.assert_array_equal(ff.open_array(tmp_path / "a", "TEST", verify=False), expected)
        monkeypatch.setattr(ff, "VERIFY_DEFAULT_MAX_BYTES", x.nbytes - 1)
        np.testing.assert_array_equal(ff.open_array(tmp_path / "a", "TEST"), expected)
        monkeypatch.undo()


def test_headers_swapped_between_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    sources = {
        "ARNA": rng.standard_normal((2, 6)).astype(np.float32),
        "KIDX": rng.integers(-5, 5, 12).astype(np.int32),  # same 48 bytes as ARNA
        "VTAB": rng.integers(0, 9, (3, 4)).astype(np.uint64),
        "TEST": rng.standard_normal((4, 3)).astype(np.float16),
    }
    raws = {k: _write(tmp_path / k, v, k) for k, v in sources.items()}
    for a, raw_a in raws.items():
        for b, raw_b in raws.items():
            if a == b:
                continue
            path = tmp_path / f"{a}-on-{b}"
            path.write_bytes(raw_a[: ff.HEADER_SIZE] + raw_b[ff.HEADER_SIZE :])
            _assert_refused(path, b)  # the reader expects b's kind: kind mismatch
            with pytest.raises(FormatError):  # header a is consistent; the payload is not
                ff.open_array(path, a, verify=True)


def test_kind_mismatch_message_names_both(tmp_path: Path) -> None:
    _write(tmp_path / "a", np.zeros(3), "KIDX")
    with pytest.raises(FormatError, match=r"key index file \(kind 'KIDX'\), expected a"):
        ff.open_array(tmp_path / "a", "ARNA")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "PNG image"),
        (b"PK\x03\x04" + bytes(200), "zip archive"),
        (b"\x80\x04\x95" + bytes(200), "pickle"),
        (b"\x89HDF\r\n\x1a\n" + bytes(200), "HDF5"),
        (b"SQLite format 3\x00" + bytes(200), "SQLite"),
        (b"hello world, this is text\n" * 10, "starts with b'hello wo'"),
        (b"MMF", "truncated"),
        (b"M", "truncated"),
        (b"X", "starts with b'X'"),
    ],
)
def test_foreign_files(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(FormatError, match=match):
        ff.open_array(tmp_path / "f", "TEST")


def test_foreign_npy_empty_and_directory(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(100))
    err = _assert_refused(tmp_path / "a.npy")
    assert "not an mmfs file" in str(err)
    assert ".npy" in str(err)
    assert not isinstance(err, CorruptStoreError)
    (tmp_path / "empty").write_bytes(b"")
    assert "is empty" in str(_assert_refused(tmp_path / "empty"))
    (tmp_path / "dir").mkdir()
    assert "is a directory" in str(_assert_refused(tmp_path / "dir"))
    with pytest.raises(FormatError, match="is a directory"):
        ff.read_json_file(tmp_path / "dir", "MNFT")
    with pytest.raises(FileNotFoundError):
        ff.open_array(tmp_path / "missing", "TEST")


def test_newer_major_version_is_refused(tmp_path: Path) -> None:
    payload = b"abcd"
    (tmp_path / "v2").write_bytes(_sealed(payload, major=2))
    with pytest.raises(FormatError, match=r"version 2\.0; this build of mmfs reads format 1") as e:
        ff.open_array(tmp_path / "v2", "TEST")
    assert "upgrade mmfs" in str(e.value)
    assert "damaged" not in str(e.value)
    assert not isinstance(e.value, CorruptStoreError)
    damaged = bytearray(_sealed(payload, major=2))
    damaged[100] ^= 1
    (tmp_path / "v2").write_bytes(bytes(damaged))
    with pytest.raises(FormatError, match="unless the header is damaged"):
        ff.open_array(tmp_path / "v2", "TEST")
    (tmp_path / "v0").write_bytes(_sealed(payload, major=0, minor=9))
    with pytest.raises(FormatError, match=r"version 0\.9, which no release wrote"):
        ff.open_array(tmp_path / "v0", "TEST")


def test_newer_minor_version_is_read_and_its_additions_skipped(tmp_path: Path) -> None:
    x = np.arange(6, dtype=np.int16)
    payload = x.tobytes()
    gap = bytes(range(64))  # data_offset 192: 64 bytes a newer minor uses between
    header = ff._pack_fields(
        kind=b"TEST",
        dtype_code=3,
        shape=(6,),
        data_length=len(payload),
        flags=ff.FLAG_PAYLOAD_CRC | (1 << 7),  # a flag bit from the future
        payload_crc32=zlib.crc32(payload),
        minor=ff.FORMAT_MINOR + 1,
        data_offset=192,
        reserved1=b"\x01\x02",
        reserved2=b"\x07" * 52,
    )
    (tmp_path / "new").write_bytes(header + gap + payload + b"trailer")
    h = ff.read_header(tmp_path / "new", "TEST")
    assert (h.major, h.minor, h.data_offset) == (1, ff.FORMAT_MINOR + 1, 192)
    y = ff.open_array(tmp_path / "new", "TEST", verify=True)
    np.testing.assert_array_equal(y, x)
    assert y.ctypes.data % 64 == 0
    (tmp_path / "code").write_bytes(_sealed(b"ab", dtype_code=99, minor=ff.FORMAT_MINOR + 1))
    with pytest.raises(FormatError, match="dtype code 99, which this build does not know"):
        ff.open_array(tmp_path / "code", "TEST")


# Well-sealed headers (valid checksum) that no correct writer produces.
_PAYLOAD = bytes(range(48))
MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "kind tag": ({"kind": b"te t"}, "invalid kind tag"),
    "dtype code 0": ({"dtype_code": 0}, "unknown dtype code 0"),
    "dtype code 13": ({"dtype_code": 13}, "unknown dtype code 13"),
    "ndim 0": ({"ndim": 0}, "ndim is 0"),
    "ndim 5": ({"ndim": 5}, "ndim is 5"),
    "shape past ndim": ({"shape": (48, 0, 3), "ndim": 1}, "past ndim=1"),
    "length vs shape": ({"shape": (47,)}, "needs 47"),
    "huge shape": ({"shape": (2**40, 2**40)}, "needs"),
    "length vs dtype": ({"dtype_code": 12}, "payload length is 48 bytes, shape"),
    "offset below header": ({"data_offset": 64}, "data offset 64"),
    "offset misaligned": ({"data_offset": 130}, "data offset 130"),
    "offset with gap": ({"data_offset": 192}, "puts the payload at 128"),
    "unknown flags": ({"flags": 3}, "unknown flags 0x2"),
    "reserved 1": ({"reserved1": b"\0\1"}, "reserved header bytes"),
    "reserved 2": ({"reserved2": b"\0" * 51 + b"\1"}, "reserved header bytes"),
    "crc without flag": ({"flags": 0}, "its flag is clear"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_sealed_headers_are_corrupt(tmp_path: Path, case: str) -> None:
    fields, match = MALFORMED[case]
    (tmp_path / "m").write_bytes(_sealed(_PAYLOAD, **fields))
    with pytest.raises(CorruptStoreError, match=match):
        ff.open_array(tmp_path / "m", "TEST")
    (tmp_path / "ok").write_bytes(_sealed(_PAYLOAD))  # the same without the defect loads
    assert ff.open_array(tmp_path / "ok", "TEST").tobytes() == _PAYLOAD


def test_file_shrinking_while_checksummed(tmp_path: Path) -> None:
    with pytest.raises(CorruptStoreError, match="ended 6 bytes before"):
        ff._crc_of_file_range(io.BytesIO(bytes(10)), 8, 8, "src")


# --------------------------------------------------------------------------- publishing


def test_no_tmp_file_is_left_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "a.tmp").write_bytes(b"left by a writer that was killed")
    ff.write_array_file(tmp_path / "a", np.ones(3), "TEST")
    ff.write_json_file(tmp_path / "m", [1], "MNFT")
    assert sorted(os.listdir(tmp_path)) == ["a", "m"]
    np.testing.assert_array_equal(ff.open_array(str(tmp_path / "a"), "TEST"), np.ones(3))


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_crash_before_the_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "a"
    ff.write_array_file(path, np.arange(5), "TEST")
    ff.write_json_file(tmp_path / "m", {"v": 1}, "MNFT")

    def crash(*args: Any) -> None:
        raise OSError(errno.EIO, f"simulated crash in os.{failing}")

    monkeypatch.setattr(os, failing, crash)
    with pytest.raises(OSError, match="simulated crash"):
        ff.write_array_file(path, np.arange(50), "TEST")
    with pytest.raises(OSError, match="simulated crash"):
        ff.write_json_file(tmp_path / "m", {"v": 2}, "MNFT")
    monkeypatch.undo()
    np.testing.assert_array_equal(ff.open_array(path, "TEST"), np.arange(5))
    assert ff.read_json_file(tmp_path / "m", "MNFT") == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["a", "m"]


def test_durability_fsyncs_file_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    ff.write_array_file(tmp_path / "a", np.ones(2), "TEST")
    assert len(calls) == 2  # the file, then its directory
    ff.write_array_file(tmp_path / "a", np.ones(2), "TEST", durable=False)
    ff.write_json_file(tmp_path / "m", {}, "MNFT", durable=False)
    assert len(calls) == 2


@pytest.mark.parametrize(("code", "ignored"), [(errno.EINVAL, True), (errno.EIO, False)])
def test_directory_fsync_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, ignored: bool
) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    if ignored:  # a filesystem that cannot fsync directories: the rename still stands
        ff.write_array_file(tmp_path / "a", np.ones(2), "TEST")
    else:
        with pytest.raises(OSError, match=os.strerror(code)):
            ff.write_array_file(tmp_path / "a", np.ones(2), "TEST")
    np.testing.assert_array_equal(ff.open_array(tmp_path / "a", "TEST"), np.ones(2))


# --------------------------------------------------------------------------- fixtures

# The committed files of format 1.0, and what every later build must read from them.
FIXTURES: dict[str, tuple[Any, bool]] = {
    "ARNA": (
        np.array(
            [[-1.0, -0.75, -0.5, -0.25], [0.0, 0.25, 0.5, 0.75], [1.0, 1.25, 1.5, 1.75]],
            dtype=np.float32,
        ),
        False,
    ),
    "KIDX": (
        np.array([-1, 0, 1, 2**40, -(2**63), 2**63 - 1, 42, -7], dtype=np.int64),
        True,
    ),
    "VTAB": (np.array([[0, 1, 2, 3], [4, 5, 4294967295, 0]], dtype=np.uint32), True),
    "HEAD": (np.array([7, 0, 0, 0], dtype=np.uint64), False),
    "META": (np.array([[0.5, 0.25, -1.0], [-3.0, 0.0, 2.0]], dtype=np.float32), True),
    "TEST": (
        np.array(
            [0.0, -0.0, 1.0, -2.5, 65504.0, np.inf, -np.inf, 2.0**-24] * 3, dtype=np.float16
        ).reshape(1, 2, 3, 4),
        True,
    ),
}
MANIFEST = {
    "format": "mmfs",
    "generation": 7,
    "groups": {"users": {"key_type": "int64", "rows": 3}},
    "message": "first commit: héllo ✓",
    "ratio": 0.25,
    "sealed": True,
    "parent": None,
    "tags": ["v1", "prod"],
}


def test_every_kind_has_a_fixture() -> None:
    assert {p.name for p in DATA.glob("format-1.0-*.mmfs")} == {
        f"format-1.0-{kind}.mmfs" for kind in ff.KINDS
    }


@pytest.mark.parametrize("kind", list(FIXTURES))
def test_committed_array_fixtures_read_exactly(kind: str) -> None:
    expected, checksum = FIXTURES[kind]
    path = DATA / f"format-1.0-{kind}.mmfs"
    h = ff.read_header(path, kind)
    assert (h.kind, h.major, h.minor) == (kind, 1, 0)
    assert (h.dtype, h.shape, h.data_offset) == (expected.dtype, expected.shape, 128)
    assert h.has_payload_checksum is checksum
    assert path.stat().st_size == 128 + expected.nbytes
    y = ff.open_array(path, kind, verify=True)
    assert y.dtype == expected.dtype
    assert y.tobytes() == expected.tobytes()  # bit-exact (-0.0, inf, subnormals)


def test_committed_manifest_fixture_reads_exactly() -> None:
    path = DATA / "format-1.0-MNFT.mmfs"
    doc = ff.read_json_file(path, "MNFT")
    assert doc == MANIFEST
    assert json.dumps(doc, sort_keys=True) == json.dumps(MANIFEST, sort_keys=True)
    raw = path.read_bytes()
    assert struct.unpack_from("<4s4sHH", raw) == (b"MMFS", b"MNFT", 1, 0)


def test_fixture_tool_writes_the_committed_bytes(tmp_path: Path) -> None:
    """The writer has not drifted: today's bytes are the released bytes.  (When a new
    format version changes them, add its fixtures beside these; never rewrite these.)"""
    spec = importlib.util.spec_from_file_location(
        "make_format_fixtures", Path(__file__).parent.parent / "tools/make_format_fixtures.py"
    )
    assert spec is not None
    assert spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--out", str(tmp_path)]) == 0
    for kind in ff.KINDS:
        name = f"format-1.0-{kind}.mmfs"
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert tool.main(["--out", str(tmp_path)]) == 0  # released fixtures are kept
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_verify_limit(tmp_path: Path) -> None:
    x = np.arange(64, dtype=np.int64)
    ff.write_array_file(tmp_path / "a", x, "TEST")
    raw = bytearray((tmp_path / "a").read_bytes())
    raw[ff.HEADER_SIZE] ^= 1
    (tmp_path / "a").write_bytes(bytes(raw))
    assert ff.open_array(tmp_path / "a", "TEST", verify_limit=x.nbytes - 1)[0] == 1  # unread
    with pytest.raises(CorruptStoreError, match="payload checksum"):
        ff.open_array(tmp_path / "a", "TEST", verify_limit=x.nbytes)


def test_create_array_file_is_zero_filled_and_sparse(tmp_path: Path) -> None:
    h = ff.create_array_file(tmp_path / "seg", (1 << 16, 64), np.float32, "ARNA")
    assert (h.kind, h.shape, h.dtype, h.has_payload_checksum) == (
        "ARNA", (1 << 16, 64), np.dtype(np.float32), False,
    )  # fmt: skip
    st = (tmp_path / "seg").stat()
    assert st.st_size == ff.HEADER_SIZE + (1 << 16) * 64 * 4
    assert st.st_blocks * 512 < st.st_size // 8  # not allocated until written
    m = ff.open_array(tmp_path / "seg", "ARNA", "r+")
    assert isinstance(m, np.memmap)
    assert not m[[0, -1]].any()
    m[3, 5] = 2.5
    m.flush()
    assert ff.open_array(tmp_path / "seg", "ARNA")[3, 5] == 2.5
    assert not (tmp_path / "seg.tmp").exists()
    for shape, dtype in [((4,), object), ((), np.int8), ((-1,), np.int8)]:
        with pytest.raises(ParameterError):
            ff.create_array_file(tmp_path / "bad", shape, dtype, "ARNA")
