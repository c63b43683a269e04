"""GetOrderbook's logic: the exact book at an instant, with proof of continuity.

Cost is independent of history length: one bounded `LATEST ON` for the checkpoint, one
range scan of the changes since it (ingestd checkpoints every N changes / M seconds),
one gap lookup.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from psycopg import AsyncConnection

from ktape.book.ladder import Book
from ktape.book.reconstruct import Checkpoint, apply_rows
from queryd import sql
from queryd.timeutil import as_utc, from_us, to_us

CHECKPOINT_LOOKBACK = dt.timedelta(days=2)


class Continuity(enum.Enum):
    CONTINUOUS = "CONTINUOUS"
    GAP = "GAP"
    NOT_RECORDED = "NOT_RECORDED"


@dataclass(frozen=True)
class GapSpan:
    reason: str
    start: dt.datetime | None
    end: dt.datetime | None
    expected_seq: int | None
    got_seq: int | None


@dataclass(frozen=True)
class OrderbookAt:
    ticker: str
    at: dt.datetime
    book: Book
    seq: int | None
    last_change: dt.datetime | None
    continuity: Continuity
    continuous_since: dt.datetime | None = None
    gap: GapSpan | None = None
    detail: str = ""


async def orderbook_at(conn: AsyncConnection, ticker: str, at: dt.datetime) -> OrderbookAt:
    """The book of `ticker` as of `at` (inclusive: changes stamped exactly `at` count)."""
    at = as_utc(at)
    params = {"ticker": ticker, "at": at, "since": at - CHECKPOINT_LOOKBACK}
    row = await (await conn.execute(sql.CHECKPOINT_AT, params)).fetchone()
    if row is None:
        row = await (await conn.execute(sql.CHECKPOINT_AT_UNBOUNDED, params)).fetchone()
    if row is None:
        first = await (await conn.execute(sql.FIRST_CHECKPOINT, params)).fetchone()
        return not_recorded(ticker, at, first[0] if first else None)
    cursor = await conn.execute(
        sql.CHANGES_BETWEEN, {"ticker": ticker, "start": as_utc(row[0]), "end": at},
        binary=True)  # see sql.CHANGES_BETWEEN
    changes = await cursor.fetchall()
    gap_row = await (await conn.execute(sql.GAP_AT, {"ticker": ticker, "at": at})).fetchone()
    return assemble(ticker, at, checkpoint_of(row), changes, gap_row)


def not_recorded(ticker: str, at: dt.datetime, first: dt.datetime | None) -> OrderbookAt:
    """The answer for an instant before any checkpoint of the market."""
    detail = (f"{ticker} was first recorded at {as_utc(first).isoformat()}" if first is not None
              else f"{ticker} has no recorded book")
    return OrderbookAt(ticker, at, Book(), None, None, Continuity.NOT_RECORDED, detail=detail)


def checkpoint_of(row: tuple) -> Checkpoint:
    """A checkpoint row as sql.CHECKPOINT_AT selects it."""
    ts, sid, seq, reason, yes_levels, no_levels, continuous_since = row
    return Checkpoint(
        to_us(ts), int(sid), int(seq), str(reason), yes_levels, no_levels,
        to_us(continuous_since) if continuous_since is not None else None,
    )


def assemble(ticker: str, at: dt.datetime, checkpoint: Checkpoint, change_rows: list[tuple],
             gap_row: tuple | None, book: Book | None = None) -> OrderbookAt:
    """The book at `at` from what the three lookups return (the checkpoint, changes as
    sql.CHANGES_BETWEEN gives them, the gap as sql.GAP_AT): one rule for GetOrderbook and
    for the event-wide batch of GetEventOrderbook. `book` is the checkpoint's book when
    the caller parsed it already (apply_rows)."""
    rebuilt = apply_rows(checkpoint, change_rows, book)  # rows as sql.CHANGES_BETWEEN gives them
    since_us = checkpoint.continuous_since_us
    for row in change_rows:  # a later exchange snapshot restarts the continuous run
        if row[4] == "snapshot" and row[0] >= checkpoint.ts_us:
            since_us = row[0]
    last_change = from_us(rebuilt.last_change_us)
    if gap_row is not None:
        _g_ts, g_reason, g_start, g_end, g_expected, g_got = gap_row
        gap = GapSpan(
            str(g_reason),
            as_utc(g_start) if g_start is not None else as_utc(_g_ts),
            as_utc(g_end) if g_end is not None else None,
            None if g_expected is None else int(g_expected),
            None if g_got is None else int(g_got),
        )
        return OrderbookAt(ticker, at, rebuilt.book, rebuilt.seq, last_change, Continuity.GAP,
                           gap=gap, detail=f"book at {at.isoformat()} lies inside a {gap.reason} gap")
    return OrderbookAt(
        ticker, at, rebuilt.book, rebuilt.seq, last_change, Continuity.CONTINUOUS,
        continuous_since=from_us(since_us) if since_us is not None else None,
    )
