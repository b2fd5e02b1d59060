"""Event times in, event times out: int64 nanoseconds since the Unix epoch, UTC.

Accepted: numpy datetime64 scalars and arrays of any unit; ``datetime.datetime``
(naive ones are taken as UTC, aware ones converted to UTC); ``datetime.date``; pandas
``Timestamp``/``DatetimeIndex``/Series (time-zone aware ones converted to UTC); sequences
of these; ``None`` meaning "now".  Integers and strings are refused: their unit or time
zone would be a guess.  NaT is refused (every row has an event time).
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any

import numpy as np

from mmfs.errors import DimensionError, ParameterError

__all__ = ["now_ns", "to_datetime64", "to_ns"]

_NS = np.dtype("datetime64[ns]")
_NAT = np.iinfo(np.int64).min
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def now_ns() -> int:
    return time.time_ns()


def _one(x: Any) -> np.datetime64:
    if isinstance(x, np.datetime64):
        return x
    if isinstance(x, _dt.datetime):
        if x.tzinfo is not None:
            x = x.astimezone(_dt.UTC).replace(tzinfo=None)
        # pandas.Timestamp is a datetime subclass; its value attribute keeps nanoseconds.
        value = getattr(x, "value", None)
        if isinstance(value, int) and hasattr(x, "nanosecond"):
            return np.datetime64(value, "ns")
        return np.datetime64(x, "us")
    if isinstance(x, _dt.date):
        return np.datetime64(x, "D")
    raise ParameterError(
        f"event_time must be datetime64, datetime or pandas timestamps, got {type(x).__name__} "
        f"{x!r} (integers and strings are refused: their unit or time zone would be a guess)"
    )


def _ns_scalar(x: object) -> int | None:
    """A datetime64[ns] scalar's nanoseconds, or None for anything else."""
    if type(x) is not np.datetime64 or x.dtype != _NS:
        return None
    value: Any = x.item()  # int for a [ns] time (the quickest way out), None for NaT
    if value is None:
        raise ParameterError("event_time holds NaT; every row needs an event time")
    return int(value)


def one_ns(event_time: Any) -> int:
    """One event time as int nanoseconds (to_ns's rules; a datetime64[ns] without an
    array on the way)."""
    fast = _ns_scalar(event_time)
    return fast if fast is not None else int(to_ns(event_time, 1)[0])


def to_ns(event_time: Any, n: int) -> np.ndarray:
    """Event times as an int64 array of length n (a single time is broadcast)."""
    if event_time is None:
        return np.full(n, now_ns(), dtype=np.int64)
    fast = _ns_scalar(event_time)
    if fast is not None:  # the common case: one datetime64[ns]
        return np.full(n, fast, dtype=np.int64)
    tz = getattr(getattr(event_time, "dt", None), "tz", None) or getattr(event_time, "tz", None)
    if tz is not None:  # a time-zone aware pandas Series or DatetimeIndex
        if hasattr(event_time, "dt"):  # Series
            event_time = event_time.dt.tz_convert("UTC").dt.tz_localize(None)
        else:  # DatetimeIndex
            event_time = event_time.tz_convert("UTC").tz_localize(None)
    if isinstance(event_time, np.ndarray) and event_time.dtype.kind == "M":
        arr = event_time
    elif isinstance(event_time, np.datetime64 | _dt.date):
        arr = np.asarray(_one(event_time))
    elif hasattr(event_time, "__len__") or hasattr(event_time, "__array__"):
        raw = np.asarray(event_time)
        if raw.size == 0 and raw.ndim == 1:
            raw = raw.astype(_NS)
        if raw.dtype.kind == "M":
            arr = raw
        elif raw.dtype == object or raw.ndim == 0:
            arr = np.array([_one(x) for x in raw.reshape(-1)]).reshape(raw.shape)
        else:
            raise ParameterError(
                f"event_time must be datetime64, datetime or pandas timestamps, got an array "
                f"of dtype {raw.dtype} (integers and strings are refused: their unit or time "
                "zone would be a guess)"
            )
    else:
        arr = np.asarray(_one(event_time))
    if arr.ndim > 1:
        raise DimensionError(f"event_time must be one time or a 1-D array, got shape {arr.shape}")
    try:
        ns = arr.astype(_NS, casting="unsafe")
    except (OverflowError, ValueError) as exc:
        raise ParameterError(f"event_time out of the datetime64[ns] range: {exc}") from None
    if np.any(np.isnat(ns)):
        raise ParameterError("event_time holds NaT; every row needs an event time")
    # The cast wraps silently on overflow; a round trip at the coarser unit catches it.
    if arr.dtype != _NS and np.any(ns.astype(arr.dtype) != arr):
        raise ParameterError("event_time out of the datetime64[ns] range (1677 to 2262)")
    out: np.ndarray = np.asarray(ns.view(np.int64)).reshape(-1)
    if ns.ndim == 0:
        return np.full(n, out[0], dtype=np.int64)
    if out.shape[0] != n:
        raise DimensionError(f"event_time has {out.shape[0]} times for {n} keys")
    return np.ascontiguousarray(out)


def to_datetime64(ns: np.ndarray) -> np.ndarray:
    """int64 nanoseconds -> datetime64[ns] (a view)."""
    return ns.view(_NS)
