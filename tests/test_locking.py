"""The single-writer lock: one holder at a time, across descriptors and processes."""

from __future__ import annotations

import fcntl
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mmfs.errors import MmfsError, ParameterError
from mmfs.storage.locking import LOCK_FILE_NAME, LockedError, WriterLock

HOLDER = """
import sys, time
from mmfs.storage.locking import WriterLock
lock = WriterLock(sys.argv[1]).acquire()
print("ready", flush=True)
time.sleep(120)
"""


def _holder_text(tmp_path: Path) -> str:
    return (tmp_path / LOCK_FILE_NAME).read_text()


def test_acquire_writes_holder_and_release_clears_it(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path)
    assert not lock.locked
    assert not (tmp_path / LOCK_FILE_NAME).exists()  # constructing takes nothing
    assert lock.acquire() is lock
    assert lock.locked
    assert _holder_text(tmp_path) == f"{os.getpid()} {socket.gethostname()}\n"
    assert "[held]" in repr(lock)
    lock.release()
    assert not lock.locked
    assert "[not held]" in repr(lock)
    assert _holder_text(tmp_path) == ""  # the file stays, never deleted
    lock.release()  # idempotent
    lock.release()


def test_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with WriterLock(tmp_path) as first:
        assert first.acquire() is first  # the same object: already held, a no-op
        second = WriterLock(tmp_path)  # its own open file description
        t0 = time.monotonic()
        with pytest.raises(LockedError) as info:
            second.acquire()
        assert time.monotonic() - t0 < 0.5  # timeout=0: at once
        assert not second.locked
    message = str(info.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "another writer holds the store" in message
    assert "timeout=0" in message
    assert "retry" in message
    assert "timeout=<seconds>" in message
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, MmfsError)
    with WriterLock(tmp_path):  # released by the with block
        pass


def test_timeout_waits_then_fails(tmp_path: Path) -> None:
    with WriterLock(tmp_path):
        t0 = time.monotonic()
        with pytest.raises(LockedError, match=r"within timeout=0\.25 s"):
            WriterLock(tmp_path, timeout=0.25).acquire()
        assert 0.25 <= time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_waiter_gets_the_lock_when_the_holder_releases(
    tmp_path: Path, timeout: float | None
) -> None:
    holder = WriterLock(tmp_path).acquire()
    timer = threading.Timer(0.2, holder.release)
    timer.start()
    try:
        t0 = time.monotonic()
        with WriterLock(tmp_path, timeout=timeout) as waiter:
            assert waiter.locked
            assert time.monotonic() - t0 >= 0.15
            assert not holder.locked
    finally:
        timer.join()


@pytest.mark.parametrize("timeout", [-1, -0.5, math.nan, "1", True, [1]])
def test_invalid_timeouts(tmp_path: Path, timeout: Any) -> None:
    with pytest.raises(ParameterError, match="timeout must be"):
        WriterLock(tmp_path, timeout=timeout)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        WriterLock(tmp_path / "nope").acquire()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "pid unknown"),
        ("4242", r"held by pid 4242\)"),
        ("4242 somehost\n", "held by pid 4242 on host somehost"),
    ],
)
def test_message_names_what_the_lock_file_says(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / LOCK_FILE_NAME
    path.write_text(content)
    with open(path, "rb") as f:  # a holder that locked but wrote (or finished writing) less
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(LockedError, match=expected):
            WriterLock(tmp_path).acquire()


def test_failure_after_locking_releases_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int, data: bytes, offset: int) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(os, "pwrite", broken)
    lock = WriterLock(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        lock.acquire()
    assert not lock.locked
    monkeypatch.undo()
    with WriterLock(tmp_path):
        pass


def test_a_dropped_lock_is_released(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path).acquire()
    del lock  # no release(): closing the descriptor drops the flock
    with WriterLock(tmp_path):
        pass


def test_other_process_holds_the_lock_until_killed(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            t0 = time.monotonic()
            with pytest.raises(LockedError, match=f"held by pid {proc.pid} on host"):
                WriterLock(tmp_path, timeout=0.3).acquire()
            assert 0.3 <= time.monotonic() - t0 < 3.0
            with pytest.raises(LockedError, match=f"pid {proc.pid}"):
                WriterLock(tmp_path).acquire()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The kernel released the lock with the dead process: no stale lock to clean up.
    with WriterLock(tmp_path, timeout=5.0):
        assert _holder_text(tmp_path).startswith(f"{os.getpid()} ")
