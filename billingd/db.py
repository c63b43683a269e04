"""One transactional interface over SQLite and PostgreSQL for the billing store.

Why a thin layer of our own rather than an ORM: the store is a dozen hand-written
statements whose locking matters more than their mapping. Statements are written once
with `?` placeholders; the PostgreSQL side rewrites them to `%s`. Every store operation
runs in `tx()`; `lock_account()` serialises writers of one account — SQLite already
serialises all writers (`BEGIN IMMEDIATE`), PostgreSQL takes the account row
`FOR UPDATE` — so a balance check and the debit that follows are atomic on both.

Both are blocking (the stdlib's sqlite3, psycopg's sync pool): async code reaches them
through billingd/store/aio.py, whose thread pool is as large as `max_connections`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

Row = tuple[Any, ...]

# How many connections a database may hold at once, by default: each is one worker
# thread of the async facade (billingd/store/aio.py). SQLite serialises writers anyway,
# so more threads there would only queue on its write lock.
SQLITE_CONNECTIONS = 8
POSTGRES_CONNECTIONS = 16


class Tx(Protocol):
    dialect: str

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def lock_account(self, account_id: str) -> None: ...


class Database(Protocol):
    dialect: str
    max_connections: int  # connections in use at most at once (one per thread)

    def tx(self) -> Any: ...  # context manager yielding a Tx

    def close(self) -> None: ...


class _SqliteTx:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._conn.execute(sql, tuple(params)).fetchone()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    def lock_account(self, account_id: str) -> None:
        """BEGIN IMMEDIATE already holds the database's single write lock."""


class SqliteDb:
    """One connection per thread (SQLite connections are not shareable), WAL journal so
    readers never wait for the writer, `BEGIN IMMEDIATE` so writers queue up front
    instead of failing on lock upgrade."""

    dialect = "sqlite"

    def __init__(self, path: Path, *, max_connections: int = SQLITE_CONNECTIONS) -> None:
        self.path = path
        # Not enforced here: one connection per thread, so the threads calling bound it.
        self.max_connections = max_connections
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Every thread's connection with the lock its transactions hold: `close` takes
        # each lock, so it waits for a transaction still running in a worker thread (a
        # gRPC call cancelled at shutdown) instead of closing the connection under it,
        # which crashed the process inside SQLite.
        self._all: list[tuple[sqlite3.Connection, threading.Lock]] = []
        self._lock = threading.Lock()

    def _conn(self) -> tuple[sqlite3.Connection, threading.Lock]:
        held = getattr(self._local, "conn", None)
        if held is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL-safe
            held = self._local.conn = (conn, threading.Lock())
            with self._lock:
                self._all.append(held)
        return held

    @contextmanager
    def tx(self) -> Iterator[_SqliteTx]:
        conn, in_use = self._conn()
        with in_use:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn, in_use in self._all:
                with in_use:  # a transaction under way finishes first
                    conn.close()
            self._all.clear()
        self._local = threading.local()


class _PgTx:
    dialect = "postgres"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(self._sql(sql), tuple(params)).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._conn.execute(self._sql(sql), tuple(params)).fetchone()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(self._sql(sql), tuple(params)).rowcount

    def lock_account(self, account_id: str) -> None:
        self._conn.execute("SELECT 1 FROM accounts WHERE account_id = %s FOR UPDATE",
                           (account_id,))


class PostgresDb:
    """A psycopg 3 connection pool; each `tx()` is one READ COMMITTED transaction with
    account rows locked explicitly where a balance decides the outcome."""

    dialect = "postgres"

    def __init__(self, dsn: str, *, max_connections: int = POSTGRES_CONNECTIONS) -> None:
        from psycopg_pool import ConnectionPool

        self.max_connections = max_connections
        self._pool = ConnectionPool(dsn, min_size=1, max_size=max_connections, open=True,
                                    timeout=30, name="billing")
        self._pool.wait(timeout=30)

    @contextmanager
    def tx(self) -> Iterator[_PgTx]:
        with self._pool.connection() as conn, conn.transaction():
            yield _PgTx(conn)

    def close(self) -> None:
        self._pool.close()


def dialect_of(dsn: str) -> str:
    """"sqlite" for `sqlite:///ABSOLUTE/PATH`, "postgres" for `postgresql://...` (also
    `postgres://`)."""
    if dsn.startswith("sqlite:///"):
        return "sqlite"
    if dsn.startswith(("postgresql://", "postgres://")):
        return "postgres"
    raise ValueError("billing DSN must be sqlite:///PATH or postgresql://...")


def default_connections(dsn: str) -> int:
    """The `max_connections` that `open_database(dsn)` gives by default."""
    return SQLITE_CONNECTIONS if dialect_of(dsn) == "sqlite" else POSTGRES_CONNECTIONS


def open_database(dsn: str, *, max_connections: int | None = None) -> SqliteDb | PostgresDb:
    """The database of a DSN (see `dialect_of`), holding at most `max_connections`."""
    limit = max_connections or default_connections(dsn)
    if dialect_of(dsn) == "sqlite":
        return SqliteDb(Path(dsn.removeprefix("sqlite:///")), max_connections=limit)
    return PostgresDb(dsn, max_connections=limit)
