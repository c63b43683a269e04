"""ListCandles: OHLCV from trades with SAMPLE BY, plus the book's close per bucket.

The yes bid/ask close of each bucket is the top ingestd wrote on the bucket's last
change (sql.CANDLE_TOPS: QuestDB picks one row per bucket), carried over buckets without
changes. That costs the same at any density of the day, where replaying the book read
every change of the window (10,000 for a busy market's day at 100M changes a day). Where
a bucket's rows cannot vouch for their last top (rows from before the tops were written,
a re-subscription inside the bucket), the closes come from one replay of the book over
the window instead (checkpoint at the start + the window's changes), as before.
"""

from __future__ import annotations

import datetime as dt

from psycopg import AsyncConnection

from ktape.book.ladder import PRICE_SCALE, Book, format_price, format_quantity
from ktape.log import get_logger
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.open_interest import at_closes
from queryd import sql
from queryd.convert import set_us, timestamp
from queryd.orderbook import orderbook_at
from queryd.reference import statistics_at
from queryd.timeutil import as_utc, from_us, to_us

log = get_logger(__name__)

INTERVAL_US = {"1m": 60_000_000, "1h": 3_600_000_000, "1d": 86_400_000_000}
MAX_BUCKETS = 10_000


KALSHI_PERIOD_MIN = {"1m": 1, "1h": 60, "1d": 1440}


async def candles(conn: AsyncConnection, ticker: str, start: dt.datetime, end: dt.datetime,
                  interval: str) -> pb.ListCandlesResponse:
    """ListCandles' answer: recorded candles, or Kalshi's own for a market never recorded.
    Built in place in the response, field by field (a Candle made on its own is copied
    into the response whole, and keyword construction parses every keyword)."""
    params = {"ticker": ticker, "start": start, "end": end}
    rows = await (await conn.execute(sql.CANDLES[interval], params, binary=True)).fetchall()
    if not rows:
        if not await (await conn.execute(sql.TICKER_RECORDED, {"ticker": ticker})).fetchone():
            return pb.ListCandlesResponse(
                candles=await kalshi_candles(conn, ticker, start, end, interval))
        return pb.ListCandlesResponse()
    bucket_us, end_us = INTERVAL_US[interval], to_us(end)
    bucket_starts = [row[0] for row in rows]
    closes = await book_closes(conn, ticker, start, end, interval, bucket_starts,
                               [min(b + bucket_us, end_us) for b in bucket_starts])
    interest = await _open_interest(conn, ticker, start, end, interval, bucket_starts)
    out = pb.ListCandlesResponse()
    add = out.candles.add
    for (ts_us, open_, high, low, close, volume, count), (bid, ask), oi in zip(
            rows, closes, interest, strict=True):
        candle = add()
        set_us(candle.start_time, ts_us)
        candle.open = format_price(open_)
        candle.high = format_price(high)
        candle.low = format_price(low)
        candle.close = format_price(close)
        candle.volume = format_quantity(volume)
        candle.trade_count = count
        if bid is not None:
            candle.yes_bid_close = format_price(bid)
        if ask is not None:
            candle.yes_ask_close = format_price(ask)
        candle.source = "trades"
        if oi is not None:
            candle.open_interest = format_quantity(oi)
    return out


async def _open_interest(conn: AsyncConnection, ticker: str, start: dt.datetime,
                         end: dt.datetime, interval: str, bucket_starts_us: list[int]
                         ) -> list[int | None]:
    """Open interest at each bucket's close: the bucket's last ticker report, else the
    last one before it (carried from before `start` when the first buckets have none)."""
    rows = await (await conn.execute(sql.OPEN_INTEREST[interval], {
        "ticker": ticker, "start": start, "end": end}, binary=True)).fetchall()
    by_bucket = dict(rows)  # bucket start µs: the bucket's last report (None: none)
    before = await statistics_at(conn, ticker, start - dt.timedelta(microseconds=1))
    return at_closes(bucket_starts_us, by_bucket, before[2] if before is not None else None)


async def kalshi_candles(conn: AsyncConnection, ticker: str, start: dt.datetime,
                         end: dt.datetime, interval: str) -> list[pb.Candle]:
    """Kalshi's own candles (backfilled by `ktape backfill --candles`) for a market ktape
    never recorded live; buckets start in [start, end) like recorded candles, and buckets
    without trades are omitted. Kalshi does not report trade counts (0 here)."""
    period_us = INTERVAL_US[interval]
    rows = await (await conn.execute(sql.KALSHI_CANDLES, {
        "ticker": ticker, "period": KALSHI_PERIOD_MIN[interval],
        "start": start + dt.timedelta(microseconds=period_us),
        "end": end + dt.timedelta(microseconds=period_us)})).fetchall()
    out: list[pb.Candle] = []
    for ts, open_, high, low, close, volume, bid, ask in rows:
        if open_ is None:
            continue
        out.append(pb.Candle(
            start_time=timestamp(as_utc(ts) - dt.timedelta(microseconds=period_us)),
            open=format_price(int(open_)), high=format_price(int(high)),
            low=format_price(int(low)), close=format_price(int(close)),
            volume=format_quantity(int(volume or 0)),
            yes_bid_close=format_price(int(bid)) if bid is not None else "",
            yes_ask_close=format_price(int(ask)) if ask is not None else "",
            source="kalshi"))
    return out


Close = tuple[int | None, int | None]  # best YES bid and ask (1 - best NO bid), or None


def _close(best_yes: int, best_no: int) -> Close:
    """A top (best bids, 0 = that side empty, as stored on each change) as a candle's
    close: both ways of finding the closes end here."""
    return (best_yes or None, PRICE_SCALE - best_no if best_no else None)


async def book_closes(conn: AsyncConnection, ticker: str, start: dt.datetime,
                      end: dt.datetime, interval: str, bucket_starts_us: list[int],
                      bucket_ends_us: list[int]) -> list[Close]:
    """The book's close of each bucket: the stored top of the last change before its end
    (a bucket without changes keeps the one before it), or a replay (`replayed_closes`)
    when the stored tops cannot vouch for themselves."""
    tops = await stored_tops(conn, ticker, start, end, interval)
    if tops is None:
        return await replayed_closes(conn, ticker, start, end, bucket_ends_us)
    out: list[Close] = []
    i, count, current = 0, len(tops), None
    for bucket_start in bucket_starts_us:
        while i < count and tops[i][0] <= bucket_start:
            current = tops[i][1]
            i += 1
        if current is None:  # no change in the window yet: the book at `start`
            book = (await orderbook_at(conn, ticker, start)).book
            current = (max(book.yes, default=0), max(book.no, default=0))
        out.append(_close(*current))
    return out


async def stored_tops(conn: AsyncConnection, ticker: str, start: dt.datetime,
                      end: dt.datetime, interval: str
                      ) -> list[tuple[int, tuple[int, int]]] | None:
    """(bucket start µs, (best YES bid, best NO bid)) after each bucket's last change in
    [start, end), buckets without changes left out; None when a bucket's last row cannot
    be trusted to be its last message's (see sql.CANDLE_TOPS), with the reason logged."""
    rows = await (await conn.execute(sql.CANDLE_TOPS[interval], {
        "ticker": ticker, "start": start, "end": end}, binary=True)).fetchall()
    for ts_us, yes, no, last_seq, max_seq in rows:
        if yes is None or no is None or last_seq != max_seq:
            log.info("candles.closes_replayed", ticker=ticker, bucket=from_us(ts_us).isoformat(),
                     reason="rows_without_tops" if yes is None or no is None
                     else "last_row_not_last_seq")
            return None
    return [(ts_us, (yes, no)) for ts_us, yes, no, _, _ in rows]


async def replayed_closes(conn: AsyncConnection, ticker: str, start: dt.datetime,
                          end: dt.datetime, bucket_ends_us: list[int]) -> list[Close]:
    """Best YES bid and ask (1 - best NO bid) just before each bucket end, by replaying
    the window's changes over the book at `start`."""
    initial = await orderbook_at(conn, ticker, start)
    book: Book = initial.book.copy()
    rows = await (await conn.execute(sql.CANDLE_CHANGES, {
        "ticker": ticker, "start": start, "end": end}, binary=True)).fetchall()
    out: list[Close] = []
    i, count, start_us = 0, len(rows), to_us(start)
    yes, no = book.yes, book.no  # the ladders themselves: ~10,000 rows a busy day
    snapshot_key: str | None = None
    for bucket_end in bucket_ends_us:
        while i < count and rows[i][0] < bucket_end:
            ts_us, packed, qty, snapshot = rows[i]
            i += 1
            if ts_us == start_us:
                continue  # already part of the book at `start`
            if packed is None:
                raise ValueError(f"{ticker}: a change at {ts_us} µs has an unknown side")
            if snapshot is not None:
                if snapshot != snapshot_key:  # a new snapshot replaces the book
                    yes.clear()
                    no.clear()
                    snapshot_key = snapshot
            else:
                snapshot_key = None
            ladder = no if packed & 1 else yes
            if qty > 0:
                ladder[packed >> 1] = qty
            else:
                ladder.pop(packed >> 1, None)
        out.append(_close(max(yes, default=0), max(no, default=0)))
    return out
