"""The encoders, the k-bins discretizer and the quantile transform against scikit-learn.

Every case fits the mmfs transform and its scikit-learn twin on the same data and checks
the same outputs four ways: mmfs itself, ``to_sklearn()``, ``_from_sklearn(fitted)`` and
the stored state reloaded through JSON and ``np.save``/``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import warnings
from typing import Any

import numpy as np
import pytest
import sklearn.preprocessing as skp

from mmfs.errors import DimensionError, ParameterError, TransformError
from mmfs.transforms import _encoders as enc
from mmfs.transforms._base import KINDS, Transform, from_state

NaN = np.nan
SK: Any = skp  # scikit-learn's stubs are narrower than its API (n_bins lists)

# -- helpers --------------------------------------------------------------------------------


def reload(t: Transform) -> Transform:
    """t rebuilt from its state after a strict-JSON and np.save/np.load round trip."""
    doc, arrays = t.to_state()
    loaded = {}
    for name, arr in arrays.items():
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        buf.seek(0)
        loaded[name] = np.load(buf, allow_pickle=False)
    return from_state(json.loads(json.dumps(doc, allow_nan=False)), loaded)


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    """Encoder outputs: identical values, shape and dtype."""
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)


def assert_close(a: np.ndarray, b: np.ndarray) -> None:
    """Numeric outputs within rtol 1e-12 (float64) / 1e-6 (float32).  A relative tolerance
    says nothing at exactly 0 (the CDF below the first quantile, the normal output at the
    median, bin 0), so atol is the same relative bound taken on the output's magnitude."""
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    rtol = 1e-6 if a.dtype == np.float32 else 1e-12
    finite = b[np.isfinite(b)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(scale, 1.0))


def assert_values(a: np.ndarray, b: np.ndarray) -> None:
    """Encoder outputs for float32 input: float32 here (the mmfs contract), float64 in
    scikit-learn; the values (small integers, NaN) are identical."""
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def check_twins(m: Transform, s: Any, X: np.ndarray, *, same: Any = assert_same) -> np.ndarray:
    """m (fitted) and s (fitted) agree on X, and so do m's other forms: to_sklearn(),
    _from_sklearn(s), _from_sklearn(to_sklearn()) and the reloaded state."""
    want = s.transform(X)
    same(m.transform(X), want)
    # scikit-learn to scikit-learn: same dtype too
    (assert_close if same is assert_close else assert_same)(m.to_sklearn().transform(X), want)
    same(type(m)._from_sklearn(s).transform(X), want)
    same(type(m)._from_sklearn(m.to_sklearn()).transform(X), want)  # the round trip
    back = reload(m)
    same(back.transform(X), want)
    assert back.out_widths() == m.out_widths()
    assert m.n_outputs() == want.shape[1]
    return want


def fit_recorded(est: Any, X: np.ndarray) -> tuple[Any, list[str]]:
    """est fitted on X (mmfs: the fitted copy), and the messages it warned."""
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        out = est.fit(X)
    return out, [str(w.message) for w in got]


def ohe(**kw: Any) -> Any:
    return skp.OneHotEncoder(sparse_output=False, **kw)


# -- categorical data -----------------------------------------------------------------------


def _obj(*cols: list[Any]) -> np.ndarray:
    out = np.empty((len(cols[0]), len(cols)), dtype=object)
    for j, c in enumerate(cols):
        out[:, j] = c
    return out


_FREQ = ["b"] * 9 + ["a"] * 6 + ["c"] * 3 + ["e"] * 2 + ["d"]  # 21 rows, skewed counts
_PERM = np.random.RandomState(7).permutation(21)
_S0 = [_FREQ[i] for i in _PERM]
_S1 = [["x", "y"][i % 2] for i in range(21)]
_MISS = list(_S0)
_MISS[0], _MISS[5], _MISS[11], _MISS[17] = None, NaN, None, NaN
_NUM = np.array([3.5, -1.0, 2.0, 3.5, NaN, 2.0, 2.0, 1e-300, -1.0, 3.5, NaN, 7.0] * 2)

CAT_DATA: dict[str, np.ndarray] = {
    "str": _obj(_S0, _S1),
    "str_missing": _obj(_MISS, [None if i % 5 == 0 else s for i, s in enumerate(_S1)]),
    "numpy_str": np.array([_S0, _S1], dtype=str).T,
    "float64": np.stack([_NUM, _NUM[::-1]], axis=1),
    "float32": np.stack([_NUM, _NUM[::-1]], axis=1).astype(np.float32),
    "int64": np.array([[5, -2], [5, 3], [-7, 3], [5, 3], [0, 3], [-7, -2], [9, 3]]),
    "bool": np.array([[True, False], [True, True], [False, True], [True, True]]),
    "object_numbers": _obj([1, 2.5, None, 1, 2.5, 2.5, NaN, -3], [4, 4, 5, 4, 5, 4, 4, 4]),
    "constant": _obj(["k"] * 6, ["p", "q", "p", "q", "q", "q"]),
    "all_nan": np.array([[NaN, 1.0], [NaN, 2.0], [NaN, 1.0], [NaN, 1.0]]),
    "single_row": _obj(["only"], [None]),
    "extreme": np.array([[1.7e308], [-1.7e308], [5e-324], [-0.0], [0.0], [1.7e308], [5e-324]]),
}

OHE_OPTIONS: list[dict[str, Any]] = [
    {},
    {"drop": "first"},
    {"drop": "if_binary"},
    {"handle_unknown": "ignore"},
    {"min_frequency": 3},
    {"min_frequency": 0.2},
    {"max_categories": 3},
    {"max_categories": 1},
    {"min_frequency": 2, "max_categories": 2, "drop": "first"},
    {"max_categories": 3, "drop": "if_binary"},
    {"handle_unknown": "infrequent_if_exist", "min_frequency": 4},
    {"handle_unknown": "warn", "max_categories": 2, "drop": "first"},
]

ORD_OPTIONS: list[dict[str, Any]] = [
    {},
    {"encoded_missing_value": -1},
    {"handle_unknown": "use_encoded_value", "unknown_value": -1},
    {"handle_unknown": "use_encoded_value", "unknown_value": NaN, "encoded_missing_value": -5},
    {"min_frequency": 3},
    {"max_categories": 2, "encoded_missing_value": -2},
    {"min_frequency": 0.2, "handle_unknown": "use_encoded_value", "unknown_value": 99},
    {"max_categories": 1},
]


@pytest.mark.parametrize("opts", OHE_OPTIONS, ids=repr)
@pytest.mark.parametrize("data", list(CAT_DATA))
def test_one_hot_matches_sklearn(data: str, opts: dict[str, Any]) -> None:
    X = CAT_DATA[data]
    m = enc.OneHotEncoder(**opts).fit(X)
    s = ohe(**opts).fit(X)
    same = assert_values if X.dtype == np.float32 else assert_same
    want = check_twins(m, s, X, same=same)
    assert m.out_widths() == s._n_features_outs
    same(m.transform(X[::-1]), want[::-1])  # rows in another order: the same rows


@pytest.mark.parametrize("opts", ORD_OPTIONS, ids=repr)
@pytest.mark.parametrize("data", list(CAT_DATA))
def test_ordinal_matches_sklearn(data: str, opts: dict[str, Any]) -> None:
    X = CAT_DATA[data]
    m = enc.OrdinalEncoder(**opts).fit(X)
    s = skp.OrdinalEncoder(**opts).fit(X)
    same = assert_values if X.dtype == np.float32 else assert_same
    want = check_twins(m, s, X, same=same)
    assert m.out_widths() == [1] * X.shape[1]
    same(m.transform(X[::-1]), want[::-1])


def test_missing_values_are_categories_like_sklearn() -> None:
    X = _obj(["b", "a", None, NaN, "a"])
    m = enc.OneHotEncoder().fit(X)
    np.testing.assert_array_equal(m.transform(X), np.eye(4)[[1, 0, 2, 3, 0]])
    assert m.params is not None
    assert m.params["categories_0"].tolist() == ["a", "b"]
    assert m.params["none_index"].tolist() == [2]
    assert m.params["nan_index"].tolist() == [3]
    o = enc.OrdinalEncoder().fit(X).transform(X)  # None is a category, NaN is missing
    np.testing.assert_array_equal(o[:, 0], [1, 0, 2, NaN, 0])


def test_params_are_plain_arrays() -> None:
    X = CAT_DATA["str_missing"]
    for t in (enc.OneHotEncoder(max_categories=2), enc.OrdinalEncoder(min_frequency=2)):
        _, arrays = t.fit(X).to_state()
        for arr in arrays.values():
            assert isinstance(arr, np.ndarray)
            assert not arr.dtype.hasobject
        assert arrays["categories_0"].dtype.kind == "U"


# -- unknown categories at transform time ---------------------------------------------------

FIT = _obj(["a", "b", "a", "c", "b", "a", "d"], [1, 2, 2, 2, 1, 1, 2])
UNSEEN = _obj(["zz", None, "b", NaN, 5, "a"], [2, 3, 1, 2.0, None, "1"])


@pytest.mark.parametrize(
    "opts",
    [
        {"handle_unknown": "ignore"},
        {"handle_unknown": "infrequent_if_exist"},
        {"handle_unknown": "infrequent_if_exist", "min_frequency": 2},
        {"handle_unknown": "ignore", "max_categories": 2},
    ],
    ids=repr,
)
def test_one_hot_unknown_without_warning(opts: dict[str, Any]) -> None:
    m = enc.OneHotEncoder(**opts).fit(FIT)
    s = ohe(**opts).fit(FIT)
    check_twins(m, s, UNSEEN)


@pytest.mark.parametrize(
    ("opts", "words"),
    [
        ({"handle_unknown": "warn"}, "as the infrequent category."),
        ({"handle_unknown": "warn", "min_frequency": 2}, "as the infrequent category."),
        ({"handle_unknown": "ignore", "drop": "first"}, "as all zeros"),
        ({"handle_unknown": "infrequent_if_exist", "drop": "if_binary"}, "infrequent"),
        ({"handle_unknown": "infrequent_if_exist", "drop": "first", "max_categories": 2}, "infr"),
    ],
    ids=repr,
)
def test_one_hot_unknown_warns_like_sklearn(opts: dict[str, Any], words: str) -> None:
    m = enc.OneHotEncoder(**opts).fit(FIT)
    s = ohe(**opts).fit(FIT)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        want = s.transform(UNSEEN)
    for t in (m, m.to_sklearn(), type(m)._from_sklearn(s), reload(m)):
        with pytest.warns(UserWarning, match=words) as ours:
            assert_same(t.transform(UNSEEN), want)
        assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]


def test_one_hot_unknown_error() -> None:
    m = enc.OneHotEncoder().fit(FIT)
    with pytest.raises(
        TransformError, match=r"unknown categories \['zz', None, nan, 5\] in column 0"
    ):
        m.transform(UNSEEN)
    with pytest.raises(ValueError, match="unknown categories"):
        ohe().fit(FIT).transform(UNSEEN)
    with pytest.raises(TransformError, match="column 1"):
        m.transform(_obj(["a"], [7]))


@pytest.mark.parametrize("unknown_value", [-1, 4, NaN])
@pytest.mark.parametrize("max_categories", [None, 2])
def test_ordinal_unknown_encoded(unknown_value: float, max_categories: int | None) -> None:
    opts = {
        "handle_unknown": "use_encoded_value",
        "unknown_value": unknown_value,
        "max_categories": max_categories,
    }
    m = enc.OrdinalEncoder(**opts).fit(FIT)
    s = skp.OrdinalEncoder(**opts).fit(FIT)
    check_twins(m, s, UNSEEN)


def test_ordinal_unknown_error() -> None:
    m = enc.OrdinalEncoder().fit(FIT)
    with pytest.raises(TransformError, match=r"'zz'.*column 0.*use_encoded_value"):
        m.transform(UNSEEN)


@pytest.mark.parametrize("cls", [enc.OneHotEncoder, enc.OrdinalEncoder])
def test_input_forms_for_one_fitted_column(cls: type[Transform]) -> None:
    """Object, '<U' and numeric arrays look up the same categories; values of the other
    kind (a number in a string column, a string in a numeric one) are unknown."""
    opts: dict[str, Any] = (
        {"handle_unknown": "ignore"}
        if cls is enc.OneHotEncoder
        else {"handle_unknown": "use_encoded_value", "unknown_value": -1}
    )
    strs = cls(**opts).fit(_obj(["a", "b", "c"]))
    np.testing.assert_array_equal(
        strs.transform(np.array([["c"], ["a"], ["q"]])),
        strs.transform(_obj(["c", "a", "q"])),
    )
    as_numbers = strs.transform(np.array([[1.0], [NaN]]))
    nums = cls(**opts).fit(np.array([[1.0], [2.0], [NaN]]))
    np.testing.assert_array_equal(
        nums.transform(_obj([2.0, 1, NaN, "1", None])),
        nums.transform(np.array([[2.0], [1.0], [NaN], [7.0], [8.0]])),
    )
    as_strings = nums.transform(np.array([["1.0"], ["2"]]))
    if cls is enc.OneHotEncoder:
        assert not as_numbers.any()
        assert not as_strings.any()
    else:
        assert (as_numbers == -1).all()
        assert (as_strings == -1).all()
    ints = cls(**opts).fit(np.array([[3], [10], [-4]]))
    np.testing.assert_array_equal(
        ints.transform(np.array([[10.0], [3.0], [3.5], [NaN]])),
        ints.transform(np.array([[10], [3], [99], [98]])),
    )


def test_nan_in_str_column_and_nan_objects() -> None:
    """A NaN of any float type (each one a distinct object) finds the NaN category."""
    X = _obj(["a", float("nan"), "b"])
    m = enc.OrdinalEncoder(encoded_missing_value=-1).fit(X)
    T = _obj([np.float32("nan"), float("nan"), "b", np.float64("nan")])
    np.testing.assert_array_equal(m.transform(T)[:, 0], [-1, -1, 1, -1])
    np.testing.assert_array_equal(
        m.transform(T), skp.OrdinalEncoder(encoded_missing_value=-1).fit(X).transform(T)
    )


# -- explicit categories --------------------------------------------------------------------

EXPLICIT: list[tuple[list[Any], np.ndarray, np.ndarray]] = [
    (
        [["c", None, "a", "b"], ["y", "x"]],
        _obj(["a", "b", None, "c", "a"], ["x", "x", "y", "x", "y"]),
        _obj(["b", None, "c", "a", "a"], ["y", "y", "x", "y", "x"]),
    ),
    (
        [[-1.0, 2.0, 3.5, NaN], np.array([0, 4, 9])],
        np.array([[2.0, 4], [NaN, 0], [3.5, 9], [2.0, 4]]),
        np.array([[NaN, 9], [-1.0, 0], [3.5, 4], [2.0, 0]]),
    ),
]


@pytest.mark.parametrize(("cats", "X", "T"), EXPLICIT)
@pytest.mark.parametrize(
    ("cls", "opts"),
    [
        (enc.OneHotEncoder, {}),
        (enc.OneHotEncoder, {"drop": "first"}),
        (enc.OneHotEncoder, {"min_frequency": 2, "handle_unknown": "infrequent_if_exist"}),
        (enc.OrdinalEncoder, {}),
        (enc.OrdinalEncoder, {"max_categories": 2, "encoded_missing_value": -1}),
    ],
)
def test_explicit_categories(
    cats: list[Any], X: np.ndarray, T: np.ndarray, cls: type[Transform], opts: dict[str, Any]
) -> None:
    m = cls(categories=cats, **opts).fit(X)
    sk_cls: Any = ohe if cls is enc.OneHotEncoder else skp.OrdinalEncoder
    s = sk_cls(categories=cats, **opts).fit(X)
    check_twins(m, s, T)
    check_twins(m, s, X)
    assert json.dumps(m.options, allow_nan=False)


def test_explicit_categories_unseen_at_fit() -> None:
    cats = [["a", "b"]]
    X = _obj(["a", "q", "a", "a"])
    with pytest.raises(TransformError, match=r"unknown categories \['q'\] during fit"):
        enc.OneHotEncoder(categories=cats).fit(X)
    m = enc.OneHotEncoder(categories=cats, handle_unknown="ignore", min_frequency=2).fit(X)
    s = ohe(categories=cats, handle_unknown="ignore", min_frequency=2).fit(X)
    check_twins(m, s, X)


def test_explicit_numeric_categories_option_form() -> None:
    m = enc.OrdinalEncoder(categories=[[1, 2, None], np.array([0.5, NaN])])
    assert m.options["categories"] == [[1, 2, None], [0.5, None]]
    X = np.array([[2.0, NaN], [NaN, 0.5]])
    np.testing.assert_array_equal(m.fit(X).transform(X), [[1, NaN], [NaN, 0]])


# -- k-bins discretizer ---------------------------------------------------------------------

_R = np.random.RandomState(0)
_G = _R.standard_normal((300, 3))
_G[:, 1] = np.round(_G[:, 1] * 2)  # heavy ties: tiny quantile bins are removed
_OUTLIERS = np.r_[_G[:57, 2], -1.0, 1.0, 0.5]  # three outliers, scaled by BIG below


def big(dtype: type) -> float:
    """A huge value that stays finite, with room, in dtype."""
    return 1e300 if dtype == np.float64 else 1e36


def num_data(name: str, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, transform rows) of a numeric case, in dtype."""
    b = big(dtype)
    data = {
        "normal": (_G, np.vstack([_G[::7], [[-9, -9, -9], [9, 9, 9], [0, 0.5, -0.0]]])),
        "constant": (
            np.column_stack([_G[:40, 0], np.full(40, 2.5)]),
            np.array([[-1e9, 2.5], [0.0, 2.4], [1e9, 2.6]]),
        ),
        "extreme": (
            np.column_stack([_G[:60, 0] * b, np.where(np.arange(60) >= 57, b, 1.0) * _OUTLIERS]),
            np.array([[-b * 5, 0.0], [b * 5, b], [0.0, -b]]),
        ),
        "single_row": (np.array([[1.0, -3.0]]), np.array([[1.0, -3.0], [0.0, 0.0], [2.0, -4.0]])),
        "int_like": (
            np.array([[1, 5], [2, 5], [2, 7], [9, 8], [4, 1], [4, 4]]),
            np.array([[0, 0], [2, 5], [4.5, 7], [10, 8]]),
        ),
    }[name]
    return data[0].astype(dtype), data[1].astype(dtype)


NUM_CASES = ["normal", "constant", "extreme", "single_row", "int_like"]
KBINS_OPTIONS: list[dict[str, Any]] = [
    {"strategy": "uniform"},
    {"strategy": "uniform", "encode": "ordinal", "n_bins": 3},
    {},
    {"encode": "ordinal", "n_bins": 7},
    {"quantile_method": "linear", "n_bins": 4},
    {"quantile_method": "inverted_cdf", "encode": "ordinal"},
    {"quantile_method": "hazen"},
    {"quantile_method": "median_unbiased", "encode": "ordinal", "n_bins": 10},
    {"n_bins": 2, "quantile_method": "closest_observation"},
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("opts", KBINS_OPTIONS, ids=repr)
@pytest.mark.parametrize("data", NUM_CASES)
def test_kbins_matches_sklearn(data: str, opts: dict[str, Any], dtype: type) -> None:
    X, T = num_data(data, dtype)
    m, ours = fit_recorded(enc.KBinsDiscretizer(**opts), X)
    s, theirs = fit_recorded(skp.KBinsDiscretizer(**{"encode": "onehot-dense", **opts}), X)
    assert ours == theirs  # same warnings (constant feature, removed bins), same words
    for Y in (X, T):
        out = check_twins(m, s, Y, same=assert_close)
        assert out.dtype == dtype
    assert m.out_widths() == ([1] * X.shape[1] if opts.get("encode") else list(s.n_bins_))
    assert m.params is not None
    for j, edges in enumerate(s.bin_edges_):
        np.testing.assert_array_equal(m.params[f"bin_edges_{j}"], edges)


def test_kbins_warnings_are_sklearns() -> None:
    X = np.column_stack([np.full(10, 3.0), np.r_[np.zeros(8), 1.0, 2.0]])
    m, got = fit_recorded(enc.KBinsDiscretizer(n_bins=4), X)
    assert got == [
        "Feature 0 is constant and will be replaced with 0.",
        "Bins whose width are too small (i.e., <= 1e-8) in feature 1 are removed. "
        "Consider decreasing the number of bins.",
    ]
    assert m.out_widths() == [1, 1]


def test_kbins_per_column_bins_and_onehot_alias() -> None:
    X = _G[:, [0, 2]]
    m = enc.KBinsDiscretizer(n_bins=[3, 6], encode="onehot").fit(X)
    assert m.options["encode"] == "onehot-dense"
    s = SK.KBinsDiscretizer(n_bins=[3, 6], encode="onehot-dense").fit(X)
    check_twins(m, s, X, same=assert_close)
    assert m.out_widths() == [3, 6]
    with pytest.raises(DimensionError, match="n_bins has 2 values for 3 columns"):
        m.fit(_G)


@pytest.mark.parametrize("random_state", [0, 12345])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kbins_subsample_reproduces_sklearn(random_state: int, dtype: type) -> None:
    """With more rows than subsample, the same bootstrap rows as sklearn.utils.resample."""
    X = _G.astype(dtype)
    opts: dict[str, Any] = {"subsample": 50, "random_state": random_state, "n_bins": 6}
    m = enc.KBinsDiscretizer(**opts).fit(X)
    s = skp.KBinsDiscretizer(encode="onehot-dense", **opts).fit(X)
    check_twins(m, s, X, same=assert_close)
    full = enc.KBinsDiscretizer(n_bins=6).fit(X)
    assert m.params is not None
    assert full.params is not None
    assert not np.array_equal(m.params["bin_edges_0"], full.params["bin_edges_0"])


def test_kbins_all_bins_removed() -> None:
    """Every edge within 1e-8: scikit-learn keeps 0 bins (ordinal) or fails (one-hot)."""
    X = np.array([[0.0], [1e-10], [2e-10]])
    with pytest.warns(UserWarning, match="are removed"):
        m = enc.KBinsDiscretizer(3, encode="ordinal").fit(X)
    with pytest.warns(UserWarning, match="are removed"):
        s = skp.KBinsDiscretizer(3, encode="ordinal").fit(X)
    check_twins(m, s, X, same=assert_close)
    with (
        pytest.warns(UserWarning, match="are removed"),
        pytest.raises(TransformError, match="column 0 is narrower than 1e-8"),
    ):
        enc.KBinsDiscretizer(3).fit(X)


@pytest.mark.parametrize("bad", [NaN, np.inf, -np.inf])
def test_kbins_refuses_non_finite(bad: float) -> None:
    X = np.array([[1.0, 2.0], [3.0, bad], [2.0, 1.0]])
    with pytest.raises(TransformError, match="column 1 holds NaN or an infinite value"):
        enc.KBinsDiscretizer(2).fit(X)
    with pytest.raises(ValueError, match=r"NaN|infinity"):
        skp.KBinsDiscretizer(2).fit(X)
    m = enc.KBinsDiscretizer(2).fit(X[[0, 2]])
    with pytest.raises(TransformError, match="column 1"):
        m.transform(X)


# -- quantile transformer -------------------------------------------------------------------

_Q = _R.standard_normal((400, 4))
_Q[:, 1] = np.round(_Q[:, 1])  # repeated quantiles
_Q[::9, 0] = NaN


def qt_data(name: str, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, transform rows) of a quantile case, in dtype."""
    b = big(dtype)
    scale = np.array([1, 1, b, 1 / b])  # huge and tiny magnitudes
    data = {
        "normal": (_Q * scale, np.vstack([_Q[::5], [[-50] * 4, [50] * 4]]) * scale),
        "constant": (
            np.column_stack([np.full(30, 4.0), _Q[:30, 1]]),
            np.array([[3.0, -9.0], [4.0, 0.0], [4.0 + 1e-7, 9.0], [NaN, NaN]]),
        ),
        "single_row": (np.array([[0.5, -2.0]]), np.array([[0.5, -2.0], [0.0, 0.0], [1.0, -3.0]])),
        "ties": (
            np.array([[1.0], [1.0], [1.0], [2.0], [2.0], [5.0], [NaN]]),
            np.array([[1.0], [1.5], [2.0], [5.0], [0.0], [6.0], [NaN], [1.0 + 1e-9]]),
        ),
    }[name]
    return data[0].astype(dtype), data[1].astype(dtype)


QT_CASES = ["normal", "constant", "single_row", "ties"]
QT_OPTIONS: list[dict[str, Any]] = [
    {},
    {"n_quantiles": 10},
    {"n_quantiles": 1},
    {"n_quantiles": 2, "output_distribution": "normal"},
    {"n_quantiles": 50, "output_distribution": "normal"},
    {"output_distribution": "normal"},
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("opts", QT_OPTIONS, ids=repr)
@pytest.mark.parametrize("data", QT_CASES)
def test_quantile_matches_sklearn(data: str, opts: dict[str, Any], dtype: type) -> None:
    X, T = qt_data(data, dtype)
    m, ours = fit_recorded(enc.QuantileTransformer(**opts), X)
    s, theirs = fit_recorded(skp.QuantileTransformer(**opts), X)
    assert ours == theirs  # "n_quantiles (1000) is greater than the total number ..."
    for Y in (X, T):
        out = check_twins(m, s, Y, same=assert_close)
        assert out.dtype == dtype
        np.testing.assert_array_equal(np.isnan(out), np.isnan(Y))  # NaN passes through


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_quantile_subsample_reproduces_sklearn(dtype: type, distribution: str) -> None:
    X, _ = qt_data("normal", dtype)
    opts: dict[str, Any] = {"n_quantiles": 30, "subsample": 100, "random_state": 3}
    m = enc.QuantileTransformer(output_distribution=distribution, **opts).fit(X)
    s = skp.QuantileTransformer(output_distribution=distribution, **opts).fit(X)
    check_twins(m, s, X, same=assert_close)


def test_quantile_all_nan_column() -> None:
    X = np.column_stack([np.full(5, NaN), np.arange(5.0)])
    T = np.array([[1.0, 2.5], [NaN, NaN]])
    with pytest.warns(UserWarning, match=r"columns \[0\] are all NaN"):
        m = enc.QuantileTransformer(n_quantiles=5).fit(X)
    with pytest.warns(RuntimeWarning, match="All-NaN slice"):
        s = skp.QuantileTransformer(n_quantiles=5).fit(X)
    out = check_twins(m, s, T, same=assert_close)
    assert np.isnan(out[:, 0]).all()


def test_quantile_normal_is_clipped() -> None:
    X = np.arange(100.0).reshape(-1, 1)
    m = enc.QuantileTransformer(n_quantiles=100, output_distribution="normal").fit(X)
    out = m.transform(np.array([[-1e9], [0.0], [99.0], [1e9]]))[:, 0]
    assert np.isfinite(out).all()
    assert out[0] == out[1] < -5
    assert out[2] == out[3] > 5


def test_quantile_refuses_infinity() -> None:
    X = np.array([[1.0], [np.inf]])
    with pytest.raises(TransformError, match="column 0 holds an infinite value"):
        enc.QuantileTransformer(n_quantiles=2).fit(X)
    m = enc.QuantileTransformer(n_quantiles=2).fit(np.array([[1.0], [2.0]]))
    with pytest.raises(TransformError, match="infinite"):
        m.transform(X)


# -- the common contract --------------------------------------------------------------------

SPECS: list[tuple[Transform, np.ndarray]] = [
    (enc.OneHotEncoder(max_categories=3, drop="first"), CAT_DATA["str_missing"]),
    (enc.OrdinalEncoder(min_frequency=2), CAT_DATA["str_missing"]),
    (enc.KBinsDiscretizer(n_bins=4), _G[:, [0, 2]]),
    (enc.QuantileTransformer(n_quantiles=20), _Q),
]
SPEC_IDS = [type(t).__name__ for t, _ in SPECS]


@pytest.mark.parametrize(("spec", "X"), SPECS, ids=SPEC_IDS)
def test_fit_leaves_the_spec_alone(spec: Transform, X: np.ndarray) -> None:
    before = copy.deepcopy(spec.options)
    fitted = spec.fit(X)
    assert spec.options == before
    assert spec.params is None
    assert not spec.fitted
    assert fitted.fitted
    assert fitted.n_features_in == X.shape[1]
    assert "fitted" in repr(fitted)


@pytest.mark.parametrize(("spec", "X"), SPECS, ids=SPEC_IDS)
def test_not_fitted_and_width_mismatch(spec: Transform, X: np.ndarray) -> None:
    with pytest.raises(ParameterError, match="not fitted"):
        spec.transform(X)
    with pytest.raises(ParameterError, match="not fitted"):
        spec.to_sklearn()
    fitted = spec.fit(X)
    with pytest.raises(DimensionError, match=f"fitted on {X.shape[1]} columns, got 1"):
        fitted.transform(X[:, :1])


@pytest.mark.parametrize(("spec", "X"), SPECS, ids=SPEC_IDS)
def test_refit_of_a_used_instance(spec: Transform, X: np.ndarray) -> None:
    """A fitted instance that served (and cached its tables) refits cleanly."""
    first = spec.fit(X[: len(X) // 2])
    first.transform(X[:3])
    again = first.fit(X)
    assert_close(again.transform(X), spec.fit(X).transform(X))


def test_sklearn_class_dispatch() -> None:
    assert set(enc.SKLEARN_CLASSES.values()) == {
        enc.OneHotEncoder,
        enc.OrdinalEncoder,
        enc.KBinsDiscretizer,
        enc.QuantileTransformer,
    }
    for name, cls in enc.SKLEARN_CLASSES.items():
        module, _, attr = name.rpartition(".")
        assert cls.sklearn_class == name
        assert getattr(importlib.import_module(module), attr).__name__ == attr
        assert KINDS[cls.kind] is cls


# -- bad options and bad inputs -------------------------------------------------------------

BAD_OPTIONS: list[tuple[type[Transform], dict[str, Any], str]] = [
    (enc.OneHotEncoder, {"categories": "sorted"}, "categories must be 'auto'"),
    (enc.OneHotEncoder, {"categories": []}, "non-empty list"),
    (enc.OneHotEncoder, {"categories": ["abc"]}, r"categories\[0\] must be a non-empty list"),
    (enc.OneHotEncoder, {"categories": [[]]}, "non-empty list"),
    (enc.OneHotEncoder, {"categories": [[None]]}, "at least one category besides None"),
    (enc.OneHotEncoder, {"categories": [["a", NaN]]}, "NaN is not supported"),
    (enc.OneHotEncoder, {"categories": [["a", 1]]}, "all strings or all numbers"),
    (enc.OneHotEncoder, {"categories": [[1, True]]}, "all strings or all numbers"),
    (enc.OneHotEncoder, {"categories": [[NaN, 1.0]]}, "last numeric category"),
    (enc.OneHotEncoder, {"categories": [[1.0, NaN, None]]}, "last numeric category"),
    (enc.OneHotEncoder, {"categories": [[2, 1]]}, "sorted ascending"),
    (enc.OneHotEncoder, {"categories": [[1, 1]]}, "sorted ascending"),
    (enc.OneHotEncoder, {"categories": [["a", "b", "a"]]}, "duplicates"),
    (enc.OneHotEncoder, {"categories": [["a", None, None]]}, "None and NaN may each"),
    (enc.OneHotEncoder, {"categories": [["a\x00"]]}, "NUL"),
    (enc.OneHotEncoder, {"categories": [[2**70]]}, "does not fit int64"),
    (enc.OneHotEncoder, {"drop": "last"}, "drop must be one of"),
    (enc.OneHotEncoder, {"drop": ["a"]}, "per-column array"),
    (enc.OneHotEncoder, {"handle_unknown": "use_encoded_value"}, "handle_unknown must be"),
    (enc.OneHotEncoder, {"min_frequency": 0}, "min_frequency must be"),
    (enc.OneHotEncoder, {"min_frequency": 1.0}, "min_frequency must be"),
    (enc.OneHotEncoder, {"min_frequency": True}, "min_frequency must be"),
    (enc.OneHotEncoder, {"max_categories": 0}, "max_categories must be an int >= 1"),
    (enc.OrdinalEncoder, {"handle_unknown": "ignore"}, "handle_unknown must be"),
    (enc.OrdinalEncoder, {"handle_unknown": "use_encoded_value"}, "unknown_value must be"),
    (
        enc.OrdinalEncoder,
        {"handle_unknown": "use_encoded_value", "unknown_value": 1.5},
        "unknown_value must be an int or NaN",
    ),
    (
        enc.OrdinalEncoder,
        {"handle_unknown": "use_encoded_value", "unknown_value": "x"},
        "unknown_value must be a number or NaN",
    ),
    (enc.OrdinalEncoder, {"unknown_value": -1}, "only be set when handle_unknown"),
    (enc.OrdinalEncoder, {"encoded_missing_value": None}, "encoded_missing_value must be"),
    (enc.OrdinalEncoder, {"encoded_missing_value": np.inf}, "encoded_missing_value must be"),
    (enc.KBinsDiscretizer, {"n_bins": 1}, "n_bins must be an int >= 2"),
    (enc.KBinsDiscretizer, {"n_bins": 2.5}, "n_bins must be an int >= 2"),
    (enc.KBinsDiscretizer, {"n_bins": [3, 1]}, "n_bins must be an int >= 2"),
    (enc.KBinsDiscretizer, {"n_bins": []}, "non-empty list"),
    (enc.KBinsDiscretizer, {"encode": "sparse"}, "encode must be one of"),
    (enc.KBinsDiscretizer, {"strategy": "kmeans"}, "kmeans' is not supported"),
    (enc.KBinsDiscretizer, {"strategy": "median"}, "strategy must be one of"),
    (enc.KBinsDiscretizer, {"quantile_method": "nearest"}, "quantile_method must be one of"),
    (enc.KBinsDiscretizer, {"subsample": 0}, "subsample must be an int >= 1 or None"),
    (enc.KBinsDiscretizer, {"random_state": -1}, "random_state must be None or an int"),
    (enc.KBinsDiscretizer, {"random_state": np.random.RandomState(0)}, "cannot be stored"),
    (enc.QuantileTransformer, {"n_quantiles": 0}, "n_quantiles must be an int >= 1"),
    (enc.QuantileTransformer, {"n_quantiles": 500, "subsample": 100}, "cannot be greater"),
    (enc.QuantileTransformer, {"output_distribution": "beta"}, "output_distribution must be"),
    (enc.QuantileTransformer, {"random_state": True}, "random_state must be"),
]


@pytest.mark.parametrize(("cls", "opts", "match"), BAD_OPTIONS)
def test_bad_options(cls: type[Transform], opts: dict[str, Any], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        cls(**opts)


def test_nan_options_are_json() -> None:
    m = enc.OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=NaN)
    assert m.options["unknown_value"] == "nan"
    assert m.options["encoded_missing_value"] == "nan"
    same = enc.OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value="nan", encoded_missing_value=-1.5
    )
    assert same.options["unknown_value"] == "nan"
    assert same.options["encoded_missing_value"] == -1.5
    json.dumps(m.options, allow_nan=False)


BAD_INPUTS: list[tuple[Transform, Any, type[Exception], str]] = [
    (enc.OneHotEncoder(), np.array([[b"a"], [b"b"]]), ParameterError, "expected an object, str"),
    (enc.OneHotEncoder(), np.array([[1.0], [np.inf]]), TransformError, "infinite"),
    (enc.OneHotEncoder(), _obj(["a", 1]), ParameterError, r"all strings or all numbers.*'int'"),
    (enc.OneHotEncoder(), _obj([[1], [2]]), ParameterError, "not hashable"),
    (enc.OneHotEncoder(), _obj(["ok\x00"]), ParameterError, "NUL"),
    (enc.OneHotEncoder(), _obj([2**70, 1]), ParameterError, "does not fit int64"),
    (enc.OneHotEncoder(), np.array([[2**63]], dtype=np.uint64), ParameterError, "int64"),
    (enc.OneHotEncoder(categories=[["a"], ["b"]]), _obj(["a"]), DimensionError, "2 lists"),
    (enc.OneHotEncoder(), np.zeros((0, 2)), ParameterError, "cannot fit on 0 rows"),
    (enc.OneHotEncoder(), np.zeros((2, 2, 2)), DimensionError, "2-D"),
    (enc.KBinsDiscretizer(), np.array([["a"]]), ParameterError, "expected numeric input"),
    (enc.QuantileTransformer(), np.array([[None]]), ParameterError, "expected numeric input"),
]


@pytest.mark.parametrize(("spec", "X", "exc", "match"), BAD_INPUTS)
def test_bad_inputs_at_fit(spec: Transform, X: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        spec.fit(X)


def test_bad_inputs_at_transform() -> None:
    m = enc.OneHotEncoder(handle_unknown="ignore").fit(_obj(["a", "b"]))
    with pytest.raises(TransformError, match="column 0: a value is not hashable"):
        m.transform(_obj([["x"], "a"]))
    with pytest.raises(ParameterError, match="expected an object, str or numeric"):
        m.transform(np.array([["2020-01-01"]], dtype="datetime64[D]"))
    m = enc.OrdinalEncoder().fit(np.array([[1.0], [2.0]]))
    with pytest.raises(TransformError, match="column 0 holds an infinite value"):
        m.transform(np.array([[1.0], [-np.inf]]))
    with pytest.raises(TransformError, match=r"unknown categories \[3.0\]"):
        m.transform(np.array([[1.0], [3.0]]))


def test_ordinal_codes_that_collide() -> None:
    X = _obj(["a", "b", NaN, "c"])
    with pytest.raises(ParameterError, match="unknown_value 1 is one of the values"):
        enc.OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=1).fit(X)
    with pytest.raises(ParameterError, match=r"encoded_missing_value \(2\).*columns \[0\]"):
        enc.OrdinalEncoder(encoded_missing_value=2).fit(X)
    with pytest.raises(ValueError, match="already used"):
        skp.OrdinalEncoder(encoded_missing_value=2).fit(X)
    # 3 categories: codes 0, 1, 2, so 3 is free, as in scikit-learn
    m = enc.OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=3).fit(X)
    assert m.transform(_obj(["q"]))[0, 0] == 3


# -- scikit-learn interop -------------------------------------------------------------------


class _NotAnEncoder:
    pass


@pytest.mark.parametrize(
    ("cls", "unfitted"),
    [
        (enc.OneHotEncoder, skp.OneHotEncoder()),
        (enc.OrdinalEncoder, skp.OrdinalEncoder()),
        (enc.KBinsDiscretizer, skp.KBinsDiscretizer()),
        (enc.QuantileTransformer, skp.QuantileTransformer()),
    ],
)
def test_from_sklearn_refuses(cls: type[Transform], unfitted: Any) -> None:
    with pytest.raises(ParameterError, match="expected a fitted"):
        cls._from_sklearn(_NotAnEncoder())
    with pytest.raises(ParameterError, match="not fitted"):
        cls._from_sklearn(unfitted)


@pytest.mark.parametrize(
    ("cls", "est", "X", "match"),
    [
        (enc.OneHotEncoder, ohe(drop=["a"]), _obj(["a", "b"]), "per-column array"),
        (enc.KBinsDiscretizer, skp.KBinsDiscretizer(2, strategy="kmeans"), _G[:20], "kmeans"),
        (
            enc.QuantileTransformer,
            skp.QuantileTransformer(n_quantiles=5, ignore_implicit_zeros=True),
            _G,
            "ignore_implicit_zeros",
        ),
        (
            enc.QuantileTransformer,
            skp.QuantileTransformer(n_quantiles=5, random_state=np.random.RandomState(1)),
            _G,
            "cannot be stored",
        ),
        (
            enc.OneHotEncoder,
            ohe(),
            np.array([[b"a"], [b"b"]]),
            r"all strings or all numbers, got types \['bytes'\]",
        ),
    ],
)
def test_from_sklearn_unsupported_options(
    cls: type[Transform], est: Any, X: Any, match: str
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's own warnings (implicit zeros)
        est.fit(X)
    with pytest.raises(ParameterError, match=match):
        cls._from_sklearn(est)


def test_from_sklearn_keeps_categories_as_sklearn_fitted_them() -> None:
    """Categories come from categories_, in scikit-learn's order, with None/NaN in place."""
    X = _obj(["b", None, "a", NaN], [3, 1, 1, 3])
    s = ohe(handle_unknown="ignore").fit(X)
    m = enc.OneHotEncoder._from_sklearn(s)
    assert m.params is not None
    assert m.params["categories_0"].tolist() == ["a", "b"]
    assert m.params["none_index"].tolist() == [2, -1]
    assert m.params["nan_index"].tolist() == [3, -1]
    assert m.params["categories_1"].dtype == np.int64
    assert_same(m.transform(X), s.transform(X))
    back = m.to_sklearn()
    for mine, theirs in zip(back.categories_, s.categories_, strict=True):
        assert mine.tolist()[:2] == theirs.tolist()[:2]


def test_from_sklearn_kbins_with_dtype_and_list_bins() -> None:
    s = SK.KBinsDiscretizer(n_bins=[2, 3, 4], encode="ordinal", dtype=np.float64).fit(_G)
    m = enc.KBinsDiscretizer._from_sklearn(s)
    assert m.options["n_bins"] == [2, 3, 4]
    assert_close(m.transform(_G), s.transform(_G))
    X32 = _G.astype(np.float32)  # mmfs keeps the input's dtype, scikit-learn the option's
    assert m.transform(X32).dtype == np.float32
    np.testing.assert_array_equal(m.transform(X32), s.transform(X32))
