"""Wait for QuestDB's WAL to apply, and heal suspended tables.

Why: a row acknowledged over ILP is durable but becomes visible to SQL only once the WAL
apply job has run. Tests and consistency checks wait on `wal_tables()` (writerTxn =
sequencerTxn) instead of sleeping. A table suspended after an apply error stops becoming
visible at all; `resume_suspended` logs and resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import psycopg

from ktape.log import get_logger

log = get_logger(__name__)


def wal_lag(conn: psycopg.Connection, names: Iterable[str] | None = None) -> dict[str, int]:
    """Table -> transactions written but not yet applied (suspended tables included)."""
    rows = conn.execute(
        "SELECT name, suspended, writerTxn, sequencerTxn FROM wal_tables()"
    ).fetchall()
    wanted = set(names) if names is not None else None
    lag: dict[str, int] = {}
    for name, suspended, writer_txn, sequencer_txn in rows:
        if wanted is not None and name not in wanted:
            continue
        if suspended:
            lag[name] = -1
        else:
            lag[name] = int(sequencer_txn) - int(writer_txn)
    return lag


def resume_suspended(conn: psycopg.Connection) -> list[str]:
    """Resume every suspended WAL table; return their names."""
    resumed: list[str] = []
    for name, lag in wal_lag(conn).items():
        if lag < 0:
            log.warning("questdb.table_suspended", table=name)
            conn.execute(f'ALTER TABLE "{name}" RESUME WAL')
            resumed.append(name)
    return resumed


def wait_for_wal(
    conn: psycopg.Connection, names: Iterable[str] | None = None, timeout_secs: float = 30.0
) -> None:
    """Block until every (named) WAL table has applied all committed transactions."""
    wanted = list(names) if names is not None else None
    deadline = time.monotonic() + timeout_secs
    while True:
        lag = wal_lag(conn, wanted)
        if all(v == 0 for v in lag.values()):
            return
        if any(v < 0 for v in lag.values()):
            raise RuntimeError(f"WAL table suspended: {[n for n, v in lag.items() if v < 0]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"WAL not applied after {timeout_secs}s: {lag}")
        time.sleep(0.05)
