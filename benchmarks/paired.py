"""Paired rounds, shared by test_bench_transforms.py and test_bench_experiments.py.

* :func:`call_rounds`: a round of one-key calls over fresh keys (their one-key tests);
* :class:`PairedRounds`: the paired design of test_bench_transforms.py (a transformed get
  against the raw get) and test_bench_experiments.py (an experiment get against the plain
  get): seeded pools of fresh key sets, each timed round of the measured read preceded by
  a round of its baseline read on a set of a second pool, outside the timed call, the
  per-round ratios and differences (:class:`Paired`), and the text of those figures.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from conftest import Entry, Harness, Sizes
from figures import Figure, timed_rounds
from groups import cycler
from targets import fmt_seconds


def call_rounds(
    call: Callable[..., Any], keys: list[Any], calls: int, *args: Any, **kw: Any
) -> Callable[[], None]:
    """A round of ``calls`` one-key calls ``call(k, *args, **kw)``, each with the next key
    of ``keys`` (cycled: each round goes on where the last stopped)."""
    nxt = itertools.cycle(keys).__next__

    def round_() -> None:
        for _ in range(calls):
            call(nxt(), *args, **kw)

    return round_


def seconds_of(h: Harness, group: str, impl: str) -> float | None:
    """The seconds ``impl`` recorded in ``group`` of the Harness table (None: not run)."""
    e = h.entries.get(group, {}).get(impl)
    return None if e is None else e.seconds


def pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


@dataclass(frozen=True)
class Paired:
    ratio: float  # median over rounds of (round time / the baseline call just before it)
    min_ratio: float  # min round / min baseline call
    base: float  # median baseline call (per call)
    diff: float  # median over rounds of (round time - the baseline call before it), per call
    rounds: int


# The seeds of the two pools: "main" (the timed reads, every implementation of a group),
# "pair" (the baseline reads timed before each round); "one": the one-key tests' order
POOL_SEEDS = {"main": 2_000, "pair": 3_000, "one": 4_000}
ONE_THREAD = "|n_threads=1"  # appended to a group: the paired key of its n_threads=1 reads


class PairedRounds:
    """One benchmark file's paired rounds.

    ``measured`` and ``base`` name the timed read and its baseline in the figures' text
    ("transformed" and "raw"; "experiment" and "plain"), ``base`` also the baseline's
    seconds in the benchmark's extra_info (``<base>_s``).  ``shape(sizes)`` gives the pools'
    (keys in the group, keys per set, timed rounds): each pool holds rounds + 2 position
    sets (the check's set, the warm-up round's, one per timed round), drawn without
    replacement within a set from ``seeds[which]``."""

    def __init__(
        self,
        *,
        measured: str,
        base: str,
        shape: Callable[[Sizes], tuple[int, int, int]],
        seeds: dict[str, int] = POOL_SEEDS,
    ) -> None:
        self.measured = measured
        self.base = base
        self.shape = shape
        self.seeds = seeds
        self.pools: dict[str, list[np.ndarray]] = {}
        self.results: dict[str, Paired] = {}  # paired key -> the paired figures

    def position_pool(self, sizes: Sizes, which: str = "main") -> list[np.ndarray]:
        """The position sets of pool ``which`` ("main", or "pair": the baseline's)."""
        pool = self.pools.get(which)
        if pool is None:
            rng = np.random.default_rng(self.seeds[which])
            N, n, rounds = self.shape(sizes)
            pool = [rng.choice(N, size=n, replace=False) for _ in range(rounds + 2)]
            self.pools[which] = pool
        return pool

    def one_key_order(self, keys: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        """The one-key tests' fresh keys: a seeded permutation of the positions of
        ``keys`` (the group's keys) and the keys in that order as Python ints."""
        order = np.random.default_rng(self.seeds["one"]).permutation(keys.shape[0])
        return order, keys[order].tolist()

    def run(
        self,
        benchmark: Any,
        harness: Harness,
        group: str,
        impl: str,
        fn: Callable[[], Any],
        *,
        rounds: int,
        calls: int = 1,
        note: str = "",
        paired: Callable[[], Any] | None = None,
        paired_key: str | None = None,
    ) -> Any:
        """Time ``fn`` as ``impl`` in ``group`` (:func:`figures.timed_rounds`: one warm-up
        round, then ``rounds`` rounds of one call; --benchmark-disable: one call) and record
        its median round / ``calls`` in the Harness table; return its last result.
        ``paired``: the baseline, timed before every round outside the timed call, for
        ``results[paired_key or group]``."""
        benchmark.group = group
        r = timed_rounds(benchmark, fn, rounds=rounds, before=paired)
        times, base_times = r.times, r.before
        if benchmark.disabled:
            harness.disabled = True
        else:
            note = f"min {fmt_seconds(r.minimum / calls)}; {note}"
        seconds = r.median / calls
        info: dict[str, Any] = {"impl": impl, "size": harness.size, "seconds_per_call": seconds}
        if paired is not None:
            assert len(base_times) == len(times)
            pairs = list(zip(times, base_times, strict=True))
            p = Paired(
                statistics.median(t / b for t, b in pairs),
                min(times) / min(base_times),
                statistics.median(base_times) / calls,
                statistics.median(t - b for t, b in pairs) / calls,
                len(times),
            )
            self.results[paired_key or group] = p
            info["paired"] = {"ratio": p.ratio, "min_ratio": p.min_ratio, f"{self.base}_s": p.base}
        harness.record(benchmark, Entry(group, impl, seconds, seconds, r.rounds, note), info)
        return r.result

    def run_sets(
        self,
        benchmark: Any,
        harness: Harness,
        sizes: Sizes,
        keys: np.ndarray,
        group: str,
        impl: str,
        read: Callable[[np.ndarray], Any],
        *,
        note: str,
        base_read: Callable[[np.ndarray], Any] | None = None,
        one_thread: bool = False,
    ) -> Any:
        """:meth:`run` of ``read`` over the main pool's key sets (``keys`` at the
        positions; every implementation of a group reads the same sets in the same order),
        paired with ``base_read`` over the pair pool's sets when given; the paired key is
        ``group``, with :data:`ONE_THREAD` appended for ``one_thread``."""
        nxt = cycler([keys[p] for p in self.position_pool(sizes)])
        paired = None
        if base_read is not None:
            base_next = cycler([keys[p] for p in self.position_pool(sizes, "pair")])
            paired = lambda: base_read(base_next())  # noqa: E731
        return self.run(
            benchmark, harness, group, impl, lambda: read(nxt()), rounds=self.shape(sizes)[2],
            note=note, paired=paired, paired_key=group + (ONE_THREAD if one_thread else ""),
        )  # fmt: skip

    def run_one_key(
        self, benchmark: Any, harness: Harness, group: str, impl: str, fn: Callable[[], Any],
        *, rounds: int, calls: int, note: str, paired: Callable[[], Any] | None = None,
    ) -> None:  # fmt: skip
        """:meth:`run` of rounds of ``calls`` one-key calls (:func:`call_rounds`), per call;
        ``note``: the call."""
        note = f"per call, rounds of {calls:,} calls; {note}"
        self.run(
            benchmark, harness, group, impl, fn, rounds=rounds, calls=calls, note=note,
            paired=paired,
        )  # fmt: skip

    def text(self, p: Paired, measured: str | None = None) -> str:
        """The paired ratio in words (``measured`` in place of this file's measured read)."""
        m, b = measured or self.measured, self.base
        return (
            f"{m} = {p.ratio:.3f}x {b} ({pct(p.ratio)}), median of {p.rounds} paired "
            f"rounds (min/min {p.min_ratio:.3f}x); {b} {fmt_seconds(p.base)}"
        )

    def one_thread_figures(
        self, h: Harness, group: str, impl: str, section: str, name: str
    ) -> list[Figure]:
        """The paired figure of ``group``'s n_threads=1 reads (``impl``), baseline /
        measured, no target; none when they did not run."""
        p = self.results.get(group + ONE_THREAD)
        if p is None:
            return []
        one = seconds_of(h, group, impl)
        detail = self.text(p) + ("" if one is None else f"; {self.measured} {fmt_seconds(one)}")
        return [Figure(section, name, 1 / p.ratio, "x", None, detail)]

    def one_key_figures(self, p: Paired, *, what: str, calls: int, sep: str) -> list[Figure]:
        """The one-key figures of rounds of ``calls`` calls: the overhead per call and the
        ratio (``what``: the figures' subject; ``sep``: appended to the first's detail)."""
        m, b = self.measured, self.base
        return [
            Figure(
                "3 one key", f"{what}: {m} - {b}, per call", p.diff, "s", None,
                f"median over {p.rounds} paired rounds of ({m} round - {b} round) "
                f"/ {calls:,} calls" + sep,
            ),
            Figure(
                "3 one key", f"{what}: {m} / {b}", p.ratio, "x", None,
                f"median of {p.rounds} paired rounds of {calls:,} calls "
                f"(min/min {p.min_ratio:.3f}x); paired {b} {p.base * 1e6:.2f} µs per call",
            ),
        ]  # fmt: skip
