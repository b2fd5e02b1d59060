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
    "10x": Target(10.0, "mmfs >= 10x faster"),
    "as_fast": Target(1.0, "mmfs at least as fast"),
    "faster": Target(1.0, "mmfs faster"),
    "floor": Target(1 / 1.1, "mmfs <= 1.1x floor"),
    # batch reads and scoring (benchmarks/test_bench_batch.py)
    "floor_1.5": Target(1 / 1.5, "mmfs <= 1.5x floor"),
    "100x": Target(100.0, "mmfs >= 100x faster"),
    "1.7x": Target(1.7, "speed-up >= 1.7x"),
    # fused transforms (benchmarks/test_bench_transforms.py): raw get time / transformed
    "overhead_5": Target(1 / 1.05, "transformed <= 1.05x raw get"),
    "overhead_20": Target(1 / 1.2, "transformed <= 1.2x raw get"),
    # experiments (benchmarks/test_bench_experiments.py): plain get time / experiment get
    "experiment_get": Target(1 / 1.1, "experiment get <= 1.1x plain get"),
    # similarity search (benchmarks/test_bench_index.py): a recall, not a speed-up
    "index_recall": Target(0.95, "recall@10 >= 0.95"),
}


def fmt_seconds(x: float) -> str:
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} µs"


@dataclass(frozen=True)
class Limit:
    """A target on an absolute figure (seconds, or a ratio to the raw data): PASS when the
    figure is below ``maximum`` (or equal to it, when ``inclusive``)."""

    maximum: float
    text: str
    inclusive: bool = False

    def check(self, value: float) -> bool:
        return value <= self.maximum if self.inclusive else value < self.maximum


# The storage issue's targets (benchmarks/test_bench_store.py), by figure.
LIMITS = {
    "get_one": Limit(3e-6, "median < 3 µs per call"),
    "disk_dense": Limit(1.1, "<= 1.1x raw", inclusive=True),
    "resident_dense": Limit(1.1, "<= 1.1x raw", inclusive=True),
    "disk_sparse": Limit(1.25, "<= 1.25x raw CSR", inclusive=True),
    "resident_sparse": Limit(1.25, "<= 1.25x raw CSR", inclusive=True),
    "open": Limit(20e-3, "< 20 ms"),
    "shared_uss": Limit(0.05, "< 5% of the data per reader"),
    # versions (benchmarks/test_bench_versions.py): allocated bytes / (base + changed rows)
    "versions_space": Limit(1.1, "<= 1.1x (base + changed rows)", inclusive=True),
    # training sets (benchmarks/test_bench_training_set.py): traced peak / output bytes
    "training_peak": Limit(2.0, "peak < 2x the output"),
    # batch reads (benchmarks/test_bench_batch.py): per-key time at n keys / at 1,000 keys
    "batch_scaling": Limit(1.3, "<= 1.3x the per-key cost at 1,000 keys", inclusive=True),
    # scoring workers: USS increase per worker / the group's data (N * 136 * 4 bytes)
    "score_uss": Limit(0.05, "< 5% of the data per worker"),
    # experiments (benchmarks/test_bench_experiments.py): exp.assign on one thread, per id
    "assign_int": Limit(10e-9, "<= 10 ns per id (>= 100 M ids/s)", inclusive=True),
    "assign_str": Limit(50e-9, "<= 50 ns per id (>= 20 M ids/s)", inclusive=True),
    "assign_gb": Limit(100e-9, "<= 100 ns per id (>= 10 M ids/s)", inclusive=True),
    # similarity search (benchmarks/test_bench_index.py): one query on one thread at
    # recall@10 >= 0.95 (must; then the goals), index bytes per vector at 256 bits
    "index_median": Limit(1e-3, "median < 1 ms"),
    "index_p99": Limit(2e-3, "p99 < 2 ms"),
    "index_median_goal": Limit(0.5e-3, "goal: median < 0.5 ms"),
    "index_build_goal": Limit(3.0, "goal: build < 3 s"),
    "index_bytes": Limit(40.0, "< 40 B per vector"),
}
