"""Version and as-of lookups of one key: flat in the length of the key's history.

The versioning issue's target: one key with ``version=`` or ``as_of=`` under 20 µs median,
and histories of 10, 1,000, 100,000 and 1,000,000 entries per key within 1.5x of each
other.  Each history length is its own store: a hot key written ``h`` times over 20
commits (increasing event times) among 1,000 other keys.  Small size stops at 100,000.

    MMFS_BENCH_SIZE=full uv run --group bench pytest benchmarks/test_bench_versions.py \\
        --benchmark-group-by=group -q -p no:cacheprovider -s

The flatness table (median per call for each history length, and the ratio of the
slowest to the fastest) is printed at the end of the module.
"""

from __future__ import annotations

import itertools
import os
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmfs

FULL = os.environ.get("MMFS_BENCH_SIZE", "small") == "full"
HISTORIES = [10, 1_000, 100_000, 1_000_000] if FULL else [10, 1_000, 100_000]
COMMITS = 20
CALLS = 200  # calls per round
ROUNDS = 100 if FULL else 5
T0 = np.datetime64("2026-01-01", "ns")
HOT = 123_456
RESULTS: dict[tuple[str, int], float] = {}


@pytest.fixture(scope="module", params=HISTORIES, ids=[f"h{h}" for h in HISTORIES])
def history_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, mmfs.Store]]:
    h: int = request.param
    path = tmp_path_factory.mktemp(f"versions-h{h}") / "s"
    rng = np.random.default_rng(h)
    with mmfs.open(path, durability="none") as store:
        g = store.create_group("g", schema={"x": mmfs.scalar("float32"), "e": mmfs.dense(16)})
        others = np.arange(1_000)
        g.write(others, {"x": rng.random(1_000), "e": rng.random((1_000, 16))}, event_time=T0)
        per = max(1, h // COMMITS)
        done = 0
        while done < h:
            n = min(per, h - done)
            t = T0 + (done + np.arange(n)).astype("timedelta64[s]")
            g.write(np.full(n, HOT), {"x": np.arange(done, done + n), "e": np.zeros((n, 16))},
                    event_time=t)  # fmt: skip
            store.commit()
            done += n
    reader = mmfs.open(path, mode="r")
    yield h, reader
    reader.close()


def _timed(benchmark: Any, group: str, fn: Any) -> float:
    benchmark.group = group
    if benchmark.disabled:
        benchmark.pedantic(fn)
        return float("nan")
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=CALLS, warmup_rounds=1)
    return float(benchmark.stats.stats.median)


@pytest.mark.parametrize("how", ["as_of", "version", "latest"])
def test_one_key_lookup(benchmark: Any, history_store: tuple[int, mmfs.Store], how: str) -> None:
    h, store = history_store
    g = store["g"]
    versions = [v.id for v in store.versions()][1:]
    rng = np.random.default_rng(0)
    # times and versions spread over the history, cycled (not one cached answer)
    offsets = rng.integers(0, h, 256)
    times = itertools.cycle(list(T0 + offsets.astype("timedelta64[s]")))
    pinned = itertools.cycle(rng.choice(versions, 256).tolist())
    if how == "as_of":
        t_check = T0 + np.timedelta64(int(offsets[0]), "s")
        assert g.get(HOT, as_of=t_check)["x"].tolist() == [float(offsets[0])]

        def fn() -> Any:
            return g.get(HOT, as_of=next(times))
    elif how == "version":
        assert g.get(HOT, version=versions[-1])["x"].tolist() == [float(h - 1)]

        def fn() -> Any:
            return g.get(HOT, version=next(pinned))
    else:

        def fn() -> Any:
            return g.get(HOT)

    RESULTS[(how, h)] = _timed(benchmark, f"one key, {how}", fn)


def test_zz_flatness_table() -> None:
    """Print the table (runs last in the module)."""
    if not RESULTS or all(np.isnan(v) for v in RESULTS.values()):
        return
    print("\n| lookup | " + " | ".join(f"h={h:,}" for h in HISTORIES) + " | slowest / fastest |")
    print("|---|" + "---:|" * (len(HISTORIES) + 1))
    for how in ("as_of", "version", "latest"):
        row = [RESULTS.get((how, h), float("nan")) for h in HISTORIES]
        ok = [x for x in row if not np.isnan(x)]
        ratio = max(ok) / min(ok) if ok else float("nan")
        cells = " | ".join(f"{x * 1e6:.2f} µs" for x in row)
        print(f"| {how} | {cells} | {ratio:.2f}x |")
    medians = [v for v in RESULTS.values() if not np.isnan(v)]
    print(f"median of all: {statistics.median(medians) * 1e6:.2f} µs")


def test_history_store_is_what_it_says(tmp_path: Path) -> None:
    """The fixture's shape: h rows for the hot key, one run list per commit version."""
    with mmfs.open(tmp_path / "s") as store:
        g = store.create_group("g", schema={"x": mmfs.scalar("float32")})
        g.write([1, 1, 1], {"x": [1, 2, 3]}, event_time=[T0, T0 + 1, T0 + 2])
        store.commit()
        assert g.get(1, as_of=T0 + 1)["x"].tolist() == [2.0]
