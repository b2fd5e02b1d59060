"""The memory ledger: every allocation that grows with data is charged here first.

Design
------
A :class:`MemoryBudget` is a byte counter with a limit, guarded by one lock.  Code that is
about to allocate something whose size depends on the data (arena growth, result
buffers, index builds, caches) first takes a :class:`Reservation` for that many bytes::

    with budget.charge(n_rows * row_bytes, "result buffer for get()"):
        out = np.empty((n_rows, width), dtype)
        ...

The check happens *before* the allocation, so a refused request leaves nothing
half-built: ``MemoryBudgetError`` (a ``MemoryError``) is raised and the ledger is exactly
as it was.  The order of a charge is:

1. **Ledger.**  Under the lock, if ``in_use + nbytes <= limit`` the bytes are recorded and
   the charge is admitted.  This is the common case: a compare and an add, no syscall.
2. **Eviction.**  If the ledger would go over, the registered caches
   (:meth:`MemoryBudget.register_cache`) are asked, in registration order, to free the
   shortfall; each callback ``evict(nbytes_needed) -> bytes_freed`` picks what to drop
   (largest or oldest first, as that cache sees fit) and releases its own reservations,
   which is what lowers the ledger.  A cache is asked only for what is still missing, and
   a later cache only if the earlier ones did not free enough; what is missing is read
   from the ledger, not from what callbacks claim.  Callbacks run outside the ledger lock
   (they release reservations, which takes it) but one at a time, under a separate
   eviction lock.  A request larger than the whole limit evicts nothing.  Every eviction
   round logs one warning on the ``mmfs.budget`` logger.  If the request still does not
   fit, the error is raised.
3. **Real memory.**  The ledger only knows what was charged; the interpreter, numpy
   temporaries and other libraries use memory too.  So when a charge would take the
   ledger above 90% of the limit (:data:`PROCESS_CHECK_FRACTION`), the process's real
   memory is measured as well (:meth:`MemoryBudget.check_process`) and the request is
   refused if ``measured + nbytes`` exceeds the limit (caches are evicted first here
   too).  Below that threshold no syscall is made, so a charge far from the limit costs
   a lock and two integer operations.

What "real memory" means: on Linux it is the process's *anonymous* resident memory,
``rss - shared`` from ``psutil.Process().memory_info()`` (one read of
``/proc/self/statm``).  File-backed pages are left out on purpose: the pages of a mapped
store are page cache, shared with every other reader and dropped by the kernel under
pressure, so counting them would refuse reads of any store larger than the budget.
USS (``memory_full_info().uss``) would be slightly more exact but costs a walk of
``/proc/self/smaps``, milliseconds for a process with many mappings, so it is not used
on the charge path.  On other platforms, where ``shared`` is not reported, it is the
plain RSS.  The budget therefore covers the whole process, interpreter included: leave
room for it, or construct the budget with ``measure=None`` to use the ledger alone.

A limit of ``None`` means unlimited: charges are still recorded (``in_use`` and ``peak``
stay meaningful for reports and tests) but never refused, and no memory is measured.

Large reads are streamed rather than refused: :meth:`MemoryBudget.rows_for_budget` says
how many rows a chunk may have so that its buffers use a fixed fraction of what is still
available (scikit-learn's ``get_chunk_n_rows`` idea).

Budgets are written as :func:`parse_budget` reads them: ``None``, a byte count, a
fraction of RAM (``0.25``), or a string (``"4GiB"``, ``"800MB"``, ``"10%"``).

Nothing here is global: all state lives in the ``MemoryBudget`` instance, and the only
inputs from outside are the machine's RAM (for fractions) and the measured process
memory, both of which callers and tests may replace.
"""

from __future__ import annotations

import contextlib
import logging
import math
import operator
import re
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from types import TracebackType
from typing import SupportsIndex

import psutil

from mmfs.errors import MemoryBudgetError, NotFoundError, ParameterError

__all__ = [
    "PROCESS_CHECK_FRACTION",
    "UNLIMITED_CHUNK_BYTES",
    "MemoryBudget",
    "Reservation",
    "format_bytes",
    "parse_budget",
    "process_memory",
    "total_memory",
]

logger = logging.getLogger("mmfs.budget")

#: A charge that takes the ledger above this fraction of the limit also measures the
#: process's real memory.  Below it, charging makes no syscall.
PROCESS_CHECK_FRACTION = Fraction(9, 10)

#: With no limit, :meth:`MemoryBudget.rows_for_budget` sizes chunks to this many bytes
#: (the same 256 MiB as ``working_memory`` in :mod:`mmfs.neighbors`).
UNLIMITED_CHUNK_BYTES = 256 * 2**20

#: The largest byte count accepted anywhere (no machine has 8 EiB of memory).
MAX_BYTES = 2**63 - 1

# cgroup v2, then v1.  v2 says "max" when unlimited, v1 a huge number; both are handled.
_CGROUP_MEMORY_FILES = (
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
)

_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

# Lower-cased unit -> multiplier.  Binary units are powers of 1024, decimal ones of 1000.
_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}

_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*|%)\s*$")

_EXAMPLES = "None, a byte count such as 4_000_000_000, a fraction of RAM such as 0.5, "
_EXAMPLES += "or a string such as '4GiB', '512MiB', '1.5 GB' or '10%'"


# ----------------------------------------------------------------------------- helpers


def format_bytes(n: int) -> str:
    """A byte count for people: ``512 B``, ``1.5 GiB``, ``4 GiB`` (binary units).

    One decimal at most, and none when it is zero; the unit is the largest in which the
    rounded value stays below 1024.
    """
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    unit = 0
    while unit < len(_BINARY_UNITS) - 1 and round(value, 1) >= 1024:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{sign}{int(value)} B"
    text = f"{value:.1f}".removesuffix(".0")
    return f"{sign}{text} {_BINARY_UNITS[unit]}"


def _read_cgroup_limit(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    if not text.isdigit():  # "max" (v2, unlimited) or anything unexpected
        return None
    return int(text)


def total_memory() -> int:
    """Bytes of RAM this process may use: physical memory, capped by a cgroup limit."""
    total = int(psutil.virtual_memory().total)
    for path in _CGROUP_MEMORY_FILES:
        limit = _read_cgroup_limit(path)
        if limit is not None and 0 < limit < total:
            total = limit
    return total


def process_memory() -> int:
    """The process's real memory in bytes, as the budget counts it.

    On Linux: anonymous resident memory, ``rss - shared`` (file-backed pages such as a
    mapped store are page cache and are not counted).  Elsewhere: RSS.  One cheap read
    (``/proc/self/statm`` on Linux); see the module docstring for why not USS.
    """
    info = psutil.Process().memory_info()
    return max(0, int(info.rss) - int(getattr(info, "shared", 0)))


def _bad(value: object, name: str, why: str) -> ParameterError:
    return ParameterError(f"{name}={value!r} is not a memory budget: {why}; expected {_EXAMPLES}")


def _from_fraction(fraction: Fraction | float, value: object, name: str) -> int:
    nbytes = math.floor(Fraction(fraction) * total_memory())
    if nbytes < 1:  # pragma: no cover - needs a machine with almost no RAM
        raise _bad(value, name, "that fraction of RAM is less than one byte")
    return nbytes


def _check_bytes(nbytes: int, value: object, name: str) -> int:
    if nbytes <= 0:
        raise _bad(value, name, "a byte count must be positive (use None for no limit)")
    if nbytes > MAX_BYTES:
        raise _bad(value, name, f"{nbytes} bytes is more than any machine has")
    return nbytes


def parse_budget(value: object, *, name: str = "memory_budget") -> int | None:
    """Read a memory budget; return its size in bytes, or None for no limit.

    Accepted:

    * ``None``: no limit.
    * an int (or numpy integer) > 0: bytes.
    * a float in (0, 1]: that fraction of :func:`total_memory` (``0.5`` is half the RAM).
    * a string: a number and a unit, spaces allowed, unit case-insensitive.  Binary
      ``KiB``, ``MiB``, ``GiB``, ``TiB`` are powers of 1024; decimal ``kB``, ``MB``,
      ``GB``, ``TB`` powers of 1000; ``B`` or no unit is bytes (a whole number);
      ``%`` is a percentage of RAM in (0, 100].  ``"4GiB"``, ``"1.5 GB"``, ``"10%"``.
      A fractional result is rounded down to whole bytes.

    Anything else (zero, negatives, NaN, infinities, bools, floats above 1, unknown
    units, more than 2**63 - 1 bytes) raises :class:`~mmfs.errors.ParameterError`
    quoting what arrived.  ``name`` is the parameter name used in that message.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise _bad(value, name, "a bool is not a size")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(value, name, "it is not a finite number")
        if not 0 < value <= 1:
            raise _bad(
                value,
                name,
                "a float is a fraction of RAM in (0, 1]; for bytes pass an int or a "
                "string with a unit",
            )
        return _from_fraction(value, value, name)
    if isinstance(value, str):
        return _parse_string(value, name)
    if not isinstance(value, SupportsIndex):  # int and numpy integers, not floats
        raise _bad(value, name, f"a {type(value).__name__} is not a size")
    return _check_bytes(operator.index(value), value, name)


def _parse_string(value: str, name: str) -> int:
    match = _BUDGET_RE.match(value)
    if match is None:
        raise _bad(value, name, "it is not a positive number followed by a unit")
    number, unit = match.group(1), match.group(2)
    amount = Fraction(number)
    if unit == "%":
        if not 0 < amount <= 100:
            raise _bad(value, name, "a percentage of RAM must be in (0, 100]")
        return _from_fraction(amount / 100, value, name)
    multiplier = _UNITS.get(unit.lower())
    if multiplier is None:
        raise _bad(
            value, name, f"unknown unit {unit!r} (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB or %)"
        )
    if multiplier == 1 and amount.denominator != 1:
        raise _bad(value, name, "bytes must be a whole number (for a fraction of RAM use '50%')")
    return _check_bytes(math.floor(amount * multiplier), value, name)


def _nbytes(nbytes: object) -> int:
    if isinstance(nbytes, bool) or not isinstance(nbytes, SupportsIndex):
        raise ParameterError(
            f"nbytes must be a non-negative int, got {type(nbytes).__name__} {nbytes!r}; "
            "round a computed size up with math.ceil first"
        )
    n = operator.index(nbytes)
    if n < 0:
        raise ParameterError(f"nbytes must be a non-negative int, got {n}")
    return n


# ----------------------------------------------------------------------------- ledger


class Reservation:
    """Bytes held in a :class:`MemoryBudget` until :meth:`release` (idempotent).

    Also a context manager that releases on exit.  Made by :meth:`MemoryBudget.reserve`.
    """

    __slots__ = ("_budget", "_released", "nbytes", "what")

    def __init__(self, budget: MemoryBudget, nbytes: int, what: str) -> None:
        self._budget = budget
        self._released = False
        self.nbytes = nbytes
        self.what = what

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Return the bytes to the budget.  Calling it again does nothing."""
        self._budget._release(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<Reservation {format_bytes(self.nbytes)} for {self.what!r}, {state}>"


class MemoryBudget:
    """A thread-safe ledger of the bytes a process has committed to data.

    ``limit`` is anything :func:`parse_budget` accepts (``None`` is unlimited).
    ``measure`` returns the process's real memory in bytes (default
    :func:`process_memory`); ``None`` turns the real-memory check off, leaving the
    ledger alone.  See the module docstring for the order of checks.
    """

    def __init__(
        self,
        limit: object = None,
        *,
        measure: Callable[[], int] | None = process_memory,
    ) -> None:
        self._limit = parse_budget(limit)
        self._measure = measure
        self._lock = threading.Lock()
        self._in_use = 0
        self._peak = 0
        self._caches: dict[str, Callable[[int], int]] = {}
        # Eviction callbacks run one at a time, outside the ledger lock (a cache's
        # callback releases reservations, which takes that lock).  Re-entrant so a
        # callback that charges does not deadlock; it just is not evicted for.
        self._evict_lock = threading.RLock()
        self._evicting = threading.local()

    # -- state

    @property
    def limit(self) -> int | None:
        """The limit in bytes, or None when unlimited."""
        return self._limit

    @property
    def in_use(self) -> int:
        """Bytes currently reserved."""
        with self._lock:
            return self._in_use

    @property
    def available(self) -> int | None:
        """Bytes that may still be reserved (``limit - in_use``), or None when unlimited."""
        with self._lock:
            return None if self._limit is None else max(0, self._limit - self._in_use)

    @property
    def peak(self) -> int:
        """The most bytes ever reserved at once (since creation or :meth:`reset_peak`)."""
        with self._lock:
            return self._peak

    def reset_peak(self) -> None:
        """Start peak tracking again from the current ``in_use``."""
        with self._lock:
            self._peak = self._in_use

    def __repr__(self) -> str:
        limit = "unlimited" if self._limit is None else format_bytes(self._limit)
        return f"<MemoryBudget {format_bytes(self.in_use)} of {limit} in use>"

    # -- caches

    def register_cache(self, name: str, evict: Callable[[int], int]) -> None:
        """Let the budget ask a cache to free memory before refusing a request.

        ``evict(nbytes_needed)`` should drop entries (largest or oldest first, as the
        cache decides) until it has freed at least ``nbytes_needed`` or has nothing left,
        release the reservations those entries held, and return the bytes it freed.
        Caches are asked in registration order; callbacks never run concurrently.
        """
        if not callable(evict):
            raise ParameterError(f"evict for cache {name!r} must be callable, got {evict!r}")
        with self._lock:
            if name in self._caches:
                raise ParameterError(
                    f"a cache named {name!r} is already registered; unregister_cache() it "
                    "first or pick another name"
                )
            self._caches[name] = evict

    def unregister_cache(self, name: str) -> None:
        """Stop asking the named cache to evict."""
        with self._lock:
            if name not in self._caches:
                raise NotFoundError(
                    f"no cache named {name!r} is registered; registered: {sorted(self._caches)}"
                )
            del self._caches[name]

    # -- charging

    def reserve(self, nbytes: SupportsIndex, what: str) -> Reservation:
        """Reserve ``nbytes`` for ``what`` before allocating it; release it when freed.

        Raises :class:`~mmfs.errors.MemoryBudgetError` if the bytes do not fit even after
        evicting caches; the ledger is then unchanged.  ``what`` names the request in
        messages (``"result buffer for get()"``).
        """
        n = _nbytes(nbytes)
        if not isinstance(what, str):
            raise ParameterError(f"what must be a str naming the request, got {what!r}")
        self._admit(n, what)
        return Reservation(self, n, what)

    @contextlib.contextmanager
    def charge(self, nbytes: SupportsIndex, what: str) -> Iterator[Reservation]:
        """``with budget.charge(n, what):`` reserve for the block, release on any exit."""
        reservation = self.reserve(nbytes, what)
        try:
            yield reservation
        finally:
            reservation.release()

    def _admit(self, n: int, what: str) -> None:
        with self._lock:
            limit = self._limit
            if limit is None:
                self._add(n)
                return
            shortfall = self._in_use + n - limit
            if shortfall <= 0:
                self._add(n)
        if shortfall > 0:
            # A request larger than the whole limit cannot be helped by emptying caches.
            if n <= limit:
                self._evict(lambda _freed: self._shortfall(n, limit), what, n, "the ledger")
            with self._lock:
                if self._in_use + n > limit:
                    raise self._error(what, n, self._in_use, limit)
                self._add(n)
        # Admitted by the ledger.  Only near the limit is the real memory measured too.
        if self._measure is not None and self.in_use > PROCESS_CHECK_FRACTION * limit:
            try:
                self.check_process(n, what=what)
            except BaseException:
                with self._lock:
                    self._in_use -= n
                raise

    def _shortfall(self, n: int, limit: int) -> int:
        """Bytes the ledger lacks for a request of ``n`` (<= 0 when it fits)."""
        with self._lock:
            return self._in_use + n - limit

    def _add(self, n: int) -> None:  # caller holds self._lock
        self._in_use += n
        if self._in_use > self._peak:
            self._peak = self._in_use

    def _release(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation._released:
                return
            reservation._released = True
            self._in_use -= reservation.nbytes

    def _evict(self, missing: Callable[[int], int], what: str, n: int, reason: str) -> int:
        """Ask the caches, in order, for what is still missing; return the bytes freed.

        ``missing(freed_so_far)`` says how many bytes are still needed.  It is asked
        again before each cache, after taking the eviction lock, so a thread that waited
        while another evicted does not evict again for room that is already free.
        """
        if getattr(self._evicting, "active", False):
            return 0  # a callback is charging; do not evict from inside eviction
        freed_total = 0
        needed = 0
        report: list[str] = []
        with self._evict_lock:
            self._evicting.active = True
            try:
                with self._lock:
                    caches = list(self._caches.items())
                needed = missing(0)
                for name, evict in caches:
                    remaining = missing(freed_total)
                    if remaining <= 0:
                        break
                    freed = max(0, int(evict(remaining)))
                    freed_total += freed
                    report.append(f"{format_bytes(freed)} from {name!r}")
            finally:
                self._evicting.active = False
        if report:
            logger.warning(
                "memory budget: %s for %s needs %s more than %s allows; evicted %s",
                format_bytes(n),
                what,
                format_bytes(needed),
                reason,
                ", ".join(report),
            )
        return freed_total

    def _error(
        self, what: str, n: int, used: int, limit: int, *, measured: bool = False
    ) -> MemoryBudgetError:
        state = "the process already uses" if measured else "the budget has in use"
        if n > limit:
            hint = "The request alone is larger than the limit: read it in chunks"
        else:
            hint = "Read in smaller pieces"
        return MemoryBudgetError(
            f"memory budget exceeded: {what} needs {format_bytes(n)} ({n} bytes), but "
            f"{state} {format_bytes(used)} of its {format_bytes(limit)} limit "
            f"({format_bytes(max(0, limit - used))} free); nothing was allocated. "
            f"{hint} (iter_batches, fewer keys or features per call) or give the store a "
            "larger memory_budget."
        )

    def check_process(self, extra: SupportsIndex = 0, *, what: str = "this request") -> None:
        """Raise unless the process's real memory plus ``extra`` bytes fits the limit.

        The real memory is what ``measure`` reports (anonymous resident memory by
        default; see the module docstring).  Caches are evicted first when over.  Does
        nothing when the budget is unlimited or ``measure`` is None.
        """
        n = _nbytes(extra)
        limit = self._limit
        if limit is None or self._measure is None:
            return
        used = int(self._measure())
        over = used + n - limit
        if over <= 0:
            return
        reason = "the process's real memory"
        if n <= limit and self._evict(lambda freed: over - freed, what, n, reason) > 0:
            used = int(self._measure())
        if used + n > limit:
            raise self._error(what, n, used, limit, measured=True)

    # -- chunk sizing

    def rows_for_budget(
        self,
        bytes_per_row: SupportsIndex,
        *,
        fraction: float = 0.25,
        minimum: int = 1,
        maximum: int | None = None,
    ) -> int:
        """How many rows a chunk may have so its buffers use ``fraction`` of what is free.

        ``bytes_per_row`` is every byte a row costs while the chunk is processed (output
        plus temporaries).  The answer is ``floor(fraction * available / bytes_per_row)``
        clamped to ``[minimum, maximum]``; with no limit, ``available`` is taken as
        :data:`UNLIMITED_CHUNK_BYTES` (and ``fraction`` is not applied).  When even
        ``minimum`` rows do not fit, ``minimum`` is returned anyway: the charge for that
        chunk then raises :class:`~mmfs.errors.MemoryBudgetError` with the full story.
        """
        per_row = _nbytes(bytes_per_row)
        if per_row == 0:
            raise ParameterError("bytes_per_row must be positive, got 0")
        if isinstance(fraction, bool) or not (
            isinstance(fraction, (int, float)) and 0 < fraction <= 1
        ):
            raise ParameterError(f"fraction must be in (0, 1], got {fraction!r}")
        if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
            raise ParameterError(f"minimum must be an int >= 1, got {minimum!r}")
        if maximum is not None and (
            isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < minimum
        ):
            raise ParameterError(
                f"maximum must be None or an int >= minimum ({minimum}), got {maximum!r}"
            )
        available = self.available
        if available is None:
            rows = UNLIMITED_CHUNK_BYTES // per_row
        else:
            rows = math.floor(Fraction(fraction) * available / per_row)
        rows = max(minimum, rows)
        return rows if maximum is None else min(rows, maximum)
