"""ingestd's process: config, migrations, discovery, the feed, the writer, health/metrics.

Shutdown (SIGTERM/SIGINT): stop intake (close the socket) -> flush every buffered row
(or spill it) -> close. The HTTP side (`/healthz`, `/metrics`, `/live`) is ingestd/http.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from ingestd.audit import AuditSampler
from ingestd.config import IngestSettings, load_ingest_settings
from ingestd.http import start_http
from ingestd.kalshi.auth import KalshiSigner
from ingestd.kalshi.feed import KalshiFeed
from ingestd.kalshi.markets import MarketsChange
from ingestd.kalshi.rest import KalshiRest, RestError
from ingestd.kalshi.subscriptions import MARKET_WIDE
from ingestd.lag import LagMonitor
from ingestd.live import LiveFanout
from ingestd.metadata import (
    MarketRow,
    MarketRows,
    record_reference_data,
    series_of,
    stored_market_rows,
)
from ingestd.sink import RowSink
from ingestd.spill import SpillFile
from ingestd.writer import IlpWriter
from ktape.clock import datetime_us, now_us
from ktape.config import MarketFilter, Settings
from ktape.entrypoint import run_service
from ktape.log import get_logger
from ktape.schema import apply_migrations
from ktape.sharding import ShardFilter, connection_of, instance_addr

log = get_logger(__name__)

# Markets with a change in the last day: the ones a restart can have interrupted (older
# ones were settled or idle; bounding the scan also keeps LATEST ON cheap).
LAST_RECORDED = """
SELECT ticker, ts FROM book_changes WHERE ts > dateadd('d', -1, now())
LATEST ON ts PARTITION BY ticker
"""


CATCH_UP_BATCH = 100  # tickers per REST GET /markets?tickers=
MARKET_CLOCK_SECS = 1.0  # how often opens and closes (which have no event) are checked


def last_recorded(conninfo: str, market_rows: MarketRows,
                  markets: MarketFilter) -> dict[str, int]:
    """Last book time recorded per market before this process started; the markets'
    stored rows go to `market_rows`, whose status the lifecycle then keeps moving. Only
    this ingest shard's markets (`markets.in_shard`): the others' are their shards'."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(LAST_RECORDED).fetchall()
        stored, last_us = stored_market_rows(conn)
        market_rows.load([r for r in stored if markets.in_shard(r.ticker)], last_us)
    # QuestDB returns naive datetimes that are UTC.
    return {str(t): datetime_us(ts)
            for t, ts in rows if ts is not None and markets.in_shard(str(t))}


def spill_path(settings: Settings) -> Path:
    """Each shard's own spill file; shard 0's is the one-process path, so rows spilled
    before a move to several shards are still replayed (by shard 0: any ILP row may be)."""
    if settings.ingest_shard == 0:
        return settings.spill_dir / "ilp.spill"
    return settings.spill_dir / f"shard-{settings.ingest_shard}" / "ilp.spill"


class Ingestd:
    """The recording process: one KalshiFeed per WebSocket connection, markets sharded
    across them by ticker (`connection_of`); with several ingest shards (processes,
    KTAPE_INGEST_SHARDS) this one records only its own markets (ktape/sharding.py) and
    shard 0 alone writes the series and events. Connection 0 alone follows the market-wide
    channels (lifecycle, trades, tickers); this object hands each lifecycle event's
    effects to the connection that records the market, and their market-set changes back
    to connection 0's market-wide subscriptions."""

    def __init__(self, settings: Settings, ingest: IngestSettings) -> None:
        self.settings = settings
        self.ingest = ingest
        self.shard, self.shards = settings.ingest_shard, settings.ingest_shards
        self.markets = ShardFilter.of(settings.markets, self.shard, self.shards)
        signer = (KalshiSigner.from_pem_file(settings.kalshi_key_id,
                                             settings.kalshi_private_key_path)
                  if settings.kalshi_key_id and settings.kalshi_private_key_path else None)
        self.rest = KalshiRest(settings.kalshi_rest_url, signer)
        self.writer = IlpWriter(str(settings.questdb_http),
                                SpillFile(spill_path(settings), ingest.spill_max_bytes),
                                flush_rows=ingest.flush_rows,
                                flush_interval_ms=ingest.flush_interval_ms)
        self.live = LiveFanout()
        self.sink = RowSink(self.writer, self.live)
        self.market_rows = MarketRows(self.sink)
        self.feeds = [KalshiFeed(
            settings.kalshi_ws_url, self.sink, self.markets, signer=signer,
            checkpoint_every_changes=ingest.checkpoint_every_changes,
            checkpoint_interval_secs=ingest.checkpoint_interval_secs,
            market_rows=self.market_rows, liveness_secs=ingest.liveness_secs,
            lag=LagMonitor(int(ingest.lag_window_secs * 1e6), ingest.lag_windows,
                           int(ingest.lag_growth_secs * 1e6)),
            name=str(i), market_wide=MARKET_WIDE if i == 0 else (),
            listed=self._all_wanted, on_lifecycle=self._lifecycle,
            wanted_anywhere=self._wanted_anywhere)
            for i in range(ingest.connections)]
        self.feed = self.feeds[0]  # the market-wide connection
        self.audit = (AuditSampler(self.rest, self.sink, self._recorded,
                                   per_minute=ingest.audit_markets_per_minute,
                                   allowance_ms=ingest.audit_staleness_allowance_ms)
                      if ingest.audit_markets_per_minute else None)
        self.started_us = now_us()

    def owner(self, ticker: str) -> KalshiFeed:
        return self.feeds[connection_of(ticker, self.shards, len(self.feeds))]

    def _all_wanted(self) -> set[str]:
        return set().union(*(feed.wanted for feed in self.feeds))

    def _recorded(self) -> list[str]:
        """Markets whose book is held now (not awaiting a snapshot): what the audit samples."""
        return [t for feed in self.feeds for t, book in feed.books.items()
                if not book.awaiting_snapshot]

    def _wanted_anywhere(self, ticker: str) -> bool:
        return ticker in self.owner(ticker).wanted

    def _lifecycle(self, ticker: str, event_type: str, msg: dict[str, Any], ts_us: int) -> None:
        change: MarketsChange | None = self.owner(ticker).markets.apply_lifecycle(
            ticker, event_type, msg, ts_us)
        if change is not None:
            self.feed.follow_markets(change)

    def add_markets(self, markets: list[dict[str, Any]]) -> list[str]:
        """Discovered markets, each to the connection that records it."""
        by_shard: dict[int, list[dict[str, Any]]] = {}
        for market in markets:
            ticker = market.get("ticker")
            if isinstance(ticker, str):
                by_shard.setdefault(connection_of(ticker, self.shards, len(self.feeds)),
                                    []).append(market)
        return [t for shard, group in sorted(by_shard.items())
                for t in self.feeds[shard].markets.add(group)]

    def health(self) -> tuple[bool, dict[str, Any]]:
        lag = None
        last = [f.connection.last_message_us for f in self.feeds
                if f.connection.last_message_us is not None]
        if last:
            lag = round((now_us() - min(last)) / 1e6, 3)
        connected = all(f.connection.connected for f in self.feeds)
        body = {
            "shard": self.shard,
            "shards": self.shards,
            "feed_connected": connected,
            "connections": len(self.feeds),
            "connections_up": sum(1 for f in self.feeds if f.connection.connected),
            "writer": "committing" if self.writer.healthy else "spilling",
            "writer_error": self.writer.last_error,
            "spill_bytes": self.writer.spill.size,
            "markets_recorded": sum(f.recorder.recorded for f in self.feeds),
            "markets_wanted": sum(len(f.wanted) for f in self.feeds),
            # asked for but not held by the venue yet (retried): not recorded
            "markets_left_out": sum(len(f.subscriptions.left_out) for f in self.feeds),
            "secs_since_last_message": lag,
            # exchange→receive lag per connection (window floor), and whether it grows
            "exchange_lag_secs": [None if (f := feed.lag.floor_us()) is None else f / 1e6
                                  for feed in self.feeds],
            "exchange_lag_growing": any(feed.lag.growing() for feed in self.feeds),
            "rows_committed": self.writer.committed_rows,
        }
        return connected, body

    async def discover(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                # Markets followed before a restart, as REST has them now (read before
                # the open ones are recorded, which would make them all "followed").
                behind = set(self.market_rows.unfinished())
                markets = await self.rest.markets(status="open")
                behind -= {str(m.get("ticker")) for m in markets}
                added = self.add_markets(markets)
                log.info("markets.discovered", markets=len(markets), recording=len(added),
                         connections=len(self.feeds), shard=self.shard, shards=self.shards)
                await self.catch_up(sorted(behind))
                if self.shard == 0:
                    # Series and events belong to no one market: one shard writes them
                    # (each shard writing them at its own clock would store M versions).
                    await record_reference_data(self.rest, self.sink, now_us())
                return
            except RestError as exc:
                attempt += 1
                log.warning("markets.discovery_failed", error=str(exc), attempt=attempt)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(30, 2**attempt))

    async def catch_up(self, tickers: list[str]) -> None:
        """Lifecycle events sent while this process was down are lost: the markets it
        followed before, no longer open, take their REST status where it is further
        along (a market closed, determined or settled meanwhile)."""
        moved = 0
        for i in range(0, len(tickers), CATCH_UP_BATCH):
            for market in await self.rest.markets(
                    tickers=",".join(tickers[i:i + CATCH_UP_BATCH])):
                if isinstance(market.get("ticker"), str):
                    moved += self.market_rows.catch_up(
                        MarketRow.from_market(market, series_of(market)), now_us())
        if tickers:
            log.info("markets.caught_up", followed=len(tickers), moved=moved)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            recorded = await asyncio.to_thread(last_recorded, self.settings.questdb_pg_conninfo,
                                               self.market_rows, self.markets)
            for feed in self.feeds:
                feed.recorder.note_restart({t: us for t, us in recorded.items()
                                            if self.owner(t) is feed})
        except psycopg.Error as exc:
            log.warning("restart.lookup_failed", error=str(exc))
        await self.discover(stop)
        writer_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.writer.run(writer_stop), name="ilp-writer")
            clock = tasks.create_task(self._market_clock(stop), name="market-clock")
            feeds = [tasks.create_task(feed.run(stop), name=f"feed-{feed.name}")
                     for feed in self.feeds]
            audit = (tasks.create_task(self.audit.run(stop), name="audit")
                     if self.audit is not None else None)
            await asyncio.gather(*feeds)
            await clock
            if audit is not None:
                await audit
            writer_stop.set()
        await self.writer.close()
        await self.rest.close()
        log.info("ingestd.stopped", rows_committed=self.writer.committed_rows,
                 spill_bytes=self.writer.spill.size)


    async def _market_clock(self, stop: asyncio.Event) -> None:
        """Markets open and close at their times with no lifecycle event (PROTOCOL.md §7):
        move their status when the time comes."""
        while not stop.is_set():
            self.market_rows.tick(now_us())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MARKET_CLOCK_SECS)


async def _main(settings: Settings) -> int:
    ingest = load_ingest_settings()
    with psycopg.connect(settings.questdb_pg_conninfo, autocommit=True, connect_timeout=10) as c:
        apply_migrations(c)
    recorder = Ingestd(settings, ingest)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    addr = instance_addr(settings.ingestd_metrics_addr, settings.ingest_shard)
    http = await start_http(recorder, addr.host, addr.port)
    log.info("ingestd.started", metrics=str(addr), ws_url=settings.kalshi_ws_url,
             shard=settings.ingest_shard, shards=settings.ingest_shards)
    try:
        await recorder.run(stop)
    finally:
        await http.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("ingestd", _main, validate=load_ingest_settings)
