"""Integer microseconds, exactly: where float seconds would land one µs off."""

from __future__ import annotations

import datetime as dt

import pytest

from ktape.clock import datetime_us, now_us, rfc3339_us


def test_every_microsecond_survives():
    base = dt.datetime(2026, 11, 24, 17, 59, 59, tzinfo=dt.UTC)
    for micro in range(0, 1_000_000, 997):
        when = base.replace(microsecond=micro)
        expected = 1_795_543_199_000_000 + micro
        assert datetime_us(when) == expected
        assert rfc3339_us(when.isoformat().replace("+00:00", "Z")) == expected
    assert rfc3339_us("2026-11-24T17:59:59.812345+01:00") == expected_minus_hour()


def expected_minus_hour() -> int:
    return 1_795_543_199_812_345 - 3_600_000_000


def test_naive_datetimes_are_utc_and_naive_text_is_refused():
    assert datetime_us(dt.datetime(1970, 1, 1, 0, 0, 1)) == 1_000_000
    with pytest.raises(ValueError):
        rfc3339_us("2026-05-06T00:51:22")
    with pytest.raises(ValueError):
        rfc3339_us("soon")


def test_now_is_microseconds():
    assert abs(now_us() - datetime_us(dt.datetime.now(dt.UTC))) < 5_000_000
