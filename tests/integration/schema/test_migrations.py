"""Migrations against a real QuestDB: every table exists as designed, re-runs are no-ops."""

from __future__ import annotations

from ktape.schema import MIGRATIONS, applied_versions, apply_migrations
from ktape.schema.migrate import Migration, indexed_columns
from ktape.schema.tables import INDEXED_TICKERS
from ktape.schema.wal import wait_for_wal

EXPECTED_TABLES = {
    "book_changes", "book_checkpoints", "gaps", "trades", "lifecycle", "markets", "events",
    "series", "settlements", "ingest_sessions", "schema_migrations", "tickers",
}


def test_fresh_database_gets_every_table_wal_dedup_day(questdb):
    with questdb.connect() as conn:
        conn.execute("DROP ALL TABLES")
        applied = apply_migrations(conn)
        assert applied == [m.version for m in MIGRATIONS]
        rows = conn.execute(
            "SELECT table_name, designatedTimestamp, partitionBy, walEnabled, dedup FROM tables()"
        ).fetchall()
        wait_for_wal(conn)  # ADD COLUMN on a WAL table is applied asynchronously
        columns = set(conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns").fetchall())
    tables = {r[0]: r for r in rows}
    assert {("book_changes", "source_ts"), ("markets", "settlement_value_e4"),
            ("markets", "determination_time"), ("markets", "settlement_time")} <= columns
    assert set(tables) >= EXPECTED_TABLES
    for name in EXPECTED_TABLES - {"schema_migrations"}:
        _, designated, partition_by, wal, dedup = tables[name]
        assert designated == "ts", name
        assert partition_by == "DAY", name
        assert wal is True, name
        assert dedup is True, name


def test_rerun_is_a_noop_and_records_each_version_once(questdb):
    with questdb.connect() as conn:
        conn.execute("DROP ALL TABLES")
        apply_migrations(conn)
        # Immediately again: the version row may not be visible yet (WAL), and the
        # statements must still be safe to repeat.
        apply_migrations(conn)
        wait_for_wal(conn, ["schema_migrations"])
        assert apply_migrations(conn) == []
        wait_for_wal(conn, ["schema_migrations"])
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert sorted(v for (v,) in versions) == [m.version for m in MIGRATIONS]
        assert set(applied_versions(conn)) == {m.version for m in MIGRATIONS}


def test_ticker_indexes_cover_stored_rows_and_a_rerun_is_skipped(questdb):
    """A deployment's stored days get the index too (migration 6 runs on a database
    that already holds rows), reads through it answer the same, and the statement run
    again (a crash before its version row) is skipped, not an error."""
    with questdb.connect() as conn:
        conn.execute("DROP ALL TABLES")
        assert apply_migrations(conn, [m for m in MIGRATIONS if m.version < 6]) == [1, 2, 3, 4, 5]
        conn.execute(
            "INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, delta_e2, kind,"
            " seq, sid, recv_ts, ts_source) SELECT"
            " timestamp_sequence('2026-11-24T18:00:00.000000Z', 1000000),"
            " cast(concat('KXT-', x % 3) AS SYMBOL), 'yes', 4200, 100 * x, 100, 'delta', x, 1,"
            " timestamp_sequence('2026-11-24T18:00:00.000000Z', 1000000), 'exchange'"
            " FROM long_sequence(30)")
        wait_for_wal(conn, ["book_changes"])
        before = conn.execute("SELECT seq FROM book_changes WHERE ticker = 'KXT-1'").fetchall()
        assert indexed_columns(conn, "book_changes") == []
        assert apply_migrations(conn, [m for m in MIGRATIONS if m.version <= 6]) == [6]
        wait_for_wal(conn)
        for table in INDEXED_TICKERS:
            assert indexed_columns(conn, table) == ["ticker"], table
        assert indexed_columns(conn, "book_checkpoints") == []  # measured: no gain
        after = conn.execute("SELECT seq FROM book_changes WHERE ticker = 'KXT-1'").fetchall()
        assert after == before and len(after) == 10
        latest = MIGRATIONS[-1].version
        again = Migration(latest + 1, "ticker indexes again",
                          next(m for m in MIGRATIONS if m.version == 6).statements)
        assert apply_migrations(conn, [*MIGRATIONS, again]) == [*range(7, latest + 2)]
        wait_for_wal(conn)
        assert conn.execute("SELECT name FROM wal_tables() WHERE suspended").fetchall() == []


def test_dedup_keys_make_replayed_rows_exactly_once(clean_questdb):
    row = (
        "INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, delta_e2, kind,"
        " seq, sid, recv_ts, ts_source) VALUES ("
        "'2026-11-24T18:00:00.000000Z', 'KXT-1', 'yes', 4200, 15000, 15000, 'delta', 7, 1,"
        " '2026-11-24T18:00:00.010000Z', 'exchange')"
    )
    with clean_questdb.connect() as conn:
        conn.execute(row)
        conn.execute(row)
        wait_for_wal(conn, ["book_changes"])
        (count,) = conn.execute("SELECT count() FROM book_changes").fetchone()
        assert count == 1
