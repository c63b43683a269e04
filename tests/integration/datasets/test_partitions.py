"""The storage lifecycle job against a real QuestDB: a day recorded from the simulator
(with dropped frames and a reconnect, so there are gaps) converted to Parquet by the job
still rebuilds the journal's true book at every sampled instant; a late row for a
converted day lands once and the day stays Parquet; retention drops the old days and
keeps the rest."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx

from datasetd.partitions import PartitionJob, convert, read_partitions
from ktape.clock import now_us
from ktape.config import PARQUET_TABLES, StorageSettings, load_settings
from ktape.schema.migrate import indexed_columns
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig
from tests.fixtures.recording import recorded_simulator
from tests.integration.ingestd.test_outages import _compare_with_journal
from tests.integration.ingestd.test_record_against_journal import _control

DAY_US = 86_400_000_000


def _day_start_us(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000


def _next_day_rows(conn, day: dt.date) -> None:
    """A row the day after in each big table, for a market the simulator does not have:
    the recorded day is then no longer the newest partition, as after any midnight."""
    at = _day_start_us(day + dt.timedelta(days=1))
    conn.execute(f"INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, delta_e2,"
                 f" kind, seq, sid, recv_ts, ts_source) VALUES ({at}, 'KXNEXTDAY', 'yes', 100, "
                 f"0, 0, 'delta', 1, 1, {at}, 'exchange')")
    conn.execute(f"INSERT INTO book_checkpoints (ts, ticker, reason, seq, sid, recv_ts, "
                 f"ts_source, yes_levels, no_levels) VALUES ({at}, 'KXNEXTDAY', 'periodic', 1, 1,"
                 f" {at}, 'exchange', '', '')")
    conn.execute(f"INSERT INTO trades (ts, ticker, trade_id, yes_price_e4, no_price_e4, count_e2,"
                 f" taker_side, is_block, seq, sid, recv_ts, source) VALUES ({at}, 'KXNEXTDAY', "
                 f"'next', 100, 9900, 100, 'yes', false, 1, 1, {at}, 'ws')")
    conn.execute(f"INSERT INTO tickers (ts, ticker, sid, recv_ts) VALUES ({at}, 'KXNEXTDAY', 1,"
                 f" {at})")
    wait_for_wal(conn)


def _job(questdb, storage: StorageSettings, *, days_later: int = 0) -> PartitionJob:
    return PartitionJob(load_settings(questdb.env()).questdb_pg_conninfo, storage,
                        grace_secs=0, clock=lambda: now_us() + days_later * DAY_US)


async def test_books_on_a_day_converted_by_the_job_still_equal_the_journal(clean_questdb,
                                                                           tmp_path):
    async with recorded_simulator(clean_questdb, tmp_path, SimConfig(markets=10, rate=400,
                                                                     seed=23)) as (_, sim):
        await asyncio.sleep(2.5)
        for fault, then_secs in (("drop", 1.0), ("disconnect", 3.0)):  # gaps on the day
            await _control(sim.port, fault)
            await asyncio.sleep(then_secs)
        journal = sim.journal
        sim.config.rate = 0  # quiesce, let ingestd catch up
        await asyncio.sleep(1.0)
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        (gaps,) = conn.execute("SELECT count() FROM gaps").fetchone()
        recorded_days = {p.day for p in read_partitions(conn, "book_changes")}
    assert gaps > 0  # the faults are on record, so continuity is judged too
    native_checked = await _compare_with_journal(clean_questdb.conninfo, journal, samples=25)

    with clean_questdb.connect() as conn:
        _next_day_rows(conn, max(recorded_days))
    # three days on, with conversion after two days, the recorded day(s) are due
    report = await asyncio.to_thread(
        _job(clean_questdb, StorageSettings(parquet_after_days=2), days_later=3).run_once)
    assert report.failed == []
    converted = {(p.table, p.day) for p, _ in report.converted}
    assert {(t, d) for t in ("book_changes", "book_checkpoints") for d in recorded_days} <= converted
    with clean_questdb.connect() as conn:
        for table in PARQUET_TABLES:
            by_day = {p.day: p for p in read_partitions(conn, table)}
            assert all(by_day[d].parquet for d in recorded_days if d in by_day), table
            assert not by_day[max(by_day)].parquet  # the next day: active, never converted

    parquet_checked = await _compare_with_journal(clean_questdb.conninfo, journal, samples=25)
    assert parquet_checked == native_checked > 100  # same instants, same verdicts, exact books
    again = await asyncio.to_thread(
        _job(clean_questdb, StorageSettings(parquet_after_days=2), days_later=3).run_once)
    assert again.converted == [] and again.failed == []  # idempotent


def test_a_late_row_for_a_converted_day_lands_once_and_the_day_stays_parquet(clean_questdb):
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=5)
    start = _day_start_us(day)
    with clean_questdb.connect() as conn:
        conn.execute(
            f"INSERT INTO trades SELECT timestamp_sequence({start}, 1000000) ts, 'KXOLD' ticker,"
            " concat('t-', x) trade_id, 4200L, 5800L, 100L, 'yes', false, x seq, 1L sid,"
            f" timestamp_sequence({start}, 1000000) recv_ts, 'ws' FROM long_sequence(500)")
        _next_day_rows(conn, day)
    report = _job(clean_questdb, StorageSettings(parquet_after_days=2)).run_once()
    assert ("trades", day) in {(p.table, p.day) for p, _ in report.converted}
    late_us = start + 3_600_000_000 + 5  # among the converted rows
    resent_us = start + 10_000_000  # trade t-11, sent again (a spill replay)
    lines = (f"trades,ticker=KXOLD,taker_side=no,source=ws trade_id=\"late\",yes_price_e4=4300i,"
             f"no_price_e4=5700i,count_e2=200i,is_block=f,seq=9999i,sid=1i,recv_ts={late_us}t "
             f"{late_us * 1000}\n"
             f"trades,ticker=KXOLD,taker_side=yes,source=ws trade_id=\"t-11\",yes_price_e4=4200i,"
             f"no_price_e4=5800i,count_e2=100i,is_block=f,seq=11i,sid=1i,recv_ts={resent_us}t "
             f"{resent_us * 1000}\n")
    response = httpx.post(f"http://{clean_questdb.http}/write?precision=n", content=lines)
    assert response.status_code == 204, response.text
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        rows = conn.execute("SELECT trade_id, count() FROM trades WHERE ticker = 'KXOLD' "
                            "AND trade_id IN ('late', 't-11') GROUP BY trade_id ORDER BY trade_id"
                            ).fetchall()
        (total,) = conn.execute("SELECT count() FROM trades WHERE ticker = 'KXOLD'").fetchone()
        partition = {p.day: p for p in read_partitions(conn, "trades")}[day]
    assert rows == [("late", 1), ("t-11", 1)] and total == 501
    assert partition.parquet and partition.rows == 501


def _old_trades(conn, day: dt.date, rows: int = 500) -> None:
    start = _day_start_us(day)
    conn.execute(
        f"INSERT INTO trades SELECT timestamp_sequence({start}, 1000000) ts, 'KXOLD' ticker,"
        " concat('t-', x) trade_id, 4200L, 5800L, 100L, 'yes', false, x seq, 1L sid,"
        f" timestamp_sequence({start}, 1000000) recv_ts, 'ws' FROM long_sequence({rows})")
    _next_day_rows(conn, day)


def test_a_converted_day_answers_through_the_ticker_index(clean_questdb):
    """Why convert() drops the index around a conversion: QuestDB 9.3.4's own CONVERT of
    an indexed day leaves lookups by ticker finding none of its rows (until a restart).
    The raw statement is checked first, so this test says when a QuestDB upgrade makes
    the workaround unnecessary; then convert() of another day answers every row of
    both (the index it adds back is built over the Parquet days anew)."""
    ours, raw = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=d) for d in (6, 9))
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)  # the migration's ADD INDEX is applied asynchronously
        assert indexed_columns(conn, "trades") == ["ticker"]
        _old_trades(conn, raw)
        _old_trades(conn, ours)
        conn.execute(f"ALTER TABLE trades CONVERT PARTITION TO PARQUET LIST '{raw.isoformat()}'")
        wait_for_wal(conn)
        assert _through_index(conn).get(raw) in (None, 0), \
            "QuestDB now converts indexed days right: convert() can be simplified"
        [done] = convert(conn, "trades", [ours])
        assert done.parquet and done.rows == 500 and indexed_columns(conn, "trades") == ["ticker"]
        assert _through_index(conn) == {raw: 500, ours: 500}
        # a crash between convert()'s drop and add: the job's next pass restores it
        conn.execute("ALTER TABLE trades ALTER COLUMN ticker DROP INDEX")
        wait_for_wal(conn)
    report = _job(clean_questdb, StorageSettings()).run_once()
    assert report.failed == [] and report.converted == []
    with clean_questdb.connect() as conn:
        assert indexed_columns(conn, "trades") == ["ticker"]
        assert _through_index(conn) == {raw: 500, ours: 500}


def _through_index(conn) -> dict[dt.date, int]:
    """KXOLD's trades per day, found through the ticker index."""
    return {day.date(): int(n) for day, n in conn.execute(
        "SELECT timestamp_floor('d', ts), count() FROM trades WHERE ticker = 'KXOLD'"
        " GROUP BY 1").fetchall()}


def test_retention_drops_days_older_than_it_and_keeps_the_newer(clean_questdb):
    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=n) for n in (20, 10, 5, 0)]
    with clean_questdb.connect() as conn:
        for n, day in enumerate(days):
            at = _day_start_us(day) + 60_000_000
            conn.execute(f"INSERT INTO trades (ts, ticker, trade_id, yes_price_e4, no_price_e4, "
                         f"count_e2, taker_side, is_block, seq, sid, recv_ts, source) VALUES "
                         f"({at}, 'KXRET', 't{n}', 4200, 5800, 100, 'yes', false, {n}, 1, {at},"
                         f" 'ws')")
        wait_for_wal(conn)
    storage = load_settings({"KTAPE_RETENTION_DAYS_TRADES": "8"}).storage
    job = _job(clean_questdb, storage)
    first = job.run_once()
    assert first.ttl_set == {"trades": 8} and first.failed == []
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        (ttl,) = conn.execute("SELECT ttlValue FROM tables() WHERE table_name = 'trades'"
                              ).fetchone()
        assert ttl == 8
        # QuestDB applies a TTL at the table's next commit (ingestd commits all day)
        at = now_us()
        conn.execute(f"INSERT INTO trades (ts, ticker, trade_id, yes_price_e4, no_price_e4, "
                     f"count_e2, taker_side, is_block, seq, sid, recv_ts, source) VALUES "
                     f"({at}, 'KXRET', 'now', 4200, 5800, 100, 'yes', false, 9, 1, {at}, 'ws')")
        wait_for_wal(conn)
        kept = sorted(p.day for p in read_partitions(conn, "trades"))
    assert kept == days[2:]  # 20 and 10 days old: gone; 5 days old and today: kept
    second = job.run_once()
    assert sorted((p.table, p.day) for p in second.dropped) == [("trades", days[0]),
                                                                ("trades", days[1])]
    assert second.ttl_set == {}  # already as configured
