"""Model-based test of versions: a Hypothesis state machine against a model of every
version and of every key's event history.

The model keeps the committed rows, in order of writing, as one list of ``Row`` (key,
event time, write sequence, values), the rows written since the last commit, and for each
live version the number of committed rows it knew (``None`` for version 0, which predates
the group), its message and tags.  From these it derives what any read must show:

* ``get(keys, version=v)``: each key's row of greatest (event time, write sequence)
  among the first ``rows[v]`` committed rows; missing (masked, NaN / 0) where none or
  where that row is a delete's tombstone;
* ``get(keys, version=v, as_of=t)``: the same among those rows whose event time <= t;
* ``diff(v1, v2)``: the keys whose latest row differs between the two versions (every
  row carries a unique ``seq`` feature, so a different row is a different value);
* ``gc(keep, also)``: drops every version but the newest ``keep``, the tagged ones, the
  current one and ``also``; a dropped version then reads as NotFoundError.

Rules write small batches over a few keys with event times from a small set (ties and
late rows with old times are common), delete keys (at one of those times, or now),
commit (with or without a new tag; a taken tag is
refused and changes nothing), roll back, gc, reopen the writer, open a reader, and read
through both at live versions (by id or tag; one key or many; with and without as_of,
one time or one per key) and at dropped ones.  Invariants: ``store.versions()`` lists the
live versions with their messages and tags, every tag resolves to its version, and
``g.keys()`` lists the committed keys with a value in order of first write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pytest
from helpers import StoreMachine
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

import mmfs

SCHEMA: dict[str, Any] = {
    "x": mmfs.scalar("float64"),
    "n": mmfs.scalar("int64"),
    "seq": mmfs.scalar("int64"),
}
KEYS = list(range(8))  # written keys
PROBE_KEYS = [*KEYS, 8, 9, -1]  # and some never written
T0 = np.datetime64("2020-01-01T00:00:00", "ns")
SECOND = 10**9
TIMES = [0, 1, 2, 5, 10]  # event times written, in seconds after T0: ties are common
AS_OF = [-1, 0, 1, 3, 5, 7, 10, 100]  # event times read: before, on and between them
TAGS = ["prod", "a", "b", "c", "release-1", "ü"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.5, np.nan, np.inf, -np.inf]),
    st.floats(),
)
INTS = st.one_of(st.sampled_from([0, -1, INT64_MIN, INT64_MAX]), st.integers(INT64_MIN, INT64_MAX))
BATCH = st.lists(  # rows (key, event time in seconds after T0, x, n) of one write
    st.tuples(st.sampled_from(KEYS), st.sampled_from(TIMES), FLOATS, INTS),
    min_size=1,
    max_size=8,
)


@dataclass(frozen=True)
class Row:
    """One written row as the model keeps it."""

    key: int
    t: int  # event time, ns after T0
    seq: int  # write sequence (unique, increasing; also stored as the "seq" feature)
    x: float
    n: int
    deleted: bool = False  # a delete's tombstone


def latest(rows: list[Row], t: int | None = None) -> dict[int, Row]:
    """Each key's row of greatest (event time, write sequence), among those with event
    time <= t when t is given; keys whose row is a tombstone are left out."""
    out: dict[int, Row] = {}
    for r in rows:
        if t is not None and r.t > t:
            continue
        old = out.get(r.key)
        if old is None or (r.t, r.seq) > (old.t, old.seq):
            out[r.key] = r
    return {k: r for k, r in out.items() if not r.deleted}


def same_floats(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal values, NaN where NaN, and the sign of every zero too."""
    return (
        got.shape == want.shape
        and bool(np.array_equal(got, want, equal_nan=True))
        and bool(np.array_equal(np.signbit(got), np.signbit(want)))
    )


def check_batch(batch: mmfs.FeatureBatch, expected: list[Row | None], where: str) -> None:
    """Assert that a batch holds the expected row of each key (None: missing)."""
    n = len(expected)
    found = np.array([r is not None for r in expected], dtype=bool)
    assert len(batch) == n, where
    assert np.array_equal(batch.mask, ~found), f"{where}: mask {batch.mask}, want {~found}"
    want_seq = np.array([0 if r is None else r.seq for r in expected], dtype=np.int64)
    got_seq = np.asarray(batch["seq"])
    assert np.array_equal(got_seq, want_seq), f"{where}: rows (seq) {got_seq}, want {want_seq}"
    want_x = np.array([np.nan if r is None else r.x for r in expected], dtype=np.float64)
    got_x = np.asarray(batch["x"])
    assert got_x.dtype == np.float64, where
    assert same_floats(got_x, want_x), f"{where}: x {got_x}, want {want_x}"
    want_n = np.array([0 if r is None else r.n for r in expected], dtype=np.int64)
    got_n = np.asarray(batch["n"])
    assert got_n.dtype == np.int64, where
    assert np.array_equal(got_n, want_n), f"{where}: n {got_n}, want {want_n}"
    et = batch.event_time
    for i, r in enumerate(expected):
        if r is None:
            assert np.isnat(et[i]), f"{where}: event time of missing entry {i}: {et[i]}"
        else:
            assert et[i] == T0 + np.timedelta64(r.t, "ns"), f"{where}: event time {et[i]}"


class VersionsModel(StoreMachine):
    """The store's versions against the model (see the module docstring)."""

    prefix = "mmfs-versions-"

    def __init__(self) -> None:
        super().__init__()
        self.committed: list[Row] = []
        self.pending: list[Row] = []
        self.seq = 0
        # live version id -> number of committed rows it knew (None: no group yet)
        self.rows: dict[int, int | None] = {}
        self.messages: dict[int, str] = {}
        self.tags: dict[int, tuple[str, ...]] = {}
        self.dropped: set[int] = set()
        self.gen = 0
        self.durability: Literal["none", "commit"] = "none"

    @initialize(
        tag=st.sampled_from([None, *TAGS]),
        durability=st.sampled_from(["none", "commit"]),
        batches=st.lists(st.tuples(BATCH, st.booleans()), max_size=2),
    )
    def open_store(
        self,
        tag: str | None,
        durability: Literal["none", "commit"],
        batches: list[tuple[list[tuple[int, int, float, int]], bool]],
    ) -> None:
        """Create the store and the group, write some rows (or none) and commit."""
        self.durability = durability
        self.store = mmfs.open(self.path, durability=self.durability)
        self.rows[0] = None
        self.messages[0] = "create store"
        self.tags[0] = ()
        self.writer.create_group("g", schema=SCHEMA)
        for batch, one_time in batches:
            self.do_write(batch, one_time)
        self.do_commit("create g", tag)

    # -- helpers ---------------------------------------------------------------------------

    def live(self) -> list[int]:
        return sorted(self.rows)

    def tag_of(self) -> dict[str, int]:
        return {t: v for v, ts in self.tags.items() for t in ts}

    def snapshot_rows(self, v: int) -> list[Row] | None:
        """The committed rows version v knew (None: the group did not exist)."""
        n = self.rows[v]
        return None if n is None else self.committed[:n]

    def draw_version(self, data: st.DataObject) -> tuple[int, int | str | None]:
        """(a live version id, how to name it: the id, one of its tags, or None for the
        current one)."""
        v = data.draw(st.sampled_from(self.live()), label="version")
        refs: list[int | str | None] = [v, *self.tags[v]]
        if v == self.gen:
            refs.append(None)
        return v, data.draw(st.sampled_from(refs), label="version ref")

    def do_write(self, batch: list[tuple[int, int, float, int]], one_time: bool) -> None:
        """Write rows (key, event time in s, x, n), at one event time for all of them
        (the first one's) or one each, and add them to the pending model."""
        if one_time:
            batch = [(k, batch[0][1], x, n) for k, _, x, n in batch]
            event_time: Any = T0 + np.timedelta64(batch[0][1], "s")
        else:
            event_time = T0 + np.array([b[1] for b in batch], dtype=np.int64) * np.timedelta64(
                1, "s"
            )
        seqs = list(range(self.seq + 1, self.seq + 1 + len(batch)))
        self.seq += len(batch)
        written = self.writer["g"].write(
            [b[0] for b in batch],
            {
                "x": np.array([b[2] for b in batch], dtype=np.float64),
                "n": np.array([b[3] for b in batch], dtype=np.int64),
                "seq": np.array(seqs, dtype=np.int64),
            },
            event_time=event_time,
        )
        assert written == len(batch)
        self.pending += [
            Row(k, t * SECOND, s, x, n) for (k, t, x, n), s in zip(batch, seqs, strict=True)
        ]

    def do_commit(self, message: str, tag: str | None) -> None:
        v = self.writer.commit(message, tags=None if tag is None else [tag])
        self.gen += 1
        assert v == self.gen
        self.committed += self.pending
        self.pending = []
        self.rows[v] = len(self.committed)
        self.messages[v] = message
        self.tags[v] = () if tag is None else (tag,)

    def check_read(
        self,
        data: st.DataObject,
        store: mmfs.Store,
        who: str,
        v: int,
        ref: int | str | None,
    ) -> None:
        """A get of drawn keys at live version v (named ref), with or without as_of."""
        rows = self.snapshot_rows(v)
        g = store["g"]
        form = data.draw(st.sampled_from(["all", "list", "one"]), label="key form")
        if form == "all":
            keys = list(data.draw(st.permutations(PROBE_KEYS), label="keys"))
        elif form == "list":
            keys = data.draw(st.lists(st.sampled_from(PROBE_KEYS), max_size=12), label="keys")
        else:
            keys = [data.draw(st.sampled_from(PROBE_KEYS), label="key")]
        arg: Any = keys[0] if form == "one" else keys
        as_of_mode = data.draw(st.sampled_from(["none", "one", "each"]), label="as_of")
        as_of: Any = None
        times: list[int | None] = [None] * len(keys)
        if as_of_mode == "one":
            s = data.draw(st.sampled_from(AS_OF), label="as_of time")
            as_of = T0 + np.timedelta64(s, "s")
            times = [s * SECOND] * len(keys)
        elif as_of_mode == "each" and form != "one":
            chosen = data.draw(
                st.lists(st.sampled_from(AS_OF), min_size=len(keys), max_size=len(keys)),
                label="as_of times",
            )
            as_of = T0 + np.array(chosen, dtype=np.int64) * np.timedelta64(1, "s")
            times = [s * SECOND for s in chosen]
        where = f"{who} get({arg!r}, version={ref!r}, as_of={as_of!r}) (version {v})"
        if rows is None:  # version 0: the group did not exist yet
            with pytest.raises(mmfs.NotFoundError):
                g.get(arg, version=ref, as_of=as_of)
            return
        batch = g.get(arg, version=ref, as_of=as_of)
        cache: dict[int | None, dict[int, Row]] = {}
        expected: list[Row | None] = []
        for k, t in zip(keys, times, strict=True):
            if t not in cache:
                cache[t] = latest(rows, t)
            expected.append(cache[t].get(k))
        check_batch(batch, expected, where)

    # -- rules -----------------------------------------------------------------------------

    @rule(batch=BATCH, one_time=st.booleans())
    def write(self, batch: list[tuple[int, int, float, int]], one_time: bool) -> None:
        """A few rows over a few keys (duplicates in one write: the later one wins ties)."""
        self.do_write(batch, one_time)

    @rule(
        keys=st.lists(st.sampled_from(PROBE_KEYS), max_size=4),
        when=st.sampled_from([None, *TIMES]),
    )
    def delete(self, keys: list[int], when: int | None) -> None:
        """Delete keys at one event time (None: now, after every time written); keys
        never written (committed or pending) are ignored."""
        known = {r.key for r in self.committed + self.pending}
        event_time = None if when is None else T0 + np.timedelta64(when, "s")
        t = (np.datetime64("now", "ns") - T0).astype(np.int64) if when is None else when * SECOND
        deleted = self.writer["g"].delete(keys, event_time=event_time)
        chosen = [k for k in keys if k in known]
        assert deleted == len(chosen)
        for k in chosen:  # a tombstone takes a write sequence, like a row
            self.seq += 1
            self.pending.append(Row(k, int(t), self.seq, np.nan, 0, deleted=True))

    @rule(
        batches=st.lists(st.tuples(BATCH, st.booleans()), max_size=3),
        tag=st.one_of(st.none(), st.sampled_from(TAGS)),
        message=st.text(max_size=5),
    )
    def commit(
        self,
        batches: list[tuple[list[tuple[int, int, float, int]], bool]],
        tag: str | None,
        message: str,
    ) -> None:
        """Write some batches (or none) and commit; a tag that already names a version is
        refused and changes nothing: the rows stay pending."""
        for batch, one_time in batches:
            self.do_write(batch, one_time)
        if tag is not None and tag in self.tag_of():
            with pytest.raises(mmfs.ParameterError):
                self.writer.commit(message, tags=[tag])
            assert self.writer.generation == self.gen
            return
        self.do_commit(message, tag)

    @rule(reopen=st.booleans())
    def discard(self, reopen: bool) -> None:
        """Roll back, or close the writer and open the store again: what was not
        committed is gone either way."""
        if reopen:
            self.writer.close()
            self.store = mmfs.open(self.path, durability=self.durability)
            assert self.writer.generation == self.gen
        else:
            self.writer.rollback()
        self.pending = []

    @rule(keep=st.integers(1, 3), data=st.data())
    def gc(self, keep: int, data: st.DataObject) -> None:
        also = data.draw(st.lists(st.sampled_from(self.live()), unique=True), label="also")
        live = self.live()
        kept = set(live[-keep:]) | {v for v in live if self.tags[v]} | {self.gen} | set(also)
        want = [v for v in live if v not in kept]
        result = self.writer.gc(keep=keep, also=also)
        assert result["dropped"] == want, f"gc(keep={keep}, also={also}): {result}"
        assert isinstance(result["bytes_freed"], int)
        assert result["bytes_freed"] >= 0
        for v in want:
            del self.rows[v], self.messages[v], self.tags[v]
            self.dropped.add(v)

    @rule()
    def open_reader(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.reader = mmfs.open(self.path, mode="r")
        assert self.reader.generation == self.gen

    @rule(data=st.data())
    def get_writer(self, data: st.DataObject) -> None:
        v, ref = self.draw_version(data)
        self.check_read(data, self.writer, "writer", v, ref)

    @precondition(lambda self: self.reader is not None)
    @rule(data=st.data())
    def get_reader(self, data: st.DataObject) -> None:
        """A reader opened before later commits and gcs reads every live version, and
        lists them."""
        assert self.reader is not None
        v, ref = self.draw_version(data)
        self.check_read(data, self.reader, "reader", v, ref)
        # Only now (invariants leave the reader alone, so that its reads meet snapshots
        # made stale by the writer's commits and gcs since its last call).
        assert [x.id for x in self.reader.versions()] == self.live()

    @rule(data=st.data())
    def get_all_versions(self, data: st.DataObject) -> None:
        """Every key at every live version, one as_of time (or none) for all."""
        s = data.draw(st.sampled_from([None, *AS_OF]), label="as_of")
        as_of = None if s is None else T0 + np.timedelta64(s, "s")
        g = self.writer["g"]
        for v in self.live():
            rows = self.snapshot_rows(v)
            if rows is None:
                continue
            want = latest(rows, None if s is None else s * SECOND)
            batch = g.get(PROBE_KEYS, version=v, as_of=as_of)
            check_batch(batch, [want.get(k) for k in PROBE_KEYS], f"version {v} as_of {s}")

    @precondition(lambda self: bool(self.dropped))
    @rule(data=st.data())
    def get_dropped(self, data: st.DataObject) -> None:
        """A version dropped by gc reads as NotFoundError, through the writer, the reader
        (which may have read it before the gc) or a reader opened since."""
        v = data.draw(st.sampled_from(sorted(self.dropped)), label="dropped version")
        who = data.draw(st.sampled_from(["writer", "reader", "fresh reader"]), label="who")
        store = self.writer
        if who == "reader" and self.reader is not None:
            store = self.reader
        elif who == "fresh reader":
            if self.reader is not None:
                self.reader.close()
            store = self.reader = mmfs.open(self.path, mode="r")
        key: Any = data.draw(st.sampled_from([KEYS[0], KEYS[:3]]), label="keys")
        as_of = data.draw(st.sampled_from([None, T0 + np.timedelta64(5, "s")]), label="as_of")
        with pytest.raises(mmfs.NotFoundError):
            store["g"].get(key, version=v, as_of=as_of)
        other = data.draw(st.sampled_from(self.live()), label="other version")
        with pytest.raises(mmfs.NotFoundError):
            store.diff(v, other)

    @rule(data=st.data())
    def diff(self, data: st.DataObject) -> None:
        a, ref_a = self.draw_version(data)
        b, ref_b = self.draw_version(data)
        ref_a = a if ref_a is None else ref_a
        ref_b = b if ref_b is None else ref_b
        got = self.writer.diff(ref_a, ref_b)
        ra, rb = self.snapshot_rows(a), self.snapshot_rows(b)
        if ra is None or rb is None:
            assert got == {}, f"diff({a}, {b}) = {got}"
            return
        la, lb = latest(ra), latest(rb)
        want = sorted(k for k in set(la) | set(lb) if la.get(k) != lb.get(k))
        assert set(got) == {"g"}, f"diff({a}, {b}) = {got}"
        keys = np.asarray(got["g"]).tolist()
        assert len(keys) == len(set(keys)), f"diff({a}, {b}) repeats a key: {keys}"
        assert sorted(keys) == want, f"diff({a}, {b}) = {keys}, want {want}"

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def versions_equal_the_model(self) -> None:
        if self.store is None:
            return
        listed = self.writer.versions()
        assert [v.id for v in listed] == self.live()
        assert [v.message for v in listed] == [self.messages[v] for v in self.live()]
        assert [v.tags for v in listed] == [self.tags[v] for v in self.live()]
        for tag, v in self.tag_of().items():
            assert self.writer.version(tag) == v
        assert self.writer.generation == self.gen
        have = latest(self.committed)
        committed_keys = [k for k in dict.fromkeys(r.key for r in self.committed) if k in have]
        assert np.asarray(self.writer["g"].keys()).tolist() == committed_keys
        assert len(self.writer["g"]) == len(committed_keys)


TestVersionsModel = VersionsModel.TestCase
TestVersionsModel.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
