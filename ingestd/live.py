"""The live fan-out: every book change and gap row, as ingestd writes it, to followers.

Why: queryd's live streams must not wait for QuestDB (flush interval + WAL apply adds
hundreds of milliseconds) nor poll it once per subscriber. ingestd already holds each
row the moment it is decided, so it hands a copy to whoever follows `GET /live` on its
HTTP port: newline-delimited JSON, one object per row, in exactly the order the rows
go to QuestDB, each with a `live_seq` that increases by one per row within this process
(a follower sees a jump if it was dropped). The first line names the process (`epoch`)
so a follower knows when ingestd restarted.

A follower that cannot keep up is disconnected rather than slowing ingest: its pending
bytes are bounded (`max_pending_bytes`). It reconnects and re-joins from QuestDB.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from aiohttp import web

from ingestd.book_change_lines import TABLE, BookChangeLines
from ktape.log import get_logger

log = get_logger(__name__)

LIVE_TABLES = (TABLE, "gaps")
HEARTBEAT_SECS = 2.0


class _Follower:
    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.chunks: list[bytes] = []
        self.pending = 0
        self.wake = asyncio.Event()
        self.dropped = False

    def offer(self, chunk: bytes) -> None:
        if self.dropped:
            return
        if self.pending + len(chunk) > self.max_pending:
            self.dropped = True  # the sender loop ends the connection
        else:
            self.chunks.append(chunk)
            self.pending += len(chunk)
        self.wake.set()


class LiveFanout:
    def __init__(self, max_pending_bytes: int = 64 << 20) -> None:
        self.epoch = uuid.uuid4().hex
        self.live_seq = 0
        self.max_pending_bytes = max_pending_bytes
        self._followers: set[_Follower] = set()
        self.dropped_followers = 0
        # The newest row of each table, sent to a new follower so it can tell when
        # QuestDB has made visible everything published before it joined. Kept in the
        # form it arrived in; a record is built only when a follower joins.
        self._last_rows: dict[str, dict[str, Any]] = {}
        self._last_book_change: tuple[Any, ...] | None = None
        self._outbox: list[bytes] = []
        self._delivery_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None  # set when a follower joins

    @property
    def followers(self) -> int:
        return len(self._followers)

    @property
    def last_by_table(self) -> dict[str, dict[str, Any]]:
        last = dict(self._last_rows)
        if self._last_book_change is not None:
            lines, *values = self._last_book_change
            last[TABLE] = orjson.loads(lines.live_json(*values))
        return last

    def publish(self, table: str, symbols: dict[str, str], columns: dict[str, Any],
                at_us: int) -> None:
        """Called for every row of LIVE_TABLES written (IlpWriter.row)."""
        self.live_seq += 1
        record: dict[str, Any] = {"n": self.live_seq, "tb": table, "ts": at_us, **symbols}
        for name, value in columns.items():
            record[name] = getattr(value, "value", value)  # TimestampMicros -> int
        if table == TABLE:
            self._last_book_change = None
        self._last_rows[table] = record
        if self._followers:
            self._offer(orjson.dumps(record) + b"\n")

    def publish_book_change(self, lines: BookChangeLines, price_e4: int, qty_after_e2: int,
                            delta_e2: int, seq: int, sid: int, recv_us: int,
                            at_us: int) -> None:
        """The hot path for book changes (ingestd/book_change_lines.py): the same record
        as `publish` would send, as text from the market's prebuilt parts."""
        self.live_seq += 1
        values = (self.live_seq, price_e4, qty_after_e2, delta_e2, seq, sid, recv_us, at_us)
        self._last_book_change = (lines, *values)
        if self._followers:
            self._offer(lines.live_json(*values))

    def _offer(self, line: bytes) -> None:
        """Lines wait in an outbox until the event loop next turns and then go to every
        follower as one chunk: per row, an append instead of a call per follower."""
        self._outbox.append(line)
        if not self._delivery_scheduled and self._loop is not None:
            self._delivery_scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._delivery_scheduled = False
        if self._outbox:
            chunk = b"".join(self._outbox)
            self._outbox.clear()
            for follower in self._followers:
                follower.offer(chunk)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """Answer `GET /live` (ingestd/http.py) until the follower leaves or falls more
        than `max_pending_bytes` behind."""
        follower = _Follower(self.max_pending_bytes)
        self._loop = asyncio.get_running_loop()
        self._deliver()  # lines published before the hello belong to the earlier followers
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        hello = orjson.dumps({"epoch": self.epoch, "n": self.live_seq,
                              "last": self.last_by_table}) + b"\n"
        self._followers.add(follower)
        peer = request.remote
        log.info("live.follower_joined", peer=str(peer), followers=len(self._followers))
        try:
            await response.write(hello)
            while not follower.dropped:
                try:
                    await asyncio.wait_for(follower.wake.wait(), HEARTBEAT_SECS)
                except TimeoutError:  # idle: a heartbeat tells the follower we are alive
                    follower.chunks.append(orjson.dumps({"hb": self.live_seq}) + b"\n")
                follower.wake.clear()
                if follower.chunks:
                    chunks, follower.chunks, follower.pending = follower.chunks, [], 0
                    await response.write(b"".join(chunks))  # waits while the socket is full
            self.dropped_followers += 1
            log.warning("live.follower_dropped", peer=str(peer),
                        reason="more than max_pending_bytes behind")
        except ConnectionError:
            pass  # the follower left
        finally:
            self._followers.discard(follower)
            log.info("live.follower_left", peer=str(peer), followers=len(self._followers))
        return response
