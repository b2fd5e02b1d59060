"""Storage: the files a store is made of and the rules for writing them.

* :mod:`mmfs.storage.fileformat` — the header every mmfs file starts with (magic, kind,
  format version, dtype, shape, offsets, checksums), atomic publishing by rename, and
  validated memory-mapped reads.  Its docstring is the format specification.
* :mod:`mmfs.storage.locking` — the single-writer lock of a store directory.

Nothing here is unpickled or evaluated, and nothing is imported by ``import mmfs`` until
the store needs it.
"""

from __future__ import annotations

__all__: list[str] = []
