"""Append-only arenas: a growing array kept in segment files of bounded, fixed size.

An arena is a sequence of elements (rows of ``width`` items of one dtype, or single
items when ``width`` is None) numbered 0, 1, 2, ...  Element i lives in segment
``i >> seg_bits`` at position ``i & (2**seg_bits - 1)``.  Each segment is one mmfs file
(kind ARNA, no payload checksum) created at its full size by ``create_array_file``
(sparse on disk: only written pages take space), so a segment never changes size and a
mapping of it never needs to grow: appending to the arena writes (pwrite) into the tail
of the last segment or creates the next one.

Who sees what.  The number of *committed* elements lives in the store's manifest, not
here.  A writer appends beyond it in place; readers only ever read elements below the
count of the manifest they loaded, so bytes a reader may look at are never rewritten.
Uncommitted bytes left by a writer that died are simply overwritten by the next one.

Segment files are named ``<prefix>-<segment:06d>.mmfs``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from mmfs.errors import CorruptStoreError, MmfsError
from mmfs.storage.fileformat import HEADER_SIZE, create_array_file, open_array, read_header

__all__ = ["Arena", "seg_bits_for"]


def seg_bits_for(element_bytes: int, segment_bytes: int, minimum: int = 1) -> int:
    """log2 of the elements per segment: the most that fit ``segment_bytes`` (a power of
    two), and at least ``minimum`` (rounded up to a power of two)."""
    fit = max(1, segment_bytes // max(1, element_bytes))
    bits = fit.bit_length() - 1
    return max(bits, (max(1, minimum) - 1).bit_length())


class Arena:
    """One arena of a feature group.  Cheap to create; maps segments on demand and keeps
    the mappings (a segment file's committed part never changes, so a mapping stays
    valid across generations)."""

    __slots__ = ("_fds", "_maps", "directory", "dtype", "prefix", "seg_bits", "width")

    def __init__(
        self, directory: str, prefix: str, dtype: Any, width: int | None, seg_bits: int
    ) -> None:
        self.directory = directory
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self.width = width
        self.seg_bits = seg_bits
        self._maps: dict[int, np.ndarray] = {}
        self._fds: dict[int, int] = {}

    @property
    def seg_len(self) -> int:
        return 1 << self.seg_bits

    def path(self, segment: int) -> str:
        return os.path.join(self.directory, f"{self.prefix}-{segment:06d}.mmfs")

    def _shape(self) -> tuple[int, ...]:
        return (self.seg_len,) if self.width is None else (self.seg_len, self.width)

    def segments_for(self, n: int) -> int:
        """How many segments hold elements [0, n)."""
        return (n + self.seg_len - 1) >> self.seg_bits

    # -- reading ---------------------------------------------------------------------

    def segment(self, segment: int) -> np.ndarray:
        """The read-only mapping of one segment (validated against the arena's shape)."""
        m = self._maps.get(segment)
        if m is None:
            path = self.path(segment)
            m = open_array(path, "ARNA", "r")
            if m.dtype != self.dtype or m.shape != self._shape():
                raise CorruptStoreError(
                    f"{path}: arena segment of dtype {m.dtype} and shape {m.shape}, expected "
                    f"{self.dtype} and {self._shape()}"
                )
            self._maps[segment] = m
        return m

    def addresses(self, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Base addresses of the segments that hold elements [0, n), for the kernels, and
        the mappings themselves: whoever passes the addresses on must keep the mappings
        alive as long as they may be used (closing the arena forgets its own)."""
        maps = [self.segment(s) for s in range(self.segments_for(n))]
        return np.array([m.ctypes.data for m in maps], dtype=np.intp), maps

    # -- writing (the writer only) -----------------------------------------------------
    #
    # Writes go through pwrite, not a writable mapping: a full disk then raises OSError
    # (ENOSPC) instead of killing the process with SIGBUS, and readers' read-only
    # mappings see the same page cache.

    def _fd(self, segment: int, durable: bool) -> int:
        fd = self._fds.get(segment)
        if fd is None:
            path = self.path(segment)
            try:
                header = read_header(path, "ARNA")
                ok = (
                    header.dtype == self.dtype
                    and header.shape == self._shape()
                    and not header.has_payload_checksum
                    and header.data_offset == HEADER_SIZE
                )
            except (OSError, MmfsError):
                ok = False
            if not ok:  # missing, or left half-made by a writer that died: make it anew
                self._maps.pop(segment, None)
                create_array_file(path, self._shape(), self.dtype, "ARNA", durable=durable)
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            self._fds[segment] = fd
        return fd

    def write(self, start: int, values: np.ndarray, *, durable: bool) -> None:
        """Write ``values`` as elements [start, start + len(values)) (beyond the committed
        count: no reader looks there)."""
        values = np.ascontiguousarray(values, dtype=self.dtype)
        per = self.dtype.itemsize * (self.width or 1)
        flat = values.reshape(-1).view(np.uint8)
        i, done, n = start, 0, values.shape[0]
        while done < n:
            s, off = i >> self.seg_bits, i & (self.seg_len - 1)
            take = min(n - done, self.seg_len - off)
            fd = self._fd(s, durable)
            chunk = memoryview(flat[done * per : (done + take) * per].data)
            pos = HEADER_SIZE + off * per
            while chunk.nbytes:
                written = os.pwrite(fd, chunk, pos)
                chunk = chunk[written:]
                pos += written
            i += take
            done += take

    def flush(self, start: int, stop: int) -> None:
        """Make elements [start, stop) durable (fsync of the touched segments)."""
        if stop <= start:
            return
        for s in range(start >> self.seg_bits, ((stop - 1) >> self.seg_bits) + 1):
            fd = self._fds.get(s)
            if fd is not None:
                os.fsync(fd)

    def close(self) -> None:
        """Close the writer's descriptors and forget the mappings."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._maps.clear()

    def remove_segments_from(self, first: int) -> None:
        """Delete segment files >= first (left by a writer that died before commit)."""
        s = first
        while os.path.exists(self.path(s)):
            self._maps.pop(s, None)
            fd = self._fds.pop(s, None)
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(s))
            s += 1
