"""The numeric transforms (mmfs.transforms._numeric) against scikit-learn.

Every class is run, for every value of each of its options, on the same data as the
scikit-learn estimator it mirrors (random, constant, NaN, all-NaN, one-row, extreme,
negative, tied and tiny columns; float32 and float64) and must give scikit-learn's output:
bit for bit where both compute the same float64 operations, else within rtol 1e-12
(float64) or 1e-6 (float32).  The round trips (affine step, to_sklearn, from_sklearn,
to_state/from_state through .npy files) and the error paths follow.
"""

from __future__ import annotations

import io
import json
import sys
import warnings
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np
import pytest
from sklearn import impute as skimpute
from sklearn import preprocessing as skp

from mmfs.errors import (
    DimensionError,
    FormatError,
    MissingDependencyError,
    ParameterError,
    TransformError,
)
from mmfs.transforms import _base
from mmfs.transforms import _numeric as num
from mmfs.transforms._base import KINDS, Transform, apply_affine, from_state

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
BOOLS = (False, True)


# -- the cases: one mmfs class with its options, and the scikit-learn estimator they mean ------


@dataclass(frozen=True)
class Case:
    cls: type[Transform]
    kw: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.kw.items())
        return f"{self.cls.kind}({opts})"

    def spec(self) -> Transform:
        return self.cls(**self.kw)

    def sklearn(self) -> Any:
        if self.cls is num.Log1p:
            return skp.FunctionTransformer(np.log1p)
        if self.cls is num.Clip:
            kw = {"a_min": self.kw.get("min"), "a_max": self.kw.get("max")}
            return skp.FunctionTransformer(np.clip, kw_args=kw)
        if self.cls is num.SimpleImputer:
            return skimpute.SimpleImputer(**self.kw)
        return getattr(skp, self.cls.__name__)(**self.kw)

    @property
    def refuses_nan(self) -> bool:
        return self.cls in (num.Normalizer, num.PolynomialFeatures)

    @property
    def affine_class(self) -> bool:
        return self.cls not in (num.Normalizer, num.Log1p, num.PolynomialFeatures)


CASES: list[Case] = [
    *(Case(num.StandardScaler, {"with_mean": m, "with_std": s}) for m, s in product(BOOLS, BOOLS)),
    *(
        Case(num.MinMaxScaler, {"feature_range": r, "clip": c})
        for r, c in product([(0, 1), (-2.5, 4.0)], BOOLS)
    ),
    *(Case(num.MaxAbsScaler, {"clip": c}) for c in BOOLS),
    *(
        Case(num.RobustScaler, {"with_centering": c, "with_scaling": s})
        for c, s in product(BOOLS, BOOLS)
    ),
    *(Case(num.RobustScaler, {"quantile_range": q}) for q in [(10.0, 90.0), (0, 100), (50, 50)]),
    *(
        Case(num.RobustScaler, {"quantile_range": q, "unit_variance": True})
        for q in [(25.0, 75.0), (5.0, 60.0)]
    ),
    *(Case(num.Normalizer, {"norm": n}) for n in ("l1", "l2", "max")),
    *(
        Case(num.SimpleImputer, {"strategy": s, "keep_empty_features": k})
        for s, k in product(["mean", "median", "most_frequent", "constant"], BOOLS)
    ),
    *(
        Case(
            num.SimpleImputer,
            {"strategy": "constant", "fill_value": -7.5, "keep_empty_features": k},
        )
        for k in BOOLS
    ),
    Case(num.Log1p),
    *(
        Case(num.Clip, {"min": lo, "max": hi})
        for lo, hi in [(-1, None), (None, 2.5), (-0.5, 0.5), (3.0, 3.0)]
    ),
    *(
        Case(num.PolynomialFeatures, {"interaction_only": i, "include_bias": b})
        for i, b in product(BOOLS, BOOLS)
    ),
]


# -- the data --------------------------------------------------------------------------------


def _datasets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240611)
    random = rng.normal(size=(40, 4)) * [1.0, 10.0, 0.1, 1000.0] + [0.0, 5.0, -3.0, 100.0]
    nans = rng.normal(size=(40, 4)) * [2.0, 0.5, 30.0, 1.0]
    nans[rng.random(nans.shape) < 0.25] = np.nan
    all_nan = rng.normal(size=(20, 3))
    all_nan[rng.random(all_nan.shape) < 0.2] = np.nan
    all_nan[:, 1] = np.nan
    big, tiny = 1e30, 1e-30
    extreme = np.array(
        [
            [big, tiny, big],
            [-big, 2 * tiny, big],
            [tiny, -tiny, big],
            [0.0, 3 * tiny, big],
            [big, 0.0, big],
            [-tiny, tiny, big],
            [5.0, -2 * tiny, big],
            [-big, tiny / 2, big],
        ]
    )
    ties = np.array(  # median of an even count; most_frequent ties (smallest wins: 1, -3, 0)
        [[2, -3, 0], [1, 5, 4], [2, -3, 4], [1, 5, 0], [3, 9, np.nan], [4, np.nan, 7]] * 3
    )
    zeros = rng.normal(size=(12, 3))
    zeros[rng.random(zeros.shape) < 0.5] = 0.0
    zeros[[0, 5], :] = 0.0  # all-zero rows: a Normalizer leaves them zero
    return {
        "random": random,
        "constant": np.column_stack([np.full(30, 3.7), np.zeros(30), np.full(30, -2.0)]),
        "nans": nans,
        "all_nan": all_nan,
        "single_row": np.array([[1.5, -2.0, 0.0]]),
        "extreme": extreme,
        "negative": -rng.uniform(1.0, 100.0, size=(30, 3)),
        "ties": ties.astype(np.float64),
        "tiny": rng.normal(size=(30, 2)) * 1e-10,  # between float32's and float64's 10 eps
        "zeros": zeros,
    }


DATA = _datasets()


def _data(case: Case, name: str, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(fit data, transform data): the transform data also holds rows the fit never saw,
    among them, where NaN is allowed, an all-NaN row and one with a value in every column
    (so a column that was all NaN at fit meets a value)."""
    X = DATA[name]
    if case.refuses_nan:
        X = np.where(np.isnan(X), 0.0, X)
    rows = [X, X[::-1] * 1.5 + 0.25]
    if not case.refuses_nan:
        d = X.shape[1]
        rows += [np.full((1, d), np.nan), np.linspace(-1.0, 1.0, d)[None, :]]
    return X.astype(dtype), np.concatenate(rows).astype(dtype)


def _sklearn_fit(case: Case, X: np.ndarray) -> Any:
    with warnings.catch_warnings():  # scikit-learn warns on all-NaN columns
        warnings.simplefilter("ignore")
        return case.sklearn().fit(X.copy())


def _sklearn_transform(est: Any, X: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(est.transform(X.copy()))


def _exact(case: Case, dtype: np.dtype) -> bool:
    """Where mmfs computes exactly scikit-learn's float operations (so its bits).

    float64: every transform but the three that divide by ``scale_`` where mmfs multiplies
    by the reciprocal (the affine step has a ``mul``, not a divide).  float32: scikit-learn
    computes in float32 where mmfs computes in float64 and rounds once, which is the same
    only where the float64 result is exact before that rounding (clip, a product of two
    float32 values, an imputed value copied as is)."""
    if dtype == F64:
        return case.cls not in (num.StandardScaler, num.MaxAbsScaler, num.RobustScaler)
    return case.cls in (num.Clip, num.PolynomialFeatures) or (
        case.cls is num.SimpleImputer and case.kw["strategy"] in ("most_frequent", "constant")
    )


def assert_close(
    actual: np.ndarray, expected: np.ndarray, *, exact: bool = False, terms: Any = None
) -> None:
    """actual == expected bit for bit (exact), else within rtol 1e-12 (float64) / 1e-6
    (float32); NaN and infinities where expected has them.

    The absolute part of the tolerance is rtol times the column's magnitude: its largest
    finite value, or ``terms`` (the largest intermediate term of an affine step, see
    _affine_terms) when larger.  A value that comes out near zero (x - mean for x close to
    the mean, a 1e-30 entry scaled beside 1e30 ones, x * scale + min near the low end)
    carries the rounding error of the large terms it was computed from, not an error
    relative to itself.
    """
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if exact:
        np.testing.assert_array_equal(actual, expected, strict=True)
        return
    rtol = 1e-6 if actual.dtype == F32 else 1e-12
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    finite = np.isfinite(e)
    np.testing.assert_array_equal(np.isfinite(a), finite)
    np.testing.assert_array_equal(a[~finite], e[~finite])  # the same NaN and infinities
    magnitude = np.where(finite, np.abs(e), 0.0).max(axis=0, initial=0.0)
    if terms is not None:
        magnitude = np.maximum(magnitude, terms)
    with np.errstate(invalid="ignore"):  # inf - inf where not finite
        err = np.abs(np.where(finite, a - e, 0.0))
    bound = rtol * (np.abs(np.where(finite, e, 0.0)) + magnitude)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), f"at {worst}: {a[worst]!r} != {e[worst]!r} (rtol {rtol})"


def _affine_terms(t: Transform, X: np.ndarray) -> np.ndarray | None:
    """Per column, the largest term of an affine step's arithmetic, (|x| + |sub|) * |mul|
    and |add|: rounding any of them (as scikit-learn's float32 arithmetic does) moves the
    result by up to eps times it.  (A MinMaxScaler on a constant 1e30 column computes
    1e30 * 6.5 - 6.5e30 + ..., whose exact value -2.5 no float arithmetic reproduces.)"""
    a = t.affine()
    if a is None:
        return None
    v = np.abs(np.where(np.isnan(X), a.fill, X).astype(F64))
    with np.errstate(invalid="ignore", over="ignore"):
        terms = np.maximum((v + np.abs(a.sub)) * np.abs(a.mul), np.abs(a.add))
    return np.where(np.isfinite(terms), terms, 0.0).max(axis=0, initial=0.0)


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


# -- mmfs against scikit-learn ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(DATA))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_sklearn(case: Case, name: str, dtype: np.dtype) -> None:
    raw = DATA[name].astype(dtype)
    if case.refuses_nan and np.isnan(raw).any():  # both refuse NaN (then run on NaN -> 0)
        with pytest.raises(ParameterError, match="non-finite"):
            case.spec().fit(raw)
        with pytest.raises(ValueError, match="NaN"):
            case.sklearn().fit(raw)
    X, Xt = _data(case, name, dtype)
    X_before, Xt_before = X.copy(), Xt.copy()
    spec = case.spec()
    options_before = json.dumps(spec.options)
    t = spec.fit(X)
    out = t.transform(Xt)
    # neither the spec nor the inputs changed
    assert spec.params is None
    assert spec.n_features_in is None
    assert json.dumps(spec.options) == options_before
    np.testing.assert_array_equal(X, X_before, strict=True)
    np.testing.assert_array_equal(Xt, Xt_before, strict=True)

    expected = _sklearn_transform(_sklearn_fit(case, X), Xt)
    if dtype == F32 and name == "extreme" and case.kw.get("norm") == "l2":
        # scikit-learn sums the squares in float32, where 1e30 ** 2 overflows to inf and the
        # row comes out 0; mmfs sums in float64.  Compare with scikit-learn on float64.
        expected = _sklearn_transform(_sklearn_fit(case, X), Xt.astype(F64)).astype(F32)
    assert out.dtype == dtype
    assert_close(out, expected, exact=_exact(case, dtype), terms=_affine_terms(t, Xt))
    assert t.n_outputs() == out.shape[1]
    if t.columnwise:
        widths = t.out_widths()
        assert len(widths) == X.shape[1]
        assert sum(widths) == out.shape[1]


#: the round trips run on the data sets with the most corners (test_matches_sklearn has all)
ROUND_TRIP_DATA = ["random", "all_nan", "single_row", "extreme", "tiny"]


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ROUND_TRIP_DATA)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_round_trips(case: Case, name: str, dtype: np.dtype) -> None:
    X, Xt = _data(case, name, dtype)
    t = case.spec().fit(X)
    out = t.transform(Xt)

    # the affine step: apply_affine(X, affine()) is transform(X), bit for bit
    a = t.affine()
    dropping = case.cls is num.SimpleImputer and 0 in t.out_widths()
    assert (a is not None) == (case.affine_class and not dropping)
    if a is not None:
        assert all(p.dtype == F64 and p.shape == (X.shape[1],) for p in a)
        assert _bits(apply_affine(Xt, a)) == _bits(out)

    # computed in float64, rounded once: float32 in = float64 in, then rounded -- except
    # an affine step on float32 values, computed in float32 (with the subtraction split
    # in two: mmfs.transforms._base.affine32) to within a few float32 units of it
    if dtype == F32 and not (case.cls is num.Normalizer and name == "tiny"):
        # (a Normalizer takes its zero-norm threshold from the input dtype, as sklearn does)
        with np.errstate(over="ignore"):  # 1e30 ** 2 is inf in float32, on both sides
            rounded = t.transform(Xt.astype(F64)).astype(F32)
        if a is not None and _base.affine32(a) is not None:
            finite = np.isfinite(rounded)
            np.testing.assert_array_equal(out[~finite], rounded[~finite])
            err = np.abs(out[finite].astype(F64) - rounded[finite])
            bound = 4 * np.finfo(F32).eps * np.abs(rounded[finite])
            worst = int(np.argmax(err - bound))
            assert (err <= bound).all(), (out[finite][worst], rounded[finite][worst])
        else:
            assert _bits(out) == _bits(rounded)

    # to_sklearn: a fitted estimator of the right class, with scikit-learn's attributes
    sk_fitted = _sklearn_fit(case, X)
    est = t.to_sklearn()
    assert type(est) is type(sk_fitted)
    assert est.get_params() == sk_fitted.get_params()
    assert est.n_features_in_ == X.shape[1]
    for attr, want in vars(sk_fitted).items():
        if attr.endswith("_") and not attr.startswith("_") and attr != "feature_names_in_":
            got = getattr(est, attr)
            assert (got is None) == (want is None), attr
            if want is not None:  # (float32: scikit-learn's min_ = low - data_min * scale_
                # cancels in float32, hence an atol on the order of the inputs, 1)
                want64 = np.asarray(want, dtype=F64)
                rtol = 1e-6 if dtype == F32 else 1e-12
                big = np.abs(want64[np.isfinite(want64)]).max(initial=float(dtype == F32))
                np.testing.assert_allclose(
                    np.asarray(got, dtype=F64), want64, rtol=rtol, atol=rtol * big, err_msg=attr
                )
    est_out = _sklearn_transform(est, Xt)
    if dtype == F32 and name == "extreme" and case.kw.get("norm") == "l2":
        est_out = _sklearn_transform(est, Xt.astype(F64)).astype(F32)  # see test_matches_sklearn
    exact = case.cls not in (num.StandardScaler, num.MaxAbsScaler, num.RobustScaler)
    if dtype == F32:  # scikit-learn computes in float32 for these
        exact = case.cls in (num.Clip, num.PolynomialFeatures, num.SimpleImputer)
    assert_close(est_out, out, exact=exact, terms=_affine_terms(t, Xt))

    # _from_sklearn: the fitted scikit-learn estimator's parameters give its outputs
    back = num.from_sklearn(sk_fitted)
    assert type(back) is case.cls
    assert back.options == t.options
    assert back.n_features_in == X.shape[1]
    expected = _sklearn_transform(sk_fitted, Xt)
    if dtype == F32 and name == "extreme" and case.kw.get("norm") == "l2":
        expected = _sklearn_transform(sk_fitted, Xt.astype(F64)).astype(F32)
    terms = _affine_terms(back, Xt)
    assert_close(back.transform(Xt), expected, exact=_exact(case, dtype), terms=terms)
    # ... and mmfs's own fit agrees with what it reads from scikit-learn's
    terms = _affine_terms(t, Xt)
    assert_close(back.transform(Xt), out, exact=dtype == F64 and _exact(case, dtype), terms=terms)

    # to_state -> JSON text and .npy files -> from_state: the same transform, bit for bit
    doc, arrays = t.to_state()
    doc2 = json.loads(json.dumps(doc, allow_nan=False))
    arrays2 = {}
    for key, arr in arrays.items():
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        buf.seek(0)
        arrays2[key] = np.load(buf, allow_pickle=False)
    t2 = from_state(doc2, arrays2)
    assert type(t2) is case.cls
    assert t2.options == t.options
    assert _bits(t2.transform(Xt)) == _bits(out)
    assert t2.transform(Xt).dtype == dtype


# -- specific semantics ----------------------------------------------------------------------


def test_options_are_json_with_lists() -> None:
    t = num.MinMaxScaler(feature_range=(-1, 2), clip=np.bool_(True))
    assert t.options == {"feature_range": [-1.0, 2.0], "clip": True}
    r = num.RobustScaler(quantile_range=[10, 90])
    assert r.options["quantile_range"] == [10.0, 90.0]
    assert num.Clip(min=np.int64(-1)).options == {"min": -1.0, "max": None}
    assert num.SimpleImputer(fill_value=np.float32(2.5)).options["fill_value"] == 2.5
    for case in CASES:
        json.dumps(case.spec().options, allow_nan=False)
    assert {c.cls.kind for c in CASES} <= set(KINDS)


def test_most_frequent_and_median_ties() -> None:
    X = np.array([[2.0, 4.0], [1.0, 1.0], [2.0, np.nan], [1.0, 3.0], [np.nan, 2.0]])
    mf = num.SimpleImputer(strategy="most_frequent").fit(X)
    assert mf.params is not None
    np.testing.assert_array_equal(mf.params["statistics"], [1.0, 1.0])  # smallest of a tie
    med = num.SimpleImputer(strategy="median").fit(X)
    assert med.params is not None
    np.testing.assert_array_equal(med.params["statistics"], [1.5, 2.5])


def test_imputer_drops_all_nan_columns() -> None:
    X = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, 5.0]])
    t = num.SimpleImputer().fit(X)
    assert t.out_widths() == [1, 0, 1]
    assert t.n_outputs() == 2
    assert t.affine() is None
    np.testing.assert_array_equal(t.transform([[np.nan, 9.0, np.nan]]), [[1.0, 4.0]])
    kept = num.SimpleImputer(strategy="constant", fill_value=2, keep_empty_features=True).fit(X)
    assert kept.out_widths() == [1, 1, 1]
    np.testing.assert_array_equal(kept.transform([[np.nan, np.nan, 0.0]]), [[2.0, 2.0, 0.0]])


def test_zero_variance_and_zero_rows() -> None:
    X = np.array([[5.0, 1.0], [5.0, 2.0], [5.0, 3.0]])
    s = num.StandardScaler().fit(X)
    assert s.params is not None
    np.testing.assert_array_equal(s.params["scale"], [1.0, np.sqrt(2.0 / 3.0)])
    np.testing.assert_array_equal(s.transform(X)[:, 0], [0.0, 0.0, 0.0])
    n = num.Normalizer().fit(X)
    np.testing.assert_array_equal(n.transform([[0.0, 0.0], [3.0, 4.0]]), [[0, 0], [0.6, 0.8]])


def test_polynomial_column_order() -> None:
    X = np.array([[2.0, 3.0, 5.0]])
    full = num.PolynomialFeatures().fit(X).transform(X)
    np.testing.assert_array_equal(full, [[1, 2, 3, 5, 4, 6, 10, 9, 15, 25]])
    inter = num.PolynomialFeatures(interaction_only=True, include_bias=False).fit(X)
    np.testing.assert_array_equal(inter.transform(X), [[2, 3, 5, 6, 10, 15]])
    one = num.PolynomialFeatures(interaction_only=True).fit(X[:, :1])
    assert one.n_outputs() == 2
    with pytest.raises(ParameterError, match="not column-wise"):
        one.out_widths()


def test_one_dimensional_and_integer_input() -> None:
    t = num.MinMaxScaler().fit(np.array([1, 2, 3]))  # one column of ints
    assert t.n_features_in == 1
    out = t.transform(np.array([2]))
    assert out.dtype == F64
    np.testing.assert_array_equal(out, [[0.5]])


def test_log1p_out_of_domain_is_silent() -> None:
    t = num.Log1p().fit(np.zeros((1, 3)))
    out = t.transform(np.array([[-1.0, -2.0, np.nan]]))
    np.testing.assert_array_equal(out, [[-np.inf, np.nan, np.nan]])


# -- the scikit-learn class map --------------------------------------------------------------


_NP_MAX: Any = np.max  # a callable strategy (scikit-learn's hints say str)


def test_sklearn_class_map() -> None:
    for path, cls in num.SKLEARN_CLASSES.items():
        module, name = path.rsplit(".", 1)
        sk_cls = getattr(sys.modules[module], name)
        assert cls.sklearn_class == path
        assert num.transform_class_for(sk_cls()) is cls
    assert num.transform_class_for(skp.FunctionTransformer(np.log1p)) is num.Log1p
    assert num.transform_class_for(skp.FunctionTransformer(np.clip)) is num.Clip
    assert num.transform_class_for(skp.FunctionTransformer(np.exp)) is None
    assert num.transform_class_for(skp.Binarizer()) is None
    assert num.transform_class_for(object()) is None
    for cls in (num.Log1p, num.Clip):
        assert cls.sklearn_class == "sklearn.preprocessing.FunctionTransformer"
        assert cls in num.FUNCTIONS.values()


@pytest.mark.parametrize(
    ("est", "match"),
    [
        (skp.Binarizer().fit(np.zeros((1, 2))), "no numeric mmfs transform .*Binarizer"),
        (skp.FunctionTransformer(np.exp).fit(np.zeros((1, 2))), "func=<ufunc 'exp'>"),
        (skp.StandardScaler(), "not fitted"),
        (skp.FunctionTransformer(np.log1p, kw_args={"out": None}).fit(np.zeros((1, 2))), "log1p"),
        (skp.FunctionTransformer(np.clip, kw_args={"a_max": [1, 2]}).fit(np.zeros((1, 2))), "a_"),
        (skp.FunctionTransformer(np.clip, kw_args={"out": None}).fit(np.zeros((1, 2))), "a_min"),
        (skp.FunctionTransformer(np.clip).fit(np.zeros((1, 2))), "give min, max or both"),
        (skp.PolynomialFeatures(degree=3).fit(np.zeros((1, 2))), "only degree=2"),
        (skp.PolynomialFeatures().fit(np.zeros((1, 65))), "at most 64 input columns, got 65"),
        (skimpute.SimpleImputer(missing_values=-1.0).fit(np.zeros((2, 2))), "missing_values"),
        (skimpute.SimpleImputer(add_indicator=True).fit(np.zeros((2, 2))), "add_indicator"),
        (skimpute.SimpleImputer(strategy=_NP_MAX).fit(np.zeros((2, 2))), "callable strategy"),
        (
            skimpute.SimpleImputer(strategy="most_frequent").fit(np.array([["a"], ["b"]], object)),
            "only numeric imputation",
        ),
    ],
)
def test_from_sklearn_refuses(est: Any, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        num.from_sklearn(est)


def test_from_sklearn_refuses_wrong_class_and_damaged_attributes() -> None:
    with pytest.raises(ParameterError, match=r"expected a fitted sklearn\.preprocessing\.Standard"):
        num.StandardScaler._from_sklearn(skp.MinMaxScaler().fit(np.zeros((2, 2))))
    for cls in (num.Log1p, num.Clip):
        with pytest.raises(ParameterError, match="FunctionTransformer"):
            cls._from_sklearn(skp.FunctionTransformer(np.sqrt).fit(np.zeros((1, 1))))
    est = skp.StandardScaler().fit(np.ones((3, 2)))
    est.scale_ = np.ones(3)
    with pytest.raises(ParameterError, match=r"StandardScaler.scale_ must be 2 numbers"):
        num.from_sklearn(est)
    est = skp.StandardScaler().fit(np.ones((3, 2)))
    est.mean_ = None
    with pytest.raises(ParameterError, match=r"mean_ must be 2 numbers, got None"):
        num.from_sklearn(est)
    est = skp.StandardScaler().fit(np.ones((3, 2)))
    est.var_ = np.array(["a", "b"])
    with pytest.raises(ParameterError, match=r"var_ must be 2 numbers"):
        num.from_sklearn(est)
    est = skp.StandardScaler().fit(np.ones((3, 2)))
    est.n_samples_seen_ = np.array([1, 2, 3])
    with pytest.raises(ParameterError, match=r"n_samples_seen_ must be a count or 2 counts"):
        num.from_sklearn(est)
    imp = skimpute.SimpleImputer(strategy="constant").fit(np.ones((2, 1)))
    imp.fill_value = "x"
    with pytest.raises(ParameterError, match="simple_imputer: fill_value"):
        num.from_sklearn(imp)


def test_from_sklearn_reads_sparse_and_weighted_fits() -> None:
    import scipy.sparse

    rng = np.random.default_rng(3)
    X = rng.normal(size=(20, 3))
    sk = skp.StandardScaler(with_mean=False).fit(scipy.sparse.csr_matrix(X))
    np.testing.assert_allclose(
        num.from_sklearn(sk).transform(X), np.asarray(sk.transform(X)), rtol=1e-12
    )
    w = rng.uniform(0.5, 2.0, size=20)
    sk = skp.StandardScaler().fit(X, sample_weight=w)
    t = num.from_sklearn(sk)
    np.testing.assert_allclose(t.transform(X), np.asarray(sk.transform(X)), rtol=1e-12, atol=1e-12)
    assert t.params is not None
    assert t.params["n_samples_seen"].dtype == F64
    np.testing.assert_allclose(t.to_sklearn().n_samples_seen_, sk.n_samples_seen_)
    mm = skp.MaxAbsScaler().fit(X)
    del mm.clip  # a scikit-learn before 1.8 has no clip
    assert num.from_sklearn(mm).options == {"clip": False}


def test_clip_from_sklearn_keyword_spellings() -> None:
    X = np.array([[-3.0, 0.5, 9.0]])
    for kw in ({"min": -1, "max": 2}, {"a_min": None, "a_max": 2.0}, {"a_min": -1, "a_max": None}):
        sk = skp.FunctionTransformer(np.clip, kw_args=kw).fit(X)
        t = num.from_sklearn(sk)
        np.testing.assert_array_equal(t.transform(X), sk.transform(X))


# -- bad options, bad input, misuse ----------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kw", "match"),
    [
        (
            num.StandardScaler,
            {"with_mean": "yes"},
            r"with_mean must be True or False, got 'yes'",
        ),
        (num.StandardScaler, {"with_std": 1}, r"with_std must be True or False, got 1"),
        (num.MinMaxScaler, {"feature_range": (1, 0)}, r"low < high, got \(1, 0\)"),
        (num.MinMaxScaler, {"feature_range": (1, 1)}, r"low < high"),
        (num.MinMaxScaler, {"feature_range": (0, 1, 2)}, r"pair \(low, high\), got \(0, 1, 2\)"),
        (num.MinMaxScaler, {"feature_range": "01"}, r"pair \(low, high\), got '01'"),
        (num.MinMaxScaler, {"feature_range": (0, np.inf)}, r"feature_range\[1\] must be a fini"),
        (num.MinMaxScaler, {"feature_range": (True, 2)}, r"feature_range\[0\] .* got True"),
        (num.MinMaxScaler, {"feature_range": (0, 10**400)}, r"finite real number, got 1000"),
        (num.MinMaxScaler, {"feature_range": (0, 1j)}, r"finite real number, got 1j"),
        (num.MinMaxScaler, {"clip": None}, r"clip must be True or False, got None"),
        (num.MaxAbsScaler, {"clip": "no"}, r"clip must be True or False"),
        (num.RobustScaler, {"quantile_range": (75, 25)}, r"0 <= low <= high <= 100"),
        (num.RobustScaler, {"quantile_range": (-1, 50)}, r"got \(-1, 50\)"),
        (num.RobustScaler, {"quantile_range": (0, 101)}, r"0 <= low <= high <= 100"),
        (
            num.RobustScaler,
            {"quantile_range": (0, 50), "unit_variance": True},
            r"unit_variance=True needs 0 < low < high < 100",
        ),
        (
            num.RobustScaler,
            {"quantile_range": (30, 30), "unit_variance": True},
            r"got quantile_range=\(30, 30\)",
        ),
        (num.RobustScaler, {"with_centering": None}, r"with_centering must be True or False"),
        (num.Normalizer, {"norm": "l3"}, r"norm must be one of \['l1', 'l2', 'max'\], got 'l3'"),
        (num.Normalizer, {"norm": 2}, r"got 2"),
        (num.SimpleImputer, {"strategy": "mode"}, r"strategy must be one of .* got 'mode'"),
        (num.SimpleImputer, {"strategy": np.mean}, r"strategy must be one of"),
        (num.SimpleImputer, {"fill_value": "missing"}, r"fill_value .* got 'missing'"),
        (num.SimpleImputer, {"fill_value": np.nan}, r"fill_value .*finite .*got nan"),
        (num.SimpleImputer, {"keep_empty_features": 0}, r"keep_empty_features must be"),
        (num.Clip, {}, r"give min, max or both \(got neither\)"),
        (num.Clip, {"min": 2, "max": 1}, r"min must be <= max, got min=2, max=1"),
        (num.Clip, {"max": "5"}, r"max must be a finite real number, got '5'"),
        (num.Clip, {"min": -np.inf}, r"min must be a finite real number, got -inf"),
        (num.PolynomialFeatures, {"degree": 3}, r"only degree=2 is supported .*got degree=3"),
        (num.PolynomialFeatures, {"degree": True}, r"got degree=True"),
        (num.PolynomialFeatures, {"degree": (1, 2)}, r"got degree=\(1, 2\)"),
        (num.PolynomialFeatures, {"include_bias": "y"}, r"include_bias must be True or False"),
        (num.PolynomialFeatures, {"interaction_only": 2}, r"interaction_only must be"),
    ],
)
def test_bad_options(cls: type[Transform], kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        cls(**kw)


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        num.StandardScaler(copy=False)  # type: ignore[call-arg]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_and_misuse(case: Case) -> None:
    spec = case.spec()
    X = np.arange(12.0).reshape(4, 3) / 7 + 1
    with pytest.raises(ParameterError, match="not fitted"):
        spec.transform(X)
    with pytest.raises(ParameterError, match="not fitted"):
        spec.to_sklearn()
    with pytest.raises(ParameterError, match="not fitted"):
        spec.to_state()
    if case.affine_class:
        with pytest.raises(ParameterError, match="not fitted"):
            spec.affine()
    with pytest.raises(DimensionError, match="0 columns"):
        spec.fit(np.zeros((3, 0)))
    with pytest.raises(ParameterError, match="0 rows"):
        spec.fit(np.zeros((0, 3)))
    with pytest.raises(DimensionError, match="2-D"):
        spec.fit(np.zeros((2, 2, 2)))
    with pytest.raises(ParameterError, match="numeric input"):
        spec.fit(np.array([["a", "b"]]))
    if case.cls not in (num.Log1p, num.Clip):  # (FunctionTransformer checks nothing)
        bad = X.copy()
        bad[2, 1] = -np.inf
        with pytest.raises(ParameterError, match=r"infinite.* at row 2, column 1"):
            spec.fit(bad)
        with pytest.raises(ValueError, match="infinity"):
            case.sklearn().fit(bad)  # scikit-learn refuses it too
    t = spec.fit(X)
    with pytest.raises(DimensionError, match="fitted on 3 columns, got 2"):
        t.transform(X[:, :2])
    with pytest.raises(DimensionError, match="fitted on 3 columns, got 1"):
        t.transform(X[0])  # 1-D: one column
    if case.refuses_nan:
        bad = X.copy()
        bad[1, 1] = np.nan
        with pytest.raises(TransformError, match="NaN or infinite"):
            t.transform(bad)
        with pytest.raises(ValueError, match="NaN"):
            case.sklearn().fit(X).transform(bad)  # as scikit-learn does


def test_polynomial_refuses_wide_input() -> None:
    num.PolynomialFeatures().fit(np.ones((2, 64)))
    with pytest.raises(ParameterError, match=r"small feature sets, at most 64 .*got 65 .*2211"):
        num.PolynomialFeatures().fit(np.ones((2, 65)))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_damaged_state_is_refused(case: Case) -> None:
    t = case.spec().fit(np.arange(6.0).reshape(3, 2))
    doc, arrays = t.to_state()
    damaged: list[dict[str, np.ndarray]] = [{**arrays, "extra": np.zeros(2)}]
    for name, arr in arrays.items():
        damaged.append({k: v for k, v in arrays.items() if k != name})
        damaged.append({**arrays, name: np.atleast_1d(arr)[:1]})
        damaged.append({**arrays, name: np.array(["a", "b"])})
    for bad in damaged:
        with pytest.raises(FormatError, match="the fitted state is damaged"):
            from_state(doc, bad)
    if arrays:
        with pytest.raises(FormatError, match=r"shape \(3,\)"):
            from_state({**doc, "n_features_in": 3}, arrays)
    else:  # nothing but the width to damage
        wide = from_state({**doc, "n_features_in": 3}, arrays)
        with pytest.raises(DimensionError, match="fitted on 3 columns, got 2"):
            wide.transform(np.zeros((1, 2)))
    # parameters damaged in memory (not through from_state) are refused where they are used
    t.params = {name: np.atleast_1d(arr)[:1] for name, arr in arrays.items()}
    if arrays:
        with pytest.raises(TransformError, match="the fitted state is damaged"):
            t.to_sklearn()
    identity = not any(case.kw.get(k, True) for k in ("with_mean", "with_std")) or not any(
        case.kw.get(k, True) for k in ("with_centering", "with_scaling")
    )
    if arrays and not identity:
        with pytest.raises(TransformError, match="the fitted state is damaged"):
            t.transform(np.zeros((1, 2)))
    else:  # the options read no parameter (or there is none)
        np.testing.assert_array_equal(
            t.transform([[0.5, 0.25]]),
            [[0.5, 0.25]] if arrays else case.spec().fit(np.ones((1, 2))).transform([[0.5, 0.25]]),
        )


def test_from_state_refuses_bad_options() -> None:
    t = num.MinMaxScaler().fit(np.arange(4.0).reshape(2, 2))
    doc, arrays = t.to_state()
    with pytest.raises(FormatError, match=r"min_max_scaler: .*invalid.*low < high"):
        from_state({**doc, "options": {"feature_range": [1, 0], "clip": False}}, arrays)


def test_missing_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    t = num.StandardScaler().fit(np.arange(4.0).reshape(2, 2))
    monkeypatch.setitem(sys.modules, "sklearn.preprocessing", None)
    with pytest.raises(MissingDependencyError, match=r"needs scikit-learn .*pip install"):
        t.to_sklearn()
    assert isinstance(t.transform(np.zeros((1, 2))), np.ndarray)  # mmfs itself still works
