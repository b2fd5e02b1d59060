"""Stored transforms applied during retrieval (docs/transforms.md).

The reference for every transformed read is the transform's own numpy path
(``Transform.transform`` on the raw values read back without a transform), whose
agreement with scikit-learn is tested in test_transforms_numeric.py and
test_transforms_encoders.py; scikit-learn is also compared directly where the whole
path (fit from the store, serve through the kernel) is the point.  Training sets, one-key
reads, many-key reads, iter_batches and scoring workers must give the same bits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
from sklearn import preprocessing as skp
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline

import mmfs
from mmfs import transforms as T
from mmfs._kernels import _store
from mmfs.errors import (
    CorruptStoreError,
    DimensionError,
    FormatError,
    MemoryBudgetError,
    NotFoundError,
    ParameterError,
    ReadOnlyError,
    TransformError,
    TransformSkewError,
)
from mmfs.transforms import _base, catalog
from mmfs.transforms.catalog import input_matrix

N = 400
T0 = np.datetime64("2026-01-01T00:00:00", "ns")
DAY = np.timedelta64(86_400_000_000_000, "ns")
SCHEMA = {
    "a": mmfs.scalar("float32"),
    "b": mmfs.scalar("float64"),
    "c64": mmfs.scalar("float64"),
    "i": mmfs.scalar("int64"),
    "flag": mmfs.scalar("bool"),
    "emb": mmfs.dense(4),
    "half": mmfs.dense(3, "float16"),
    "color": mmfs.category(),
    "tags": mmfs.sparse(10),
}
COLORS = np.array(["red", "green", "blue", "teal"])


def _values(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, Any]:
    a = rng.normal(5 + shift, 2, n).astype(np.float32)
    a[rng.random(n) < 0.1] = np.nan
    b = rng.normal(shift, 1e3, n)
    c64 = rng.normal(-shift, 0.5, n)
    c64[rng.random(n) < 0.1] = np.nan
    emb = rng.normal(shift, 1, (n, 4)).astype(np.float32)
    emb[rng.random((n, 4)) < 0.05] = np.nan
    import scipy.sparse as sp

    return {
        "a": a,
        "b": b,
        "c64": c64,
        "i": rng.integers(-50, 50, n),
        "flag": rng.random(n) < 0.5,
        "emb": emb,
        "half": rng.normal(0, 1, (n, 3)).astype(np.float16),
        "color": rng.choice(COLORS[:3], n),
        "tags": sp.csr_matrix(np.where(rng.random((n, 10)) < 0.2, 1.0, 0.0).astype(np.float32)),
    }


@pytest.fixture
def store(tmp_path: Any) -> Iterator[mmfs.Store]:
    s = mmfs.open(tmp_path / "s")
    g = s.create_group("u", key="id", schema=SCHEMA)
    g.write(np.arange(N), _values(np.random.default_rng(0), N), event_time=T0)
    s.commit("base")
    yield s
    s.close()


def _raw(g: mmfs.FeatureGroup, keys: Any, features: list[str], **kw: Any) -> list[Any]:
    batch = g.get(keys, features, **kw)
    return [batch[f] for f in features]


def _reference(st: T.StoredTransform, g: mmfs.FeatureGroup, keys: Any, **kw: Any) -> Any:
    """The transform's numpy path on the raw values, split like the read's outputs.  A
    fused affine step applies feature by feature, each in its own dtype, with the whole
    step's flags (mmfs.transforms._base.affine_columns)."""
    arrays = _raw(g, keys, list(st.features), **kw)
    t = st.transform
    step = t.affine()
    if step is not None and all(
        getattr(ty, "dtype", "") in ("float32", "float64") for ty in st.types
    ):
        flags, p32, col, parts = _base.affine_flags(step), _base.affine32(step), 0, []
        for value, ty in zip(arrays, st.types, strict=True):
            w = ty.width
            cut = slice(col, col + w)
            part32 = None
            if p32 is not None and ty.dtype == "float32":  # type: ignore[union-attr]
                part32 = _base.Affine32(*(p[cut] for p in p32[:7]), flags=p32.flags)
            a = T.Affine(*(p[cut] for p in step))
            x = np.asarray(value).reshape(len(value), w)
            parts.append(_base.affine_columns(x, a, flags, part32).astype(np.float64))
            col += w
        return np.concatenate(parts, axis=1)
    if isinstance(t, T.CustomTransform):
        return t.call(arrays, len(arrays[0]))
    X = input_matrix(arrays, list(st.types), t.categorical)
    if t.kind == "normalizer":
        parts, col = [], 0
        for ty in st.types:
            parts.append(t._apply(X[:, col : col + ty.width]))
            col += ty.width
        return np.concatenate(parts, axis=1)
    return t.transform(X)


def _read_matrix(batch: mmfs.FeatureBatch, names: list[str]) -> np.ndarray:
    cols = [np.asarray(batch[n], dtype=np.float64).reshape(len(batch), -1) for n in names]
    return np.concatenate(cols, axis=1)


# (name, features, spec, fused)
CASES = [
    ("std", ["a", "b", "emb"], lambda: T.StandardScaler(), True),
    ("std_nomean", ["a", "emb"], lambda: T.StandardScaler(with_mean=False), True),
    ("minmax", ["a", "emb"], lambda: T.MinMaxScaler(feature_range=(-1, 1), clip=True), True),
    ("maxabs", ["b"], lambda: T.MaxAbsScaler(), True),
    ("robust", ["a", "b"], lambda: T.RobustScaler(quantile_range=(10.0, 90.0)), True),
    ("impute", ["a", "emb"], lambda: T.SimpleImputer(strategy="median"), True),
    ("imp_std", ["a", "emb"], lambda: [T.SimpleImputer(), T.StandardScaler()], True),
    ("clip", ["a", "emb"], lambda: T.Clip(min=3.0, max=6.0), True),
    ("impute64", ["c64"], lambda: T.SimpleImputer(strategy="median"), True),
    ("imp_std64", ["c64", "b"], lambda: [T.SimpleImputer(), T.StandardScaler()], True),
    ("minmax64", ["c64", "b"], lambda: T.MinMaxScaler(feature_range=(-1, 1), clip=True), True),
    ("minmax64n", ["b"], lambda: T.MinMaxScaler(), True),
    ("clip64", ["c64", "a"], lambda: T.Clip(min=-0.2, max=0.3), True),
    ("std_half", ["half"], lambda: T.StandardScaler(), False),
    ("std_int", ["i", "flag"], lambda: T.StandardScaler(), False),
    ("std_imp", ["a"], lambda: [T.StandardScaler(), T.SimpleImputer()], False),
    ("log", ["b", "emb"], lambda: [T.Clip(min=0.0), T.Log1p()], False),
    ("norm", ["half", "b"], lambda: T.Normalizer(norm="l1"), False),
    ("poly", ["a", "b"], lambda: [T.SimpleImputer(), T.PolynomialFeatures()], False),
    ("quant", ["a", "emb"], lambda: T.QuantileTransformer(n_quantiles=50), False),
    ("qnorm", ["b"],
     lambda: T.QuantileTransformer(n_quantiles=30, output_distribution="normal"), False),
    ("kbins", ["b", "emb"],
     lambda: [T.SimpleImputer(), T.KBinsDiscretizer(n_bins=4, strategy="uniform")], False),
    ("kord", ["b"], lambda: T.KBinsDiscretizer(n_bins=3, encode="ordinal"), False),
    ("onehot", ["color"], lambda: T.OneHotEncoder(handle_unknown="ignore"), False),
    ("ordinal", ["color"], lambda: T.OrdinalEncoder(), False),
]  # fmt: skip


@pytest.mark.parametrize(("name", "features", "spec", "fused"), CASES, ids=[c[0] for c in CASES])
def test_read_equals_the_transforms_numpy_path(
    store: mmfs.Store, name: str, features: list[str], spec: Any, fused: bool
) -> None:
    g = store["u"]
    st = store.transforms.fit(name, "u", features, spec())
    keys = np.r_[np.arange(0, N, 7), 10**9, 3, 3]  # one missing key, one repeated
    batch = g.get(keys, ["a"], transform=st.ref)
    outs = [o for o, _ in catalog.outputs(st)]
    assert batch.names == ("a", *outs)
    assert (batch._plan.fields.n_aff > 0) == fused
    got = _read_matrix(batch, outs)
    found = keys < N
    want = _reference(st, g, keys[found])
    col = 0
    for o in outs:  # each output in its own dtype: the reference rounded once to it
        value = batch[o].reshape(len(keys), -1)
        w = value.shape[1]
        np.testing.assert_array_equal(value[found], want[:, col : col + w].astype(value.dtype))
        col += w
    assert col == want.shape[1]
    assert np.isnan(got[~found]).all()
    assert batch.mask.tolist() == (~found).tolist()
    np.testing.assert_array_equal(batch["a"], g.get(keys, ["a"])["a"])  # raw beside
    # the same bits from every read path
    for k in (0, 3, 7):
        one = g.get(int(keys[k]), transform=st.ref)
        np.testing.assert_array_equal(_read_matrix(one, outs)[0], got[k])
    for n_threads in (1, 2):
        again = g.get(keys, transform=[st.ref], n_threads=n_threads)
        np.testing.assert_array_equal(_read_matrix(again, outs), got)
    frame = pd.DataFrame({"id": keys, "event_time": np.full(len(keys), T0 + DAY)})
    ts = store.training_set(frame, [], transform=st.ref)
    np.testing.assert_array_equal(_read_matrix(ts.batch("u"), outs), got)
    chunks = list(g.iter_batches(keys, 5, transform=st.ref))
    np.testing.assert_array_equal(np.concatenate([_read_matrix(c, outs) for c in chunks]), got)


def test_output_types_follow_the_inputs(store: mmfs.Store) -> None:
    g = store["u"]
    store.transforms.fit("s", "u", ["a", "b", "emb", "i"], T.StandardScaler())
    store.transforms.fit("o", "u", ["color"], T.OneHotEncoder())
    store.transforms.fit("p", "u", ["a", "b"], [T.SimpleImputer(), T.PolynomialFeatures()])
    batch = g.get(np.arange(5), transform=["s@1", "o@1", "p@1"])
    assert batch["a:s"].dtype == np.float32
    assert batch["a:s"].shape == (5,)
    assert batch["b:s"].dtype == np.float64
    assert batch["i:s"].dtype == np.float64
    assert batch["emb:s"].shape == (5, 4)
    assert batch["emb:s"].dtype == np.float32
    assert batch["color:o"].shape == (5, 3)
    assert batch["color:o"].dtype == np.float32
    assert batch["p"].shape == (5, 6)
    assert batch["p"].dtype == np.float64
    assert batch.to_numpy().shape == (5, 1 + 1 + 4 + 1 + 3 + 6)
    assert batch.to_pandas().columns.tolist() == list(batch.names)
    assert batch.to_arrow().num_columns == len(batch.names)


def test_fused_read_matches_sklearn(store: mmfs.Store) -> None:
    g = store["u"]
    st = store.transforms.fit("s", "u", ["b", "emb"], T.StandardScaler())
    raw = g.get(np.arange(N), ["b", "emb"])
    X = np.concatenate([raw["b"][:, None], raw["emb"].astype(np.float64)], axis=1)
    want = np.asarray(skp.StandardScaler().fit(X).transform(X))
    got = g.get(np.arange(N), transform=st.ref)
    np.testing.assert_allclose(got["b:s"], want[:, 0], rtol=1e-12)
    # float32: 1e-6 relative, with an absolute floor at the column's scale for values
    # near zero (rounding the input and output to float32 costs ~6e-8 of the magnitude)
    scale = float(np.nanmax(np.abs(want[:, 1:])))
    np.testing.assert_allclose(got["emb:s"], want[:, 1:], rtol=1e-6, atol=1e-6 * scale)


def test_a_refit_at_a_version_is_reproducible(store: mmfs.Store) -> None:
    g = store["u"]
    v1 = store.generation
    g.write(np.arange(N, 2 * N), _values(np.random.default_rng(1), N, shift=10), event_time=T0)
    store.commit("more")
    s1 = store.transforms.fit("s", "u", ["a", "emb"], T.StandardScaler(), version=v1)
    s2 = store.transforms.fit("s", "u", ["a", "emb"], T.StandardScaler(), version=v1)
    s3 = store.transforms.fit("s", "u", ["a", "emb"], T.StandardScaler())
    assert (s1.version, s2.version, s3.version) == (1, 2, 3)
    assert s1.fitted_at == v1
    assert s3.fitted_at == store.generation
    for key in ("mean", "scale"):
        p1, p2, p3 = (
            next(v for k, v in (s.transform.params or {}).items() if k.startswith(key))
            for s in (s1, s2, s3)
        )
        np.testing.assert_array_equal(p1, p2)
        assert not np.array_equal(p1, p3)
    assert store.transforms.list() == {"s": [1, 2, 3]}
    info = store.transforms.describe("s@1")
    assert info["features"] == ["a", "emb"]
    assert info["fitted_at"] == v1
    assert info["kind"] == "standard_scaler"
    assert info["ref"] == "s@1"


def test_pins_choose_the_version_a_read_sees(store: mmfs.Store) -> None:
    g = store["u"]
    with pytest.raises(NotFoundError, match="not pinned"):
        g.get([1], transform="s")
    store.transforms.fit("s", "u", ["a"], T.StandardScaler())
    with pytest.raises(NotFoundError, match="not pinned"):  # the pin is not committed yet
        g.get([1], transform="s")
    v1 = store.commit("pin s@1")
    assert store.describe("u.a")["transforms"] == {"s": 1}
    definition = store.describe("u.a")["definition"]
    store.transforms.fit("s", "u", ["a"], T.MinMaxScaler())
    v2 = store.commit("pin s@2")
    assert store.describe("u.a")["definition"] == definition + 1
    assert g.get([1], transform="s").names == ("a:s",)
    now = g.get(np.arange(20), transform="s")["a:s"]
    np.testing.assert_array_equal(now, g.get(np.arange(20), transform="s@2")["a:s"])
    old = g.get(np.arange(20), version=v1, transform="s")["a:s"]
    np.testing.assert_array_equal(old, g.get(np.arange(20), transform="s@1")["a:s"])
    assert np.nanmin(now) >= 0
    assert np.nanmin(old) < 0
    store.transforms.pin("s@1")
    store.commit("back to s@1")
    np.testing.assert_array_equal(g.get(np.arange(20), transform="s")["a:s"], old)
    assert store.transforms.pinned("u", "a", version=v2) == {"s": 2}
    store.transforms.fit("t", "u", ["b"], T.MaxAbsScaler(), pin=False)
    store.commit()
    assert "t" not in store.describe("u.b")["transforms"]


def test_a_reader_process_serves_the_same_values(store: mmfs.Store) -> None:
    g = store["u"]
    store.transforms.fit("q", "u", ["a", "emb"], T.QuantileTransformer(n_quantiles=20))
    store.transforms.fit("s", "u", ["emb"], T.StandardScaler())
    store.commit()
    want = g.get(np.arange(50), transform=["q", "s"]).to_numpy()
    code = (
        "import sys, numpy as np, mmfs\n"
        "s = mmfs.open(sys.argv[1], mode='r')\n"
        "b = s['u'].get(np.arange(50), transform=['q', 's'])\n"
        "sys.stdout.buffer.write(b.to_numpy().tobytes())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, store.path], capture_output=True, check=True
    ).stdout
    np.testing.assert_array_equal(np.frombuffer(out, dtype=np.float32).reshape(want.shape), want)
    with mmfs.open(store.path, mode="r") as reader:
        with pytest.raises(ReadOnlyError):
            reader.transforms.fit("x", "u", ["a"], T.StandardScaler())
        assert reader.transforms.list() == {"q": [1], "s": [1]}


def test_serving_refuses_what_it_cannot_apply(store: mmfs.Store) -> None:
    g = store["u"]
    st = store.transforms.fit("o", "u", ["color"], T.OneHotEncoder(handle_unknown="error"))
    store.commit()
    keys = np.arange(10)
    np.testing.assert_array_equal(  # a missing key never reaches the encoder
        g.get(np.r_[keys, 10**9], transform="o").mask, np.r_[np.zeros(10, bool), True]
    )
    new = _values(np.random.default_rng(9), 1)
    new["color"] = np.array(["purple"])
    g.write([1], new, event_time=T0 + DAY)
    store.commit()
    with pytest.raises(TransformError, match="purple"):
        g.get(keys, transform="o")
    with pytest.raises(ParameterError, match="already in the read"):
        g.get(keys, ["a"], transform=[st.ref, st.ref])
    other = store.create_group("v", key="id", schema={"a": mmfs.scalar()})
    other.write([1], {"a": [1.0]})
    store.commit()
    with pytest.raises(ParameterError, match="over group 'u'"):
        other.get([1], transform=st.ref)
    with pytest.raises(ParameterError, match="sparse"):
        store.transforms.fit("x", "u", ["tags"], T.StandardScaler())
    with pytest.raises(TransformError, match="category features go to encoders"):
        store.transforms.fit("x", "u", ["color"], T.StandardScaler())
    with pytest.raises(NotFoundError, match="no feature"):
        store.transforms.fit("x", "u", ["nope"], T.StandardScaler())
    with pytest.raises(ParameterError, match="distinct"):
        store.transforms.fit("x", "u", ["a", "a"], T.StandardScaler())
    with pytest.raises(ParameterError, match="transform name"):
        store.transforms.fit("bad name", "u", ["a"], T.StandardScaler())
    with pytest.raises(NotFoundError, match="no transform"):
        g.get(keys, transform="nothing@1")
    with pytest.raises(NotFoundError, match="has versions"):
        store.transforms.get("o@7")
    with pytest.raises(ParameterError, match="name@<n>"):
        store.transforms.get("o@x")
    with pytest.raises(ParameterError, match="name@version"):
        store.transforms.get(3)
    empty = store.create_group("w", key="id", schema={"a": mmfs.scalar()})
    store.commit()
    with pytest.raises(ParameterError, match="no rows"):
        store.transforms.fit("x", empty, ["a"], T.StandardScaler())


def test_a_retyped_feature_refuses_its_old_transform(store: mmfs.Store) -> None:
    st = store.transforms.fit("s", "u", ["a"], T.StandardScaler())
    store.commit()
    store.alter_group("u", retype={"a": mmfs.scalar("float64")})
    store.commit()
    with pytest.raises(TransformError, match="refit"):
        store["u"].get([1], transform=st.ref)


def test_zero_keys_and_all_missing(store: mmfs.Store) -> None:
    g = store["u"]
    st = store.transforms.fit("o", "u", ["color"], T.OneHotEncoder())
    assert g.get(np.zeros(0, np.int64), transform=st.ref).to_numpy().shape == (0, 3)
    missing = g.get([10**9, 10**10], transform=st.ref)
    assert np.isnan(missing.to_numpy()).all()


def test_add_fitted_sklearn_estimators(store: mmfs.Store) -> None:
    g = store["u"]
    raw = g.get(np.arange(N), ["a", "b"])
    X = np.stack([raw["a"].astype(np.float64), raw["b"]], axis=1)
    pipe = make_pipeline(skp.StandardScaler(), skp.MinMaxScaler()).fit(np.nan_to_num(X))
    st = store.transforms.add("pipe", "u", ["a", "b"], pipe)
    assert isinstance(st.transform, T.Pipeline)
    assert st.fitted_at is None
    got = g.get(np.arange(N), transform=st.ref)
    ok = ~np.isnan(X).any(axis=1)
    want = np.asarray(pipe.transform(X[ok]))
    np.testing.assert_allclose(got["b:pipe"][ok], want[:, 1], rtol=1e-12, atol=1e-15)
    ct = ColumnTransformer(
        [("s", skp.StandardScaler(), [1]), ("m", skp.MaxAbsScaler(), [0])], remainder="drop"
    ).fit(np.nan_to_num(X))
    cst = store.transforms.add("ct", "u", ["a", "b"], ct)
    got = g.get(np.arange(N), transform=cst.ref)["ct"]
    np.testing.assert_allclose(got[ok], np.asarray(ct.transform(X[ok])), rtol=1e-12)
    back = cst.transform.to_sklearn()
    np.testing.assert_allclose(
        np.asarray(back.transform(X[ok])), np.asarray(ct.transform(X[ok])), rtol=1e-12
    )
    with pytest.raises(ParameterError, match="takes 2 columns"):
        store.transforms.add("x", "u", ["a"], pipe)
    with pytest.raises(ParameterError, match="not fitted"):
        store.transforms.add("x", "u", ["a"], T.StandardScaler())
    with pytest.raises(ParameterError, match="cannot import"):
        store.transforms.add("x", "u", ["a"], skp.PowerTransformer().fit(np.ones((3, 1))))


def test_pipeline_fuses_only_fill_then_arithmetic_then_clip() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(2, 3, (200, 3))
    X[rng.random(X.shape) < 0.1] = np.nan
    good = T.Pipeline([T.SimpleImputer(), T.StandardScaler(), T.Clip(min=-1.0, max=1.0)]).fit(X)
    assert good.affine() is not None
    step = good.affine()
    assert step is not None
    np.testing.assert_array_equal(good.transform(X), T.apply_affine(X, step))
    sequential = X
    for step in good.steps:
        sequential = step.transform(sequential)
    np.testing.assert_allclose(good.transform(X), sequential, rtol=1e-12, atol=1e-15)
    for steps in (
        [T.StandardScaler(), T.SimpleImputer()],  # fill after arithmetic
        [T.StandardScaler(), T.MinMaxScaler()],  # two arithmetic steps
        [T.SimpleImputer(), T.Log1p()],  # a step that is not affine
    ):
        p = T.Pipeline(steps).fit(np.abs(X))
        assert p.affine() is None
        ref = np.abs(X)
        for step in p.steps:
            ref = step.transform(ref)
        np.testing.assert_array_equal(p.transform(np.abs(X)), ref)
    assert good.out_widths() == [1, 1, 1]
    state, arrays = good.to_state()
    back = T.from_state(state, arrays)
    np.testing.assert_array_equal(back.transform(X), good.transform(X))
    np.testing.assert_allclose(
        good.to_sklearn().transform(np.nan_to_num(X)), good.transform(np.nan_to_num(X)),
        rtol=1e-12, atol=1e-15,
    )  # fmt: skip
    with pytest.raises(ParameterError, match="list of steps"):
        T.Pipeline(T.StandardScaler())
    with pytest.raises(ParameterError, match="at least one"):
        T.Pipeline([])
    with pytest.raises(ParameterError, match="unknown transform step"):
        T.Pipeline([{"kind": "nope"}])
    with pytest.raises(ParameterError, match="0 rows"):
        T.Pipeline([T.StandardScaler()]).fit(np.zeros((0, 2)))


def test_columns_composite() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 4))
    cols = T.Columns([(T.StandardScaler(), [2, 0]), (T.MaxAbsScaler(), [1])], "passthrough")
    fitted = cols.fit(X)
    want = ColumnTransformer(
        [("a", skp.StandardScaler(), [2, 0]), ("b", skp.MaxAbsScaler(), [1])],
        remainder="passthrough",
    ).fit_transform(X)
    np.testing.assert_allclose(fitted.transform(X), np.asarray(want), rtol=1e-12)
    assert fitted.n_outputs() == 4
    state, arrays = fitted.to_state()
    np.testing.assert_array_equal(T.from_state(state, arrays).transform(X), fitted.transform(X))
    with pytest.raises(ParameterError, match="remainder"):
        T.Columns([(T.StandardScaler(), [0])], "keep")
    with pytest.raises(ParameterError, match="non-empty"):
        T.Columns([])
    with pytest.raises(ParameterError, match="indices"):
        T.Columns([(T.StandardScaler(), [])])
    with pytest.raises(ParameterError, match="beyond"):
        T.Columns([(T.StandardScaler(), [7])]).fit(X)
    with pytest.raises(ParameterError, match="per-column"):
        fitted.out_widths()
    with pytest.raises(DimensionError):
        fitted.transform(X[:, :2])


# -- custom transforms ----------------------------------------------------------------------


@pytest.fixture
def ratio() -> Iterator[Any]:
    @mmfs.transform("ratio", version="1")
    def fn(a: np.ndarray, emb: np.ndarray) -> np.ndarray:
        return np.nan_to_num(a)[:, None] * emb

    yield fn
    T.unregister_transform("ratio", "1")


def test_custom_transform(store: mmfs.Store, ratio: Any) -> None:
    g = store["u"]
    st = store.transforms.fit("ratio", "u", ["a", "emb"], ratio)
    assert st.transform.options["n_outputs"] == 4
    assert st.transform.options["vector"]
    assert T.registered_transforms()["ratio"] == ["1"]
    keys = np.arange(30)
    got = g.get(keys, transform=st.ref)
    raw = g.get(keys, ["a", "emb"])
    np.testing.assert_array_equal(got["ratio"], np.nan_to_num(raw["a"])[:, None] * raw["emb"])
    frame = pd.DataFrame({"id": keys, "event_time": np.full(30, T0 + DAY)})
    ts = store.training_set(frame, ["u.a"], transform=st.ref)
    np.testing.assert_array_equal(ts["u.ratio"], got["ratio"])

    @mmfs.transform("ratio", version="1")
    def edited(a: np.ndarray, emb: np.ndarray) -> np.ndarray:
        return np.nan_to_num(a)[:, None] * emb * 2

    with pytest.raises(TransformSkewError, match="not the code it was added with"):
        g.get(keys, transform=st.ref)
    T.unregister_transform("ratio", "1")
    with pytest.raises(TransformError, match="not registered in this process"):
        g.get(keys, transform=st.ref)


def test_custom_transform_checks(store: mmfs.Store) -> None:
    @mmfs.transform("bad", 2)
    def bad(a: np.ndarray) -> np.ndarray:
        return np.zeros(3)

    try:
        with pytest.raises(TransformError, match="must return"):
            store.transforms.fit("bad", "u", ["a"], bad)
        with pytest.raises(ParameterError, match="not a registered transform"):
            store.transforms.fit("x", "u", ["a"], lambda a: a)
        with pytest.raises(TransformError, match="not registered"):
            store.transforms.fit("x", "u", ["a"], "missing@1")
        with pytest.raises(ParameterError, match="non-empty str name"):
            mmfs.transform("")
        with pytest.raises(ParameterError, match="version"):
            mmfs.transform("x", version=1.5)  # type: ignore[arg-type]
        with pytest.raises(ParameterError, match="needs a function"):
            mmfs.transform("x")(cast(Any, 3))
        with pytest.raises(ParameterError, match="SHA-256"):
            T.CustomTransform("f", "1", "abc")
        with pytest.raises(ParameterError, match="non-empty str"):
            T.CustomTransform("", "1", "0" * 64)
        with pytest.raises(ParameterError, match="n_outputs"):
            T.CustomTransform("f", "1", "0" * 64, n_outputs=0)
        t = T.CustomTransform.of("bad@2", 2)
        with pytest.raises(DimensionError, match="takes 2 features"):
            t.call([np.zeros(3)], 3)
    finally:
        T.unregister_transform("bad", 2)


def test_scalar_custom_transform_in_a_string_keyed_group(tmp_path: Any) -> None:
    @mmfs.transform("neg")
    def neg(x: np.ndarray) -> np.ndarray:
        return -x

    try:
        with mmfs.open(tmp_path / "s") as s:
            g = s.create_group(
                "g", key="name", key_type="str", schema={"x": mmfs.scalar("float64")}
            )
            g.write(["p", "q"], {"x": [1.5, -2.0]})
            s.commit()
            st = s.transforms.fit("neg", "g", ["x"], neg)
            b = g.get(["q", "p", "zz"], transform=st.ref)
            assert b["neg"].shape == (3,)
            np.testing.assert_array_equal(b["neg"][:2], [2.0, -1.5])
            assert np.isnan(b["neg"][2])
    finally:
        T.unregister_transform("neg")


# -- caching ---------------------------------------------------------------------------------


def test_cache_gives_the_same_values_and_follows_commits(store: mmfs.Store) -> None:
    g = store["u"]
    st = store.transforms.fit("q", "u", ["a", "emb"], T.QuantileTransformer(n_quantiles=30))
    store.commit()
    keys = np.r_[np.arange(0, N, 3), 10**9]
    plain = g.get(keys, transform=st.ref).to_numpy()
    with pytest.raises(ParameterError, match="names a version"):
        store.transforms.cache("q")
    store.transforms.cache(st.ref)
    assert store.transforms.cached() == [st.ref]
    cached = g.get(keys, transform=st.ref).to_numpy()
    np.testing.assert_array_equal(cached, plain)
    snap = store._snaps["u"]
    assert st.ref in snap.transformed
    store.transforms.cache("q@1")  # computed once per snapshot
    rows_before = snap.transformed[st.ref][0]
    g.get(keys[:5], transform=st.ref)
    assert snap.transformed[st.ref][0] is rows_before
    # a commit: new rows for some keys; the new snapshot computes afresh
    new = _values(np.random.default_rng(9), 2)
    new["a"] = np.array([100.0, -100.0], dtype=np.float32)
    g.write([0, 3], new, event_time=T0 + DAY)
    store.commit()
    fresh = g.get(keys, transform=st.ref)
    store.transforms.uncache(st.ref)
    np.testing.assert_array_equal(fresh.to_numpy(), g.get(keys, transform=st.ref).to_numpy())
    assert fresh["a:q"][0] == 1.0
    assert fresh["a:q"][1] == 0.0
    # rows that are not the latest (as of an earlier time) are computed, not copied
    store.transforms.cache(st.ref)
    early = g.get(keys, as_of=T0, transform=st.ref).to_numpy()
    np.testing.assert_array_equal(early, plain)
    assert store.transforms.cached() == [st.ref]
    store.transforms.uncache(st.ref)
    assert store.transforms.cached() == []
    assert not store._snaps["u"].transformed


def test_cache_is_charged_to_the_budget(tmp_path: Any) -> None:
    with mmfs.open(tmp_path / "s") as s:
        g = s.create_group("g", key="id", schema={"x": mmfs.scalar("float64")})
        g.write(np.arange(20_000), {"x": np.arange(20_000.0)})
        s.commit()
        st = s.transforms.fit("q", "g", ["x"], T.QuantileTransformer(n_quantiles=10))
    with mmfs.open(tmp_path / "s", memory_budget=200_000) as s:
        s.transforms.cache(st.ref)
        with pytest.raises(MemoryBudgetError, match="cached outputs"):
            s["g"].get([1, 2], transform=st.ref)
        s.transforms.uncache(st.ref)
        np.testing.assert_allclose(s["g"].get([0, 19_999], transform=st.ref)["x:q"], [0, 1])
    with mmfs.open(tmp_path / "s", memory_budget=2_000_000) as s:
        s.transforms.cache(st.ref)
        s["g"].get([1, 2], transform=st.ref)
        assert s.budget is not None
        assert s.budget.in_use >= 8 * 20_000
        assert s._evict(1) >= 8 * 20_000  # the budget may evict it
        assert not s._snaps["g"].transformed


# -- scoring and the kernel ------------------------------------------------------------------


def test_score_applies_the_same_transform(store: mmfs.Store) -> None:
    from scoring_fns import fn_matrix

    st = store.transforms.fit("s", "u", ["emb"], T.StandardScaler())
    store.transforms.fit("o", "u", ["color"], T.OneHotEncoder())
    store.commit()
    keys = np.arange(N)
    want = store["u"].get(keys, transform=["s", "o"]).to_numpy()
    for workers in (0, 1):
        got = mmfs.score(store.path, "u", keys, fn_matrix, workers=workers, transform=["s", "o@1"])
        np.testing.assert_array_equal(got, want)
    with pytest.raises(NotFoundError, match="not pinned"):
        mmfs.score(store.path, "u", keys, fn_matrix, workers=0, transform="zzz")
    assert st.ref == "s@1"


def test_field_plan_checks_its_affine_segments() -> None:
    offsets = np.array([16], dtype=np.int64)
    sizes = np.array([16], dtype=np.int64)
    p64, p32 = np.ones((6, 4)), np.ones((7, 4), np.float32)
    zero, one = np.array([0]), np.array([1])
    ok = (zero, np.array([4]), zero, zero, p64, p32)
    assert _store.FieldPlan(offsets, sizes, True, ok).n_aff == 1
    bad = [
        (np.array([2]), np.array([4]), zero, zero, p64, p32),  # misaligned
        (zero, np.array([5]), zero, zero, p64, p32),  # past the row
        (np.array([8]), np.array([2]), one, zero, p64, p32),  # float64 past it
        (zero, np.array([2]), one | 64, zero, p64, p32),  # float32 math on float64
        (zero, np.array([4]), zero, one, p64, p32),  # past the parameters
        (zero, np.array([4]), np.array([0, 0]), zero, p64, p32),  # lengths differ
        (zero, np.array([4]), zero, zero, p64[:5], p32),  # 5 rows of parameters
        (zero, np.array([4]), zero, zero, p64, p32[:6]),  # 6 rows of float32 ones
        (zero, np.array([4]), zero, zero, p64, p32[:, :3]),  # fewer float32 columns
    ]
    for affine in bad:
        with pytest.raises(ValueError, match="FieldPlan"):
            _store.FieldPlan(offsets, sizes, True, affine)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_affine_equals_apply_affine(tmp_path: Any, dtype: Any) -> None:
    """The fused kernel step against its numpy mirror, bit for bit, over NaNs, clips,
    infinities and extreme values."""
    rng = np.random.default_rng(5)
    d = 37
    X = rng.normal(0, 1e3, (300, d)).astype(dtype)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[0, :5] = [np.inf, -np.inf, 1e38, -1e38, 0.0]
    name = "float32" if dtype == np.float32 else "float64"
    schema = {"v": mmfs.dense(d)} if dtype == np.float32 else {
        f"c{j}": mmfs.scalar(name) for j in range(d)
    }  # fmt: skip
    with mmfs.open(tmp_path / "s") as s:
        g = s.create_group("g", key="id", schema=schema)
        values = {"v": X} if dtype == np.float32 else {f"c{j}": X[:, j] for j in range(d)}
        g.write(np.arange(300), values)
        s.commit()
        mul = rng.normal(size=d)
        mul[0] = 0.0  # a constant column: in float32 arithmetic, its add is kept apart
        a = T.Affine(
            rng.normal(size=d), mul, rng.normal(size=d),
            np.where(rng.random(d) < 0.5, -np.inf, -50.0),
            np.where(rng.random(d) < 0.5, np.inf, 50.0),
            np.where(rng.random(d) < 0.5, np.nan, 7.0),
        )  # fmt: skip

        class Fixed(T.Transform):
            kind = f"test_fixed_{name}"

            def _fit(self, X: np.ndarray) -> dict[str, np.ndarray]:
                return {}

            def affine(self) -> T.Affine:
                return a

            def _apply(self, X: np.ndarray) -> np.ndarray:
                return T.apply_affine(X, a)

        st = s.transforms.add("f", "g", list(schema), Fixed().fit(X))
        batch = g.get(np.arange(300), transform=st.ref)
        assert batch._plan.fields.n_aff == 1  # 37 adjacent scalars: one segment per row
        outs = [o for o, _ in catalog.outputs(st)]
        got = np.concatenate([batch[o].reshape(300, -1) for o in outs], axis=1)
        np.testing.assert_array_equal(got, T.apply_affine(X, a))
        del _base.KINDS[Fixed.kind]


def test_damaged_transform_files(store: mmfs.Store) -> None:
    st = store.transforms.fit("s", "u", ["a", "emb"], T.StandardScaler())
    where = os.path.join(store.path, "transforms", "s", "v1")
    with mmfs.open(store.path, mode="r") as reader:
        assert reader.transforms.get("s@1").transform.params is not None
    doc = os.path.join(where, "transform.mmfs")
    data = bytearray(Path(doc).read_bytes())
    data[-3] ^= 0x55
    Path(doc).write_bytes(bytes(data))
    with mmfs.open(store.path, mode="r") as reader, pytest.raises(FormatError):
        reader.transforms.get(st.ref)
    params = [f for f in os.listdir(where) if f.startswith("p-")]
    assert params
    from mmfs.storage.fileformat import write_json_file

    def rewrite(**changes: Any) -> None:
        meta = {
            "format": "mmfs-transform", "name": "s", "version": 1, "group": "u",
            "features": [["a", {"type": "scalar", "dtype": "float32"}]], "fitted_at": 0,
            "created_ns": 1, "description": "", "arrays": {},
            "state": {"kind": "standard_scaler", "options": {}, "n_features_in": 1},
        }  # fmt: skip
        meta.update(changes)
        write_json_file(doc, meta, "META")

    for changes, error in (
        ({"name": "t"}, CorruptStoreError),
        ({"version": 2}, CorruptStoreError),
        ({"arrays": {"mean": {"file": "../../x.mmfs"}}}, CorruptStoreError),
        ({"fitted_at": "x"}, CorruptStoreError),
        ({"state": {"kind": "nope", "options": {}, "n_features_in": 1}}, CorruptStoreError),
        ({"state": {"kind": "standard_scaler", "options": {"x": 1}, "n_features_in": 1}},
         FormatError),
        ({"state": {"kind": "standard_scaler", "options": {}, "n_features_in": 0}}, FormatError),
        ({"state": "x"}, FormatError),
    ):  # fmt: skip
        rewrite(**changes)
        with mmfs.open(store.path, mode="r") as reader, pytest.raises(error):
            reader.transforms.get(st.ref)
    # string parameters (categories) travel inline in the document
    oh = store.transforms.fit("o", "u", ["color"], T.OneHotEncoder())
    with mmfs.open(store.path, mode="r") as reader:
        back = reader.transforms.get(oh.ref).transform
        assert back.params is not None
        assert oh.transform.params is not None
        for k, v in (oh.transform.params or {}).items():
            np.testing.assert_array_equal(back.params[k], v)


# -- edges of the contract and the catalog ---------------------------------------------------


def test_transform_base_contract() -> None:
    class Bare(T.Transform):
        kind = "test_bare"

    class BadParams(T.Transform):
        kind = "test_bad_params"

        def _fit(self, X: np.ndarray) -> dict[str, Any]:
            return {"Mean": X.mean(axis=0)}

    class ObjectParams(T.Transform):
        kind = "test_object_params"

        def _fit(self, X: np.ndarray) -> dict[str, Any]:
            return {"names": np.array(["a", None], dtype=object)}

    try:
        X = np.ones((3, 2))
        with pytest.raises(NotImplementedError):
            Bare().fit(X)
        with pytest.raises(NotImplementedError):
            Bare().to_sklearn()
        with pytest.raises(NotImplementedError):
            Bare._from_sklearn(None)
        fitted = Bare()
        fitted.params, fitted.n_features_in = {}, 2
        with pytest.raises(NotImplementedError):
            fitted.transform(X)
        with pytest.raises(RuntimeError, match="not a named array"):
            BadParams().fit(X)
        with pytest.raises(RuntimeError, match="object dtype"):
            ObjectParams().fit(X)
        with pytest.raises(RuntimeError, match="two transforms of kind"):
            type("Again", (T.Transform,), {"kind": "test_bare"})
        with pytest.raises(ParameterError, match="nothing to fit"):
            T.CustomTransform("f", "1", "0" * 64).fit(X)
    finally:
        for kind in ("test_bare", "test_bad_params", "test_object_params"):
            _base.KINDS.pop(kind, None)


def test_composite_edges() -> None:
    X = np.random.default_rng(6).normal(size=(20, 3))
    p = T.Pipeline([{"kind": "standard_scaler", "options": {"with_mean": False}}])
    np.testing.assert_array_equal(
        p.fit(X).transform(X), T.StandardScaler(with_mean=False).fit(X).transform(X)
    )
    with pytest.raises(ParameterError, match="must be a transform"):
        T.Pipeline([3])
    with pytest.raises(FormatError, match="non-empty list of steps"):
        T.from_state({"kind": "pipeline", "options": {"steps": []}, "n_features_in": 1}, {})
    # a step with no role at all, then a fill: still one affine step
    Xn = X.copy()
    Xn[::4, 1] = np.nan
    idle = T.Pipeline([T.StandardScaler(with_mean=False, with_std=False), T.SimpleImputer()])
    fitted = idle.fit(Xn)
    a = fitted.affine()
    assert a is not None
    assert not np.isnan(a.fill).any()
    np.testing.assert_array_equal(fitted.transform(Xn), T.SimpleImputer().fit(Xn).transform(Xn))
    cols = T.Columns([{"step": {"kind": "max_abs_scaler"}, "columns": [0]}])
    np.testing.assert_array_equal(
        cols.fit(X[:, 0]).transform(X[:, 0]), T.MaxAbsScaler().fit(X[:, :1]).transform(X[:, :1])
    )
    with pytest.raises(ParameterError, match="2-D"):
        cols.fit(np.zeros((2, 2, 2)))
    with pytest.raises(ParameterError, match="0 rows"):
        cols.fit(np.zeros((0, 1)))
    ct = ColumnTransformer([("s", skp.StandardScaler(), [0])], remainder="passthrough").fit(X)
    back = T.from_sklearn(ct)
    assert isinstance(back, T.Columns)
    assert back.options["remainder"] == "passthrough"
    np.testing.assert_allclose(back.transform(X), np.asarray(ct.transform(X)), rtol=1e-12)
    ft = skp.FunctionTransformer(np.exp).fit(X)
    with pytest.raises(ParameterError, match="cannot import a scikit-learn FunctionTransformer: "):
        T.from_sklearn(ft)


def test_catalog_edges(store: mmfs.Store, tmp_path: Any, monkeypatch: Any) -> None:
    store["u"]
    st = store.transforms.fit("s", "u", ["a"], T.StandardScaler(), description="z-score")
    assert repr(st) == "<StoredTransform s@1 standard_scaler on u['a']>"
    assert store.transforms.get(st) is st
    assert store.transforms.describe("s")["description"] == "z-score"
    with pytest.raises(NotFoundError, match="no transform 'zz'"):
        store.transforms.get("zz")
    with pytest.raises(ParameterError, match="description"):
        store.transforms.fit("s", "u", ["a"], T.StandardScaler(), description=3)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="no feature 'zz'"):
        store.transforms.pinned("u", "zz")

    # a failed publication leaves no version behind
    import mmfs.transforms.catalog as catalog

    def fail(*args: Any, **kw: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(catalog, "write_json_file", fail)
    with pytest.raises(OSError, match="disk full"):
        store.transforms.fit("s", "u", ["a"], T.StandardScaler())
    monkeypatch.undo()
    assert store.transforms.versions("s") == [1]
    assert sorted(os.listdir(os.path.join(store.path, "transforms", "s"))) == ["v1"]

    # pinning a transform whose input a later definition dropped
    store.commit()
    store.alter_group("u", drop=["a"])
    with pytest.raises(NotFoundError, match="no longer has the features"):
        store.transforms.pin("s@1")

    # a damaged parameter file
    with mmfs.open(tmp_path / "t") as other:
        h = other.create_group("h", key="id", schema={"x": mmfs.scalar("float64")})
        h.write(np.arange(10), {"x": np.arange(10.0)})
        other.commit()
        q = other.transforms.fit("q", "h", ["x"], T.StandardScaler())
        where = os.path.join(other.path, "transforms", "q", "v1")
        name = sorted(f for f in os.listdir(where) if f.startswith("p-"))[0]
        data = bytearray(Path(where, name).read_bytes())
        data[-1] ^= 0xFF
        Path(where, name).write_bytes(bytes(data))
    with mmfs.open(tmp_path / "t", mode="r") as reader, pytest.raises(CorruptStoreError):
        reader.transforms.get(q.ref)


def test_a_dropped_column_gives_no_output(tmp_path: Any) -> None:
    with mmfs.open(tmp_path / "s") as s:
        g = s.create_group(
            "g", key="id", schema={"x": mmfs.scalar("float64"), "y": mmfs.scalar("float64")}
        )
        g.write(np.arange(5), {"x": np.full(5, np.nan), "y": np.arange(5.0)})
        s.commit()
        st = s.transforms.fit("imp", "g", ["x", "y"], T.SimpleImputer())
        assert [o for o, _ in catalog.outputs(st)] == ["y:imp"]
        b = g.get(np.arange(5), transform=st.ref)
        assert b.names == ("y:imp",)
        assert b._plan.fields.n_aff == 0
        np.testing.assert_array_equal(b["y:imp"], np.arange(5.0))


def test_a_reader_loads_a_custom_transform(store: mmfs.Store, ratio: Any) -> None:
    st = store.transforms.fit("ratio", "u", ["a", "emb"], ratio)
    store.commit()
    want = store["u"].get(np.arange(10), transform="ratio")["ratio"]
    with mmfs.open(store.path, mode="r") as reader:
        loaded = reader.transforms.get(st.ref).transform
        assert loaded.options == st.transform.options
        np.testing.assert_array_equal(
            reader["u"].get(np.arange(10), transform="ratio")["ratio"], want
        )


def test_uncache_releases_the_budget(tmp_path: Any) -> None:
    with mmfs.open(tmp_path / "s", memory_budget=10_000_000) as s:
        g = s.create_group("g", key="id", schema={"x": mmfs.scalar("float64")})
        g.write(np.arange(1000), {"x": np.arange(1000.0)})
        s.commit()
        st = s.transforms.fit("q", "g", ["x"], T.QuantileTransformer(n_quantiles=10))
        s.transforms.cache(st.ref)
        g.get([1], transform=st.ref)
        assert s.budget is not None
        held = s.budget.in_use
        s.transforms.uncache(st.ref)
        assert s.budget.in_use <= held - 8 * 1000


def test_training_set_transform_resolution(store: mmfs.Store) -> None:
    frame = pd.DataFrame({"id": [1, 2], "event_time": [T0 + DAY, T0 + DAY]})
    with pytest.raises(ParameterError, match="features and transform are empty"):
        store.training_set(frame, [], transform=[])
    with pytest.raises(NotFoundError, match="not pinned to a feature of any group"):
        store.training_set(frame, [], transform="nothing")
    v1 = store.generation
    other = store.create_group("later", key="id", schema={"x": mmfs.scalar()})
    other.write([1, 2], {"x": [1.0, 2.0]}, event_time=T0)
    store.commit()
    st = store.transforms.fit("s", "later", ["x"], T.MaxAbsScaler())
    store.commit()
    # at v1 the group "later" does not exist: searching every group skips it
    with pytest.raises(NotFoundError, match="not pinned"):
        store.training_set(frame, [], version=v1, transform="s")
    ts = store.training_set(frame, ["u.a"], transform="s")
    np.testing.assert_array_equal(ts["later.x:s"], [0.5, 1.0])
    assert st.group == "later"


def test_a_damaged_page_table_fails_the_cache(store: mmfs.Store, monkeypatch: Any) -> None:
    st = store.transforms.fit("q", "u", ["b"], T.QuantileTransformer(n_quantiles=10))
    store.commit()
    store.transforms.cache(st.ref)
    snap = store._snapshot("u")

    class Damaged:  # the kernel's table, except that resolving slots reports damage
        def __init__(self, table: Any) -> None:
            self.table = table

        def __getattr__(self, name: str) -> Any:
            return getattr(self.table, name)

        def rows_of_slots(self, rows: np.ndarray) -> int:
            return 1

    monkeypatch.setattr(snap, "table", Damaged(snap.table))
    with pytest.raises(CorruptStoreError, match="damaged page table"):
        store["u"].get([1], transform=st.ref)
