"""Kalshi's side of subscriptions: what we asked for, what the venue holds, its replies.

PROTOCOL.md §5.3 to §5.5 and §5.11: a subscribe is answered `subscribed` (a new sid, seq
afresh — even for a reused sid number) or, merged into a held one, `ok` with the full
ticker list; tickers asked for and not listed were left out (retried with backoff, never
reported recorded meanwhile); the venue may end a subscription itself (`unsubscribed`);
error 27 is the command rate (sent again after a backoff), 26 the market cap (the command's
markets retried later), 10/25 end the subscription (reconnect). What each reply means for
the books goes to the book recorder; commands go out through the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from ingestd import metrics
from ingestd.gaps import Gap, Sequencer
from ingestd.kalshi import schemas
from ingestd.kalshi.ws import KalshiConnection
from ingestd.recorder import BookRecorder
from ktape.clock import now_us
from ktape.log import get_logger

log = get_logger(__name__)

SUBSCRIBE_BATCH = 500
BOOKS = "orderbook_delta"
MARKET_WIDE = ("market_lifecycle_v2", "trade", "ticker")


class Subscriptions:
    def __init__(self, connection: KalshiConnection, recorder: BookRecorder, *,
                 market_wide: tuple[str, ...] = (), every_market: bool = True,
                 listed: Callable[[], Iterable[str]] = tuple) -> None:
        self.connection = connection
        self.recorder = recorder
        # Lifecycle, trades and tickers are light: one connection of a recorder follows
        # them for every recorded market (`listed`), or for all (`every_market`).
        self.market_wide = market_wide
        self.every_market = every_market
        self.listed = listed
        self.sequencer = Sequencer()  # the subscriptions held and their seq counters
        self.book_sid: int | None = None
        # Tickers each book subscribe / add_markets command asked for, by command id: a
        # reply may list fewer (§5.11 "tickers left out"), and those are retried.
        self._asked: dict[int, set[str]] = {}
        self.left_out: dict[str, int] = {}  # ticker -> retries so far, until held
        self.wanted: set[str] = set()  # the book markets this connection records
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def sids(self) -> dict[int, str]:
        """The subscriptions held on this connection: sid -> channel."""
        return self.sequencer.channels

    def spawn(self, coro: Any) -> None:
        """Run a command send in the background, keeping a reference until it is done
        (the loop holds tasks weakly) and logging a failure instead of losing it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("feed.command_failed", error=repr(task.exception()))

    # -- commands ------------------------------------------------------------------------

    async def subscribe_all(self) -> None:
        """A new connection: the market-wide channels, then every wanted book (each
        gets a snapshot)."""
        self.sequencer.clear()
        self._asked.clear()
        self.book_sid = None
        for channel in self.market_wide:
            await self.subscribe_channel(channel)
        await self.subscribe_books(sorted(self.wanted))

    async def subscribe_channel(self, channel: str) -> None:
        params: dict[str, Any] = {"channels": [channel]}
        if channel != "market_lifecycle_v2" and not self.every_market:
            params["market_tickers"] = sorted(self.listed()) or ["-"]
        await self.connection.send("subscribe", params)

    async def subscribe_books(self, tickers: list[str]) -> None:
        # Later batches are merged into the same orderbook sid (an `ok` reply).
        for i in range(0, len(tickers), SUBSCRIBE_BATCH):
            await self._subscribe_book_batch(tickers[i:i + SUBSCRIBE_BATCH])

    async def _subscribe_book_batch(self, tickers: list[str]) -> None:
        """One book subscribe, remembering what it asked for (tickers left out, §5.11)."""
        cmd_id = await self.connection.send("subscribe", {
            "channels": [BOOKS], "market_tickers": tickers, "use_yes_price": False})
        self._asked[cmd_id] = set(tickers)

    async def request_snapshots(self, tickers: Iterable[str]) -> None:
        tickers = sorted(tickers)
        if self.book_sid is None or not tickers:
            return
        self.recorder.snapshots_requested(tickers, now_us())
        for i in range(0, len(tickers), SUBSCRIBE_BATCH):
            await self.connection.send("update_subscription", {
                "sids": [self.book_sid], "action": "get_snapshot",
                "market_tickers": tickers[i:i + SUBSCRIBE_BATCH]})

    async def update_books(self, action: str, tickers: list[str]) -> None:
        """add_markets / delete_markets on the book subscription."""
        if self.book_sid is not None and tickers:
            cmd_id = await self.connection.send("update_subscription", {
                "sids": [self.book_sid], "action": action, "market_tickers": tickers})
            if action == "add_markets":
                self._asked[cmd_id] = set(tickers)

    async def update_market_wide(self, action: str, tickers: list[str]) -> None:
        """add_markets / delete_markets on the trade and ticker subscriptions, when they
        list markets (KTAPE_MARKETS) rather than take every market."""
        if self.every_market or not tickers:
            return
        for sid, channel in list(self.sids.items()):
            if channel in ("trade", "ticker"):
                await self.connection.send("update_subscription", {
                    "sids": [sid], "action": action, "market_tickers": tickers})

    # -- replies -------------------------------------------------------------------------

    def on_subscribed(self, frame: schemas.Subscribed) -> None:
        sid, channel = frame.msg.sid, frame.msg.channel
        self.sequencer.subscribed(sid, channel)  # a new counter, also for a reused sid
        self.connection.answered(frame.id)
        if channel == BOOKS:
            self.book_sid = sid
            self._check_held(frame.id, frame.msg.market_tickers, sid)
        log.info("feed.subscribed", sid=sid, channel=channel)

    def on_ok(self, frame: schemas.Ok) -> None:
        self.connection.answered(frame.id)
        self._check_held(frame.id, frame.tickers, frame.sid)

    def on_error(self, frame: schemas.Error) -> None:
        asked = self._asked.pop(frame.id, None) if frame.id is not None else None
        sent = self.connection.answered(frame.id)
        code = frame.msg.code
        if code == 27 and sent is not None:  # the command rate limit: back off, again
            log.warning("feed.command_rate_limited", cmd=sent[0], attempt=sent[2] + 1)
            self.spawn(self._resend(sent, asked))
            return
        if code == 26 and asked:
            # The subscription's market cap: the whole command was refused. Its markets
            # are not recorded (never reported as such) and asked for again.
            log.warning("feed.market_limit_exceeded", markets=len(asked))
            self._left_out(sorted(asked), frame.sid)
            return
        log.warning("feed.error_reply", code=code, error=frame.msg.msg, sid=frame.sid,
                    id=frame.id)
        if code in (10, 25) and frame.sid is not None and frame.sid == self.book_sid:
            # terminal for the subscription: a gap for every book, and a new connection
            self.recorder.lose_all(f"error_{code}", self.book_sid)
            self.connection.reconnect(f"error_{code}")

    def on_unsubscribed(self, frame: schemas.Unsubscribed) -> None:
        """ingestd never unsubscribes, so an `unsubscribed` is the venue ending the
        subscription on its own (§5.11): its books get no more deltas. Every market of it
        is in a gap from here (never CONTINUOUS on a silent subscription) until it is
        subscribed again and re-snapshotted."""
        sid = frame.sid
        channel = self.sequencer.ended(sid)
        if channel is None:
            log.warning("feed.unsubscribed_unknown_sid", sid=sid)
            return
        log.warning("feed.unsubscribed_by_server", sid=sid, channel=channel)
        if sid == self.book_sid:
            self.book_sid = None
            self.recorder.lose_all("unsubscribed", sid)
            # the watchdog reconnects if the new subscription's snapshots never come
            self.recorder.snapshots_requested(tuple(self.recorder.books), now_us())
            self.spawn(self.subscribe_books(sorted(self.wanted)))
        else:
            self.recorder.write_gap(Gap("*", f"unsubscribed_{channel}", now_us(), None, sid=sid))
            self.spawn(self.subscribe_channel(channel))

    async def _resend(self, sent: tuple[str, dict[str, Any] | None, int],
                      asked: set[str] | None) -> None:
        cmd_id = await self.connection.resend(sent)
        if asked is not None:
            self._asked[cmd_id] = asked

    def _check_held(self, cmd_id: int | None, tickers: list[str] | None, sid: Any) -> None:
        """A reply to one of our book commands lists the subscription's tickers: those
        asked for and not listed were left out (markets "not held by the venue" at that
        moment). They get no snapshot and are not recorded — their books stay awaiting a
        snapshot, so never CONTINUOUS — and are asked for again with backoff."""
        asked = self._asked.pop(cmd_id, None) if cmd_id is not None else None
        if asked is None or tickers is None:
            return
        held = set(tickers)
        for ticker in held & asked:
            self.left_out.pop(ticker, None)
        missing = sorted(asked - held)
        if missing:
            self._left_out(missing, sid)

    def _left_out(self, missing: list[str], sid: Any) -> None:
        """Markets asked for and not held: counted, shown, asked for again later."""
        metrics.LEFT_OUT.inc(len(missing))
        log.warning("feed.tickers_left_out", markets=len(missing), first=missing[0], sid=sid)
        attempt = max(self.left_out.get(t, 0) for t in missing)
        for ticker in missing:
            self.left_out[ticker] = attempt + 1
        self.spawn(self._retry_left_out(missing, self.connection.backoff.delay(attempt)))

    async def _retry_left_out(self, tickers: list[str], delay_secs: float) -> None:
        await asyncio.sleep(delay_secs)
        again = [t for t in tickers if t in self.left_out and t in self.wanted]
        if not again or not self.connection.connected:
            return
        log.info("feed.left_out_retried", markets=len(again), first=again[0])
        if self.book_sid is not None:
            await self.update_books("add_markets", again)
        else:  # no book subscription yet (its subscribe was refused): subscribe them
            await self._subscribe_book_batch(again)
