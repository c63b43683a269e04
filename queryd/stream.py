"""StreamOrderbook: a snapshot, then every change, gap markers and heartbeats.

Replay and live are one keyset cursor over `book_changes` (the order of
ListOrderbookDeltas), so switching from history to live has no seam. Each stream polls
the store independently, so a slow consumer slows only itself; one that falls more than
`MAX_BEHIND` behind live is ended with RESOURCE_EXHAUSTED in an explicit `end` message.

Live mode starts `LIVE_SAFETY` in the past: a change's exchange time precedes its arrival
in QuestDB by the ingest lag, so a cursor started at "now" could skip a change stamped
just before now but committed just after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

from psycopg_pool import AsyncConnectionPool

from ktape.marketdata.v1 import marketdata_pb2 as pb
from queryd import sql
from queryd.convert import orderbook_response, timestamp
from queryd.history import deltas_page, gap_marker
from queryd.orderbook import orderbook_at
from queryd.timeutil import now_utc, to_us

POLL_SECS = 0.2
HEARTBEAT_SECS = 5.0
PAGE = 1000
LIVE_SAFETY = dt.timedelta(seconds=2)
MAX_BEHIND = dt.timedelta(minutes=10)
HORIZON = dt.timedelta(days=3650)


async def stream_orderbook(pool: AsyncConnectionPool, ticker: str, start: dt.datetime | None,
                           depth: int, stop: asyncio.Event | None = None
                           ) -> AsyncIterator[pb.StreamOrderbookResponse]:
    began = start or (now_utc() - LIVE_SAFETY)
    async with pool.connection() as conn:
        snapshot = await orderbook_at(conn, ticker, began)
    yield pb.StreamOrderbookResponse(snapshot=orderbook_response(snapshot, depth))
    # every change after the snapshot instant
    position: list | None = [to_us(began), 2**62, 2**62, "~", 2**62]
    last_sent = asyncio.get_running_loop().time()
    last_change: dt.datetime | None = snapshot.last_change
    gaps_after = began
    while stop is None or not stop.is_set():
        async with pool.connection() as conn:
            gap_rows = await (await conn.execute(sql.GAPS_DETECTED_AFTER, {
                "ticker": ticker, "after": gaps_after})).fetchall()
            page = await deltas_page(conn, ticker, began, now_utc() + HORIZON, position, PAGE,
                                     include_gaps=False)
        for row in gap_rows:
            yield pb.StreamOrderbookResponse(delta=gap_marker(row, to_us(row[2])))
            gaps_after = max(gaps_after, row[0].replace(tzinfo=dt.UTC))
        for item in page.items:
            yield pb.StreamOrderbookResponse(delta=item)
            last_change = item.ts.ToDatetime(tzinfo=dt.UTC)
        if page.items:
            last_sent = asyncio.get_running_loop().time()
        if page.last_key is not None:
            position = page.last_key
            if last_change is not None and now_utc() - last_change > MAX_BEHIND:
                yield pb.StreamOrderbookResponse(end=pb.StreamEnd(
                    code="RESOURCE_EXHAUSTED",
                    message="the consumer fell more than 10 minutes behind live; reconnect "
                            "with start_time to resume"))
                return
            continue  # more history waiting: no sleep
        if page.items:
            position = _key_of_last(page, position)
        if asyncio.get_running_loop().time() - last_sent >= HEARTBEAT_SECS:
            heartbeat = pb.Heartbeat(server_time=timestamp(now_utc()))
            if last_change is not None:
                heartbeat.last_change_time.CopyFrom(timestamp(last_change))
            yield pb.StreamOrderbookResponse(heartbeat=heartbeat)
            last_sent = asyncio.get_running_loop().time()
        await asyncio.sleep(POLL_SECS)


def _key_of_last(page, position):  # type: ignore[no-untyped-def]
    """The keyset position of the last item of a final (short) page."""
    item = page.items[-1]
    ts_us = to_us(item.ts.ToDatetime(tzinfo=dt.UTC))
    if item.kind == pb.DELTA_KIND_GAP:
        return [ts_us, -1, -1, "", -1]
    side = "yes" if item.side == pb.SIDE_YES else "no"
    price = int(item.price.replace(".", ""))
    return [ts_us, int(item.sid), int(item.seq), side, price]
