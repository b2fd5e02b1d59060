"""mmfs.score and mmfs.Scorer: batch scoring in worker processes.

References: every expected result is computed in plain Python from the values the test
wrote (a dict of key -> values, or the list of written facts with their versions and
event times), never through mmfs; the correctness grid also compares with the in-process
``fn(group.get(keys, features))``.  The scoring functions live in ``scoring_fns`` so that
the worker processes can unpickle them.

Cost: the forkserver is told to preload mmfs (see ``_preload_mmfs``), so a pool's workers
fork from a process that has already imported it and a pool starts in a fraction of a
second instead of the ~1.5 s an import of numpy + scipy + mmfs takes per worker.  Every
test that could hang on a worker runs under a hang guard (``_hang_guard``) that ends the
test process with a traceback rather than hanging the run.
"""

from __future__ import annotations

import faulthandler
import functools
import math
import multiprocessing as mp
import pickle
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scoring_fns as F

import mmfs
from mmfs import scoring
from mmfs.errors import (
    MmfsError,
    NotFoundError,
    ParameterError,
    ReadOnlyError,
    ScoringError,
    StoreClosedError,
    WorkerDiedError,
)

HANG_S = 300  # generous: a test still running after this long is hung
T0 = np.datetime64("2026-01-01T00:00:00", "ns")
HOUR = np.timedelta64(3600 * 10**9, "ns")
N_INT = 1500  # keys of group "g": 1, 4, 7, ..., 3 * N_INT - 2
N_STR = 800  # keys of group "s": "u0000" .. "u0799"
BIG = 100_000  # a batch size larger than any key set here

Truth = dict[Any, tuple[float, tuple[float, float, float]]]


@pytest.fixture(scope="module", autouse=True)
def _preload_mmfs() -> None:
    """Workers fork from a forkserver that has imported mmfs (no effect if another test
    module started the forkserver first: pools are then only slower).  The forkserver
    runs no OpenMP region, so forking it stays safe."""
    mp.set_forkserver_preload(["__main__", "mmfs"])


@pytest.fixture(autouse=True)
def _hang_guard() -> Iterator[None]:
    """A test that hangs (a worker nobody notices died, a timeout that never fires)
    ends the run with every thread's traceback instead of blocking it forever."""
    faulthandler.dump_traceback_later(HANG_S, exit=True, file=sys.__stderr__ or sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


# --------------------------------------------------------------------------------------
# The store of the correctness tests: an int64-keyed and a str-keyed group, one commit
# --------------------------------------------------------------------------------------


def _e(i: int) -> tuple[float, float, float]:
    return (float(i % 97), (i % 89) * 0.5, -float(i % 13))  # exact in float32


INT_KEYS = np.arange(N_INT, dtype=np.int64) * 3 + 1
INT_TRUTH: Truth = {int(k): (int(k) * 0.25, _e(int(k))) for k in INT_KEYS}
STR_KEYS = [f"u{i:04d}" for i in range(N_STR)]
STR_TRUTH: Truth = {k: (i * 0.5, _e(i * 7 + 3)) for i, k in enumerate(STR_KEYS)}
TRUTH = {"g": INT_TRUTH, "s": STR_TRUTH}


def _write(group: mmfs.FeatureGroup, truth: Truth) -> None:
    keys = list(truth)
    group.write(
        np.asarray(keys, dtype=np.int64) if isinstance(keys[0], int) else keys,
        {
            "x": np.array([truth[k][0] for k in keys]),
            "e": np.array([truth[k][1] for k in keys], dtype=np.float32),
            "c": [f"c{i % 5}" for i in range(len(keys))],
        },
    )


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("scoring") / "store")
    schema = {"x": mmfs.scalar("float64"), "e": mmfs.dense(3), "c": mmfs.category()}
    with mmfs.open(path) as store:
        _write(store.create_group("g", schema=schema), INT_TRUTH)
        _write(store.create_group("s", key_type="str", schema=schema), STR_TRUTH)
        store.commit("the data")
    return path


@pytest.fixture(scope="module")
def reader(store_path: str) -> Iterator[mmfs.Store]:
    with mmfs.open(store_path, mode="r") as store:
        yield store


def _rng() -> np.random.Generator:
    return np.random.default_rng(20260101)


def _int_key_sets() -> dict[str, Any]:
    rng = _rng()
    missing = np.array([0, 2, 3, -5, 3 * N_INT + 1, 10**12, -(2**63), 2**63 - 1], dtype=np.int64)
    dup = rng.choice(INT_KEYS, 300)
    mixed = rng.permutation(np.concatenate([INT_KEYS, missing, dup, missing[:3]]))
    return {
        "mixed": mixed,
        "list": [int(k) for k in mixed[:25]],
        "one": int(INT_KEYS[5]),
        "missing-only": missing,
        "empty": np.array([], dtype=np.int64),
        "empty-list": [],
    }


def _str_key_sets() -> dict[str, Any]:
    rng = _rng()
    missing = ["", "nope", "u9999", "U0001", "u0001 ", "ü-ß"]
    dup = [STR_KEYS[i] for i in rng.integers(0, N_STR, 200)]
    pool = STR_KEYS + missing + dup + missing[:2]
    mixed = [pool[i] for i in rng.permutation(len(pool))]
    return {
        "mixed": mixed,
        "object-array": np.array(mixed, dtype=object),
        "unicode-array": np.array(mixed[:40]),
        "one": STR_KEYS[3],
        "empty": [],
    }


KEY_SETS = {"g": _int_key_sets(), "s": _str_key_sets()}


def _as_list(keys: Any) -> list[Any]:
    if isinstance(keys, int | str):
        return [keys]
    return [k.item() if isinstance(k, np.generic) else k for k in keys]


def expect_sum(truth: Truth, keys: Any) -> np.ndarray:
    """fn_sum's result, from the written values."""
    out = []
    for k in _as_list(keys):
        if k in truth:
            x, e = truth[k]
            out.append(x + (e[0] + e[1] + e[2]))
        else:
            out.append(math.nan)
    return np.array(out, dtype=np.float64)


def expect_matrix(truth: Truth, keys: Any, scale: float, n_features: int) -> np.ndarray:
    """Matrix(scale)'s result, from the written values."""
    rows = []
    for k in _as_list(keys):
        if k in truth:
            x, e = truth[k]
            rows.append([scale * x, *e, 1.0, float(n_features)])
        else:
            rows.append([math.nan] * 4 + [0.0, float(n_features)])
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def expect_x(keys: Any) -> np.ndarray:
    """fn_x's result on group "g", from the written values."""
    return np.array([INT_TRUTH[k][0] if k in INT_TRUTH else math.nan for k in _as_list(keys)])


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.array_equal(got, want, equal_nan=True), (got, want)


# --------------------------------------------------------------------------------------
# 1, 2: results equal the reference for every workers / batch_size / key set
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    group: str
    fn: str  # "sum": fn_sum on features ("e", "x"); "matrix": Matrix(2.0), all features
    workers: int
    batch_size: int | None

    @property
    def id(self) -> str:
        return f"{self.group}-{self.fn}-w{self.workers}-b{self.batch_size}"


CASES = [
    Case(g, fn, w, b)
    for g, fn, w, b in [
        ("g", "sum", 0, None),
        ("g", "sum", 1, 1),
        ("g", "sum", 1, 7),
        ("g", "sum", 1, BIG),
        ("g", "sum", 3, None),
        ("g", "sum", 3, 7),
        ("g", "matrix", 0, 7),
        ("g", "matrix", 1, None),
        ("g", "matrix", 3, 7),
        ("s", "sum", 0, None),
        ("s", "sum", 1, None),
        ("s", "sum", 3, 7),
        ("s", "matrix", 3, 1),
    ]
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_reference(case: Case, store_path: str, reader: mmfs.Store) -> None:
    if case.fn == "sum":
        fn: Any = F.fn_sum
        features: Any = ("e", "x")
    else:
        fn, features = F.Matrix(2.0), None
    truth = TRUTH[case.group]
    with mmfs.Scorer(
        store_path, case.group, fn, features, workers=case.workers, batch_size=case.batch_size
    ) as scorer:
        for name, keys in KEY_SETS[case.group].items():
            if case.batch_size == 1 and name == "mixed":
                keys = keys[:60]  # one task per key: keep the set small
            got = scorer.score(keys)
            want = (
                expect_sum(truth, keys)
                if case.fn == "sum"
                else expect_matrix(truth, keys, 2.0, n_features=3)
            )
            assert_same(got, want)
            assert_same(got, np.asarray(fn(reader[case.group].get(keys, features))))


def test_score_function_matches_reference(store_path: str, reader: mmfs.Store) -> None:
    """mmfs.score (a Scorer used once), given a Store object and a FeatureGroup."""
    keys = KEY_SETS["g"]["mixed"]
    want = expect_sum(INT_TRUTH, keys)
    assert_same(mmfs.score(store_path, "g", keys, F.fn_sum, ["x", "e"], workers=2), want)
    assert_same(mmfs.score(reader, reader["g"], keys, F.fn_sum, workers=3, batch_size=100), want)
    # a one-feature selection given as a str
    assert_same(
        mmfs.score(store_path, "g", keys, F.fn_x, "x", workers=0),
        np.array([INT_TRUTH[k][0] if k in INT_TRUTH else math.nan for k in _as_list(keys)]),
    )


def test_results_independent_of_workers_batches_and_threads(store_path: str) -> None:
    """The same bytes whatever workers, batch_size and n_threads are; batches of 20,000
    keys are above the size from which a read runs on several threads."""
    rng = _rng()
    keys = rng.permutation(
        np.concatenate([rng.choice(INT_KEYS, 19_000), rng.integers(-100, 5000, 1000)])
    )
    want = expect_matrix(INT_TRUTH, keys, 0.5, n_features=2)
    results = {}
    for workers, batch_size, n_threads in [
        (0, None, 1),
        (0, None, 2),
        (1, BIG, 1),
        (1, BIG, 2),
        (3, 997, 1),
        (3, None, 2),
    ]:
        results[(workers, batch_size, n_threads)] = got = mmfs.score(
            store_path, "g", keys, F.Matrix(0.5), ["e", "x"], workers=workers,
            batch_size=batch_size, n_threads=n_threads,
        )  # fmt: skip
        assert_same(got, want)
    first = results[(1, BIG, 1)]
    for got in results.values():
        assert got.tobytes() == first.tobytes()


def test_scorer_reused_across_calls(store_path: str) -> None:
    """One pool scores many key sets; each call's result is its own keys' only."""
    sets = list(KEY_SETS["g"].values())
    with mmfs.Scorer(store_path, "g", F.fn_sum, workers=2, batch_size=64) as scorer:
        for keys in sets + sets[::-1]:
            assert_same(scorer.score(keys), expect_sum(INT_TRUTH, keys))
        # keys from an iterator (listed first) and from a tuple
        keys = KEY_SETS["g"]["list"]
        assert_same(scorer.score(iter(keys)), expect_sum(INT_TRUTH, keys))
        assert_same(scorer.score(tuple(keys)), expect_sum(INT_TRUTH, keys))
        text = repr(scorer)
        assert store_path in text
        assert "group='g'" in text
        assert "workers=2" in text
        assert f"version={scorer.version}" in text


# --------------------------------------------------------------------------------------
# 3: the version every batch reads
# --------------------------------------------------------------------------------------


@dataclass
class Fact:
    version: int
    key: int
    time: np.datetime64
    x: float


class History:
    """A store whose group "g" (feature x) gets three commits:

    1. keys 0..199, x = key + 0.5 at T0 (tagged "first");
    2. the same keys, x = key + 1000.5 at T0 + 10 h;
    3. late facts for keys 0..9 (x = key + 5000.5 at T0 + 5 h, older than commit 2's)
       and new keys 200..209 (x = key + 7000.5 at T0 + 20 h) (tagged "third").

    ``expect`` finds the value a read of version v as of t must return: among the facts
    committed by v with an event time <= t, the one with the greatest time (a tie: the
    later write)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.writer = mmfs.open(self.path)
        self.writer.create_group("g", schema={"x": mmfs.scalar("float64")})
        self.facts: list[Fact] = []
        self.versions: list[int] = []

    def commit(self) -> int:
        step = len(self.versions) + 1
        if step == 1:
            self._write(np.arange(200), 0.5, T0, step)
        elif step == 2:
            self._write(np.arange(200), 1000.5, T0 + 10 * HOUR, step)
        else:
            self._write(np.arange(10), 5000.5, T0 + 5 * HOUR, step)
            self._write(np.arange(200, 210), 7000.5, T0 + 20 * HOUR, step)
        tags = {1: "first", 3: "third"}.get(step)
        v = self.writer.commit(f"step {step}", tags=tags)
        self.versions.append(v)
        return v

    def _write(self, keys: np.ndarray, plus: float, t: np.datetime64, step: int) -> None:
        x = keys + plus
        self.writer["g"].write(keys, {"x": x}, event_time=t)
        self.facts += [Fact(step, int(k), t, float(v)) for k, v in zip(keys, x, strict=True)]

    def expect(self, keys: Any, version: int, as_of: Any = None) -> np.ndarray:
        step = self.versions.index(version) + 1
        keys = _as_list(keys)
        times = [as_of] * len(keys) if as_of is None or np.ndim(as_of) == 0 else list(as_of)
        by_key: dict[int, list[Fact]] = {}
        for f in self.facts:  # in write order
            if f.version <= step:
                by_key.setdefault(f.key, []).append(f)
        out = []
        for k, t in zip(keys, times, strict=True):
            best = None
            for f in by_key.get(k, []):  # ">=": a later write wins a tie
                if (t is None or f.time <= t) and (best is None or f.time >= best.time):
                    best = f
            out.append(math.nan if best is None else best.x)
        return np.array(out, dtype=np.float64)


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    h = History(tmp_path / "history")
    yield h
    h.writer.close()


def _history_keys() -> np.ndarray:
    rng = _rng()
    return rng.permutation(
        np.concatenate([np.arange(212), [-1, 999, 5, 205, 205], rng.integers(0, 210, 40)])
    ).astype(np.int64)


def _times(n: int) -> np.ndarray:
    rng = _rng()
    choices = np.array(
        [T0 - HOUR, T0, T0 + 6 * HOUR, T0 + 10 * HOUR, T0 + 11 * HOUR, T0 + 21 * HOUR]
    )
    return choices[rng.integers(0, choices.shape[0], n)]


def test_scorer_keeps_its_version_across_commits(history: History) -> None:
    keys = _history_keys()
    v1 = history.commit()
    with mmfs.Scorer(history.path, "g", F.fn_x, workers=2, batch_size=16) as scorer:
        assert scorer.version == v1
        v2 = history.commit()  # before the workers start: they must still read v1
        assert_same(scorer.score(keys), history.expect(keys, v1))
        history.commit()  # while the workers run
        assert_same(scorer.score(keys), history.expect(keys, v1))
        times = _times(keys.shape[0])
        assert_same(scorer.score(keys, as_of=times), history.expect(keys, v1, times))
        assert scorer.version == v1
    v3 = history.versions[-1]
    assert (v1, v2) == tuple(history.versions[:2])
    assert_same(mmfs.score(history.path, "g", keys, F.fn_x, workers=1), history.expect(keys, v3))
    assert_same(mmfs.score(history.writer, "g", keys, F.fn_x, workers=0), history.expect(keys, v3))


def test_explicit_versions(history: History) -> None:
    keys = _history_keys()
    v1, v2, v3 = history.commit(), history.commit(), history.commit()
    w = history.writer
    with mmfs.Scorer(history.path, "g", F.fn_x, version="first", workers=2, batch_size=50) as s:
        assert s.version == v1
        assert_same(s.score(keys), history.expect(keys, v1))
    # in the workers the version is an id whichever way it was given, so tags are
    # resolved in-process here only
    assert_same(
        mmfs.score(history.path, "g", keys, F.fn_x, version=v2, workers=1),
        history.expect(keys, v2),
    )
    assert_same(
        mmfs.score(w, "g", keys, F.fn_x, version="third", workers=0),
        history.expect(keys, v3),
    )
    # a FeatureGroup bound to a version brings its version
    assert_same(
        mmfs.score(w, w.group("g", version=v2), keys, F.fn_x, workers=1, batch_size=33),
        history.expect(keys, v2),
    )
    assert_same(
        mmfs.score(history.path, w.group("g", version="first"), keys, F.fn_x, workers=0),
        history.expect(keys, v1),
    )
    # an unbound FeatureGroup reads the newest version
    assert_same(mmfs.score(w, w["g"], keys, F.fn_x, workers=0), history.expect(keys, v3))


def test_as_of(history: History) -> None:
    keys = _history_keys()
    v1, v2, v3 = history.commit(), history.commit(), history.commit()
    times = _times(keys.shape[0])
    for version in (v1, v2, v3):
        for workers, batch_size in ((0, None), (2, 16)):
            with mmfs.Scorer(
                history.path, "g", F.fn_x, version=version, workers=workers,
                batch_size=batch_size,
            ) as scorer:  # fmt: skip
                for as_of in (T0 + 6 * HOUR, T0 - HOUR, times, list(times)):
                    got = scorer.score(keys, as_of=as_of)
                    assert_same(got, history.expect(keys, version, as_of))
    # through mmfs.score
    got = mmfs.score(history.path, "g", keys, F.fn_x, as_of=times, workers=2, batch_size=9)
    assert_same(got, history.expect(keys, v3, times))
    # the late facts of commit 3 are what version 3 knew as of T0 + 6 h, not version 2
    five = history.expect([5], v3, T0 + 6 * HOUR)
    assert five[0] == 5005.5
    assert history.expect([5], v2, T0 + 6 * HOUR)[0] == 5.5
    # per-key times of the wrong length
    with mmfs.Scorer(history.path, "g", F.fn_x, workers=1) as s, pytest.raises(ParameterError):
        s.score(keys, as_of=times[:-1])


# --------------------------------------------------------------------------------------
# 4, 5, 6: fn raising, wrong shapes, dying workers, timeouts
# --------------------------------------------------------------------------------------


def _poisoned(poison: int, at: int = 35, n: int = 50) -> np.ndarray:
    keys = INT_KEYS[:n].copy()
    keys[at] = poison
    return keys


def test_fn_raising_in_a_worker(store_path: str) -> None:
    good = INT_KEYS[:50]
    with mmfs.Scorer(store_path, "g", F.fn_trouble, workers=2, batch_size=10) as scorer:
        with pytest.raises(ScoringError) as info:
            scorer.score(_poisoned(F.RAISE_KEY))  # key 35: batch 3
        err = info.value
        assert isinstance(err, RuntimeError)
        assert isinstance(err, MmfsError)
        assert not isinstance(err, WorkerDiedError)
        msg = str(err)
        assert re.search(r"\bbatch 3\b", msg), msg
        assert "10 keys" in msg
        assert "Traceback" in msg
        assert "fn_trouble" in msg  # the failing function's frame
        assert "ValueError: poisoned batch of 10 keys" in msg
        # the same Scorer scores again
        assert_same(scorer.score(good), expect_x(good))


@pytest.mark.parametrize("workers", [0, 1])
def test_fn_returning_wrong_rows(store_path: str, workers: int) -> None:
    good = INT_KEYS[:50]
    with mmfs.Scorer(store_path, "g", F.fn_trouble, workers=workers, batch_size=10) as scorer:
        n = 10 if workers else 50  # workers=0 runs the whole call as one batch
        with pytest.raises(ScoringError, match=rf"one result per key \({n}\).*\({n + 1}, 2\)"):
            scorer.score(_poisoned(F.WRONG_ROWS_KEY))
        with pytest.raises(ScoringError, match=r"shape \(\)"):
            scorer.score(_poisoned(F.SCALAR_KEY, at=0))
        assert_same(scorer.score(good), expect_x(good))


def test_worker_death(store_path: str) -> None:
    """A worker that ends itself (os._exit, SIGKILL) is a WorkerDiedError at once (timeout
    = 60 s would turn a hang into a plain ScoringError, failing the test); the Scorer
    then starts a new pool."""
    good = INT_KEYS[:50]
    with mmfs.Scorer(store_path, "g", F.fn_trouble, workers=2, batch_size=10, timeout=60) as scorer:
        for poison in (F.EXIT_KEY, F.KILL_KEY):
            start = time.monotonic()
            with pytest.raises(WorkerDiedError, match="died") as info:
                scorer.score(_poisoned(poison))
            assert isinstance(info.value, ScoringError)
            assert time.monotonic() - start < 50  # hang guard, not a timing test
        assert_same(scorer.score(good), expect_x(good))
        assert_same(scorer.score(good[::-1]), expect_x(good[::-1]))


def test_fn_calling_sys_exit_in_a_worker(store_path: str) -> None:
    """fn raising SystemExit (sys.exit) in a worker must not end the caller: the module
    says a batch whose fn raises is a ScoringError in the caller."""
    good = INT_KEYS[:50]
    with mmfs.Scorer(store_path, "g", F.fn_trouble, workers=1, batch_size=10, timeout=60) as s:
        try:
            s.score(_poisoned(F.SYS_EXIT_KEY))
        except ScoringError:
            pass
        except SystemExit as exc:
            pytest.fail(f"the worker's SystemExit({exc.code}) reached the caller")
        else:
            pytest.fail("no error")
        assert_same(s.score(good), expect_x(good))


def test_timeout(store_path: str) -> None:
    keys = _poisoned(F.SLEEP_KEY, at=3)
    with mmfs.Scorer(store_path, "g", F.fn_sleep, workers=2, batch_size=10, timeout=2) as s:
        start = time.monotonic()
        with pytest.raises(ScoringError, match="timed out") as info:
            s.score(keys)
        assert time.monotonic() - start < 20  # fn sleeps 30 s: the workers were stopped
        assert not isinstance(info.value, WorkerDiedError)


# --------------------------------------------------------------------------------------
# 7: argument errors, raised before any worker starts
# --------------------------------------------------------------------------------------


def _closure() -> Any:
    scale = 2.0

    def fn(batch: Any) -> np.ndarray:
        return scale * np.asarray(batch["x"], dtype=np.float64)

    return fn


BAD_ARGUMENTS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("lambda", {"fn": lambda b: b["x"], "workers": 1}, ParameterError, "picklable"),
    ("closure", {"fn": _closure(), "workers": 2}, ParameterError, "picklable"),
    ("fork", {"start_method": "fork", "workers": 1}, ParameterError, "OpenMP"),
    ("bogus-method", {"start_method": "bogus", "workers": 1}, ParameterError, "bogus"),
    ("workers-negative", {"workers": -1}, ParameterError, "workers"),
    ("workers-bool", {"workers": True}, ParameterError, "workers"),
    ("workers-float", {"workers": 1.5}, ParameterError, "workers"),
    ("workers-str", {"workers": "2"}, ParameterError, "workers"),
    ("batch-zero", {"batch_size": 0}, ParameterError, "batch_size"),
    ("batch-negative", {"batch_size": -3}, ParameterError, "batch_size"),
    ("batch-bool", {"batch_size": True}, ParameterError, "batch_size"),
    ("batch-float", {"batch_size": 2.5}, ParameterError, "batch_size"),
    ("timeout-zero", {"timeout": 0}, ParameterError, "timeout"),
    ("timeout-negative", {"timeout": -1}, ParameterError, "timeout"),
    ("timeout-bool", {"timeout": True}, ParameterError, "timeout"),
    ("timeout-str", {"timeout": "5"}, ParameterError, "timeout"),
    ("fn-int", {"fn": 42}, ParameterError, "callable"),
    ("fn-none", {"fn": None}, ParameterError, "callable"),
    ("feature-unknown", {"features": ["x", "nope"]}, ParameterError, "nope"),
    ("feature-twice", {"features": ["x", "x"]}, ParameterError, "twice"),
    ("group-unknown", {"group": "nope"}, NotFoundError, "nope"),
    ("group-int", {"group": 5}, ParameterError, "group"),
    ("version-unknown", {"version": 999}, NotFoundError, "999"),
    ("tag-unknown", {"version": "no-such-tag"}, NotFoundError, "no-such-tag"),
    ("version-float", {"version": 1.5}, ParameterError, "version"),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [pytest.param(kw, err, text, id=name) for name, kw, err, text in BAD_ARGUMENTS],
)
@pytest.mark.parametrize("api", ["Scorer", "score"])
def test_bad_arguments(
    store_path: str, api: str, kwargs: dict[str, Any], error: type[Exception], text: str
) -> None:
    args: dict[str, Any] = {"group": "g", "fn": F.fn_x, "workers": 2, **kwargs}
    before = set(mp.active_children())
    call = mmfs.Scorer if api == "Scorer" else functools.partial(mmfs.score, keys=INT_KEYS[:5])
    with pytest.raises(error, match=re.escape(text)):
        call(store_path, **args)
    assert set(mp.active_children()) <= before  # no worker was started


def test_in_process_accepts_a_lambda(store_path: str) -> None:
    keys = KEY_SETS["g"]["mixed"]
    got = mmfs.score(store_path, "g", keys, lambda b: np.asarray(b["x"]) * 2, workers=0)
    assert_same(got, 2 * expect_x(keys))
    got = mmfs.score(store_path, "g", keys, _closure(), workers=0, batch_size=3)
    assert_same(got, 2 * expect_x(keys))
    # start_method matters only to worker processes
    assert_same(
        mmfs.score(store_path, "g", keys, F.fn_x, workers=0, start_method="fork"),
        expect_x(keys),
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_keys_must_be_one_dimensional(store_path: str, workers: int) -> None:
    before = set(mp.active_children())
    with mmfs.Scorer(store_path, "g", F.fn_x, workers=workers) as scorer:
        with pytest.raises(ParameterError, match="one-dimensional"):
            scorer.score(INT_KEYS[:6].reshape(2, 3))
        assert set(mp.active_children()) <= before
        # a 0-d array is one key
        assert_same(scorer.score(np.array(INT_KEYS[4])), expect_x(INT_KEYS[4:5]))


@pytest.mark.parametrize("workers", [0, 1])
def test_score_after_close_raises(store_path: str, workers: int) -> None:
    """close() stops the workers and closes the store: a later score() is a use after
    close (StoreClosedError), with workers as without them."""
    scorer = mmfs.Scorer(store_path, "g", F.fn_x, workers=workers)
    keys = INT_KEYS[:20]
    assert_same(scorer.score(keys), expect_x(keys))
    scorer.close()
    try:
        with pytest.raises(StoreClosedError):
            scorer.score(keys)
    finally:
        scorer.close()  # stops a pool the call may have started


# --------------------------------------------------------------------------------------
# Start methods
# --------------------------------------------------------------------------------------


def test_start_methods(store_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = KEY_SETS["g"]["mixed"]
    with mmfs.Scorer(store_path, "g", F.fn_sum, workers=1) as scorer:
        assert scorer._context.get_start_method() == "forkserver"
    got = mmfs.score(store_path, "g", keys, F.fn_sum, workers=2, start_method="forkserver")
    assert_same(got, expect_sum(INT_TRUTH, keys))
    # where there is no forkserver, spawn (never fork)
    monkeypatch.setattr(mp, "get_all_start_methods", lambda: ["fork", "spawn"])
    with mmfs.Scorer(store_path, "g", F.fn_sum, workers=1, batch_size=500) as scorer:
        assert scorer._context.get_start_method() == "spawn"
        assert_same(scorer.score(keys), expect_sum(INT_TRUTH, keys))
    with pytest.raises(ParameterError, match="forkserver"):
        mmfs.Scorer(store_path, "g", F.fn_sum, workers=1, start_method="forkserver")


# --------------------------------------------------------------------------------------
# The worker side, run in this process (coverage does not see the worker processes)
# --------------------------------------------------------------------------------------


def test_worker_functions_in_process(
    store_path: str, reader: mmfs.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scoring, "_WORKER", {})
    options = {"features": ("x", "e"), "n_threads": 1}
    scoring._start_worker(store_path, "g", reader.generation, F.fn_trouble, options)
    try:
        keys = INT_KEYS[10:17]
        assert_same(scoring._score_batch(0, keys, None), expect_x(keys))
        past = np.full(keys.shape[0], np.datetime64("2000-01-01", "ns"))
        assert np.isnan(scoring._score_batch(0, keys, past)).all()  # written since
        future = np.full(keys.shape[0], np.datetime64("2200-01-01", "ns"))
        assert_same(scoring._score_batch(0, keys, future), expect_x(keys))
        with pytest.raises(ScoringError) as info:
            scoring._score_batch(4, np.array([7, F.RAISE_KEY]), None)
        msg = str(info.value)
        assert "batch 4 (2 keys, first" in msg
        assert "7" in msg.split("first", 1)[1].split(")", 1)[0]
        assert "ValueError: poisoned batch of 2 keys" in msg
        assert scoring._first([]) is None
    finally:
        scoring._WORKER["group"]._store.close()


# --------------------------------------------------------------------------------------
# 8: stores and groups pickle as (path, name, version), reopened read-only
# --------------------------------------------------------------------------------------


def test_pickle_store_and_groups(history: History) -> None:
    keys = _history_keys()
    v1 = history.commit()
    w = history.writer
    store = pickle.loads(pickle.dumps(w))
    g_new = pickle.loads(pickle.dumps(w["g"]))
    g_v1 = pickle.loads(pickle.dumps(w.group("g", version=v1)))
    g_tag = pickle.loads(pickle.dumps(w.group("g", version="first")))
    try:
        assert isinstance(store, mmfs.Store)
        assert store.path == w.path
        assert store.mode == "r"
        assert store.generation == v1
        assert_same(np.asarray(store["g"].get(keys)["x"]), history.expect(keys, v1))
        with pytest.raises(ReadOnlyError):
            store["g"].write([1], {"x": [1.0]})
        for g in (g_new, g_v1, g_tag):
            assert isinstance(g, mmfs.FeatureGroup)
            assert g.name == "g"
            assert_same(np.asarray(g.get(keys)["x"]), history.expect(keys, v1))
        v2 = history.commit()
        v3 = history.commit()
        assert store.generation == v3  # a read-only store sees later commits
        assert_same(np.asarray(store["g"].get(keys)["x"]), history.expect(keys, v3))
        assert_same(np.asarray(g_new.get(keys)["x"]), history.expect(keys, v3))
        assert_same(np.asarray(g_v1.get(keys)["x"]), history.expect(keys, v1))
        assert_same(np.asarray(g_tag.get(keys)["x"]), history.expect(keys, v1))
        # a pinned group pickled again keeps its version, and scoring with it reads it
        g_v2 = pickle.loads(pickle.dumps(store.group("g", version=v2)))
        assert_same(np.asarray(g_v2.get(keys)["x"]), history.expect(keys, v2))
        got = mmfs.score(history.path, g_v2, keys, F.fn_x, workers=1)
        assert_same(got, history.expect(keys, v2))
    finally:
        for s in (store, g_new._store, g_v1._store, g_tag._store):
            s.close()


@pytest.mark.parametrize(
    ("pid", "preload", "after"),
    [
        (None, ["__main__"], ["__main__", "mmfs"]),  # not started, untouched: preload mmfs
        (1234, ["__main__"], ["__main__"]),  # already running: too late, leave it
        (None, ["__main__", "mine"], ["__main__", "mine"]),  # the user's list: keep it
    ],
)
def test_forkserver_preloads_mmfs_only_when_it_is_ours_to_set(
    monkeypatch: pytest.MonkeyPatch, pid: int | None, preload: list[str], after: list[str]
) -> None:
    from multiprocessing import forkserver

    server = forkserver.ForkServer()
    server._forkserver_pid = pid  # pyright: ignore[reportAttributeAccessIssue]
    server._preload_modules = list(preload)  # pyright: ignore[reportAttributeAccessIssue]
    monkeypatch.setattr(forkserver, "_forkserver", server)
    monkeypatch.setattr(forkserver, "set_forkserver_preload", server.set_forkserver_preload)
    scoring._context("forkserver")
    assert server._preload_modules == after  # pyright: ignore[reportAttributeAccessIssue]
