"""One Kalshi WebSocket feed: subscribe, keep every book, write every change, heal gaps.

Sequence rules (PROTOCOL.md §5.5, §9): `seq` belongs to the subscription (sid). A jump
means any market of that sid may have lost a change, so every market of the sid gets a
`gaps` row (written before anything else) and a `get_snapshot`; deltas for a market that
awaits its snapshot are not applied. A snapshot replaces the book; one that disagrees with
the book we held records a `snapshot_mismatch` gap. A reconnect records a `reconnect` gap
for every market, bounded by the last exchange time we saw and the new snapshot.

A gap row is written when the gap is detected (end_ts null = still open) and written again
with the same dedup key (ts, ticker, reason) once the healing snapshot arrives, which
upserts the end bound.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
import zlib
from collections.abc import Iterable
from typing import Any

import aiohttp
import orjson

from ingestd import metrics
from ingestd.book import MarketBook, NegativeLevel, ladder_text
from ingestd.book_change_lines import TABLE as BOOK_CHANGES
from ingestd.book_change_lines import BookChangeLines
from ingestd.gaps import Gap, Sequencer, Verdict
from ingestd.kalshi.auth import KalshiSigner
from ingestd.kalshi.normalize import NormalizeError, price_e4, qty_e2
from ingestd.lag import LagMonitor
from ingestd.metadata import MarketRow, MarketRows, series_of
from ingestd.writer import IlpWriter, TimestampMicros
from ktape.aio import Backoff, TokenBucket, cancel_and_wait
from ktape.config import MarketFilter
from ktape.log import get_logger

log = get_logger(__name__)

SUBSCRIBE_BATCH = 500
MAX_BACKOFF_SECS = 30.0
SNAPSHOT_TIMEOUT_SECS = 15.0
CONNECT_TIMEOUT_SECS = 15.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a snapshot of a deep book is one message
COMMANDS_PER_SEC = 20.0  # ours per connection; Kalshi allows 10,000/s (PROTOCOL.md §5.1)
MAX_REMEMBERED_COMMANDS = 10_000
TEXT, BINARY, PING = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.PING


def now_us() -> int:
    return time.time_ns() // 1000


class Feed:
    def __init__(self, ws_url: str, writer: IlpWriter, markets: MarketFilter, *,
                 signer: KalshiSigner | None = None, checkpoint_every_changes: int = 200,
                 checkpoint_interval_secs: float = 60.0, rng: random.Random | None = None,
                 shard: int = 0, shards: int = 1, market_rows: MarketRows | None = None,
                 liveness_secs: float = 30.0, lag: LagMonitor | None = None) -> None:
        self.ws_url = ws_url
        # Markets are sharded across connections by a stable hash of the ticker. Shard 0
        # alone follows market_lifecycle_v2 (a global channel) and hands each event's
        # effects to the owning shard (`peers`, set by the recorder).
        self.shard, self.shards = shard, shards
        self.peers: list[Feed] = [self]
        self.writer = writer
        # Every connection of a recorder shares one: lifecycle arrives on shard 0 only.
        self.market_rows = market_rows or MarketRows(writer)
        self.filter = markets
        self.signer = signer
        self.liveness_us = int(liveness_secs * 1_000_000)
        self.lag = lag or LagMonitor()  # exchange→receive lag of this connection
        self.checkpoint_every = checkpoint_every_changes
        self.checkpoint_interval_us = int(checkpoint_interval_secs * 1_000_000)
        # reconnects, resent commands and left-out retries: 0.5 s doubling, jittered
        self.backoff = Backoff(0.5, MAX_BACKOFF_SECS, rng=rng or random.Random())
        self.books: dict[str, MarketBook] = {}
        self.wanted: set[str] = set()  # tickers we record
        self.series_of: dict[str, str] = {}
        self.close_us: dict[str, int] = {}  # known close time per market (REST, lifecycle)
        self.reactivated_us: dict[str, int] = {}  # `activated` seen, wipe snapshot pending
        self.sequencer = Sequencer()  # the subscriptions held and their seq counters
        self._last_seq = self.sequencer.last  # read and advanced inline on the hot path
        self.book_sid: int | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.connected = False
        self.last_message_us: int | None = None
        self._cmd_id = 0
        # Tickers each book subscribe / add_markets command asked for, by command id: a
        # reply may list fewer (§5.11 "tickers left out"), and those are retried.
        self._asked: dict[int, set[str]] = {}
        # Commands sent and not yet answered: (cmd, params, attempt), to resend on error 27.
        self._sent: dict[int, tuple[str, dict[str, Any] | None, int]] = {}
        self._command_rate = TokenBucket(COMMANDS_PER_SEC, COMMANDS_PER_SEC)
        self.left_out: dict[str, int] = {}  # ticker -> retries so far, until held
        self._background: set[asyncio.Task[Any]] = set()
        self._pending_counts: dict[str, int] = {}  # messages by type, not yet in metrics
        self._pending_total = 0

    # -- market set --------------------------------------------------------------------

    def add_markets(self, markets: Iterable[dict[str, Any]], source: str = "rest") -> list[str]:
        """Record markets (REST market objects); returns the tickers newly wanted."""
        added: list[str] = []
        for market in markets:
            ticker = market.get("ticker")
            if not isinstance(ticker, str):
                continue
            series = series_of(market)
            if not self.filter.matches(ticker, series) or not self.owns(ticker):
                continue
            self.series_of[ticker] = series
            row = MarketRow.from_market(market, series)
            if row.close_us is not None:
                self.close_us[ticker] = row.close_us
            if ticker not in self.wanted:
                self.wanted.add(ticker)
                added.append(ticker)
            self.market_rows.record(row, source, now_us())
        return added

    @property
    def sids(self) -> dict[int, str]:
        """The subscriptions held on this connection: sid -> channel."""
        return self.sequencer.channels

    def owns(self, ticker: str) -> bool:
        return self.shards == 1 or zlib.crc32(ticker.encode()) % self.shards == self.shard

    def owner_of(self, ticker: str) -> Feed:
        return next((peer for peer in self.peers if peer.owns(ticker)), self)

    def note_restart(self, last_recorded_us: dict[str, int]) -> None:
        """Markets recorded before this process started: their downtime is a gap from
        the last recorded change, written now and closed by the market's next snapshot.

        A market that closed while nobody recorded never gets that snapshot, so its gap
        stays open: nothing is known about it after the last recorded change.
        """
        detected = now_us()
        for ticker, last_us in sorted(last_recorded_us.items()):
            if not self.owns(ticker):
                continue
            book = self.books.setdefault(ticker, MarketBook(ticker))
            book.last_book_us = last_us
            self._open_gap(book, "ingest_restart", expected=None, got=None, sid=None,
                           detected_us=detected)

    def _spawn(self, coro: Any) -> None:
        """Run a command send in the background, keeping a reference until it is done
        (the loop holds tasks weakly) and logging a failure instead of losing it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("feed.command_failed", error=repr(task.exception()))

    # -- connection loop -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        first = True
        # No overall timeout: the session's sockets are long-lived WebSockets.
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_SECS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                try:
                    headers = (self.signer.headers("GET", _path(self.ws_url))
                               if self.signer else {})
                    # Kalshi pings every 10 s and we answer; our own ping every 20 s
                    # notices a dead peer (no pong within 10 s).
                    # Pings are answered here, not by aiohttp (autoping off), so that a
                    # server ping counts as a sign of life (`_watchdog`). permessage-deflate
                    # is offered (compress=15): a venue that takes it sends deep snapshots
                    # in a fraction of the bytes (up to MAX_MESSAGE_BYTES inflated).
                    async with session.ws_connect(
                            self.ws_url, headers=headers, max_msg_size=MAX_MESSAGE_BYTES,
                            heartbeat=20.0, compress=15, autoping=False,
                            decode_text=False) as ws:
                        self.ws = ws
                        self.connected = True
                        self.last_message_us = now_us()
                        self.lag.reset()
                        if not first:
                            self._reconnected()
                        first = False
                        attempt = 0
                        await self._subscribe_all()
                        await self._read(ws, stop)
                    if not stop.is_set():
                        log.warning("feed.disconnected", error=f"closed, code {ws.close_code}",
                                    url=self.ws_url)
                except (OSError, aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("feed.disconnected", error=f"{type(exc).__name__}: {exc}",
                                url=self.ws_url)
                finally:
                    self.connected = False
                    self.ws = None
                if stop.is_set():
                    return
                metrics.RECONNECTS.inc()
                self._mark_all_disconnected()
                delay = self.backoff.delay(attempt)
                attempt += 1
                log.info("feed.reconnecting", delay_secs=round(delay, 2), attempt=attempt)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass

    def overdue_snapshots(self, now: int) -> list[str]:
        """Markets whose requested snapshot has not come within SNAPSHOT_TIMEOUT_SECS."""
        limit = int(SNAPSHOT_TIMEOUT_SECS * 1_000_000)
        return sorted(t for t, b in self.books.items()
                      if b.awaiting_snapshot and b.snapshot_requested_us is not None
                      and now - b.snapshot_requested_us > limit)

    async def _watchdog(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Close the connection (the run loop reconnects, recording a `reconnect` gap for
        every market) when it can no longer be trusted:
        - a requested snapshot never came: `get_snapshot` is young on Kalshi (2026-04)
          and its replies are not all documented;
        - nothing arrived, not even a ping, for `liveness_secs` (Kalshi pings every 10 s):
          the connection is dead while the socket looks open;
        - the exchange→receive lag grew window after window (PROTOCOL.md §5.11): a
          backlog that only a new connection clears."""
        tick = min(SNAPSHOT_TIMEOUT_SECS / 3, self.liveness_us / 3e6)
        while True:
            await asyncio.sleep(tick)
            self.flush_counts()  # quiet feeds still show their counts within seconds
            now = now_us()
            floor = self.lag.floor_us()
            if floor is not None:
                metrics.EXCHANGE_LAG.labels(connection=str(self.shard)).set(floor / 1e6)
            overdue = self.overdue_snapshots(now)
            if overdue:
                log.warning("feed.snapshot_timeout", markets=len(overdue), first=overdue[0])
            elif self.last_message_us is not None and \
                    now - self.last_message_us > self.liveness_us:
                log.warning("feed.silent", secs=round((now - self.last_message_us) / 1e6, 1),
                            url=self.ws_url)
            elif self.lag.growing():
                log.warning("feed.lag_growing", url=self.ws_url, connection=self.shard,
                            floors_secs=[round(f / 1e6, 3) for f in self.lag.floors])
            else:
                continue
            await ws.close()
            return

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, stop: asyncio.Event) -> None:
        watchdog = asyncio.create_task(self._watchdog(ws), name="feed-watchdog")
        try:
            await self._read_frames(ws, stop)
        finally:
            await cancel_and_wait([watchdog])

    async def _read_frames(self, ws: aiohttp.ClientWebSocketResponse,
                           stop: asyncio.Event) -> None:
        """Handle frames until the connection closes; `stop` closes it. One plain
        `async for` over the connection: a task and an `asyncio.wait` per frame (racing
        each receive against `stop`) cost more than the frame's whole processing."""
        async def close_on_stop() -> None:
            await stop.wait()
            await ws.close()

        closer = asyncio.create_task(close_on_stop(), name="feed-close-on-stop")
        try:
            async for message in ws:  # ends at a close frame
                if message.type is TEXT or message.type is BINARY:
                    self.handle(message.data, now_us())
                    if self.writer.wants_flush:
                        self.writer.kick()
                        await self.writer.backpressure()
                elif message.type is PING:
                    self.last_message_us = now_us()
                    await ws.pong(message.data)
                elif message.type is aiohttp.WSMsgType.ERROR:
                    log.warning("feed.read_error", error=str(message.data), url=self.ws_url)
                    return
        finally:
            if stop.is_set():
                await closer  # let the close handshake finish (bounded by aiohttp's timeout)
            else:
                await cancel_and_wait([closer])

    async def _command(self, cmd: str, params: dict[str, Any] | None = None,
                       attempt: int = 0) -> int:
        """Send one command at a bounded rate (no resubscribe storms, §5.11); returns its
        id. It is remembered until answered, so an error 27 can send it again."""
        await self._command_rate.take()
        self._cmd_id += 1
        body: dict[str, Any] = {"id": self._cmd_id, "cmd": cmd}
        if params is not None:
            body["params"] = params
        self._sent[self._cmd_id] = (cmd, params, attempt)
        while len(self._sent) > MAX_REMEMBERED_COMMANDS:  # replies that never came
            self._sent.pop(next(iter(self._sent)))
        if self.ws is not None:
            await self.ws.send_str(orjson.dumps(body).decode())
        return self._cmd_id

    async def _resend(self, cmd: str, params: dict[str, Any] | None, attempt: int,
                      asked: set[str] | None) -> None:
        """A command refused with error 27 (too many requests), after a backoff."""
        await asyncio.sleep(self.backoff.delay(attempt))
        cmd_id = await self._command(cmd, params, attempt + 1)
        if asked is not None:
            self._asked[cmd_id] = asked

    async def _subscribe_all(self) -> None:
        self.sequencer.clear()
        self._asked.clear()
        self._sent.clear()
        self.book_sid = None
        if self.shard == 0:
            # Lifecycle and trades are light: the first connection takes them for every
            # market (so a new market's first trade never waits for a subscription).
            await self._subscribe_channel("market_lifecycle_v2")
            await self._subscribe_channel("trade")
            await self._subscribe_channel("ticker")
        await self._subscribe_books()

    async def _subscribe_channel(self, channel: str) -> None:
        """Subscribe one of shard 0's market-wide channels (lifecycle, trades, ticker)."""
        params: dict[str, Any] = {"channels": [channel]}
        if channel in ("trade", "ticker") and not self.filter.all:
            params["market_tickers"] = sorted(self._all_wanted()) or ["-"]
        await self._command("subscribe", params)

    async def _subscribe_books(self) -> None:
        """Subscribe every wanted market's book; each gets a snapshot."""
        tickers = sorted(self.wanted)
        for i in range(0, max(1, len(tickers)), SUBSCRIBE_BATCH):
            batch = tickers[i:i + SUBSCRIBE_BATCH]
            if not batch:
                break
            # Later batches are merged into the same orderbook sid (an `ok` reply).
            await self._subscribe_book_batch(batch)

    async def _subscribe_book_batch(self, tickers: list[str]) -> None:
        """One book subscribe, remembering what it asked for (tickers left out, §5.11)."""
        cmd_id = await self._command("subscribe", {
            "channels": ["orderbook_delta"], "market_tickers": tickers, "use_yes_price": False})
        self._asked[cmd_id] = set(tickers)

    async def request_snapshots(self, tickers: list[str]) -> None:
        if self.book_sid is None or not tickers:
            return
        asked = now_us()
        for ticker in tickers:
            if ticker in self.books:
                self.books[ticker].snapshot_requested_us = asked
        for i in range(0, len(tickers), SUBSCRIBE_BATCH):
            await self._command("update_subscription", {
                "sids": [self.book_sid], "action": "get_snapshot",
                "market_tickers": tickers[i:i + SUBSCRIBE_BATCH]})

    def _all_wanted(self) -> set[str]:
        return set().union(*(peer.wanted for peer in self.peers))

    async def _update_markets(self, action: str, tickers: list[str]) -> None:
        """add_markets / delete_markets on this connection's book sid and, when trades
        and tickers are subscribed market by market (KTAPE_MARKETS), on the trade and
        ticker sids of the connection that follows them."""
        if not tickers:
            return
        targets = [(self, self.book_sid)]
        if not self.filter.all:
            lead = self.peers[0]
            targets += [(lead, sid) for sid, channel in lead.sids.items()
                        if channel in ("trade", "ticker")]
        for feed, sid in targets:
            if sid is not None:
                cmd_id = await feed._command("update_subscription", {
                    "sids": [sid], "action": action, "market_tickers": tickers})
                if feed is self and action == "add_markets":
                    self._asked[cmd_id] = set(tickers)

    async def add_to_subscription(self, tickers: list[str]) -> None:
        await self._update_markets("add_markets", tickers)

    # -- message handling ----------------------------------------------------------------

    def handle(self, raw: str | bytes, recv_us: int) -> None:
        """Process one frame; never raises for bad input (logged and counted)."""
        self.last_message_us = recv_us
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            metrics.BAD_INPUT.labels(reason="malformed_json").inc()
            log.warning("feed.malformed_json", raw=str(raw)[:300])
            return
        if not isinstance(message, dict):
            metrics.BAD_INPUT.labels(reason="not_an_object").inc()
            log.warning("feed.not_an_object", raw=str(raw)[:300])
            return
        kind = message.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        label = kind if handler else "unknown"
        self._pending_counts[label] = self._pending_counts.get(label, 0) + 1  # type: ignore[index]
        self._pending_total += 1
        if self._pending_total >= COUNT_FLUSH_EVERY:
            self.flush_counts()
        if handler is None:
            metrics.BAD_INPUT.labels(reason="unknown_type").inc()
            log.warning("feed.unknown_type", type=kind, raw=str(raw)[:300])
            return
        sid, seq = message.get("sid"), message.get("seq")
        if type(sid) is int and type(seq) is int and kind != "subscribed":
            # The common case inline (the next seq of a held sid: what Sequencer.check
            # answers APPLY without a call); everything else is decided in gaps.py.
            last = self._last_seq.get(sid)
            if last is not None and seq == last + 1:
                self._last_seq[sid] = seq
            elif not self._check_seq(sid, seq, kind):
                return
        try:
            handler(self, message, recv_us)
        except (NormalizeError, KeyError, TypeError, ValueError) as exc:
            metrics.BAD_INPUT.labels(reason="invalid_field").inc()
            log.warning("feed.invalid_message", type=kind, sid=sid, seq=seq, error=str(exc),
                        raw=str(raw)[:300])

    def flush_counts(self) -> None:
        """Add the messages counted since the last call to ingestd_messages_total (per
        message the registry's labels()+inc() cost a sixth of ingest's CPU)."""
        for label, count in self._pending_counts.items():
            counter = _MESSAGE_COUNTERS.get(label)
            if counter is None:
                counter = _MESSAGE_COUNTERS[label] = metrics.MESSAGES.labels(type=label)
            counter.inc(count)
        self._pending_counts.clear()
        self._pending_total = 0

    def _check_seq(self, sid: int, seq: int, kind: str) -> bool:
        """True to process the frame (ingestd/gaps.py decides); a gap on the book sid
        puts every book of it in a gap and asks for their snapshots."""
        verdict, gap = self.sequencer.check(sid, seq, kind in _DATA_TYPES)
        if verdict is Verdict.APPLY:
            return True
        if verdict is Verdict.UNKNOWN_SID:
            metrics.BAD_INPUT.labels(reason="unknown_sid").inc()
            log.warning("feed.frame_for_unknown_sid", sid=sid, seq=seq, type=kind)
            return False
        if verdict is Verdict.DUPLICATE:
            metrics.BAD_INPUT.labels(reason="duplicate_seq").inc()
            log.warning("feed.duplicate_seq", sid=sid, seq=seq,
                        last_seq=self.sequencer.last_seq(sid), type=kind)
            return False
        assert gap is not None
        log.warning("feed.seq_gap", sid=sid, expected_seq=gap.expected, got_seq=gap.got,
                    channel=gap.channel)
        if sid == self.book_sid:
            recovering = any(b.awaiting_snapshot and b.snapshot_requested_us is not None
                             for b in self.books.values())
            tickers = [t for t, b in self.books.items() if not b.awaiting_snapshot]
            for ticker in tickers:
                self._open_gap(self.books[ticker], "seq_jump", expected=gap.expected,
                               got=gap.got, sid=sid)
            if recovering:
                # A second gap while the first one's snapshots are still coming: more
                # get_snapshot requests are how recorders stormed (§5.11); a new
                # connection re-snapshots every book at once.
                log.warning("feed.gap_during_recovery", sid=sid, expected_seq=gap.expected,
                            got_seq=gap.got)
                if self.ws is not None:
                    self._spawn(self.ws.close())
            else:
                self._spawn(self.request_snapshots(sorted(tickers)))
        else:
            # trade/lifecycle sids: record one sid-wide gap row (ticker "*")
            self._write_gap(Gap("*", f"seq_jump_{gap.channel}", now_us(), None,
                                expected_seq=gap.expected, got_seq=gap.got, sid=sid))
        return True

    # handlers -----------------------------------------------------------------------

    def _on_subscribed(self, message: dict[str, Any], recv_us: int) -> None:
        msg = message["msg"]
        sid, channel = int(msg["sid"]), str(msg["channel"])
        self.sequencer.subscribed(sid, channel)  # a new counter, also for a reused sid
        self._sent.pop(message.get("id"), None)  # type: ignore[arg-type]
        if channel == "orderbook_delta":
            self.book_sid = sid
            self._check_held(message)
        log.info("feed.subscribed", sid=sid, channel=channel)

    def _on_snapshot(self, message: dict[str, Any], recv_us: int) -> None:
        msg = message["msg"]
        ticker = msg["market_ticker"]
        yes = {price_e4(p): qty_e2(q) for p, q in msg.get("yes_dollars_fp") or []}
        no = {price_e4(p): qty_e2(q) for p, q in msg.get("no_dollars_fp") or []}
        # A snapshot carries no exchange time. Kalshi's sending time, else our receive
        # time, is no earlier than the instant the snapshot describes: stamping it there
        # never claims its book too early (changes it missed are moved up to it, below).
        sending = message.get("sending_ts_ms")
        clock_us, source = (sending * 1000, "sending") if type(sending) is int else (
            recv_us, "receive")
        sid, seq = int(message["sid"]), int(message["seq"])
        book = self.books.get(ticker)
        if book is None:
            book = self.books[ticker] = MarketBook(ticker)
        ts_us = book.snapshot_time(clock_us)
        first = book.last_book_us is None
        covered_from: int | None = 0 if first else None
        if not book.awaiting_snapshot and book.open_gap is None and not first:
            closing = not yes and not no and self._closed_by(ticker, ts_us)
            reactivated = self.reactivated_us.pop(ticker, None)
            start: int | None = None
            if reactivated is not None and not yes and not no and (book.yes or book.no):
                # Reactivation cancels every resting order (PROTOCOL.md §7); the empty
                # snapshot is expected, but when exactly the book emptied between the
                # `activated` event and this snapshot is unknown: a short gap, not a
                # claim of continuity.
                start = max(book.last_book_us or 0, reactivated)
                self._write_gap(Gap(ticker, "market_reactivated", recv_us, start, ts_us,
                                    got_seq=seq, sid=sid))
            elif closing:
                # The empty book Kalshi sends at close (resting orders cancelled) is an
                # expected change, not a lost delta; but when between the close time and
                # this snapshot the book emptied is unknown, so that span is recorded as
                # a short `market_close` gap rather than claimed continuous.
                start = max(book.last_book_us or 0, self.close_us[ticker])
                self._write_gap(Gap(ticker, "market_close", recv_us, start, ts_us, got_seq=seq,
                                    sid=sid))
            elif (yes, no) != (book.yes, book.no):
                start = book.last_book_us
                self._write_gap(Gap(ticker, "snapshot_mismatch", recv_us, start, ts_us,
                                    got_seq=seq, sid=sid))
            covered_from = start
        if book.open_gap is not None:
            # heal: same dedup key as the detection row, now with its end bound
            self._write_gap(book.open_gap.healed(ts_us, sid))
            covered_from = book.open_gap.start_us if book.open_gap.start_us is not None else 0
            book.open_gap = None
        book.replace(yes, no)
        book.awaiting_snapshot = False
        book.snapshot_requested_us = None
        book.last_seq, book.last_sid = seq, sid
        book.last_book_us = book.snapshot_us = ts_us
        book.covered_from_us = covered_from
        book.continuous_since_us = ts_us
        moved = clock_us if ts_us != clock_us else None
        for side, ladder in (("yes", yes), ("no", no)):
            if ladder:
                lines = book.change_lines(side, "snapshot", source)
                for price, qty in ladder.items():
                    self._write_change(lines, price, qty, qty, seq, sid, recv_us, ts_us, None,
                                       moved)
        if not yes and not no:
            # An empty book still replaces the book: one row at price 0 (no Kalshi price)
            # and size 0 says so to everyone who reads changes rather than checkpoints
            # (deltas pages, streams, candles' book closes).
            self._write_change(book.change_lines("yes", "snapshot", source), 0, 0, 0, seq, sid,
                               recv_us, ts_us, None, moved)
        self._checkpoint(book, ts_us, recv_us, "snapshot", source)
        metrics.MARKETS.set(sum(1 for b in self.books.values() if not b.awaiting_snapshot))

    def _on_delta(self, message: dict[str, Any], recv_us: int) -> None:
        msg = message["msg"]
        ticker = msg["market_ticker"]
        book = self.books.get(ticker)
        if book is None:
            metrics.BAD_INPUT.labels(reason="unknown_market").inc()
            log.warning("feed.delta_unknown_market", ticker=ticker, seq=message.get("seq"))
            return
        if book.awaiting_snapshot:
            metrics.BAD_INPUT.labels(reason="delta_before_snapshot").inc()
            return  # inside a recorded gap; the snapshot will replace the book
        side = msg["side"]
        if side not in ("yes", "no"):
            raise ValueError(f"side {side!r}")
        price, delta = price_e4(msg["price_dollars"]), qty_e2(msg["delta_fp"])
        ts_ms = msg.get("ts_ms")
        if type(ts_ms) is int:  # not a bool
            ts_us, source = ts_ms * 1000, "exchange"
            lag = self.lag  # inline: the call only when the window ends or the floor drops
            if recv_us >= lag.window_end or recv_us - ts_us < lag.floor:
                lag.observe(recv_us - ts_us, recv_us)
        elif isinstance(msg.get("ts"), str):
            ts_us = int(dt.datetime.fromisoformat(msg["ts"].replace("Z", "+00:00"))
                        .timestamp() * 1_000_000)
            source = "exchange"
        else:
            ts_us, source = recv_us, "receive"
        sid, seq = message.get("sid"), message.get("seq")
        if type(sid) is not int or type(seq) is not int:  # bool is an int, and not a seq
            raise ValueError(f"sid {sid!r} / seq {seq!r}")
        try:
            after = book.apply_delta(side, price, delta)
        except NegativeLevel as exc:
            metrics.BAD_INPUT.labels(reason="negative_level").inc()
            log.warning("book.negative_level", ticker=ticker, sid=sid, seq=seq, error=str(exc))
            self._open_gap(book, "negative_level", expected=None, got=seq, sid=sid)
            self._spawn(self.request_snapshots([ticker]))
            return
        last = book.last_book_us
        if last is None or ts_us >= last:
            at_us, moved_from = ts_us, None
        else:  # stamped before a row already written: keep seq order, record the span
            at_us, moved_from = self._moved_up(book, ts_us, seq, sid), ts_us
        self._write_change(book.change_lines(side, "delta", source), price, after, delta, seq,
                           sid, recv_us, at_us, ts_us // 1000, moved_from)
        book.last_seq, book.last_sid, book.last_book_us = seq, sid, at_us
        book.changes_since_checkpoint += 1
        if (book.changes_since_checkpoint >= self.checkpoint_every
                or at_us - book.last_checkpoint_us >= self.checkpoint_interval_us):
            self._checkpoint(book, at_us, recv_us, "periodic", source)

    def _moved_up(self, book: MarketBook, clock_us: int, seq: int, sid: int) -> int:
        """A change stamped `clock_us`, earlier than the book time already written: it is
        stored at that book time (seq order is time order), and the instants from its own
        stamp up to there — where the exchange had it and the stored book does not — are
        a `clock_order` gap, unless they already lie in a recorded gap (the usual case: a
        snapshot healing a gap, stamped by sending/receive time, then deltas delivered
        late behind their `ts_ms`). Returns the book time to store."""
        at = book.last_book_us
        assert at is not None
        metrics.MOVED_CHANGES.inc()
        if at == book.snapshot_us and book.covered_from_us is not None \
                and clock_us >= book.covered_from_us:
            return at
        gap = book.clock_gap
        if gap is not None and gap.end_us == at:
            if gap.start_us is not None and gap.start_us <= clock_us:
                return at
            detected = gap.detected_us  # widen the same row (same dedup key)
        else:
            detected = now_us()
            log.warning("book.gap_detected", ticker=book.ticker, reason="clock_order", sid=sid,
                        got_seq=seq, exchange_us=clock_us, book_us=at)
            metrics.GAPS.labels(reason="clock_order").inc()
        book.clock_gap = Gap(book.ticker, "clock_order", detected, clock_us, at, got_seq=seq,
                             sid=sid)
        self._write_gap(book.clock_gap)
        return at

    def _write_change(self, lines: BookChangeLines, price: int, after: int, delta: int,
                      seq: int, sid: int, recv_us: int, at_us: int,
                      exchange_ms: int | None, source_us: int | None = None) -> None:
        """One book_changes row: its ILP line to the writer, its record to the fan-out.
        `source_us`: the row's own clock reading when `at_us` had to be later than it."""
        writer = self.writer
        if source_us is None:
            writer.add_line(BOOK_CHANGES, lines.ilp(price, after, delta, seq, sid, recv_us,
                                                    at_us), exchange_ms)
            if writer.live is not None:
                writer.live.publish_book_change(lines, price, after, delta, seq, sid, recv_us,
                                                at_us)
            return
        writer.add_line(BOOK_CHANGES, lines.ilp_moved(price, after, delta, seq, sid, recv_us,
                                                      at_us, source_us), exchange_ms)
        if writer.live is not None:  # rare: the generic record, which carries source_ts too
            writer.live.publish(BOOK_CHANGES, dict(lines.symbols), {
                "price_e4": price, "qty_after_e2": after, "delta_e2": delta, "seq": seq,
                "sid": sid, "recv_ts": recv_us, "source_ts": source_us}, at_us)

    def _on_trade(self, message: dict[str, Any], recv_us: int) -> None:
        msg = message["msg"]
        ticker = msg["market_ticker"]
        if not self.filter.all and not any(ticker in peer.wanted for peer in self.peers):
            return
        ts_ms = msg.get("ts_ms")
        ts_us = ts_ms * 1000 if isinstance(ts_ms, int) else int(msg["ts"]) * 1_000_000
        yes = price_e4(msg["yes_price_dollars"])
        no = price_e4(msg["no_price_dollars"]) if msg.get("no_price_dollars") else 10_000 - yes
        side = msg.get("taker_outcome_side") or msg.get("taker_side") or ""
        self.writer.row("trades", symbols={"ticker": ticker, "taker_side": side,
                                           "source": "ws"},
                        columns={"trade_id": str(msg["trade_id"]), "yes_price_e4": yes,
                                 "no_price_e4": no, "count_e2": qty_e2(msg["count_fp"]),
                                 "is_block": bool(msg.get("is_block_trade", False)),
                                 "seq": int(message.get("seq", 0)),
                                 "sid": int(message.get("sid", 0)),
                                 "recv_ts": TimestampMicros(recv_us)},
                        at_us=ts_us, exchange_ms=ts_us // 1000)

    def _on_lifecycle(self, message: dict[str, Any], recv_us: int) -> None:
        msg = message["msg"]
        ticker = msg.get("market_ticker") or msg.get("event_ticker")
        event_type = msg.get("event_type") or message["type"]
        sending = message.get("sending_ts_ms")
        ts_us, source = (int(sending) * 1000, "sending") if isinstance(sending, int) else (
            recv_us, "receive")
        event_ticker = msg.get("event_ticker") or (msg.get("additional_metadata") or {}).get(
            "event_ticker") or ""
        self.writer.row("lifecycle", symbols={"ticker": str(ticker), "event_type": str(event_type),
                                              "event_ticker": str(event_ticker),
                                              "ts_source": source},
                        columns={"payload": orjson.dumps(msg).decode(),
                                 "seq": int(message.get("seq", 0)),
                                 "sid": int(message.get("sid", 0)),
                                 "recv_ts": TimestampMicros(recv_us)}, at_us=ts_us)
        if message["type"] != "market_lifecycle_v2" or not isinstance(ticker, str):
            return
        if event_type == "determined":
            value = msg.get("settlement_value")
            det = msg.get("determination_ts")
            self.writer.row("settlements", symbols={
                "ticker": ticker, "event_ticker": "",
                "series_ticker": self.owner_of(ticker).series_of.get(ticker, ""),
                "result": str(msg.get("result", "")),
                "ts_source": "exchange" if isinstance(det, int) else source},
                columns={"settlement_value_e4": price_e4(value) if value else None,
                         "recv_ts": TimestampMicros(recv_us)},
                at_us=det * 1_000_000 if isinstance(det, int) else ts_us)
        # The event's effects belong to the connection that records the market.
        self.owner_of(ticker).apply_lifecycle(ticker, str(event_type), msg, ts_us)
        if event_type != "created" and (self.market_rows.known(ticker) or self.filter.matches(
                ticker, ticker.split("-")[0])):
            self.market_rows.on_lifecycle(ticker, str(event_type), msg, recv_us)

    def apply_lifecycle(self, ticker: str, event_type: str, msg: dict[str, Any],
                        ts_us: int) -> None:
        """What a lifecycle event changes for the market's recorder: close times, a
        pending reactivation wipe, a new market to record, a settled one to drop."""
        if event_type == "activated":
            self.reactivated_us[ticker] = ts_us
        if event_type in ("created", "close_date_updated") and isinstance(
                msg.get("close_ts"), int):
            self.close_us[ticker] = msg["close_ts"] * 1_000_000
        if event_type == "created":
            meta = msg.get("additional_metadata") or {}
            opens = msg.get("open_ts")
            opened = type(opens) is int and opens * 1_000_000 <= now_us()
            market = {"ticker": ticker, "event_ticker": meta.get("event_ticker", ""),
                      "title": meta.get("title", ""), "yes_sub_title": meta.get("yes_sub_title", ""),
                      "no_sub_title": meta.get("no_sub_title", ""),
                      "status": "active" if opened else "initialized",
                      "price_level_structure": msg.get("price_level_structure", ""),
                      "price_ranges": msg.get("price_ranges") or [],
                      "open_ts": opens, "close_ts": msg.get("close_ts")}
            added = self.add_markets([market], source="lifecycle")
            if added:
                self.books.setdefault(ticker, MarketBook(ticker))
                self._spawn(self.add_to_subscription(added))
        elif event_type == "settled" and ticker in self.wanted:
            self.wanted.discard(ticker)
            self.books.pop(ticker, None)
            self._spawn(self._update_markets("delete_markets", [ticker]))

    def _on_reply(self, message: dict[str, Any], recv_us: int) -> None:
        if message.get("type") == "unsubscribed":
            self._on_unsubscribed(message)
            return
        if message.get("type") == "ok":
            self._sent.pop(message.get("id"), None)  # type: ignore[arg-type]
            self._check_held(message)
            return
        if message.get("type") == "error":
            cmd_id = message.get("id")
            asked = self._asked.pop(cmd_id, None)  # type: ignore[arg-type]
            sent = self._sent.pop(cmd_id, None)  # type: ignore[arg-type]
            msg = message.get("msg") or {}
            code = msg.get("code")
            if code == 27 and sent is not None:  # the command rate limit: back off, again
                log.warning("feed.command_rate_limited", cmd=sent[0], attempt=sent[2] + 1)
                self._spawn(self._resend(*sent, asked))
                return
            if code == 26 and asked:
                # The subscription's market cap: the whole command was refused. Its
                # markets are not recorded (never reported as such) and asked for again.
                log.warning("feed.market_limit_exceeded", markets=len(asked))
                self._left_out(sorted(asked), message.get("sid"))
                return
            log.warning("feed.error_reply", code=code, error=msg.get("msg"), sid=message.get("sid"),
                        id=message.get("id"))
            if code in (10, 25) and message.get("sid") == self.book_sid:
                # terminal for the subscription: record a gap and resubscribe everything
                for book in self.books.values():
                    if not book.awaiting_snapshot:
                        self._open_gap(book, f"error_{code}", expected=None, got=None,
                                       sid=self.book_sid)
                if self.ws is not None:
                    self._spawn(self.ws.close())

    def _check_held(self, message: dict[str, Any]) -> None:
        """A reply to one of our book commands lists the subscription's tickers: those
        asked for and not listed were left out (§5.11, markets "not held by the venue"
        at that moment). They get no snapshot and are not recorded — their books stay
        awaiting a snapshot, so never CONTINUOUS — and are asked for again with backoff."""
        asked = self._asked.pop(message.get("id"), None)  # type: ignore[arg-type]
        msg = message.get("msg")
        tickers = msg.get("market_tickers") if isinstance(msg, dict) else None
        if asked is None or not isinstance(tickers, list):
            return
        held = set(tickers)
        for ticker in held & asked:
            self.left_out.pop(ticker, None)
        missing = sorted(asked - held)
        if missing:
            self._left_out(missing, message.get("sid"))

    def _left_out(self, missing: list[str], sid: Any) -> None:
        """Markets asked for and not held: counted, shown, asked for again later."""
        metrics.LEFT_OUT.inc(len(missing))
        log.warning("feed.tickers_left_out", markets=len(missing), first=missing[0], sid=sid)
        attempt = max(self.left_out.get(t, 0) for t in missing)
        for ticker in missing:
            self.left_out[ticker] = attempt + 1
        self._spawn(self._retry_left_out(missing, self.backoff.delay(attempt)))

    async def _retry_left_out(self, tickers: list[str], delay_secs: float) -> None:
        await asyncio.sleep(delay_secs)
        again = [t for t in tickers if t in self.left_out and t in self.wanted]
        if not again or self.ws is None:
            return
        log.info("feed.left_out_retried", markets=len(again), first=again[0])
        if self.book_sid is not None:
            await self._update_markets("add_markets", again)
        else:  # no book subscription yet (its subscribe was refused): subscribe them
            await self._subscribe_book_batch(again)

    def _on_unsubscribed(self, message: dict[str, Any]) -> None:
        """ingestd never unsubscribes, so an `unsubscribed` is the venue ending the
        subscription on its own (PROTOCOL.md §5.11): from now on its books get no deltas.
        Every market of it is in a gap from here (never CONTINUOUS on a silent
        subscription) until it is subscribed again and re-snapshotted."""
        sid = message.get("sid")
        channel = self.sequencer.ended(sid) if type(sid) is int else None
        if channel is None:
            log.warning("feed.unsubscribed_unknown_sid", sid=sid)
            return
        log.warning("feed.unsubscribed_by_server", sid=sid, channel=channel)
        if sid == self.book_sid:
            self.book_sid = None
            requested = now_us()
            for book in self.books.values():
                if not book.awaiting_snapshot:
                    self._open_gap(book, "unsubscribed", expected=None, got=None, sid=sid)
                book.snapshot_requested_us = requested  # the watchdog reconnects if none comes
            self._spawn(self._subscribe_books())
        else:
            self._write_gap(Gap("*", f"unsubscribed_{channel}", now_us(), None, sid=sid))
            self._spawn(self._subscribe_channel(channel))

    def _on_ticker(self, message: dict[str, Any], recv_us: int) -> None:
        """Kalshi's derived statistics of a market (PROTOCOL.md §5.7) — volume, open
        interest, last price, best bid and ask as Kalshi reports them — stored exactly,
        one complete row per message (the channel is unsequenced: nothing to gap)."""
        msg = message["msg"]
        ticker = msg["market_ticker"]
        if not self.filter.all and not any(ticker in peer.wanted for peer in self.peers):
            return
        ts_ms = msg.get("ts_ms")
        if type(ts_ms) is not int:
            raise ValueError(f"ts_ms {ts_ms!r}")
        def price(name: str) -> int | None:
            value = msg.get(name)
            return None if value in (None, "") else price_e4(value)

        def size(name: str) -> int | None:
            value = msg.get(name)
            return None if value in (None, "") else qty_e2(value)

        columns = {"price_e4": price("price_dollars"), "yes_bid_e4": price("yes_bid_dollars"),
                   "yes_ask_e4": price("yes_ask_dollars"),
                   "yes_bid_size_e2": size("yes_bid_size_fp"),
                   "yes_ask_size_e2": size("yes_ask_size_fp"),
                   "last_trade_size_e2": size("last_trade_size_fp"),
                   "volume_e2": size("volume_fp"), "open_interest_e2": size("open_interest_fp"),
                   "dollar_volume": _whole(msg.get("dollar_volume")),
                   "dollar_open_interest": _whole(msg.get("dollar_open_interest")),
                   "sid": _whole(message.get("sid")), "recv_ts": TimestampMicros(recv_us)}
        self.writer.row("tickers", symbols={"ticker": ticker},
                        columns={k: v for k, v in columns.items() if v is not None},
                        at_us=ts_ms * 1000, exchange_ms=ts_ms)

    # -- gaps and checkpoints --------------------------------------------------------------

    def _closed_by(self, ticker: str, ts_us: int) -> bool:
        """True when the market's known close time has come (1 s of clock slack; Kalshi
        sends close times in whole seconds)."""
        close = self.close_us.get(ticker)
        return close is not None and ts_us + 1_000_000 >= close

    def _open_gap(self, book: MarketBook, reason: str, *, expected: int | None,
                  got: int | None, sid: int | None, detected_us: int | None = None) -> None:
        """The book's changes can no longer be trusted from its last row on: a gap row
        now, the book awaits the snapshot that heals it."""
        detected = detected_us or now_us()
        if book.open_gap is not None and book.open_gap.detected_us >= detected:
            detected = book.open_gap.detected_us + 1  # a distinct row key
        book.awaiting_snapshot = True
        book.open_gap = Gap(book.ticker, reason, detected, book.last_book_us,
                            expected_seq=expected, got_seq=got, sid=sid)
        self._write_gap(book.open_gap)

    def _write_gap(self, gap: Gap) -> None:
        """One `gaps` row; an open one is also logged and counted."""
        if gap.end_us is None:
            metrics.GAPS.labels(reason=gap.reason).inc()
            log.warning("book.gap_detected", ticker=gap.ticker, reason=gap.reason,
                        sid=gap.sid, expected_seq=gap.expected_seq, got_seq=gap.got_seq)
        columns: dict[str, Any] = {"expected_seq": gap.expected_seq, "got_seq": gap.got_seq,
                                   "sid": gap.sid}
        if gap.start_us is not None:
            columns["start_ts"] = TimestampMicros(gap.start_us)
        if gap.end_us is not None:
            columns["end_ts"] = TimestampMicros(gap.end_us)
        self.writer.row("gaps", symbols={"ticker": gap.ticker, "reason": gap.reason},
                        columns={k: v for k, v in columns.items() if v is not None},
                        at_us=gap.detected_us)

    def _checkpoint(self, book: MarketBook, ts_us: int, recv_us: int, reason: str,
                    source: str) -> None:
        self.writer.row("book_checkpoints", symbols={
            "ticker": book.ticker, "reason": reason, "ts_source": source},
            columns={"seq": book.last_seq, "sid": book.last_sid,
                     "recv_ts": TimestampMicros(recv_us), "yes_levels": ladder_text(book.yes),
                     "no_levels": ladder_text(book.no),
                     **({"continuous_since": TimestampMicros(book.continuous_since_us)}
                        if book.continuous_since_us is not None else {})},
            at_us=ts_us)
        book.changes_since_checkpoint = 0
        book.last_checkpoint_us = ts_us

    def _mark_all_disconnected(self) -> None:
        for book in self.books.values():
            if not book.awaiting_snapshot:
                self._open_gap(book, "reconnect", expected=None, got=None, sid=book.last_sid)

    def _reconnected(self) -> None:
        log.info("feed.reconnected", markets=len(self.books))


# The labelled child of ingestd_messages_total per message type, looked up once.
_MESSAGE_COUNTERS: dict[str, Any] = {}
COUNT_FLUSH_EVERY = 256  # messages between additions to the Prometheus counters

# Subscription data (as opposed to command replies): only valid on a sid we hold.
_DATA_TYPES = frozenset({"orderbook_snapshot", "orderbook_delta", "trade", "market_lifecycle_v2",
                         "event_lifecycle", "event_fee_update"})

_HANDLERS: dict[str, Any] = {
    "subscribed": Feed._on_subscribed,
    "orderbook_snapshot": Feed._on_snapshot,
    "orderbook_delta": Feed._on_delta,
    "trade": Feed._on_trade,
    "market_lifecycle_v2": Feed._on_lifecycle,
    "event_lifecycle": Feed._on_lifecycle,
    "event_fee_update": Feed._on_lifecycle,
    "ok": Feed._on_reply,
    "unsubscribed": Feed._on_reply,
    "error": Feed._on_reply,
    "ticker": Feed._on_ticker,
}


def _whole(value: Any) -> int | None:
    """A JSON integer field (not a bool), else None."""
    return value if type(value) is int else None


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path
