"""Time as integer Unix microseconds: the unit of every stored timestamp.

Integers end to end, never float seconds: today's Unix time in µs (~1.8e15) sits within
a factor of 5 of a double's 2**53 exact range, so `datetime.timestamp() * 1e6` is exact
only because rounding happens to land back on the integer. These helpers subtract
datetimes instead, which is exact by construction (and says so in review).
"""

from __future__ import annotations

import datetime as dt
import time

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def now_us() -> int:
    return time.time_ns() // 1000


def datetime_us(when: dt.datetime) -> int:
    """Unix µs of a datetime; a naive one is UTC (QuestDB's and our convention)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - EPOCH) // _MICROSECOND


def rfc3339_us(text: str) -> int:
    """Unix µs of an RFC 3339 time ("2026-05-06T00:51:22.875661Z"); ValueError when it is
    not one or names no time zone (a bare local time would be a guess)."""
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an RFC 3339 time") from exc
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return datetime_us(when)


def us_rfc3339(us: int) -> str:
    """RFC 3339 UTC text with microseconds ("2026-05-06T00:51:22.875661Z") of Unix µs."""
    return (EPOCH + dt.timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def us_datetime(us: int) -> dt.datetime:
    """The UTC datetime of Unix µs (exact: integer arithmetic on a timedelta)."""
    return EPOCH + dt.timedelta(microseconds=us)
