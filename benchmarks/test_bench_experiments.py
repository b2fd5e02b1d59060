"""Experiments (issue 7): vectorised assignment against per-id peers, and
``g.get(keys, features, experiment=name)`` against the plain get of the same keys.

1. Assignment, ``exp.assign(keys, n_threads=1)``: one thread, ``ex_assign_n`` ids (full
   size 1,000,000; small 100,000), ``ex_assign_rounds`` rounds of one call on the same
   array.  Two experiments of one store, each 50/50 ``control``/``treatment`` at full
   coverage, committed: ``bench-m`` (murmur3, the default) and ``bench-gb``
   (``hashing="growthbook"``).  Two key forms: random int64 ids in [1, 2**53] (GrowthBook
   hashes a number's decimal string, exact up to 2**53; 0 is skipped because the SDK
   treats a falsy id as no id) and a numpy ``U`` array of ``"user-<i>"`` (i random in
   [0, 2**31): at most 15 characters, <= 32 bytes).  The peers run per id in a Python loop,
   on the first ``ex_peer_n`` ids (``ex_peer_rounds`` rounds), their per-id time
   extrapolated to ``ex_assign_n`` ids for the ratio table:

   * ``mmh3`` (murmur3 experiments): what mmfs computes, written with ``mmh3.hash``: the
     same salted messages (``uint32le(len(salt)) || salt || zeros to 16 bytes || key``,
     the prefix built once; the key's 8 little-endian bytes or its UTF-8), the domain slot
     ``(h * 10000) >> 32`` looked up in the experiment's domain table, then the arm slot
     under the arm salt in its arm table (Python lists), -1 outside the domain;
   * ``gbhash`` (GrowthBook experiments): ``chooseVariation(gbhash(seed, str(k), 2),
     ranges)`` with ``ranges = getBucketRanges(...)`` computed once;
   * ``GrowthBook.run``: the SDK end to end, ``GrowthBook(attributes={"id": k}).run(
     Experiment(...))`` per id, on the first ``ex_sdk_n`` ids only (``variationId``, -1
     when not ``inExperiment``).

   Every peer's arms on its ids are checked equal to mmfs's.  Figures: mmfs's time per id
   (targets: <= 10 ns for int64 ids, <= 50 ns for short strings, <= 100 ns for GrowthBook
   mode, int and string ids: 100, 20 and 10 million ids/s on one core), mmfs's and each
   peer's ids/s, and the ratio mmfs ids/s / peer ids/s.

2. ``get(experiment=)``: one group ``g`` of ``ex_n`` keys (full size 1,000,000; small
   20,000), random distinct int64 keys, built once per session in a temporary directory
   (``durability="none"``, one commit), seeded standard normal values: ``emb`` and
   ``emb_v2``, dense(128) float32, and ``s0..s7`` float32 scalars.  The request is
   ``features = ["emb", "s0", ..., "s7"]`` (emb_v2 is read only by a serving arm), 10,000
   random keys a call, ``.to_numpy()``.  Three experiments, committed:

   * (a) ``exp-a``: 50/50, no serving configuration (assignment, arm codes, then the
     plain read);
   * (b) ``exp-b``: 50/50, ``serve={"treatment": {"features": {"emb": "emb_v2"}}}``:
     treatment keys get emb_v2 in emb's columns;
   * (c) ``exp-c``: (b) at 90% coverage (10% of the keys outside: served as asked).

   Fresh keys every round (as in test_bench_transforms.py): a pool of ``ex_rounds`` + 2
   position sets of ``ex_count`` keys, seeded, cycled; every implementation reads the same
   sets in the same order.  Each case is one pytest-benchmark group with ``plain get``
   (``g.get(keys, features).to_numpy()``), ``mmfs`` (``g.get(keys, features,
   experiment=name).to_numpy()``) and ``mmfs n_threads=1`` (both reads with
   ``n_threads=1``).  For the two mmfs tests the plain get of a set of a second pool is
   timed before every round (and the warm-up), outside the timed call: the *paired* ratio
   is the median over rounds of (experiment round / the plain round just before it),
   reported inverted, "plain get / experiment get".  Target: ``>= 1/1.1`` (the experiment
   get costs at most 10% more); no target for ``n_threads=1`` (it shows the cost on the
   calling thread alone, without waiting for the slowest thread on a shared machine).
   Checked before timing, on the pool's first set: the arms equal ``exp.assign(keys)``;
   the values equal the in-memory data (emb_v2 in emb's columns for treatment keys of b
   and c).  A control, "paired control (A/A)": the plain get timed in the mmfs tests'
   place (same pools, the same plain get before every round), with and without
   ``n_threads=1``; its "plain / plain" ratio is the paired design's own bias on the
   machine at that moment (1.000 when unbiased; far from it, the default-thread ratios
   above measure scheduling, not the read).

3. One key: ``g.get(k, features, experiment="exp-b")`` against ``g.get(k, features)``
   (``k`` a Python int; fresh keys, a seeded permutation), ``ex_one_rounds`` rounds of
   ``ex_one_calls`` calls, paired the same way; figures per call: the overhead in
   microseconds and the ratio, no target.  Checked: the one-key experiment read equals
   the batch experiment read of the same keys (values and arms).

Rounds are explicit (:func:`figures.timed_rounds`: one warm-up, then the rounds; the median
round is the figure, the min is in the note); with --benchmark-disable each is one
un-warmed call.  The times go to the Harness ratio table (speedup = other / mmfs); the
derived figures with their targets to "mmfs experiments figures", printed at the end of
the session (and appended to $MMFS_BENCH_TABLE when set).  Targets are reported, never
asserted: the machine is shared.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mmh3
import numpy as np
import pytest
from conftest import Entry, Harness, Sizes
from figures import Figure, figure_table, report_at_end, timed_rounds
from groups import distinct_keys, write_group
from growthbook import Experiment as GBExperiment
from growthbook import GrowthBook
from growthbook.core import chooseVariation, gbhash, getBucketRanges
from paired import ONE_THREAD, PairedRounds, call_rounds, seconds_of
from targets import TARGETS, fmt_seconds

import mmfs

DIM = 128
SCALARS = tuple(f"s{i}" for i in range(8))
FEATURES = ["emb", *SCALARS]
VARIANTS = ["control", "treatment"]
JS_SAFE = 2**53


# --------------------------------------------------------------------------------------
# 1. Assignment
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssignCase:
    hashing: str  # "murmur3" or "growthbook"
    form: str  # "int" or "str"
    experiment: str
    limit: str  # the LIMITS entry of its per-id time

    @property
    def label(self) -> str:
        keys = "int64 ids" if self.form == "int" else "str ids (numpy U, <= 32 bytes)"
        return f"{keys}, {self.hashing}"

    @property
    def id(self) -> str:
        return f"{self.hashing}-{self.form}"


ASSIGN_CASES = [
    AssignCase("murmur3", "int", "bench-m", "assign_int"),
    AssignCase("murmur3", "str", "bench-m", "assign_str"),
    AssignCase("growthbook", "int", "bench-gb", "assign_gb"),
    AssignCase("growthbook", "str", "bench-gb", "assign_gb"),
]
ASSIGN_BY_ID = {c.id: c for c in ASSIGN_CASES}
MMH3, GBHASH, SDK = "mmh3 per id", "gbhash per id", "GrowthBook.run per id"


def assign_group(case: AssignCase, sizes: Sizes) -> str:
    return f"assign {sizes.ex_assign_n:,} {case.label}, 1 thread"


@dataclass(frozen=True)
class AssignData:
    store: mmfs.Store  # a writer of a store holding bench-m and bench-gb, committed
    ints: np.ndarray  # int64 (ex_assign_n,), in [1, 2**53]
    strs: np.ndarray  # numpy U (ex_assign_n,): "user-<i>"

    def keys(self, case: AssignCase) -> np.ndarray:
        return self.ints if case.form == "int" else self.strs


@pytest.fixture(scope="module")
def assign_data(tmp_path_factory: pytest.TempPathFactory, sizes: Sizes) -> Iterator[AssignData]:
    root: Path = tmp_path_factory.mktemp("mmfs-experiments-assign")
    rng = np.random.default_rng(0)
    n = sizes.ex_assign_n
    ints = rng.integers(1, JS_SAFE, size=n, endpoint=True, dtype=np.int64)
    strs = np.array([f"user-{i}" for i in rng.integers(0, 2**31, size=n).tolist()])
    assert strs.dtype.kind == "U"
    assert strs.dtype.itemsize // 4 <= 32
    store = mmfs.open(str(root / "assign"), durability="none")
    store.experiments.create("bench-m", VARIANTS)
    store.experiments.create("bench-gb", VARIANTS, hashing="growthbook")
    store.commit("experiments")
    yield AssignData(store, ints, strs)
    store.close()


def _prefix(salt: bytes) -> bytes:
    """The salted message's prefix (mmfs.experiments.hashing): uint32le(len(salt)) ||
    salt || zeros to a multiple of 16 bytes."""
    p = len(salt).to_bytes(4, "little") + salt
    return p + b"\0" * (-len(p) % 16)


def mmh3_assigner(exp: Any, str_keys: bool) -> Callable[[list[Any]], list[int]]:
    """The murmur3 experiment's assignment written per id with mmh3 (module docstring)."""
    d = exp._def
    pd, pa = _prefix(d.domain_salt), _prefix(d.arm_salt)
    dom: list[int] = d.domain_table().tolist()
    arm: list[int] = d.arm_table().tolist()
    h = mmh3.hash

    def run(keys: list[Any]) -> list[int]:
        out = []
        for k in keys:
            b = k.encode() if str_keys else k.to_bytes(8, "little", signed=True)
            if dom[(h(pd + b, 0, signed=False) * 10000) >> 32]:
                out.append(arm[(h(pa + b, 0, signed=False) * 10000) >> 32])
            else:
                out.append(-1)
        return out

    return run


def _gb_weights(exp: Any) -> list[float]:
    return [w / 100 for w in exp.weights.values()]


def gbhash_assigner(exp: Any) -> Callable[[list[Any]], list[int]]:
    """GrowthBook's own functions per id: gbhash, then chooseVariation."""
    ranges = getBucketRanges(len(exp.variants), exp.coverage, _gb_weights(exp))
    seed = exp.seed

    def run(keys: list[Any]) -> list[int]:
        return [chooseVariation(gbhash(seed, str(k), 2) or 0.0, ranges) for k in keys]

    return run


def sdk_assigner(exp: Any) -> Callable[[list[Any]], list[int]]:
    """The GrowthBook SDK end to end per id."""
    sdk = GBExperiment(
        key=exp.seed, variations=list(range(len(exp.variants))), weights=_gb_weights(exp),
        coverage=exp.coverage, hashVersion=2,
    )  # fmt: skip

    def run(keys: list[Any]) -> list[int]:
        out = []
        for k in keys:
            res = GrowthBook(attributes={"id": k}).run(sdk)
            out.append(res.variationId if res.inExperiment else -1)
        return out

    return run


@dataclass(frozen=True)
class AssignTime:
    per_id: float  # seconds per id, median round / ids
    ids: int  # ids per timed call
    rounds: int


ASSIGN: dict[str, dict[str, AssignTime]] = {}  # group -> impl -> time


def _assign_params() -> list[Any]:
    out = []
    for case in ASSIGN_CASES:
        peers = ["mmh3"] if case.hashing == "murmur3" else ["gbhash", "sdk"]
        for impl in [*peers, "mmfs"]:  # mmfs last
            out.append(pytest.param(case.id, impl, id=f"{case.id}-{impl}"))
    return out


@pytest.mark.parametrize(("case_id", "impl"), _assign_params())
def test_assign(
    benchmark: Any, harness: Harness, sizes: Sizes, assign_data: AssignData, case_id: str,
    impl: str,
) -> None:  # fmt: skip
    case = ASSIGN_BY_ID[case_id]
    exp = assign_data.store.experiments.get(case.experiment)
    assert exp.hashing == case.hashing
    keys = assign_data.keys(case)
    n = keys.shape[0]
    group = assign_group(case, sizes)
    benchmark.group = group
    if impl == "mmfs":
        fn: Callable[[], Any] = lambda: exp.assign(keys, n_threads=1)  # noqa: E731
        ids, rounds = n, sizes.ex_assign_rounds
        name, note = "mmfs", "exp.assign(keys, n_threads=1)"
        codes = exp.assign(keys, n_threads=1)
        assert codes.dtype == np.int16
        assert codes.shape == (n,)
        np.testing.assert_array_equal(codes, exp.assign(keys))  # any thread count
        assert 0.45 < float(np.mean(codes == 1)) < 0.55
    else:
        m = sizes.ex_sdk_n if impl == "sdk" else sizes.ex_peer_n
        sub: list[Any] = keys[:m].tolist()
        run = {
            "mmh3": lambda: mmh3_assigner(exp, case.form == "str"),
            "gbhash": lambda: gbhash_assigner(exp),
            "sdk": lambda: sdk_assigner(exp),
        }[impl]()
        np.testing.assert_array_equal(np.array(run(sub)), exp.assign(keys[:m]))
        fn = lambda: run(sub)  # noqa: E731
        ids, rounds = m, sizes.ex_peer_rounds
        name = {"mmh3": MMH3, "gbhash": GBHASH, "sdk": SDK}[impl]
        note = f"timed on {m:,} of {n:,} ids, extrapolated"
    r = timed_rounds(benchmark, fn, rounds=rounds, before=None)
    if benchmark.disabled:
        harness.disabled = True
    else:
        note = f"min {fmt_seconds(r.minimum * n / ids)}; {note}"
    per_id = r.median / ids
    ASSIGN.setdefault(group, {})[name] = AssignTime(per_id, ids, r.rounds)
    info: dict[str, Any] = {"impl": name, "size": harness.size, "seconds_per_id": per_id}
    if ids != n:  # as conftest's sliced peers (tools/bench_report.py extrapolates them)
        info.update(slice_rows=ids, full_rows=n, slice_median_s=r.median, fixed_s=0.0)
    info["seconds_full_equivalent"] = per_id * n
    harness.record(benchmark, Entry(group, name, per_id * n, r.median, r.rounds, note), info)


def _assign_figures(sizes: Sizes) -> list[Figure]:
    out: list[Figure] = []
    for case in ASSIGN_CASES:
        times = ASSIGN.get(assign_group(case, sizes), {})
        mm = times.get("mmfs")
        if mm is None:
            continue
        what = case.label
        rate = 1 / mm.per_id
        out.append(
            Figure(
                "1 assign", f"{what}: mmfs, 1 thread, per id", mm.per_id, "s", case.limit,
                f"{mm.per_id * 1e9:.2f} ns = {rate / 1e6:.1f} M ids/s; median of {mm.rounds} "
                f"rounds of exp.assign({mm.ids:,} ids, n_threads=1)",
            )
        )  # fmt: skip
        out.append(Figure("1 assign", f"{what}: mmfs ids/s", rate, "keys/s"))
        for impl, t in times.items():
            if impl == "mmfs":
                continue
            out.append(
                Figure(
                    "1 assign", f"{what}: peer {impl}, ids/s", 1 / t.per_id, "keys/s", None,
                    f"{t.per_id * 1e9:.0f} ns per id; median of {t.rounds} rounds of "
                    f"{t.ids:,} ids",
                )
            )  # fmt: skip
            out.append(
                Figure(
                    "1 assign", f"{what}: mmfs / {impl} (ids/s)", t.per_id / mm.per_id, "x",
                    None, f"{rate / 1e6:.1f} M vs {1 / t.per_id / 1e6:.3f} M ids/s",
                )
            )  # fmt: skip
    return out


# --------------------------------------------------------------------------------------
# 2 and 3. get(experiment=)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GetCase:
    key: str  # "a", "b", "c"
    experiment: str
    label: str
    coverage: float
    serves: bool  # treatment reads emb_v2 in place of emb


GET_CASES = [
    GetCase("a", "exp-a", "(a) 50/50, no serving configuration", 1.0, False),
    GetCase("b", "exp-b", "(b) 50/50, treatment serves emb_v2 for emb", 1.0, True),
    GetCase("c", "exp-c", "(c) as (b) at 90% coverage", 0.9, True),
]
GET_BY_KEY = {c.key: c for c in GET_CASES}
ONE_CASE = GET_BY_KEY["b"]
SERVE = {"treatment": {"features": {"emb": "emb_v2"}}}
PLAIN, MMFS, MMFS_1T = "plain get", "mmfs", "mmfs n_threads=1"


def get_group(case: GetCase, sizes: Sizes) -> str:
    return f"experiment {case.label}: get {sizes.ex_count:,} keys of {sizes.ex_n:,}"


def control_group(sizes: Sizes) -> str:
    return f"paired control (A/A): plain get, {sizes.ex_count:,} keys of {sizes.ex_n:,}"


def one_group(sizes: Sizes) -> str:
    return f"get 1 key of {sizes.ex_n:,}: experiment {ONE_CASE.experiment} vs plain"


@dataclass(frozen=True)
class ExData:
    path: str  # the store: group "g", int64 key "id", experiments exp-a, exp-b, exp-c
    keys: np.ndarray  # int64 (n,), distinct, random
    emb: np.ndarray  # (n, 128) float32
    emb_v2: np.ndarray  # (n, 128) float32
    S: np.ndarray  # (n, 8) float32: s0..s7


@pytest.fixture(scope="session")
def ex_data(tmp_path_factory: pytest.TempPathFactory, sizes: Sizes) -> ExData:
    n = sizes.ex_n
    root: Path = tmp_path_factory.mktemp("mmfs-experiments-bench")
    rng = np.random.default_rng(0)
    keys = distinct_keys(rng, n)
    emb = rng.standard_normal((n, DIM), dtype=np.float32)
    emb_v2 = rng.standard_normal((n, DIM), dtype=np.float32)
    S = rng.standard_normal((n, len(SCALARS)), dtype=np.float32)
    schema: dict[str, Any] = {
        "emb": mmfs.dense(DIM),
        "emb_v2": mmfs.dense(DIM),
        **{s: mmfs.scalar("float32") for s in SCALARS},
    }
    path = str(root / "experiments")
    with mmfs.open(path, durability="none") as store:
        columns = {"emb": emb, "emb_v2": emb_v2, **{s: S[:, j] for j, s in enumerate(SCALARS)}}
        write_group(store, schema, keys, columns)
        for case in GET_CASES:
            store.experiments.create(
                case.experiment, VARIANTS, coverage=case.coverage,
                serve=SERVE if case.serves else None,
            )  # fmt: skip
        store.commit("experiments group")
    gc.collect()
    return ExData(path, keys, emb, emb_v2, S)


@pytest.fixture(scope="module")
def reader(ex_data: ExData) -> Iterator[mmfs.Store]:
    store = mmfs.open(ex_data.path, mode="r")
    yield store
    store.close()


def expected(d: ExData, case: GetCase | None, pos: np.ndarray, arms: np.ndarray) -> np.ndarray:
    """What ``g.get(keys, FEATURES[, experiment=]).to_numpy()`` holds for the keys at
    positions ``pos``: emb (emb_v2 for treatment keys of a serving case), then s0..s7."""
    emb = d.emb[pos]
    if case is not None and case.serves:
        treat = arms == VARIANTS.index("treatment")
        emb = np.where(treat[:, None], d.emb_v2[pos], emb)
    return np.hstack([emb, d.S[pos]])


# The paired rounds (paired.py): pools of ex_rounds + 2 position sets of ex_count keys; the
# figures call the timed read "experiment" and its paired baseline "plain"
PAIRED = PairedRounds(
    measured="experiment", base="plain", shape=lambda s: (s.ex_n, s.ex_count, s.ex_rounds)
)


def _plain_reader(g: Any, **kw: Any) -> Callable[[np.ndarray], np.ndarray]:
    def plain(keys: np.ndarray) -> np.ndarray:
        return g.get(keys, FEATURES, **kw).to_numpy()

    return plain


def _get_params() -> list[Any]:
    out = []
    for case in GET_CASES:
        for impl in ("plain", "mmfs1", "mmfs"):  # mmfs last
            out.append(pytest.param(case.key, impl, id=f"{case.key}-{impl}"))
    return out


@pytest.mark.parametrize(("case_key", "impl"), _get_params())
def test_experiment_get(
    benchmark: Any, harness: Harness, sizes: Sizes, ex_data: ExData, reader: mmfs.Store,
    case_key: str, impl: str,
) -> None:  # fmt: skip
    case = GET_BY_KEY[case_key]
    d = ex_data
    g = reader["g"]
    exp = reader.experiments.get(case.experiment)
    assert exp.coverage == case.coverage
    assert bool(exp.serve) == case.serves
    group = get_group(case, sizes)
    pool = PAIRED.position_pool(sizes)
    kw: dict[str, Any] = {"n_threads": 1} if impl == "mmfs1" else {}
    name = case.experiment
    plain = _plain_reader(g, **kw)

    def served(keys: np.ndarray) -> np.ndarray:
        return g.get(keys, FEATURES, experiment=name, **kw).to_numpy()

    k0 = d.keys[pool[0]]  # the checked set
    arms = exp.assign(k0)
    np.testing.assert_array_equal(plain(k0), expected(d, None, pool[0], arms))
    base_read = None
    if impl == "plain":
        read, label, note = plain, PLAIN, "g.get(keys, features).to_numpy()"
    else:
        batch = g.get(k0, FEATURES, experiment=name, **kw)
        np.testing.assert_array_equal(batch.arms, arms)
        np.testing.assert_array_equal(batch.to_numpy(), expected(d, case, pool[0], arms))
        if case.coverage < 1:
            assert (arms == -1).any()
        read, label = served, {"mmfs": MMFS, "mmfs1": MMFS_1T}[impl]
        threads = ", n_threads=1" if kw else ""
        note = f'g.get(keys, features, experiment="{name}"{threads}).to_numpy()'
        base_read = plain
    PAIRED.run_sets(
        benchmark, harness, sizes, d.keys, group, label, read, note=note, base_read=base_read,
        one_thread=bool(kw),
    )  # fmt: skip


@pytest.mark.parametrize("impl", ["aa1", "aa"])
def test_paired_control(
    benchmark: Any, harness: Harness, sizes: Sizes, ex_data: ExData, reader: mmfs.Store,
    impl: str,
) -> None:  # fmt: skip
    """The paired design's own bias: the plain get timed exactly as the experiment gets
    are (same pools, same plain get before every round), against itself."""
    kw: dict[str, Any] = {"n_threads": 1} if impl == "aa1" else {}
    plain = _plain_reader(reader["g"], **kw)
    label = "plain get n_threads=1" if kw else PLAIN
    note = "g.get(keys, features" + (", n_threads=1" if kw else "") + ").to_numpy()"
    PAIRED.run_sets(
        benchmark, harness, sizes, ex_data.keys, control_group(sizes), label, plain, note=note,
        base_read=plain, one_thread=bool(kw),
    )  # fmt: skip


@pytest.mark.parametrize("impl", ["plain", "mmfs"])
def test_experiment_get_one_key(
    benchmark: Any, harness: Harness, sizes: Sizes, ex_data: ExData, reader: mmfs.Store,
    impl: str,
) -> None:  # fmt: skip
    d = ex_data
    g = reader["g"]
    calls = sizes.ex_one_calls
    order, keys = PAIRED.one_key_order(d.keys)
    name = ONE_CASE.experiment

    # the check: 5 keys, one at a time, against the batch read and the data
    pos = order[:5]
    batch = g.get(d.keys[pos], FEATURES, experiment=name)
    arms = reader.experiments.get(name).assign(d.keys[pos])
    np.testing.assert_array_equal(batch.arms, arms)
    want = expected(d, ONE_CASE, pos, arms)
    np.testing.assert_array_equal(batch.to_numpy(), want)
    plain_want = expected(d, None, pos, arms)
    for i, k in enumerate(keys[:5]):
        np.testing.assert_array_equal(g.get(k, FEATURES).to_numpy()[0], plain_want[i])
        one = g.get(k, FEATURES, experiment=name)
        np.testing.assert_array_equal(one.arms, arms[i : i + 1])
        np.testing.assert_array_equal(one.to_numpy()[0], want[i])

    paired = None
    if impl == "plain":
        fn = call_rounds(g.get, keys, calls, FEATURES)
        label, note = PLAIN, "g.get(k, features)"
    else:
        fn = call_rounds(g.get, keys, calls, FEATURES, experiment=name)
        paired = call_rounds(g.get, keys[::-1], calls, FEATURES)  # the plain calls: other keys
        label, note = MMFS, f'g.get(k, features, experiment="{name}")'
    PAIRED.run_one_key(
        benchmark, harness, one_group(sizes), label, fn, rounds=sizes.ex_one_rounds,
        calls=calls, note=note, paired=paired,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def _get_figures(h: Harness) -> list[Figure]:
    out: list[Figure] = []
    for case in GET_CASES:
        group = get_group(case, h.sizes)
        mm, plain = seconds_of(h, group, MMFS), seconds_of(h, group, PLAIN)
        p = PAIRED.results.get(group)
        if p is not None:
            sep = ""
            if mm is not None and plain is not None:
                sep = f"; separate tests: {fmt_seconds(mm)} / {fmt_seconds(plain)}"
            out.append(
                Figure(
                    "2 get(experiment=)", f"{case.label}: plain get / experiment get",
                    1 / p.ratio, "x", TARGETS["experiment_get"], PAIRED.text(p) + sep,
                )
            )  # fmt: skip
        name = f"{case.label}, n_threads=1: plain / experiment"
        out += PAIRED.one_thread_figures(h, group, MMFS_1T, "2 get(experiment=)", name)
    control = control_group(h.sizes)
    for key, threads in ((control, ""), (control + ONE_THREAD, ", n_threads=1")):
        p = PAIRED.results.get(key)
        if p is not None:
            out.append(
                Figure(
                    "2 get(experiment=)", f"A/A control{threads}: plain / plain (paired)",
                    1 / p.ratio, "x", None,
                    "the paired design's own bias: " + PAIRED.text(p, measured="plain"),
                )
            )  # fmt: skip
    group = one_group(h.sizes)
    p = PAIRED.results.get(group)
    if p is not None:
        calls = h.sizes.ex_one_calls
        mm, plain = seconds_of(h, group, MMFS), seconds_of(h, group, PLAIN)
        sep = ""
        if mm is not None and plain is not None:
            sep = f"; separate tests: experiment {mm * 1e6:.2f} µs, plain {plain * 1e6:.2f} µs"
        out += PAIRED.one_key_figures(p, what=f"1 key, {ONE_CASE.experiment}", calls=calls, sep=sep)
    return out


def figure_lines(h: Harness) -> list[str] | None:
    figures = _assign_figures(h.sizes) + _get_figures(h)
    return figure_table("experiments", figures, disabled=h.disabled) if figures else None


@pytest.fixture(scope="session", autouse=True)
def _experiments_figure_reporter(request: pytest.FixtureRequest, harness: Harness) -> None:
    report_at_end(request, "experiments", lambda: figure_lines(harness))
