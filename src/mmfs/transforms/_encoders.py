"""Encoders, discretizers and the quantile transform, with scikit-learn's exact semantics.

Four transforms, each the stored twin of a scikit-learn estimator (same option names and
defaults, same outputs bit for bit on the inputs scikit-learn accepts):

- :class:`OneHotEncoder` and :class:`OrdinalEncoder` (``categorical = True``),
- :class:`KBinsDiscretizer` and :class:`QuantileTransformer` (numeric).

scikit-learn is optional: it is imported only by ``to_sklearn()`` / ``_from_sklearn()``.
:data:`SKLEARN_CLASSES` maps each ``sklearn_class`` name to its mmfs class for a dispatcher.

Categories.  Each input column has a *kind*: strings, or numbers (int64 or float64).  Its
categories, in encoding order, are its non-missing values (sorted when learnt by ``fit``,
in the given order for an explicit string list) with the missing markers placed as in
scikit-learn: ``None`` (object input) and NaN are categories of their own, ``None`` before
NaN, NaN always last.  So ``["b", "a", None, nan]`` fits to ``["a", "b", None, nan]``.
Parameters on disk (all plain arrays, no object dtype), for column ``i``:

- ``categories_{i}``: the non-missing categories, ``<U`` strings, int64 or float64,
- ``none_index`` / ``nan_index`` (int64, one per column): where ``None`` / NaN sit in the
  full category list (-1: not a category of that column),
- ``infrequent_{i}`` (int64): indices (into the full list; for the ordinal encoder, the
  list without NaN, as scikit-learn counts) of the infrequent categories, empty if none,
- ``drop_idx`` (one-hot only, int64): the category dropped per column *after* infrequent
  grouping (scikit-learn's ``_drop_idx_after_grouping``), -1 for none.

A value is looked up by ``np.searchsorted`` (numeric and ``<U`` input) or one C-level dict
pass (object input: the same hash equality scikit-learn's ``set`` lookups use, so ``"1"``
is not ``1``); values of the other kind are unknown.  Every fitted encoder turns this into
one table per column, cached on the instance: full category index (or unknown, the last
slot) -> output column (one-hot, -1: all zeros) or output value (ordinal).  An unknown value
is refused with :class:`~mmfs.errors.TransformError` (``handle_unknown="error"``), encoded
as zeros (``"ignore"``), as the infrequent column (``"infrequent_if_exist"``, ``"warn"``) or
as ``unknown_value`` (ordinal ``"use_encoded_value"``).  Infrequent categories
(``min_frequency`` / ``max_categories``) are grouped into one trailing column (ordinal: one
trailing code) exactly as scikit-learn groups them; ``drop`` applies after grouping.
Encoders of float32 input output float32 (the contract; scikit-learn's default dtype is
float64): the values, small integers and NaN, are the same.  Bool input is int64 (0, 1).

Numbers.  :class:`KBinsDiscretizer` stores ``bin_edges_{j}`` (float64) and ``n_bins``;
:class:`QuantileTransformer` stores ``quantiles`` (n_quantiles, n_features) and
``references``.  Fitting runs the very numpy calls scikit-learn runs, on data of the input's
dtype (so float32 edges and quantiles match bit for bit), and the transforms repeat
scikit-learn's arithmetic in the same order and dtype: outputs are identical, not merely
close.  For float32 input the quantile transform therefore rounds to float32 where
scikit-learn does (between the interpolation and the normal ppf), a deliberate exception
to the contract's "compute in float64, round once": near the tails the ppf magnifies that
rounding far beyond float32's precision, so rounding once would disagree with scikit-learn.
With more rows than ``subsample`` both draw the same rows as scikit-learn from
``np.random.RandomState(random_state)`` (reproducible when ``random_state`` is an int).

scikit-learn attribute mapping (``to_sklearn`` sets them on an unfitted estimator):
``categories_``, ``n_features_in_``, ``_infrequent_enabled``, ``_infrequent_indices``,
``_default_to_infrequent_mappings``, ``drop_idx_``, ``_drop_idx_after_grouping``,
``_n_features_outs`` (one-hot), ``_missing_indices`` (ordinal), ``bin_edges_``, ``n_bins_``,
``_encoder`` (k-bins), ``quantiles_``, ``references_``, ``n_quantiles_`` (quantile).

Options are JSON: NaN (``encoded_missing_value``, ``unknown_value``) is kept as the string
``"nan"``; in an explicit numeric category list a trailing ``None`` stands for NaN.

Differences from scikit-learn 1.9:

- Outputs are dense (``sparse_output``, ``encode="onehot"``) with the contract's dtype
  (no ``dtype`` option); ``drop`` as a per-column array, ``feature_name_combiner``,
  k-means bins, sample weights and ``ignore_implicit_zeros`` are not supported.
- An explicit category list holds strings (order kept, ``None`` anywhere, no NaN) or
  sorted numbers (NaN last); scikit-learn's silent cast of given numeric categories to
  the data's dtype (1.5 -> 1 for int data) is not reproduced.  An object column must hold
  only strings or only numbers (scikit-learn: TypeError); strings ending in NUL are refused.
- A value of the other kind at transform time (a number in a string column) is unknown,
  where scikit-learn may fail; one-hot with every k-bin removed is a TransformError (an
  IndexError in scikit-learn); an all-NaN quantile column warns in mmfs's words.
- ``random_state`` is an int or None; None draws fresh entropy, not numpy's global state
  (neither is reproducible).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Callable
from itertools import repeat
from typing import Any, ClassVar, Self

import numpy as np

from mmfs.errors import DimensionError, MissingDependencyError, ParameterError, TransformError
from mmfs.transforms._base import Transform, output_dtype

__all__ = [
    "SKLEARN_CLASSES",
    "KBinsDiscretizer",
    "OneHotEncoder",
    "OrdinalEncoder",
    "QuantileTransformer",
]

#: scikit-learn's threshold for the normal output's clipping (sklearn.preprocessing._data)
BOUNDS_THRESHOLD = 1e-7
_QUANTILE_METHODS = (
    "inverted_cdf", "averaged_inverted_cdf", "closest_observation",
    "interpolated_inverted_cdf", "hazen", "weibull", "linear", "median_unbiased",
    "normal_unbiased",
)  # fmt: skip
_MAX_SHOWN = 5  # unknown values named in an error message


def _sklearn() -> Any:
    """The sklearn.preprocessing module, or MissingDependencyError."""
    try:
        import sklearn.preprocessing as skp
    except ImportError as e:  # pragma: no cover - scikit-learn is installed for the tests
        raise MissingDependencyError(
            "to_sklearn()/from_sklearn() need scikit-learn: pip install scikit-learn"
        ) from e
    return skp


def _is_nan(v: Any) -> bool:
    """scikit-learn's is_scalar_nan: a real number that is NaN."""
    return isinstance(v, numbers.Real) and math.isnan(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)


def _nan_option(kind: str, name: str, v: Any) -> Any:
    """A real option value that may be NaN, in its JSON form (NaN -> "nan")."""
    if v == "nan" or (_is_number(v) and math.isnan(v)):
        return "nan"
    if _is_number(v) and math.isfinite(v):
        return int(v) if isinstance(v, numbers.Integral) else float(v)
    raise ParameterError(f"{kind}: {name} must be a number or NaN, got {v!r}")


def _opt_float(v: Any) -> float:
    return math.nan if v == "nan" else float(v)


def _check_choice(kind: str, name: str, v: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in choices:
        raise ParameterError(f"{kind}: {name} must be one of {list(choices)}, got {v!r}")
    return v


def _check_int(kind: str, name: str, v: Any, lo: int, *, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if not isinstance(v, numbers.Integral) or isinstance(v, bool | np.bool_) or int(v) < lo:
        extra = " or None" if allow_none else ""
        raise ParameterError(f"{kind}: {name} must be an int >= {lo}{extra}, got {v!r}")
    return int(v)


def _check_seed(kind: str, v: Any) -> int | None:
    if v is None:
        return None
    if (
        not isinstance(v, numbers.Integral)
        or isinstance(v, bool | np.bool_)
        or not (0 <= int(v) < 2**32)
    ):
        raise ParameterError(
            f"{kind}: random_state must be None or an int in [0, 2**32) (a RandomState "
            f"instance cannot be stored), got {v!r}"
        )
    return int(v)


def _rng(seed: int | None) -> np.random.RandomState:
    """scikit-learn's check_random_state for an int seed (None: fresh entropy)."""
    return np.random.RandomState(seed)


# -- categories ----------------------------------------------------------------------------


def _str_array(values: list[Any], where: str) -> np.ndarray:
    """A '<U' array of str values (refusing trailing NULs, which '<U' arrays drop)."""
    if any(s.endswith("\x00") for s in values):
        raise ParameterError(f"{where}: a category ends with a NUL character")
    return np.array(values, dtype=str) if values else np.empty(0, dtype="<U1")


def _num_array(values: list[Any], where: str) -> np.ndarray:
    """An int64 array when every value is integral, else float64."""
    if all(isinstance(v, numbers.Integral) for v in values):
        try:
            return np.array([int(v) for v in values], dtype=np.int64)
        except OverflowError:
            raise ParameterError(f"{where}: an integer category does not fit int64") from None
    return np.array([float(v) for v in values], dtype=np.float64)


class _Cats:
    """One column's categories (see the module docstring) and its value lookup."""

    __slots__ = ("_full", "_sorter", "_table", "n", "nan_index", "none_index", "values")

    def __init__(self, values: np.ndarray, none_index: int, nan_index: int) -> None:
        self.values = values
        self.none_index = none_index
        self.nan_index = nan_index
        self.n = values.size + (none_index >= 0) + (nan_index >= 0)
        self._sorter = np.argsort(values, kind="stable")
        self._full = np.arange(values.size, dtype=np.int64)  # position -> full index
        if none_index >= 0:
            self._full[none_index:] += 1
        self._table: dict[Any, int] | None = None

    @property
    def is_str(self) -> bool:
        return self.values.dtype.kind == "U"

    def labels(self) -> list[Any]:
        """The full category list, with None and NaN in place."""
        out: list[Any] = self.values.tolist()
        if self.none_index >= 0:
            out.insert(self.none_index, None)
        if self.nan_index >= 0:
            out.append(math.nan)
        return out

    def codes(self, v: np.ndarray, where: str) -> np.ndarray:
        """Full category index of every value of the 1-D array v; -1 for unknown ones."""
        kind = v.dtype.kind
        if kind == "O":
            if self._table is None:
                table = {x: int(i) for x, i in zip(self.values.tolist(), self._full, strict=True)}
                if self.none_index >= 0:
                    table[None] = self.none_index
                self._table = table
            try:
                out = np.fromiter(
                    map(self._table.get, v.tolist(), repeat(-1)), np.int64, v.shape[0]
                )
            except TypeError as e:
                raise TransformError(f"{where}: a value is not hashable ({e})") from None
            if self.nan_index >= 0:  # NaN objects differ from one another: test the misses
                miss = np.flatnonzero(out < 0)
                nan = np.fromiter(map(_is_nan, v[miss]), bool, miss.size)
                out[miss[nan]] = self.nan_index
            return out
        if (kind == "U") == self.is_str and self.values.size:
            pos = np.searchsorted(self.values, v, sorter=self._sorter)
            idx = self._sorter[np.minimum(pos, self.values.size - 1)]
            out = np.where(self.values[idx] == v, self._full[idx], -1)
        else:
            out = np.full(v.shape[0], -1, dtype=np.int64)
        if self.nan_index >= 0 and kind == "f":
            out[np.isnan(v)] = self.nan_index
        return out

    def to_sklearn(self) -> np.ndarray:
        """The column's ``categories_`` entry as scikit-learn's fit would have made it."""
        if self.is_str or self.none_index >= 0:
            return np.array(self.labels(), dtype=object)
        if self.nan_index >= 0:
            return np.append(self.values.astype(np.float64), np.nan)
        return self.values.copy()

    @classmethod
    def from_labels(cls, labels: list[Any], where: str) -> _Cats:
        """From a full category list (a scikit-learn ``categories_`` entry)."""
        none = [i for i, x in enumerate(labels) if x is None]
        nan = [i for i, x in enumerate(labels) if _is_nan(x)]
        if len(none) > 1 or len(nan) > 1 or (nan and nan[0] != len(labels) - 1):
            raise ParameterError(f"{where}: None and NaN may each appear once, NaN last")
        rest = [x for x in labels if x is not None and not _is_nan(x)]
        if all(isinstance(x, str) for x in rest):
            values = _str_array(rest, where)
        elif all(isinstance(x, numbers.Real) for x in rest):  # bool: an int, as in numpy
            values = _num_array(rest, where)
        else:
            types = sorted({type(x).__name__ for x in rest})
            raise ParameterError(
                f"{where}: categories must be all strings or all numbers, got types {types}"
            )
        if values.size != np.unique(values).size:
            raise ParameterError(f"{where}: the categories contain duplicates")
        return cls(values, none[0] if none else -1, len(labels) - 1 if nan else -1)

    @classmethod
    def learn(cls, v: np.ndarray, where: str) -> _Cats:
        """The categories of the 1-D array v, as scikit-learn's ``_unique`` finds them."""
        kind = v.dtype.kind
        if kind == "U":
            return cls(np.unique(v), -1, -1)
        if kind == "f":
            nan = np.isnan(v)
            values = np.unique(v[~nan].astype(np.float64))
            return cls(values, -1, values.size if nan.any() else -1)
        if kind in "iub":
            if v.dtype == np.uint64 and v.size and v.max() > np.iinfo(np.int64).max:
                raise ParameterError(f"{where}: an integer category does not fit int64")
            return cls(np.unique(v).astype(np.int64), -1, -1)
        try:
            uniques = set(v)
        except TypeError as e:
            raise ParameterError(f"{where}: a value is not hashable ({e})") from None
        has_none = None in uniques
        has_nan = any(_is_nan(x) for x in uniques)
        rest = [x for x in uniques if x is not None and not _is_nan(x)]
        with contextlib.suppress(TypeError):  # mixed types: refused by from_labels
            rest = sorted(rest)
        labels = rest + [None] * has_none + [math.nan] * has_nan
        return cls.from_labels(labels, where)


def _norm_categories(kind: str, categories: Any) -> Any:
    """The ``categories`` option in its JSON form ("auto" or one list per column)."""
    if isinstance(categories, str):
        if categories != "auto":
            raise ParameterError(f"{kind}: categories must be 'auto' or a list of lists")
        return "auto"
    if not isinstance(categories, list | tuple) or not categories:
        raise ParameterError(
            f"{kind}: categories must be 'auto' or a non-empty list with one list of "
            f"categories per column, got {categories!r}"
        )
    out: list[list[Any]] = []
    for i, cats in enumerate(categories):
        where = f"{kind}: categories[{i}]"
        if isinstance(cats, np.ndarray):
            cats = cats.tolist()
        if not isinstance(cats, list | tuple) or not cats:
            raise ParameterError(f"{where} must be a non-empty list, got {cats!r}")
        rest = [x for x in cats if x is not None and not _is_nan(x)]
        if not rest:
            raise ParameterError(f"{where} needs at least one category besides None/NaN")
        if all(isinstance(x, str) for x in rest):
            if any(_is_nan(x) for x in cats):
                raise ParameterError(
                    f"{where}: NaN is not supported in a list of string categories "
                    f"(missing strings are None)"
                )
            labels: list[Any] = [None if x is None else str(x) for x in cats]
        else:
            if not all(_is_number(x) for x in rest):
                raise ParameterError(
                    f"{where}: categories must be all strings or all numbers, got {cats!r}"
                )
            missing = [k for k, x in enumerate(cats) if x is None or _is_nan(x)]
            if missing and missing != [len(cats) - 1]:
                raise ParameterError(
                    f"{where}: NaN (or None) may only appear once, as the last numeric category"
                )
            nums = _num_array(rest, where)
            if np.any(np.diff(nums) <= 0):
                raise ParameterError(
                    f"{where}: numeric categories must be sorted ascending without duplicates"
                )
            labels = nums.tolist() + [None] * len(missing)
        _cats_from_option(labels, where)  # refuses duplicates
        out.append(labels)
    return out


def _cats_from_option(labels: list[Any], where: str) -> _Cats:
    """A column's categories from its normalised option list."""
    if any(isinstance(x, str) for x in labels):
        return _Cats.from_labels(labels, where)
    nums = [x for x in labels if x is not None]
    return _Cats.from_labels(nums + [math.nan] * (len(nums) < len(labels)), where)


def _option_to_sklearn(labels: list[Any]) -> list[Any]:
    if any(isinstance(x, str) for x in labels):
        return list(labels)
    return [math.nan if x is None else x for x in labels]


def _identify_infrequent(
    counts: np.ndarray, n_samples: int, min_frequency: Any, max_categories: int | None
) -> np.ndarray:
    """scikit-learn's _BaseEncoder._identify_infrequent (an empty array for none)."""
    if isinstance(min_frequency, numbers.Integral):
        mask = counts < min_frequency
    elif min_frequency is not None:
        mask = counts < n_samples * min_frequency
    else:
        mask = np.zeros(counts.shape[0], dtype=bool)
    n_current = counts.size - mask.sum() + 1
    if max_categories is not None and max_categories < n_current:
        n_frequent = max_categories - 1
        if n_frequent == 0:
            mask[:] = True
        else:
            mask[np.argsort(counts, kind="mergesort")[:-n_frequent]] = True
    return np.flatnonzero(mask).astype(np.int64)


def _group_map(m: int, infrequent: np.ndarray) -> np.ndarray:
    """scikit-learn's default-to-infrequent mapping of m categories."""
    mapping = np.empty(m, dtype=np.int64)
    n_frequent = m - infrequent.size
    mapping[infrequent] = n_frequent
    mapping[np.setdiff1d(np.arange(m), infrequent)] = np.arange(n_frequent)
    return mapping


def _shown(v: np.ndarray) -> list[Any]:
    """A few distinct values of v, for an error message."""
    out: list[Any] = []
    for x in v[:1000].tolist():
        if x not in out:
            out.append(x)
    return out[:_MAX_SHOWN]


class _Encoder(Transform):
    """What the two encoders share: options, category learning and lookup."""

    categorical: ClassVar[bool] = True
    _handle_unknown: ClassVar[tuple[str, ...]] = ()
    _unknown_hint: ClassVar[str] = ""
    _cache: tuple[Any, Any] | None = None
    _build_tables: Callable[[], Any]  # each encoder's lookup tables, from its params

    def _init_common(
        self, categories: Any, handle_unknown: Any, min_frequency: Any, max_categories: Any
    ) -> dict[str, Any]:
        if min_frequency is not None:
            ok = _is_number(min_frequency) and (
                int(min_frequency) >= 1
                if isinstance(min_frequency, numbers.Integral)
                else 0 < min_frequency < 1
            )
            if not ok:
                raise ParameterError(
                    f"{self.kind}: min_frequency must be None, an int >= 1 or a float in "
                    f"(0, 1), got {min_frequency!r}"
                )
            min_frequency = (
                int(min_frequency)
                if isinstance(min_frequency, numbers.Integral)
                else float(min_frequency)
            )
        return {
            "categories": _norm_categories(self.kind, categories),
            "handle_unknown": _check_choice(
                self.kind, "handle_unknown", handle_unknown, self._handle_unknown
            ),
            "min_frequency": min_frequency,
            "max_categories": _check_int(
                self.kind, "max_categories", max_categories, 1, allow_none=True
            ),
        }

    @property
    def _infrequent_enabled(self) -> bool:
        return self.options["max_categories"] is not None or (
            self.options["min_frequency"] is not None
        )

    def _check_input(self, X: Any) -> np.ndarray:
        X = super()._check_input(X)
        if X.dtype.kind not in "OUfiub":
            raise ParameterError(
                f"{self.kind}: expected an object, str or numeric array, got dtype {X.dtype}"
            )
        if X.dtype.kind == "f" and np.isinf(X).any():
            col = int(np.flatnonzero(np.isinf(X).any(axis=0))[0])
            raise TransformError(f"{self.kind}: column {col} holds an infinite value")
        return X

    def _learn(self, X: np.ndarray) -> tuple[list[_Cats], list[np.ndarray]]:
        """Each column's categories and the full category codes of X (fit)."""
        cats_opt = self.options["categories"]
        if cats_opt != "auto" and len(cats_opt) != X.shape[1]:
            raise DimensionError(
                f"{self.kind}: categories has {len(cats_opt)} lists for {X.shape[1]} columns"
            )
        cols: list[_Cats] = []
        codes: list[np.ndarray] = []
        for i in range(X.shape[1]):
            where = f"{self.kind}: column {i}"
            if cats_opt == "auto":
                col = _Cats.learn(X[:, i], where)
            else:
                col = _cats_from_option(cats_opt[i], where)
            c = col.codes(X[:, i], where)
            if self.options["handle_unknown"] == "error" and (c < 0).any():
                raise TransformError(
                    f"{where}: found unknown categories {_shown(X[c < 0, i])} during fit "
                    f"(not in the given categories)"
                )
            cols.append(col)
            codes.append(c)
        return cols, codes

    @staticmethod
    def _cats_params(cols: list[_Cats]) -> dict[str, np.ndarray]:
        params = {f"categories_{i}": c.values for i, c in enumerate(cols)}
        params["none_index"] = np.array([c.none_index for c in cols], dtype=np.int64)
        params["nan_index"] = np.array([c.nan_index for c in cols], dtype=np.int64)
        return params

    def _columns(self) -> list[_Cats]:
        p = self.params
        assert p is not None
        assert self.n_features_in is not None
        return [
            _Cats(p[f"categories_{i}"], int(p["none_index"][i]), int(p["nan_index"][i]))
            for i in range(self.n_features_in)
        ]

    def _infrequent(self, i: int) -> np.ndarray:
        assert self.params is not None
        return self.params.get(f"infrequent_{i}", np.empty(0, dtype=np.int64))

    def _tables(self) -> Any:
        """The lookup tables of this fitted instance (built once, cached)."""
        if self._cache is None or self._cache[0] is not self.params:
            self._cache = (self.params, self._build_tables())
        return self._cache[1]

    def _codes(self, X: np.ndarray, cols: list[_Cats]) -> tuple[list[np.ndarray], list[int]]:
        """Full codes per column and the columns holding unknown values."""
        codes: list[np.ndarray] = []
        unknown: list[int] = []
        for i, col in enumerate(cols):
            c = col.codes(X[:, i], f"{self.kind}: column {i}")
            if (c < 0).any():
                if self.options["handle_unknown"] == "error":
                    raise TransformError(
                        f"{self.kind}: found unknown categories {_shown(X[c < 0, i])} in "
                        f"column {i} during transform (handle_unknown='error'; "
                        f"{self._unknown_hint})"
                    )
                unknown.append(i)
            codes.append(c)
        return codes, unknown

    def _sk_common(self, est: Any) -> None:
        cols = self._columns()
        est.categories_ = [c.to_sklearn() for c in cols]
        est.n_features_in_ = self.n_features_in
        est._infrequent_enabled = self._infrequent_enabled
        if self._infrequent_enabled:
            infrequent = [self._infrequent(i) for i in range(len(cols))]
            est._infrequent_indices = [x.copy() if x.size else None for x in infrequent]
            est._default_to_infrequent_mappings = [
                _group_map(c.n - self._nan_excluded(c), x) if x.size else None
                for c, x in zip(cols, infrequent, strict=True)
            ]

    def _nan_excluded(self, c: _Cats) -> int:
        """1 where the missing (NaN) category is left out of infrequent counting."""
        return 0

    @classmethod
    def _common_from_sklearn(cls, est: Any, sk_name: str) -> tuple[dict[str, Any], int]:
        skp = _sklearn()
        if not isinstance(est, getattr(skp, sk_name)):
            raise ParameterError(f"expected a fitted {sk_name}, got {type(est).__name__}")
        if not hasattr(est, "categories_"):
            raise ParameterError(f"the {sk_name} is not fitted: call its fit() first")
        cols = [
            _Cats.from_labels(list(c.tolist()), f"{cls.kind}: categories_[{i}]")
            for i, c in enumerate(est.categories_)
        ]
        params = cls._cats_params(cols)
        if getattr(est, "_infrequent_enabled", False):
            for i, x in enumerate(est._infrequent_indices):
                params[f"infrequent_{i}"] = (
                    np.empty(0, dtype=np.int64) if x is None else np.asarray(x, dtype=np.int64)
                )
        return params, int(est.n_features_in_)


class OneHotEncoder(_Encoder):
    """One column per category (dense), as ``sklearn.preprocessing.OneHotEncoder``.

    ``drop`` is None, ``"first"`` or ``"if_binary"``; ``handle_unknown`` is ``"error"``,
    ``"ignore"``, ``"infrequent_if_exist"`` or ``"warn"``.  The output is always dense
    (scikit-learn's ``sparse_output=False``).
    """

    kind: ClassVar[str] = "one_hot_encoder"
    sklearn_class: ClassVar[str] = "sklearn.preprocessing.OneHotEncoder"
    _handle_unknown: ClassVar[tuple[str, ...]] = ("error", "ignore", "infrequent_if_exist", "warn")
    _unknown_hint: ClassVar[str] = "use handle_unknown='ignore' to encode them as zeros"

    def __init__(
        self,
        *,
        categories: Any = "auto",
        drop: str | None = None,
        handle_unknown: str = "error",
        min_frequency: int | float | None = None,
        max_categories: int | None = None,
    ) -> None:
        opts = self._init_common(categories, handle_unknown, min_frequency, max_categories)
        if drop is not None:
            if not isinstance(drop, str):
                raise ParameterError(
                    f"{self.kind}: drop must be None, 'first' or 'if_binary' (a per-column "
                    f"array of categories to drop is not supported), got {drop!r}"
                )
            _check_choice(self.kind, "drop", drop, ("first", "if_binary"))
        super().__init__(**opts, drop=drop)

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        cols, codes = self._learn(X)
        params = self._cats_params(cols)
        n_out: list[int] = []
        for i, (col, c) in enumerate(zip(cols, codes, strict=True)):
            infrequent = np.empty(0, dtype=np.int64)
            if self._infrequent_enabled:
                counts = np.bincount(c[c >= 0], minlength=col.n)
                infrequent = _identify_infrequent(
                    counts, X.shape[0], self.options["min_frequency"],
                    self.options["max_categories"],
                )  # fmt: skip
                params[f"infrequent_{i}"] = infrequent
            n_out.append(col.n - max(infrequent.size - 1, 0))
        drop = self.options["drop"]
        params["drop_idx"] = np.array(
            [0 if drop == "first" or (drop == "if_binary" and n == 2) else -1 for n in n_out],
            dtype=np.int64,
        )
        return params

    def _build_tables(self) -> tuple[list[_Cats], list[np.ndarray], list[int]]:
        assert self.params is not None
        to_infrequent = self.options["handle_unknown"] in ("infrequent_if_exist", "warn")
        cols = self._columns()
        maps: list[np.ndarray] = []
        widths: list[int] = []
        for i, col in enumerate(cols):
            infrequent = self._infrequent(i)
            if infrequent.size:
                n_groups = col.n - infrequent.size + 1
                unknown = n_groups - 1 if to_infrequent else -1
                full = np.append(_group_map(col.n, infrequent), unknown)
            else:
                n_groups = col.n
                full = np.append(np.arange(col.n, dtype=np.int64), -1)
            drop = int(self.params["drop_idx"][i])
            if drop >= 0:
                full = np.where(full == drop, -1, np.where(full > drop, full - 1, full))
                n_groups -= 1
            maps.append(full)
            widths.append(n_groups)
        return cols, maps, widths

    def out_widths(self) -> list[int]:
        return list(self._tables()[2])

    def _apply(self, X: np.ndarray) -> np.ndarray:
        cols, maps, widths = self._tables()
        codes, unknown = self._codes(X, cols)
        handle = self.options["handle_unknown"]
        if unknown and (handle == "warn" or self.options["drop"] is not None):
            # scikit-learn's warnings, word for word
            to = (
                "as the infrequent category."
                if handle in ("warn", "infrequent_if_exist")
                else "as all zeros"
            )
            warnings.warn(
                f"Found unknown categories in columns {unknown} during transform. These "
                f"unknown categories will be encoded {to}",
                UserWarning,
                stacklevel=3,
            )
        out = np.zeros((X.shape[0], sum(widths)), dtype=output_dtype(X))
        offset = 0
        for c, m, w in zip(codes, maps, widths, strict=True):
            j = m[c]  # c == -1 (unknown) reads the map's last slot
            rows = np.flatnonzero(j >= 0)
            out[rows, offset + j[rows]] = 1
            offset += w
        return out

    def to_sklearn(self) -> Any:
        """A fitted ``sklearn.preprocessing.OneHotEncoder(sparse_output=False)``."""
        if self.params is None:
            raise ParameterError(f"{self.kind} is not fitted: call fit() first")
        skp = _sklearn()
        cats = self.options["categories"]
        est = skp.OneHotEncoder(
            categories=cats if cats == "auto" else [_option_to_sklearn(c) for c in cats],
            drop=self.options["drop"],
            sparse_output=False,
            handle_unknown=self.options["handle_unknown"],
            min_frequency=self.options["min_frequency"],
            max_categories=self.options["max_categories"],
        )
        self._sk_common(est)
        cols, _, widths = self._tables()
        if self.options["drop"] is None:
            est._drop_idx_after_grouping = est.drop_idx_ = None
        else:
            after = [None if d < 0 else int(d) for d in self.params["drop_idx"].tolist()]
            est._drop_idx_after_grouping = np.array(after, dtype=object)
            orig: list[Any] = []
            for i, d in enumerate(after):
                infrequent = self._infrequent(i)
                if d is not None and infrequent.size:
                    d = int(np.flatnonzero(_group_map(cols[i].n, infrequent) == d)[0])
                orig.append(d)
            est.drop_idx_ = np.array(orig, dtype=object)
        est._n_features_outs = list(widths)
        return est

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        """The fitted twin of a fitted ``sklearn.preprocessing.OneHotEncoder``."""
        params, n_in = cls._common_from_sklearn(est, "OneHotEncoder")
        cats = est.categories
        new = cls(
            categories=cats if isinstance(cats, str) else [list(c) for c in cats],
            drop=est.drop,
            handle_unknown=est.handle_unknown,
            min_frequency=est.min_frequency,
            max_categories=est.max_categories,
        )
        after = est._drop_idx_after_grouping
        params["drop_idx"] = np.array(
            [-1] * n_in if after is None else [-1 if d is None else int(d) for d in after],
            dtype=np.int64,
        )
        new.params = params
        new.n_features_in = n_in
        return new


class OrdinalEncoder(_Encoder):
    """One integer code per category, as ``sklearn.preprocessing.OrdinalEncoder``.

    The missing category NaN becomes ``encoded_missing_value``; with
    ``handle_unknown="use_encoded_value"`` an unknown value becomes ``unknown_value``
    (``None`` is an ordinary category here, as in scikit-learn).
    """

    kind: ClassVar[str] = "ordinal_encoder"
    sklearn_class: ClassVar[str] = "sklearn.preprocessing.OrdinalEncoder"
    _handle_unknown: ClassVar[tuple[str, ...]] = ("error", "use_encoded_value")
    _unknown_hint: ClassVar[str] = (
        "use handle_unknown='use_encoded_value' with an unknown_value to encode them"
    )

    def __init__(
        self,
        *,
        categories: Any = "auto",
        handle_unknown: str = "error",
        unknown_value: int | float | str | None = None,
        encoded_missing_value: int | float | str = math.nan,
        min_frequency: int | float | None = None,
        max_categories: int | None = None,
    ) -> None:
        opts = self._init_common(categories, handle_unknown, min_frequency, max_categories)
        if handle_unknown == "use_encoded_value":
            if unknown_value is None or (
                isinstance(unknown_value, float) and not math.isnan(unknown_value)
            ):
                raise ParameterError(
                    f"{self.kind}: unknown_value must be an int or NaN when handle_unknown "
                    f"is 'use_encoded_value', got {unknown_value!r}"
                )
            unknown_value = _nan_option(self.kind, "unknown_value", unknown_value)
        elif unknown_value is not None:
            raise ParameterError(
                f"{self.kind}: unknown_value should only be set when handle_unknown is "
                f"'use_encoded_value', got {unknown_value!r}"
            )
        super().__init__(
            **opts,
            unknown_value=unknown_value,
            encoded_missing_value=_nan_option(
                self.kind, "encoded_missing_value", encoded_missing_value
            ),
        )

    def _nan_excluded(self, c: _Cats) -> int:
        return int(c.nan_index >= 0)

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        cols, codes = self._learn(X)
        params = self._cats_params(cols)
        cardinality: list[int] = []
        for i, (col, c) in enumerate(zip(cols, codes, strict=True)):
            m = col.n - self._nan_excluded(col)
            n_infrequent = 0
            if self._infrequent_enabled:
                counts = np.bincount(c[c >= 0], minlength=col.n)[:m]
                infrequent = _identify_infrequent(
                    counts, X.shape[0], self.options["min_frequency"],
                    self.options["max_categories"],
                )  # fmt: skip
                params[f"infrequent_{i}"] = infrequent
                n_infrequent = infrequent.size
            cardinality.append(m - n_infrequent)  # as scikit-learn counts it
        if self.options["handle_unknown"] == "use_encoded_value":
            unknown = _opt_float(self.options["unknown_value"])
            if any(0 <= unknown < n for n in cardinality):
                raise ParameterError(
                    f"{self.kind}: unknown_value {self.options['unknown_value']} is one of "
                    f"the values already used to encode the seen categories"
                )
        missing = _opt_float(self.options["encoded_missing_value"])
        bad = [i for i, c in enumerate(cols) if c.nan_index >= 0 and 0 <= missing < cardinality[i]]
        if bad:
            raise ParameterError(
                f"{self.kind}: encoded_missing_value ({self.options['encoded_missing_value']}) "
                f"is already used to encode a known category in columns {bad}"
            )
        return params

    def _build_tables(self) -> tuple[list[_Cats], list[np.ndarray]]:
        cols = self._columns()
        unknown = self.options["unknown_value"]
        unknown_value = math.nan if unknown is None else _opt_float(unknown)
        tables: list[np.ndarray] = []
        for i, col in enumerate(cols):
            values = np.arange(col.n + 1, dtype=np.float64)
            infrequent = self._infrequent(i)
            if infrequent.size:
                m = col.n - self._nan_excluded(col)
                values[:m] = _group_map(m, infrequent)
            if col.nan_index >= 0:
                values[col.nan_index] = _opt_float(self.options["encoded_missing_value"])
            values[-1] = unknown_value
            tables.append(values)
        return cols, tables

    def _apply(self, X: np.ndarray) -> np.ndarray:
        cols, tables = self._tables()
        codes, _ = self._codes(X, cols)
        out = np.empty((X.shape[0], len(cols)), dtype=output_dtype(X))
        for i, (c, t) in enumerate(zip(codes, tables, strict=True)):
            out[:, i] = t[c]  # c == -1 (unknown) reads the table's last slot
        return out

    def to_sklearn(self) -> Any:
        """A fitted ``sklearn.preprocessing.OrdinalEncoder``."""
        if self.params is None:
            raise ParameterError(f"{self.kind} is not fitted: call fit() first")
        skp = _sklearn()
        cats = self.options["categories"]
        unknown = self.options["unknown_value"]
        est = skp.OrdinalEncoder(
            categories=cats if cats == "auto" else [_option_to_sklearn(c) for c in cats],
            handle_unknown=self.options["handle_unknown"],
            unknown_value=unknown if unknown is None or unknown != "nan" else math.nan,
            encoded_missing_value=(
                math.nan
                if self.options["encoded_missing_value"] == "nan"
                else self.options["encoded_missing_value"]
            ),
            min_frequency=self.options["min_frequency"],
            max_categories=self.options["max_categories"],
        )
        self._sk_common(est)
        est._missing_indices = {
            i: c.nan_index for i, c in enumerate(self._columns()) if c.nan_index >= 0
        }
        return est

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        """The fitted twin of a fitted ``sklearn.preprocessing.OrdinalEncoder``."""
        params, n_in = cls._common_from_sklearn(est, "OrdinalEncoder")
        cats = est.categories
        new = cls(
            categories=cats if isinstance(cats, str) else [list(c) for c in cats],
            handle_unknown=est.handle_unknown,
            unknown_value=est.unknown_value,
            encoded_missing_value=est.encoded_missing_value,
            min_frequency=est.min_frequency,
            max_categories=est.max_categories,
        )
        new.params = params
        new.n_features_in = n_in
        return new


# -- numeric -------------------------------------------------------------------------------


def _check_finite(kind: str, X: np.ndarray, *, allow_nan: bool) -> None:
    bad = np.isinf(X) if allow_nan else ~np.isfinite(X)
    if bad.any():
        col = int(np.flatnonzero(bad.any(axis=0))[0])
        what = "an infinite value" if allow_nan else "NaN or an infinite value"
        raise TransformError(f"{kind}: column {col} holds {what}, which {kind} refuses")


class KBinsDiscretizer(Transform):
    """Bins per column, as ``sklearn.preprocessing.KBinsDiscretizer``.

    ``strategy`` is ``"uniform"`` or ``"quantile"`` (``"kmeans"`` is refused: its Lloyd
    iterations are not reproduced).  ``encode`` is ``"ordinal"`` or ``"onehot-dense"``;
    the sparse ``"onehot"`` is taken as ``"onehot-dense"`` since mmfs outputs are dense.
    Like scikit-learn, NaN and infinite values are refused; a constant column gets one bin
    and bins narrower than 1e-8 are removed (both with scikit-learn's warning).
    """

    kind: ClassVar[str] = "kbins_discretizer"
    sklearn_class: ClassVar[str] = "sklearn.preprocessing.KBinsDiscretizer"

    def __init__(
        self,
        n_bins: int | list[int] = 5,
        *,
        encode: str = "onehot-dense",
        strategy: str = "quantile",
        quantile_method: str = "averaged_inverted_cdf",
        subsample: int | None = 200_000,
        random_state: int | None = None,
    ) -> None:
        k = self.kind
        bins: int | list[int]
        if isinstance(n_bins, list | tuple | np.ndarray):
            bins = [_check_int(k, "n_bins", b, 2) or 0 for b in n_bins]
            if not bins:
                raise ParameterError(f"{k}: n_bins must be an int or a non-empty list")
        else:
            bins = _check_int(k, "n_bins", n_bins, 2) or 0
        if encode == "onehot":
            encode = "onehot-dense"
        if strategy == "kmeans":
            raise ParameterError(
                f"{k}: strategy='kmeans' is not supported (mmfs does not reproduce "
                f"scikit-learn's k-means exactly); use 'quantile' or 'uniform'"
            )
        super().__init__(
            n_bins=bins,
            encode=_check_choice(k, "encode", encode, ("onehot-dense", "ordinal")),
            strategy=_check_choice(k, "strategy", strategy, ("uniform", "quantile")),
            quantile_method=_check_choice(k, "quantile_method", quantile_method, _QUANTILE_METHODS),
            subsample=_check_int(k, "subsample", subsample, 1, allow_none=True),
            random_state=_check_seed(k, random_state),
        )

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        _check_finite(self.kind, X, allow_nan=False)
        n, d = X.shape
        n_bins = self.options["n_bins"]
        if isinstance(n_bins, list):
            if len(n_bins) != d:
                raise DimensionError(
                    f"{self.kind}: n_bins has {len(n_bins)} values for {d} columns"
                )
            n_bins = list(n_bins)
        else:
            n_bins = [n_bins] * d
        subsample = self.options["subsample"]
        if subsample is not None and n > subsample:  # sklearn.utils.resample(replace=True)
            X = X[_rng(self.options["random_state"]).choice(n, size=subsample, replace=True)]
        params: dict[str, np.ndarray] = {}
        method = self.options["quantile_method"]
        kw = {} if method == "linear" else {"method": method}
        for j in range(d):
            col = X[:, j]
            lo, hi = col.min(), col.max()
            if lo == hi:
                warnings.warn(f"Feature {j} is constant and will be replaced with 0.", stacklevel=3)
                n_bins[j] = 1
                params[f"bin_edges_{j}"] = np.array([-np.inf, np.inf])
                continue
            if self.options["strategy"] == "uniform":
                edges = np.asarray(np.linspace(lo, hi, n_bins[j] + 1), dtype=np.float64)
            else:
                levels = np.linspace(0, 100, n_bins[j] + 1)
                edges = np.asarray(np.percentile(col, levels, **kw), dtype=np.float64)
                edges = edges[np.ediff1d(edges, to_begin=np.inf) > 1e-8]
                if len(edges) - 1 != n_bins[j]:
                    warnings.warn(
                        f"Bins whose width are too small (i.e., <= 1e-8) in feature {j} are "
                        f"removed. Consider decreasing the number of bins.",
                        stacklevel=3,
                    )
                    n_bins[j] = len(edges) - 1
            params[f"bin_edges_{j}"] = edges
        if self.options["encode"] != "ordinal" and 0 in n_bins:
            raise TransformError(
                f"{self.kind}: every bin of column {n_bins.index(0)} is narrower than 1e-8, "
                f"so a one-hot encoding has no column (scikit-learn fails here too); "
                f"use encode='ordinal' or fewer bins"
            )
        params["n_bins"] = np.array(n_bins, dtype=np.int64)
        return params

    def out_widths(self) -> list[int]:
        assert self.params is not None
        assert self.n_features_in is not None
        if self.options["encode"] == "ordinal":
            return [1] * self.n_features_in
        return [int(b) for b in self.params["n_bins"]]

    def _apply(self, X: np.ndarray) -> np.ndarray:
        assert self.params is not None
        _check_finite(self.kind, X, allow_nan=False)
        widths = self.out_widths()
        ordinal = self.options["encode"] == "ordinal"
        out = np.zeros((X.shape[0], sum(widths)), dtype=output_dtype(X))
        rows = np.arange(X.shape[0])
        offset = 0
        for j, w in enumerate(widths):
            edges = self.params[f"bin_edges_{j}"]
            b = np.searchsorted(edges[1:-1], X[:, j], side="right")
            if ordinal:
                out[:, j] = b
            else:
                out[rows, offset + b] = 1
            offset += w
        return out

    def to_sklearn(self) -> Any:
        """A fitted ``sklearn.preprocessing.KBinsDiscretizer`` (dense output)."""
        if self.params is None or self.n_features_in is None:
            raise ParameterError(f"{self.kind} is not fitted: call fit() first")
        skp = _sklearn()
        o = self.options
        est = skp.KBinsDiscretizer(
            n_bins=o["n_bins"], encode=o["encode"], strategy=o["strategy"],
            quantile_method=o["quantile_method"], subsample=o["subsample"],
            random_state=o["random_state"],
        )  # fmt: skip
        d = self.n_features_in
        est.bin_edges_ = np.empty(d, dtype=object)
        for j in range(d):
            est.bin_edges_[j] = self.params[f"bin_edges_{j}"].copy()
        est.n_bins_ = self.params["n_bins"].astype(int)
        est.n_features_in_ = d
        if o["encode"] != "ordinal":
            est._encoder = skp.OneHotEncoder(
                categories=[np.arange(i) for i in est.n_bins_], sparse_output=False
            ).fit(np.zeros((1, d)))
        return est

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        """The fitted twin of a fitted ``sklearn.preprocessing.KBinsDiscretizer`` (its
        ``dtype`` is not kept: the output dtype follows the input, as for every mmfs
        transform)."""
        skp = _sklearn()
        if not isinstance(est, skp.KBinsDiscretizer):
            raise ParameterError(f"expected a fitted KBinsDiscretizer, got {type(est).__name__}")
        if not hasattr(est, "bin_edges_"):
            raise ParameterError("the KBinsDiscretizer is not fitted: call its fit() first")
        n_bins = est.n_bins
        new = cls(
            int(n_bins) if isinstance(n_bins, numbers.Integral) else [int(b) for b in n_bins],
            encode=est.encode,
            strategy=est.strategy,
            quantile_method=est.quantile_method,
            subsample=est.subsample,
            random_state=est.random_state,
        )
        params: dict[str, np.ndarray] = {
            f"bin_edges_{j}": np.asarray(e, dtype=np.float64) for j, e in enumerate(est.bin_edges_)
        }
        params["n_bins"] = np.asarray(est.n_bins_, dtype=np.int64)
        new.params = params
        new.n_features_in = int(est.n_features_in_)
        return new


class QuantileTransformer(Transform):
    """Map each column through its empirical CDF, as
    ``sklearn.preprocessing.QuantileTransformer``: to [0, 1] (``"uniform"``) or to a
    standard normal clipped as scikit-learn clips it (``"normal"``).  NaN passes through;
    infinite values are refused, like scikit-learn does.
    """

    kind: ClassVar[str] = "quantile_transformer"
    sklearn_class: ClassVar[str] = "sklearn.preprocessing.QuantileTransformer"

    def __init__(
        self,
        *,
        n_quantiles: int = 1000,
        output_distribution: str = "uniform",
        subsample: int | None = 10_000,
        random_state: int | None = None,
    ) -> None:
        k = self.kind
        nq = _check_int(k, "n_quantiles", n_quantiles, 1)
        sub = _check_int(k, "subsample", subsample, 1, allow_none=True)
        if sub is not None and nq is not None and nq > sub:
            raise ParameterError(
                f"{k}: the number of quantiles cannot be greater than the number of samples "
                f"used: n_quantiles={nq} > subsample={sub}"
            )
        super().__init__(
            n_quantiles=nq,
            output_distribution=_check_choice(
                k, "output_distribution", output_distribution, ("uniform", "normal")
            ),
            subsample=sub,
            random_state=_check_seed(k, random_state),
        )

    def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
        _check_finite(self.kind, X, allow_nan=True)
        n = X.shape[0]
        if self.options["n_quantiles"] > n:
            warnings.warn(
                f"n_quantiles ({self.options['n_quantiles']}) is greater than the total number "
                f"of samples ({n}). n_quantiles is set to n_samples.",
                stacklevel=3,
            )
        nq = max(1, min(self.options["n_quantiles"], n))
        rng = _rng(self.options["random_state"])
        references = np.linspace(0, 1, nq, endpoint=True)
        subsample = self.options["subsample"]
        if subsample is not None and subsample < n:  # sklearn.utils.resample(replace=False)
            idx = np.arange(n)
            rng.shuffle(idx)
            X = X[idx[:subsample]]
        empty = np.isnan(X).all(axis=0)
        if empty.any():
            warnings.warn(
                f"{self.kind}: columns {np.flatnonzero(empty).tolist()} are all NaN: "
                f"their quantiles are NaN and so is their output",
                stacklevel=3,
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            quantiles = np.nanpercentile(X, references * 100, axis=0)
        return {
            "quantiles": np.asarray(quantiles, dtype=np.float64).reshape(nq, X.shape[1]),
            "references": references,
        }

    def _apply(self, X: np.ndarray) -> np.ndarray:
        # sklearn.preprocessing.QuantileTransformer._transform_col, step for step, on a
        # copy of X in its own dtype (float32 rounds where scikit-learn's does)
        from scipy import stats

        assert self.params is not None
        _check_finite(self.kind, X, allow_nan=True)
        X = np.array(X, copy=True)
        q, refs = self.params["quantiles"], self.params["references"]
        normal = self.options["output_distribution"] == "normal"
        clip_min = stats.norm.ppf(BOUNDS_THRESHOLD - np.spacing(1))
        clip_max = stats.norm.ppf(1 - (BOUNDS_THRESHOLD - np.spacing(1)))
        with np.errstate(invalid="ignore"):
            for j in range(X.shape[1]):
                col = X[:, j]
                lo, hi = q[0, j], q[-1, j]
                if normal:
                    lower = col - BOUNDS_THRESHOLD < lo
                    upper = col + BOUNDS_THRESHOLD > hi
                else:
                    lower = col == lo
                    upper = col == hi
                finite = ~np.isnan(col)
                v = col[finite]
                col[finite] = 0.5 * (
                    np.interp(v, q[:, j], refs) - np.interp(-v, -q[::-1, j], -refs[::-1])
                )
                col[upper] = 1
                col[lower] = 0
                if normal:
                    X[:, j] = np.clip(stats.norm.ppf(col), clip_min, clip_max)
        return X.astype(output_dtype(X), copy=False)

    def to_sklearn(self) -> Any:
        """A fitted ``sklearn.preprocessing.QuantileTransformer``."""
        if self.params is None:
            raise ParameterError(f"{self.kind} is not fitted: call fit() first")
        skp = _sklearn()
        est = skp.QuantileTransformer(**self.options)
        est.quantiles_ = self.params["quantiles"].copy()
        est.references_ = self.params["references"].copy()
        est.n_quantiles_ = int(self.params["references"].size)
        est.n_features_in_ = self.n_features_in
        return est

    @classmethod
    def _from_sklearn(cls, est: Any) -> Self:
        """The fitted twin of a fitted ``sklearn.preprocessing.QuantileTransformer``."""
        skp = _sklearn()
        if not isinstance(est, skp.QuantileTransformer):
            raise ParameterError(f"expected a fitted QuantileTransformer, got {type(est).__name__}")
        if not hasattr(est, "quantiles_"):
            raise ParameterError("the QuantileTransformer is not fitted: call its fit() first")
        if est.ignore_implicit_zeros:
            raise ParameterError(
                f"{cls.kind}: ignore_implicit_zeros=True (sparse input) is not supported"
            )
        new = cls(
            n_quantiles=est.n_quantiles,
            output_distribution=est.output_distribution,
            subsample=est.subsample,
            random_state=est.random_state,
        )
        new.params = {
            "quantiles": np.asarray(est.quantiles_, dtype=np.float64),
            "references": np.asarray(est.references_, dtype=np.float64),
        }
        new.n_features_in = int(est.n_features_in_)
        return new


#: sklearn_class name -> mmfs class, for a dispatcher
SKLEARN_CLASSES: dict[str, type[Transform]] = {
    c.sklearn_class: c
    for c in (OneHotEncoder, OrdinalEncoder, KBinsDiscretizer, QuantileTransformer)
}
