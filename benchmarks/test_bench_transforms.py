"""Query-time transforms: ``g.get(keys, transform=ref)`` against the raw get of the same
keys, and against the raw get followed by the scikit-learn estimator (docs/transforms.md).

One group ``g`` of ``tf_n`` keys (full size 1,000,000; small 20,000), random distinct
int64 keys, built once per session in a temporary directory (``durability="none"``, one
commit) with seeded values:

* ``emb``: dense(128) float32, standard normal, no NaN;
* ``emb_nan``: dense(128) float32, the same values with about 1% of them (each value on
  its own, seeded) set to NaN: the input of the imputers.  NaN lives in this second feature
  only because the Normalizer refuses NaN (as scikit-learn's does): ``emb`` stays whole so
  that the headline scalers and the Normalizer read one feature;
* ``color``: a category, 20 values ``c00..c19`` drawn uniformly;
* ``s0..s3``: float32 scalars, standard normal.

Then ``store.transforms.fit`` (on every key, the newest version) and ``store.commit()``:

===========  ================================================  ========  ===================
ref          mmfs transform                                    input     fused into kernel
===========  ================================================  ========  ===================
std@1        StandardScaler()  (the headline)                  emb       yes
minmax@1     MinMaxScaler(clip=True)                           emb       yes
impute@1     SimpleImputer(strategy="mean")                    emb_nan   yes
impstd@1     Pipeline [SimpleImputer(mean), StandardScaler()]  emb_nan   yes (one step)
onehot@1     OneHotEncoder()                                   color     no (20 columns)
ordinal@1    OrdinalEncoder()                                  color     no
kbins@1      KBinsDiscretizer(8, onehot-dense, quantile,       s0..s3    no (32 columns)
             subsample=None)
quantile@1   QuantileTransformer(100 quantiles, normal,        s0..s3    no
             subsample=None)
log1p@1      Pipeline [Clip(min=0.0), Log1p()]                 s0..s3    no
poly@1       PolynomialFeatures() (degree 2, bias)             s0..s3    no (15 columns)
norm@1       Normalizer("l2")                                  emb       no
===========  ================================================  ========  ===================

(``subsample=None``: fitted on every row, so the scikit-learn peer, fitted on the same
rows, has the same quantiles without reproducing a random draw.)  The peers are
scikit-learn estimators of the same class and options fitted on the same in-memory data:
float64 copies for the scalers and imputers (mmfs computes their statistics in float64),
the float32 values themselves for the discretizer and the quantile transform (mmfs repeats
scikit-learn's float32 arithmetic), the strings for the encoders (``sparse_output=False``
and ``dtype=float32`` for the one-hot, ``dtype=float32`` for the ordinal); the log1p
pipeline is ``FunctionTransformer(np.clip, a_min=0.0)`` then ``FunctionTransformer(
np.log1p)``.

Fresh keys every round: a pool of ``tf_rounds`` + 2 position sets of ``tf_count`` keys
(10,000 at both sizes) is drawn beforehand (seeded, without replacement within a set);
each call takes the next set, and every implementation of a group reads the same sets in
the same order.  Rounds are explicit (pytest-benchmark pedantic mode: one warm-up round,
then ``tf_rounds`` rounds of one call); the figure is the median round (the min is in the
note).  With --benchmark-disable each is one un-warmed call.

Each transform is one pytest-benchmark group, "<transform> <ref> on <input>: get 10,000
keys of <tf_n>", with

* ``raw get``: ``g.get(keys, inputs).to_numpy()`` (the input features, untransformed;
  for ``color`` that is its codes as float32);
* ``get+sklearn``: the raw get followed by the fitted peer's ``transform``:
  ``peer.transform(g.get(keys, inputs).to_numpy())``, or for ``color``
  ``peer.transform(g.get(keys, ["color"])["color"].reshape(-1, 1))`` (the strings,
  which is what the encoder takes);
* ``mmfs``: ``g.get(keys, transform=ref).to_numpy()`` (only the transform's outputs).
  Before every round (and the warm-up), outside the timed call, the raw get of the same
  input features is timed on a set of a second pool (drawn with another seed), so raw and
  transformed alternate on the same machine at the same moment: the *paired* ratio is the
  median over rounds of (transformed round / the raw get just before it).
* for the fused transforms also ``mmfs n_threads=1``: ``g.get(keys, transform=ref,
  n_threads=1).to_numpy()``, paired the same way with ``g.get(keys, inputs,
  n_threads=1).to_numpy()``.  A get of 10,000 keys runs on every usable core by default
  (docs/batch.md); on a shared, saturated machine it then waits for whichever of its
  threads the scheduler runs last, which adds milliseconds to a millisecond read, to the
  raw get and the transformed one alike.  The calling thread alone shows the fused
  step's own cost;
* for ``onehot@1`` also ``mmfs cached``: the same read after
  ``reader.transforms.cache("onehot@1")`` (the outputs of every key computed once, at the
  first read, whose time is reported apart: it builds the cache; dropped with ``uncache``
  after the test).

Before timing, each implementation's output on the pool's first set is checked against a
reference computed from the in-memory data (not from the store): the raw gets against the
values written; the transforms against the peer applied to float64 inputs and cast to
float32 (``assert_allclose(rtol=1e-5, atol=1e-6)``: the atol for outputs near zero; mmfs
multiplies by 1/scale where scikit-learn divides) for the scalers, imputers, the log1p
pipeline, the polynomial features and the Normalizer; bit for bit against the peer on the
float32 values for the encoders, the discretizer and the quantile transform (mmfs
reproduces those exactly).  The peer's own float32 output is held to the same reference
(the same tolerance, or exactly).

1. Fused (affine) transforms, ``std@1`` (the headline), ``minmax@1``, ``impute@1``,
   ``impstd@1``, each "raw get time / transformed time" (the paired ratio, inverted so that
   the targets read as speed-ups).  Targets (the issue's, for the fused transforms): the
   transformed get at most 1.05x the raw get (goal), at most 1.2x (requirement).  Beside
   them, with no target: the same ratio with ``n_threads=1`` and "get+sklearn time /
   transformed time".
2. Every other transform: "transformed time / raw get time" (paired) and "get+sklearn time
   / transformed time", no targets; for the one-hot, "uncached / cached" and the time of
   the first read after ``cache()``.
3. One key: ``g.get(k, transform="std@1")`` against ``g.get(k, ["emb"])`` (``k`` a Python
   int), ``tf_one_rounds`` rounds of ``tf_one_calls`` calls, each call a fresh key (a seeded
   permutation of the keys; the paired raw calls take the keys from the other end of it);
   per call: round time / calls, median over rounds.  Figures: the overhead in
   microseconds (the median over paired rounds of the transformed round minus the raw
   round before it, per call) and the paired ratio; no target.
   Checked: the one-key transformed read equals the batch read of the same key bit for
   bit and the reference within the tolerance above.

The time comparisons go to the Harness ratio table (speedup = other / mmfs); the derived
figures, with the targets, to "mmfs transforms figures", printed at the end of the session
(and appended to $MMFS_BENCH_TABLE when set).  Targets are reported, never asserted: the
machine is shared.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Harness, Sizes
from figures import Figure, figure_table, report_at_end
from groups import distinct_keys, write_group
from paired import PairedRounds, call_rounds, seconds_of
from sklearn import impute as ski
from sklearn import preprocessing as skp
from sklearn.pipeline import make_pipeline
from targets import TARGETS, fmt_seconds

import mmfs
from mmfs import transforms as T

DIM = 128
SCALARS = ("s0", "s1", "s2", "s3")
COLORS = np.array([f"c{i:02d}" for i in range(20)])
NAN_FRACTION = 0.01
# scikit-learn options its type stubs refuse (they say dtype: type[float64] and
# subsample: int), typed Any
F32: Any = np.float32
ALL_ROWS: Any = None  # subsample=None: fit on every row
ATOL = 1e-6  # the float checks' absolute tolerance (outputs near zero)
RTOL = 1e-5


# --------------------------------------------------------------------------------------
# The transforms
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str  # the stored transform's name (version 1)
    label: str  # what the tables call it
    inputs: tuple[str, ...]  # its input features
    spec: Callable[[], Any]  # the mmfs transform to fit
    peer: Callable[[], Any]  # the unfitted scikit-learn estimator
    fused: bool  # affine: runs inside the read kernel
    exact: bool  # checked bit for bit against the peer on float32 (or string) inputs

    @property
    def ref(self) -> str:
        return f"{self.name}@1"

    @property
    def category(self) -> bool:
        return self.inputs == ("color",)


def _log1p_peer() -> Any:
    return make_pipeline(
        skp.FunctionTransformer(np.clip, kw_args={"a_min": 0.0, "a_max": None}),
        skp.FunctionTransformer(np.log1p),
    )


CASES = [
    Case("std", "StandardScaler", ("emb",), T.StandardScaler, skp.StandardScaler, True, False),
    Case(
        "minmax", "MinMaxScaler(clip=True)", ("emb",),
        lambda: T.MinMaxScaler(clip=True), lambda: skp.MinMaxScaler(clip=True), True, False,
    ),
    Case(
        "impute", "SimpleImputer(mean)", ("emb_nan",),
        lambda: T.SimpleImputer(strategy="mean"), lambda: ski.SimpleImputer(strategy="mean"),
        True, False,
    ),
    Case(
        "impstd", "Pipeline[SimpleImputer(mean), StandardScaler]", ("emb_nan",),
        lambda: [T.SimpleImputer(strategy="mean"), T.StandardScaler()],
        lambda: make_pipeline(ski.SimpleImputer(strategy="mean"), skp.StandardScaler()),
        True, False,
    ),
    Case(
        "onehot", "OneHotEncoder", ("color",), T.OneHotEncoder,
        lambda: skp.OneHotEncoder(sparse_output=False, dtype=F32), False, True,
    ),
    Case(
        "ordinal", "OrdinalEncoder", ("color",), T.OrdinalEncoder,
        lambda: skp.OrdinalEncoder(dtype=F32), False, True,
    ),
    Case(
        "kbins", "KBinsDiscretizer(8, quantile)", SCALARS,
        lambda: T.KBinsDiscretizer(8, encode="onehot-dense", strategy="quantile", subsample=None),
        lambda: skp.KBinsDiscretizer(
            8, encode="onehot-dense", strategy="quantile", subsample=ALL_ROWS
        ),
        False, True,
    ),
    Case(
        "quantile", "QuantileTransformer(100, normal)", SCALARS,
        lambda: T.QuantileTransformer(
            n_quantiles=100, output_distribution="normal", subsample=None
        ),
        lambda: skp.QuantileTransformer(
            n_quantiles=100, output_distribution="normal", subsample=ALL_ROWS
        ),
        False, True,
    ),
    Case(
        "log1p", "Pipeline[Clip(min=0), Log1p]", SCALARS,
        lambda: [T.Clip(min=0.0), T.Log1p()], _log1p_peer, False, False,
    ),
    Case(
        "poly", "PolynomialFeatures(2)", SCALARS, T.PolynomialFeatures,
        skp.PolynomialFeatures, False, False,
    ),
    Case("norm", "Normalizer(l2)", ("emb",), T.Normalizer, skp.Normalizer, False, False),
]  # fmt: skip
BY_NAME = {c.name: c for c in CASES}
HEADLINE = BY_NAME["std"]
CACHED = BY_NAME["onehot"]  # the transform also read through the cache


def batch_group(case: Case, sizes: Sizes) -> str:
    return (
        f"{case.label} {case.ref} on {'+'.join(case.inputs)}: "
        f"get {sizes.tf_count:,} keys of {sizes.tf_n:,}"
    )


def one_group(sizes: Sizes) -> str:
    return f"get 1 key of {sizes.tf_n:,}: {HEADLINE.ref} vs raw emb"


RAW, PEER, MMFS, MMFS_CACHED = "raw get", "get+sklearn", "mmfs", "mmfs cached"
MMFS_1T = "mmfs n_threads=1"  # the fused transforms on the calling thread only


# --------------------------------------------------------------------------------------
# Data, store, peers, key pools
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TfData:
    path: str  # the mmfs store: group "g", int64 key "id"
    keys: np.ndarray  # int64 (n,), distinct, random
    emb: np.ndarray  # (n, 128) float32
    emb_nan: np.ndarray  # (n, 128) float32, emb with ~1% NaN
    color: np.ndarray  # (n,) object strings
    S: np.ndarray  # (n, 4) float32: s0..s3

    def inputs(self, case: Case, pos: np.ndarray) -> np.ndarray:
        """The case's input values at row positions pos, as get().to_numpy() has them (the
        strings, (k, 1), for color)."""
        if case.category:
            return self.color[pos].reshape(-1, 1)
        if case.inputs == SCALARS:
            return self.S[pos]
        return (self.emb if case.inputs == ("emb",) else self.emb_nan)[pos]

    def all_inputs(self, case: Case) -> np.ndarray:
        return self.inputs(case, np.arange(self.keys.shape[0]))


@pytest.fixture(scope="session")
def tf_data(tmp_path_factory: pytest.TempPathFactory, sizes: Sizes) -> TfData:
    n = sizes.tf_n
    root: Path = tmp_path_factory.mktemp("mmfs-transforms-bench")
    rng = np.random.default_rng(0)
    keys = distinct_keys(rng, n)
    emb = rng.standard_normal((n, DIM), dtype=np.float32)
    emb_nan = emb.copy()
    emb_nan[rng.random((n, DIM), dtype=np.float32) < NAN_FRACTION] = np.nan
    color = rng.choice(COLORS, n).astype(object)
    S = rng.standard_normal((n, len(SCALARS)), dtype=np.float32)
    schema: dict[str, Any] = {
        "emb": mmfs.dense(DIM),
        "emb_nan": mmfs.dense(DIM),
        "color": mmfs.category(),
        **{s: mmfs.scalar("float32") for s in SCALARS},
    }
    path = str(root / "transforms")
    with mmfs.open(path, durability="none") as store:
        columns = {"emb": emb, "emb_nan": emb_nan, "color": color}
        write_group(store, schema, keys, {**columns, **{s: S[:, j] for j, s in enumerate(SCALARS)}})
        store.commit("transforms group")
        for case in CASES:
            st = store.transforms.fit(case.name, "g", list(case.inputs), case.spec())
            assert st.ref == case.ref
            assert (st.transform.affine() is not None) == case.fused, case.ref
        store.commit("fit the transforms")
    gc.collect()
    return TfData(path, keys, emb, emb_nan, color, S)


@pytest.fixture(scope="session")
def peers(tf_data: TfData) -> dict[str, Any]:
    """The fitted scikit-learn peers, by case name (see the module docstring)."""
    out: dict[str, Any] = {}
    for case in CASES:
        X = tf_data.all_inputs(case)
        if case.fused:  # the scalers and imputers: statistics in float64, as mmfs
            X = X.astype(np.float64)
        out[case.name] = case.peer().fit(X)
        del X
        gc.collect()
    return out


@pytest.fixture(scope="module")
def reader(tf_data: TfData) -> Iterator[mmfs.Store]:
    store = mmfs.open(tf_data.path, mode="r")
    yield store
    store.close()


# --------------------------------------------------------------------------------------
# Timing (pedantic rounds, optionally paired with the raw get) and the figures
# --------------------------------------------------------------------------------------


# The paired rounds (paired.py): pools of tf_rounds + 2 position sets of tf_count keys; the
# figures call the timed read "transformed" and its paired baseline "raw"
PAIRED = PairedRounds(
    measured="transformed", base="raw", shape=lambda s: (s.tf_n, s.tf_count, s.tf_rounds)
)
CACHE_BUILD: dict[str, float] = {}  # group -> seconds of the first read after cache()


def _batch_figures(h: Harness, case: Case) -> list[Figure]:
    s = h.sizes
    group = batch_group(case, s)
    mm, raw, peer = (seconds_of(h, group, i) for i in (MMFS, RAW, PEER))
    p = PAIRED.results.get(group)
    out: list[Figure] = []
    if mm is None:
        return out
    what = f"{case.label} {case.ref}"
    sep = "" if raw is None else f"; separate tests: {fmt_seconds(mm)} / {fmt_seconds(raw)}"
    if p is not None:
        paired = PAIRED.text(p) + sep + ("" if raw is None else f" = {mm / raw:.3f}x")
        if case.fused:
            for key in ("overhead_5", "overhead_20"):
                out.append(
                    Figure(
                        "1 fused", f"{what}: raw get / transformed", 1 / p.ratio, "x",
                        TARGETS[key], paired,
                    )
                )  # fmt: skip
        else:
            out.append(
                Figure("2 other", f"{what}: transformed / raw get", p.ratio, "x", None, paired)
            )
    out += PAIRED.one_thread_figures(
        h, group, MMFS_1T, "1 fused", f"{what}, n_threads=1: raw get / transformed"
    )
    if peer is not None:
        out.append(
            Figure(
                "1 fused" if case.fused else "2 other",
                f"{what}: get+sklearn / transformed",
                peer / mm,
                "x",
                None,
                f"get+sklearn {fmt_seconds(peer)}, transformed {fmt_seconds(mm)} "
                f"({mm / s.tf_count * 1e9:.0f} ns/key)",
            )
        )
    cached = seconds_of(h, group, MMFS_CACHED)
    if cached is not None:
        out.append(
            Figure(
                "2 other",
                f"{what}: uncached / cached (transforms.cache)",
                mm / cached,
                "x",
                None,
                f"uncached {fmt_seconds(mm)}, cached {fmt_seconds(cached)}"
                + ("" if raw is None else f" = {cached / raw:.3f}x raw get"),
            )
        )
    build = CACHE_BUILD.get(group)
    if build is not None:
        out.append(
            Figure(
                "2 other",
                f"{what}: first read after cache()",
                build,
                "s",
                None,
                f"computes the outputs of all {s.tf_n:,} keys, then reads {s.tf_count:,}",
            )
        )
    return out


def _derived_figures(h: Harness) -> list[Figure]:
    out = [f for case in CASES for f in _batch_figures(h, case)]
    group = one_group(h.sizes)
    mm, raw = seconds_of(h, group, MMFS), seconds_of(h, group, RAW)
    p = PAIRED.results.get(group)
    calls = h.sizes.tf_one_calls
    if p is not None:
        sep = ""
        if mm is not None and raw is not None:
            sep = (
                f"; separate tests: transformed {mm * 1e6:.2f} µs, raw {raw * 1e6:.2f} µs "
                f"({(mm - raw) * 1e6:+.2f} µs)"
            )
        out += PAIRED.one_key_figures(p, what=f"{HEADLINE.ref}, 1 key", calls=calls, sep=sep)
    return out


def figure_lines(h: Harness) -> list[str] | None:
    figures = _derived_figures(h)
    return figure_table("transforms", figures, disabled=h.disabled) if figures else None


@pytest.fixture(scope="session", autouse=True)
def _transforms_figure_reporter(request: pytest.FixtureRequest, harness: Harness) -> None:
    report_at_end(request, "transforms", lambda: figure_lines(harness))


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def reference(case: Case, peer: Any, X: np.ndarray) -> np.ndarray:
    """The reference output for inputs X (from the in-memory data): the peer on float64
    inputs cast to float32, or (exact cases) the peer on the float32 values or strings."""
    if case.exact:
        return np.asarray(peer.transform(X))
    return np.asarray(peer.transform(X.astype(np.float64))).astype(np.float32)


def check(case: Case, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape, (case.ref, got.shape, want.shape)
    if case.exact:
        np.testing.assert_array_equal(got, want.astype(got.dtype), err_msg=case.ref)
    else:
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=case.ref)


# --------------------------------------------------------------------------------------
# 1 and 2. Batch gets, 10,000 keys
# --------------------------------------------------------------------------------------


def _params() -> list[Any]:
    out = []
    for case in CASES:
        extra = ["cached"] if case is CACHED else ["mmfs1"] if case.fused else []
        impls = ["raw", "sklearn", *extra, "mmfs"]  # mmfs last
        out += [pytest.param(case.name, impl, id=f"{case.name}-{impl}") for impl in impls]
    return out


def _raw_reader(g: Any, case: Case, **kw: Any) -> Callable[[np.ndarray], np.ndarray]:
    features = list(case.inputs)

    def read(keys: np.ndarray) -> np.ndarray:
        return g.get(keys, features, **kw).to_numpy()

    return read


def _peer_reader(g: Any, case: Case, peer: Any) -> Callable[[np.ndarray], np.ndarray]:
    features = list(case.inputs)
    if case.category:

        def read(keys: np.ndarray) -> np.ndarray:
            return peer.transform(g.get(keys, ["color"])["color"].reshape(-1, 1))

    else:

        def read(keys: np.ndarray) -> np.ndarray:
            return peer.transform(g.get(keys, features).to_numpy())

    return read


def _mmfs_reader(g: Any, case: Case, **kw: Any) -> Callable[[np.ndarray], np.ndarray]:
    ref = case.ref

    def read(keys: np.ndarray) -> np.ndarray:
        return g.get(keys, transform=ref, **kw).to_numpy()

    return read


@pytest.mark.parametrize(("name", "impl"), _params())
def test_transform_batch(
    benchmark: Any, harness: Harness, sizes: Sizes, tf_data: TfData, peers: dict[str, Any],
    reader: mmfs.Store, name: str, impl: str,
) -> None:  # fmt: skip
    case = BY_NAME[name]
    d = tf_data
    g = reader["g"]
    group = batch_group(case, sizes)
    pool = PAIRED.position_pool(sizes)
    k0 = d.keys[pool[0]]  # the checked set
    peer = peers[name]
    want = reference(case, peer, d.inputs(case, pool[0]))
    inputs = "+".join(case.inputs)
    base_read = None
    kw: dict[str, Any] = {"n_threads": 1} if impl == "mmfs1" else {}
    if impl == "raw":
        read = _raw_reader(g, case)
        name_, note = RAW, f"g.get(keys, [{inputs}]).to_numpy()"
        if case.category:  # the codes as float32; the strings are checked
            got = g.get(k0, ["color"])["color"]
            np.testing.assert_array_equal(got, d.color[pool[0]])
            assert read(k0).shape == (sizes.tf_count, 1)
        else:
            np.testing.assert_array_equal(read(k0), d.inputs(case, pool[0]))
    elif impl == "sklearn":
        read = _peer_reader(g, case, peer)
        name_ = PEER
        note = f"{type(peer).__name__}.transform(g.get(keys, [{inputs}]) ...)"
        check(case, np.asarray(read(k0)), want)
    else:
        read = _mmfs_reader(g, case, **kw)
        name_ = {"mmfs": MMFS, "mmfs1": MMFS_1T, "cached": MMFS_CACHED}[impl]
        threads = ", n_threads=1" if kw else ""
        note = f'g.get(keys, transform="{case.ref}"{threads}).to_numpy()'
        note += " (fused)" if case.fused else ""
        if impl == "cached":
            reader.transforms.cache(case.ref)
            t0 = time.perf_counter()
            got = read(k0)  # the first read builds the cache (every key)
            build = time.perf_counter() - t0
            CACHE_BUILD[group] = build
            note += f' after transforms.cache("{case.ref}")'
        else:
            assert case.ref not in reader.transforms.cached()
            got = read(k0)
        check(case, got, want)
        base_read = None if impl == "cached" else _raw_reader(g, case, **kw)
    try:
        PAIRED.run_sets(
            benchmark, harness, sizes, d.keys, group, name_, read, note=note,
            base_read=base_read, one_thread=bool(kw),
        )  # fmt: skip
    finally:
        if impl == "cached":
            reader.transforms.uncache(case.ref)


# --------------------------------------------------------------------------------------
# 3. One key
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["raw", "mmfs"])
def test_transform_one_key(
    benchmark: Any, harness: Harness, sizes: Sizes, tf_data: TfData, peers: dict[str, Any],
    reader: mmfs.Store, impl: str,
) -> None:  # fmt: skip
    d = tf_data
    g = reader["g"]
    calls = sizes.tf_one_calls
    order, keys = PAIRED.one_key_order(d.keys)
    ref = HEADLINE.ref

    # the check: 5 keys against the reference and (transformed) the batch read
    pos = order[:5]
    raw_want = d.emb[pos]
    tf_want = reference(HEADLINE, peers[HEADLINE.name], raw_want)
    batch = g.get(d.keys[pos], transform=ref).to_numpy()
    for i, k in enumerate(keys[:5]):
        np.testing.assert_array_equal(g.get(k, ["emb"]).to_numpy()[0], raw_want[i])
        one = g.get(k, transform=ref).to_numpy()[0]
        np.testing.assert_array_equal(one, batch[i])
        check(HEADLINE, one[None], tf_want[i : i + 1])

    paired = None
    if impl == "raw":
        fn = call_rounds(g.get, keys, calls, ["emb"])
        name, note = RAW, 'g.get(k, ["emb"])'
    else:
        fn = call_rounds(g.get, keys, calls, transform=ref)
        paired = call_rounds(g.get, keys[::-1], calls, ["emb"])  # the raw calls: other keys
        name, note = MMFS, f'g.get(k, transform="{ref}")'
    PAIRED.run_one_key(
        benchmark, harness, one_group(sizes), name, fn, rounds=sizes.tf_one_rounds,
        calls=calls, note=note, paired=paired,
    )  # fmt: skip
