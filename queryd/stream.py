"""StreamOrderbook: a snapshot, then every change, gap markers and heartbeats.

History comes from QuestDB through one keyset cursor over `book_changes` (the order of
ListOrderbookDeltas). Live comes from ingestd's fan-out (queryd/live.py) when queryd
follows it: the stream subscribes *before* reading history, reads history until QuestDB
shows the subscription's witnesses (then every row published before the subscription
is in history), and from then on sends the subscription's queue, skipping rows it has
already sent from history. No change is lost or repeated at the seam, and live rows
reach the client milliseconds after ingestd wrote them instead of after the flush and
WAL apply.

Without the fan-out (ingestd not reachable, or lost mid-stream) the stream polls QuestDB
every POLL_SECS from its cursor — slower, still complete — and re-joins live when the
fan-out is back. A replay starts at most REPLAY_WINDOW back (older history is paged
with ListOrderbookDeltas or read from the daily files). A consumer that falls behind (its
live queue overflows, or its replay falls further behind live than when it began, by
more than MAX_BEHIND) is ended with RESOURCE_EXHAUSTED in an explicit `end` message;
other streams never wait for it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

from psycopg_pool import AsyncConnectionPool

from ktape.marketdata.v1 import marketdata_pb2 as pb
from queryd import sql
from queryd.columns import columns
from queryd.convert import orderbook_response, timestamp
from queryd.history import change_entry, change_rows, gap_marker
from queryd.live import LiveItem, LiveTail, Subscription, gap_dedup
from queryd.orderbook import orderbook_at
from queryd.timeutil import from_us, now_utc, to_us

POLL_SECS = 0.2
HEARTBEAT_SECS = 5.0
# History rows per query: QuestDB's cost per row of a page falls with its size (a 5,000-row
# page ~7 µs a row, 20,000 ~3.7 µs: bench/query/stream_pages.py); bigger buys little more
# and holds more rows per stream in memory.
PAGE = 20_000
MAX_STREAM_BATCH = 5000  # changes per message at most (StreamOrderbookRequest.batch_size)
LIVE_SAFETY = dt.timedelta(seconds=2)
MAX_BEHIND = dt.timedelta(minutes=10)
REPLAY_WINDOW = dt.timedelta(hours=2)  # how far back `start_time` may be
HORIZON = dt.timedelta(days=3650)
RECENT = dt.timedelta(minutes=2)  # history rows this close to now may also arrive live

def _end(code: str, message: str, reason: str = "") -> pb.StreamOrderbookResponse:
    return pb.StreamOrderbookResponse(end=pb.StreamEnd(code=code, message=message, reason=reason))


SLOW_LIVE = _end("RESOURCE_EXHAUSTED", "the consumer fell behind the live feed; reconnect "
                 "with start_time to resume", "SLOW_CONSUMER")
SLOW_HISTORY = _end("RESOURCE_EXHAUSTED", "the replay fell more than 10 minutes further "
                    "behind live than where it began; reconnect with start_time to resume",
                    "SLOW_CONSUMER")


class _Cursor:
    """Where the stream is: history position, last change, gaps seen, recent keys."""

    def __init__(self, began: dt.datetime, last_change: dt.datetime | None) -> None:
        self.began = began
        # The replay must keep up: never further behind live than at the start, plus slack.
        self.behind_limit = max(MAX_BEHIND, now_utc() - began + MAX_BEHIND)
        self.position: list[Any] | None = [to_us(began), 2**62, 2**62, "~", 2**62]
        self.last_change = last_change
        self.gaps_after = began
        self.sent_recent: set[Any] = set()  # dedup keys of recent history rows sent
        self.last_live: LiveItem | None = None  # newest row sent from the live queue

    def note_live(self) -> None:
        """Fold the newest live row into the history position and last-change time
        (once per burst, not per row)."""
        item = self.last_live
        if item is None:
            return
        self.position = max(self.position or list(item.key), list(item.key))
        if item.message.delta.kind != pb.DELTA_KIND_GAP:
            self.last_change = item.message.delta.ts.ToDatetime(tzinfo=dt.UTC)

    def note_history(self, dedup: Any, ts: dt.datetime) -> None:
        if ts >= now_utc() - RECENT:
            self.sent_recent.add(dedup)


# A stream entry: a `book_changes` row (sql.CHANGES_PAGE's columns, as history and the
# fan-out both have it) or a message already built (a gap marker, a shared live delta).
Entry = tuple[Any, ...] | pb.OrderbookDelta


async def _history_pass(pool: AsyncConnectionPool, ticker: str, cur: _Cursor
                        ) -> tuple[list[Entry], bool]:
    """One page of history after the cursor: (entries, caught_up)."""
    out: list[Entry] = []
    async with pool.connection() as conn:
        gap_rows = await (await conn.execute(sql.GAPS_DETECTED_AFTER, {
            "ticker": ticker, "after": cur.gaps_after})).fetchall()
        rows = await change_rows(conn, ticker, cur.began, now_utc() + HORIZON,
                                 tuple(cur.position), PAGE + 1)  # type: ignore[arg-type]
    for row in gap_rows:
        detected = row[0].replace(tzinfo=dt.UTC)
        out.append(gap_marker(row, to_us(row[2])))
        end_us = to_us(row[3]) if row[3] is not None else None
        cur.note_history(gap_dedup(to_us(detected), end_us), detected)
        cur.note_history(gap_dedup(to_us(detected), None), detected)  # its open version too
        cur.gaps_after = max(cur.gaps_after, detected)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    out.extend(rows)
    if rows:
        # A change this recent may also come through the live queue: remember its key
        # (the same key live rows carry) so it is not sent twice. Rows are in time order,
        # so only a page ending that recent has any.
        recent_us = to_us(now_utc() - RECENT)
        if rows[-1][0] >= recent_us:
            cur.sent_recent.update(row[:5] for row in rows if row[0] >= recent_us)
        cur.last_change = from_us(rows[-1][0])
        cur.position = list(rows[-1][:5])
    return out, not more


def _message_entries(entries: list[Entry]) -> list[pb.OrderbookDelta]:
    return [entry if isinstance(entry, pb.OrderbookDelta) else change_entry(*entry)
            for entry in entries]


def _column_messages(entries: list[Entry], batch: int
                     ) -> Iterator[pb.StreamOrderbookResponse]:
    """Runs of rows as `columns` batches; a built message (a gap marker) on its own."""
    start = 0  # where the current run of rows began
    for end, entry in enumerate([*entries, None]):
        if isinstance(entry, tuple):
            continue
        for i in range(start, end, batch):
            yield pb.StreamOrderbookResponse(columns=columns(entries[i:min(i + batch, end)]))
        if entry is not None:
            yield pb.StreamOrderbookResponse(delta=entry)
        start = end + 1


def _as_columns(batch: int, layout: int) -> bool:
    return batch > 0 and layout == pb.BATCH_LAYOUT_COLUMNS


def _messages(entries: list[Entry], batch: int, layout: int
              ) -> Iterator[pb.StreamOrderbookResponse]:
    """Entries ready at once as stream messages: one each, `batch` to a message, or
    `batch` to a message as columns."""
    if _as_columns(batch, layout):
        yield from _column_messages(entries, batch)
        return
    built = _message_entries(entries)
    if batch <= 0:
        for entry in built:
            yield pb.StreamOrderbookResponse(delta=entry)
        return
    for i in range(0, len(built), batch):
        yield pb.StreamOrderbookResponse(
            deltas=pb.OrderbookDeltaBatch(deltas=built[i:i + batch]))


async def stream_orderbook(pool: AsyncConnectionPool, ticker: str, start: dt.datetime | None,
                           depth: int, stop: asyncio.Event | None = None,
                           live: LiveTail | None = None, batch: int = 0,
                           layout: int = pb.BATCH_LAYOUT_UNSPECIFIED
                           ) -> AsyncIterator[pb.StreamOrderbookResponse]:
    """The stream's messages; `batch` > 0 packs up to that many ready changes into one
    (as columns with BATCH_LAYOUT_COLUMNS)."""
    began = start or (now_utc() - LIVE_SAFETY)
    sub: Subscription | None = live.subscribe(ticker) if live is not None else None
    try:
        async with pool.connection() as conn:
            snapshot = await orderbook_at(conn, ticker, began)
        yield pb.StreamOrderbookResponse(snapshot=orderbook_response(snapshot, depth))
        cur = _Cursor(began, snapshot.last_change)
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        joined = False  # True once history is complete up to the subscription
        as_columns = _as_columns(batch, layout)
        while stop is None or not stop.is_set():
            if sub is not None and (sub.reset.is_set() or sub.overflowed):
                if sub.overflowed:
                    yield SLOW_LIVE
                    return
                live.unsubscribe(sub)  # type: ignore[union-attr]
                sub, joined = None, False  # lost the fan-out: back to history
            if sub is None and live is not None and live.connected.is_set():
                sub = live.subscribe(ticker)  # re-join through history
            if not joined:
                entries, caught_up = await _history_pass(pool, ticker, cur)
                for message in _messages(entries, batch, layout):
                    yield message
                if entries:
                    last_sent = loop.time()
                if not caught_up:
                    if cur.last_change is not None and now_utc() - cur.last_change > cur.behind_limit:
                        yield SLOW_HISTORY
                        return
                    continue  # more history waiting: no sleep
                if sub is not None and live is not None:
                    if await live.wait_visible(sub, POLL_SECS):
                        # History is now complete up to the subscription; read what became
                        # visible since the pass above, then switch to the queue.
                        while True:
                            entries, caught_up = await _history_pass(pool, ticker, cur)
                            for message in _messages(entries, batch, layout):
                                yield message
                            if caught_up:
                                break
                        joined = True
                        continue
            if joined and sub is not None:
                burst = await _next_live(sub, HEARTBEAT_SECS)
                fresh: list[Entry] = []
                for item in burst:
                    if item.dedup in cur.sent_recent:
                        cur.sent_recent.discard(item.dedup)
                        continue
                    fresh.append(item.row if as_columns and item.row is not None
                                 else item.message.delta)
                    cur.last_live = item
                for message in _messages(fresh, batch, layout):
                    yield message
                if burst:
                    last_sent = loop.time()
                    cur.note_live()
            if loop.time() - last_sent >= HEARTBEAT_SECS:
                heartbeat = pb.Heartbeat(server_time=timestamp(now_utc()))
                if cur.last_change is not None:
                    heartbeat.last_change_time.CopyFrom(timestamp(cur.last_change))
                yield pb.StreamOrderbookResponse(heartbeat=heartbeat)
                last_sent = loop.time()
            if not joined:
                await asyncio.sleep(POLL_SECS)
    finally:
        if sub is not None and live is not None:
            live.unsubscribe(sub)


async def _next_live(sub: Subscription, wait_secs: float) -> list[LiveItem]:
    """What is queued now (at least one row, waiting up to `wait_secs`); empty on timeout or
    when the subscription was reset. One wait per burst, no task per row."""
    queue = sub.queue
    if queue.empty():
        try:
            async with asyncio.timeout(wait_secs):
                first = await queue.get()
        except TimeoutError:
            return []
        if first is None:  # the reset sentinel
            return []
        batch = [first]
    else:
        batch = []
    while not queue.empty() and len(batch) < 500:
        item = queue.get_nowait()
        if item is None:
            break
        batch.append(item)
    return batch
