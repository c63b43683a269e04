"""Apply the numbered QuestDB migrations, idempotently, at service startup.

Why versioned and idempotent both: QuestDB has no transactional DDL, so a crash between
a CREATE and the version row must be safe to re-run (every statement uses IF NOT
EXISTS / is a no-op when already applied), while the version table tells an operator
which schema a database holds and lets later migrations (ALTER ...) run exactly once.
Concurrent starters (ingestd and queryd at once) are safe for the same reason.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from ktape.log import get_logger
from ktape.schema import tables

log = get_logger(__name__)

VERSION_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    ts TIMESTAMP,
    version INT,
    name VARCHAR,
    checksum VARCHAR,
    applied_at TIMESTAMP
) TIMESTAMP(ts) PARTITION BY YEAR WAL
DEDUP UPSERT KEYS(ts, version)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Sequence[str]

    @property
    def checksum(self) -> str:
        text = "\n;\n".join(" ".join(s.split()) for s in self.statements)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial tables", tables.V0001_INITIAL),
    Migration(2, "kalshi candles", tables.V0002_KALSHI_CANDLES),
    Migration(3, "book order and market lifecycle", tables.V0003_ORDER_AND_LIFECYCLE),
    Migration(4, "ticker channel", tables.V0004_TICKERS),
    Migration(5, "audit books", tables.V0005_AUDIT_BOOKS),
    Migration(6, "ticker indexes", tables.V0006_TICKER_INDEXES),
    Migration(7, "book tops on changes", tables.V0007_BOOK_TOPS),
)


_ADD_COLUMN = re.compile(
    r"^\s*ALTER\s+TABLE\s+(\w+)\s+ADD\s+COLUMN\s+IF\s+NOT\s+EXISTS\s+(\w+)\s", re.I)
_ADD_INDEX = re.compile(
    r"^\s*ALTER\s+TABLE\s+(\w+)\s+ALTER\s+COLUMN\s+(\w+)\s+ADD\s+INDEX\s*$", re.I)


def indexed_columns(conn: psycopg.Connection, table: str) -> list[str]:
    """The table's columns with a symbol index (`"column"` is a keyword: quoted)."""
    rows = conn.execute(f"""SELECT "column", indexed FROM table_columns('{table}')""").fetchall()
    return [str(name) for name, indexed in rows if indexed]


def _execute_idempotently(conn: psycopg.Connection, statement: str) -> None:
    """Run one migration statement; an `ALTER COLUMN ... ADD INDEX` of a column indexed
    already (QuestDB has no IF NOT EXISTS for an index), or an `ADD COLUMN IF NOT EXISTS`
    whose column exists, is skipped. QuestDB rejects the latter no-op on a WAL table
    ("statement is either no-op ...", FIELD-NOTES), and a re-run (two services starting
    at once, or a crash before the version row) must not fail on it. The column may
    exist only in the WAL's pending structure, invisible to information_schema, so the
    rejection itself counts too."""
    index = _ADD_INDEX.match(statement)
    if index is not None and index.group(2).lower() in {
            c.lower() for c in indexed_columns(conn, index.group(1))}:
        log.info("schema.index_exists", statement=" ".join(statement.split()))
        return
    match = _ADD_COLUMN.match(statement)
    if match is not None:
        table, column = match.groups()
        rows = conn.execute("SELECT column_name FROM information_schema.columns "
                            "WHERE table_name = %s", (table,)).fetchall()
        if column.lower() in {str(name).lower() for (name,) in rows}:
            return
    try:
        conn.execute(statement)
    except psycopg.DatabaseError as exc:
        if match is None or "no-op" not in str(exc):
            raise
        log.info("schema.column_exists", statement=" ".join(statement.split()))


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    """Version -> checksum of every migration recorded as applied."""
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {int(version): str(checksum) for version, checksum in rows}


def apply_migrations(
    conn: psycopg.Connection, migrations: Sequence[Migration] = MIGRATIONS
) -> list[int]:
    """Apply what is missing; return the versions applied now (empty when up to date).

    `conn` must be in autocommit mode (QuestDB DDL is not transactional).
    """
    conn.execute(VERSION_TABLE_DDL)
    done = applied_versions(conn)
    applied_now: list[int] = []
    for migration in sorted(migrations, key=lambda m: m.version):
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                log.warning(
                    "schema.migration_changed",
                    version=migration.version,
                    recorded=done[migration.version],
                    current=migration.checksum,
                )
            continue
        for statement in migration.statements:
            _execute_idempotently(conn, statement)
        # ts is derived from the version (not the clock) so the dedup key makes a re-run
        # that could not yet see the previous run's WAL row write the same row again.
        conn.execute(
            "INSERT INTO schema_migrations (ts, version, name, checksum, applied_at) "
            "VALUES (CAST(%s AS TIMESTAMP), %s, %s, %s, now())",
            (migration.version, migration.version, migration.name, migration.checksum),
        )
        applied_now.append(migration.version)
        log.info("schema.migration_applied", version=migration.version, name=migration.name)
    return applied_now
