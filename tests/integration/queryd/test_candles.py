"""ListCandles' book closes on real QuestDB: from the tops stored on each change where the
rows vouch for them, from a replay of the changes where they do not, and the same closes
either way.

Hand-made rows of one day, a market per case: tops on every row (the stored path); a
minute whose last row has no top (written before migration 7); a re-subscription inside
one minute; two messages sharing a book time. Each case's closes are checked against the replay and
against the book worked out by hand.
"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from ktape.book.ladder import format_price
from ktape.schema.wal import wait_for_wal
from queryd import candles as qc
from queryd.timeutil import to_us

DAY = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
NEXT = DAY + dt.timedelta(days=1)


def at(minute: int, second: int = 0) -> dt.datetime:
    return DAY + dt.timedelta(minutes=minute, seconds=second)


# (minute, second, side, price, qty after, seq, sid, best yes, best no) after a book of
# yes 40¢ x10 and no 50¢ x10 at the day's start.
CHANGES = [(1, 10, "yes", 4100, 500, 2, 7, 4100, 5000),
           (1, 20, "no", 5000, 0, 3, 7, 4100, 0),
           (3, 5, "yes", 4100, 0, 4, 7, 4000, 0)]
# One trade in each of minutes 0..3: four candles.
TRADE_MINUTES = (0, 1, 2, 3)
# Each candle's (best YES bid, best YES ask) close, by hand.
EXPECTED = [(4000, 5000), (4100, None), (4100, None), (4000, None)]


def _store(conn: psycopg.Connection, ticker: str, changes: list[tuple]) -> None:
    conn.execute("INSERT INTO book_checkpoints (ts, ticker, reason, seq, sid, recv_ts, "
                 "yes_levels, no_levels, continuous_since) VALUES "
                 "(%s, %s, 'snapshot', 1, 7, %s, '4000:1000', '5000:1000', %s)",
                 (DAY - dt.timedelta(hours=1), ticker, DAY, DAY - dt.timedelta(hours=1)))
    for minute, second, side, price, qty, seq, sid, yes, no in changes:
        when = at(minute, second)
        conn.execute("INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, "
                     "delta_e2, kind, seq, sid, recv_ts, ts_source, best_yes_bid_e4, "
                     "best_no_bid_e4) VALUES (%s, %s, %s, %s, %s, 0, 'delta', %s, %s, %s, "
                     "'exchange', %s, %s)", (when, ticker, side, price, qty, seq, sid, when,
                                             yes, no))
    for i, minute in enumerate(TRADE_MINUTES):
        conn.execute("INSERT INTO trades (ts, ticker, trade_id, yes_price_e4, no_price_e4, "
                     "count_e2, taker_side, is_block, seq, sid, recv_ts, source) VALUES "
                     "(%s, %s, %s, 4000, 6000, 100, 'yes', false, %s, 7, %s, 'ws')",
                     (at(minute, 30), ticker, f"tr-{i}", 100 + i, at(minute, 30)))


CASES = {
    "KXC-TOPS": CHANGES,
    # the second change as a row written before the tops were
    "KXC-OLD": [CHANGES[0], (*CHANGES[1][:7], None, None), CHANGES[2]],
    # a re-subscription inside minute 1: the old subscription's last change, then the new
    # one's (its seq counter restarted, so the minute's last row is not its highest seq)
    "KXC-RESUB": [CHANGES[0], (*CHANGES[1][:5], 1, 8, *CHANGES[1][7:]), CHANGES[2]],
    # minute 3's change and a later one (seq 5, putting the NO side back at 52¢) share
    # one book time
    "KXC-TIED": [*CHANGES, (3, 5, "no", 5200, 100, 5, 7, 4000, 5200)],
}


@pytest.fixture(scope="module")
def stored(questdb):
    questdb.reset()
    with questdb.connect() as conn:
        for ticker, changes in CASES.items():
            _store(conn, ticker, changes)
        wait_for_wal(conn)
    return questdb.conninfo


async def _closes(conninfo: str, ticker: str) -> tuple[list, list, list | None]:
    buckets = [to_us(at(m)) for m in TRADE_MINUTES]
    ends = [b + 60_000_000 for b in buckets]
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        closes = await qc.book_closes(conn, ticker, DAY, NEXT, "1m", buckets, ends)
        replayed = await qc.replayed_closes(conn, ticker, DAY, NEXT, ends)
        tops = await qc.stored_tops(conn, ticker, DAY, NEXT, "1m")
        served = (await qc.candles(conn, ticker, DAY, NEXT, "1m")).candles
    assert [(c.yes_bid_close, c.yes_ask_close) for c in served] == [
        (format_price(b) if b is not None else "", format_price(a) if a is not None else "")
        for b, a in closes]
    return closes, replayed, tops


async def test_stored_tops_give_the_closes_without_a_replay(stored) -> None:
    closes, replayed, tops = await _closes(stored, "KXC-TOPS")
    assert tops == [(to_us(at(1)), (4100, 0)), (to_us(at(3)), (4000, 0))]
    assert closes == replayed == EXPECTED


@pytest.mark.parametrize("ticker", ["KXC-OLD", "KXC-RESUB"])
async def test_rows_that_cannot_vouch_for_their_tops_are_replayed(stored, ticker) -> None:
    closes, replayed, tops = await _closes(stored, ticker)
    assert tops is None
    assert closes == replayed == EXPECTED


async def test_messages_sharing_a_book_time_close_on_the_last_one(stored) -> None:
    """Whichever order QuestDB keeps the two rows in, the close is seq 5's book: from its
    stored top when its row is the minute's last, by a replay otherwise."""
    closes, replayed, tops = await _closes(stored, "KXC-TIED")
    assert tops is None or tops[-1] == (to_us(at(3)), (4000, 5200))
    assert closes == replayed == [*EXPECTED[:3], (4000, 4800)]
