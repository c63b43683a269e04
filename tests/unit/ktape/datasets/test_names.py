"""Dataset file names (CONTRACT.md): every valid name parses back to itself, and anything
that is not exactly one of the two shapes is refused, since a name is also a storage
path and part of a signed URL."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ktape.datasets.names import DATA_TYPES, FORMATS, BadName, FileName, manifest_name

TICKERS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,40}\Z").filter(lambda t: ".." not in t)


@given(st.sampled_from(DATA_TYPES), st.dates(dt.date(2020, 1, 1), dt.date(2040, 12, 31)), TICKERS,
       st.booleans(), st.sampled_from(FORMATS))
def test_every_valid_name_round_trips(data_type, date, subject, series, fmt):
    name = FileName(data_type, date, "" if series else subject, subject if series else "", fmt)
    text = str(name)
    assert FileName.parse(text) == name
    assert str(FileName.parse(text)) == text


def test_the_two_contract_shapes():
    market = FileName.parse("book_changes/2026-12-01/KXBTC-26DEC01-T100000.parquet")
    assert (market.data_type, market.date, market.ticker, market.series_ticker, market.format) == (
        "book_changes", dt.date(2026, 12, 1), "KXBTC-26DEC01-T100000", "", "parquet")
    series = FileName.parse("candles_1m/2026-12-01/series/KXBTC.csv.gz")
    assert (series.ticker, series.series_ticker, series.format, series.subject) == (
        "", "KXBTC", "csv.gz", "KXBTC")
    assert str(series.with_format("parquet")) == "candles_1m/2026-12-01/series/KXBTC.parquet"


@pytest.mark.parametrize("bad", [
    "book_changes/2026-12-01/../secret.parquet",
    "book_changes/2026-12-01/a/b.parquet",  # a slash in a ticker
    "book_changes/2026-12-01/..parquet",
    "book_changes/2026-12-01/KX..A.parquet",
    "orders/2026-12-01/KXA.parquet",  # unknown data type
    "trades/2026-12-01/KXA.csv",  # unknown format
    "trades/2026-13-01/KXA.parquet",  # no such date
    "trades/26-12-01/KXA.parquet",
    "/trades/2026-12-01/KXA.parquet",
    "trades/2026-12-01/KXA.parquet/",
    "trades/2026-12-01/series/.parquet",
    "manifests/2026-12-01.json",
    "",
])
def test_anything_else_is_refused(bad):
    with pytest.raises(BadName):
        FileName.parse(bad)


def test_a_file_is_of_one_market_or_one_series():
    with pytest.raises(BadName):
        FileName("trades", dt.date(2026, 12, 1), "KXA", "KXS")
    with pytest.raises(BadName):
        FileName("trades", dt.date(2026, 12, 1))


def test_manifest_name():
    assert manifest_name(dt.date(2026, 12, 1)) == "manifests/2026-12-01.json"
