"""What the build job reads from QuestDB: bulk rows through QuestDB's own Parquet export
(`/exp?fmt=parquet`), small facts over the PostgreSQL wire.

Why the export endpoint for bulk rows: it hands over typed columns (timestamps in µs,
LONG as int64) already in Parquet, so a 10M-row day never becomes 10M Python tuples;
the export goes to a scratch file (Parquet needs its footer to be read) and is then read
one row group at a time, so memory stays bounded by a row group, not by the day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from ktape.clock import us_rfc3339
from ktape.config import HostPort
from ktape.datasets.names import valid_ticker
from ktape.log import get_logger

log = get_logger(__name__)
EXPORT_TIMEOUT = httpx.Timeout(30.0, read=600.0)
BATCH_ROWS = 131_072


class SourceError(RuntimeError):
    """QuestDB refused an export or a query; the message carries its answer."""


def ts_literal(us: int) -> str:
    """A QuestDB timestamp literal for SQL sent as text (the export takes no parameters)."""
    return f"'{us_rfc3339(us)}'"


def tickers_literal(tickers: Sequence[str]) -> str:
    """`'A','B'` for an IN list. Tickers are checked against the ticker grammar first
    (letters, digits, `.`, `_`, `-`), so no quote can reach the SQL text."""
    for ticker in tickers:
        if not valid_ticker(ticker):
            raise ValueError(f"{ticker!r} is not a ticker")
    return ",".join(f"'{t}'" for t in tickers)


class QuestSource:
    """One QuestDB: `export` for bulk rows, `rows` for small grouped facts."""

    def __init__(self, http: HostPort, conninfo: str, scratch: Path) -> None:
        self.http = http
        self.conninfo = conninfo
        self.scratch = scratch
        self._conn: psycopg.Connection[Any] | None = None

    def rows(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo, autocommit=True)
        return self._conn.execute(query, params or {}).fetchall()  # type: ignore[arg-type]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def export(self, query: str, dest: Path) -> Path:
        """Run `query` through QuestDB's Parquet export into `dest` (streamed to disk)."""
        url = f"http://{self.http}/exp"
        with httpx.stream("GET", url, params={"query": query, "fmt": "parquet"},
                          timeout=EXPORT_TIMEOUT) as resp:
            if resp.status_code != 200:
                body = resp.read().decode(errors="replace")[:500]
                raise SourceError(f"QuestDB export failed ({resp.status_code}): {body}")
            with open(dest, "wb") as out:
                for chunk in resp.iter_bytes(1 << 20):
                    out.write(chunk)
        return dest

    def batches(self, query: str, name: str) -> Iterator[pa.RecordBatch]:
        """The rows of `query`, one record batch at a time (from a scratch export that is
        deleted afterwards)."""
        dest = self.scratch / f"export-{name}.parquet"
        try:
            self.export(query, dest)
            found = pq.ParquetFile(dest)
            if found.metadata.num_rows:
                yield from found.iter_batches(batch_size=BATCH_ROWS)
        finally:
            dest.unlink(missing_ok=True)


def day_bounds(day: dt.date) -> tuple[int, int]:
    from ktape.conditions import day_start_us

    start = day_start_us(day)
    return start, start + 86_400_000_000
