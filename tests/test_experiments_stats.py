"""Statistical properties of experiment assignment (seeded, so every run is the same run).

Uniformity and independence are chi-square tests at p >= 0.001 over 1,000,000 ids of
each kind; ramps are counted exactly; the SRM test's false-positive rate is measured
over simulated splits.  GrowthBook mode is compared with the ``growthbook`` package's
own functions, and the hash functions with ``mmh3``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mmh3
import numpy as np
import pytest
from growthbook import Experiment as GBExperiment
from growthbook import GrowthBook
from growthbook.core import chooseVariation, gbhash, getBucketRanges, inNamespace
from scipy import stats

import mmfs
from mmfs.experiments import growthbook_hash, murmur3_32, murmur3_128, slots, srm_test

N = 1_000_000
SALTS = ["exp:checkout", "a", "séance-2026/λ"]


def _ids(kind: str, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(20261127)
    if kind == "seq_int":
        return np.arange(n, dtype=np.int64)
    if kind == "rand_int":
        return rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64)
    if kind == "seq_str":
        return np.char.add("user-", np.arange(n).astype(str))
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    return np.array([str(uuid.UUID(bytes=bytes(r))) for r in raw])


def _contingency_p(table: np.ndarray) -> float:
    res: Any = stats.chi2_contingency(table)
    return float(res[1])


@pytest.fixture(scope="module")
def ids() -> Callable[[str], np.ndarray]:
    cache: dict[str, np.ndarray] = {}

    def get(kind: str) -> np.ndarray:
        if kind not in cache:
            cache[kind] = _ids(kind)
        return cache[kind]

    return get


# -- the hash functions themselves ----------------------------------------------------------


def _prefix(salt: str) -> bytes:
    s = salt.encode()
    p = len(s).to_bytes(4, "little") + s
    return p + b"\0" * (-len(p) % 16)


@pytest.mark.parametrize("salt", [None, "", "exp:1", "x" * 33])
def test_murmur_wrappers_match_mmh3_for_every_key_form(salt: str | None) -> None:
    rng = np.random.default_rng(1)
    ints = rng.integers(-(2**63), 2**63 - 1, 2000, dtype=np.int64)
    strs = [f"user-{i}" for i in range(500)] + ["", "é", "日本語", "🙂x", "a" * 40]
    pre = b"" if salt is None else _prefix(salt)
    want_i = [
        mmh3.hash(pre + int(k).to_bytes(8, "little", signed=True), 7, signed=False) for k in ints
    ]
    assert murmur3_32(ints, salt, 7).tolist() == want_i
    assert murmur3_32(ints.tolist(), salt, 7).tolist() == want_i
    want_s = [mmh3.hash(pre + s.encode(), 7, signed=False) for s in strs]
    for form in (strs, np.array(strs), np.array(strs, dtype=object), tuple(strs)):
        assert murmur3_32(form, salt, 7).tolist() == want_s
    want128 = [mmh3.hash64(pre + s.encode(), 7, signed=False) for s in strs]
    assert [tuple(r) for r in murmur3_128(np.array(strs), salt, 7).tolist()] == want128
    assert murmur3_32("user-3", salt, 7).tolist() == [want_s[3]]
    if salt is not None:
        zero = [mmh3.hash(pre + int(k).to_bytes(8, "little", signed=True), 0, signed=False)
                for k in ints[:50]]  # fmt: skip
        assert (
            slots(ints[:50], salt).tolist() == ((np.array(zero, np.uint64) * 10000) >> 32).tolist()
        )


def test_bytes_keys_hash_as_they_are() -> None:
    raw = [b"", b"a", b"\x00\xff\xfe", "日本".encode(), b"x" * 33, bytes(range(40))]
    pre = _prefix("s")
    want = [mmh3.hash(pre + b, 3, signed=False) for b in raw]
    assert murmur3_32(raw, "s", 3).tolist() == want
    assert murmur3_32(np.array(raw, dtype=object), "s", 3).tolist() == want
    assert murmur3_32(raw[3], "s", 3).tolist() == [want[3]]
    fixed = np.array([b"ab", b"abc", b"", b"a\x00b"])  # an S4 array
    assert murmur3_32(fixed, "s", 3).tolist() == [
        mmh3.hash(pre + b, 3, signed=False) for b in fixed.tolist()
    ]
    want128 = [mmh3.hash64(pre + b, 3, signed=False) for b in raw]
    assert [tuple(r) for r in murmur3_128(raw, "s", 3).tolist()] == want128
    with pytest.raises(mmfs.ParameterError, match="mix"):
        murmur3_32([b"a", "b"], "s")
    # a str key and its UTF-8 bytes get the same slot
    strs = [f"user-{i}" for i in range(100)]
    assert np.array_equal(slots(strs, "x"), slots([t.encode() for t in strs], "x"))


def test_salt_encoding_separates_salt_from_key() -> None:
    assert murmur3_32(["c"], "ab")[0] != murmur3_32(["bc"], "a")[0]
    assert murmur3_32(["abc"], "")[0] != murmur3_32(["abc"], None)[0]


def test_hash_arguments_are_checked() -> None:
    with pytest.raises(mmfs.ParameterError, match="seed"):
        murmur3_32([1], None, -1)
    with pytest.raises(mmfs.ParameterError, match="salt"):
        murmur3_32([1], 5)  # type: ignore[arg-type]
    with pytest.raises(mmfs.ParameterError, match="version"):
        growthbook_hash("s", [1], 3)
    with pytest.raises(mmfs.ParameterError, match="seed"):
        growthbook_hash(1, [1])  # type: ignore[arg-type]
    with pytest.raises(mmfs.ParameterError, match="2\\*\\*53"):
        growthbook_hash("s", [2**53 + 1])
    with pytest.raises(mmfs.ParameterError):
        murmur3_32([1.5, 2.5])


@pytest.mark.parametrize("seed", ["checkout", "", "ünï-🙂"])
def test_growthbook_hash_equals_gbhash(seed: str) -> None:
    rng = np.random.default_rng(2)
    ints = np.concatenate([np.arange(3000), rng.integers(-(2**53), 2**53, 3000)])
    strs = [f"user-{i}" for i in range(2000)] + [str(uuid.UUID(int=int(i))) for i in ints[:1000]]
    strs += ["", "ß", "日本", "🙂", "a🙂b", "\u00e9" * 20]
    for version in (1, 2):
        got_i = growthbook_hash(seed, ints, version)
        assert got_i.tolist() == [gbhash(seed, str(int(k)), version) for k in ints]
        got_s = growthbook_hash(seed, np.array(strs), version)
        assert got_s.tolist() == [gbhash(seed, s, version) for s in strs]
        assert growthbook_hash(seed, strs, version).tolist() == got_s.tolist()


def test_bit_exact_on_100000_string_ids_with_non_ascii() -> None:
    i = np.arange(100_000)
    prefixes = np.array(["user-", "用户-", "ü-", "🙂", "ε"])
    ids = np.char.add(prefixes[i % 5], i.astype(str))
    pre = _prefix("exp:unicode")
    want = [mmh3.hash(pre + s.encode(), 0, signed=False) for s in ids.tolist()]
    assert murmur3_32(ids, "exp:unicode").tolist() == want
    assert murmur3_32(ids.tolist(), "exp:unicode").tolist() == want
    assert growthbook_hash("exp-ü", ids).tolist() == [gbhash("exp-ü", s, 2) for s in ids.tolist()]


# -- uniformity and independence ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["seq_int", "rand_int", "seq_str", "uuid"])
@pytest.mark.parametrize("salt", SALTS)
def test_slots_are_uniform(ids: Callable[[str], np.ndarray], kind: str, salt: str) -> None:
    counts = np.bincount(slots(ids(kind), salt), minlength=10_000)
    assert counts.size == 10_000
    assert float(stats.chisquare(counts)[1]) >= 0.001


@pytest.mark.parametrize(
    ("seed_a", "seed_b"),
    [("exp1", "exp2"), ("ab", "abc"), ("abc", "xabc"), ("checkout", "checkout ")],
)
def test_arms_of_experiments_with_close_seeds_are_independent(
    tmp_path: Path, ids: Callable[[str], np.ndarray], seed_a: str, seed_b: str
) -> None:
    with mmfs.open(tmp_path / "s") as store:
        a = store.experiments.create("a", {"x": 25, "y": 25, "z": 50}, seed=seed_a)
        b = store.experiments.create("b", ["p", "q", "r", "s"], seed=seed_b)
        for kind in ("seq_int", "seq_str"):
            keys = ids(kind)
            table = np.zeros((3, 4), dtype=np.int64)
            np.add.at(table, (a.assign(keys), b.assign(keys)), 1)
            assert _contingency_p(table) >= 0.001
            # and each split is the one asked for
            assert srm_test(table.sum(axis=1), [25, 25, 50]).pvalue >= 0.001


def test_layers_are_independent_of_each_other(
    tmp_path: Path, ids: Callable[[str], np.ndarray]
) -> None:
    with mmfs.open(tmp_path / "s") as store:
        cat = store.experiments
        cat.create_layer("ui")
        cat.create_layer("ranking")
        a = cat.create("a", ["c", "t"], layer="ui", coverage=0.5)
        b = cat.create("b", ["c", "t"], layer="ranking", coverage=0.5)
        keys = ids("seq_int")
        table = np.zeros((3, 3), dtype=np.int64)
        np.add.at(table, (a.assign(keys) + 1, b.assign(keys) + 1), 1)
        assert _contingency_p(table) >= 0.001


# -- ramps --------------------------------------------------------------------------------


def test_coverage_ramp_moves_no_assigned_key(
    tmp_path: Path, ids: Callable[[str], np.ndarray]
) -> None:
    keys = ids("seq_str")
    with mmfs.open(tmp_path / "s") as store:
        cat = store.experiments
        before = cat.create("e", {"c": 50, "t": 50}, coverage=0.2).assign(keys)
        assert abs(np.mean(before >= 0) - 0.2) < 0.002
        for cov in (0.35, 0.6, 1.0):
            after = cat.update("e", coverage=cov).assign(keys)
            assert np.array_equal(after[before >= 0], before[before >= 0])  # 0 keys moved
            assert abs(np.mean(after >= 0) - cov) < 0.002
            before = after
        # ramping down drops keys and moves none of the others
        down = cat.update("e", coverage=0.3).assign(keys)
        kept = down >= 0
        assert np.array_equal(down[kept], before[kept])


def test_weight_change_moves_the_total_variation_distance(
    tmp_path: Path, ids: Callable[[str], np.ndarray]
) -> None:
    keys = ids("rand_int")
    with mmfs.open(tmp_path / "s") as store:
        cat = store.experiments
        before = cat.create("e", {"control": 50, "treatment": 50}).assign(keys)
        after = cat.update("e", variants={"control": 40, "treatment": 60}).assign(keys)
        moved = np.mean(before != after)
        assert abs(moved - 0.10) <= 0.005
        assert np.all(before[before != after] == 0)  # only control -> treatment
        # three arms: exactly the total-variation distance in slots
        e = cat.create("f", {"a": 20, "b": 30, "c": 50})
        t0 = e._def.arm_table()
        t1 = cat.update("f", variants={"a": 35, "b": 10, "c": 55})._def.arm_table()
        assert int(np.count_nonzero(t0 != t1)) == 2000  # |30 - 10| = 20% of 10,000 slots
        assert np.bincount(t1, minlength=3).tolist() == [3500, 1000, 5500]


def test_layered_ramp_keeps_assignments_and_exclusion(
    tmp_path: Path, ids: Callable[[str], np.ndarray]
) -> None:
    keys = ids("seq_int")[:200_000]
    with mmfs.open(tmp_path / "s") as store:
        cat = store.experiments
        cat.create_layer("L", holdout=0.1)
        a0 = cat.create("a", ["c", "t"], layer="L", coverage=0.2).assign(keys)
        b0 = cat.create("b", ["c", "t"], layer="L", coverage=0.3).assign(keys)
        a1 = cat.update("a", coverage=0.5).assign(keys)
        b1 = cat.get("b").assign(keys)
        assert np.array_equal(b1, b0)
        assert np.array_equal(a1[a0 >= 0], a0[a0 >= 0])
        assert not np.any((a1 >= 0) & (b1 >= 0))  # mutually exclusive
        layer_slot = slots(keys, cat.get("a")._state.layers["L"].salt)
        held = layer_slot >= 9000
        assert not np.any((a1 >= 0) & held)
        assert not np.any((b1 >= 0) & held)
        assert abs(np.mean(a1 >= 0) - 0.5) < 0.005


# -- the SRM test ---------------------------------------------------------------------------


def test_srm_false_positive_rate_under_the_null() -> None:
    rng = np.random.default_rng(7)
    sims = 20_000
    weights = np.array([50.0, 30.0, 20.0])
    counts = rng.multinomial(10_000, weights / weights.sum(), size=sims)
    flagged = sum(srm_test(c, weights).mismatch for c in counts)
    lo, hi = stats.binom.ppf([0.0005, 0.9995], sims, 0.001)
    assert lo <= flagged <= hi
    # and it has power: a 51/49 split of 200,000 keys is caught
    assert srm_test([102_000, 98_000], [50, 50]).mismatch


def test_srm_equals_scipy_and_checks_arguments() -> None:
    r = srm_test([480, 520, 1000], [1, 1, 2])
    ref = stats.chisquare([480, 520, 1000], [500, 500, 1000])
    assert r.statistic == pytest.approx(ref.statistic)
    assert r.pvalue == pytest.approx(ref.pvalue)
    assert r.df == 2
    assert not r.mismatch
    assert srm_test([10, 1], [100, 0]).mismatch  # traffic in an arm of weight 0
    assert srm_test([0, 0], [50, 50]).pvalue == 1.0
    for counts, weights in [([1], [1]), ([1, 2], [1]), ([-1, 2], [1, 1]), ([1.5, 2], [1, 1])]:
        with pytest.raises(mmfs.ParameterError):
            srm_test(counts, weights)
    with pytest.raises(mmfs.ParameterError):
        srm_test([1, 2], [0, 0])
    with pytest.raises(mmfs.ParameterError):
        srm_test([1, 2], [1, 1], alpha=2)


# -- GrowthBook mode --------------------------------------------------------------------------


def test_growthbook_mode_equals_the_growthbook_sdk(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ints = rng.integers(0, 2**40, 100_000)
    strs = np.array([f"user-{i}" for i in range(50_000)] + ["日本-🙂", "é"])
    with mmfs.open(tmp_path / "s") as store:
        cat = store.experiments
        e = cat.create(
            "gb-exp", {"a": 33.33, "b": 33.33, "c": 33.34}, hashing="growthbook", coverage=0.8,
            namespace=("pricing", 0.2, 0.7),
        )  # fmt: skip
        weights = [0.3333, 0.3333, 0.3334]
        ranges = getBucketRanges(3, 0.8, weights)
        for keys in (ints, strs):
            got = e.assign(keys)
            want = []
            for k in keys.tolist():
                v = str(k)
                n = gbhash("gb-exp", v, 2)
                assert n is not None
                arm = chooseVariation(n, ranges) if inNamespace(v, ("pricing", 0.2, 0.7)) else -1
                want.append(arm)
            assert got.tolist() == want
        # end to end through the SDK's own experiment runner, for a sample
        sdk = GBExperiment(
            key="gb-exp", variations=[0, 1, 2], weights=weights, coverage=0.8,
            namespace=("pricing", 0.2, 0.7), hashVersion=2,
        )  # fmt: skip
        for k, arm in zip(strs[:400].tolist(), e.assign(strs[:400]).tolist(), strict=True):
            res = GrowthBook(attributes={"id": k}).run(sdk)
            assert (res.variationId if res.inExperiment else -1) == arm


def test_growthbook_restart_needs_a_new_seed(tmp_path: Path) -> None:
    with mmfs.open(tmp_path / "s") as store:
        cat = store.experiments
        cat.create("g", ["a", "b"], hashing="growthbook")
        with pytest.raises(mmfs.errors.ExperimentError, match="new seed"):
            cat.restart("g")
        e = cat.restart("g", seed="g-2")
        assert e.phase == 1
        assert e.seed == "g-2"
        keys = np.arange(1000)
        ranges = getBucketRanges(2, 1, [0.5, 0.5])
        want = [chooseVariation(gbhash("g-2", str(k), 2) or 0.0, ranges) for k in keys]
        assert e.assign(keys).tolist() == want
