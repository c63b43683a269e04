"""One Kalshi connection's recording, as a forward pipeline (docs/ingestd.md "Pipeline"):

    ws.py frames → schemas.py typed frames → gaps.py sequencer → recorder.py books
                                                               → rows.py market-wide rows
    → the row sink (ILP writer + live fan-out); the recorder's actions → subscriptions.py
    commands / ws.py reconnect.

This module only routes: each frame is decoded once, its seq checked (the next seq of a
held sid inline, everything else decided in gaps.py), and handed to the stage whose job it
is. Bad input of any kind is logged with context and counted, never fatal.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable
from typing import Any

from ingestd import metrics
from ingestd.gaps import Gap, Verdict
from ingestd.kalshi import rows, schemas
from ingestd.kalshi.auth import KalshiSigner
from ingestd.kalshi.markets import MarketsChange, MarketSet
from ingestd.kalshi.normalize import NormalizeError, price_e4, qty_e2
from ingestd.kalshi.subscriptions import MARKET_WIDE, Subscriptions
from ingestd.kalshi.ws import CONNECTED, KalshiConnection
from ingestd.lag import LagMonitor
from ingestd.messages import Action, BookDelta, BookSnapshot, RequestSnapshots
from ingestd.metadata import MarketRows
from ingestd.recorder import BookRecorder
from ingestd.sink import RowSink
from ktape.clock import now_us
from ktape.config import MarketFilter
from ktape.log import get_logger

log = get_logger(__name__)

COUNT_FLUSH_EVERY = 256  # messages between additions to the Prometheus counters
_MESSAGE_COUNTERS: dict[str, Any] = {}  # the labelled child per type, looked up once
_BAD_EVENTS = {"malformed_json": "feed.malformed_json", "not_an_object": "feed.not_an_object",
               "unknown_type": "feed.unknown_type", "invalid_field": "feed.invalid_message"}
Delta, Snapshot = schemas.Delta, schemas.Snapshot


class KalshiFeed:
    def __init__(self, ws_url: str, sink: RowSink, markets: MarketFilter, *,
                 signer: KalshiSigner | None = None, checkpoint_every_changes: int = 200,
                 checkpoint_interval_secs: float = 60.0, rng: random.Random | None = None,
                 market_rows: MarketRows | None = None, liveness_secs: float = 30.0,
                 lag: LagMonitor | None = None, name: str = "0",
                 market_wide: tuple[str, ...] = MARKET_WIDE,
                 listed: Callable[[], Iterable[str]] | None = None,
                 on_lifecycle: Callable[[str, str, dict[str, Any], int], None] | None = None,
                 wanted_anywhere: Callable[[str], bool] | None = None) -> None:
        """`market_wide`: the lifecycle/trade/ticker channels this connection follows
        (one connection of a recorder follows them, for `listed` markets); `on_lifecycle`
        hands each lifecycle event's effects to the connection recording the market."""
        self.sink = sink
        self._writer = sink.writer
        self.filter = markets
        self.name = name
        self.market_rows = market_rows or MarketRows(sink)
        self.lag = lag or LagMonitor()  # exchange→receive lag of this connection
        self.connection = KalshiConnection(ws_url, signer=signer, liveness_secs=liveness_secs,
                                           rng=rng, verdict=self._verdict, name=name)
        self.recorder = BookRecorder(sink, checkpoint_every_changes=checkpoint_every_changes,
                                     checkpoint_interval_secs=checkpoint_interval_secs)
        self.subscriptions = Subscriptions(
            self.connection, self.recorder, market_wide=market_wide, every_market=markets.all,
            listed=listed or (lambda: self.wanted))
        self.wanted = self.subscriptions.wanted
        self.markets = MarketSet(markets, self.wanted, self.market_rows, self.recorder,
                                 self.subscriptions)
        self.books = self.recorder.books
        self._on_lifecycle = on_lifecycle or self._lifecycle_here
        self._wanted_anywhere = wanted_anywhere or self.wanted.__contains__
        self._last_seq = self.subscriptions.sequencer.last  # read and advanced inline
        self._pending_counts: dict[str, int] = {}  # messages by type, not yet in metrics
        self._pending_total = 0
        self._connections = 0

    def follow_markets(self, change: MarketsChange) -> None:
        """Markets added to or dropped from the recorder: this connection's trade and
        ticker subscriptions follow (when they list markets)."""
        self.subscriptions.spawn(self.subscriptions.update_market_wide(*change))

    def _lifecycle_here(self, ticker: str, event_type: str, msg: dict[str, Any],
                        ts_us: int) -> None:
        change = self.markets.apply_lifecycle(ticker, event_type, msg, ts_us)
        if change is not None:
            self.follow_markets(change)

    # -- running -----------------------------------------------------------------------------

    async def run(self, stop: Any) -> None:
        writer = self._writer
        async with contextlib.aclosing(self.connection.frames(stop)) as frames:
            async for item in frames:
                if item.__class__ is tuple:
                    self.handle(*item)
                    if writer.wants_flush:
                        writer.kick()
                        await writer.backpressure()
                elif item is CONNECTED:
                    self._connections += 1
                    self.lag.reset()
                    if self._connections > 1:
                        log.info("feed.reconnected", markets=len(self.books))
                    await self.subscriptions.subscribe_all()
                else:  # DISCONNECTED: nothing after the last row is known any more
                    self.recorder.lose_all("reconnect", None)

    def _verdict(self, now: int) -> str | None:
        """Asked by the connection's watchdog every few seconds: a reason to drop it."""
        self.flush_counts()  # quiet feeds still show their counts within seconds
        floor = self.lag.floor_us()
        if floor is not None:
            metrics.EXCHANGE_LAG.labels(connection=self.name).set(floor / 1e6)
        overdue = self.recorder.overdue_snapshots(now)
        if overdue:  # get_snapshot is young on Kalshi (2026-04); not all replies documented
            log.warning("feed.snapshot_timeout", markets=len(overdue), first=overdue[0])
            return "snapshot_timeout"
        if self.lag.growing():  # a backlog that only a new connection clears (§5.11)
            log.warning("feed.lag_growing", connection=self.name,
                        floors_secs=[round(f / 1e6, 3) for f in self.lag.floors])
            return "lag_growing"
        return None

    def carry_out(self, action: Action) -> None:
        if type(action) is RequestSnapshots:
            self.subscriptions.spawn(self.subscriptions.request_snapshots(action.tickers))
        else:
            self.connection.reconnect(action.reason)

    # -- frames ------------------------------------------------------------------------------

    def handle(self, raw: bytes | str, recv_us: int) -> None:
        """Process one frame; never raises for bad input (logged and counted)."""
        frame = schemas.decode(raw)
        cls = frame.__class__
        if cls is Delta:  # the hot path, inline
            self._count("orderbook_delta")
            sid, seq = frame.sid, frame.seq  # type: ignore[union-attr]
            last = self._last_seq.get(sid)
            if last is not None and seq == last + 1:
                self._last_seq[sid] = seq
            elif not self._check_seq(sid, seq, True):
                return
            msg = frame.msg  # type: ignore[union-attr]
            try:
                price, delta = price_e4(msg.price_dollars), qty_e2(msg.delta_fp)
            except NormalizeError as exc:
                self._invalid(frame, raw, exc)
                return
            if msg.ts_ms is not None:
                ts_us, source = msg.ts_ms * 1000, "exchange"
                lag = self.lag  # inline: the call only when the window ends or floor drops
                if recv_us >= lag.window_end or recv_us - ts_us < lag.floor:
                    lag.observe(recv_us - ts_us, recv_us)
            else:
                try:
                    ts_us, source = schemas.exchange_time(None, msg.ts, frame.sending_ts_ms,
                                                          recv_us)
                except ValueError as exc:
                    self._invalid(frame, raw, exc)
                    return
            action = self.recorder.delta(BookDelta(msg.market_ticker, msg.side, price, delta,
                                                   sid, seq, ts_us, source, recv_us))
            if action is not None:
                self.carry_out(action)
            return
        if cls is schemas.BadFrame:
            self._bad(frame, raw)  # type: ignore[arg-type]
            return
        self._count(schemas.TAGS[cls])
        sid, seq = getattr(frame, "sid", None), getattr(frame, "seq", None)
        if seq is not None and sid is not None and cls is not schemas.Subscribed \
                and not self._check_seq(sid, seq, cls in schemas.DATA_TYPES):
            return
        try:
            _HANDLERS[cls](self, frame, recv_us)
        except (NormalizeError, ValueError) as exc:
            self._invalid(frame, raw, exc)

    def _count(self, label: str) -> None:
        self._pending_counts[label] = self._pending_counts.get(label, 0) + 1
        self._pending_total += 1
        if self._pending_total >= COUNT_FLUSH_EVERY:
            self.flush_counts()

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

    def _bad(self, bad: schemas.BadFrame, raw: bytes | str) -> None:
        if bad.reason == "unknown_type":
            self._count("unknown")
        elif bad.type is not None:
            self._count(bad.type)
        metrics.BAD_INPUT.labels(reason=bad.reason).inc()
        log.warning(_BAD_EVENTS[bad.reason], type=bad.type, sid=bad.sid, seq=bad.seq,
                    error=bad.error, raw=str(raw)[:300])

    def _invalid(self, frame: Any, raw: bytes | str, exc: Exception) -> None:
        """A frame that decoded but whose values are not exact (a price off the $0.0001
        grid, a bad time). Its seq was counted: a change we could not apply leaves the
        market's book unknown, so the market is in a gap until a snapshot."""
        metrics.BAD_INPUT.labels(reason="invalid_field").inc()
        log.warning("feed.invalid_message", type=schemas.TAGS[type(frame)], sid=frame.sid,
                    seq=frame.seq, error=str(exc), raw=str(raw)[:300])
        book = self.books.get(frame.msg.market_ticker) if type(frame) in (Delta, Snapshot) \
            else None
        if book is not None and not book.awaiting_snapshot:
            self.recorder.open_gap(book, "invalid_message", got=frame.seq, sid=frame.sid)
            self.carry_out(RequestSnapshots((book.ticker,)))

    def _check_seq(self, sid: int, seq: int, data: bool) -> bool:
        """True to process the frame (ingestd/gaps.py decides); a gap on the book sid
        puts every book of it in a gap and asks for their snapshots."""
        verdict, gap = self.subscriptions.sequencer.check(sid, seq, data)
        if verdict is Verdict.APPLY:
            return True
        if verdict is Verdict.UNKNOWN_SID:
            metrics.BAD_INPUT.labels(reason="unknown_sid").inc()
            log.warning("feed.frame_for_unknown_sid", sid=sid, seq=seq)
            return False
        if verdict is Verdict.DUPLICATE:
            metrics.BAD_INPUT.labels(reason="duplicate_seq").inc()
            log.warning("feed.duplicate_seq", sid=sid, seq=seq,
                        last_seq=self.subscriptions.sequencer.last_seq(sid))
            return False
        assert gap is not None
        log.warning("feed.seq_gap", sid=sid, expected_seq=gap.expected, got_seq=gap.got,
                    channel=gap.channel)
        if sid == self.subscriptions.book_sid:
            self.carry_out(self.recorder.subscription_gap(sid, gap.expected, gap.got))
        else:  # trade/lifecycle sids: one sid-wide gap row (ticker "*")
            self.recorder.write_gap(Gap("*", f"seq_jump_{gap.channel}", now_us(), None,
                                        expected_seq=gap.expected, got_seq=gap.got, sid=sid))
        return True

    # -- handlers (one per frame type) --------------------------------------------------------

    def _on_snapshot(self, frame: schemas.Snapshot, recv_us: int) -> None:
        msg = frame.msg
        clock_us, source = schemas.exchange_time(None, None, frame.sending_ts_ms, recv_us)
        self.recorder.snapshot(BookSnapshot(
            msg.market_ticker, {price_e4(p): qty_e2(q) for p, q in msg.yes_dollars_fp},
            {price_e4(p): qty_e2(q) for p, q in msg.no_dollars_fp}, frame.sid, frame.seq,
            clock_us, source, recv_us))

    def _keeps(self, ticker: str) -> bool:
        """A market-wide row of `ticker` is this recorder's to write (one ingest shard
        of several writes only its own markets')."""
        return (self.filter.all and self.filter.in_shard(ticker)) or self._wanted_anywhere(ticker)

    def _on_trade(self, frame: schemas.Trade, recv_us: int) -> None:
        if self._keeps(frame.msg.market_ticker):
            rows.trade(self.sink, frame, recv_us)

    def _on_ticker(self, frame: schemas.Ticker, recv_us: int) -> None:
        if self._keeps(frame.msg.market_ticker):
            rows.ticker(self.sink, frame, recv_us)

    def _on_lifecycle(self, frame: schemas.MarketLifecycle, recv_us: int) -> None:
        ticker, event_type = frame.ticker, frame.event_type
        if not self.filter.in_shard(ticker or ""):
            return  # another ingest shard's market (or event): that shard writes it
        row = self.market_rows.rows.get(ticker)
        ts_us = rows.lifecycle(self.sink, frame, recv_us, row.series_ticker if row else "")
        if type(frame) is not schemas.MarketLifecycle or not ticker:
            return
        self._on_lifecycle(ticker, event_type, frame.msg, ts_us)  # to the recording shard
        if event_type != "created" and (self.market_rows.known(ticker) or self.filter.matches(
                ticker, ticker.split("-")[0])):
            self.market_rows.on_lifecycle(ticker, event_type, frame.msg, recv_us)


_HANDLERS: dict[type, Callable[[KalshiFeed, Any, int], None]] = {
    schemas.Snapshot: KalshiFeed._on_snapshot,
    schemas.Trade: KalshiFeed._on_trade,
    schemas.Ticker: KalshiFeed._on_ticker,
    schemas.MarketLifecycle: KalshiFeed._on_lifecycle,
    schemas.EventLifecycle: KalshiFeed._on_lifecycle,
    schemas.EventFeeUpdate: KalshiFeed._on_lifecycle,
    schemas.Subscribed: lambda feed, frame, _recv: feed.subscriptions.on_subscribed(frame),
    schemas.Ok: lambda feed, frame, _recv: feed.subscriptions.on_ok(frame),
    schemas.Error: lambda feed, frame, _recv: feed.subscriptions.on_error(frame),
    schemas.Unsubscribed: lambda feed, frame, _recv: feed.subscriptions.on_unsubscribed(frame),
}
