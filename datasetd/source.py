"""What the build job reads from QuestDB: bulk rows through QuestDB's own Parquet export
(`/exp?fmt=parquet`), small facts over the PostgreSQL wire.

Why the export endpoint for bulk rows: it hands over typed columns (timestamps in µs,
LONG as int64) already in Parquet, so a 10M-row day never becomes 10M Python tuples;
the export goes to a scratch file (Parquet needs its footer to be read) and is then read
one row group at a time, so memory stays bounded by a row group, not by the day.

Why exports can run ahead (`prefetch`): while the builder encodes one series, QuestDB
would otherwise sit idle; one background thread exports the next series into its
scratch file meanwhile, so QuestDB's work and ours overlap on different cores. At most
the exports asked for are on disk at once, never in memory.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
        self._http: httpx.Client | None = None  # one client: no TLS set-up per export
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._ahead: dict[str, tuple[str, Future[Path]]] = {}  # name -> (query, export)

    def rows(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo, autocommit=True)
        return self._conn.execute(query, params or {}).fetchall()  # type: ignore[arg-type]

    def drop_ahead(self) -> None:
        """Forget every export started ahead and not read: each is waited for and its
        scratch file removed (a build that failed midway leaves nothing behind, and a
        later build never reads rows exported for an earlier one)."""
        for name, (_, future) in list(self._ahead.items()):
            try:
                future.result()
            except Exception:  # nobody will read it; the build's own error is what counts
                pass
            (self.scratch / f"export-{name}.parquet").unlink(missing_ok=True)
        self._ahead.clear()

    def close(self) -> None:
        self.drop_ahead()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._conn is not None:
            self._conn.close()

    def _client(self) -> httpx.Client:
        with self._lock:  # the export thread and the caller's may both be first
            if self._http is None:
                self._http = httpx.Client(timeout=EXPORT_TIMEOUT)
            return self._http

    def export(self, query: str, dest: Path) -> Path:
        """Run `query` through QuestDB's Parquet export into `dest` (streamed to disk)."""
        url = f"http://{self.http}/exp"
        with self._client().stream("GET", url, params={"query": query, "fmt": "parquet"}) as resp:
            if resp.status_code != 200:
                body = resp.read().decode(errors="replace")[:500]
                raise SourceError(f"QuestDB export failed ({resp.status_code}): {body}")
            with open(dest, "wb") as out:
                for chunk in resp.iter_bytes(1 << 20):
                    out.write(chunk)
        return dest

    def prefetch(self, query: str, name: str) -> None:
        """Start exporting `query` in the background (exports run one at a time, in the
        order asked); `batches(query, name)` then reads that export."""
        if name in self._ahead:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export")
        self._ahead[name] = (query, self._pool.submit(
            self.export, query, self.scratch / f"export-{name}.parquet"))

    def batches(self, query: str, name: str) -> Iterator[pa.RecordBatch]:
        """The rows of `query`, one record batch at a time (from a scratch export that is
        deleted afterwards; the one `prefetch` started, if any)."""
        dest = self.scratch / f"export-{name}.parquet"
        try:
            ahead = self._ahead.pop(name, None)
            if ahead is not None:
                ahead[1].result()  # an export's error surfaces here, as if run now
            if ahead is None or ahead[0] != query:
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
