"""queryd's side of the live fan-out: one follower of ingestd's `/live`, many streams.

One connection per queryd (not per stream) receives every book change and gap row the
moment ingestd writes it; each row is turned into a stream message once and handed to
the subscriptions of its ticker (bounded queues: a subscriber that falls behind is
marked overflowed and its stream ends with RESOURCE_EXHAUSTED, nobody else waits).

Joining history and live without a seam (see queryd/stream.py): a subscription records,
at the moment it starts, the newest row of each table ingestd had published (the
"witnesses"). Rows reach QuestDB in publication order and a table's WAL transactions
are applied in order, so once a witness is visible in QuestDB every row published
before the subscription is too: history is then complete up to the subscription and
the queue holds everything after it.

If the connection drops, rows are skipped (`n` jumps) or ingestd restarts (new epoch),
every subscription is reset and its stream re-joins through QuestDB.

With several ingest shards (KTAPE_INGEST_SHARDS) queryd follows each one's fan-out
(`LiveShards`, one LiveTail per shard) and a subscription goes to the shard that records
its ticker (ktape/sharding.py): every row of that ticker is published by that one
process and written by its one ILP sender, so that shard's witnesses alone prove the
ticker's history complete (another shard's rows say nothing about this ticker, and its
flush lag must not hold this stream back). A shard that restarts or drops resets only
its own streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from psycopg import AsyncConnection

from ktape.log import get_logger
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.sharding import shard_of
from queryd.history import change_entry, gap_marker
from queryd.timeutil import from_us

log = get_logger(__name__)

WITNESS_SQL = {
    "book_changes": "SELECT 1 FROM book_changes WHERE ticker = %(ticker)s AND ts = %(ts)s "
                    "AND sid = %(sid)s AND seq = %(seq)s AND side = %(side)s "
                    "AND price_e4 = %(price_e4)s LIMIT 1",
    "gaps": "SELECT 1 FROM gaps WHERE ticker = %(ticker)s AND ts = %(ts)s LIMIT 1",
    "gaps_healed": "SELECT 1 FROM gaps WHERE ticker = %(ticker)s AND ts = %(ts)s "
                   "AND end_ts = %(end_ts)s LIMIT 1",
}


async def witnesses_visible(conn: AsyncConnection, witnesses: dict[str, dict[str, Any]]) -> bool:
    """Whether QuestDB shows the newest row of each table published before a
    subscription (hence, by in-order WAL apply, every row published before it)."""
    for table, record in witnesses.items():
        if table not in WITNESS_SQL:
            continue
        query = WITNESS_SQL[table]
        params = {"ticker": record.get("ticker", ""), "ts": from_us(int(record["ts"]))}
        if table == "book_changes":
            params.update(sid=record["sid"], seq=record["seq"], side=record["side"],
                          price_e4=record["price_e4"])
        elif record.get("end_ts") is not None:  # a heal: the row must show its end too
            query = WITNESS_SQL["gaps_healed"]
            params["end_ts"] = from_us(int(record["end_ts"]))
        if await (await conn.execute(query, params)).fetchone() is None:
            return False
    return True


QUEUE_ROWS = 20_000  # per subscription: ~minutes of one busy market
Key = tuple[Any, ...]


@dataclass
class LiveItem:
    """One live row: its keyset key (as ListOrderbookDeltas orders), a dedup key, the
    message to send, and the exchange/receive times for lag accounting."""

    key: Key
    dedup: Key
    message: pb.StreamOrderbookResponse
    # A change's `book_changes` row as history reads it (sql.CHANGES_PAGE's columns), for
    # streams that send columns; None for a gap marker.
    row: tuple[Any, ...] | None = None


@dataclass(eq=False)  # identity: subscriptions live in sets
class Subscription:
    ticker: str
    witnesses: dict[str, dict[str, Any]]
    n: int  # the fan-out position when it started: rows up to n come from history
    epoch: str
    # Rows, and None as the sentinel of a reset (one slot is kept free for it).
    queue: asyncio.Queue[LiveItem | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_ROWS + 1))
    reset: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False


def live_item(record: dict[str, Any]) -> tuple[str, LiveItem] | None:
    """A fan-out record as (ticker, item); None for tables streams do not carry."""
    table, ticker = record.get("tb"), record.get("ticker", "")
    if table == "book_changes":
        recv, source = record.get("recv_ts"), record.get("source_ts")
        delta = record.get("delta_e2")
        row = (int(record["ts"]), int(record["sid"]), int(record["seq"]), str(record["side"]),
               int(record["price_e4"]), int(record["qty_after_e2"]),
               int(delta) if delta is not None else None, str(record["kind"]),
               int(recv) if recv is not None else None,
               int(source) if source is not None else None)
        key = row[:5]
        return ticker, LiveItem(key, key, pb.StreamOrderbookResponse(delta=change_entry(*row)),
                                row)
    if table == "gaps":
        detected = int(record["ts"])
        start = record.get("start_ts")
        end = record.get("end_ts")
        row = (from_us(detected), record.get("reason", "gap"),
               from_us(int(start)) if start is not None else from_us(detected),
               from_us(int(end)) if end is not None else None,
               record.get("expected_seq"), record.get("got_seq"), record.get("sid"))
        marker_us = int(start) if start is not None else detected
        return ticker, LiveItem((marker_us, -1, -1, "", -1), gap_dedup(detected, end),
                                pb.StreamOrderbookResponse(delta=gap_marker(row, marker_us)))
    return None


def gap_dedup(detected_us: int, end_us: int | None) -> Key:
    return ("gap", detected_us, int(end_us or 0))


class LiveTail:
    def __init__(self, url: str, *, reconnect_max_secs: float = 5.0) -> None:
        self.url = url
        self.reconnect_max_secs = reconnect_max_secs
        self.connected = asyncio.Event()
        self.epoch: str | None = None
        self.last_n = 0
        self.last_by_table: dict[str, dict[str, Any]] = {}
        self._subs: dict[str, set[Subscription]] = {}
        self.resets = 0
        # Visibility: every row up to `visible_n` (of `visible_epoch`) is in QuestDB.
        # One tracker answers for every waiting stream (queryd.stream), so 1,000 joining
        # streams cost one witness query per interval, not 1,000.
        self.visible_n = 0
        self.visible_epoch: str | None = None
        self._visible = asyncio.Condition()
        self._waiting = 0
        self.pool: Any = None  # QuestDB pool for the visibility tracker (set by build_server)

    # -- subscriptions ---------------------------------------------------------------

    def subscribe(self, ticker: str) -> Subscription | None:
        """A subscription from now on, or None while not following ingestd."""
        if not self.connected.is_set():
            return None
        sub = Subscription(ticker, {t: dict(r) for t, r in self.last_by_table.items()},
                           self.last_n, self.epoch or "")
        self._subs.setdefault(ticker, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.ticker)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.ticker]

    @property
    def subscriptions(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def _reset_all(self, why: str) -> None:
        if self._subs:
            log.warning("live.reset", why=why, subscriptions=self.subscriptions)
        self.resets += 1
        for subs in self._subs.values():
            for sub in subs:
                sub.reset.set()
                with contextlib.suppress(asyncio.QueueFull):
                    sub.queue.put_nowait(None)  # wakes a stream waiting on its queue
        self._subs.clear()

    async def wait_visible(self, sub: Subscription, wait_secs: float) -> bool:
        """Whether QuestDB shows every row published before `sub` (waits up to
        `wait_secs` for the tracker to say so)."""
        def ready() -> bool:
            return self.visible_epoch == sub.epoch and self.visible_n >= sub.n

        if ready():
            return True
        self._waiting += 1
        try:
            async with self._visible:
                async with asyncio.timeout(wait_secs):
                    await self._visible.wait_for(ready)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiting -= 1

    async def track_visibility(self, pool: Any, interval_secs: float = 0.05) -> None:
        """While streams wait to join, advance `visible_n`: take the newest published rows
        as witnesses, check them against QuestDB until they show (the newest row *now*
        is never flushed yet under steady ingest, so the witnesses stay fixed until
        seen), then move on to the rows published meanwhile."""
        pending: tuple[str | None, int, dict[str, dict[str, Any]]] | None = None
        while True:
            await asyncio.sleep(interval_secs)
            if not self._waiting or not self.connected.is_set():
                continue
            if pending is None or pending[0] != self.epoch:
                pending = (self.epoch, self.last_n,
                           {t: dict(r) for t, r in self.last_by_table.items()})
            epoch, n, witnesses = pending
            try:
                async with pool.connection() as conn:
                    visible = await witnesses_visible(conn, witnesses)
            except Exception as exc:  # the store may be down; streams keep polling history
                log.warning("live.visibility_check_failed", error=str(exc))
                continue
            if visible:
                pending = None
                if epoch == self.epoch:
                    async with self._visible:
                        self.visible_epoch, self.visible_n = epoch, n
                        self._visible.notify_all()

    # -- following ingestd -----------------------------------------------------------

    def _dispatch(self, record: dict[str, Any]) -> None:
        n = record.get("n")
        if "hb" in record:
            if record["hb"] != self.last_n:
                raise ConnectionError(f"rows lost: at {self.last_n}, ingestd at {record['hb']}")
            return
        if n != self.last_n + 1:
            raise ConnectionError(f"rows lost: expected {self.last_n + 1}, got {n}")
        self.last_n = n
        table = record.get("tb")
        if table is not None:
            self.last_by_table[table] = record
        subs = self._subs.get(record.get("ticker", ""))
        if not subs:
            return
        made = live_item(record)
        if made is None:
            return
        _ticker, item = made
        for sub in subs:
            if sub.overflowed:
                continue
            if sub.queue.qsize() >= QUEUE_ROWS:
                sub.overflowed = True  # its stream ends with RESOURCE_EXHAUSTED
                sub.reset.set()
                sub.queue.put_nowait(None)  # the slot kept free for the sentinel
            else:
                sub.queue.put_nowait(item)

    async def _follow_once(self, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", self.url) as resp:
            resp.raise_for_status()
            lines = resp.aiter_lines()
            hello = orjson.loads(await anext(lines))
            if self.epoch is not None and hello["epoch"] != self.epoch:
                log.info("live.ingestd_restarted", epoch=hello["epoch"])
            self.epoch, self.last_n = hello["epoch"], int(hello["n"])
            self.last_by_table = dict(hello.get("last") or {})
            self.connected.set()
            log.info("live.following", url=self.url, epoch=self.epoch, n=self.last_n)
            async for line in lines:
                if line:
                    self._dispatch(orjson.loads(line))

    async def run(self) -> None:
        """Follow ingestd for ever, reconnecting with capped backoff (and track QuestDB
        visibility alongside, once a pool is attached)."""
        tracker = (asyncio.create_task(self.track_visibility(self.pool), name="live-visibility")
                   if self.pool is not None else None)
        try:
            await self._follow_forever()
        finally:
            if tracker is not None:
                tracker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tracker

    async def _follow_forever(self) -> None:
        backoff = 0.2
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=10.0)) as client:
            while True:
                try:
                    await self._follow_once(client)
                    why = "ingestd closed the feed"
                except (httpx.HTTPError, ConnectionError, orjson.JSONDecodeError,
                        StopAsyncIteration, KeyError) as exc:
                    why = f"{type(exc).__name__}: {exc}"
                if self.connected.is_set():
                    backoff = 0.2
                    log.warning("live.disconnected", why=why)
                self.connected.clear()
                self._reset_all(why)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.reconnect_max_secs)



class LiveShards:
    """Every ingest shard's fan-out, one LiveTail each; a ticker's streams follow the
    shard that records it."""

    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("LiveShards needs the /live URL of at least one ingest shard")
        self.tails = [LiveTail(url) for url in urls]

    def tail(self, ticker: str) -> LiveTail:
        return self.tails[shard_of(ticker, len(self.tails))]

    @property
    def pool(self) -> Any:
        return self.tails[0].pool

    @pool.setter
    def pool(self, pool: Any) -> None:
        for tail in self.tails:
            tail.pool = pool  # each tail's visibility tracker reads QuestDB through it

    async def run(self) -> None:
        """Follow every shard for ever (each reconnects on its own)."""
        async with asyncio.TaskGroup() as tasks:
            for i, tail in enumerate(self.tails):
                tasks.create_task(tail.run(), name=f"live-tail-{i}")
