"""The partitions job: old closed days of the big tables become Parquet, and each table
keeps its days for as long as its retention says (QuestDB TTL).

Why here: datasetd already runs the closed-day work (datasetd/job.py) under `ktape up`,
and this job needs nothing but QuestDB's SQL port, so no service imports another. It is a
separate background task with its own connection and thread, so a slow conversion never
holds up a dataset build, and it never raises: a failing pass or partition is logged with
its table and day and retried on the next pass.

Which days: a day closes `grace` after midnight UTC (as for the datasets job); it is
converted once it has been closed for KTAPE_PARQUET_AFTER_DAYS whole days. Late rows and
heals can still reach a converted day: QuestDB 9.3.4 rewrites the Parquet file with them
(measured, docs/performance.md "Storage cost"), so nothing is lost, it only costs a
rewrite; the age keeps that rare. The active (newest) partition is never converted here,
although 9.3.4 accepts it: every append would then rewrite a Parquet file.

Retention is QuestDB's own TTL (`ALTER TABLE t SET TTL n DAYS`), set whenever the table's
TTL differs from the configuration (0 = keep forever clears it). QuestDB drops a whole day
once it ended more than n days before min(wall clock, newest row), at the table's next
commit; the job logs the days it sees gone (`partition.dropped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from prometheus_client import Counter, Gauge

from ktape.clock import now_us
from ktape.config import PARQUET_TABLES, RETENTION_TABLES, StorageSettings
from ktape.log import get_logger
from ktape.schema.migrate import indexed_columns
from ktape.schema.tables import INDEXED_TICKERS
from ktape.schema.wal import wait_for_wal

if TYPE_CHECKING:
    from datasetd.server import TaskContext

log = get_logger(__name__)
DAY_US = 86_400_000_000
EPOCH = dt.date(1970, 1, 1)

CONVERSIONS = Counter("ktape_partition_conversions_total",
                      "partitions converted to Parquet, by table and outcome",
                      ["table", "outcome"])
DROPPED = Counter("ktape_partition_dropped_total",
                  "day partitions seen gone after their retention (QuestDB TTL)", ["table"])
PARTITION_BYTES = Gauge("ktape_partition_bytes",
                        "bytes on disk of the table's partitions, by format", ["table", "format"])
PARTITION_COUNT = Gauge("ktape_partitions", "day partitions of the table, by format",
                        ["table", "format"])
LAST_PASS = Gauge("ktape_partition_last_pass_timestamp_seconds",
                  "end of the partitions job's last pass that reached QuestDB")

# tables() reports a TTL as a value and a unit; fixed units in hours (MONTH and YEAR are
# calendar lengths, never what this job sets, so they read as "different").
_TTL_UNIT_HOURS = {"HOUR": 1, "DAY": 24, "WEEK": 168}


@dataclass(frozen=True)
class Partition:
    """One day partition as table_partitions() reports it."""

    table: str
    day: dt.date
    rows: int
    bytes: int
    parquet: bool
    active: bool


@dataclass(frozen=True)
class Plan:
    """What one pass does: partitions to convert (oldest first) and TTLs to set."""

    conversions: list[Partition] = field(default_factory=list)
    ttl_days: dict[str, int] = field(default_factory=dict)


@dataclass
class PassReport:
    converted: list[tuple[Partition, int]] = field(default_factory=list)  # with bytes after
    failed: list[tuple[str, dt.date | None, str]] = field(default_factory=list)
    ttl_set: dict[str, int] = field(default_factory=dict)
    dropped: list[Partition] = field(default_factory=list)


def last_convertible_day(now: int, *, grace_us: int, after_days: int) -> dt.date | None:
    """The newest day old enough to convert at `now` (µs), or None when conversion is off:
    the last closed day (`grace` past its midnight) minus `after_days` whole days."""
    if after_days <= 0:
        return None
    last_closed = EPOCH + dt.timedelta(days=(now - grace_us) // DAY_US - 1)
    return last_closed - dt.timedelta(days=after_days)


def ttl_in_days(value: int, unit: str) -> float | None:
    """A TTL as tables() shows it (`14 DAYS` reads back `2 WEEK`), in days; None for a
    calendar unit."""
    hours = _TTL_UNIT_HOURS.get(unit.upper())
    return None if hours is None else value * hours / 24


def plan(partitions: Iterable[Partition], ttls: Mapping[str, tuple[int, str]],
         storage: StorageSettings, *, last_convertible: dt.date | None) -> Plan:
    """The pass's work: every native, inactive partition of a PARQUET_TABLES table on or
    before `last_convertible`, and every RETENTION_TABLES table whose TTL is not the
    configured one (a table missing from `ttls` is not touched)."""
    conversions = sorted(
        (p for p in partitions
         if last_convertible is not None and p.table in PARQUET_TABLES and not p.parquet
         and not p.active and p.day <= last_convertible),
        key=lambda p: (p.day, p.table))
    ttl_days: dict[str, int] = {}
    for table in RETENTION_TABLES:
        if table not in ttls:
            continue
        want = storage.retention_of(table)
        if ttl_in_days(*ttls[table]) != want:
            ttl_days[table] = want
    return Plan(conversions, ttl_days)


def read_partitions(conn: psycopg.Connection, table: str) -> list[Partition]:
    rows = conn.execute(
        f"SELECT name, numRows, diskSize, isParquet, active FROM table_partitions('{table}')"
    ).fetchall()
    partitions = []
    for name, rows_count, disk_size, is_parquet, active in rows:
        try:
            day = dt.date.fromisoformat(str(name))
        except ValueError:  # not a DAY partition: never ours to convert
            continue
        partitions.append(Partition(table, day, int(rows_count), int(disk_size),
                                    bool(is_parquet), bool(active)))
    return partitions


def read_ttls(conn: psycopg.Connection) -> dict[str, tuple[int, str]]:
    rows = conn.execute("SELECT table_name, ttlValue, ttlUnit FROM tables()").fetchall()
    return {str(name): (int(value), str(unit)) for name, value, unit in rows}


def convert(conn: psycopg.Connection, table: str, days: list[dt.date], *,
            timeout_secs: float = 600.0) -> list[Partition]:
    """Convert day partitions of one table to Parquet, waiting until QuestDB has applied
    it (a WAL table takes each ALTER in its transaction order); returns them converted.
    Converting a day that is already Parquet is a no-op.

    An indexed table (ticker indexes, migration 6) is converted with its indexes
    dropped, then `restore_indexes` adds them back, because QuestDB 9.3.4's own
    conversion of an indexed day, or an index added over a Parquet day no reader has
    opened yet, leaves lookups through the index finding none of the day's rows
    (`ticker = X` answers 0 rows until QuestDB restarts; tests/integration/datasets/
    test_partitions.py pins the defect). Meanwhile readers see the table unindexed:
    slower, exact. Adding an index back rebuilds it over every day of the table (~5 s a
    100M-row day), so a table's due days are converted together."""
    indexed = indexed_columns(conn, table)
    for column in indexed:
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} DROP INDEX")
    try:
        listed = ", ".join(f"'{day.isoformat()}'" for day in days)
        conn.execute(f"ALTER TABLE {table} CONVERT PARTITION TO PARQUET LIST {listed}")
        done = _wait(conn, table, days, timeout_secs)
    finally:
        if indexed:  # also after a failure: never leave the table unindexed for long
            restore_indexes(conn, table, indexed, days, timeout_secs=timeout_secs)
    # restored (applied and checked): read again for the sizes with the index files
    return done if not indexed else _wait(conn, table, days, timeout_secs)


def restore_indexes(conn: psycopg.Connection, table: str, columns: list[str],
                    days: list[dt.date] | None = None, *, timeout_secs: float = 600.0) -> None:
    """Add `columns`' indexes back so that they answer right on Parquet days: once every
    pending WAL transaction (a conversion) is applied, each Parquet day is read while
    still unindexed, then the indexes are added and, when applied, each of `days` (all
    Parquet days when None) is counted through them against a scan. On any difference
    the indexes are dropped again (reads stay exact, slower) and this raises. The job
    also calls it for an indexed table found without its index (a crash between the
    drop and the add)."""
    wait_for_wal(conn, [table], timeout_secs=timeout_secs)
    if set(columns) <= set(indexed_columns(conn, table)):
        return  # added meanwhile (the migration's own ADD INDEX was pending)
    parquet = [p.day for p in read_partitions(conn, table) if p.parquet]
    for day in parquet:  # opened while unindexed: see convert()
        conn.execute(f"SELECT count() FROM {table} WHERE ts IN '{day.isoformat()}'")
    for column in columns:
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} ADD INDEX")
    wait_for_wal(conn, [table], timeout_secs=timeout_secs)
    for column in columns:
        for day in parquet if days is None else days:
            if (wrong := _index_disagrees(conn, table, column, day)) is not None:
                for each in columns:
                    conn.execute(f"ALTER TABLE {table} ALTER COLUMN {each} DROP INDEX")
                log.error("partition.index_disagreed", table=table, column=column,
                          day=day.isoformat(), value=wrong[0], indexed_rows=wrong[1],
                          scanned_rows=wrong[2])
                raise RuntimeError(f"{table}.{column} index disagrees with a scan on "
                                   f"{day.isoformat()} ({wrong}): indexes dropped")
    log.info("partition.indexes_restored", table=table, columns=columns,
             parquet_days=len(parquet))


def _wait(conn: psycopg.Connection, table: str, days: list[dt.date],
          timeout_secs: float) -> list[Partition]:
    """Until every day is Parquet; the days' partitions then."""
    deadline = time.monotonic() + timeout_secs
    while True:
        now = {p.day: p for p in read_partitions(conn, table)}
        if missing := [day for day in days if day not in now]:
            raise RuntimeError(f"{table} has no partition {missing[0].isoformat()}")
        if all(now[day].parquet for day in days):
            return [now[day] for day in days]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{table} {days[0].isoformat()}.. not Parquet after "
                               f"{timeout_secs}s (WAL not applied yet?)")
        time.sleep(0.2)


def _index_disagrees(conn: psycopg.Connection, table: str, column: str, day: dt.date
                     ) -> tuple[str, int, int] | None:
    """The day's most and least frequent values of `column` counted through its index
    and by a scan (GROUP BY reads the column itself); the first that differs."""
    scanned = conn.execute(f"SELECT {column}, count() c FROM {table} WHERE ts IN "
                           f"'{day.isoformat()}' GROUP BY {column} ORDER BY c DESC").fetchall()
    for value, rows in {scanned[0], scanned[-1]} if scanned else ():
        (through,) = conn.execute(f"SELECT count() FROM {table} WHERE {column} = %s AND ts IN "
                                  f"'{day.isoformat()}'", (value,)).fetchone()
        if through != rows:
            return str(value), int(through), int(rows)
    return None


class PartitionJob:
    """Converts old days to Parquet and keeps each table's TTL as configured."""

    def __init__(self, conninfo: str, storage: StorageSettings, *,
                 interval_secs: float = 900.0, grace_secs: float = 120.0,
                 convert_timeout_secs: float = 600.0,
                 clock: Callable[[], int] = now_us) -> None:
        self.conninfo = conninfo
        self.storage = storage
        self.interval_secs = interval_secs
        self.grace_us = int(grace_secs * 1_000_000)
        self.convert_timeout_secs = convert_timeout_secs
        self.clock = clock
        self._seen: dict[tuple[str, dt.date], Partition] = {}

    def run_once(self, should_stop: Callable[[], bool] = lambda: False) -> PassReport:
        """One pass. Never raises: a pass that cannot reach QuestDB, or a partition that
        fails to convert, is logged and left for the next pass."""
        report = PassReport()
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                self._pass(conn, report, should_stop)
        except Exception as exc:  # QuestDB down or restarting: the next pass retries
            report.failed.append(("*", None, repr(exc)))
            log.error("partition.pass_failed", error=repr(exc))
            return report
        LAST_PASS.set(self.clock() / 1_000_000)
        return report

    def _pass(self, conn: psycopg.Connection, report: PassReport,
              should_stop: Callable[[], bool]) -> None:
        tables = sorted(set(PARQUET_TABLES) | set(RETENTION_TABLES))
        partitions = [p for table in tables for p in read_partitions(conn, table)]
        self._note_dropped(partitions, report)
        work = plan(partitions, read_ttls(conn), self.storage,
                    last_convertible=last_convertible_day(
                        self.clock(), grace_us=self.grace_us,
                        after_days=self.storage.parquet_after_days))
        for table, days in work.ttl_days.items():
            try:
                conn.execute(f"ALTER TABLE {table} SET TTL {days} DAYS")
            except psycopg.Error as exc:
                report.failed.append((table, None, repr(exc)))
                log.error("partition.retention_failed", table=table, days=days, error=repr(exc))
                continue
            report.ttl_set[table] = days
            log.info("partition.retention_set", table=table, days=days)
        for table in INDEXED_TICKERS:  # a crash between convert()'s drop and add
            if "ticker" not in indexed_columns(conn, table) and not should_stop():
                try:
                    restore_indexes(conn, table, ["ticker"],
                                    timeout_secs=self.convert_timeout_secs)
                except Exception as exc:  # logged; the next pass tries again
                    report.failed.append((table, None, repr(exc)))
                    log.error("partition.restore_failed", table=table, error=repr(exc))
        by_table: dict[str, list[Partition]] = {}
        for partition in work.conversions:  # oldest first within each table
            by_table.setdefault(partition.table, []).append(partition)
        for table, due in by_table.items():
            if should_stop():
                return
            try:
                done = convert(conn, table, [p.day for p in due],
                               timeout_secs=self.convert_timeout_secs)
            except Exception as exc:  # logged with its table and days; retried next pass
                for partition in due:
                    CONVERSIONS.labels(table, "failed").inc()
                    report.failed.append((table, partition.day, repr(exc)))
                log.error("partition.convert_failed", table=table,
                          days=[p.day.isoformat() for p in due], error=repr(exc))
                continue
            for partition, after in zip(due, done, strict=True):
                CONVERSIONS.labels(table, "converted").inc()
                report.converted.append((partition, after.bytes))
                log.info("partition.converted", table=table,
                         day=partition.day.isoformat(), rows=partition.rows,
                         bytes_before=partition.bytes, bytes_after=after.bytes)
        self._export(conn, tables)

    def _note_dropped(self, partitions: list[Partition], report: PassReport) -> None:
        """Days listed last pass and gone now: QuestDB's TTL dropped them (or an
        operator did); logged once each."""
        current = {(p.table, p.day): p for p in partitions}
        for key, gone in self._seen.items():
            if key not in current:
                DROPPED.labels(gone.table).inc()
                report.dropped.append(gone)
                log.info("partition.dropped", table=gone.table, day=gone.day.isoformat(),
                         rows=gone.rows, bytes=gone.bytes,
                         retention_days=self.storage.retention_of(gone.table))
        self._seen = current

    def _export(self, conn: psycopg.Connection, tables: list[str]) -> None:
        for table in tables:
            totals: dict[str, list[int]] = {"native": [0, 0], "parquet": [0, 0]}
            for p in read_partitions(conn, table):
                total = totals["parquet" if p.parquet else "native"]
                total[0] += 1
                total[1] += p.bytes
            for fmt, (count, size) in totals.items():
                PARTITION_COUNT.labels(table, fmt).set(count)
                PARTITION_BYTES.labels(table, fmt).set(size)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: a pass in a worker thread (it waits on QuestDB), then a pause."""
        while not stop.is_set():
            await asyncio.to_thread(self.run_once, stop.is_set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_secs)


async def run_partition_job(ctx: TaskContext) -> None:
    """datasetd's background task: the job over this deployment's QuestDB."""
    settings = ctx.settings
    await PartitionJob(settings.questdb_pg_conninfo, settings.storage).run(ctx.stop)
