"""The transform contract every built-in transform follows.

A :class:`Transform` is a preprocessing step with scikit-learn's semantics.  Built with its
options it is a *spec* (unfitted); :meth:`Transform.fit` returns a new, *fitted* instance
holding its parameters, and :meth:`Transform.transform` applies them.  A fitted transform
is plain data: its ``kind``, its JSON ``options`` and a dict of numpy arrays (``params``),
so the store keeps it as JSON plus ``.npy`` files and reloads it without unpickling or
executing anything (:meth:`Transform.to_state` / :func:`from_state`).

Data conventions.

- Input: a 2-D array, one column per input column (a scalar feature is one column, a
  dense vector feature ``dim`` columns).  Numeric transforms take float32 or float64, NaN
  meaning a missing value.  Categorical transforms (``categorical = True``: the encoders)
  take an object array of str, ``None`` meaning missing, or a numeric array.
- Output: a 2-D float array, float32 when a numeric input was float32, float64 otherwise.
  Numeric transforms compute in float64 and round once at the end.
- ``out_widths()``: for a column-wise transform (``columnwise = True``), how many output
  columns each input column becomes (1 for a scaler, the number of categories for one-hot),
  so the output splits back into one block per input feature.  A transform that mixes
  columns (polynomial features) is not column-wise: its output is one block.

Affine transforms (scalers, imputers) also describe themselves as one elementwise step,
:class:`Affine`: ``v = fill where x is NaN, else x; v = (v - sub) * mul + add; v =
min(max(v, lo), hi)``, computed in float64 and rounded once -- or, for float32 values
whose parameters fit float32, in float32 with the subtraction split in two for accuracy
(:func:`affine32`; within a few float32 units of the float64 result, twice as fast).  A
part that does nothing (no fill, no clip, all-zero sub or add, all-one mul) is skipped.
The read kernel applies the step while it copies rows (``mmfs._kernels._store``);
:func:`apply_affine` is the same arithmetic in numpy, in the same order, so both paths
give the same bits.
"""

from __future__ import annotations

import copy
import re
from typing import Any, ClassVar, NamedTuple, Self

import numpy as np

from mmfs.errors import DimensionError, FormatError, NotFoundError, ParameterError

__all__ = [
    "KINDS",
    "Affine",
    "Affine32",
    "Transform",
    "affine32",
    "affine_columns",
    "affine_flags",
    "apply_affine",
    "from_state",
    "output_dtype",
]

#: kind -> class, filled by Transform.__init_subclass__
KINDS: dict[str, type[Transform]] = {}
_PARAM_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


class Affine(NamedTuple):
    """One elementwise affine step, float64 arrays of one value per input column."""

    sub: np.ndarray
    mul: np.ndarray
    add: np.ndarray
    lo: np.ndarray  # -inf: no lower clip
    hi: np.ndarray  # +inf: no upper clip
    fill: np.ndarray  # NaN: NaN stays NaN (no imputation)


def identity_affine(d: int) -> Affine:
    """The affine step that changes nothing (a starting point for a transform's own)."""
    return Affine(
        np.zeros(d), np.ones(d), np.zeros(d), np.full(d, -np.inf), np.full(d, np.inf),
        np.full(d, np.nan),
    )  # fmt: skip


FILL, CLIP, SUB, ADD, MUL = 2, 4, 8, 16, 32  # the kernel's flags (mmfs_affine.h)


def affine_flags(a: Affine) -> int:
    """Which parts of the step do anything: a NaN fill, a clip, a sub, an add, a mul."""
    flags = 0 if np.all(np.isnan(a.fill)) else FILL
    if np.any(a.lo != -np.inf) or np.any(a.hi != np.inf):
        flags |= CLIP
    if np.any(a.sub != 0):
        flags |= SUB
    if np.any(a.add != 0):
        flags |= ADD
    if np.any(a.mul != 1):
        flags |= MUL
    return flags


class Affine32(NamedTuple):
    """The step for float32 values in float32 arithmetic (see :func:`affine32`)."""

    shi: np.ndarray  # sub - add / mul, float32 head ...
    slo: np.ndarray  # ... and tail
    m: np.ndarray  # mul
    c: np.ndarray  # add where mul is 0, else 0
    lo: np.ndarray
    hi: np.ndarray
    fill: np.ndarray
    flags: int  # FILL, CLIP, ADD (some c != 0) of these parameters, and F32MATH


F32MATH = 64
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)


def affine32(a: Affine) -> Affine32 | None:
    """The step rewritten for float32 arithmetic: ``v = fill where NaN; v = ((v - shi) -
    slo) * m + c; clip``, where ``shi + slo`` is ``sub - add / mul`` to twice float32's
    precision (so ``v - sub`` stays exact near sub, as in float64).  The result is within
    a few float32 units of the float64 step's (a fused read of float32 values computes
    eight at a time instead of four).  None when a parameter does not fit float32 (the
    float64 step is used then)."""
    mul = a.mul
    nz = mul != 0
    with np.errstate(all="ignore"):
        s = np.where(nz, a.sub - a.add / np.where(nz, mul, 1.0), 0.0)
    c = np.where(nz, 0.0, a.add)
    fits = (
        np.all(np.abs(s) <= _F32_MAX / 4)
        and np.all(np.abs(c) <= _F32_MAX)
        and np.all(~nz | ((np.abs(mul) >= _F32_TINY) & (np.abs(mul) <= _F32_MAX)))
    )
    if not fits:  # (NaN parameters fail the comparisons too)
        return None
    shi = s.astype(np.float32)
    tail = s - shi.astype(np.float64)
    # A tail at the level of float64 rounding noise (sub - add / mul is computed, not
    # given) is noise: dropped, so that a value equal to sub maps to exactly 0 (a
    # MinMaxScaler's minimum to exactly its low end), as in float64.
    tail[np.abs(tail) <= 8 * np.finfo(np.float64).eps * np.abs(s)] = 0.0
    slo = tail.astype(np.float32)
    f32 = np.float32
    with np.errstate(over="ignore"):
        lo, hi, fill = a.lo.astype(f32), a.hi.astype(f32), a.fill.astype(f32)
    flags = F32MATH | (0 if np.all(np.isnan(fill)) else FILL)
    if np.any(lo != -np.inf) or np.any(hi != np.inf):
        flags |= CLIP
    if np.any(c != 0):
        flags |= ADD
    return Affine32(shi, slo, mul.astype(f32), c.astype(f32), lo, hi, fill, flags)


def apply_affine(X: np.ndarray, a: Affine) -> np.ndarray:
    """The numpy mirror of the kernel's fused affine step: the same operations in the same
    order, taking the same shortcut for the same shapes of step (so even the sign of a
    zero agrees).  float32 values are computed in float32 (:func:`affine32`) unless the
    parameters do not fit it."""
    p32 = affine32(a) if X.dtype == np.float32 else None
    return affine_columns(X, a, affine_flags(a), p32)


def affine_columns(X: np.ndarray, a: Affine, flags: int, p32: Affine32 | None) -> np.ndarray:
    """The kernel's step on columns of one dtype, with the flags (and the float32 form)
    of a whole step (a fused read applies a step feature by feature, each in its dtype)."""
    if p32 is not None:
        v = np.asarray(X, dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN as the kernel's
            if not p32.flags & (FILL | CLIP | ADD):  # scalers, min-max
                return ((v - p32.shi) - p32.slo) * p32.m
            if not p32.flags & (FILL | ADD):  # min-max with a clip
                v = ((v - p32.shi) - p32.slo) * p32.m
            else:
                v = np.where(np.isnan(v), p32.fill, v)
                if not p32.flags & (CLIP | ADD):  # imputers, then a scaler or not
                    return ((v - p32.shi) - p32.slo) * p32.m
                v = ((v - p32.shi) - p32.slo) * p32.m
                v = v + p32.c
        v = np.where(v < p32.lo, p32.lo, v)
        return np.where(v > p32.hi, p32.hi, v)
    v = np.asarray(X, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN as the kernel's
        if not flags & (FILL | CLIP | ADD):  # scalers
            v = (v - a.sub) * a.mul
        elif not flags & (FILL | CLIP | SUB):  # min-max
            v = v * a.mul + a.add
        elif not flags & (CLIP | ADD | SUB | MUL):  # an imputer
            v = np.where(np.isnan(v), a.fill, v)
        elif not flags & (CLIP | ADD):  # an imputer, then a scaler
            v = (np.where(np.isnan(v), a.fill, v) - a.sub) * a.mul
        elif not flags & (FILL | SUB):  # min-max with a clip
            v = v * a.mul + a.add
            v = np.where(v < a.lo, a.lo, v)
            v = np.where(v > a.hi, a.hi, v)
        else:
            v = np.where(np.isnan(v), a.fill, v)
            v = (v - a.sub) * a.mul + a.add
            v = np.where(v < a.lo, a.lo, v)
            v = np.where(v > a.hi, a.hi, v)
    with np.errstate(over="ignore"):  # beyond float32's range: inf, as the kernel rounds
        return v.astype(output_dtype(X), copy=False)


def output_dtype(X: np.ndarray) -> np.dtype:
    """float32 for float32 input, float64 for anything else."""
    return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)


class Transform:
    """Base class of the built-in transforms (see the module docstring).

    A subclass sets ``kind`` (its stored name, e.g. ``"standard_scaler"``) and
    ``sklearn_class`` (``"sklearn.preprocessing.StandardScaler"``), takes its options as
    keyword arguments with scikit-learn's names and defaults (validated in ``__init__``,
    kept JSON-serialisable in ``self.options``), and implements ``_fit`` and ``_apply``;
    affine ones also ``affine``.
    """

    kind: ClassVar[str] = ""
    sklearn_class: ClassVar[str] = ""
    columnwise: ClassVar[bool] = True
    categorical: ClassVar[bool] = False

    options: dict[str, Any]
    params: dict[str, np.ndarray] | None
    n_features_in: int | None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            if cls.kind in KINDS:
                raise RuntimeError(f"two transforms of kind {cls.kind!r}")
            KINDS[cls.kind] = cls

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.params = None
        self.n_features_in = None

    # -- the public surface ----------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        return self.params is not None

    def fit(self, X: Any) -> Self:
        """A fitted copy of this spec (this object is left as it was)."""
        X = self._check_input(X)
        if X.shape[0] == 0:
            raise ParameterError(f"{self.kind}: cannot fit on 0 rows")
        if X.shape[1] == 0:
            raise DimensionError(f"{self.kind}: cannot fit on 0 columns")
        new = copy.copy(self)
        new.options = copy.deepcopy(self.options)
        new.params = self._fit(X)
        new.n_features_in = X.shape[1]
        for name, arr in new.params.items():
            if not _PARAM_NAME.match(name) or not isinstance(arr, np.ndarray):
                raise RuntimeError(f"{self.kind}: parameter {name!r} is not a named array")
            if arr.dtype.hasobject:
                raise RuntimeError(f"{self.kind}: parameter {name!r} has object dtype")
        return new

    def transform(self, X: Any) -> np.ndarray:
        """The transformed values of X (n, n_features_in) -> (n, n_outputs)."""
        if self.params is None or self.n_features_in is None:
            raise ParameterError(f"{self.kind} is not fitted: call fit() first")
        X = self._check_input(X)
        if X.shape[1] != self.n_features_in:
            raise DimensionError(
                f"{self.kind} was fitted on {self.n_features_in} columns, got {X.shape[1]}"
            )
        return self._apply(X)

    def out_widths(self) -> list[int]:
        """Output columns per input column (column-wise transforms; default 1 each)."""
        assert self.n_features_in is not None
        return [1] * self.n_features_in

    def n_outputs(self) -> int:
        return sum(self.out_widths())

    def affine(self) -> Affine | None:
        """The transform as one elementwise affine step, or None when it is not one."""
        return None

    def to_sklearn(self) -> Any:
        """An equivalent fitted scikit-learn estimator (scikit-learn must be installed)."""
        raise NotImplementedError

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        """A fitted transform with the fitted scikit-learn estimator ``est``'s parameters."""
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        state = "fitted" if self.fitted else "unfitted"
        return f"<{type(self).__name__}({opts}) {state}>"

    # -- storage -------------------------------------------------------------------------

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON document, named arrays): everything needed to rebuild the fitted transform."""
        if self.params is None:
            raise ParameterError(f"{self.kind} is not fitted: there is nothing to store")
        doc = {"kind": self.kind, "options": self.options, "n_features_in": self.n_features_in}
        return doc, dict(self.params)

    @classmethod
    def _restore(cls, options: dict[str, Any], arrays: dict[str, np.ndarray], n_in: int) -> Self:
        """The fitted transform of a stored state (composites override it)."""
        t = cls(**options)
        t.params = arrays
        t.n_features_in = n_in
        return t

    # -- subclass hooks ------------------------------------------------------------------

    def _check_input(self, X: Any) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 1:
            X = X.reshape(-1, 1)
        if X.ndim != 2:
            raise DimensionError(f"{self.kind}: expected a 2-D array, got shape {X.shape}")
        if not self.categorical and X.dtype.kind not in "fiub":
            raise ParameterError(f"{self.kind}: expected numeric input, got dtype {X.dtype}")
        if not self.categorical and X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        return X

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _apply(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def from_state(doc: Any, arrays: dict[str, np.ndarray]) -> Transform:
    """Rebuild a fitted transform from :meth:`Transform.to_state`'s output (as read back
    from a store: checked, never executed)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("options"), dict):
        raise FormatError(f"a transform's state must be an object with options, got {doc!r}")
    kind = doc.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise NotFoundError(f"unknown transform kind {kind!r}; this build knows {sorted(KINDS)}")
    n_in = doc.get("n_features_in")
    if type(n_in) is not int or n_in < 1:
        raise FormatError(f"{kind}: n_features_in must be an int >= 1, got {n_in!r}")
    try:
        return cls._restore(doc["options"], dict(arrays), n_in)
    except (TypeError, KeyError, ParameterError) as e:
        raise FormatError(f"{kind}: stored state {doc['options']!r} is invalid: {e}") from e
