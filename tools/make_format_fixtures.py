"""Write the binary-compatibility fixtures of the current mmfs file format.

    python tools/make_format_fixtures.py [--out tests/data] [--force]

One small file per file kind, named ``format-<major>.<minor>-<KIND>.mmfs``.  They are
committed, and ``tests/test_fileformat.py`` checks that every later build reads each of
them to the exact values below (as annoy keeps ``test/test.tree``).  A released fixture is
never rewritten: existing files are left alone unless ``--force`` is given, which is only
for a format version that has not been released yet.  A new format version gets new files
beside the old ones.

The values are repeated literally in the test on purpose: the test must not trust this
script.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmfs.storage.fileformat import FORMAT_MAJOR, FORMAT_MINOR, write_array_file, write_json_file

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


def _arena(path: str) -> None:
    # Arena segments are written in place while unsealed: no payload checksum.
    data = np.arange(12, dtype=np.float32).reshape(3, 4) / 4 - 1
    write_array_file(path, data, "ARNA", payload_checksum=False)


def _key_index(path: str) -> None:
    keys = np.array([-1, 0, 1, 2**40, -(2**63), 2**63 - 1, 42, -7], dtype=np.int64)
    write_array_file(path, keys, "KIDX")


def _version_table(path: str) -> None:
    write_array_file(path, np.array([[0, 1, 2, 3], [4, 5, 2**32 - 1, 0]], np.uint32), "VTAB")


def _head(path: str) -> None:
    # The generation counter is written in place: no payload checksum.
    write_array_file(path, np.array([7, 0, 0, 0], np.uint64), "HEAD", payload_checksum=False)


def _meta(path: str) -> None:
    write_array_file(path, np.array([[0.5, 0.25, -1.0], [-3.0, 0.0, 2.0]], np.float32), "META")


def _test(path: str) -> None:
    values = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, np.inf, -np.inf, 2.0**-24] * 3)
    write_array_file(path, values.astype(np.float16).reshape(1, 2, 3, 4), "TEST")


def _manifest(path: str) -> None:
    write_json_file(path, MANIFEST, "MNFT")


WRITERS: dict[str, Callable[[str], None]] = {
    "ARNA": _arena,
    "KIDX": _key_index,
    "MNFT": _manifest,
    "VTAB": _version_table,
    "HEAD": _head,
    "META": _meta,
    "TEST": _test,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the format fixtures of this build.")
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--out", type=Path, default=root / "tests" / "data")
    parser.add_argument("--force", action="store_true", help="overwrite existing fixtures")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for kind, write in WRITERS.items():
        path = args.out / f"format-{FORMAT_MAJOR}.{FORMAT_MINOR}-{kind}.mmfs"
        if path.exists() and not args.force:
            print(f"kept    {path} (released fixtures are never rewritten)")
            continue
        write(os.fspath(path))
        print(f"wrote   {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
