"""mmfs.budget: parsing budgets, the ledger's refusals before allocation, cache eviction,
the real-memory check (with a fake psutil, never the machine's) and chunk sizing."""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest

from mmfs import budget as budget_mod
from mmfs.budget import (
    MAX_BYTES,
    UNLIMITED_CHUNK_BYTES,
    MemoryBudget,
    Reservation,
    format_bytes,
    parse_budget,
    process_memory,
    total_memory,
)
from mmfs.errors import MemoryBudgetError, MmfsError, NotFoundError, ParameterError

GiB = 2**30
RAM = 16 * GiB  # the fake machine's memory in every test that reads RAM


@pytest.fixture(autouse=True)
def fake_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A 16 GiB machine with no cgroup limit, so fractions do not depend on the host."""
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=RAM, available=RAM))
    monkeypatch.setattr(
        budget_mod, "_CGROUP_MEMORY_FILES", (str(tmp_path / "absent" / "memory.max"),)
    )


def ledger(limit: object = 1000) -> MemoryBudget:
    """A budget that trusts the ledger alone (no real-memory measurement)."""
    return MemoryBudget(limit, measure=None)


class FakeCache:
    """A cache whose entries hold reservations; evicts oldest first, as a real one would."""

    def __init__(self, budget: MemoryBudget, name: str, sizes: list[int]) -> None:
        self.budget = budget
        self.name = name
        self.entries = [budget.reserve(n, f"{name} entry") for n in sizes]
        self.asked: list[int] = []
        budget.register_cache(name, self.evict)

    def evict(self, needed: int) -> int:
        self.asked.append(needed)
        freed = 0
        while self.entries and freed < needed:
            entry = self.entries.pop(0)
            entry.release()
            freed += entry.nbytes
        return freed


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (1, 1),
        (4096, 4096),
        (np.int64(4096), 4096),
        (MAX_BYTES, MAX_BYTES),
        ("4GiB", 4 * GiB),
        ("4 gib", 4 * GiB),
        (" 2 MiB ", 2 * 2**20),
        ("512MiB", 512 * 2**20),
        ("3KiB", 3 * 1024),
        ("1TiB", 2**40),
        (".5KiB", 512),
        ("1.1 KiB", 1126),  # 1126.4 rounds down to whole bytes
        ("1.5 GB", 1_500_000_000),
        ("800MB", 800_000_000),
        ("3kB", 3000),
        ("2KB", 2000),
        ("1TB", 10**12),
        ("7B", 7),
        ("123", 123),
        ("10%", RAM // 10),
        ("100%", RAM),
        ("12.5 %", RAM // 8),
        (0.5, RAM // 2),
        (1.0, RAM),
        (0.25, RAM // 4),
    ],
)
def test_parse_budget_accepts(value: object, expected: int | None) -> None:
    assert parse_budget(value) == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (0, "must be positive"),
        (-1, "must be positive"),
        ("0", "must be positive"),
        ("0 GiB", "must be positive"),
        (MAX_BYTES + 1, "more than any machine"),
        (10**30, "more than any machine"),
        ("9999999999 TiB", "more than any machine"),
        (True, "bool"),
        (False, "bool"),
        (0.0, "fraction of RAM in (0, 1]"),
        (-0.5, "fraction of RAM in (0, 1]"),
        (1.5, "fraction of RAM in (0, 1]"),
        (4e9, "fraction of RAM in (0, 1]"),
        (math.nan, "not a finite number"),
        (math.inf, "not a finite number"),
        (-math.inf, "not a finite number"),
        ("0%", "(0, 100]"),
        ("101%", "(0, 100]"),
        ("-4GiB", "not a positive number followed by a unit"),
        ("", "not a positive number followed by a unit"),
        ("GiB", "not a positive number followed by a unit"),
        ("nan", "not a positive number followed by a unit"),
        ("inf", "not a positive number followed by a unit"),
        ("1e9", "not a positive number followed by a unit"),
        ("4 GiB 2", "not a positive number followed by a unit"),
        ("4G", "unknown unit 'G'"),
        ("4 XB", "unknown unit 'XB'"),
        ("1.5", "whole number"),
        ("0.5 B", "whole number"),
        ([4096], "a list is not a size"),
        (b"4GiB", "a bytes is not a size"),
    ],
)
def test_parse_budget_rejects(value: object, why: str) -> None:
    with pytest.raises(ParameterError) as info:
        parse_budget(value)
    msg = str(info.value)
    assert f"memory_budget={value!r}" in msg  # quotes what arrived
    assert why in msg
    assert "'4GiB'" in msg  # and shows an accepted example


def test_parse_budget_names_the_parameter() -> None:
    with pytest.raises(ParameterError, match=r"^cache_size=-3 is not a memory budget"):
        parse_budget(-3, name="cache_size")


def test_parse_budget_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="memory budget"):
        parse_budget("lots")


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("v2", "v1", "expected"),
    [
        (str(2 * GiB), None, 2 * GiB),  # a cgroup v2 limit below RAM caps it
        ("max\n", None, RAM),  # v2 unlimited
        (str(64 * GiB), None, RAM),  # a limit above RAM does not raise it
        ("0", None, RAM),  # nonsense is ignored
        (None, "9223372036854771712\n", RAM),  # v1 "unlimited" is a huge number
        (None, str(GiB), GiB),  # v1 limit
        (str(3 * GiB), str(GiB), GiB),  # the smaller of the two wins
        (None, None, RAM),
    ],
)
def test_total_memory_respects_cgroups(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    v2: str | None,
    v1: str | None,
    expected: int,
) -> None:
    p2, p1 = tmp_path / "v2" / "memory.max", tmp_path / "v1" / "memory.limit_in_bytes"
    if v2 is not None:
        write(p2, v2)
    if v1 is not None:
        write(p1, v1)
    monkeypatch.setattr(budget_mod, "_CGROUP_MEMORY_FILES", (str(p2), str(p1)))
    assert total_memory() == expected


def test_fractions_use_the_cgroup_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path / "memory.max", str(4 * GiB))
    monkeypatch.setattr(budget_mod, "_CGROUP_MEMORY_FILES", (path,))
    assert parse_budget("50%") == 2 * GiB
    assert parse_budget(0.25) == GiB


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (2**20, "1 MiB"),
        (2**20 - 1, "1 MiB"),  # 1023.999 KiB rounds up into the next unit
        (3 * GiB // 2, "1.5 GiB"),
        (4 * GiB, "4 GiB"),
        (int(1.25 * 2**40), "1.2 TiB"),
        (2**70, "1024 EiB"),
        (-2048, "-2 KiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


# ----------------------------------------------------------------------------- ledger


def test_a_budget_takes_any_parse_budget_value() -> None:
    assert MemoryBudget("4GiB").limit == 4 * GiB
    assert MemoryBudget(0.5).limit == RAM // 2
    assert MemoryBudget().limit is None
    with pytest.raises(ParameterError, match="memory_budget='4 parsecs'"):
        MemoryBudget("4 parsecs")


def test_charging_up_to_exactly_the_limit_passes_and_one_more_byte_raises() -> None:
    b = ledger(1000)
    with b.charge(600, "first"):
        assert b.in_use == 600
        with b.charge(400, "second") as r:
            assert (b.in_use, b.available, r.nbytes, r.what) == (1000, 0, 400, "second")
        assert b.in_use == 600
        with pytest.raises(MemoryBudgetError), b.charge(401, "one byte too many"):
            pytest.fail("the block must not run: the charge is refused before it")
        assert b.in_use == 600  # the refused request left the ledger as it was
        assert b.available == 400
    assert b.in_use == 0
    assert b.peak == 1000


def test_reserve_refuses_before_anything_is_allocated() -> None:
    b = ledger(100)
    keep = b.reserve(60, "kept")
    allocated: list[bytearray] = []

    def get() -> None:  # the pattern callers follow: charge, then allocate
        b.reserve(41, "too big")
        allocated.append(bytearray(41))

    with pytest.raises(MemoryBudgetError):
        get()
    assert allocated == []
    assert b.in_use == 60
    keep.release()
    assert b.in_use == 0


def test_nested_charges_are_released_when_the_block_raises() -> None:
    b = ledger(1000)

    def work() -> None:
        with b.charge(100, "outer"), b.charge(200, "inner"):
            assert b.in_use == 300
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        work()
    assert b.in_use == 0
    assert b.peak == 300


def test_release_is_idempotent() -> None:
    b = ledger(1000)
    r = b.reserve(300, "x")
    other = b.reserve(100, "y")
    assert isinstance(r, Reservation)
    assert not r.released
    assert "held" in repr(r)
    r.release()
    r.release()
    assert r.released
    assert "released" in repr(r)
    assert b.in_use == 100  # the second release did not take other's bytes
    with other:
        pass
    other.release()
    assert b.in_use == 0


def test_charge_yields_a_reservation_that_may_be_released_early() -> None:
    b = ledger(1000)
    with b.charge(500, "x") as r:
        r.release()
        assert b.in_use == 0
    assert b.in_use == 0


def test_zero_and_numpy_sizes_are_accepted() -> None:
    b = ledger(10)
    with b.charge(0, "nothing"), b.charge(np.int64(10), "numpy"):
        assert b.in_use == 10


@pytest.mark.parametrize("nbytes", [-1, 1.5, 2.0, True, "10", None])
def test_bad_sizes_are_parameter_errors(nbytes: object) -> None:
    b = ledger(1000)
    with pytest.raises(ParameterError, match="nbytes must be a non-negative int"):
        b.reserve(nbytes, "x")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="nbytes must be a non-negative int"):
        b.check_process(nbytes)  # type: ignore[arg-type]
    assert b.in_use == 0


def test_what_must_be_a_string() -> None:
    with pytest.raises(ParameterError, match="what must be a str"):
        ledger().reserve(1, 42)  # type: ignore[arg-type]


def test_unlimited_tracks_but_never_refuses() -> None:
    calls: list[int] = []
    b = MemoryBudget(None, measure=lambda: calls.append(1) or 10**18)
    assert b.limit is None
    assert b.available is None
    with b.charge(MAX_BYTES, "everything"):
        assert b.in_use == MAX_BYTES
        b.check_process(10**12)
    assert b.in_use == 0
    assert b.peak == MAX_BYTES
    assert calls == []  # no limit, nothing to measure against
    assert "unlimited" in repr(b)


def test_peak_and_reset_peak() -> None:
    b = ledger(1000)
    with b.charge(700, "a"):
        pass
    keep = b.reserve(100, "b")
    assert b.peak == 700
    b.reset_peak()
    assert b.peak == 100
    keep.release()
    assert repr(b) == "<MemoryBudget 0 B of 1000 B in use>"


# ----------------------------------------------------------------------------- errors


def test_the_error_names_the_request_the_use_and_the_limit() -> None:
    b = ledger(4 * GiB)
    with b.charge(3 * GiB, "arena"), pytest.raises(MemoryBudgetError) as info:
        b.reserve(3 * GiB // 2, "result buffer for get()")
    err = info.value
    assert isinstance(err, MemoryError)
    assert isinstance(err, MmfsError)
    msg = str(err)
    assert "result buffer for get()" in msg
    assert "1.5 GiB" in msg  # the size, readable
    assert str(3 * GiB // 2) in msg  # and exact
    assert "in use 3 GiB" in msg
    assert "4 GiB limit" in msg
    assert "1 GiB free" in msg
    assert "nothing was allocated" in msg
    assert "iter_batches" in msg
    assert "memory_budget" in msg


def test_a_request_larger_than_the_limit_says_so_and_evicts_nothing() -> None:
    b = ledger(1000)
    cache = FakeCache(b, "c", [500])
    with pytest.raises(MemoryBudgetError, match="The request alone is larger than the limit"):
        b.reserve(1001, "huge")
    assert cache.asked == []  # emptying caches could not have helped
    assert b.in_use == 500


def test_memory_budget_error_is_caught_as_memory_error() -> None:
    b = ledger(1)
    with pytest.raises(MemoryError):
        b.reserve(2, "x")
    with pytest.raises(MmfsError):
        b.reserve(2, "x")


# ----------------------------------------------------------------------------- eviction


def test_eviction_frees_only_what_is_needed_before_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    b = ledger(1000)
    first = FakeCache(b, "first", [200, 100, 300])  # 600 in use
    second = FakeCache(b, "second", [300])  # 900 in use
    with caplog.at_level(logging.WARNING, logger="mmfs.budget"):
        r = b.reserve(250, "query")  # 150 short
    assert first.asked == [150]  # asked for exactly the shortfall
    assert second.asked == []  # not needed
    assert [e.nbytes for e in first.entries] == [100, 300]  # oldest first, and only one
    assert len(second.entries) == 1
    assert b.in_use == 100 + 300 + 300 + 250
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.name == "mmfs.budget"
    assert "query" in record.getMessage()
    assert "200 B from 'first'" in record.getMessage()
    r.release()


def test_eviction_moves_on_to_the_next_cache_for_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    b = ledger(1000)
    first = FakeCache(b, "first", [100])
    second = FakeCache(b, "second", [400, 400])  # 900 in use
    third = FakeCache(b, "third", [50])  # 950 in use
    with caplog.at_level(logging.WARNING, logger="mmfs.budget"):
        b.reserve(500, "big")  # 450 short
    assert first.asked == [450]
    assert second.asked == [350]  # only what the first could not free
    assert third.asked == []
    assert first.entries == []
    assert [e.nbytes for e in second.entries] == [400]  # one entry was enough
    assert b.in_use == 400 + 50 + 500
    assert "100 B from 'first', 400 B from 'second'" in caplog.text


def test_eviction_that_frees_nothing_still_raises(caplog: pytest.LogCaptureFixture) -> None:
    b = ledger(1000)
    held = b.reserve(900, "held")
    asked: list[int] = []
    b.register_cache("empty", lambda n: asked.append(n) or 0)
    with caplog.at_level(logging.WARNING, logger="mmfs.budget"), pytest.raises(MemoryBudgetError):
        b.reserve(200, "x")
    assert asked == [100]
    assert b.in_use == 900
    assert "0 B from 'empty'" in caplog.text
    held.release()


def test_a_cache_that_claims_but_does_not_release_does_not_fool_the_ledger() -> None:
    b = ledger(1000)
    held = b.reserve(900, "held")
    b.register_cache("liar", lambda n: 10 * n)
    with pytest.raises(MemoryBudgetError):
        b.reserve(200, "x")
    assert b.in_use == 900
    held.release()


def test_the_next_cache_is_asked_for_what_the_ledger_still_lacks() -> None:
    b = ledger(1000)
    b.register_cache("liar", lambda n: 10 * n)  # claims much, releases nothing
    honest = FakeCache(b, "honest", [500, 400])  # 900 in use
    with b.charge(300, "x"):  # 200 short
        assert honest.asked == [200]  # the ledger, not the liar's claim, decides
        assert b.in_use == 400 + 300


def test_an_evict_callback_that_raises_leaves_the_ledger_unchanged() -> None:
    b = ledger(1000)
    held = b.reserve(900, "held")

    def broken(n: int) -> int:
        raise RuntimeError("cache is broken")

    b.register_cache("broken", broken)
    with pytest.raises(RuntimeError, match="cache is broken"):
        b.reserve(200, "x")
    assert b.in_use == 900
    # The eviction guard was reset: a later eviction still runs.
    b.unregister_cache("broken")
    cache = FakeCache(b, "ok", [])
    held.release()
    assert cache.asked == []


def test_a_callback_that_charges_is_not_evicted_for_recursively() -> None:
    b = ledger(1000)
    held = b.reserve(900, "held")
    inner_errors: list[MemoryBudgetError] = []

    def charging(n: int) -> int:
        try:
            b.reserve(500, "scratch inside eviction")  # over: must not recurse
        except MemoryBudgetError as exc:
            inner_errors.append(exc)
        held.release()
        return 900

    b.register_cache("charging", charging)
    with b.charge(200, "x"):
        assert b.in_use == 200
    assert len(inner_errors) == 1


def test_unregistered_caches_are_not_asked() -> None:
    b = ledger(1000)
    cache = FakeCache(b, "c", [900])
    b.unregister_cache("c")
    with pytest.raises(MemoryBudgetError):
        b.reserve(200, "x")
    assert cache.asked == []


def test_cache_registration_errors() -> None:
    b = ledger(1000)
    b.register_cache("c", lambda n: 0)
    with pytest.raises(ParameterError, match="'c' is already registered"):
        b.register_cache("c", lambda n: 0)
    with pytest.raises(ParameterError, match="must be callable"):
        b.register_cache("d", 3)  # type: ignore[arg-type]
    with pytest.raises(
        NotFoundError, match=r"no cache named 'e' is registered; registered: \['c'\]"
    ):
        b.unregister_cache("e")


# ----------------------------------------------------------------------------- threads


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads every microsecond, so an unlocked check-then-add would be caught."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("fast_switching")
def test_many_threads_never_take_the_ledger_over_its_limit() -> None:
    limit, n_threads, rounds = 1000, 16, 1500
    b = ledger(limit)
    start = threading.Barrier(n_threads)
    admitted = [0] * n_threads
    refused = [0] * n_threads
    seen_over: list[int] = []

    def work(i: int) -> None:
        rng = np.random.default_rng(i)
        sizes = rng.integers(1, 300, size=rounds)
        start.wait()
        for size in sizes:
            try:
                with b.charge(int(size), f"thread {i}"):
                    admitted[i] += 1
                    time.sleep(0)  # a yield, not a wait: lets the others charge meanwhile
                    used = b.in_use
                    if used > limit:
                        seen_over.append(used)
            except MemoryBudgetError:
                refused[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) + sum(refused) == n_threads * rounds
    assert sum(admitted) > 0
    assert sum(refused) > 0  # the threads did contend for the budget
    assert seen_over == []
    assert b.peak <= limit
    assert b.in_use == 0


@pytest.mark.usefixtures("fast_switching")
def test_many_threads_reserving_and_releasing_in_any_order_balance() -> None:
    b = ledger(None)
    n_threads, rounds = 8, 500
    start = threading.Barrier(n_threads)

    def work(i: int) -> None:
        rng = np.random.default_rng(100 + i)
        start.wait()
        held: list[Reservation] = []
        for size in rng.integers(0, 1000, size=rounds):
            held.append(b.reserve(int(size), "x"))
            if rng.random() < 0.5:
                held.pop(int(rng.integers(len(held)))).release()
        for r in held:
            r.release()
            r.release()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.in_use == 0


# ----------------------------------------------------------------------------- real memory

MemInfo = namedtuple("MemInfo", ["rss", "shared"])
MemInfoNoShared = namedtuple("MemInfoNoShared", ["rss"])


def fake_process(monkeypatch: pytest.MonkeyPatch, info: object) -> None:
    monkeypatch.setattr(psutil, "Process", lambda: SimpleNamespace(memory_info=lambda: info))


def test_process_memory_is_anonymous_resident_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_process(monkeypatch, MemInfo(rss=700 * 2**20, shared=200 * 2**20))
    assert process_memory() == 500 * 2**20  # the mapped (file-backed) pages are left out
    fake_process(monkeypatch, MemInfoNoShared(rss=300))
    assert process_memory() == 300  # platforms without "shared": plain RSS
    fake_process(monkeypatch, MemInfo(rss=10, shared=20))
    assert process_memory() == 0


def test_process_memory_measures_this_process() -> None:
    assert process_memory() > 0


def test_the_default_budget_measures_with_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_process(monkeypatch, MemInfo(rss=950, shared=0))
    b = MemoryBudget(1000)
    b.check_process(50)  # 950 + 50: exactly the limit
    with pytest.raises(MemoryBudgetError, match="the process already uses 950 B"):
        b.check_process(51)
    fake_process(monkeypatch, MemInfo(rss=951, shared=0))
    with pytest.raises(MemoryBudgetError, match="the process already uses 951 B"):
        b.check_process(50)


class Meter:
    """A stand-in for the process's real memory, counting how often it is read."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.value


def test_check_process_compares_real_memory_plus_extra() -> None:
    meter = Meter(900)
    b = MemoryBudget(1000, measure=meter)
    b.check_process()
    b.check_process(100)  # exactly the limit
    with pytest.raises(MemoryBudgetError) as info:
        b.check_process(101, what="index build")
    msg = str(info.value)
    assert "index build needs 101 B" in msg
    assert "the process already uses 900 B of its 1000 B limit" in msg
    assert meter.calls == 3
    assert MemoryBudget(1000, measure=None).check_process(10**9) is None


def test_charge_measures_only_near_the_limit() -> None:
    meter = Meter(0)
    b = MemoryBudget(1000, measure=meter)
    with b.charge(900, "at 90%"):  # not above 90%: no syscall
        assert meter.calls == 0
        with b.charge(1, "just above 90%"):
            assert meter.calls == 1
    assert b.in_use == 0


def test_charge_refused_by_real_memory_leaves_the_ledger_unchanged() -> None:
    meter = Meter(999)  # other things fill the process
    b = MemoryBudget(1000, measure=meter)
    with b.charge(100, "small"):  # far from the limit in the ledger: admitted unmeasured
        assert meter.calls == 0
        with pytest.raises(MemoryBudgetError, match="the process already uses 999 B"):
            b.reserve(850, "near the limit")
        assert meter.calls == 1
        assert b.in_use == 100
    assert b.in_use == 0


def test_real_memory_over_the_limit_evicts_caches_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    meter = Meter(0)
    b = MemoryBudget(1000, measure=meter)
    cache = FakeCache(b, "c", [200, 200, 200])  # ledger: 600
    meter.value = 1000  # untracked memory: the ledger is fine, the process is full

    def evict(n: int) -> int:
        freed = FakeCache.evict(cache, n)
        meter.value -= freed  # freeing the entries lowers the real memory too
        return freed

    b.unregister_cache("c")
    b.register_cache("c", evict)
    with caplog.at_level(logging.WARNING, logger="mmfs.budget"):
        r = b.reserve(350, "buffer")  # ledger 950 > 90%: measured; 1000 + 350 is 350 over
    assert cache.asked == [350]
    assert [e.nbytes for e in cache.entries] == [200]  # two entries freed 400
    assert meter.value == 600
    assert b.in_use == 200 + 350
    r.release()
    assert "real memory" in caplog.text


def test_real_memory_still_over_after_eviction_raises() -> None:
    meter = Meter(1000)
    b = MemoryBudget(1000, measure=meter)
    asked: list[int] = []
    b.register_cache("empty", lambda n: asked.append(n) or 0)
    with pytest.raises(MemoryBudgetError, match="the process already uses 1000 B"):
        b.reserve(950, "buffer")
    assert asked == [950]
    assert meter.calls == 1  # nothing was freed, so no second measurement
    assert b.in_use == 0


def test_real_memory_is_measured_again_after_an_eviction_that_freed_something() -> None:
    meter = Meter(1000)
    b = MemoryBudget(1000, measure=meter)
    b.register_cache("frees-but-memory-stays", lambda n: n)  # e.g. malloc keeps the pages
    with pytest.raises(MemoryBudgetError):
        b.reserve(950, "buffer")
    assert meter.calls == 2
    assert b.in_use == 0


# ----------------------------------------------------------------------------- chunks


def test_rows_for_budget_arithmetic() -> None:
    b = ledger(1000)
    with b.charge(200, "held"):  # 800 available
        assert b.rows_for_budget(7) == 800 // 4 // 7  # 28
        assert b.rows_for_budget(7, fraction=1.0) == 800 // 7
        assert b.rows_for_budget(7, fraction=0.5, maximum=10) == 10
        assert b.rows_for_budget(1000) == 1  # not even one row: the minimum
        assert b.rows_for_budget(1000, minimum=5) == 5
        assert b.rows_for_budget(np.int64(100), fraction=1) == 8
    with b.charge(1000, "everything"):
        assert b.rows_for_budget(1) == 1
    assert ledger(None).rows_for_budget(1000) == UNLIMITED_CHUNK_BYTES // 1000
    assert ledger(None).rows_for_budget(1000, maximum=64) == 64
    assert ledger(4 * GiB).rows_for_budget(512) == GiB // 512


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bytes_per_row": 0}, "bytes_per_row must be positive"),
        ({"bytes_per_row": -1}, "nbytes must be a non-negative int"),
        ({"bytes_per_row": 1.5}, "nbytes must be a non-negative int"),
        ({"bytes_per_row": 8, "fraction": 0}, r"fraction must be in \(0, 1\]"),
        ({"bytes_per_row": 8, "fraction": 1.5}, r"fraction must be in \(0, 1\]"),
        ({"bytes_per_row": 8, "fraction": True}, r"fraction must be in \(0, 1\]"),
        ({"bytes_per_row": 8, "fraction": "0.5"}, r"fraction must be in \(0, 1\]"),
        ({"bytes_per_row": 8, "minimum": 0}, "minimum must be an int >= 1"),
        ({"bytes_per_row": 8, "minimum": 2.0}, "minimum must be an int >= 1"),
        ({"bytes_per_row": 8, "minimum": 4, "maximum": 3}, r"maximum must be None or an int >= "),
        ({"bytes_per_row": 8, "maximum": True}, r"maximum must be None or an int >= "),
    ],
)
def test_rows_for_budget_rejects(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        ledger(1000).rows_for_budget(**kwargs)  # type: ignore[arg-type]
