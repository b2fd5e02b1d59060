"""One writer at a time: the writer lock of a store directory.

A store has any number of readers and at most one writer.  Readers take no lock (they
only open files that were published whole, by atomic rename).  A writer holds
``fcntl.flock(LOCK_EX)`` on ``<store>/.writer.lock`` for as long as it may write.

Why flock
---------
* The kernel releases the lock when the last descriptor of the open file description
  is closed, so a writer that dies by any means (exception, ``os._exit``, SIGKILL, OOM
  kill, power loss) never leaves a stale lock: no pid files to clean up, no lease to
  expire.  The lock file itself is created when missing and never deleted (deleting it
  would let two writers lock two different inodes).
* flock belongs to the *open file description*, not the process: a second
  :class:`WriterLock` in the same process opens the file again and is refused like any
  other writer, and threads share nothing by accident.  The descriptor is opened
  ``O_CLOEXEC`` so programs started by the writer do not inherit the lock; a ``fork()``ed
  child does share it (and a child's ``release()`` would release it for both), so do not
  fork while holding it — mmfs worker pools use spawn or forkserver.
* flock is advisory and local: it coordinates mmfs processes on one machine.  Over NFS
  Linux emulates it with byte-range locks, which works only where the server supports
  them; a store shared between machines needs a writer chosen outside mmfs.

The lock file holds ``"<pid> <hostname>\\n"`` of the current holder, written after the
lock is acquired and cleared before it is released.  It is informational only (it names
the holder in :class:`LockedError`); the flock alone decides who holds the lock.
"""

from __future__ import annotations

import fcntl
import math
import os
import socket
import time
from types import TracebackType
from typing import Final

from mmfs.errors import LockedError, ParameterError

__all__ = ["LOCK_FILE_NAME", "LockedError", "WriterLock"]

LOCK_FILE_NAME: Final = ".writer.lock"
_POLL_FIRST: Final = 0.005  # seconds between tries, doubling up to _POLL_MAX
_POLL_MAX: Final = 0.1


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ParameterError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ParameterError(
            f"timeout must be >= 0 seconds (0: fail at once) or None (wait forever), "
            f"got {timeout!r}"
        )
    return float(timeout)


class WriterLock:
    """The exclusive writer lock of the store directory ``directory``.

    ``timeout``: how long :meth:`acquire` waits for another writer to finish, in seconds;
    ``0`` (the default) fails at once, ``None`` waits forever.  When it runs out,
    :class:`LockedError` names the holder.  Use as a context manager, or call
    :meth:`acquire` and :meth:`release` (idempotent)::

        with WriterLock(store_dir, timeout=5.0):
            ...  # write, commit

    Constructing the object takes no lock; :meth:`acquire` (or ``with``) does.
    """

    def __init__(self, directory: str | os.PathLike[str], timeout: float | None = 0.0) -> None:
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, LOCK_FILE_NAME)
        self.timeout = _check_timeout(timeout)
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> WriterLock:
        """Take the lock, waiting up to ``timeout`` seconds; a no-op if already held."""
        if self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._wait_for(fd)
            holder = f"{os.getpid()} {socket.gethostname()}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder, 0)
        except BaseException:
            os.close(fd)  # closing the descriptor also drops the lock if we got it
            raise
        self._fd = fd
        return self

    def _wait_for(self, fd: int) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        pause = _POLL_FIRST
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise LockedError(self._locked_message(fd))
            wait = pause if deadline is None else min(pause, deadline - now)
            time.sleep(wait)
            pause = min(pause * 2, _POLL_MAX)

    def _locked_message(self, fd: int) -> str:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
        if len(text) >= 2:
            holder = f"pid {text[0]} on host {text[1]}"
        elif text:
            holder = f"pid {text[0]}"
        else:
            holder = "pid unknown: it has not written its name yet"
        waited = (
            "it did not finish at once (timeout=0)"
            if not self.timeout
            else f"it did not finish within timeout={self.timeout:g} s"
        )
        return (
            f"another writer holds the store {self.directory} (lock file {self.path}, held "
            f"by {holder}) and {waited}; retry when it is done, or pass timeout=<seconds> "
            "(None waits forever) to wait for it"
        )

    def release(self) -> None:
        """Give the lock up; safe to call any number of times."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # nobody holds it: forget the holder's name
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        # A lock dropped without release() is released by closing its descriptor.
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            os.close(fd)

    def __repr__(self) -> str:
        state = "held" if self._fd is not None else "not held"
        return f"WriterLock({self.directory!r}, timeout={self.timeout!r}) [{state}]"
