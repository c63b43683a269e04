"""Time conversions at queryd's edges: QuestDB returns naive UTC datetimes."""

from __future__ import annotations

import datetime as dt

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """QuestDB hands back naive datetimes that are UTC; make that explicit."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_us(value: dt.datetime) -> int:
    delta = as_utc(value) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)


def now_utc() -> dt.datetime:
    return dt.datetime.now(UTC)
