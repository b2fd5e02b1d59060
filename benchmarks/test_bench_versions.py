"""Version and as-of lookups of one key: flat in the length of the key's history.

The versioning issue's target: one key with ``version=`` or ``as_of=`` under 20 µs median,
and histories of 10, 1,000, 100,000 and 1,000,000 entries per key within 1.5x of each
other.  Each history length is its own store: a hot key written ``h`` times over 20
commits (increasing event times) among 1,000 other keys.  Small size stops at 100,000.

    MMFS_BENCH_SIZE=full uv run --group bench pytest benchmarks/test_bench_versions.py \\
        --benchmark-group-by=group -q -p no:cacheprovider -s

The flatness table (median per call for each history length, and the ratio of the
slowest to the fastest) is printed at the end of the module.

Space (``-k space``): the versioning issue's "100 commits that each change 1% of 1,000,000
entities cost at most 1.1x of (base data + changed rows)".  Schema: ``emb`` dense(128)
float32 and 8 float32 scalars, so one record is 8 B slot + 8 B event time + 512 + 32 =
560 B.  Full size: 1,000,000 entities in one write + commit, then 100 commits of 10,000
distinct random entities with new values and later event times (small: 100,000 entities,
20 commits).  The figure is the allocated bytes (``st_blocks * 512``: segments are sparse)
of the store directory over (entities + changed rows) x 560 B, by kind of file, against
the same data as .npy files, and after every commit of the build; asserted <= 1.1x at
full size only.  The median commit time goes to the Harness table.  Every version stays
readable: 100 keys at 5 random versions are checked against a model of the values.
"""

from __future__ import annotations

import itertools
import os
import re
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Entry, Harness
from targets import LIMITS, fmt_seconds

import mmfs
from mmfs.schema import layout

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


# --------------------------------------------------------------------------------------
# Space: what 1% commits cost on disk (and in commit time)
# --------------------------------------------------------------------------------------

SP_ENTITIES = 1_000_000 if FULL else 100_000
SP_COMMITS = 100 if FULL else 20
SP_CHANGED = SP_ENTITIES // 100  # rows per commit: 1% of the entities, distinct keys
SP_DIM = 128
SP_SCALARS = [f"s{i}" for i in range(8)]
SP_SCHEMA = {"emb": mmfs.dense(SP_DIM), **{s: mmfs.scalar("float32") for s in SP_SCALARS}}
# one record: 8 B slot + 8 B event time + 128 * 4 B emb + 8 * 4 B scalars = 560 B
SP_RECORD = 8 + 8 + SP_DIM * 4 + len(SP_SCALARS) * 4
SP_VERSIONS_CHECKED = 5
SP_KEYS_CHECKED = 100
SP_KINDS: tuple[str, ...] = ("rows", "pages", "dir", "kidx", "hist", "hmin", "manifest", "other")


@dataclass
class SpaceBuild:
    """The store of the space benchmark, built once per module, and what the build saw."""

    path: Path
    npy: Path  # the same data as .npy files (the raw-numpy reference)
    versions: list[int]  # version id of the base (first) and of each 1% commit
    base_s: float  # the base's write + commit
    write_s: list[float]  # each 1% write
    commit_s: list[float]  # each 1% commit
    changed_rows: int
    # allocated bytes by kind after the base (first) and after each 1% commit
    trace: list[dict[str, int]] = field(default_factory=list)
    # version -> (keys, emb, scalars): the model's values of 100 keys as of that version
    model: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)


def _sp_values(emb: np.ndarray, sc: np.ndarray) -> dict[str, np.ndarray]:
    return {"emb": emb, **{s: sc[:, i] for i, s in enumerate(SP_SCALARS)}}


@pytest.fixture(scope="module")
def space_store(tmp_path_factory: pytest.TempPathFactory) -> SpaceBuild:
    """SP_ENTITIES entities in one write + commit (the base), then SP_COMMITS commits that
    each write SP_CHANGED distinct random existing entities with new values and a later
    event time.  The model (numpy arrays of the current values) follows along; at
    SP_VERSIONS_CHECKED random versions it keeps the values of SP_KEYS_CHECKED keys (half
    of them written by that very commit, half uniform)."""
    root = tmp_path_factory.mktemp("versions-space")
    rng = np.random.default_rng(2026)
    n, m = SP_ENTITIES, SP_CHANGED
    checked = set(rng.choice(SP_COMMITS + 1, SP_VERSIONS_CHECKED, replace=False).tolist())
    emb = rng.standard_normal((n, SP_DIM), dtype=np.float32)
    sc = rng.standard_normal((n, len(SP_SCALARS)), dtype=np.float32)
    npy = root / "npy"
    npy.mkdir()
    np.save(npy / "base-emb.npy", emb)
    np.save(npy / "base-scalars.npy", sc)
    build = SpaceBuild(root / "store", npy, [], 0.0, [], [], 0)
    store_dir = build.path

    def keep(version: int, written: np.ndarray) -> None:
        half = SP_KEYS_CHECKED // 2
        keys = np.concatenate(
            [rng.choice(written, half, replace=False), rng.integers(0, n, SP_KEYS_CHECKED - half)]
        )
        build.model[version] = (keys, emb[keys].copy(), sc[keys].copy())

    with mmfs.open(build.path, durability="none") as store:
        g = store.create_group("g", schema=SP_SCHEMA)
        t0 = time.perf_counter()
        g.write(np.arange(n, dtype=np.int64), _sp_values(emb, sc), event_time=T0)
        build.versions.append(store.commit("base"))
        build.base_s = time.perf_counter() - t0
        build.trace.append(_allocated_by_kind(store_dir)[0])
        if 0 in checked:
            keep(build.versions[0], np.arange(n))
        for c in range(1, SP_COMMITS + 1):
            keys = rng.choice(n, m, replace=False).astype(np.int64)
            e = rng.standard_normal((m, SP_DIM), dtype=np.float32)
            s = rng.standard_normal((m, len(SP_SCALARS)), dtype=np.float32)
            t1 = time.perf_counter()
            g.write(keys, _sp_values(e, s), event_time=T0 + np.timedelta64(c, "h"))
            t2 = time.perf_counter()
            build.versions.append(store.commit(f"1% #{c}"))
            t3 = time.perf_counter()
            build.write_s.append(t2 - t1)
            build.commit_s.append(t3 - t2)
            build.changed_rows += m
            build.trace.append(_allocated_by_kind(store_dir)[0])  # untimed
            emb[keys], sc[keys] = e, s
            for what, arr in (("keys", keys), ("emb", e), ("scalars", s)):
                np.save(npy / f"c{c:03d}-{what}.npy", arr)
            if c in checked:
                keep(build.versions[c], keys)
    return build


def _allocated_by_kind(path: Path) -> tuple[dict[str, int], dict[str, int], int]:
    """({kind: allocated bytes (st_blocks * 512)}, {kind: files}, apparent bytes
    (st_size)) over every file under ``path``."""
    alloc: dict[str, int] = dict.fromkeys(SP_KINDS, 0)
    files: dict[str, int] = dict.fromkeys(SP_KINDS, 0)
    apparent = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            st = os.stat(os.path.join(root, name))
            m = re.match(r"[a-z]+", name)
            kind = m.group(0) if m and m.group(0) in SP_KINDS else "other"
            alloc[kind] += st.st_blocks * 512
            files[kind] += 1
            apparent += st.st_size
    return alloc, files, apparent


def _mib(x: float) -> str:
    return f"{x / 2**20:,.1f} MiB"


def test_space_of_versions(space_store: SpaceBuild, harness: Harness) -> None:
    """Allocated bytes of the store after the base and every 1% commit, against the
    bytes of the records written (base + changed rows); by kind of file."""
    b = space_store
    assert layout(SP_SCHEMA).record_bytes == SP_RECORD == 560
    alloc, files, apparent = _allocated_by_kind(b.path)
    total = sum(alloc.values())
    ideal = SP_ENTITIES * SP_RECORD + b.changed_rows * SP_RECORD
    ratio = total / ideal
    npy_alloc, _, _ = _allocated_by_kind(b.npy)
    npy_total = sum(npy_alloc.values())
    commit_med = statistics.median(b.commit_s)
    write_med = statistics.median(b.write_s)
    limit = LIMITS["versions_space"]
    ok = limit.check(ratio)

    lines = [
        f"\nspace of versions (MMFS_BENCH_SIZE={'full' if FULL else 'small'}): "
        f"{SP_ENTITIES:,} entities in one write + commit, then {SP_COMMITS} commits of "
        f"{SP_CHANGED:,} distinct random entities (1%), durability='none'",
        f"record {SP_RECORD} B = 8 slot + 8 event time + {SP_DIM * 4} emb (dense {SP_DIM} "
        f"float32) + {len(SP_SCALARS) * 4} scalars (8 float32); base + changed rows = "
        f"({SP_ENTITIES:,} + {b.changed_rows:,}) x {SP_RECORD} B = {_mib(ideal)}",
        "",
        "| file kind | files | allocated | bytes per changed row | / (base + changed) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in SP_KINDS:
        lines.append(
            f"| {kind} | {files[kind]} | {_mib(alloc[kind])} ({alloc[kind]:,} B) "
            f"| {alloc[kind] / b.changed_rows:,.2f} B | {alloc[kind] / ideal:.4f} |"
        )
    lines.append(
        f"| total | {sum(files.values())} | {_mib(total)} ({total:,} B) "
        f"| {total / b.changed_rows:,.2f} B | {ratio:.4f} |"
    )
    lines += [
        "",
        "| figure | value | target | result |",
        "|---|---:|---|---|",
        f"| allocated / (base + changed rows) | {ratio:.4f}x | {limit.text} "
        f"| {'PASS' if ok else 'FAIL'}{'' if FULL else ' (target is for full size)'} |",
        f"| allocated / raw numpy (.npy: base arrays + each commit's keys, emb, scalars; "
        f"{_mib(npy_total)}) | {total / npy_total:.4f}x | | |",
        f"| apparent size (st_size) / (base + changed rows) | {apparent / ideal:.4f}x "
        f"| | (segments are created full size, sparse) |",
        f"| commit of 1% ({SP_CHANGED:,} rows), median of {len(b.commit_s)} "
        f"| {fmt_seconds(commit_med)} | | min {fmt_seconds(min(b.commit_s))}, "
        f"max {fmt_seconds(max(b.commit_s))} |",
        f"| write of 1% (before its commit), median | {fmt_seconds(write_med)} | | |",
        f"| base: write + commit of {SP_ENTITIES:,} rows | {fmt_seconds(b.base_s)} | | |",
    ]
    # the same figure after every commit of the build (ideal: base + rows changed so far)
    ratios = [
        sum(a.values()) / ((SP_ENTITIES + c * SP_CHANGED) * SP_RECORD)
        for c, a in enumerate(b.trace)
    ]
    worst = int(np.argmax(ratios))
    peak = b.trace[worst]
    peak_ideal = (SP_ENTITIES + worst * SP_CHANGED) * SP_RECORD
    lines += [
        "",
        f"during the build (allocated after each commit / (base + rows changed so far)): "
        f"after the base {ratios[0]:.4f}x, max {ratios[worst]:.4f}x after commit {worst} "
        f"of {SP_COMMITS}, median {statistics.median(ratios):.4f}x; at that max: "
        + ", ".join(f"{k} {_mib(peak[k])} ({peak[k] / peak_ideal:.4f})" for k in SP_KINDS),
    ]
    print("\n".join(lines))

    group = f"versions: commit of 1% ({SP_CHANGED:,} of {SP_ENTITIES:,} rows)"
    note = (
        f"median of {len(b.commit_s)} commits; space {ratio:.3f}x (base + changed rows), "
        f"{total / npy_total:.3f}x raw .npy"
    )
    harness.entries.setdefault(group, {})["mmfs"] = Entry(
        group, "mmfs", commit_med, commit_med, len(b.commit_s), note
    )
    if FULL:
        assert ok, f"allocated {ratio:.4f}x (base + changed rows), target {limit.text}"


def test_space_versions_readable(space_store: SpaceBuild) -> None:
    """Every version stays readable: 100 keys at 5 random versions against the model
    (exact bytes), and the keys a checked commit wrote read differently one version
    earlier (the pin is not the latest value)."""
    b = space_store
    assert len(b.model) == SP_VERSIONS_CHECKED
    with mmfs.open(b.path, mode="r") as reader:
        assert [v.id for v in reader.versions()][-len(b.versions) :] == b.versions
        g = reader["g"]
        for v, (keys, emb, sc) in sorted(b.model.items()):
            batch = g.get(keys, version=v, missing="raise")
            np.testing.assert_array_equal(batch["emb"], emb, err_msg=f"version {v}")
            for i, s in enumerate(SP_SCALARS):
                np.testing.assert_array_equal(batch[s], sc[:, i], err_msg=f"version {v} {s}")
            if v != b.versions[0]:
                half = SP_KEYS_CHECKED // 2
                prev = b.versions[b.versions.index(v) - 1]
                before = g.get(keys[:half], version=prev, missing="raise")
                assert not (before["emb"] == emb[:half]).all(axis=1).any(), f"version {v}"


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
