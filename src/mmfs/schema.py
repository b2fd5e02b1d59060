"""Feature types, and how a feature group lays its rows out in a record.

A schema maps feature names to types built by these factories::

    mmfs.scalar("float32")           float32, float64, int64 or bool, one value per row
    mmfs.category()                  a string, stored as an int32 code plus a dictionary
    mmfs.dense(128)                  a vector: float32 (default), float16,
    mmfs.dense(128, dtype="int8")    int8 scalar-quantised (per-dimension scale/offset),
    mmfs.dense(64, dtype="bool")     bool, stored bit-packed (8 dimensions per byte)
    mmfs.sparse(50_000)              a CSR row of float32 values with int32 indices

Records.  Every write of one key is one *record* of ``record_bytes`` in the group's
arena: ``slot`` (int64, offset 0) and ``event_time`` (int64 nanoseconds since the Unix
epoch, UTC, offset 8), then each feature's *stored* bytes.  Fields are placed largest
alignment first (8-byte fields, then 4, 2, 1; ties in schema order), so no field needs
padding; the record is padded to a multiple of 8 bytes.  Stored bytes per type:

  scalar float32/float64/int64/bool   4/8/8/1 bytes, the value
  category                            int32 code (-1: no value)
  dense float32/float16               dim * 4 / dim * 2 bytes
  dense int8                          dim bytes: q, value = q * scale[d] + offset[d]
  dense bool                          ceil(dim / 8) bytes, numpy.packbits(bitorder="little")
  sparse                              int64 start and int64 count of the row's entries in
                                      the feature's element arenas (indices int32, values
                                      float32), 16 bytes

The layout is a pure function of the schema (the manifest stores the schema, and the
record size as a check), so every reader computes the same offsets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

import numpy as np

from mmfs.errors import CorruptStoreError, ParameterError

__all__ = [
    "MAX_DIM",
    "Category",
    "Dense",
    "FeatureType",
    "Scalar",
    "Sparse",
    "category",
    "dense",
    "feature_from_json",
    "layout",
    "scalar",
    "sparse",
]

#: Largest dimension of a vector feature (int32 sparse indices; a dense record must fit a
#: segment).  Far above the 10,000+ dimensions the library is built for.
MAX_DIM: Final = 1 << 24
NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
RESERVED: Final = frozenset({"slot", "event_time"})

_SCALARS: Final = {"float32": 4, "float64": 8, "int64": 8, "bool": 1}
_DENSE: Final = ("float32", "float16", "int8", "bool")


@dataclass(frozen=True, slots=True)
class Scalar:
    """One number (or bool) per row."""

    dtype: Literal["float32", "float64", "int64", "bool"]

    kind: ClassVar[str] = "scalar"

    @property
    def width(self) -> int:
        """Values per row in a decoded matrix."""
        return 1

    @property
    def stored_bytes(self) -> int:
        return _SCALARS[self.dtype]

    @property
    def alignment(self) -> int:
        return _SCALARS[self.dtype]

    def to_json(self) -> dict[str, Any]:
        return {"type": "scalar", "dtype": self.dtype}


@dataclass(frozen=True, slots=True)
class Category:
    """A string per row, stored as an int32 code into the feature's dictionary."""

    kind: ClassVar[str] = "category"

    @property
    def width(self) -> int:
        return 1

    @property
    def stored_bytes(self) -> int:
        return 4

    @property
    def alignment(self) -> int:
        return 4

    def to_json(self) -> dict[str, Any]:
        return {"type": "category"}


@dataclass(frozen=True, slots=True)
class Dense:
    """A fixed-dimension vector per row."""

    dim: int
    dtype: Literal["float32", "float16", "int8", "bool"] = "float32"
    #: int8 only: (low, high) of the values, per dimension or one pair for all; None fits
    #: the range from the first write.  Values outside it are clipped.
    range: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    kind: ClassVar[str] = "dense"

    @property
    def width(self) -> int:
        return self.dim

    @property
    def stored_bytes(self) -> int:
        if self.dtype == "float32":
            return 4 * self.dim
        if self.dtype == "float16":
            return 2 * self.dim
        if self.dtype == "int8":
            return self.dim
        return (self.dim + 7) // 8

    @property
    def alignment(self) -> int:
        return {"float32": 4, "float16": 2, "int8": 1, "bool": 1}[self.dtype]

    def to_json(self) -> dict[str, Any]:
        return {"type": "dense", "dim": self.dim, "dtype": self.dtype}


@dataclass(frozen=True, slots=True)
class Sparse:
    """A CSR row of float32 values with int32 indices in [0, dim)."""

    dim: int

    kind: ClassVar[str] = "sparse"

    @property
    def width(self) -> int:
        return self.dim

    @property
    def stored_bytes(self) -> int:
        return 16

    @property
    def alignment(self) -> int:
        return 8

    def to_json(self) -> dict[str, Any]:
        return {"type": "sparse", "dim": self.dim}


FeatureType = Scalar | Category | Dense | Sparse


def _check_dim(dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or not 1 <= dim <= MAX_DIM:
        raise ParameterError(f"dim must be an integer in [1, {MAX_DIM}], got {dim!r}")
    return int(dim)


def scalar(dtype: str = "float32") -> Scalar:
    """A scalar feature: ``"float32"`` (default), ``"float64"``, ``"int64"`` or ``"bool"``."""
    try:
        name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    except TypeError:
        name = None
    if name not in _SCALARS:
        raise ParameterError(f"scalar dtype must be one of {sorted(_SCALARS)}, got {dtype!r}")
    return Scalar(name)  # type: ignore[arg-type]


def category() -> Category:
    """A categorical feature: strings stored as codes with a dictionary."""
    return Category()


def dense(dim: int, dtype: str = "float32", *, range: Any = None) -> Dense:
    """A dense vector feature of ``dim`` dimensions.

    ``dtype``: ``"float32"`` (default), ``"float16"``, ``"int8"`` (scalar-quantised: each
    dimension d stores q in [-128, 127] and reads back q * scale[d] + offset[d]; the
    scale/offset come from ``range=(low, high)``, scalars or per-dimension sequences, or
    else from the minimum and maximum of each dimension in the first write; later values
    outside the range are clipped to it) or ``"bool"`` (bit-packed).
    """
    d = _check_dim(dim)
    if dtype not in _DENSE:
        raise ParameterError(f"dense dtype must be one of {list(_DENSE)}, got {dtype!r}")
    rng = None
    if range is not None:
        if dtype != "int8":
            raise ParameterError(f"range= is for dtype='int8' only, got dtype={dtype!r}")
        try:
            lo, hi = range
            low = np.broadcast_to(np.asarray(lo, dtype=np.float64), (d,))
            high = np.broadcast_to(np.asarray(hi, dtype=np.float64), (d,))
        except (TypeError, ValueError):
            raise ParameterError(
                f"range must be (low, high), each a number or {d} numbers, got {range!r}"
            ) from None
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low <= high)):
            raise ParameterError("range must be finite with low <= high in every dimension")
        rng = (tuple(low.tolist()), tuple(high.tolist()))
    return Dense(d, dtype, rng)  # type: ignore[arg-type]


def sparse(dim: int) -> Sparse:
    """A sparse vector feature: CSR rows of float32 values, int32 indices in [0, dim)."""
    return Sparse(_check_dim(dim))


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ParameterError(
            f"{what} must be 1 to 64 characters of letters, digits and _ (not starting "
            f"with a digit), got {name!r}"
        )
    return name


def check_schema(schema: object) -> dict[str, FeatureType]:
    """A user's schema mapping, checked: names valid and not reserved, types ours."""
    if not isinstance(schema, Mapping) or not schema:
        raise ParameterError(
            "schema must be a non-empty mapping of feature name -> type, "
            f"e.g. {{'clicks': mmfs.scalar('float32')}}, got {schema!r}"
        )
    out: dict[str, FeatureType] = {}
    for name, ftype in schema.items():
        check_name(name, "a feature name")
        if name in RESERVED:
            raise ParameterError(f"{name!r} is a reserved name, choose another feature name")
        if not isinstance(ftype, Scalar | Category | Dense | Sparse):
            raise ParameterError(
                f"feature {name!r} has type {ftype!r}; use mmfs.scalar(), mmfs.category(), "
                "mmfs.dense() or mmfs.sparse()"
            )
        out[name] = ftype
    return out


def feature_from_json(doc: object, source: str) -> FeatureType:
    """A feature type from a manifest (untrusted: anything off is CorruptStoreError)."""
    try:
        if not isinstance(doc, dict):
            raise ParameterError("not an object")
        kind = doc.get("type")
        fields = set(doc)
        if kind == "scalar" and fields == {"type", "dtype"}:
            return scalar(doc["dtype"])
        if kind == "category" and fields == {"type"}:
            return category()
        if kind == "dense" and fields == {"type", "dim", "dtype"}:
            return dense(doc["dim"], doc["dtype"])
        if kind == "sparse" and fields == {"type", "dim"}:
            return sparse(doc["dim"])
        raise ParameterError("unknown type or fields")
    except ParameterError as exc:
        raise CorruptStoreError(f"{source}: invalid feature type {doc!r} ({exc})") from None


@dataclass(frozen=True, slots=True)
class Layout:
    """Byte offsets of every field in a record (see the module docstring)."""

    record_bytes: int
    offsets: dict[str, int]


def layout(features: Mapping[str, FeatureType]) -> Layout:
    """The record layout of a schema: slot, event_time, then features by alignment."""
    order = sorted(features, key=lambda n: -features[n].alignment)  # stable: schema order
    offsets = {"slot": 0, "event_time": 8}
    at = 16
    for name in order:
        offsets[name] = at
        at += features[name].stored_bytes
    return Layout(record_bytes=(at + 7) // 8 * 8, offsets=offsets)
