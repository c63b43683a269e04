"""Reference data: markets (with coverage), events, series, settlements."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from psycopg import AsyncConnection

from ktape.book.ladder import format_price, format_quantity
from ktape.marketdata.v1 import marketdata_pb2 as pb
from queryd import sql
from queryd.convert import duration_us, timestamp
from queryd.timeutil import as_utc


def _price_ranges(raw: str | None) -> list[pb.PriceRange]:
    """Kalshi `price_ranges` as stored by ingestd (JSON list of dollar strings)."""
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        return []
    return [pb.PriceRange(start=str(i.get("start", "")), end=str(i.get("end", "")),
                          step=str(i.get("step", "")))
            for i in items if isinstance(i, dict)]


def market_message(row: tuple[Any, ...]) -> pb.Market:
    (ts, ticker, event_ticker, series_ticker, status, market_type, title, subtitle,
     yes_sub, no_sub, open_time, close_time, expiration_time, result, structure,
     price_ranges, settlement_value_e4, determination_time, settlement_time) = row
    market = pb.Market(
        ticker=ticker, event_ticker=event_ticker or "", series_ticker=series_ticker or "",
        status=status or "", market_type=market_type or "", title=title or "",
        subtitle=subtitle or "", yes_sub_title=yes_sub or "", no_sub_title=no_sub or "",
        result=result or "", price_level_structure=structure or "",
        price_ranges=_price_ranges(price_ranges),
        settlement_value=(format_price(int(settlement_value_e4))
                          if settlement_value_e4 is not None else ""),
    )
    for field, value in (("open_time", open_time), ("close_time", close_time),
                         ("expiration_time", expiration_time), ("update_time", ts),
                         ("determination_time", determination_time),
                         ("settlement_time", settlement_time)):
        if value is not None:
            getattr(market, field).CopyFrom(timestamp(as_utc(value)))
    return market


async def _aggregate(conn: AsyncConnection, query: str, params: dict[str, Any],
                     width: int) -> tuple[Any, ...]:
    """One aggregate row. QuestDB answers an aggregate over no matching rows with no row
    at all (not a row of NULLs), so that case becomes NULLs here."""
    row = await (await conn.execute(query, params)).fetchone()
    return tuple(row) if row is not None else (None,) * width


STATISTICS_LOOKBACK = dt.timedelta(days=2)


async def statistics_at(conn: AsyncConnection, ticker: str, at: dt.datetime
                        ) -> tuple[dt.datetime, int | None, int | None] | None:
    """Kalshi's latest ticker-channel report of `ticker` at or before `at`:
    (its time, volume_e2, open_interest_e2), or None before any."""
    params = {"ticker": ticker, "at": at, "since": at - STATISTICS_LOOKBACK}
    row = await (await conn.execute(sql.TICKER_STATS_AT, params)).fetchone()
    if row is None:
        row = await (await conn.execute(sql.TICKER_STATS_AT_UNBOUNDED, params)).fetchone()
    if row is None:
        return None
    ts, volume, open_interest = row
    return (as_utc(ts), None if volume is None else int(volume),
            None if open_interest is None else int(open_interest))


def add_statistics(market: pb.Market,
                   stats: tuple[dt.datetime, int | None, int | None] | None) -> None:
    """Volume and open interest, exact, on a GetMarket answer."""
    if stats is None:
        return
    ts, volume, open_interest = stats
    market.statistics_time.CopyFrom(timestamp(ts))
    if volume is not None:
        market.volume = format_quantity(volume)
    if open_interest is not None:
        market.open_interest = format_quantity(open_interest)


async def coverage(conn: AsyncConnection, ticker: str) -> pb.Coverage:
    params = {"ticker": ticker}
    first, last_cp = await _aggregate(conn, sql.COVERAGE_SPAN, params, 2)
    (last_change,) = await _aggregate(conn, sql.COVERAGE_LAST_CHANGE, params, 1)
    gap_count, gap_us = await _aggregate(conn, sql.COVERAGE_GAPS, params, 2)
    cov = pb.Coverage(gap_count=int(gap_count or 0))
    if first is not None:
        cov.first_recorded_time.CopyFrom(timestamp(as_utc(first)))
    last = max((v for v in (last_cp, last_change) if v is not None), default=None)
    if last is not None:
        cov.last_recorded_time.CopyFrom(timestamp(as_utc(last)))
    cov.total_gap_duration.CopyFrom(duration_us(abs(int(gap_us or 0))))
    return cov


def event_message(row: tuple[Any, ...]) -> pb.Event:
    ts, event_ticker, series_ticker, title, sub_title, category, exclusive = row
    event = pb.Event(event_ticker=event_ticker, series_ticker=series_ticker or "",
                     title=title or "", sub_title=sub_title or "", category=category or "",
                     mutually_exclusive=bool(exclusive))
    event.update_time.CopyFrom(timestamp(as_utc(ts)))
    return event


def series_message(row: tuple[Any, ...]) -> pb.Series:
    ts, series_ticker, title, category, frequency = row
    series = pb.Series(series_ticker=series_ticker, title=title or "", category=category or "",
                       frequency=frequency or "")
    series.update_time.CopyFrom(timestamp(as_utc(ts)))
    return series


def settlement_message(row: tuple[Any, ...]) -> pb.Settlement:
    ts, ticker, event_ticker, series_ticker, result, value_e4 = row
    settlement = pb.Settlement(
        ticker=ticker, event_ticker=event_ticker or "", series_ticker=series_ticker or "",
        result=result or "",
        settlement_value=format_price(int(value_e4)) if value_e4 is not None else "",
    )
    settlement.settle_time.CopyFrom(timestamp(as_utc(ts)))
    return settlement
