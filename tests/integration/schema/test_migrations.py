"""Migrations against a real QuestDB: every table exists as designed, re-runs are no-ops."""

from __future__ import annotations

from ktape.schema import MIGRATIONS, applied_versions, apply_migrations
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
