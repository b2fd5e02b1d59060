"""Figures against absolute targets, shared by the benchmark files that have them
(test_bench_store.py, test_bench_batch.py, test_bench_transforms.py,
test_bench_experiments.py): a :class:`Figure` per measured value, a markdown table of them
with PASS/FAIL, and a plugin that prints that table at the end of the session (and appends
it to $MMFS_BENCH_TABLE when set).  Also :func:`timed_rounds`, the explicit-rounds timing
those files share (paired.py builds the paired rounds on it)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import size_name
from targets import LIMITS, Limit, Target, fmt_seconds


@dataclass
class Rounds:
    """What :func:`timed_rounds` measured."""

    result: Any  # fn's last result
    median: float  # seconds of the median round (disabled: of the one call)
    minimum: float
    rounds: int  # timed rounds (disabled: 1)
    times: list[float]  # each timed round (the warm-up dropped)
    before: list[float]  # the ``before`` call just before each of those rounds


def timed_rounds(
    benchmark: Any, fn: Callable[[], Any], *, rounds: int, before: Callable[[], Any] | None
) -> Rounds:
    """Time ``fn`` in pytest-benchmark pedantic mode: one warm-up round, then ``rounds``
    rounds of one call (--benchmark-disable: one plain call).  ``before``, when given, is
    timed before every round (and the warm-up), outside the timed call, so that the two
    alternate and see the same machine: a peer or floor to take per-round ratios with."""
    times: list[float] = []
    before_times: list[float] = []

    def setup() -> None:
        if before is not None:
            t0 = time.perf_counter()
            before()
            before_times.append(time.perf_counter() - t0)

    def timed() -> Any:
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        return out

    if benchmark.disabled:
        setup()
        result = benchmark(timed)  # disabled: one plain call
        return Rounds(result, times[-1], times[-1], 1, times, before_times)
    result = benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=1, iterations=1)
    stats = benchmark.stats.stats
    return Rounds(
        result, float(stats.median), float(stats.min), int(stats.rounds), times[1:],
        before_times[1:],
    )  # fmt: skip


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str  # "s" (seconds), "x" (a ratio), "%" (a fraction), "keys/s", or any other unit
    check: Target | Limit | str | None = None  # a str names a LIMITS entry
    detail: str = ""

    def target(self) -> Target | Limit | None:
        return LIMITS[self.check] if isinstance(self.check, str) else self.check

    def text(self) -> str:
        v = self.value
        if self.unit == "s":
            if v < 1e-5:
                return f"{v * 1e9:.0f} ns" if v < 1e-6 else f"{v * 1e6:.2f} µs"
            return fmt_seconds(v)
        if self.unit == "x":
            return f"{v:.3f}x"
        if self.unit == "%":
            return f"{v * 100:.2f}%"
        if self.unit == "keys/s":
            return f"{v / 1e6:.2f} M keys/s"
        return f"{v:.1f} {self.unit}"


def figure_table(what: str, figures: Iterable[Figure], *, disabled: bool = False) -> list[str]:
    """The markdown lines of the "mmfs <what> figures" table and its verdict line."""
    lines = [f"mmfs {what} figures (MMFS_BENCH_SIZE={size_name()})", ""]
    lines.append("| section | figure | value | target | result | detail |")
    lines.append("|---|---|---:|---|---|---|")
    n_pass = n_fail = 0
    for f in figures:
        target = verdict = ""
        check = f.target()
        if check is not None:
            ok = check.check(f.value)
            target, verdict = check.text, ("PASS" if ok else "FAIL")
            n_pass += ok
            n_fail += not ok
        lines.append(f"| {f.section} | {f.name} | {f.text()} | {target} | {verdict} | {f.detail} |")
    lines.append("")
    verdict = f"{what} targets: {n_pass} PASS, {n_fail} FAIL"
    if disabled:
        verdict += " (--benchmark-disable: single un-warmed calls, indicative only)"
    if size_name() != "full":
        verdict += f" (at MMFS_BENCH_SIZE={size_name()}: the targets are for the full size)"
    lines.append(verdict)
    return lines


class _Reporter:
    def __init__(self, what: str, lines: Callable[[], list[str] | None]) -> None:
        self.what = what
        self.lines = lines

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = self.lines()
        if not lines:
            return
        terminalreporter.section(f"mmfs {self.what} figures")
        for line in lines:
            terminalreporter.write_line(line)
        path = os.environ.get("MMFS_BENCH_TABLE")
        if path:
            with open(path, "a") as f:
                f.write("\n".join(lines) + "\n\n")


def report_at_end(
    request: pytest.FixtureRequest, what: str, lines: Callable[[], list[str] | None]
) -> None:
    """Print ``lines()`` (None or empty: nothing measured) at the end of the session."""
    manager = request.config.pluginmanager
    name = f"mmfs-{what}-figures"
    if not manager.has_plugin(name):
        manager.register(_Reporter(what, lines), name)
