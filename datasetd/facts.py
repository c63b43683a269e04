"""What a day holds, per market, before anything is built: which markets have a day file,
their series, data condition and the fingerprint of the rows their files are made from.

Why fingerprints: the job re-reads the last days every few minutes; a heal or a late row
changes a market's counts or latest receive time, so exactly the files built from those
rows are rebuilt, and a day that did not change costs five grouped queries.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from datasetd.source import QuestSource, day_bounds
from ktape.clock import datetime_us, us_datetime
from ktape.conditions import DayFacts, GapSpan, day_condition
from ktape.datasets.names import valid_ticker
from ktape.log import get_logger

log = get_logger(__name__)

MARKETS = """SELECT ticker, series_ticker, open_time, close_time FROM markets
LATEST ON ts PARTITION BY ticker"""
CHANGES = """SELECT ticker, count(), min(ts), max(ts), max(recv_ts) FROM book_changes
WHERE ts >= %(a)s AND ts < %(b)s"""
TRADES = "SELECT ticker, count(), max(recv_ts) FROM trades WHERE ts >= %(a)s AND ts < %(b)s"
TICKERS = "SELECT ticker, count(), max(ts) FROM tickers WHERE ts >= %(a)s AND ts < %(b)s"
COVERAGE = "SELECT ticker, min(ts) FROM book_checkpoints WHERE ts < %(b)s"
GAPS = """SELECT ticker, reason, coalesce(start_ts, ts), end_ts, ts, sid, expected_seq, got_seq
FROM gaps WHERE coalesce(start_ts, ts) < %(b)s AND (end_ts IS NULL OR end_ts > %(a)s)"""


def _us(value: dt.datetime | None) -> int | None:
    return None if value is None else datetime_us(value)


@dataclass(frozen=True)
class GapRow:
    start_us: int
    end_us: int | None
    reason: str
    detect_us: int
    sid: int | None
    expected_seq: int | None
    got_seq: int | None


@dataclass
class MarketDay:
    """One market on one day: what its files are built from."""

    ticker: str
    series_ticker: str
    coverage_us: int | None
    condition: str
    gaps: list[GapRow] = field(default_factory=list)
    fingerprint: str = ""


@dataclass
class DayPlan:
    day: dt.date
    start_us: int
    end_us: int  # exclusive; before the day closes, now
    closed: bool
    markets: dict[str, MarketDay]

    def series(self) -> dict[str, list[MarketDay]]:
        out: dict[str, list[MarketDay]] = {}
        for market in sorted(self.markets.values(), key=lambda m: m.ticker):
            out.setdefault(market.series_ticker, []).append(market)
        return out


def worst(conditions: list[str]) -> str:
    """A series file's condition: PENDING while the day is open, else the worst market's."""
    for condition in ("PENDING", "MISSING", "DEGRADED"):
        if condition in conditions:
            return condition
    return "AVAILABLE"


def series_fingerprint(markets: list[MarketDay]) -> str:
    digest = hashlib.sha256()
    for market in markets:
        digest.update(f"{market.ticker}={market.fingerprint};".encode())
    return digest.hexdigest()[:32]


def plan_day(source: QuestSource, day: dt.date, now_us: int) -> DayPlan:
    """Every market with something to put in a file that day (recorded rows, or open
    with a book recorded before), grouped facts in six queries."""
    start, end = day_bounds(day)
    window = {"a": us_datetime(start), "b": us_datetime(end)}
    changes = {str(t): (int(n), _us(lo), _us(hi), _us(recv))
               for t, n, lo, hi, recv in source.rows(CHANGES, window)}
    trades = {str(t): (int(n), _us(recv)) for t, n, recv in source.rows(TRADES, window)}
    tickers = {str(t): (int(n), _us(last)) for t, n, last in source.rows(TICKERS, window)}
    coverage = {str(t): _us(lo) for t, lo in source.rows(COVERAGE, window)}
    gaps: dict[str, list[GapRow]] = {}
    for t, reason, lo, hi, detect, sid, expected, got in source.rows(GAPS, window):
        gaps.setdefault(str(t), []).append(GapRow(
            _us(lo) or 0, _us(hi), str(reason), _us(detect) or 0,
            None if sid is None else int(sid), None if expected is None else int(expected),
            None if got is None else int(got)))
    markets: dict[str, MarketDay] = {}
    for t, series, open_time, close_time in source.rows(MARKETS):
        ticker = str(t)
        if not valid_ticker(ticker) or not series or not valid_ticker(str(series)):
            if ticker in changes:
                log.warning("dataset.market_skipped", ticker=ticker, series=series,
                            why="ticker or series is not a valid file name")
            continue
        recorded = ticker in changes or ticker in trades
        if not recorded and (coverage.get(ticker) is None or coverage[ticker] >= end):
            continue  # never recorded before the day's end: nothing to say about it
        n, lo, hi, recv = changes.get(ticker, (0, None, None, None))
        spans = [GapSpan(g.start_us, g.end_us, g.reason) for g in gaps.get(ticker, [])]
        found = day_condition(ticker, day, now_us=now_us, coverage_start_us=coverage.get(ticker),
                              open_us=_us(open_time), close_us=_us(close_time), gaps=spans,
                              facts=DayFacts(n, lo, hi))
        if found is None:
            continue
        facts = (n, lo, hi, recv, trades.get(ticker), tickers.get(ticker), coverage.get(ticker),
                 sorted((g.start_us, g.end_us, g.reason) for g in gaps.get(ticker, [])),
                 found.condition)
        markets[ticker] = MarketDay(
            ticker, str(series), coverage.get(ticker), found.condition,
            sorted(gaps.get(ticker, []), key=lambda g: (g.start_us, g.detect_us)),
            hashlib.sha256(repr(facts).encode()).hexdigest()[:32])
    closed = end <= now_us
    return DayPlan(day, start, end if closed else max(start, min(end, now_us)), closed, markets)
