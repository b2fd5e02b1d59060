"""The mmfs file format: one self-describing header in front of every file in a store.

Every file mmfs writes (arena segments, the key index, the version table, manifests) is one
*header* of 128 bytes followed by one *payload*: the raw bytes of a C-ordered numpy array.
A reader learns everything it needs from the header (what the file is, which format
version wrote it, dtype, shape, where the payload starts and how long it is, checksums),
so a damaged or foreign file is refused with a clear error before a single byte of it is
mapped, and nothing in a store is ever unpickled or evaluated.

Layout (format 1.0)
-------------------
All integers are little-endian, whatever the host.  ``struct`` format ``HEADER_FORMAT``::

    offset size type      field
    ------ ---- --------- --------------------------------------------------------------
         0    4 bytes     magic          b"MMFS"
         4    4 bytes     kind           file-kind tag, 4 ASCII bytes from [A-Z0-9_]:
                                         b"ARNA" arena segment, b"KIDX" key index,
                                         b"MNFT" manifest (JSON), b"VTAB" version table,
                                         b"HEAD" generation counter, b"META" feature
                                         metadata array, b"TEST" tests and tools
                                         (see KINDS)
         8    2 uint16    major          format major version (this build: 1)
        10    2 uint16    minor          format minor version (this build: 0)
        12    1 uint8     dtype_code     element type, see DTYPE_CODES (0 is never valid)
        13    1 uint8     ndim           number of dimensions, 1 to 4
        14    2 bytes     reserved       zero
        16   32 uint64[4] shape          shape[0..ndim-1]; the unused entries are zero
        48    8 uint64    data_offset    where the payload starts: a multiple of 64 and at
                                         least 128 (format 1.0 writes exactly 128)
        56    8 uint64    data_length    payload bytes = prod(shape) * itemsize
        64    4 uint32    flags          bit 0 FLAG_PAYLOAD_CRC: payload_crc32 is present;
                                         other bits are zero in format 1.0
        68    4 uint32    payload_crc32  zlib.crc32 of the data_length payload bytes, or
                                         zero when FLAG_PAYLOAD_CRC is clear
        72   52 bytes     reserved       zero
       124    4 uint32    header_crc32   zlib.crc32 of bytes 0..127 with this field zeroed
       128      ...       payload        data_length bytes, C order, little-endian elements

The file ends exactly at ``data_offset + data_length``.  The payload starts at a multiple
of 64 bytes, so ``np.memmap`` gives an array aligned for any dtype and for SIMD loads (a
mapping starts on a page boundary, and 64 divides every page size).

Element types (``DTYPE_CODES``): 1 bool (one byte, 0 or 1), 2 int8, 3 int16, 4 int32,
5 int64, 6 uint8, 7 uint16, 8 uint32, 9 uint64, 10 float16, 11 float32, 12 float64, all
little-endian.  An array with another dtype (object, strings, structured, complex,
datetime) is refused when written; a header with an unknown code is refused when read.

Dimensions: 1 to 4.  A 0-d array is refused when written (write ``x.reshape(1)``): every
array a store keeps is a column, a matrix or a stack of them, and refusing 0 lets a zero
``ndim`` byte mean damage.  Empty arrays (a zero in the shape) are fine: their payload is
empty and ``open_array`` returns a read-only empty ndarray (nothing to map).

Checksums
---------
* ``header_crc32`` covers the 128 header bytes (with its own four bytes zeroed), so every
  single-bit error and every burst up to 32 bits in the header is detected, wherever it
  falls.  It is always present and always checked.
* ``payload_crc32`` covers exactly the ``data_length`` payload bytes.  It is optional
  (``write_array_file(..., payload_checksum=False)``) because a large mutable arena is
  written in place while unsealed and may be checksummed per segment later.  A file that
  carries one cannot be opened with ``mode="r+"`` (writing would invalidate it); files
  meant to be written in place are written with ``payload_checksum=False``.
  ``open_array`` checks it when ``verify=True``; the default ``verify=None`` checks it for
  payloads up to ``VERIFY_DEFAULT_MAX_BYTES`` (8 MiB: about 4 ms of zlib.crc32) and not
  for larger ones, whose pages would all have to be read.  An unverified payload with a
  flipped bit loads with the flipped bit: the header still guarantees dtype, shape and
  bounds, never the values.
* CRC32 detects accidents (torn writes, bit rot, truncation, swapped files), not malice.

Reading
-------
``read_header``/``open_array`` check, in this order: the file is not empty and starts with
the magic (else ``FormatError``: not an mmfs file, naming .npy, PNG, zip, pickle, HDF5 or
SQLite files when it recognises them); the header is complete (else ``CorruptStoreError``);
the major version (``FormatError``); the header checksum (``CorruptStoreError``); the kind
(``FormatError`` naming the expected and the found kind); then dtype code, ndim, shape,
``data_length == prod(shape) * itemsize``, offset, flags, reserved bytes and the exact file
size (``CorruptStoreError``); finally, when verifying, the payload checksum
(``CorruptStoreError``).  Only then is the payload mapped.  Every message names the file.

How versions evolve
-------------------
* magic, kind, major and minor (bytes 0..11) never move, in any version.
* A reader refuses a file with a newer **major** version (``FormatError`` naming both
  versions) and reads any newer **minor** version of its major.  So a minor version may
  only add things an older reader can safely skip: meanings for reserved bytes, flag bits,
  a larger 64-aligned ``data_offset`` (room between header and payload), bytes after the
  payload.  For such a file the reader ignores reserved bytes, unknown flags, the gap and
  trailing bytes; for a file of its own minor version or older it requires them to be
  zero/absent (``CorruptStoreError``), which catches headers glued onto the wrong payload.
  A new dtype code also needs a minor bump; an older reader refuses it with a message
  naming the code and the file's version.
* Anything else (moving or resizing a field, changing a meaning) is a new major version.
* Writers always write the newest version they know.  Each released version keeps one
  fixture file per kind under ``tests/data/`` that every later build must read.

Publishing
----------
``write_array_file`` and ``write_json_file`` never rewrite a file in place: they write
``<path>.tmp`` in the same directory, flush and ``os.fsync`` it, ``os.replace`` it onto
``<path>`` and ``fsync`` the directory (``durable=False`` skips both fsyncs).  A reader that
mapped the old file keeps the old inode and sees consistent old bytes; a new open sees the
new file; nobody sees half of either.  A writer killed before the rename leaves the old file
intact plus, at worst, a stale ``<path>.tmp`` that the next write of that path overwrites
(store recovery may delete ``*.tmp``).  ``<path>.tmp`` is a fixed name: only one writer may
publish a given path at a time (the store's writer lock, ``mmfs.storage.locking``).

Validation reads the header, the size and the mapping from one open file descriptor, so a
rename that lands between the checks and the mapping cannot slip a different file in.

JSON documents
--------------
Small documents (manifests) use the same header: dtype uint8, ndim 1, payload = UTF-8 JSON,
always with a payload checksum, at most ``MAX_JSON_BYTES``.  The JSON is strict: no NaN or
Infinity, no duplicate object keys, written with sorted keys (the same document always gives
the same bytes).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Final, Literal

import numpy as np

from mmfs.errors import CorruptStoreError, FormatError, ParameterError

__all__ = [
    "DTYPE_CODES",
    "FLAG_PAYLOAD_CRC",
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "HEADER_FORMAT",
    "HEADER_SIZE",
    "KINDS",
    "MAGIC",
    "MAX_JSON_BYTES",
    "MAX_NDIM",
    "PAYLOAD_ALIGNMENT",
    "VERIFY_DEFAULT_MAX_BYTES",
    "Header",
    "create_array_file",
    "open_array",
    "read_header",
    "read_json_file",
    "write_array_file",
    "write_json_file",
]

MAGIC: Final = b"MMFS"
FORMAT_MAJOR: Final = 1
FORMAT_MINOR: Final = 0
HEADER_FORMAT: Final = "<4s4sHHBB2s4QQQII52sI"
HEADER_SIZE: Final = 128
PAYLOAD_ALIGNMENT: Final = 64
MAX_NDIM: Final = 4
FLAG_PAYLOAD_CRC: Final = 1 << 0
KNOWN_FLAGS: Final = FLAG_PAYLOAD_CRC
VERIFY_DEFAULT_MAX_BYTES: Final = 8 << 20
MAX_JSON_BYTES: Final = 16 << 20

_HEADER_STRUCT: Final = struct.Struct(HEADER_FORMAT)
_HEADER_CRC_OFFSET: Final = 124
assert _HEADER_STRUCT.size == HEADER_SIZE

#: The file kinds of format 1 (tag -> what the file holds).  A new kind is added here and
#: in the module docstring, with a fixture under tests/data/.
KINDS: Final[Mapping[str, str]] = {
    "ARNA": "arena segment",
    "KIDX": "key index",
    "MNFT": "manifest",
    "VTAB": "version table",
    "HEAD": "generation counter",
    "META": "feature metadata",
    "TEST": "test file",
}
_KIND_RE: Final = re.compile(rb"[A-Z0-9_]{4}")

#: dtype code <-> numpy dtype (always little-endian on disk).
DTYPE_CODES: Final[Mapping[int, np.dtype[Any]]] = {
    1: np.dtype("|b1"),
    2: np.dtype("|i1"),
    3: np.dtype("<i2"),
    4: np.dtype("<i4"),
    5: np.dtype("<i8"),
    6: np.dtype("|u1"),
    7: np.dtype("<u2"),
    8: np.dtype("<u4"),
    9: np.dtype("<u8"),
    10: np.dtype("<f2"),
    11: np.dtype("<f4"),
    12: np.dtype("<f8"),
}
_CODE_OF: Final[Mapping[tuple[str, int], int]] = {
    (dt.kind, dt.itemsize): code for code, dt in DTYPE_CODES.items()
}
_SUPPORTED_DTYPES: Final = "bool, int8/16/32/64, uint8/16/32/64, float16/32/64"

# Leading bytes of formats people may hand us by mistake, to name them in the error.
_FOREIGN: Final = (
    (b"\x93NUMPY", "a numpy .npy file"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"PK\x03\x04", "a zip archive (or .npz)"),
    (b"\x80", "a Python pickle"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"SQLite format 3\x00", "an SQLite database"),
)

StrPath = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class Header:
    """The decoded, validated header of an mmfs file (see the module docstring)."""

    kind: str
    major: int
    minor: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    data_offset: int
    data_length: int
    flags: int
    payload_crc32: int | None
    header_crc32: int

    @property
    def has_payload_checksum(self) -> bool:
        return self.payload_crc32 is not None

    @property
    def file_size(self) -> int:
        """Bytes of a well-formed file of this version: header, gap and payload."""
        return self.data_offset + self.data_length


# --------------------------------------------------------------------------- packing


def _pack_fields(
    *,
    kind: bytes,
    dtype_code: int,
    shape: tuple[int, ...],
    data_length: int,
    flags: int,
    payload_crc32: int,
    major: int = FORMAT_MAJOR,
    minor: int = FORMAT_MINOR,
    ndim: int | None = None,
    data_offset: int = HEADER_SIZE,
    magic: bytes = MAGIC,
    reserved1: bytes = bytes(2),
    reserved2: bytes = bytes(52),
) -> bytes:
    """Pack raw header fields and seal them with the header CRC (no validation: tests use
    it to build well-sealed but malformed headers)."""
    dims = tuple(shape) + (0,) * (MAX_NDIM - len(shape))
    raw = _HEADER_STRUCT.pack(
        magic,
        kind,
        major,
        minor,
        dtype_code,
        len(shape) if ndim is None else ndim,
        reserved1,
        *dims,
        data_offset,
        data_length,
        flags,
        payload_crc32,
        reserved2,
        0,
    )
    return raw[:_HEADER_CRC_OFFSET] + struct.pack("<I", zlib.crc32(raw))


def _check_kind_arg(kind: object) -> bytes:
    if not isinstance(kind, str) or kind not in KINDS:
        known = ", ".join(repr(k) for k in KINDS)
        raise ParameterError(
            f"file kind must be one of {known}, got {kind!r} "
            "(a new kind is registered in mmfs.storage.fileformat.KINDS)"
        )
    return kind.encode("ascii")


def _as_storable(array: Any) -> tuple[np.ndarray, int]:
    """A C-contiguous little-endian copy/view of ``array`` and its dtype code."""
    try:
        arr = np.asarray(array)
    except Exception as exc:  # anything numpy cannot turn into an array
        raise ParameterError(
            f"expected an array to write, got {type(array).__name__}: {exc}"
        ) from None
    code = _CODE_OF.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise ParameterError(f"cannot store dtype {arr.dtype}: mmfs files hold {_SUPPORTED_DTYPES}")
    if not 1 <= arr.ndim <= MAX_NDIM:
        hint = " (write x.reshape(1) for a single value)" if arr.ndim == 0 else ""
        raise ParameterError(
            f"mmfs files hold arrays of 1 to {MAX_NDIM} dimensions, got ndim={arr.ndim}{hint}"
        )
    arr = np.ascontiguousarray(arr, dtype=DTYPE_CODES[code])
    return arr, code


# --------------------------------------------------------------------------- publishing


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems cannot fsync a directory; the rename stands
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _publish(path: StrPath, header: bytes, payload: memoryview | int, durable: bool) -> None:
    """Write header + payload to ``<path>.tmp``, fsync, rename onto ``path``, fsync dir.
    An int payload is a length: the file is extended to it with zeros (ftruncate), which
    a file system with sparse files does not allocate until written."""
    target = os.fspath(path)
    tmp = target + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            if isinstance(payload, int):
                f.truncate(HEADER_SIZE + payload)
            else:
                f.write(payload)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_directory(os.path.dirname(os.path.abspath(target)))


def write_array_file(
    path: StrPath,
    array: Any,
    kind: str,
    *,
    payload_checksum: bool = True,
    durable: bool = True,
) -> Header:
    """Publish ``array`` as the mmfs file ``path`` (atomically; see the module docstring).

    The array is stored C-ordered and little-endian; its dtype must be one of
    ``DTYPE_CODES`` and it must have 1 to 4 dimensions.  Returns the header written.
    """
    kind_tag = _check_kind_arg(kind)
    arr, code = _as_storable(array)
    payload = arr.reshape(-1).view(np.uint8).data
    crc = zlib.crc32(payload) if payload_checksum else 0
    raw = _pack_fields(
        kind=kind_tag,
        dtype_code=code,
        shape=arr.shape,
        data_length=payload.nbytes,
        flags=FLAG_PAYLOAD_CRC if payload_checksum else 0,
        payload_crc32=crc,
    )
    _publish(path, raw, payload, durable)
    return _decode(raw, HEADER_SIZE + payload.nbytes, os.fspath(path), None)


def create_array_file(
    path: StrPath, shape: tuple[int, ...], dtype: Any, kind: str, *, durable: bool = True
) -> Header:
    """Publish a zero-filled file of ``shape`` and ``dtype`` meant to be written in place.

    The payload is not written but allocated by ``ftruncate``: on file systems with sparse
    files (ext4, xfs, tmpfs) it takes no space until written, so a preallocated arena
    segment costs only the rows stored in it.  No payload checksum (the file is meant for
    ``open_array(..., mode="r+")``).  Published by atomic rename like every other file.
    """
    kind_tag = _check_kind_arg(kind)
    dt = np.dtype(dtype)
    code = _CODE_OF.get((dt.kind, dt.itemsize))
    if code is None or not 1 <= len(shape) <= MAX_NDIM or min(shape) < 0:
        raise ParameterError(f"cannot create an mmfs file of dtype {dt} and shape {shape}")
    data_length = math.prod(shape) * dt.itemsize
    raw = _pack_fields(
        kind=kind_tag,
        dtype_code=code,
        shape=tuple(shape),
        data_length=data_length,
        flags=0,
        payload_crc32=0,
    )
    _publish(path, raw, data_length, durable)
    return _decode(raw, HEADER_SIZE + data_length, os.fspath(path), None)


# --------------------------------------------------------------------------- reading


def _describe_foreign(head: bytes) -> str:
    for prefix, name in _FOREIGN:
        if head.startswith(prefix):
            return f"it looks like {name}"
    return f"it starts with {head[:8]!r}, expected {MAGIC!r}"


def _decode(raw: bytes, file_size: int, source: str, expected_kind: str | None) -> Header:
    """Validate header bytes ``raw`` (at most HEADER_SIZE) against a file of ``file_size``."""
    if file_size == 0:
        raise FormatError(f"not an mmfs file: {source} is empty (0 bytes)")
    if not raw[: len(MAGIC)] == MAGIC[: len(raw)]:
        raise FormatError(f"not an mmfs file: {source}: {_describe_foreign(raw)}")
    if len(raw) < HEADER_SIZE:
        raise CorruptStoreError(
            f"truncated mmfs file {source}: {file_size} bytes, shorter than the "
            f"{HEADER_SIZE}-byte header"
        )
    (
        _magic,
        kind_tag,
        major,
        minor,
        code,
        ndim,
        reserved1,
        *dims,
        data_offset,
        data_length,
        flags,
        payload_crc,
        reserved2,
        header_crc,
    ) = _HEADER_STRUCT.unpack(raw)
    version = f"{major}.{minor}"
    sealed = raw[:_HEADER_CRC_OFFSET] + bytes(4)
    crc_ok = zlib.crc32(sealed) == header_crc
    # The version decides the layout, so it is judged before the checksum; the checksum
    # (at its format-1 place) only adds a hint that the version field itself may be hit.
    damaged = "" if crc_ok else " (unless the header is damaged: its checksum fails)"
    if major > FORMAT_MAJOR:
        raise FormatError(
            f"{source} has mmfs format version {version}; this build of mmfs reads format "
            f"{FORMAT_MAJOR} ({FORMAT_MAJOR}.0 to {FORMAT_MAJOR}.{FORMAT_MINOR}, and newer "
            f"{FORMAT_MAJOR}.x minors): upgrade mmfs to open it{damaged}"
        )
    if major < 1:
        raise FormatError(
            f"{source} has mmfs format version {version}, which no release wrote; this build "
            f"reads format {FORMAT_MAJOR}{damaged}"
        )
    if not crc_ok:
        raise CorruptStoreError(
            f"corrupt mmfs file {source}: header checksum is {header_crc:#010x}, the header "
            f"bytes give {zlib.crc32(sealed):#010x} (format {version} header)"
        )
    # From here the header is as its writer sealed it: a failure is a writer bug or a
    # crafted file, still reported as corruption, never trusted.
    if not _KIND_RE.fullmatch(kind_tag):
        raise CorruptStoreError(f"corrupt mmfs file {source}: invalid kind tag {kind_tag!r}")
    kind = kind_tag.decode("ascii")
    if expected_kind is not None and kind != expected_kind:
        raise FormatError(
            f"{source} is an mmfs {KINDS.get(kind, 'unknown')} file (kind {kind!r}), "
            f"expected a {KINDS[expected_kind]} file (kind {expected_kind!r})"
        )
    newer_minor = minor > FORMAT_MINOR
    dtype = DTYPE_CODES.get(code)
    if dtype is None:
        known = f"1 to {max(DTYPE_CODES)}"
        if newer_minor:
            raise FormatError(
                f"{source} (format {version}) stores dtype code {code}, which this build "
                f"does not know (it knows {known}): upgrade mmfs to open it"
            )
        raise CorruptStoreError(
            f"corrupt mmfs file {source}: unknown dtype code {code} (expected {known})"
        )
    if not 1 <= ndim <= MAX_NDIM:
        raise CorruptStoreError(
            f"corrupt mmfs file {source}: ndim is {ndim}, expected 1 to {MAX_NDIM}"
        )
    if any(dims[ndim:]):
        raise CorruptStoreError(
            f"corrupt mmfs file {source}: shape entries past ndim={ndim} are "
            f"{tuple(dims[ndim:])}, expected zeros"
        )
    shape = tuple(dims[:ndim])
    expected_length = math.prod(shape) * dtype.itemsize
    if data_length != expected_length:
        raise CorruptStoreError(
            f"corrupt mmfs file {source}: payload length is {data_length} bytes, shape "
            f"{shape} of {dtype} needs {expected_length}"
        )
    if data_offset < HEADER_SIZE or data_offset % PAYLOAD_ALIGNMENT:
        raise CorruptStoreError(
            f"corrupt mmfs file {source}: data offset {data_offset} is not a multiple of "
            f"{PAYLOAD_ALIGNMENT} at or after the {HEADER_SIZE}-byte header"
        )
    has_crc = bool(flags & FLAG_PAYLOAD_CRC)
    if not newer_minor:
        if flags & ~KNOWN_FLAGS:
            raise CorruptStoreError(
                f"corrupt mmfs file {source}: unknown flags {flags & ~KNOWN_FLAGS:#x} in a "
                f"format {version} header"
            )
        if any(reserved1) or any(reserved2):
            raise CorruptStoreError(
                f"corrupt mmfs file {source}: reserved header bytes are not zero in a "
                f"format {version} header"
            )
        if data_offset != HEADER_SIZE:
            raise CorruptStoreError(
                f"corrupt mmfs file {source}: data offset {data_offset}, format {version} "
                f"puts the payload at {HEADER_SIZE}"
            )
        if not has_crc and payload_crc:
            raise CorruptStoreError(
                f"corrupt mmfs file {source}: a payload checksum is stored but its flag is clear"
            )
    end = data_offset + data_length
    if file_size < end:
        raise CorruptStoreError(
            f"truncated mmfs file {source}: {file_size} bytes, the header says "
            f"{end} ({data_offset} + {data_length} bytes of payload)"
        )
    if file_size > end and not newer_minor:
        raise CorruptStoreError(
            f"corrupt mmfs file {source}: {file_size} bytes, the header says {end}; "
            f"{file_size - end} unexpected bytes follow the payload"
        )
    return Header(
        kind=kind,
        major=major,
        minor=minor,
        dtype=dtype,
        shape=shape,
        data_offset=data_offset,
        data_length=data_length,
        flags=flags,
        payload_crc32=payload_crc if has_crc else None,
        header_crc32=header_crc,
    )


def _check_expected_kind(expected_kind: object) -> str | None:
    if expected_kind is None:
        return None
    return _check_kind_arg(expected_kind).decode("ascii")


def _size_of(f: IO[bytes]) -> int:
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):  # BytesIO and friends
        return f.seek(0, io.SEEK_END)


def _read_header_from(f: IO[bytes], source: str, expected_kind: str | None) -> Header:
    size = _size_of(f)
    f.seek(0)
    raw = f.read(HEADER_SIZE)
    return _decode(raw, size, source, expected_kind)


def _open_for_reading(path: StrPath, mode: str) -> IO[bytes]:
    source = os.fspath(path)
    if os.path.isdir(source):
        raise FormatError(f"not an mmfs file: {source} is a directory")
    return open(source, mode)  # FileNotFoundError/PermissionError pass through as they are


def read_header(path_or_fileobj: StrPath | IO[bytes], expected_kind: str | None = None) -> Header:
    """Read and validate the header of an mmfs file (a path, or a binary seekable file).

    Checks magic, version, header checksum, kind (when ``expected_kind`` is given), dtype,
    shape, offsets and the file size; does not read the payload.
    """
    expected = _check_expected_kind(expected_kind)
    if isinstance(path_or_fileobj, str | os.PathLike):
        with _open_for_reading(path_or_fileobj, "rb") as f:
            return _read_header_from(f, os.fspath(path_or_fileobj), expected)
    source = str(getattr(path_or_fileobj, "name", "<file object>"))
    return _read_header_from(path_or_fileobj, source, expected)


def _crc_of_file_range(f: IO[bytes], offset: int, length: int, source: str) -> int:
    """zlib.crc32 of ``length`` bytes at ``offset``, read in chunks (memory stays small)."""
    f.seek(offset)
    crc = 0
    remaining = length
    while remaining:
        chunk = f.read(min(remaining, 1 << 22))
        if not chunk:
            raise CorruptStoreError(
                f"truncated mmfs file {source}: it ended {remaining} bytes before the end of "
                "its payload while being read"
            )
        crc = zlib.crc32(chunk, crc)
        remaining -= len(chunk)
    return crc


def _verify_payload(f: IO[bytes], header: Header, source: str) -> None:
    assert header.payload_crc32 is not None
    crc = _crc_of_file_range(f, header.data_offset, header.data_length, source)
    if crc != header.payload_crc32:
        raise CorruptStoreError(
            f"corrupt mmfs file {source}: payload checksum is {header.payload_crc32:#010x}, "
            f"the {header.data_length} payload bytes give {crc:#010x}"
        )


_MODES: Final = {"r": "rb", "c": "rb", "r+": "r+b"}


def open_array(
    path: StrPath,
    expected_kind: str | None,
    mode: Literal["r", "r+", "c"] = "r",
    *,
    verify: bool | None = None,
    verify_limit: int | None = None,
) -> np.memmap | np.ndarray:
    """Validate the mmfs file ``path`` and map its payload as an array.

    ``mode``: ``"r"`` read-only (the default), ``"c"`` copy-on-write (writes stay in this
    process), ``"r+"`` writes through to the file (refused for a file that carries a
    payload checksum, which writing would invalidate).  ``verify``: check the payload
    checksum (when the file has one) before mapping; ``None`` checks payloads up to
    ``verify_limit`` bytes (None: ``VERIFY_DEFAULT_MAX_BYTES``).  An empty payload gives an
    empty ndarray, read-only for ``mode="r"``.
    """
    if mode not in _MODES:
        raise ParameterError(f"mode must be 'r', 'r+' or 'c', got {mode!r}")
    if verify is not None and not isinstance(verify, bool):
        raise ParameterError(f"verify must be True, False or None, got {verify!r}")
    expected = _check_expected_kind(expected_kind)
    source = os.fspath(path)
    with _open_for_reading(path, _MODES[mode]) as f:
        header = _read_header_from(f, source, expected)
        if mode == "r+" and header.has_payload_checksum:
            raise ParameterError(
                f"{source} carries a payload checksum, so it cannot be opened for writing "
                "(mode='r+'); files meant to be written in place are written with "
                "payload_checksum=False"
            )
        if verify is None:
            limit = VERIFY_DEFAULT_MAX_BYTES if verify_limit is None else verify_limit
            verify = header.data_length <= limit
        if verify and header.has_payload_checksum:
            _verify_payload(f, header, source)
        if header.data_length == 0:
            empty = np.zeros(header.shape, dtype=header.dtype)
            empty.flags.writeable = mode != "r"
            return empty
        return np.memmap(
            f, dtype=header.dtype, mode=mode, offset=header.data_offset, shape=header.shape
        )


# --------------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def write_json_file(path: StrPath, obj: Any, kind: str, *, durable: bool = True) -> Header:
    """Publish ``obj`` as a strict-JSON mmfs document (atomically, checksummed).

    Keys are sorted, so the same document always gives the same bytes.  NaN/Infinity,
    non-string keys that JSON would silently convert, and documents over
    ``MAX_JSON_BYTES`` are refused with ParameterError.
    """
    kind_tag = _check_kind_arg(kind)
    try:
        text = json.dumps(
            obj, allow_nan=False, sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise ParameterError(f"cannot write {os.fspath(path)} as strict JSON: {exc}") from None
    data = text.encode("utf-8")
    if len(data) > MAX_JSON_BYTES:
        raise ParameterError(
            f"JSON document for {os.fspath(path)} is {len(data)} bytes, over the "
            f"{MAX_JSON_BYTES}-byte limit of mmfs JSON files"
        )
    raw = _pack_fields(
        kind=kind_tag,
        dtype_code=_CODE_OF[("u", 1)],
        shape=(len(data),),
        data_length=len(data),
        flags=FLAG_PAYLOAD_CRC,
        payload_crc32=zlib.crc32(data),
    )
    _publish(path, raw, memoryview(data), durable)
    return _decode(raw, HEADER_SIZE + len(data), os.fspath(path), None)


def read_json_file(path: StrPath, kind: str) -> Any:
    """Read a document written by ``write_json_file``: header, checksum, then strict JSON."""
    expected = _check_kind_arg(kind).decode("ascii")
    source = os.fspath(path)
    with _open_for_reading(path, "rb") as f:
        header = _read_header_from(f, source, expected)
        if header.dtype != np.dtype(np.uint8) or len(header.shape) != 1:
            raise CorruptStoreError(
                f"{source} is not a JSON document: payload is {header.shape} of "
                f"{header.dtype}, expected 1-d uint8"
            )
        if not header.has_payload_checksum:
            raise CorruptStoreError(f"{source} is not a JSON document: it has no checksum")
        if header.data_length > MAX_JSON_BYTES:
            raise CorruptStoreError(
                f"{source}: JSON document of {header.data_length} bytes is over the "
                f"{MAX_JSON_BYTES}-byte limit"
            )
        f.seek(header.data_offset)
        data = f.read(header.data_length)
    if zlib.crc32(data) != header.payload_crc32:
        raise CorruptStoreError(
            f"corrupt mmfs file {source}: payload checksum is {header.payload_crc32:#010x}, "
            f"the {len(data)} payload bytes give {zlib.crc32(data):#010x}"
        )
    try:
        return json.loads(
            data.decode("utf-8"),
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicates,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptStoreError(f"{source} does not hold strict UTF-8 JSON: {exc}") from None
