"""ingestd's process: config, migrations, discovery, the feed, the writer, health/metrics.

Shutdown (SIGTERM/SIGINT): stop intake (close the socket) -> flush every buffered row
(or spill it) -> close. The HTTP side (`/healthz`, `/metrics`, `/live`) is ingestd/http.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
from collections.abc import Sequence
from typing import Any

import psycopg

from ingestd.config import IngestSettings, load_ingest_settings
from ingestd.feed import Feed, now_us
from ingestd.http import start_http
from ingestd.kalshi.auth import KalshiSigner
from ingestd.kalshi.rest import KalshiRest, RestError
from ingestd.lag import LagMonitor
from ingestd.live import LiveFanout
from ingestd.metadata import (
    MarketRow,
    MarketRows,
    record_reference_data,
    series_of,
    stored_market_rows,
)
from ingestd.spill import SpillFile
from ingestd.writer import IlpWriter
from ktape.config import Settings
from ktape.entrypoint import run_service
from ktape.log import get_logger
from ktape.schema import apply_migrations

log = get_logger(__name__)

# Markets with a change in the last day: the ones a restart can have interrupted (older
# ones were settled or idle; bounding the scan also keeps LATEST ON cheap).
LAST_RECORDED = """
SELECT ticker, ts FROM book_changes WHERE ts > dateadd('d', -1, now())
LATEST ON ts PARTITION BY ticker
"""


CATCH_UP_BATCH = 100  # tickers per REST GET /markets?tickers=
MARKET_CLOCK_SECS = 1.0  # how often opens and closes (which have no event) are checked


def last_recorded(conninfo: str, market_rows: MarketRows) -> dict[str, int]:
    """Last book time recorded per market before this process started; the markets'
    stored rows go to `market_rows`, whose status the lifecycle then keeps moving."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(LAST_RECORDED).fetchall()
        market_rows.load(*stored_market_rows(conn))
    # QuestDB returns naive datetimes that are UTC.
    return {str(t): int(ts.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)
            for t, ts in rows if ts is not None}


class Recorder:
    def __init__(self, settings: Settings, ingest: IngestSettings) -> None:
        self.settings = settings
        self.ingest = ingest
        signer = (KalshiSigner.from_pem_file(settings.kalshi_key_id,
                                             settings.kalshi_private_key_path)
                  if settings.kalshi_key_id and settings.kalshi_private_key_path else None)
        self.rest = KalshiRest(settings.kalshi_rest_url, signer)
        self.writer = IlpWriter(str(settings.questdb_http),
                                SpillFile(settings.spill_dir / "ilp.spill", ingest.spill_max_bytes),
                                flush_rows=ingest.flush_rows,
                                flush_interval_ms=ingest.flush_interval_ms)
        self.market_rows = MarketRows(self.writer)
        # One Feed per WebSocket connection, markets sharded across them by ticker.
        self.feeds = [Feed(settings.kalshi_ws_url, self.writer, settings.markets, signer=signer,
                           checkpoint_every_changes=ingest.checkpoint_every_changes,
                           checkpoint_interval_secs=ingest.checkpoint_interval_secs,
                           shard=i, shards=ingest.connections, market_rows=self.market_rows,
                           liveness_secs=ingest.liveness_secs,
                           lag=LagMonitor(int(ingest.lag_window_secs * 1e6), ingest.lag_windows,
                                          int(ingest.lag_growth_secs * 1e6)))
                      for i in range(ingest.connections)]
        for feed in self.feeds:
            feed.peers = self.feeds
        self.feed = self.feeds[0]  # the lifecycle connection
        self.live = LiveFanout()
        self.writer.live = self.live
        self.started_us = now_us()

    def health(self) -> tuple[bool, dict[str, Any]]:
        lag = None
        last = [f.last_message_us for f in self.feeds if f.last_message_us is not None]
        if last:
            lag = round((now_us() - min(last)) / 1e6, 3)
        connected = all(f.connected for f in self.feeds)
        body = {
            "feed_connected": connected,
            "connections": len(self.feeds),
            "connections_up": sum(1 for f in self.feeds if f.connected),
            "writer": "committing" if self.writer.healthy else "spilling",
            "writer_error": self.writer.last_error,
            "spill_bytes": self.writer.spill.size,
            "markets_recorded": sum(1 for f in self.feeds for b in f.books.values()
                                    if not b.awaiting_snapshot),
            "markets_wanted": sum(len(f.wanted) for f in self.feeds),
            # asked for but not held by the venue yet (retried): not recorded
            "markets_left_out": sum(len(f.left_out) for f in self.feeds),
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
                added = [t for feed in self.feeds for t in feed.add_markets(markets)]
                log.info("markets.discovered", markets=len(markets), recording=len(added),
                         connections=len(self.feeds))
                await self.catch_up(sorted(behind))
                await record_reference_data(self.rest, self.writer, now_us())
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
                                               self.market_rows)
            for feed in self.feeds:
                feed.note_restart(recorded)
        except psycopg.Error as exc:
            log.warning("restart.lookup_failed", error=str(exc))
        await self.discover(stop)
        writer_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.writer.run(writer_stop), name="ilp-writer")
            clock = tasks.create_task(self._market_clock(stop), name="market-clock")
            feeds = [tasks.create_task(feed.run(stop), name=f"feed-{feed.shard}")
                     for feed in self.feeds]
            await asyncio.gather(*feeds)
            await clock
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
    recorder = Recorder(settings, ingest)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    addr = settings.ingestd_metrics_addr
    http = await start_http(recorder, addr.host, addr.port)
    log.info("ingestd.started", metrics=str(addr), ws_url=settings.kalshi_ws_url)
    try:
        await recorder.run(stop)
    finally:
        await http.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("ingestd", _main, validate=load_ingest_settings)
