"""Numeric preprocessing transforms with scikit-learn's semantics.

Each class mirrors one scikit-learn estimator: the same option names and defaults, the same
fitted statistics (NaN ignored while fitting, kept in the output), the same tie and
near-zero rules.  Statistics are computed in float64 whatever the input dtype, but each
near-constant threshold (``_handle_zeros_in_scale``: a scale below 10 eps becomes 1) uses
the epsilon of the dtype scikit-learn computes that statistic in: the input's for ranges,
max-abs and row norms, float64's for variances and percentiles.

The scalers, the imputer and :class:`Clip` are one elementwise :class:`~._base.Affine`
step ``v = fill if x is NaN else x; v = (v - sub) * mul + add; clip to [lo, hi]``, and their
``_apply`` is exactly :func:`~._base.apply_affine` of :meth:`affine`, so the read kernel's
fused step and the numpy path give the same bits.  Unset fields keep the identity (sub 0,
mul 1, add 0, no clip, fill NaN):

- StandardScaler: sub = ``mean_`` (if with_mean), mul = ``1 / scale_`` (if with_std).
- MinMaxScaler: mul = ``scale_``, add = ``min_``; with clip, [lo, hi] = ``feature_range``.
- MaxAbsScaler: mul = ``1 / scale_``; with clip, [lo, hi] = [-1, 1].
- RobustScaler: sub = ``center_`` (if with_centering), mul = ``1 / scale_`` (if
  with_scaling).
- SimpleImputer: fill = ``statistics_``.
- Clip: [lo, hi] = [min, max].

scikit-learn divides by ``scale_`` where this module multiplies by its reciprocal, so those
outputs can differ from scikit-learn's in the last bit; MinMaxScaler (``X * scale_ +
min_``), Clip and the non-affine transforms compute exactly what scikit-learn computes in
float64.  :class:`Normalizer` (row norms over all the columns), :class:`Log1p`
(``np.log1p``) and :class:`PolynomialFeatures` (degree 2, scikit-learn's column order) are
not affine.  An imputer that drops an all-NaN column, as scikit-learn does, is not affine
either (its ``out_widths()`` holds 0 for that column).

Fitted parameters are named numeric arrays holding scikit-learn's fitted attributes without
the trailing underscore (``mean_`` -> ``mean``); where scikit-learn holds ``None`` (a
disabled step) the array holds NaN.  :meth:`to_sklearn` fits the estimator on a dummy array
(so every private attribute the installed version needs exists) and then overwrites its
fitted attributes with these; ``_from_sklearn`` reads them back.  scikit-learn is optional:
it is imported only there.  :func:`from_sklearn` picks the class for a fitted estimator.

Like scikit-learn, fitting refuses infinite values (and the Normalizer and polynomial
features refuse NaN as well); applying an affine transform never checks its input, since
the fused kernel cannot either.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any, ClassVar, Self, SupportsFloat

import numpy as np

from mmfs.errors import (
    MissingDependencyError,
    MmfsError,
    ParameterError,
    TransformError,
)
from mmfs.transforms._base import Affine, Transform, apply_affine, identity_affine, output_dtype

__all__ = [
    "FUNCTIONS",
    "SKLEARN_CLASSES",
    "Clip",
    "Log1p",
    "MaxAbsScaler",
    "MinMaxScaler",
    "Normalizer",
    "PolynomialFeatures",
    "RobustScaler",
    "SimpleImputer",
    "StandardScaler",
    "from_sklearn",
    "transform_class_for",
]

#: PolynomialFeatures is for small feature sets: its output grows as n_features ** 2.
MAX_POLYNOMIAL_INPUTS = 64


# -- option checks ---------------------------------------------------------------------------


def _bool(kind: str, name: str, value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise ParameterError(f"{kind}: {name} must be True or False, got {value!r}")


def _real(kind: str, name: str, value: Any) -> float:
    """A finite real number (bool refused), as a float."""
    if not isinstance(value, bool | np.bool_) and isinstance(value, int | float | np.number):
        try:
            v = float(value)
        except (OverflowError, TypeError):  # a huge int; a complex number
            v = math.nan
        if math.isfinite(v):
            return v
    raise ParameterError(f"{kind}: {name} must be a finite real number, got {value!r}")


def _pair(kind: str, name: str, value: Any) -> list[float]:
    """Two finite numbers given as a tuple or list, as a list of floats."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ParameterError(f"{kind}: {name} must be a pair (low, high), got {value!r}")
    return [_real(kind, f"{name}[0]", value[0]), _real(kind, f"{name}[1]", value[1])]


def _choice(kind: str, name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if isinstance(value, str) and value in allowed:
        return value
    raise ParameterError(f"{kind}: {name} must be one of {list(allowed)}, got {value!r}")


# -- fitting helpers -------------------------------------------------------------------------


def _check_fit_values(kind: str, X: np.ndarray, *, allow_nan: bool) -> None:
    """Refuse what scikit-learn's fit refuses: infinities (and NaN if asked).  (No rows
    or no columns: Transform.fit refuses those for every transform.)"""
    bad = np.isinf(X) if allow_nan else ~np.isfinite(X)
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        what = "infinite" if allow_nan else "non-finite (NaN or infinite)"
        raise ParameterError(
            f"{kind}: fit input has a {what} value {X[row, col]} at row {row}, column {col}; "
            "scikit-learn refuses it too"
        )


def _handle_zeros(scale: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """scikit-learn's ``_handle_zeros_in_scale``: scales below 10 eps (of the input dtype,
    whose precision scikit-learn's statistics have) become 1."""
    scale = scale.copy()
    scale[scale < 10 * np.finfo(dtype).eps] = 1.0
    return scale


def _columns_without_nan(X: np.ndarray) -> list[np.ndarray]:
    return [c[~np.isnan(c)] for c in X.T]


def _sklearn(module: str) -> Any:
    """``sklearn.<module>``, or MissingDependencyError."""
    try:
        return importlib.import_module(f"sklearn.{module}")
    except ImportError as e:
        raise MissingDependencyError(
            f"converting to or from scikit-learn needs scikit-learn (sklearn.{module} could not "
            f"be imported: {e}); install it with `pip install scikit-learn`"
        ) from e


def _is_sklearn_class(est: Any, path: str) -> bool:
    """Whether est's class is exactly the scikit-learn class ``path`` (its public path, e.g.
    ``sklearn.preprocessing.StandardScaler``); no import of scikit-learn needed."""
    module, name = path.rsplit(".", 1)
    cls = type(est)
    return cls.__name__ == name and (
        cls.__module__ == module or cls.__module__.startswith(module + ".")
    )


# -- the shared base -------------------------------------------------------------------------


class _Numeric(Transform):
    """Shared plumbing of this module's transforms (not a transform itself: no kind)."""

    #: the fitted parameters: name -> True for one value per input column, False for one
    _per_column: ClassVar[dict[str, bool]] = {}

    @classmethod
    def _restore(cls, options: dict[str, Any], arrays: dict[str, np.ndarray], n_in: int) -> Self:
        """A stored state, its arrays checked (ParameterError: from_state's FormatError)."""
        t = super()._restore(options, arrays, n_in)
        t._check_params(ParameterError)
        return t

    def _fitted_state(self) -> tuple[dict[str, np.ndarray], int]:
        if self.params is None or self.n_features_in is None:
            raise ParameterError(f"{self.kind} is not fitted: call fit() first")
        return self.params, self.n_features_in

    def _check_params(self, error: type[MmfsError]) -> None:
        params, _ = self._fitted_state()
        if set(params) != set(self._per_column):
            raise error(
                f"{self.kind}: parameters {sorted(params)} are not the expected "
                f"{sorted(self._per_column)}; the fitted state is damaged"
            )
        for name in self._per_column:
            self._param(name, error)

    def _param(self, name: str, error: type[MmfsError] = TransformError) -> np.ndarray:
        """Parameter ``name``, checked (it may come from a store): numeric, of shape
        (n_features_in,) or () as ``_per_column`` says."""
        params, d = self._fitted_state()
        shape = (d,) if self._per_column[name] else ()
        arr = params.get(name)
        if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype.kind not in "fiu":
            got = "nothing" if arr is None else f"{type(arr).__name__} {np.shape(arr)}"
            raise error(
                f"{self.kind}: parameter {name!r} must be a numeric array of shape {shape}, "
                f"got {got}; the fitted state is damaged"
            )
        return arr

    def _vec(self, name: str) -> np.ndarray:
        """Parameter ``name`` as float64, one value per input column."""
        return self._param(name).astype(np.float64, copy=False)

    def _sklearn_estimator(self, module: str, **kw: Any) -> Any:
        """The matching scikit-learn estimator, fitted on a dummy array of the right width
        (so that every attribute the installed version sets exists) for the caller to
        overwrite with this transform's statistics."""
        _, d = self._fitted_state()
        self._check_params(TransformError)
        cls = getattr(_sklearn(module), self.sklearn_class.rsplit(".", 1)[1])
        return cls(**kw).fit(np.zeros((1, d)))

    @classmethod
    def _check_sklearn(cls, est: Any) -> int:
        """est's width, after checking it is a fitted ``cls.sklearn_class``."""
        if not _is_sklearn_class(est, cls.sklearn_class):
            raise ParameterError(
                f"{cls.kind}: expected a fitted {cls.sklearn_class}, got {type(est).__name__}"
            )
        d = getattr(est, "n_features_in_", None)
        if not isinstance(d, int | np.integer) or d < 1:
            raise ParameterError(
                f"{cls.kind}: the {type(est).__name__} is not fitted (no n_features_in_)"
            )
        return int(d)

    @classmethod
    def _sk_vec(cls, est: Any, attr: str, d: int, *, optional: bool = False) -> np.ndarray:
        """Fitted attribute ``attr`` of est as float64 of shape (d,) (None -> NaN where
        scikit-learn leaves a disabled step's attribute None)."""
        value = getattr(est, attr, None)
        if value is None and optional:
            return np.full(d, np.nan)
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            arr = np.empty(0)
        if arr.shape != (d,):
            raise ParameterError(
                f"{cls.kind}: {type(est).__name__}.{attr} must be {d} numbers, got {value!r}"
            )
        return arr


def _sample_counts(est: Any, d: int, cls: type[_Numeric]) -> np.ndarray:
    """scikit-learn's ``n_samples_seen_`` (an int, or one count per column) per column."""
    n = np.asarray(getattr(est, "n_samples_seen_", None))
    if n.dtype.kind not in "fiu" or n.shape not in ((), (d,)):
        raise ParameterError(
            f"{cls.kind}: {type(est).__name__}.n_samples_seen_ must be a count or {d} counts, "
            f"got {getattr(est, 'n_samples_seen_', None)!r}"
        )
    return np.broadcast_to(n, (d,)).copy()


def _sk_counts(n: np.ndarray) -> Any:
    """Per-column counts as scikit-learn stores them: one number when all are equal."""
    return n[0] if n.min() == n.max() else n.copy()


# -- scalers ---------------------------------------------------------------------------------


class StandardScaler(_Numeric):
    """``(x - mean) / std`` per column (scikit-learn's StandardScaler).

    Mean and population variance ignore NaN, with scikit-learn's corrected two-pass
    algorithm; a (near-)constant column gets scale 1.  Parameters: ``mean``, ``var``,
    ``scale`` and ``n_samples_seen`` (non-NaN values per column).
    """

    kind = "standard_scaler"
    sklearn_class = "sklearn.preprocessing.StandardScaler"
    _per_column: ClassVar[dict[str, bool]] = {
        "mean": True,
        "var": True,
        "scale": True,
        "n_samples_seen": True,
    }

    def __init__(
        self, *, with_mean: bool | np.bool_ = True, with_std: bool | np.bool_ = True
    ) -> None:
        super().__init__(
            with_mean=_bool(self.kind, "with_mean", with_mean),
            with_std=_bool(self.kind, "with_std", with_std),
        )

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        _check_fit_values(self.kind, X, allow_nan=True)
        v = X.astype(np.float64)
        count = (X.shape[0] - np.isnan(v).sum(axis=0)).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):  # an all-NaN column: NaN
            mean = np.nansum(v, axis=0) / count
            temp = v - mean
            correction = np.nansum(temp, axis=0)
            var = (np.nansum(temp**2, axis=0) - correction**2 / count) / count
            eps = np.finfo(np.float64).eps
            n = count[0] if count.min() == count.max() else count
            constant = var <= n * eps * var + (n * mean * eps) ** 2
            scale = np.sqrt(var)  # a constant column's var may round below 0
        scale[constant] = 1.0
        if not self.options["with_mean"] and not self.options["with_std"]:
            count = count.astype(np.int64)  # scikit-learn counts in int64 here
        return {"mean": mean, "var": var, "scale": scale, "n_samples_seen": count}

    def affine(self) -> Affine:
        a = identity_affine(self._fitted_state()[1])
        sub = self._vec("mean") if self.options["with_mean"] else a.sub
        mul = 1.0 / self._vec("scale") if self.options["with_std"] else a.mul
        return a._replace(sub=sub, mul=mul)

    def _apply(self, X: np.ndarray) -> np.ndarray:
        return apply_affine(X, self.affine())

    def to_sklearn(self) -> Any:
        wm, ws = self.options["with_mean"], self.options["with_std"]
        est = self._sklearn_estimator("preprocessing", with_mean=wm, with_std=ws)
        est.mean_ = self._vec("mean").copy() if wm or ws else None
        est.var_ = self._vec("var").copy() if ws else None
        est.scale_ = self._vec("scale").copy() if ws else None
        est.n_samples_seen_ = _sk_counts(self._param("n_samples_seen"))
        return est

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        d = cls._check_sklearn(est)
        wm, ws = est.with_mean, est.with_std
        params = {
            "mean": cls._sk_vec(est, "mean_", d, optional=not (wm or ws)),
            "var": cls._sk_vec(est, "var_", d, optional=not ws),
            "scale": cls._sk_vec(est, "scale_", d, optional=not ws),
            "n_samples_seen": _sample_counts(est, d, cls),
        }
        return cls._restore({"with_mean": wm, "with_std": ws}, params, d)


class MinMaxScaler(_Numeric):
    """``x * scale + min`` per column, mapping the fitted [min, max] to ``feature_range``
    (scikit-learn's MinMaxScaler).  Parameters: ``data_min``, ``data_max``, ``data_range``,
    ``scale``, ``min`` and ``n_samples_seen`` (rows, NaN included)."""

    kind = "min_max_scaler"
    sklearn_class = "sklearn.preprocessing.MinMaxScaler"
    _per_column: ClassVar[dict[str, bool]] = {
        **dict.fromkeys(["data_min", "data_max", "data_range", "scale", "min"], True),
        "n_samples_seen": False,
    }

    def __init__(self, feature_range: Any = (0, 1), *, clip: bool | np.bool_ = False) -> None:
        lo, hi = _pair(self.kind, "feature_range", feature_range)
        if not lo < hi:
            raise ParameterError(
                f"{self.kind}: feature_range must have low < high, got {feature_range!r}"
            )
        super().__init__(feature_range=[lo, hi], clip=_bool(self.kind, "clip", clip))

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        _check_fit_values(self.kind, X, allow_nan=True)
        v = X.astype(np.float64)
        data_min, data_max = np.fmin.reduce(v, axis=0), np.fmax.reduce(v, axis=0)
        data_range = data_max - data_min
        lo, hi = self.options["feature_range"]
        scale = (hi - lo) / _handle_zeros(data_range, X.dtype)
        return {
            "data_min": data_min,
            "data_max": data_max,
            "data_range": data_range,
            "scale": scale,
            "min": lo - data_min * scale,
            "n_samples_seen": np.array(X.shape[0], dtype=np.int64),
        }

    def affine(self) -> Affine:
        a = identity_affine(self._fitted_state()[1])
        a = a._replace(mul=self._vec("scale"), add=self._vec("min"))
        if self.options["clip"]:
            lo, hi = self.options["feature_range"]
            a = a._replace(lo=np.full_like(a.lo, lo), hi=np.full_like(a.hi, hi))
        return a

    def _apply(self, X: np.ndarray) -> np.ndarray:
        return apply_affine(X, self.affine())

    def to_sklearn(self) -> Any:
        est = self._sklearn_estimator(
            "preprocessing",
            feature_range=tuple(self.options["feature_range"]),
            clip=self.options["clip"],
        )
        for name in ("data_min", "data_max", "data_range", "scale", "min"):
            setattr(est, name + "_", self._vec(name).copy())
        est.n_samples_seen_ = int(self._param("n_samples_seen"))
        return est

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        d = cls._check_sklearn(est)
        names = ("data_min", "data_max", "data_range", "scale", "min")
        params = {name: cls._sk_vec(est, name + "_", d) for name in names}
        params["n_samples_seen"] = np.array(int(est.n_samples_seen_), dtype=np.int64)
        return cls._restore({"feature_range": est.feature_range, "clip": est.clip}, params, d)


class MaxAbsScaler(_Numeric):
    """``x / max|x|`` per column (scikit-learn's MaxAbsScaler; ``clip`` is new in
    scikit-learn 1.8).  Parameters: ``max_abs``, ``scale`` and ``n_samples_seen``."""

    kind = "max_abs_scaler"
    sklearn_class = "sklearn.preprocessing.MaxAbsScaler"
    _per_column: ClassVar[dict[str, bool]] = {
        "max_abs": True,
        "scale": True,
        "n_samples_seen": False,
    }

    def __init__(self, *, clip: bool | np.bool_ = False) -> None:
        super().__init__(clip=_bool(self.kind, "clip", clip))

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        _check_fit_values(self.kind, X, allow_nan=True)
        max_abs = np.fmax.reduce(np.abs(X.astype(np.float64)), axis=0)
        return {
            "max_abs": max_abs,
            "scale": _handle_zeros(max_abs, X.dtype),
            "n_samples_seen": np.array(X.shape[0], dtype=np.int64),
        }

    def affine(self) -> Affine:
        a = identity_affine(self._fitted_state()[1])
        a = a._replace(mul=1.0 / self._vec("scale"))
        if self.options["clip"]:
            a = a._replace(lo=np.full_like(a.lo, -1.0), hi=np.full_like(a.hi, 1.0))
        return a

    def _apply(self, X: np.ndarray) -> np.ndarray:
        return apply_affine(X, self.affine())

    def to_sklearn(self) -> Any:
        kw = {"clip": True} if self.options["clip"] else {}  # clip: scikit-learn >= 1.8
        est = self._sklearn_estimator("preprocessing", **kw)
        est.max_abs_ = self._vec("max_abs").copy()
        est.scale_ = self._vec("scale").copy()
        est.n_samples_seen_ = int(self._param("n_samples_seen"))
        return est

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        d = cls._check_sklearn(est)
        params = {
            "max_abs": cls._sk_vec(est, "max_abs_", d),
            "scale": cls._sk_vec(est, "scale_", d),
            "n_samples_seen": np.array(int(est.n_samples_seen_), dtype=np.int64),
        }
        return cls._restore({"clip": getattr(est, "clip", False)}, params, d)


class RobustScaler(_Numeric):
    """``(x - median) / IQR`` per column (scikit-learn's RobustScaler), NaN ignored.

    ``quantile_range`` is in percent; ``unit_variance`` divides the scale by the normal
    distribution's spread over that range, and then needs ``0 < low < high < 100``.
    Parameters: ``center`` and ``scale`` (NaN where the option disables them).
    """

    kind = "robust_scaler"
    sklearn_class = "sklearn.preprocessing.RobustScaler"
    _per_column: ClassVar[dict[str, bool]] = {"center": True, "scale": True}

    def __init__(
        self,
        *,
        with_centering: bool | np.bool_ = True,
        with_scaling: bool | np.bool_ = True,
        quantile_range: Any = (25.0, 75.0),
        unit_variance: bool | np.bool_ = False,
    ) -> None:
        q0, q1 = _pair(self.kind, "quantile_range", quantile_range)
        if not 0 <= q0 <= q1 <= 100:
            raise ParameterError(
                f"{self.kind}: quantile_range must satisfy 0 <= low <= high <= 100, "
                f"got {quantile_range!r}"
            )
        unit = _bool(self.kind, "unit_variance", unit_variance)
        if unit and not 0 < q0 < q1 < 100:
            raise ParameterError(
                f"{self.kind}: unit_variance=True needs 0 < low < high < 100 (else the normal "
                f"spread is 0 or infinite), got quantile_range={quantile_range!r}"
            )
        super().__init__(
            with_centering=_bool(self.kind, "with_centering", with_centering),
            with_scaling=_bool(self.kind, "with_scaling", with_scaling),
            quantile_range=[q0, q1],
            unit_variance=unit,
        )

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        _check_fit_values(self.kind, X, allow_nan=True)
        d = X.shape[1]
        center, scale = np.full(d, np.nan), np.full(d, np.nan)
        q = self.options["quantile_range"]
        for j, col in enumerate(_columns_without_nan(X.astype(np.float64))):
            if col.size:
                if self.options["with_centering"]:
                    center[j] = np.median(col)
                if self.options["with_scaling"]:
                    lo, hi = np.percentile(col, q)
                    scale[j] = hi - lo
        if self.options["with_scaling"]:
            # float64 eps even for float32 input: numpy's percentiles at float quantiles are
            # float64, so scikit-learn's scale_ is
            scale = _handle_zeros(scale, np.dtype(np.float64))
            if self.options["unit_variance"]:
                from scipy.special import ndtri  # what scipy.stats.norm.ppf computes

                scale = scale / (ndtri(q[1] / 100.0) - ndtri(q[0] / 100.0))
        return {"center": center, "scale": scale}

    def affine(self) -> Affine:
        a = identity_affine(self._fitted_state()[1])
        sub = self._vec("center") if self.options["with_centering"] else a.sub
        mul = 1.0 / self._vec("scale") if self.options["with_scaling"] else a.mul
        return a._replace(sub=sub, mul=mul)

    def _apply(self, X: np.ndarray) -> np.ndarray:
        return apply_affine(X, self.affine())

    def to_sklearn(self) -> Any:
        o = self.options
        est = self._sklearn_estimator(
            "preprocessing",
            with_centering=o["with_centering"],
            with_scaling=o["with_scaling"],
            quantile_range=tuple(o["quantile_range"]),
            unit_variance=o["unit_variance"],
        )
        est.center_ = self._vec("center").copy() if o["with_centering"] else None
        est.scale_ = self._vec("scale").copy() if o["with_scaling"] else None
        return est

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        d = cls._check_sklearn(est)
        options = {
            "with_centering": est.with_centering,
            "with_scaling": est.with_scaling,
            "quantile_range": est.quantile_range,
            "unit_variance": est.unit_variance,
        }
        params = {
            "center": cls._sk_vec(est, "center_", d, optional=not est.with_centering),
            "scale": cls._sk_vec(est, "scale_", d, optional=not est.with_scaling),
        }
        return cls._restore(options, params, d)


class Normalizer(_Numeric):
    """Each row divided by its norm over all its columns (``l1``, ``l2`` or ``max``), as
    ``sklearn.preprocessing.normalize``: a zero row stays zero.  Stateless; NaN and
    infinite values are refused, as scikit-learn does."""

    kind = "normalizer"
    sklearn_class = "sklearn.preprocessing.Normalizer"

    def __init__(self, norm: str = "l2") -> None:
        super().__init__(norm=_choice(self.kind, "norm", norm, ("l1", "l2", "max")))

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        _check_fit_values(self.kind, X, allow_nan=False)
        return {}

    def _apply(self, X: np.ndarray) -> np.ndarray:
        self._fitted_state()
        if not np.isfinite(X).all():
            raise TransformError(
                f"{self.kind}: input has NaN or infinite values; a row norm needs every "
                "value (impute first)"
            )
        v = X.astype(np.float64)
        norm = self.options["norm"]
        if norm == "l1":
            norms = np.sum(np.abs(v), axis=1)
        elif norm == "l2":
            norms = np.sqrt(np.einsum("ij,ij->i", v, v))
        else:
            norms = np.max(np.abs(v), axis=1)
        return (v / _handle_zeros(norms, X.dtype)[:, None]).astype(output_dtype(X))

    def to_sklearn(self) -> Any:
        return self._sklearn_estimator("preprocessing", norm=self.options["norm"])

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        d = cls._check_sklearn(est)
        return cls._restore({"norm": est.norm}, {}, d)


# -- imputation ------------------------------------------------------------------------------


class SimpleImputer(_Numeric):
    """NaN replaced by a per-column statistic (scikit-learn's SimpleImputer on numbers).

    ``strategy``: ``mean``, ``median``, ``most_frequent`` (ties: the smallest value) or
    ``constant`` (``fill_value``, 0 when None).  A column with no value at fit is dropped
    (its ``statistics`` is NaN, its width 0) unless ``keep_empty_features``, which fills it
    with 0 (``constant``: with ``fill_value``).  Parameter: ``statistics``.
    """

    kind = "simple_imputer"
    sklearn_class = "sklearn.impute.SimpleImputer"
    _per_column: ClassVar[dict[str, bool]] = {"statistics": True}

    def __init__(
        self,
        *,
        strategy: str = "mean",
        fill_value: SupportsFloat | None = None,
        keep_empty_features: bool | np.bool_ = False,
    ) -> None:
        strategies = ("mean", "median", "most_frequent", "constant")
        if fill_value is not None:
            fill_value = _real(self.kind, "fill_value (numeric imputation only)", fill_value)
        super().__init__(
            strategy=_choice(self.kind, "strategy", strategy, strategies),
            fill_value=fill_value,
            keep_empty_features=_bool(self.kind, "keep_empty_features", keep_empty_features),
        )

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        _check_fit_values(self.kind, X, allow_nan=True)
        v = X.astype(np.float64)
        missing = np.isnan(v)
        empty = missing.all(axis=0)
        strategy = self.options["strategy"]
        if strategy == "mean":
            with np.errstate(divide="ignore", invalid="ignore"):  # empty columns: 0 / 0
                stats = np.where(missing, 0.0, v).sum(axis=0) * 1.0 / (~missing).sum(axis=0)
        elif strategy == "constant":
            fill = self.options["fill_value"]
            stats = np.full(X.shape[1], 0.0 if fill is None else fill)
        else:
            stats = np.full(X.shape[1], np.nan)
            for j, col in enumerate(_columns_without_nan(v)):
                if col.size and strategy == "median":
                    stats[j] = np.median(col)
                elif col.size:
                    values, counts = np.unique(col, return_counts=True)
                    stats[j] = values[np.argmax(counts)]  # sorted: the smallest of a tie
        if self.options["keep_empty_features"]:
            if strategy != "constant":
                stats[empty] = 0.0
        else:
            stats[empty] = np.nan
        return {"statistics": stats}

    def _kept(self) -> np.ndarray:
        return ~np.isnan(self._vec("statistics"))

    def out_widths(self) -> list[int]:
        return [int(k) for k in self._kept()]

    def affine(self) -> Affine | None:
        """Identity with ``fill = statistics``; None when a column is dropped."""
        if not self._kept().all():
            return None
        a = identity_affine(self._fitted_state()[1])
        return a._replace(fill=self._vec("statistics"))

    def _apply(self, X: np.ndarray) -> np.ndarray:
        a = self.affine()
        if a is not None:
            return apply_affine(X, a)
        kept = self._kept()
        fill = identity_affine(len(kept))._replace(fill=self._vec("statistics"))
        return apply_affine(X[:, kept], Affine(*(p[kept] for p in fill)))

    def to_sklearn(self) -> Any:
        o = self.options
        est = self._sklearn_estimator(
            "impute",
            strategy=o["strategy"],
            fill_value=o["fill_value"],
            keep_empty_features=o["keep_empty_features"],
        )
        stats = self._vec("statistics").copy()
        # scikit-learn keeps a constant strategy's statistics as objects
        est.statistics_ = stats.astype(object) if o["strategy"] == "constant" else stats
        return est

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        d = cls._check_sklearn(est)
        mv = est.missing_values
        if not (isinstance(mv, float) and math.isnan(mv)):
            raise ParameterError(f"{cls.kind}: only missing_values=np.nan is supported, got {mv!r}")
        if est.add_indicator:
            raise ParameterError(f"{cls.kind}: add_indicator=True is not supported")
        if getattr(est, "_fit_dtype", np.dtype(np.float64)).kind not in "fiub":
            raise ParameterError(f"{cls.kind}: only numeric imputation is supported")
        if not isinstance(est.strategy, str):
            raise ParameterError(
                f"{cls.kind}: a callable strategy is not supported, got {est.strategy!r}"
            )
        options = {
            "strategy": est.strategy,
            "fill_value": est.fill_value,
            "keep_empty_features": est.keep_empty_features,
        }
        return cls._restore(options, {"statistics": cls._sk_vec(est, "statistics_", d)}, d)


# -- elementwise functions -------------------------------------------------------------------


class Log1p(_Numeric):
    """``np.log1p`` elementwise (scikit-learn: ``FunctionTransformer(np.log1p)``).  Values
    below -1 give NaN and -1 gives -inf, silently, as numpy does."""

    kind = "log1p"
    sklearn_class = "sklearn.preprocessing.FunctionTransformer"

    def __init__(self) -> None:
        super().__init__()

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def _apply(self, X: np.ndarray) -> np.ndarray:
        self._fitted_state()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log1p(X.astype(np.float64)).astype(output_dtype(X))

    def to_sklearn(self) -> Any:
        return self._sklearn_estimator("preprocessing", func=np.log1p)

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        d = cls._check_sklearn(est)
        if est.func is not np.log1p or est.kw_args:
            raise ParameterError(
                f"{cls.kind}: expected FunctionTransformer(np.log1p), got func={est.func!r}, "
                f"kw_args={est.kw_args!r}"
            )
        return cls._restore({}, {}, d)


class Clip(_Numeric):
    """Values clipped to ``[min, max]`` (either may be None; not both).  NaN stays NaN.
    scikit-learn: ``FunctionTransformer(np.clip, kw_args={"a_min": min, "a_max": max})``."""

    kind = "clip"
    sklearn_class = "sklearn.preprocessing.FunctionTransformer"

    def __init__(self, min: SupportsFloat | None = None, max: SupportsFloat | None = None) -> None:
        lo = None if min is None else _real(self.kind, "min", min)
        hi = None if max is None else _real(self.kind, "max", max)
        if lo is None and hi is None:
            raise ParameterError(f"{self.kind}: give min, max or both (got neither)")
        if lo is not None and hi is not None and lo > hi:
            raise ParameterError(f"{self.kind}: min must be <= max, got min={min!r}, max={max!r}")
        super().__init__(min=lo, max=hi)

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def affine(self) -> Affine:
        a = identity_affine(self._fitted_state()[1])
        lo, hi = self.options["min"], self.options["max"]
        if lo is not None:
            a = a._replace(lo=np.full_like(a.lo, lo))
        if hi is not None:
            a = a._replace(hi=np.full_like(a.hi, hi))
        return a

    def _apply(self, X: np.ndarray) -> np.ndarray:
        return apply_affine(X, self.affine())

    def to_sklearn(self) -> Any:
        kw = {"a_min": self.options["min"], "a_max": self.options["max"]}
        return self._sklearn_estimator("preprocessing", func=np.clip, kw_args=kw)

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        d = cls._check_sklearn(est)
        kw = dict(est.kw_args or {})
        names = {"a_min": "min", "min": "min", "a_max": "max", "max": "max"}
        if est.func is not np.clip or not all(
            k in names and np.ndim(v) == 0 for k, v in kw.items()
        ):
            raise ParameterError(
                f"{cls.kind}: expected FunctionTransformer(np.clip, kw_args={{'a_min': "
                f"number, 'a_max': number}}), got func={est.func!r}, kw_args={kw!r}"
            )
        bounds = {names[k]: v for k, v in kw.items()}
        return cls._restore({"min": bounds.get("min"), "max": bounds.get("max")}, {}, d)


# -- polynomial features ---------------------------------------------------------------------


class PolynomialFeatures(_Numeric):
    """Degree-2 polynomial features in scikit-learn's column order: ``1`` (include_bias),
    every ``x_i``, then ``x_i * x_j`` for i <= j (i < j when interaction_only).

    Meant for small feature sets: at most 64 input columns (the output grows as their
    square).  Not column-wise: the output is one block.  NaN and infinite values are
    refused, as scikit-learn does.
    """

    kind = "polynomial_features"
    sklearn_class = "sklearn.preprocessing.PolynomialFeatures"
    columnwise = False

    def __init__(
        self,
        degree: int = 2,
        *,
        interaction_only: bool | np.bool_ = False,
        include_bias: bool | np.bool_ = True,
    ) -> None:
        if isinstance(degree, bool | np.bool_) or degree != 2:
            raise ParameterError(
                f"{self.kind}: only degree=2 is supported (these are features for small "
                f"feature sets), got degree={degree!r}"
            )
        super().__init__(
            degree=2,
            interaction_only=_bool(self.kind, "interaction_only", interaction_only),
            include_bias=_bool(self.kind, "include_bias", include_bias),
        )

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        _check_fit_values(self.kind, X, allow_nan=False)
        if X.shape[1] > MAX_POLYNOMIAL_INPUTS:
            raise ParameterError(
                f"{self.kind}: is for small feature sets, at most {MAX_POLYNOMIAL_INPUTS} "
                f"input columns, got {X.shape[1]} (the output would have "
                f"{self._n_out(X.shape[1])} columns)"
            )
        return {}

    def _n_out(self, d: int) -> int:
        pairs = d * (d - 1) // 2 if self.options["interaction_only"] else d * (d + 1) // 2
        return int(self.options["include_bias"]) + d + pairs

    def n_outputs(self) -> int:
        return self._n_out(self._fitted_state()[1])

    def out_widths(self) -> list[int]:
        raise ParameterError(
            f"{self.kind} is not column-wise: its {self.n_outputs()} output columns are one "
            "block (use n_outputs())"
        )

    def _apply(self, X: np.ndarray) -> np.ndarray:
        self._fitted_state()
        if not np.isfinite(X).all():
            raise TransformError(f"{self.kind}: input has NaN or infinite values (impute first)")
        v = X.astype(np.float64)
        n, d = v.shape
        bias = int(self.options["include_bias"])
        out = np.empty((n, self._n_out(d)))
        out[:, :bias] = 1.0
        out[:, bias : bias + d] = v
        col = bias + d
        for i in range(d):
            start = i + 1 if self.options["interaction_only"] else i
            out[:, col : col + d - start] = v[:, start:] * v[:, i : i + 1]
            col += d - start
        with np.errstate(over="ignore"):  # a square beyond float32's range is inf, as in sklearn
            return out.astype(output_dtype(X))

    def to_sklearn(self) -> Any:
        o = self.options
        return self._sklearn_estimator(
            "preprocessing",
            degree=2,
            interaction_only=o["interaction_only"],
            include_bias=o["include_bias"],
        )

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        d = cls._check_sklearn(est)
        options = {
            "degree": est.degree,
            "interaction_only": est.interaction_only,
            "include_bias": est.include_bias,
        }
        if d > MAX_POLYNOMIAL_INPUTS:
            raise ParameterError(
                f"{cls.kind}: is for small feature sets, at most {MAX_POLYNOMIAL_INPUTS} "
                f"input columns, got {d}"
            )
        return cls._restore(options, {}, d)


# -- scikit-learn class -> mmfs class --------------------------------------------------------

#: scikit-learn's public class path -> the mmfs class, for every estimator but
#: FunctionTransformer (see FUNCTIONS)
SKLEARN_CLASSES: dict[str, type[Transform]] = {
    cls.sklearn_class: cls
    for cls in (
        StandardScaler,
        MinMaxScaler,
        MaxAbsScaler,
        RobustScaler,
        Normalizer,
        SimpleImputer,
        PolynomialFeatures,
    )
}

#: a FunctionTransformer's ``func`` -> the mmfs class that reproduces it
FUNCTIONS: dict[Callable[..., Any], type[Transform]] = {np.log1p: Log1p, np.clip: Clip}


def transform_class_for(est: Any) -> type[Transform] | None:
    """The class of this module that stands for scikit-learn estimator ``est`` (a
    FunctionTransformer by its ``func``), or None when there is none here."""
    if _is_sklearn_class(est, Log1p.sklearn_class):
        func = getattr(est, "func", None)
        return next((cls for f, cls in FUNCTIONS.items() if func is f), None)
    return next((c for path, c in SKLEARN_CLASSES.items() if _is_sklearn_class(est, path)), None)


def from_sklearn(est: Any) -> Transform:
    """The fitted mmfs transform equivalent to the fitted scikit-learn estimator ``est``."""
    cls = transform_class_for(est)
    if cls is None:
        raise ParameterError(
            f"no numeric mmfs transform stands for {type(est).__module__}."
            f"{type(est).__qualname__} (func={getattr(est, 'func', None)!r})"
        )
    return cls._from_sklearn(est)
