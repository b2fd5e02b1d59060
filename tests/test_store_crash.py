"""Crash safety: a writer killed with SIGKILL at any moment leaves exactly its last commit.

The trial loop, the writer process and the model of the commits live in
``tools/crash_stress.py`` (which runs the same trials, 1000 by default, as a script); see
its docstring for what each trial checks.  Here: the harness agrees with an uninterrupted
store, a default run of kill trials (writers forked by a fork server that was started
with ``subprocess.Popen([sys.executable, "-c", SCRIPT, ...])``), kills during the creation
of fresh stores, a few trials whose every writer is a fresh interpreter, and the one
state a kill leaves that a test can build exactly: the manifest renamed, HEAD not yet
written.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import mmfs


def _load_tool() -> ModuleType:
    name = "mmfs_crash_stress"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).parent.parent / "tools/crash_stress.py"
    )
    assert spec is not None
    assert spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    sys.modules[name] = tool  # dataclasses look their module up by name
    spec.loader.exec_module(tool)
    return tool


cs: Any = _load_tool()


@pytest.fixture(scope="module")
def fork_server() -> Iterator[Any]:
    server = cs.ForkServer()
    try:
        yield server
    finally:
        server.close()


def test_model_matches_an_uninterrupted_writer(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    model = cs.Model()
    with mmfs.open(tmp_path / "s", segment_bytes=cs.SEGMENT_BYTES) as store:
        cs.check_state(store, model, rng, "empty store")
        for i in range(1, 15):
            cs.apply_commit(store, i)
            model.advance(i)
            cs.check_state(store, model, rng, f"after commit {i}")
        assert store.verify() == {cs.GROUP: len(model.last)}
    files = os.listdir(tmp_path / "s" / "groups" / "g0")
    for arena in ("rows", "pages", "sp-tags-idx", "sp-tags-val"):  # commits cross segments
        assert sum(f.startswith(f"{arena}-0000") for f in files) >= 2, arena
    with mmfs.open(tmp_path / "s", mode="r") as reader:
        cs.check_state(reader, model, rng, "a reader")


def test_commit_plan_is_deterministic() -> None:
    for i in (1, 2, 7, 100):
        a, b = cs.commit_chunks(i), cs.commit_chunks(i)
        assert len(a) == len(b)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        ids = np.concatenate(a)
        new = ids[ids >= cs.base(i)]
        assert sorted(new.tolist()) == list(range(cs.base(i), cs.base(i + 1)))
        assert (ids < cs.base(i + 1)).all()
        writes = cs.commit_writes(i)
        normal = [c for c, late in writes if not late]
        assert all(np.array_equal(x, y) for x, y in zip(a, normal, strict=True))
        assert all((c < cs.base(i)).all() for c, late in writes if late)
    assert np.unique(cs.key_of(np.arange(100_000))).shape[0] == 100_000


def test_kill_trials(tmp_path: Path, fork_server: Any) -> None:
    stats = cs.Trials(tmp_path, fork_server, seed=20240611, fresh=0.04).run(50)
    print(stats.summary())
    assert stats.trials == 50
    assert set(stats.modes) == set(cs.MODES)
    assert set(stats.durability) == {"commit", "none"}
    assert sum(stats.progress.values()) == 50
    assert max(stats.progress) >= 2  # some writers completed several commits
    assert stats.progress[0] > 0  # and some were killed in their first commit


def test_kills_while_creating_a_store(tmp_path: Path, fork_server: Any) -> None:
    trials = cs.Trials(tmp_path, fork_server, seed=5, fresh=1.0, modes={"open": 0.5, "delay": 0.5})
    stats = trials.run(10)
    assert stats.trials == 10
    assert stats.fresh_stores >= 10


def test_kill_trials_fresh_interpreters(tmp_path: Path) -> None:
    """Each writer its own ``Popen([sys.executable, "-c", SCRIPT, ...])``, nothing forked
    (two trials only: an interpreter that imports numpy and scipy takes a while)."""
    with cs.launcher(spawn=True) as spawner:
        trials = cs.Trials(tmp_path, spawner, seed=99, modes={"marker-C": 0.5, "delay": 0.5})
        stats = trials.run(2, calibrate=False)
    assert stats.trials == 2


def test_reader_after_a_kill_between_manifest_and_head(tmp_path: Path) -> None:
    """A kill after the manifest rename (the commit point) but before HEAD is written: a
    reader opened before any writer recovers must read the new generation, by every path."""
    path = tmp_path / "s"
    model = cs.Model()
    with mmfs.open(path, segment_bytes=cs.SEGMENT_BYTES) as store:
        for i in (1, 2, 3):
            cs.apply_commit(store, i)
    model.advance(3)
    # What the kill leaves: manifest 3 published, HEAD still at 2.
    fd = os.open(path / "HEAD.mmfs", os.O_WRONLY)
    try:
        os.pwrite(fd, struct.pack("<Q", 2), 128)
    finally:
        os.close(fd)
    rng = np.random.default_rng(3)
    with mmfs.open(path, mode="r") as reader:
        assert reader.generation == 3
        cs.check_state(reader, model, rng, "reader, HEAD behind the manifest")
        key = int(cs.key_of(np.array([cs.base(3)]))[0])  # first written by commit 3
        one = reader[cs.GROUP].get(key)
        assert one.found.all()
        assert reader.verify() == {cs.GROUP: len(model.last)}
        with mmfs.open(path, mode="a") as writer:  # recovery repairs HEAD
            cs.check_state(writer, model, rng, "writer after recovery")
            cs.apply_commit(writer, 4)
            model.advance(4)
        cs.check_state(reader, model, rng, "the same reader after commit 4")
