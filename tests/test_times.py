"""Event-time coercion against pandas' own conversion to UTC nanoseconds."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mmfs._times import to_datetime64, to_ns
from mmfs.errors import DimensionError, ParameterError


def pandas_ns(values: Any) -> list[int]:
    idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns")
    return idx.asi8.tolist()


CASES = [
    np.array(["2026-01-01T00:00:00", "1999-12-31T23:59:59.999999999"], dtype="datetime64[ns]"),
    np.array(["2026-01-01", "1970-01-01"], dtype="datetime64[D]"),
    np.array(["2026-01-01T10", "1901-06-01T00"], dtype="datetime64[h]"),
    [dt.datetime(2026, 5, 1, 12, 30, 1, 5), dt.datetime(1969, 12, 31, 23, 59)],
    [
        dt.datetime(2026, 5, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC),
    ],
    pd.to_datetime(["2026-03-29 01:30:00", "2026-10-25 02:30:00.000000007"], format="ISO8601"),
    pd.to_datetime(["2026-03-29 03:30", "2026-07-01 00:00"]).tz_localize("Europe/Berlin"),
    pd.Series(pd.to_datetime(["2026-01-01 00:00:01", "2026-01-02 00:00:00"])),
    pd.Series(pd.to_datetime(["2026-01-01 09:00", "2026-06-01 09:00"]).tz_localize("US/Eastern")),
    [pd.Timestamp("2026-01-01 00:00:00.000000123"), pd.Timestamp("2026-01-01", tz="Asia/Tokyo")],
]


@pytest.mark.parametrize("values", CASES, ids=range(len(CASES)))
def test_to_ns_equals_pandas(values: object) -> None:
    assert to_ns(values, 2).tolist() == pandas_ns(values)


@pytest.mark.parametrize(
    "one",
    [
        np.datetime64("2026-01-01T12:00:00.5"),
        dt.datetime(2026, 1, 1, 12, 0, 0, 500_000),
        pd.Timestamp("2026-01-01 13:00:00.5", tz="Europe/Paris"),
        dt.date(2026, 1, 1),
    ],
)
def test_one_time_is_broadcast(one: object) -> None:
    assert to_ns(one, 3).tolist() == pandas_ns([one]) * 3


def test_none_is_now() -> None:
    before = pd.Timestamp.now(tz="UTC").value
    got = to_ns(None, 2)
    after = pd.Timestamp.now(tz="UTC").value
    assert got[0] == got[1]
    assert before <= got[0] <= after


def test_round_trip_to_datetime64() -> None:
    ns = to_ns(CASES[0], 2)
    assert np.array_equal(to_datetime64(ns), CASES[0])


def test_empty() -> None:
    assert to_ns([], 0).shape == (0,)
    assert to_ns(np.array([], dtype="datetime64[s]"), 0).shape == (0,)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (5, "integers and strings are refused"),
        ("2026-01-01", "integers and strings are refused"),
        (np.array([1, 2]), "dtype int64"),
        (np.array(["2026-01-01", "2026-01-02"]), "dtype <U10"),
        ([np.datetime64("NaT"), np.datetime64("2026-01-01")], "NaT"),
        (np.array(["NaT", "2026-01-01"], dtype="datetime64[s]"), "NaT"),
        (np.array(["3000-01-01", "2026-01-01"], dtype="datetime64[D]"), "range"),
        ([1.5, 2.5], "dtype float64"),
        ([object(), object()], "got object"),
    ],
)
def test_bad_times(bad: object, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        to_ns(bad, 2)


def test_wrong_length_or_shape() -> None:
    with pytest.raises(DimensionError, match="3 times for 2 keys"):
        to_ns(np.array(["2026-01-01"] * 3, dtype="datetime64[D]"), 2)
    with pytest.raises(DimensionError, match="1-D"):
        to_ns(np.array([["2026-01-01"] * 2], dtype="datetime64[D]"), 2)


def test_nanosecond_scalar_fast_path() -> None:
    t = np.datetime64("2026-01-01T00:00:00.000000001", "ns")
    assert to_ns(t, 2).tolist() == pandas_ns([t]) * 2
    with pytest.raises(ParameterError, match="NaT"):
        to_ns(np.datetime64("NaT", "ns"), 1)
