"""GetOrderbook's core against real QuestDB rows: checkpoint + changes, gaps, coverage."""

from __future__ import annotations

import datetime as dt

import psycopg

from ktape.schema.wal import wait_for_wal
from queryd.orderbook import Continuity, orderbook_at

T0 = dt.datetime(2026, 11, 24, 18, 0, tzinfo=dt.UTC)


def s(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _seed(conn: psycopg.Connection) -> None:
    cp = ("INSERT INTO book_checkpoints (ts, ticker, reason, seq, sid, recv_ts, ts_source,"
          " yes_levels, no_levels, continuous_since) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)")
    ch = ("INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, delta_e2, kind,"
          " seq, sid, recv_ts, ts_source) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,'exchange')")
    conn.execute(cp, (s(0), "KX-A", "snapshot", 1, 1, s(0), "receive", "4200:15000",
                      "5700:2000", s(0)))
    conn.execute(ch, (s(1), "KX-A", "yes", 4300, 500, 500, "delta", 2, 1, s(1)))
    conn.execute(ch, (s(2), "KX-A", "yes", 4200, 0, -15000, "delta", 3, 1, s(2)))
    conn.execute(ch, (s(3), "KX-A", "no", 5600, 100, 100, "delta", 4, 1, s(3)))
    # a gap from 4 s to 10 s, healed by a snapshot at 10 s
    conn.execute("INSERT INTO gaps (ts, ticker, reason, start_ts, end_ts, expected_seq, got_seq,"
                 " sid) VALUES (%s, 'KX-A', 'seq_jump', %s, %s, 5, 9, 1)", (s(5), s(4), s(10)))
    conn.execute(cp, (s(10), "KX-A", "snapshot", 1, 2, s(10), "receive", "4400:700", "", s(10)))
    conn.execute(ch, (s(11), "KX-A", "no", 5500, 300, 300, "delta", 2, 2, s(11)))
    wait_for_wal(conn)


async def _at(qdb, when: dt.datetime):
    async with await psycopg.AsyncConnection.connect(qdb.conninfo, autocommit=True) as conn:
        return await orderbook_at(conn, "KX-A", when)


async def test_book_between_changes_is_exact(clean_questdb):
    with clean_questdb.connect() as conn:
        _seed(conn)
    r = await _at(clean_questdb, s(1.5))
    assert r.continuity is Continuity.CONTINUOUS
    assert r.book.yes == {4200: 15000, 4300: 500}
    assert r.book.no == {5700: 2000}
    assert r.seq == 2 and r.last_change == s(1)
    assert r.continuous_since == s(0)

    r = await _at(clean_questdb, s(3))  # inclusive of a change stamped exactly at `at`
    assert r.book.yes == {4300: 500}
    assert r.book.no == {5700: 2000, 5600: 100}


async def test_instant_inside_gap_is_flagged_with_bounds(clean_questdb):
    with clean_questdb.connect() as conn:
        _seed(conn)
    r = await _at(clean_questdb, s(7))
    assert r.continuity is Continuity.GAP
    assert r.gap is not None
    assert (r.gap.start, r.gap.end, r.gap.reason) == (s(4), s(10), "seq_jump")
    assert (r.gap.expected_seq, r.gap.got_seq) == (5, 9)
    assert r.book.yes == {4300: 500}  # best book known, still returned


async def test_after_healing_snapshot_book_is_continuous_again(clean_questdb):
    with clean_questdb.connect() as conn:
        _seed(conn)
    r = await _at(clean_questdb, s(12))
    assert r.continuity is Continuity.CONTINUOUS
    assert r.continuous_since == s(10)
    assert r.book.yes == {4400: 700}
    assert r.book.no == {5500: 300}


async def test_before_coverage_is_not_recorded(clean_questdb):
    with clean_questdb.connect() as conn:
        _seed(conn)
    r = await _at(clean_questdb, s(-1))
    assert r.continuity is Continuity.NOT_RECORDED
    assert r.book.yes == {} and r.book.no == {}
    assert "first recorded" in r.detail
