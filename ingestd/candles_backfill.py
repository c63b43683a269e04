"""Backfill Kalshi's candlesticks for markets ktape never recorded live.

Why: a market that settled before ktape started (or outside KTAPE_MARKETS) has no
recorded book or trades, but Kalshi still serves its candles; storing them gives users
price history where ktape has no tape of its own. Markets with any recorded checkpoint
are skipped: their candles come from recorded trades (queryd), never mixed.

Resumable: each (ticker, period) continues from the newest candle already stored (that
period is fetched again, the dedup key (ts, ticker, period_min) makes it an upsert).
Rate-limit aware: every request goes through KalshiRest (token bucket, 429 backoff).
Both sides of Kalshi's historical cutoff are read (PROTOCOL.md §6.7): markets settled
before `market_settled_ts` from /historical, the rest from the live endpoint.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from ingestd.kalshi.normalize import NormalizeError, price_e4, qty_e2
from ingestd.kalshi.rest import KalshiRest
from ingestd.writer import IlpWriter, TimestampMicros
from ktape.log import get_logger

log = get_logger(__name__)

PERIODS = (1, 60, 1440)
MAX_PERIODS_PER_REQUEST = 5000


def _ts(text: str | None) -> int | None:
    if not text:
        return None
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _price(group: dict[str, Any] | None, name: str, historical: bool) -> int | None:
    value = (group or {}).get(name if historical else f"{name}_dollars")
    return price_e4(value) if value is not None else None


def candle_columns(candle: dict[str, Any], historical: bool) -> dict[str, Any]:
    """Kalshi's candle (live or historical field names) as kalshi_candles columns."""
    price = candle.get("price") or {}
    columns: dict[str, Any] = {
        "price_open_e4": _price(price, "open", historical),
        "price_high_e4": _price(price, "high", historical),
        "price_low_e4": _price(price, "low", historical),
        "price_close_e4": _price(price, "close", historical),
        "price_mean_e4": _price(price, "mean", historical),
        "price_previous_e4": _price(price, "previous", historical),
        "yes_bid_close_e4": _price(candle.get("yes_bid"), "close", historical),
        "yes_ask_close_e4": _price(candle.get("yes_ask"), "close", historical),
        "volume_e2": qty_e2(candle.get("volume" if historical else "volume_fp") or "0"),
        "open_interest_e2": qty_e2(candle.get("open_interest" if historical
                                             else "open_interest_fp") or "0"),
    }
    return {k: v for k, v in columns.items() if v is not None}


def recorded_tickers(conninfo: str) -> set[str]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT ticker FROM book_checkpoints")}


def resume_points(conninfo: str, period: int) -> dict[str, int]:
    """Newest stored candle end (Unix s) per ticker for `period`."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT ticker, max(ts) FROM kalshi_candles WHERE period_min = %s",
                            (period,)).fetchall()
    return {ticker: int(ts.replace(tzinfo=dt.UTC).timestamp()) for ticker, ts in rows if ts}


async def backfill_candles(rest: KalshiRest, writer: IlpWriter, conninfo: str,
                           markets: list[dict[str, Any]], *, period: int, since_ts: int,
                           now_ts: int) -> dict[str, int]:
    if period not in PERIODS:
        raise ValueError("period must be 1, 60 or 1440 minutes")
    recorded = recorded_tickers(conninfo)
    resume = resume_points(conninfo, period)
    cutoff = _ts((await rest.get("/historical/cutoff")).get("market_settled_ts")) or 0
    counts = {"candle_markets": 0, "skipped_recorded": 0, "candles": 0, "rejected": 0}
    step = period * 60
    for market in markets:
        ticker = market["ticker"]
        if ticker in recorded:
            counts["skipped_recorded"] += 1
            continue
        opened = _ts(market.get("open_time")) or since_ts
        closed = _ts(market.get("close_time")) or now_ts
        start = max(since_ts, opened, resume.get(ticker, 0))
        # Up to the period in progress: stored now, corrected by the next run (which
        # starts again at the newest stored candle).
        end = min(now_ts + step, closed + step)
        if end <= start:
            continue
        settled = _ts(market.get("settlement_ts"))
        historical = settled is not None and settled < cutoff
        counts["candle_markets"] += 1
        chunk_start = start
        while chunk_start <= end:
            chunk_end = min(end, chunk_start + step * MAX_PERIODS_PER_REQUEST)
            window = {"start_ts": chunk_start, "end_ts": chunk_end, "period_interval": period}
            if historical:
                page = await rest.get(f"/historical/markets/{ticker}/candlesticks", window)
                got = page.get("candlesticks") or []
            else:  # the batch endpoint needs no series ticker (markets do not carry one)
                page = await rest.get("/markets/candlesticks", {**window,
                                                                "market_tickers": ticker})
                got = next((m.get("candlesticks") or [] for m in page.get("markets") or []
                            if m.get("market_ticker") == ticker), [])
            for candle in got:
                try:
                    columns = candle_columns(candle, historical)
                    end_ts = int(candle["end_period_ts"])
                except (NormalizeError, KeyError, TypeError, ValueError) as exc:
                    counts["rejected"] += 1
                    log.warning("backfill.candle_rejected", ticker=ticker, error=str(exc))
                    continue
                writer.row("kalshi_candles",
                           symbols={"ticker": ticker,
                                    "source": "historical" if historical else "live"},
                           columns={**columns, "period_min": period,
                                    "recv_ts": TimestampMicros(now_ts * 1_000_000)},
                           at_us=end_ts * 1_000_000)
                counts["candles"] += 1
            chunk_start = chunk_end + 1
        await writer.flush()
        log.info("backfill.candles", ticker=ticker, period=period, source=(
            "historical" if historical else "live"))
    return counts
