"""Synthetic order-book history generated inside QuestDB (INSERT ... SELECT).

Why SQL-side: 10M rows through the Python ILP client would take minutes; QuestDB's own
generators write them in seconds. The data is shaped like ktape's (ticker symbols, both
sides, an initial checkpoint per market then one about every CHECKPOINT_EVERY of its
changes) but its values are not a consistent book — it exists to measure query cost
against history length, not to check correctness (the tests do that with simulator data).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psycopg

from ktape.config import HostPort
from ktape.runtime.ports import free_port
from ktape.runtime.questdb import QuestDBProcess
from ktape.schema import apply_migrations
from ktape.schema.wal import wait_for_wal

START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
START_US = int(START.timestamp()) * 1_000_000
CHECKPOINT_EVERY = 1000
LEVELS = ",".join(f"{p}00:{1000 + p}" for p in range(10, 60, 2))


def add_shape_arguments(parser: Any, *, sizes: str, markets: int, span_days: int,
                        samples: int) -> None:
    """The synthetic history's shape and the samples per size, as the query benches take
    them (each with its own defaults): stored-change sizes, markets, days, samples."""
    parser.add_argument("--sizes", default=sizes)
    parser.add_argument("--markets", type=int, default=markets)
    parser.add_argument("--span-days", type=int, default=span_days)
    parser.add_argument("--samples", type=int, default=samples)


def checkpoint_spacing(*, step_us: int, markets: int, every: int,
                       interval_s: float | None) -> int:
    """Changes of one market between its checkpoints, by ingestd's rule
    (ingestd/recorder.py): a checkpoint after `every` changes of the market, or at its
    first change `interval_s` or more after the last checkpoint, whichever comes first.
    The synthetic markets change at an even pace (one every `markets` table rows, which
    are `step_us` apart), so the time rule is a count too. `interval_s=None` applies the
    count rule alone: the sparsest checkpoints ingestd could write, the pessimistic case
    the scale benches measure."""
    if interval_s is None:
        return every
    return max(1, min(every, -(-int(interval_s * 1_000_000) // (markets * step_us))))


def generate(conn: psycopg.Connection, *, changes: int, markets: int, span_days: int = 7,
             first: bool = True, checkpoint_every: int = CHECKPOINT_EVERY,
             checkpoint_interval_s: float | None = None) -> dict:
    """Append `changes` book changes over `span_days` for `markets` tickers + checkpoints
    (spaced as `checkpoint_spacing` says).

    `seq` is the row's offset from the first row's time (one subscription, sid 1), so it
    grows with `ts` across appended batches as a recorder's does; the tops ingestd writes
    on each row are random prices here (as the checkpoints' ladders are fixed text: none
    of it is a replayable book), which is all a read's cost depends on."""
    span_us = span_days * 86_400 * 1_000_000
    step_us = max(1, span_us // changes)
    checkpoint_every = checkpoint_spacing(step_us=step_us, markets=markets,
                                          every=checkpoint_every,
                                          interval_s=checkpoint_interval_s)
    conn.execute(
        f"""
        INSERT INTO book_changes
        SELECT timestamp_sequence({START_US + 1000}, {step_us}) AS ts,
               cast(concat('KXBENCH-', x % {markets}) AS SYMBOL) AS ticker,
               rnd_symbol('yes', 'no') AS side,
               100 * (1 + rnd_long(1, 98, 0)) AS price_e4,
               rnd_long(0, 500000, 0) AS qty_after_e2,
               rnd_long(-5000, 5000, 0) AS delta_e2,
               cast('delta' AS SYMBOL) AS kind,
               (x - 1) * {step_us} + 1 AS seq,
               1L AS sid,
               timestamp_sequence({START_US + 1000}, {step_us}) AS recv_ts,
               cast('exchange' AS SYMBOL) AS ts_source,
               cast(NULL AS TIMESTAMP) AS source_ts,
               100 * rnd_int(1, 49, 0) AS best_yes_bid_e4,
               100 * rnd_int(1, 49, 0) AS best_no_bid_e4
        FROM long_sequence({changes})
        """
    )
    if first:  # ingestd's first snapshot of every market
        _insert_checkpoints(conn, count=markets, step_us=1, markets=markets)
    periodic = max(markets, changes // checkpoint_every)
    _insert_checkpoints(conn, count=periodic, step_us=max(1, span_us // periodic),
                        markets=markets)
    wait_for_wal(conn, ["book_changes", "book_checkpoints"], timeout_secs=600)
    (n_changes,) = conn.execute("SELECT count() FROM book_changes").fetchone()
    (n_checkpoints,) = conn.execute("SELECT count() FROM book_checkpoints").fetchone()
    return {"changes": n_changes, "checkpoints": n_checkpoints, "markets": markets,
            "span_days": span_days, "checkpoint_every": checkpoint_every}


def _insert_checkpoints(conn: psycopg.Connection, *, count: int, step_us: int,
                        markets: int) -> None:
    conn.execute(
        f"""
        INSERT INTO book_checkpoints
        SELECT timestamp_sequence({START_US}, {step_us}) AS ts,
               cast(concat('KXBENCH-', x % {markets}) AS SYMBOL) AS ticker,
               cast('periodic' AS SYMBOL) AS reason,
               x AS seq,
               1L AS sid,
               timestamp_sequence({START_US}, {step_us}) AS recv_ts,
               cast('exchange' AS SYMBOL) AS ts_source,
               '{LEVELS}' AS yes_levels,
               '{LEVELS}' AS no_levels,
               cast({START_US} AS TIMESTAMP) AS continuous_since
        FROM long_sequence({count})
        """
    )


def generate_trades(conn: psycopg.Connection, *, trades: int, markets: int,
                    span_days: int = 7) -> int:
    """Append `trades` trades over `span_days` for `markets` tickers; returns the count."""
    span_us = span_days * 86_400 * 1_000_000
    step_us = max(1, span_us // trades)
    conn.execute(
        f"""
        INSERT INTO trades
        SELECT timestamp_sequence({START_US + 500}, {step_us}) AS ts,
               cast(concat('KXBENCH-', x % {markets}) AS SYMBOL) AS ticker,
               concat('t-', x) AS trade_id,
               100 * (1 + rnd_long(1, 98, 0)) AS yes_price_e4,
               10000 - 100 * (1 + rnd_long(1, 98, 0)) AS no_price_e4,
               100 * rnd_long(1, 500, 0) AS count_e2,
               rnd_symbol('yes', 'no') AS taker_side,
               false AS is_block,
               x AS seq,
               2L AS sid,
               timestamp_sequence({START_US + 500}, {step_us}) AS recv_ts,
               cast('ws' AS SYMBOL) AS source
        FROM long_sequence({trades})
        """
    )
    wait_for_wal(conn, ["trades"], timeout_secs=600)
    (count,) = conn.execute("SELECT count() FROM trades").fetchone()
    return int(count)


@contextmanager
def bench_questdb(prefix: str, extra_sql: list[str]
                  ) -> Iterator[tuple[QuestDBProcess, psycopg.Connection, Path]]:
    """A private QuestDB with ktape's tables (plus `extra_sql`, e.g. an index under
    test), an autocommit connection to it and a scratch dir; all removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        qdb = QuestDBProcess(root, HostPort("127.0.0.1", free_port()),
                             HostPort("127.0.0.1", free_port()), heap_mb=2048)
        with qdb, psycopg.connect(conninfo_of(qdb), autocommit=True) as conn:
            apply_migrations(conn)
            for statement in extra_sql:
                conn.execute(statement)
            yield qdb, conn, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def conninfo_of(qdb: QuestDBProcess) -> str:
    return f"host=127.0.0.1 port={qdb.pg.port} user=admin password=quest dbname=qdb"


def insert_bench_markets(conn: psycopg.Connection, markets: int) -> None:
    """`markets` rows for KXBENCH-0.. (event KXBENCH-EVENT, series KXBENCH), as the
    analytics and audit benches read them."""
    conn.execute(f"""INSERT INTO markets (ts, ticker, event_ticker, series_ticker, status)
        SELECT cast({START_US} AS TIMESTAMP), cast(concat('KXBENCH-', x - 1) AS SYMBOL),
               cast('KXBENCH-EVENT' AS SYMBOL), cast('KXBENCH' AS SYMBOL),
               cast('active' AS SYMBOL)
        FROM long_sequence({markets})""")


def queryd_env(qdb: QuestDBProcess, root: Path) -> dict[str, str]:
    """The settings of an in-process queryd on the bench QuestDB."""
    return {"KTAPE_QUESTDB_HTTP": str(qdb.http), "KTAPE_QUESTDB_PG": str(qdb.pg),
            "KTAPE_DATA_DIR": str(root / "data"), "KTAPE_PAGE_TOKEN_SECRET": "bench"}


@asynccontextmanager
async def queryd_channel(env: dict[str, str]) -> AsyncIterator[Any]:
    """An in-process queryd (no metering) on `env` and a loopback gRPC channel to it;
    both stopped afterwards."""
    import grpc

    from ktape.config import load_settings
    from queryd.server import build_server

    running, pool, _ = await build_server(load_settings(env), addr="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield channel
    finally:
        await running.stop(0)
        await pool.close()
