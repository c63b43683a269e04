"""The ILP writer: rows -> ILP buffer -> QuestDB over HTTP, spilling when QuestDB is down.

Rows are serialised by the official client's `Buffer` (correct escaping, exact integer
and timestamp encoding), except book changes, which arrive as ready ILP lines (`add_line`,
ingestd/book_change_lines.py: the one row type hot enough for the difference to matter).
A batch keeps every row in the order it was written, whichever way it came, and is POSTed
to QuestDB's ILP-over-HTTP endpoint (`/write`): queryd's live join relies on QuestDB
committing rows in the order the live fan-out published them. The same bytes are what a
failed flush appends to the spill file and what a replay sends back, unchanged, in order.
Dedup keys on every table make a replay of an already-committed batch harmless
(exactly-once).

One task owns the writer; `flush()` runs on a timer (`flush_interval_ms`) and when the
buffer holds `flush_rows` rows. Memory stays bounded: a buffer that cannot be sent goes to
disk, not into a growing queue.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import Any

import httpx

from ingestd import metrics
from ingestd.spill import SpillFile, SpillFull
from ktape.log import get_logger

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from questdb.ingress import Buffer, TimestampMicros

log = get_logger(__name__)

__all__ = ["IlpWriter", "TimestampMicros"]


class IlpWriter:
    def __init__(self, http_addr: str, spill: SpillFile, *, flush_rows: int = 20_000,
                 flush_interval_ms: int = 200, timeout_secs: float = 10.0) -> None:
        self.url = f"http://{http_addr}/write?precision=n"
        self.spill = spill
        self.flush_rows = flush_rows
        self.flush_interval_ms = flush_interval_ms
        self.client = httpx.AsyncClient(timeout=timeout_secs)
        self.buffer = Buffer(protocol_version=1)
        self.lines: list[str] = []  # ready ILP lines written since the Buffer's rows
        self.segments: list[bytes] = []  # earlier parts of this batch, in order
        self.rows = 0
        self.table_rows: dict[str, int] = {}
        self.oldest_exchange_ms: int | None = None
        self.healthy = True
        self.last_error: str | None = None
        self.committed_rows = 0
        self._lock = asyncio.Lock()
        self._in_flight: asyncio.Task[None] | None = None
        # Batches that could neither be sent nor spilled (spill file full). Kept in order
        # in memory while the reader is held back (`backpressure`), never dropped.
        self.held: list[bytes] = []
        metrics.SPILL_BYTES.set(self.spill.size)

    def row(self, table: str, *, symbols: dict[str, str], columns: dict[str, Any],
            at_us: int, exchange_ms: int | None = None) -> None:
        if self.lines:  # rows stay in the order they were written
            self.segments.append("".join(self.lines).encode())
            self.lines = []
        self.buffer.row(table, symbols=symbols, columns=columns, at=TimestampMicros(at_us))
        self._count(table, exchange_ms)

    def add_line(self, table: str, line: str, exchange_ms: int | None) -> None:
        """Buffer one ready ILP line of `table` (ingestd/book_change_lines.py)."""
        if len(self.buffer):  # rows stay in the order they were written
            self.segments.append(bytes(self.buffer))
            self.buffer.clear()
        self.lines.append(line)
        self._count(table, exchange_ms)

    def _count(self, table: str, exchange_ms: int | None) -> None:
        self.rows += 1
        self.table_rows[table] = self.table_rows.get(table, 0) + 1
        if exchange_ms is not None and (self.oldest_exchange_ms is None
                                        or exchange_ms < self.oldest_exchange_ms):
            self.oldest_exchange_ms = exchange_ms

    def _payload(self) -> bytes:
        """The batch in write order: earlier segments, then whichever of the Buffer and
        the lines holds the newest rows (only one of them is non-empty)."""
        return b"".join([*self.segments, bytes(self.buffer), "".join(self.lines).encode()])

    @property
    def wants_flush(self) -> bool:
        return self.rows >= self.flush_rows

    def kick(self) -> None:
        """Start a flush in the background so parsing overlaps the HTTP round trip."""
        if self._in_flight is None or self._in_flight.done():
            self._in_flight = asyncio.create_task(self.flush(), name="ilp-flush")

    async def backpressure(self) -> None:
        """Wait for the flush in flight once three batches are buffered: memory stays
        bounded, and a slow QuestDB slows the reader instead of growing the buffer.
        With the spill file full, hold the reader until QuestDB takes the held batches
        (Kalshi may then drop the slow subscription: a recorded gap, not a silent loss)."""
        if self.rows >= 3 * self.flush_rows and self._in_flight is not None:
            await self._in_flight
        while self.held:
            await self.flush()
            if self.held:
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        """Send what is buffered (after any spilled batches), or spill it."""
        async with self._lock:
            if self.spill.size and not await self._replay_spill():
                self._spill_current()
                return
            while self.held:  # newer than the spill file, older than the buffer
                if not await self._send(self.held[0]):
                    self._spill_current()
                    return
                self.held.pop(0)
            if not self.rows:
                return
            payload = self._payload()
            rows, tables, oldest = self.rows, dict(self.table_rows), self.oldest_exchange_ms
            self._reset()
            if await self._send(payload):
                self._committed(rows, tables, oldest)
            else:
                self._spill(payload)

    async def _send(self, payload: bytes) -> bool:
        began = time.perf_counter()
        try:
            resp = await self.client.post(self.url, content=payload)
        except httpx.HTTPError as exc:
            return self._failed(f"{type(exc).__name__}: {exc}")
        metrics.FLUSH_SECONDS.observe(time.perf_counter() - began)
        if resp.status_code in (200, 204):
            if not self.healthy:
                log.info("ilp.recovered")
            self.healthy, self.last_error = True, None
            return True
        if 400 <= resp.status_code < 500:
            # QuestDB rejected the data itself: retrying cannot help. Keep it on disk for
            # an operator (never silently dropped), and carry on.
            log.error("ilp.batch_rejected", status=resp.status_code, body=resp.text[:500],
                      bytes=len(payload))
            metrics.BAD_INPUT.labels(reason="ilp_rejected").inc()
            self._quarantine(payload)
            return True
        return self._failed(f"HTTP {resp.status_code}: {resp.text[:200]}")

    def _failed(self, error: str) -> bool:
        metrics.FLUSH_FAILURES.inc()
        if self.healthy:
            log.warning("ilp.flush_failed", error=error)
        self.healthy, self.last_error = False, error
        return False

    async def _replay_spill(self) -> bool:
        """Send every spilled batch in order; True when the spill is empty again."""
        sent = 0
        for payload in self.spill.batches():
            if not await self._send(payload):
                return False
            sent += 1
        self.spill.clear()
        metrics.SPILL_BYTES.set(0)
        log.info("spill.replayed", batches=sent)
        return True

    def _spill_current(self) -> None:
        if self.rows:
            payload = self._payload()
            self._reset()
            self._spill(payload)

    def _spill(self, payload: bytes) -> None:
        if self.held:  # keep order: once holding, everything newer is held too
            self.held.append(payload)
            return
        try:
            self.spill.append(payload)
        except SpillFull:
            log.critical("spill.full", path=str(self.spill.path), bytes=self.spill.size,
                         action="holding batches in memory and pausing the reader")
            self.held.append(payload)
        metrics.SPILL_BYTES.set(self.spill.size)

    def _quarantine(self, payload: bytes) -> None:
        path = self.spill.path.with_suffix(".rejected")
        with open(path, "ab") as f:
            f.write(payload)

    def _committed(self, rows: int, tables: dict[str, int], oldest_ms: int | None) -> None:
        self.committed_rows += rows
        for table, count in tables.items():
            metrics.ROWS.labels(table=table).inc(count)
        if oldest_ms is not None:
            metrics.LAG_SECONDS.observe(max(0.0, time.time() - oldest_ms / 1000))

    def _reset(self) -> None:
        self.buffer = Buffer(protocol_version=1)
        self.lines = []
        self.segments = []
        self.rows = 0
        self.table_rows = {}
        self.oldest_exchange_ms = None

    async def run(self, stop: asyncio.Event) -> None:
        """Flush on a timer until `stop`, then a final flush."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.flush_interval_ms / 1000)
            except TimeoutError:
                pass
            await self.flush()

    async def close(self) -> None:
        if self._in_flight is not None:
            await self._in_flight
        await self.flush()
        await self.client.aclose()
