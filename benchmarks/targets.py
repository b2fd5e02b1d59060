"""The issue's benchmark targets and the time format, shared by benchmarks/conftest.py
(the end-of-session table) and tools/bench_report.py (tables from --benchmark-json)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A target on ``speedup = peer time / mmfs time``: PASS when speedup >= minimum."""

    minimum: float
    text: str

    def check(self, speedup: float) -> bool:
        return speedup >= self.minimum


# The targets, by the key a test passes to Harness.run(target=...).
TARGETS = {
    "3x": Target(3.0, "mmfs >= 3x faster"),
    "as_fast": Target(1.0, "mmfs at least as fast"),
    "faster": Target(1.0, "mmfs faster"),
    "floor": Target(1 / 1.1, "mmfs <= 1.1x floor"),
}


def fmt_seconds(x: float) -> str:
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} µs"
