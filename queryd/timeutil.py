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


def request_date(value: str, field: str, default: dt.date) -> dt.date:
    """A request's "YYYY-MM-DD" field, `default` when empty; INVALID_ARGUMENT naming the
    field otherwise (conditions and datasets take UTC days the same way)."""
    from ktape.errors import InvalidArgument

    if not value:
        return default
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument.field(field, "must be a date, YYYY-MM-DD") from None
