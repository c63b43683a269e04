"""Dataset file names (CONTRACT.md "Datasets"): `{data_type}/{YYYY-MM-DD}/{ticker}.{format}`
for one market and `{data_type}/{YYYY-MM-DD}/series/{series_ticker}.{format}` for a series.

A name is also a storage path and part of a signed URL, so parsing is strict: anything
that is not exactly one of these shapes (a `..`, a slash in a ticker, an unknown type)
is refused rather than normalised.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

DATA_TYPES = ("book_changes", "book_top10_1s", "quotes", "trades", "candles_1m")
FORMATS = ("parquet", "csv.gz")
_TICKER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_NAME = re.compile(r"^(?P<type>[a-z0-9_]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?:(?P<series>series)/)?"
                   r"(?P<ticker>[^/]+?)\.(?P<format>parquet|csv\.gz)$")


class BadName(ValueError):
    """Not a dataset file name; the message says which part is wrong."""


def valid_ticker(ticker: str) -> bool:
    return bool(_TICKER.match(ticker)) and ".." not in ticker


@dataclass(frozen=True, order=True)
class FileName:
    """One dataset file: a data type, a UTC day, one market or one series, a format."""

    data_type: str
    date: dt.date
    ticker: str = ""  # one market, or
    series_ticker: str = ""  # a whole series
    format: str = "parquet"

    def __post_init__(self) -> None:
        if self.data_type not in DATA_TYPES:
            raise BadName(f"unknown data type {self.data_type!r}; one of {', '.join(DATA_TYPES)}")
        if self.format not in FORMATS:
            raise BadName(f"unknown format {self.format!r}; one of {', '.join(FORMATS)}")
        if bool(self.ticker) == bool(self.series_ticker):
            raise BadName("a file is of exactly one market or one series")
        subject = self.ticker or self.series_ticker
        if not valid_ticker(subject):
            raise BadName(f"{subject!r} is not a ticker")

    @property
    def subject(self) -> str:
        return self.ticker or self.series_ticker

    def __str__(self) -> str:
        middle = f"series/{self.series_ticker}" if self.series_ticker else self.ticker
        return f"{self.data_type}/{self.date.isoformat()}/{middle}.{self.format}"

    def with_format(self, fmt: str) -> FileName:
        return FileName(self.data_type, self.date, self.ticker, self.series_ticker, fmt)

    @classmethod
    def parse(cls, name: str) -> FileName:
        found = _NAME.match(name)
        if not found:
            raise BadName(f"{name!r} is not a dataset file name "
                          "({data_type}/{YYYY-MM-DD}/[series/]{ticker}.{parquet|csv.gz})")
        try:
            date = dt.date.fromisoformat(found["date"])
        except ValueError:
            raise BadName(f"{found['date']!r} is not a date") from None
        if found["series"]:
            return cls(found["type"], date, "", found["ticker"], found["format"])
        return cls(found["type"], date, found["ticker"], "", found["format"])


def manifest_name(date: dt.date) -> str:
    """Where a day's manifest lives in the same storage as its files."""
    return f"manifests/{date.isoformat()}.json"
