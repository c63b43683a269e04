"""The simulator's server: Kalshi WebSocket v2 and a REST subset on one port, with faults.

    async with SimServer(SimConfig(port=0, seed=1, markets=20)) as sim:
        sim.port, sim.journal, sim.inject("drop", n=1)

WebSocket at `/trade-api/ws/v2`, REST under `/trade-api/v2`, a control endpoint at
`/_sim/control?action=...` (drop|duplicate|malformed|unknown_type|disconnect|rest_429|
rest_500|stale_book|wrong_book, with `n`) that tests use to trigger one fault on demand.
Every injected fault is journaled. Exchange time is the wall clock in milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import functools
import http
import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ktape.aio import cancel_and_wait
from ktape.log import get_logger
from ktape.sim.auth import SignatureVerifier
from ktape.sim.candles import MAX_CANDLES, CandleRangeError, candlesticks
from ktape.sim.events import SeriesSpec, SimEvent
from ktape.sim.fixed import contracts, dollars
from ktape.sim.journal import Journal
from ktape.sim.model import BookChange, BookCleared, Event, LifecycleEvent, Market, MarketModel, TradeEvent

log = get_logger(__name__)

WS_PATH = "/trade-api/ws/v2"
REST_PREFIX = "/trade-api/v2"
CHANNELS = {"orderbook_delta", "trade", "ticker", "market_lifecycle_v2"}
REMOVED_CHANNELS = {"ticker_v2", "multivariate", "multivariate_lookup"}
PING_INTERVAL_SECS = 10.0
WRITE_BATCH = 1000  # frames per transport write
TICK_SECS = 0.01
MAX_CATCH_UP_SECS = 0.05
GENERATE_CHUNK = 200
FAULT_NAMES = ("drop", "duplicate", "malformed", "unknown_type", "unknown_key", "disconnect",
               "abrupt_disconnect", "error_10", "maintenance", "rest_429", "rest_500",
               "reorder", "unsubscribe", "silence", "leave_out", "too_many_requests",
               "stale_book", "wrong_book")
DURATION_FAULTS = ("disconnect_every_secs", "stale_book_ms")  # not probabilities
WRONG_BOOK_EXTRA_E2 = 1_234_567  # a wrong REST book's changed level holds this much more
SENDING_TS_CHOICES = ("all", "no_snapshots", "none")
STATUS_FILTER = {"unopened": {"initialized"}, "open": {"active"}, "paused": {"inactive"},
                 "closed": {"closed", "determined"}, "settled": {"finalized"}}
# GET /events?status= (PROTOCOL.md §6.2 has no `paused` there: a paused event is open).
# An event's markets share their status in the model, so its first market speaks for it.
EVENT_STATUS_FILTER = {"unopened": {"initialized"}, "open": {"active", "inactive"},
                       "closed": {"closed", "determined"}, "settled": {"finalized"}}


@dataclass
class FaultConfig:
    """Random fault probabilities per message (0 = off) and a periodic disconnect."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    malformed: float = 0.0
    unknown_type: float = 0.0
    unknown_key: float = 0.0
    leave_out: float = 0.0  # per book subscribe / add_markets: one ticker not held
    rest_429: float = 0.0
    rest_500: float = 0.0
    # REST books (GET /markets/{ticker}/orderbook): a stale one is the true book of
    # `stale_book_ms` earlier (an edge cache's copy, PROTOCOL.md §6.1: a true book, of
    # the past); a wrong one differs from every true book (one level's size changed).
    # Both journaled as faults, so an audit of the recorder can be checked against them.
    stale_book: float = 0.0
    wrong_book: float = 0.0
    stale_book_ms: float = 400.0
    disconnect_every_secs: float = 0.0

    def any_message_fault(self) -> bool:
        """Whether any per-message fault can fire (the send path skips the dice if not)."""
        return bool(self.drop or self.duplicate or self.reorder or self.malformed
                    or self.unknown_type or self.unknown_key)

    @classmethod
    def parse(cls, text: str) -> FaultConfig:
        """`drop=0.001,disconnect_every_secs=30` -> FaultConfig (errors name the key)."""
        config = cls()
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in cls.__dataclass_fields__:
                raise ValueError(f"unknown fault {key!r}; known: {', '.join(cls.__dataclass_fields__)}")
            number = float(value)
            if number < 0 or (key not in DURATION_FAULTS and number > 1):
                raise ValueError(f"fault {key}={value}: probability must be in [0, 1]")
            setattr(config, key, number)
        return config


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 42
    markets: int = 50
    rate: float = 200.0  # model events per second
    # Share of model events that are random lifecycle transitions (close, determine,
    # settle, pause, grid and metadata changes). 0 keeps every market trading: a test
    # about something else (the console's pages) must not see its market close under it.
    lifecycle_rate: float = 0.002
    faults: FaultConfig = field(default_factory=FaultConfig)
    journal_path: Path | None = None
    public_key_path: Path | None = None
    ok_takes_seq: bool = True
    send_queue_limit: int = 100_000
    price_decimals: int = 4  # WebSocket prices: 4 (Kalshi today), or 3 / 2 where exact
    # Stale frames (PROTOCOL.md §5.11): every frame of a connection reaches the reader this
    # long after it was queued — deltas and trades behind their `ts_ms`, snapshots behind
    # the instant they describe — in order, as a backed-up connection delivers them.
    delivery_lag_ms: int = 0
    # ... and the lag grows by this much per second of the connection (§5.11 measured
    # 8 s growing to 21 s within one connection): a backlog only a new connection clears.
    lag_growth_ms_per_s: float = 0.0
    # Which server messages carry `sending_ts_ms` (PROTOCOL.md §3.2: optional, never to be
    # required): "all", "no_snapshots" (snapshots go without it) or "none".
    sending_ts: str = "all"
    # PROTOCOL.md §5.11: a second `subscribe` for a channel already held is merged into
    # the existing subscription and answered `ok` (existing sid, a seq, the full ticker
    # list), never a second `subscribed`. False: the older `subscribed` reply.
    merge_subscribe: bool = True
    # Accept permessage-deflate when the client offers it (PROTOCOL.md §5.1); off by
    # default because compressing every frame halves the simulator's throughput.
    deflate: bool = False
    # Error 26 (PROTOCOL.md §5.4): a book subscribe / add_markets that would take a
    # subscription past this many markets is refused whole. None: no cap.
    max_markets_per_sub: int | None = None
    # §5.11 sid reuse: a new subscription takes the lowest sid number not held, so a
    # number that ended can come back with a new seq counter.
    reuse_sids: bool = False

    def __post_init__(self) -> None:
        if self.sending_ts not in SENDING_TS_CHOICES:
            raise ValueError(f"sending_ts {self.sending_ts!r}: one of {SENDING_TS_CHOICES}")
        if self.delivery_lag_ms < 0 or self.lag_growth_ms_per_s < 0:
            raise ValueError("delivery_lag_ms and lag_growth_ms_per_s must be >= 0")


@dataclass
class Subscription:
    sid: int
    channel: str
    tickers: set[str] | None  # None = every market
    use_yes_price: bool = False
    skip_ticker_ack: bool = False  # `ok` replies omit the market list
    seq: int = 0

    def wants(self, ticker: str) -> bool:
        return self.tickers is None or ticker in self.tickers


class Client:
    """One WebSocket connection: its subscriptions and an ordered, bounded send queue."""

    _ids = itertools.count(1)

    def __init__(self, ws: ServerConnection, limit: int, lag_secs: float = 0.0,
                 lag_growth: float = 0.0) -> None:
        self.id = next(self._ids)
        self.ws = ws
        self.subs: dict[int, Subscription] = {}
        self.next_sid = 1
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.limit = limit
        self.held: bytes | None = None  # for reorder faults
        # Delivery lag: frames wait here (with the monotonic time they are due) before the
        # writer's queue; `due` wakes the releaser.
        self.lag_secs = lag_secs
        self.lag_growth = lag_growth  # seconds of lag added per second connected
        self.connected_at = time.monotonic()
        self.delayed: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.due = asyncio.Event()
        self.silenced = False  # `silence` fault: nothing more is sent, not even pings

    @property
    def lagged(self) -> bool:
        return bool(self.lag_secs or self.lag_growth)

    def put(self, frame: bytes | None) -> None:
        if self.silenced and frame is not None:
            return
        if self.lagged:
            now = time.monotonic()
            lag = self.lag_secs + self.lag_growth * (now - self.connected_at)
            self.delayed.append((now + lag, frame))
            self.due.set()
        else:
            self.queue.put_nowait(frame)

    def backlog(self) -> int:
        return self.queue.qsize() + len(self.delayed)

    async def release_delayed(self) -> None:
        """Move each delayed frame to the writer's queue once it is due, in order."""
        while True:
            if not self.delayed:
                self.due.clear()
                await self.due.wait()
                continue
            due, frame = self.delayed[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self.delayed.popleft()
            self.queue.put_nowait(frame)


class SimServer:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed ^ 0x5EED)
        self.model = MarketModel(seed=config.seed, markets=config.markets, start_ms=_now_ms(),
                                 lifecycle_rate=config.lifecycle_rate)
        self.journal = Journal(config.journal_path)
        self.verifier = (SignatureVerifier.from_pem(config.public_key_path)
                         if config.public_key_path else None)
        self.clients: dict[int, Client] = {}
        self.pending: dict[str, int] = {}  # one-shot faults requested via control
        self.paused_until = 0.0  # monotonic end of a simulated maintenance pause
        self.server: Server | None = None
        self.port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.messages_sent = 0
        self.extensions_seen: list[list[str]] = []  # per connection, for tests
        for market in self.model.markets.values():
            self.journal.initial_book(self.model.start_ms, market)

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.server = await serve(
            self._handle_ws, self.config.host, self.config.port,
            process_request=self._process_request, ping_interval=None,
            compression="deflate" if self.config.deflate else None,
            max_size=1 << 20, max_queue=64, write_limit=1 << 20,
        )
        self.port = self.server.sockets[0].getsockname()[1] if self.server.sockets else 0
        self._tasks.append(asyncio.create_task(self._generate(), name="sim-generate"))
        if self.config.faults.disconnect_every_secs > 0:
            self._tasks.append(asyncio.create_task(self._disconnect_loop(), name="sim-disc"))
        log.info("sim.started", port=self.port, seed=self.config.seed,
                 markets=self.config.markets, rate=self.config.rate)

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        self.journal.close()

    def inject(self, fault: str, n: int = 1, channel: str | None = None) -> None:
        """Arm a one-shot fault for the next `n` eligible messages (or now: disconnect);
        `channel` limits a `drop` to that channel's frames."""
        if fault not in FAULT_NAMES:
            raise ValueError(f"unknown fault {fault!r}")
        if channel is not None:
            if fault != "drop" or channel not in CHANNELS:
                raise ValueError(f"channel= applies to drop, one of {sorted(CHANNELS)}")
            key = f"{fault}:{channel}"
            self.pending[key] = self.pending.get(key, 0) + n
            return
        if fault == "disconnect":
            for client in list(self.clients.values()):
                self._disconnect(client, "control")
            return
        if fault == "abrupt_disconnect":  # no close frame: the TCP connection just dies
            for client in list(self.clients.values()):
                self.journal.fault(_now_ms(), "abrupt_disconnect", client=client.id,
                                   sids=sorted(client.subs))
                client.subs.clear()
                client.ws.transport.abort()
            return
        if fault == "error_10":  # a channel error kills the book subscription, not the socket
            self._end_book_subscriptions(fault, {"type": "error", "msg": {
                "code": 10, "msg": "Channel error"}})
            return
        if fault == "unsubscribe":  # the venue ends each book subscription on its own (§5.11)
            self._end_book_subscriptions(fault, {"type": "unsubscribed"})
            return
        if fault == "silence":  # the connection stays open and says nothing, not even pings
            for client in list(self.clients.values()):
                client.silenced = True
                self.journal.fault(_now_ms(), "silence", client=client.id,
                                   sids=sorted(client.subs))
            return
        if fault == "maintenance":  # trading pauses for n seconds (exchange/status says so)
            self.paused_until = time.monotonic() + n
            self.journal.fault(_now_ms(), "maintenance", secs=n)
            return
        self.pending[fault] = self.pending.get(fault, 0) + n

    def _end_book_subscriptions(self, fault: str, body: dict[str, Any]) -> None:
        """Every client's book subscription ends from the server's side with `body`
        (taking the subscription's next seq); the socket stays open."""
        for client in list(self.clients.values()):
            for sub in [s for s in client.subs.values() if s.channel == "orderbook_delta"]:
                client.subs.pop(sub.sid, None)
                self.journal.fault(_now_ms(), fault, client=client.id, sid=sub.sid)
                sub.seq += 1
                self._send(client, {**body, "sid": sub.sid, "seq": sub.seq})

    def drive(self, action: str, ticker: str) -> list[str]:
        """Move a market's whole event along its lifecycle now (`close` an active
        market's event, `determine` a closed one's, `settle` a determined one's), as the
        model does at random: an event's markets share their lifecycle. Returns the event
        types sent, market by market."""
        market = self.model.markets.get(ticker)
        if market is None:
            raise ValueError(f"unknown market {ticker!r}")
        wanted = {"close": "active", "determine": "closed", "settle": "determined"}
        if action not in wanted:
            raise ValueError(f"unknown lifecycle action {action!r}")
        if market.status != wanted[action]:
            raise ValueError(f"{action} needs a market that is {wanted[action]}, "
                             f"{ticker} is {market.status}")
        now_ms = _now_ms()
        events = getattr(self.model, action)(market, now_ms)
        for event in events:
            self.journal.event(event)
            self._broadcast(event)
        self.journal.flush()
        return [getattr(e, "event_type", type(e).__name__) for e in events]

    # -- generation and fan-out --------------------------------------------------------

    async def _generate(self) -> None:
        """Run the model at `config.rate` events/s of wall-clock time.

        Work per tick is capped (MAX_CATCH_UP_SECS of events) and the loop yields between
        chunks: when the model cannot keep up, the rate drops instead of the generator
        starving the senders (which would turn a fast run into a slow-consumer storm).
        """
        carry = 0.0
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_SECS)
            now = time.monotonic()
            rate = self.config.rate
            carry = min(carry + (now - last) * rate, rate * MAX_CATCH_UP_SECS)
            last = now
            count = int(carry)
            carry -= count
            if now < self.paused_until:
                continue  # maintenance: nothing trades
            now_ms = _now_ms()
            for done in range(count):
                for event in self.model.step(now_ms):
                    self.journal.event(event)
                    self._broadcast(event)
                if done % GENERATE_CHUNK == GENERATE_CHUNK - 1:
                    await asyncio.sleep(0)  # let the writers drain
            if count:
                self.journal.flush()

    def _broadcast(self, event: Event) -> None:
        ticker_msg: dict[str, Any] | None = None
        for client in list(self.clients.values()):
            for sub in list(client.subs.values()):
                if sub.channel == "ticker":
                    # the ticker channel is not sequenced (PROTOCOL.md §5.5), and sent when
                    # one of its fields changes (§5.7): a trade, or a change at the top of
                    # the book — not a change deeper in it
                    if _moves_ticker(self.model.markets[event.ticker], event) \
                            and sub.wants(event.ticker):
                        ticker_msg = ticker_msg or self._ticker_msg(event)
                        self._send(client, {"type": "ticker", "sid": sub.sid, "msg": ticker_msg})
                    continue
                frame = self._frame_for(sub, event)
                if frame is not None:
                    self._send_sequenced(client, sub, frame)
                    if (isinstance(event, LifecycleEvent) and event.event_type == "created"
                            and sub.channel == "market_lifecycle_v2"
                            and self._first_of_event(event.ticker)):
                        # one event_lifecycle per new event, after its first market
                        self._send_sequenced(client, sub, self._event_lifecycle(event))

    def _ticker_msg(self, event: BookChange | TradeEvent) -> dict[str, Any]:
        market = self.model.markets[event.ticker]
        best_yes, best_no = market.best("yes"), market.best("no")
        stamp = dt.datetime.fromtimestamp(event.ts_ms / 1000, dt.UTC)
        return {
            "market_ticker": market.ticker, "market_id": market.market_id,
            "price_dollars": dollars(market.last_price_e4) if market.last_price_e4 else "",
            "yes_bid_dollars": dollars(best_yes or 0),
            "yes_ask_dollars": dollars(10_000 - best_no if best_no is not None else 10_000),
            "yes_bid_size_fp": contracts(market.yes.get(best_yes, 0) if best_yes else 0),
            "yes_ask_size_fp": contracts(market.no.get(best_no, 0) if best_no else 0),
            "last_trade_size_fp": contracts(event.count_e2 if isinstance(event, TradeEvent)
                                            else 0),
            "volume_fp": contracts(market.volume_e2),
            "open_interest_fp": contracts(market.open_interest_e2),
            "dollar_volume": market.volume_e2 // 100,
            "dollar_open_interest": market.open_interest_e2 // 100,
            "ts": event.ts_ms // 1000, "ts_ms": event.ts_ms,
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
        }

    def _first_of_event(self, ticker: str) -> bool:
        market = self.model.markets[ticker]
        return self.model.events[market.event_ticker].tickers[0] == ticker

    def _event_lifecycle(self, event: LifecycleEvent) -> dict[str, Any]:
        market = self.model.markets[event.ticker]
        info = self.model.events[market.event_ticker]
        return {"type": "event_lifecycle", "msg": {
            "event_ticker": market.event_ticker, "exchange_index": 0, "title": info.title,
            "subtitle": info.sub_title, "collateral_return_type": _collateral(info),
            "series_ticker": market.series_ticker, "strike_date": info.strike_date_ms // 1000}}

    def _price(self, price_e4: int) -> str:
        """A WebSocket price at the configured precision (PROTOCOL.md §8.5: 2-, 3- and
        4-decimal prices have all appeared); shortened only where exact, so sub-penny
        levels keep their 4 places."""
        return dollars(price_e4, self.config.price_decimals)

    def _frame_for(self, sub: Subscription, event: Event) -> dict[str, Any] | None:
        if isinstance(event, BookChange) and sub.channel == "orderbook_delta":
            if not sub.wants(event.ticker):
                return None
            market = self.model.markets[event.ticker]
            price = event.price_e4
            if sub.use_yes_price and event.side == "no":
                price = 10_000 - price
            return {"type": "orderbook_delta", "msg": {
                "market_ticker": event.ticker, "market_id": market.market_id,
                "price_dollars": self._price(price), "delta_fp": contracts(event.delta_e2),
                "side": event.side, "ts": _iso_ms(event.ts_ms), "ts_ms": event.ts_ms}}
        if isinstance(event, BookCleared) and sub.channel == "orderbook_delta":
            if not sub.wants(event.ticker):
                return None
            return self._snapshot(sub, self.model.markets[event.ticker])
        if isinstance(event, TradeEvent) and sub.channel == "trade":
            if not sub.wants(event.ticker):
                return None
            return {"type": "trade", "msg": {
                "trade_id": event.trade_id, "market_ticker": event.ticker,
                "yes_price_dollars": self._price(event.yes_price_e4),
                "no_price_dollars": self._price(10_000 - event.yes_price_e4),
                "count_fp": contracts(event.count_e2), "taker_outcome_side": event.taker_side,
                "taker_book_side": "bid" if event.taker_side == "yes" else "ask",
                "taker_side": event.taker_side, "is_block_trade": event.is_block,
                "ts": event.ts_ms // 1000, "ts_ms": event.ts_ms}}
        if isinstance(event, LifecycleEvent) and sub.channel == "market_lifecycle_v2":
            return self._lifecycle_msg(event)
        return None

    def _lifecycle_msg(self, event: LifecycleEvent) -> dict[str, Any]:
        market = self.model.markets[event.ticker]
        msg: dict[str, Any] = {"market_ticker": event.ticker, "event_type": event.event_type}
        if event.event_type == "created":
            msg.update(open_ts=event.fields["open_ts"], close_ts=event.fields["close_ts"],
                       exchange_index=0, price_level_structure=market.grid_label,
                       price_ranges=market.price_ranges(),
                       additional_metadata={
                           "name": market.title, "title": market.title,
                           "yes_sub_title": market.yes_sub_title,
                           "no_sub_title": market.yes_sub_title,
                           "rules_primary": _rules(market), "rules_secondary": "",
                           "can_close_early": True, "event_ticker": market.event_ticker,
                           "expected_expiration_ts": market.close_ms // 1000,
                           **_strikes(market)})
        elif event.event_type == "determined":
            msg.update(result=event.fields["result"],
                       settlement_value=dollars(event.fields["settlement_value_e4"]),
                       determination_ts=event.fields["determination_ts"])
        elif event.event_type == "settled":
            msg.update(settled_ts=event.fields["settled_ts"])
        elif event.event_type == "close_date_updated":
            msg.update(close_ts=event.fields["close_ts"])
        elif event.event_type == "price_level_structure_updated":
            msg.update(price_level_structure=market.grid_label,
                       price_ranges=market.price_ranges())
        elif event.event_type in ("activated", "deactivated"):
            msg.update(is_deactivated=event.fields["is_deactivated"])
        elif event.event_type == "metadata_updated":
            msg.update(yes_sub_title=event.fields["yes_sub_title"])
        return {"type": "market_lifecycle_v2", "msg": msg}

    def _snapshot(self, sub: Subscription, market: Market) -> dict[str, Any]:
        msg: dict[str, Any] = {"market_ticker": market.ticker, "market_id": market.market_id}
        if market.yes:
            msg["yes_dollars_fp"] = [[self._price(p), contracts(q)]
                                     for p, q in sorted(market.yes.items())]
        if market.no:
            no_levels = sorted(
                ((10_000 - p if sub.use_yes_price else p), q) for p, q in market.no.items())
            msg["no_dollars_fp"] = [[self._price(p), contracts(q)] for p, q in no_levels]
        return {"type": "orderbook_snapshot", "msg": msg}

    def _take(self, fault: str, channel: str | None = None) -> bool:
        """Whether `fault` fires now: armed for this channel (`fault:channel`), armed for
        any, or by its probability."""
        for key in ((f"{fault}:{channel}",) if channel else ()) + (fault,):
            if self.pending.get(key, 0) > 0:
                self.pending[key] -= 1
                return True
        probability = getattr(self.config.faults, fault, 0.0)
        return probability > 0 and self.rng.random() < probability

    def _send_sequenced(self, client: Client, sub: Subscription, body: dict[str, Any],
                        reply_id: int | None = None) -> None:
        sub.seq += 1
        frame = {**({"id": reply_id} if reply_id else {}), "type": body["type"],
                 "sid": sub.sid, "seq": sub.seq, "msg": body["msg"]}
        if self._stamps_sending(body["type"]):
            frame["sending_ts_ms"] = _now_ms()
        if not self.pending and client.held is None \
                and not self.config.faults.any_message_fault():
            self._enqueue(client, orjson.dumps(frame))  # the common path: no dice to roll
            return
        if self._take("drop", sub.channel):
            self.journal.fault(_now_ms(), "drop", client=client.id, sid=sub.sid, seq=sub.seq,
                               type=body["type"], ticker=body["msg"].get("market_ticker"))
            return
        data = orjson.dumps(frame)
        if self._take("malformed"):
            self.journal.fault(_now_ms(), "malformed", client=client.id, sid=sub.sid)
            self._enqueue(client, data[: len(data) // 2])
        if self._take("unknown_key"):
            self.journal.fault(_now_ms(), "unknown_key", client=client.id, sid=sub.sid)
            data = orjson.dumps({**frame, "msg": {**frame["msg"], "sim_new_field": "ignore me"},
                                 "sim_envelope_field": 1})
        if self._take("unknown_type"):
            self.journal.fault(_now_ms(), "unknown_type", client=client.id, sid=sub.sid)
            self._enqueue(client, orjson.dumps({"type": "sim_mystery", "sid": sub.sid,
                                                "msg": {"note": "unknown type"}}))
        if self._take("reorder") and client.held is None:
            self.journal.fault(_now_ms(), "reorder", client=client.id, sid=sub.sid, seq=sub.seq)
            client.held = data
            return
        self._enqueue(client, data)
        if client.held is not None:
            held, client.held = client.held, None
            self._enqueue(client, held)
        if self._take("duplicate"):
            self.journal.fault(_now_ms(), "duplicate", client=client.id, sid=sub.sid, seq=sub.seq)
            self._enqueue(client, data)

    def _stamps_sending(self, message_type: str) -> bool:
        """Whether a server message of this type carries `sending_ts_ms` here."""
        mode = self.config.sending_ts
        return mode == "all" or (mode == "no_snapshots" and message_type != "orderbook_snapshot")

    def _send(self, client: Client, body: dict[str, Any]) -> None:
        if self.config.sending_ts == "none":
            self._enqueue(client, orjson.dumps(body))
        else:
            self._enqueue(client, orjson.dumps({**body, "sending_ts_ms": _now_ms()}))

    def _enqueue(self, client: Client, data: bytes) -> None:
        if client.backlog() >= client.limit:
            # Slow consumer: Kalshi's error 25 drops every subscription of the reader.
            for sub in list(client.subs.values()):
                client.subs.pop(sub.sid, None)
                self.journal.fault(_now_ms(), "slow_consumer", client=client.id, sid=sub.sid)
                client.put(orjson.dumps({"type": "error", "sid": sub.sid, "msg": {
                    "code": 25, "msg": "Subscription buffer overflow"}}))
            return
        client.put(data)

    def _disconnect(self, client: Client, why: str) -> None:
        self.journal.fault(_now_ms(), "disconnect", client=client.id, why=why,
                           sids=sorted(client.subs))
        client.subs.clear()
        client.put(None)

    async def _disconnect_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.faults.disconnect_every_secs)
            for client in list(self.clients.values()):
                self._disconnect(client, "periodic")

    # -- WebSocket ---------------------------------------------------------------------

    async def _handle_ws(self, ws: ServerConnection) -> None:
        client = Client(ws, self.config.send_queue_limit, self.config.delivery_lag_ms / 1000,
                        self.config.lag_growth_ms_per_s / 1000)
        self.clients[client.id] = client
        extensions = [e.name for e in ws.protocol.extensions]
        self.extensions_seen.append(extensions)
        log.info("sim.client_connected", client=client.id, extensions=extensions)
        writer = asyncio.create_task(self._writer(client), name=f"sim-writer-{client.id}")
        pinger = asyncio.create_task(self._pinger(client), name=f"sim-ping-{client.id}")
        tasks = [pinger, writer]
        if client.lagged:
            tasks.append(asyncio.create_task(client.release_delayed(),
                                             name=f"sim-lag-{client.id}"))
        try:
            async for raw in ws:
                self._command(client, raw)
        except ConnectionClosed:
            pass
        finally:
            self.clients.pop(client.id, None)
            await cancel_and_wait(tasks)
            log.info("sim.client_disconnected", client=client.id)

    async def _writer(self, client: Client) -> None:
        """Send queued frames in order. Everything queued is framed at once and written
        with one transport write (one syscall instead of one per message); flow control
        and closing are websockets' own (`send_context`)."""
        ws = client.ws
        while True:
            batch = [await client.queue.get()]
            while not client.queue.empty() and len(batch) < WRITE_BATCH and batch[-1] is not None:
                batch.append(client.queue.get_nowait())
            closing = batch[-1] is None
            frames = [data for data in batch if data is not None]
            try:
                if frames:
                    async with ws.send_context():
                        for data in frames:
                            ws.protocol.send_text(data)
                        ws.transport.write(b"".join(ws.protocol.data_to_send()))
                if closing:
                    await ws.close(1011, "simulated disconnect")
                    return
            except ConnectionClosed:
                return
            self.messages_sent += len(frames)

    async def _pinger(self, client: Client) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_SECS)
            if client.silenced:
                continue
            with contextlib.suppress(ConnectionClosed):
                await client.ws.ping(b"heartbeat")

    def _error(self, client: Client, cmd_id: int | None, code: int, text: str,
               sub: Subscription | None = None) -> None:
        body: dict[str, Any] = {"type": "error", "msg": {"code": code, "msg": text}}
        if cmd_id:
            body["id"] = cmd_id
        if sub is not None:
            body["sid"] = sub.sid
        self._send(client, body)

    def _command(self, client: Client, raw: str | bytes) -> None:
        try:
            command = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._error(client, None, 1, "Unable to process message")
            return
        if not isinstance(command, dict):
            self._error(client, None, 1, "Unable to process message")
            return
        cmd_id = command.get("id") if isinstance(command.get("id"), int) else None
        name = command.get("cmd")
        params = command.get("params")
        if name == "list_subscriptions":
            self._send(client, {**({"id": cmd_id} if cmd_id else {}), "type": "ok", "msg": [
                {"channel": s.channel, "sid": s.sid} for s in client.subs.values()]})
            return
        if name not in ("subscribe", "unsubscribe", "update_subscription"):
            self._error(client, cmd_id, 5, "Unknown command")
            return
        if self._take("too_many_requests"):  # error 27: refused, to be retried later
            self.journal.fault(_now_ms(), "too_many_requests", client=client.id, cmd=name,
                               id=cmd_id)
            self._error(client, cmd_id, 27, "Too many requests")
            return
        if not isinstance(params, dict):
            self._error(client, cmd_id, 2, "Params required")
            return
        if name == "subscribe":
            self._subscribe(client, cmd_id, params)
        elif name == "unsubscribe":
            self._unsubscribe(client, cmd_id, params)
        else:
            self._update(client, cmd_id, params)

    @staticmethod
    def _tickers(params: dict[str, Any]) -> list[str] | None:
        if isinstance(params.get("market_tickers"), list):
            return [str(t) for t in params["market_tickers"]]
        if isinstance(params.get("market_ticker"), str):
            return [params["market_ticker"]]
        return None

    def _subscribe(self, client: Client, cmd_id: int | None, params: dict[str, Any]) -> None:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            self._error(client, cmd_id, 3, "Channels required")
            return
        for channel in channels:
            if channel not in CHANNELS:
                self._error(client, cmd_id, 8, "Unknown channel name")
                return
        tickers = self._tickers(params)
        if "orderbook_delta" in channels and not tickers:
            self._error(client, cmd_id, 14, "Market Ticker required")
            return
        if tickers is not None and "orderbook_delta" in channels:
            tickers = self._leave_out(client, tickers)
            held = next((s for s in client.subs.values() if s.channel == "orderbook_delta"),
                        None)
            if self._over_cap(held.tickers if held else set(), tickers):
                self._error(client, cmd_id, 26, "Subscription market limit exceeded", held)
                return
        for channel in channels:
            existing = next((s for s in client.subs.values() if s.channel == channel), None)
            if existing is not None:  # merged: add new tickers to it
                new = [t for t in (tickers or []) if existing.tickers is not None
                       and t not in existing.tickers]
                if existing.tickers is not None:
                    existing.tickers.update(new)
                if self.config.merge_subscribe:
                    existing.seq += 1
                    self._send(client, {**({"id": cmd_id} if cmd_id else {}), "type": "ok",
                                        "sid": existing.sid, "seq": existing.seq, "msg": {
                                            "market_tickers": sorted(existing.tickers or ())}})
                else:
                    self._send(client, {**({"id": cmd_id} if cmd_id else {}),
                                        "type": "subscribed",
                                        "msg": {"channel": channel, "sid": existing.sid}})
                if channel == "orderbook_delta":
                    self._snapshots(client, existing, new, None)
                elif channel == "ticker" and params.get("send_initial_snapshot"):
                    self._initial_tickers(client, existing, new)
                continue
            sub = Subscription(
                self._new_sid(client), channel,
                set(tickers) if tickers is not None and channel != "market_lifecycle_v2" else None,
                use_yes_price=bool(params.get("use_yes_price", False)),
                skip_ticker_ack=bool(params.get("skip_ticker_ack", False)))
            client.subs[sub.sid] = sub
            reply: dict[str, Any] = {"channel": channel, "sid": sub.sid}
            if sub.tickers is not None and channel == "orderbook_delta":
                reply["market_tickers"] = sorted(sub.tickers)  # what is held (§5.11)
            self._send(client, {**({"id": cmd_id} if cmd_id else {}), "type": "subscribed",
                                "msg": reply})
            if channel == "orderbook_delta":
                self._snapshots(client, sub, sorted(sub.tickers or ()), None)
            elif channel == "ticker" and params.get("send_initial_snapshot"):
                self._initial_tickers(client, sub, sorted(sub.tickers or self.model.markets))

    def _over_cap(self, held: set[str], adding: list[str]) -> bool:
        cap = self.config.max_markets_per_sub
        return cap is not None and len(held | set(adding)) > cap

    def _leave_out(self, client: Client, tickers: list[str]) -> list[str]:
        """`leave_out` fault (§5.11 "tickers left out"): the last ticker asked for is not
        held by the venue at this moment — not added, no snapshot, missing from the
        reply's list."""
        if len(tickers) > 0 and self._take("leave_out"):
            left = sorted(tickers)[-1]
            self.journal.fault(_now_ms(), "leave_out", client=client.id, ticker=left)
            return [t for t in tickers if t != left]
        return tickers

    def _new_sid(self, client: Client) -> int:
        """The sid of a new subscription: the next number, or with `reuse_sids` the
        lowest one not held (an ended subscription's number comes back)."""
        if self.config.reuse_sids:
            return next(n for n in itertools.count(1) if n not in client.subs)
        client.next_sid += 1
        return client.next_sid - 1

    def _initial_tickers(self, client: Client, sub: Subscription, tickers: list[str]) -> None:
        """`send_initial_snapshot` on the ticker channel: the current ticker of each
        market at once (unsequenced, like every ticker message)."""
        now_ms = _now_ms()
        for ticker in tickers:
            market = self.model.markets.get(ticker)
            if market is not None:
                probe = TradeEvent(now_ms, ticker, "", market.last_price_e4 or 0, 0, "yes")
                self._send(client, {"type": "ticker", "sid": sub.sid,
                                    "msg": self._ticker_msg(probe)})

    def _snapshots(self, client: Client, sub: Subscription, tickers: list[str],
                   reply_id: int | None) -> None:
        for ticker in tickers:
            market = self.model.markets.get(ticker)
            if market is not None:
                self._send_sequenced(client, sub, self._snapshot(sub, market), reply_id)

    def _unsubscribe(self, client: Client, cmd_id: int | None, params: dict[str, Any]) -> None:
        sids = params.get("sids")
        if not isinstance(sids, list) or not sids:
            self._error(client, cmd_id, 4, "Subscription IDs required")
            return
        for sid in sids:
            sub = client.subs.pop(sid, None) if isinstance(sid, int) else None
            if sub is None:
                self._error(client, cmd_id, 7, "Unknown subscription ID")
                continue
            sub.seq += 1
            body: dict[str, Any] = {"type": "unsubscribed", "sid": sub.sid}
            if self.config.ok_takes_seq:
                body["seq"] = sub.seq
            if cmd_id:
                body["id"] = cmd_id
            self._send(client, body)

    def _update(self, client: Client, cmd_id: int | None, params: dict[str, Any]) -> None:
        sids = params.get("sids") if "sids" in params else (
            [params["sid"]] if "sid" in params else None)
        if not isinstance(sids, list) or len(sids) != 1:
            self._error(client, cmd_id, 12, "Exactly one subscription ID is required")
            return
        action = params.get("action")
        if not action:
            self._error(client, cmd_id, 15, "Action required")
            return
        sub = client.subs.get(sids[0]) if isinstance(sids[0], int) else None
        if sub is None:
            self._error(client, cmd_id, 7, "Unknown subscription ID")
            return
        tickers = self._tickers(params) or []
        if action == "add_markets" and sub.channel == "orderbook_delta":
            tickers = self._leave_out(client, tickers)
            if self._over_cap(sub.tickers or set(), tickers):
                self._error(client, cmd_id, 26, "Subscription market limit exceeded", sub)
                return
        if action == "get_snapshot":
            if sub.channel != "orderbook_delta":
                self._error(client, cmd_id, 13, "Unsupported action", sub)
                return
            self._snapshots(client, sub, tickers, cmd_id)
            return
        if action not in ("add_markets", "delete_markets") or sub.tickers is None:
            self._error(client, cmd_id, 13, "Unsupported action", sub)
            return
        added = [t for t in tickers if t not in sub.tickers]
        if action == "add_markets":
            sub.tickers.update(tickers)
        else:
            sub.tickers.difference_update(tickers)
        sub.seq += 1
        reply: dict[str, Any] = {"type": "ok", "sid": sub.sid, "msg": (
            {} if sub.skip_ticker_ack else {"market_tickers": sorted(sub.tickers)})}
        if self.config.ok_takes_seq:
            reply["seq"] = sub.seq
        else:
            sub.seq -= 1
        if cmd_id:
            reply["id"] = cmd_id
        self._send(client, reply)
        if action == "add_markets" and sub.channel == "orderbook_delta":
            self._snapshots(client, sub, added, None)

    # -- HTTP (REST + control + auth) --------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        headers = {k: v for k, v in request.headers.raw_items()}
        if url.path == WS_PATH:
            if self.verifier is not None:
                reason = self.verifier.check(headers, "GET", url.path)
                if reason is not None:
                    log.warning("sim.auth_rejected", path=url.path, reason=reason)
                    return _json(401, {"code": "unauthorized", "message": reason})
            return None
        # `tickers` may repeat (?tickers=A&tickers=B) or be a comma list; both are accepted.
        query = {k: ",".join(v) if k == "tickers" else v[-1]
                 for k, v in parse_qs(url.query).items()}
        if url.path == "/_sim/control":
            return self._control(query)
        if not url.path.startswith(REST_PREFIX):
            return _json(404, {"code": "not_found", "message": "no such path"})
        if self.verifier is not None and "KALSHI-ACCESS-SIGNATURE" in request.headers:
            reason = self.verifier.check(headers, "GET", url.path)
            if reason is not None:
                return _json(401, {"code": "unauthorized", "message": reason})
        if self._take("rest_429"):
            self.journal.fault(_now_ms(), "rest_429", path=url.path)
            return _json(429, {"error": "too many requests"})
        if self._take("rest_500"):
            self.journal.fault(_now_ms(), "rest_500", path=url.path)
            return _json(500, {"code": "internal_server_error", "message": "simulated"})
        try:
            return self._rest(url.path[len(REST_PREFIX):], query)
        except _RestError as err:
            return _json(err.status, {"code": err.code, "message": err.message})

    def _control(self, query: dict[str, str]) -> Response:
        action = query.get("action", "")
        try:
            n = int(query.get("n", "1"))
            if action == "status":
                return _json(200, {"port": self.port, "clients": len(self.clients),
                                   "messages_sent": self.messages_sent,
                                   "pending": self.pending})
            if action in ("close", "determine", "settle"):
                return _json(200, {"ok": True, "events": self.drive(action,
                                                                    query.get("ticker", ""))})
            self.inject(action, n, query.get("channel"))
        except ValueError as exc:
            return _json(400, {"ok": False, "error": str(exc)})
        return _json(200, {"ok": True, "action": action, "n": n})

    def _rest(self, path: str, query: dict[str, str]) -> Response:
        parts = [p for p in path.split("/") if p]
        markets = self.model.markets
        if parts == ["exchange", "status"]:
            return _json(200, {"exchange_active": True,
                               "trading_active": time.monotonic() >= self.paused_until})
        if parts[-1:] == ["candlesticks"]:  # before /markets/{ticker}: "candlesticks" is no ticker
            return self._candlesticks(parts, query)
        if parts == ["markets"]:
            return self._list_markets(query)
        if parts == ["markets", "trades"]:
            return self._list_trades(query)
        if parts == ["markets", "orderbooks"]:
            tickers = [t for t in query.get("tickers", "").split(",") if t]
            if not 1 <= len(tickers) <= 100:
                raise _RestError(400, "bad_request", "tickers: 1 to 100 required")
            books = []
            for ticker in tickers:
                market = markets.get(ticker)
                if market is None:
                    raise _RestError(404, "not_found", f"market {ticker} not found")
                yes, no = self._rest_book(market)
                books.append({"ticker": ticker, "orderbook_fp": {
                    "yes_dollars": [[dollars(p), contracts(q)] for p, q in sorted(yes.items())],
                    "no_dollars": [[dollars(p), contracts(q)] for p, q in sorted(no.items())]}})
            return _json(200, {"orderbooks": books})
        if len(parts) == 2 and parts[0] == "markets":
            market = markets.get(parts[1])
            if market is None:
                raise _RestError(404, "not_found", f"market {parts[1]} not found")
            return _json(200, {"market": _market_json(market)})
        if len(parts) == 3 and parts[0] == "markets" and parts[2] == "orderbook":
            market = markets.get(parts[1])
            if market is None:
                raise _RestError(404, "not_found", f"market {parts[1]} not found")
            depth = _int(query, "depth", 0, 0, 100)
            yes_book, no_book = self._rest_book(market)
            yes = sorted(yes_book.items())
            no = sorted(no_book.items())
            if depth:
                yes, no = yes[-depth:], no[-depth:]
            return _json(200, {"orderbook_fp": {
                "yes_dollars": [[dollars(p), contracts(q)] for p, q in yes],
                "no_dollars": [[dollars(p), contracts(q)] for p, q in no]}})
        if parts == ["events"]:
            return self._list_events(query)
        if len(parts) == 2 and parts[0] == "events":
            event = self.model.events.get(parts[1])
            if event is None:
                raise _RestError(404, "not_found", f"event {parts[1]} not found")
            nested = [_market_json(markets[t]) for t in event.tickers]
            body = _event_json(event, nested if _flag(query, "with_nested_markets") else None)
            return _json(200, {"event": body, "markets": nested})
        if parts == ["series"]:
            items = sorted(self.model.series.values(), key=lambda s: s.ticker)
            if "category" in query:
                items = [s for s in items if s.category == query["category"]]
            return _json(200, {"series": [_series_json(s) for s in items]})
        if len(parts) == 2 and parts[0] == "series":
            series = self.model.series.get(parts[1])
            if series is None:
                raise _RestError(404, "not_found", f"series {parts[1]} not found")
            return _json(200, {"series": _series_json(series)})
        if parts == ["exchange", "schedule"]:
            day = [{"open_time": "00:00", "close_time": "23:59"}]
            return _json(200, {"schedule": {"standard_hours": [{
                "start_time": _rfc3339(self.model.start_ms), "end_time": "",
                **{name: day for name in ("monday", "tuesday", "wednesday", "thursday",
                                           "friday", "saturday", "sunday")}}],
                "maintenance_windows": []}})
        if parts == ["historical", "markets"]:  # nothing is older than the cutoff
            return _json(200, {"markets": [], "cursor": ""})
        if parts == ["historical", "trades"]:
            return _json(200, {"trades": [], "cursor": ""})
        if len(parts) == 3 and parts[:2] == ["historical", "markets"]:
            raise _RestError(404, "not_found", f"market {parts[2]} not found in historical data")
        if parts == ["historical", "cutoff"]:
            # Nothing of a simulator's short life is old enough to be "historical"; the
            # cutoff sits at its start, so every market is on the live side.
            cutoff = _rfc3339(self.model.start_ms)
            return _json(200, {"market_settled_ts": cutoff, "trades_created_ts": cutoff,
                               "orders_updated_ts": cutoff,
                               "market_positions_last_updated_ts": cutoff})
        raise _RestError(404, "not_found", "no such endpoint")

    def _rest_book(self, market: Market) -> tuple[dict[int, int], dict[int, int]]:
        """The book a REST read serves: the true one now, or (faults `stale_book`,
        `wrong_book`) the true one of `stale_book_ms` earlier, or one no true book equals
        (the best YES level, else the best NO level, else a new YES level at $0.01, holds
        WRONG_BOOK_EXTRA_E2 more). Each fault is journaled with the book served."""
        now = _now_ms()
        if self._take("wrong_book"):
            yes, no = dict(market.yes), dict(market.no)
            side, ladder = ("yes", yes) if yes or not no else ("no", no)
            price = max(ladder) if ladder else 100
            ladder[price] = ladder.get(price, 0) + WRONG_BOOK_EXTRA_E2
            self.journal.fault(now, "wrong_book", ticker=market.ticker, side=side,
                               price_e4=price, qty_e2=ladder[price])
            return yes, no
        if self._take("stale_book"):
            as_of = now - int(self.config.faults.stale_book_ms)
            yes, no = self.journal.book_at(market.ticker, as_of)
            self.journal.fault(now, "stale_book", ticker=market.ticker, as_of=as_of)
            return yes, no
        return market.yes, market.no

    def _candle_args(self, query: dict[str, str]) -> tuple[int, int, int, bool]:
        for required in ("start_ts", "end_ts", "period_interval"):
            if required not in query:
                raise _RestError(400, "bad_request", f"{required} is required")
        start = _int(query, "start_ts", 0, 0, 2**40)
        end = _int(query, "end_ts", 0, 0, 2**40)
        period = _int(query, "period_interval", 1, 1, 1440)
        latest = query.get("include_latest_before_start", "false").lower() == "true"
        return start, end, period, latest

    def _candlesticks(self, parts: list[str], query: dict[str, str]) -> Response:
        start, end, period, latest = self._candle_args(query)

        def compute(ticker: str, historical: bool = False) -> list[dict[str, Any]]:
            if ticker not in self.model.markets:
                raise _RestError(404, "not_found", f"market {ticker} not found")
            try:
                return candlesticks(self.journal, ticker, start, end, period,
                                    include_latest_before_start=latest, historical=historical)
            except CandleRangeError as exc:
                raise _RestError(400, "bad_request", str(exc)) from None

        if len(parts) == 5 and parts[0] == "series" and parts[2] == "markets":
            market = self.model.markets.get(parts[3])
            if market is None or market.series_ticker != parts[1]:
                raise _RestError(404, "not_found", f"market {parts[3]} not found in {parts[1]}")
            return _json(200, {"ticker": parts[3], "candlesticks": compute(parts[3])})
        if parts == ["markets", "candlesticks"]:
            tickers = [t for t in query.get("market_tickers", "").split(",") if t]
            if not 1 <= len(tickers) <= 100:
                raise _RestError(400, "bad_request", "market_tickers: 1 to 100 required")
            out = [{"market_ticker": t, "candlesticks": compute(t)} for t in tickers]
            if sum(len(m["candlesticks"]) for m in out) > MAX_CANDLES:
                raise _RestError(400, "bad_request", f"more than {MAX_CANDLES} candles in total")
            return _json(200, {"markets": out})
        if len(parts) == 4 and parts[:2] == ["historical", "markets"]:
            return _json(200, {"ticker": parts[2], "candlesticks": compute(parts[2], True)})
        raise _RestError(404, "not_found", "no such endpoint")

    def _list_markets(self, query: dict[str, str]) -> Response:
        items = sorted(self.model.markets.values(), key=lambda m: m.ticker)
        status = query.get("status")
        if status is not None:
            if status not in STATUS_FILTER:
                raise _RestError(400, "bad_request", f"unknown status {status!r}")
            items = [m for m in items if m.status in STATUS_FILTER[status]]
        _check_ts_filters(query, status)
        for name, attr in (("min_created_ts", "created_ms"), ("max_created_ts", "created_ms"),
                           ("min_close_ts", "close_ms"), ("max_close_ts", "close_ms"),
                           ("min_settled_ts", "settled_ms"), ("max_settled_ts", "settled_ms")):
            if name in query:
                bound_ms = _int(query, name, 0, 0, 2**40) * 1000
                keep_min = name.startswith("min_")
                items = [m for m in items if getattr(m, attr) is not None and (
                    getattr(m, attr) >= bound_ms if keep_min else getattr(m, attr) <= bound_ms)]
        for key in ("event_ticker", "series_ticker"):
            if key in query:
                items = [m for m in items if getattr(m, key) == query[key]]
        if "tickers" in query:
            wanted = set(query["tickers"].split(","))
            items = [m for m in items if m.ticker in wanted]
        page, cursor = _page(items, query, 100, 1000)
        return _json(200, {"markets": [_market_json(m) for m in page], "cursor": cursor})

    def _list_events(self, query: dict[str, str]) -> Response:
        """`GET /events` (PROTOCOL.md §6.2): `series_ticker`, `tickers` (comma list),
        `status` in the event-filter vocabulary, `with_nested_markets` (each event carries
        its markets), `limit` ≤ 200 and a cursor."""
        items = sorted(self.model.events.values(), key=lambda e: e.event_ticker)
        if "series_ticker" in query:
            items = [e for e in items if e.series.ticker == query["series_ticker"]]
        if "tickers" in query:
            wanted = set(query["tickers"].split(","))
            items = [e for e in items if e.event_ticker in wanted]
        status = query.get("status")
        if status is not None:
            if status not in EVENT_STATUS_FILTER:
                raise _RestError(400, "bad_request", f"unknown status {status!r}")
            items = [e for e in items if self.model.markets[e.tickers[0]].status
                     in EVENT_STATUS_FILTER[status]]
        page, cursor = _page(items, query, 200, 200)
        nest = _flag(query, "with_nested_markets")
        return _json(200, {"events": [_event_json(e, [
            _market_json(self.model.markets[t]) for t in e.tickers] if nest else None)
            for e in page], "cursor": cursor})

    def _list_trades(self, query: dict[str, str]) -> Response:
        trades = self.journal.trades(query.get("ticker"))[::-1]  # newest first
        page, cursor = _page(trades, query, 100, 1000)
        return _json(200, {"cursor": cursor, "trades": [{
            "trade_id": t["id"], "ticker": t["m"], "count_fp": contracts(t["c"]),
            "yes_price_dollars": dollars(t["p"]), "no_price_dollars": dollars(10_000 - t["p"]),
            "taker_outcome_side": t["side"], "taker_book_side": "bid" if t["side"] == "yes"
            else "ask", "taker_side": t["side"], "is_block_trade": False,
            "created_time": _rfc3339(t["t"])} for t in page]})


def _moves_ticker(market: Market, event: Event) -> bool:
    """Whether an event changes a field of the market's ticker message: a trade, or a
    book change at or above the side's best bid after it (the best level's size, a new
    best, or the old best removed)."""
    if isinstance(event, TradeEvent):
        return True
    if isinstance(event, BookChange):
        return event.price_e4 >= (market.best(event.side) or 0)
    return False


@functools.lru_cache(maxsize=64)
def _iso_ms(ts_ms: int) -> str:
    """RFC 3339 with microseconds, as Kalshi stamps deltas (events of a tick share it)."""
    stamp = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _RestError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# PROTOCOL.md §6.2: timestamp filter families are mutually exclusive and combine only
# with some statuses.
_TS_FAMILIES = {"created": {None, "unopened", "open"}, "close": {None, "closed"},
                "settled": {None, "settled"}}


def _check_ts_filters(query: dict[str, str], status: str | None) -> None:
    used = [family for family in _TS_FAMILIES
            if f"min_{family}_ts" in query or f"max_{family}_ts" in query]
    if len(used) > 1:
        raise _RestError(400, "bad_request",
                         f"timestamp filters {', '.join(used)} cannot be combined")
    if used and status not in _TS_FAMILIES[used[0]]:
        raise _RestError(400, "bad_request",
                         f"{used[0]} timestamp filters cannot be combined with status={status}")


def _int(query: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    if key not in query:
        return default
    try:
        value = int(query[key])
    except ValueError:
        raise _RestError(400, "bad_request", f"{key} must be an integer") from None
    if not low <= value <= high:
        raise _RestError(400, "bad_request", f"{key} must be in [{low}, {high}]")
    return value


def _page(items: list[Any], query: dict[str, str], default: int, maximum: int
          ) -> tuple[list[Any], str]:
    limit = _int(query, "limit", default, 1, maximum)
    start = 0
    if query.get("cursor"):
        try:
            start = int(base64.urlsafe_b64decode(query["cursor"].encode()).decode())
        except ValueError:
            raise _RestError(400, "bad_request", "bad cursor") from None
    page = items[start:start + limit]
    end = start + len(page)
    cursor = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(items) else ""
    return page, cursor


def _rfc3339(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _market_json(m: Market) -> dict[str, Any]:
    status = {"finalized": "finalized"}.get(m.status, m.status)
    best_yes, best_no = m.best("yes"), m.best("no")
    body: dict[str, Any] = {
        "ticker": m.ticker, "event_ticker": m.event_ticker, "market_type": "binary",
        "title": m.title, "subtitle": "", "yes_sub_title": m.yes_sub_title,
        "no_sub_title": m.yes_sub_title,
        "created_time": _rfc3339(m.created_ms), "updated_time": _rfc3339(m.created_ms),
        "open_time": _rfc3339(m.open_ms), "close_time": _rfc3339(m.close_ms),
        "latest_expiration_time": _rfc3339(m.close_ms), "settlement_timer_seconds": 60,
        "status": status, "notional_value_dollars": "1.0000",
        "yes_bid_dollars": dollars(best_yes or 0),
        "yes_ask_dollars": dollars(10_000 - best_no if best_no is not None else 10_000),
        "no_bid_dollars": dollars(best_no or 0),
        "no_ask_dollars": dollars(10_000 - best_yes if best_yes is not None else 10_000),
        "yes_bid_size_fp": contracts(m.yes.get(best_yes, 0) if best_yes else 0),
        "yes_ask_size_fp": contracts(m.no.get(best_no, 0) if best_no else 0),
        "last_price_dollars": dollars(m.last_price_e4 or 0),
        "volume_fp": contracts(m.volume_e2), "volume_24h_fp": contracts(m.volume_e2),
        "open_interest_fp": contracts(m.open_interest_e2), "result": m.result,
        "can_close_early": True,
        "expiration_value": "", "rules_primary": _rules(m), "rules_secondary": "",
        "price_level_structure": m.grid_label, "price_ranges": m.price_ranges(),
        **_strikes(m),
    }
    if m.settlement_value_e4 is not None:
        body["settlement_value_dollars"] = dollars(m.settlement_value_e4)
    if m.settled_ms is not None:  # PROTOCOL.md §6.3: present after settlement
        body["settlement_ts"] = _rfc3339(m.settled_ms)
    return body


def _strikes(m: Market) -> dict[str, Any]:
    """A market's strike fields (PROTOCOL.md §6.3): `strike_type` and whichever of
    `floor_strike`/`cap_strike` it has, as JSON numbers as Kalshi sends them (the exact
    Decimal is only ever a few places long, so the float prints it back exactly)."""
    out: dict[str, Any] = {}
    if m.strike_type:
        out["strike_type"] = m.strike_type
    if m.floor_strike is not None:
        out["floor_strike"] = float(m.floor_strike)
    if m.cap_strike is not None:
        out["cap_strike"] = float(m.cap_strike)
    return out


def _rules(m: Market) -> str:
    return f"Simulated. Resolves YES if the outcome is: {m.yes_sub_title}."


def _collateral(event: SimEvent) -> str:
    """Kalshi nets collateral across a mutually exclusive event's markets (`MECNET`)
    and across a directional ladder's (`DIRECNET`)."""
    return "MECNET" if event.mutually_exclusive else "DIRECNET"


def _event_json(event: SimEvent, markets: list[dict[str, Any]] | None) -> dict[str, Any]:
    """An Event object (PROTOCOL.md §6.4); `markets` only when asked to nest them."""
    body: dict[str, Any] = {
        "event_ticker": event.event_ticker, "series_ticker": event.series.ticker,
        "title": event.title, "sub_title": event.sub_title,
        "collateral_return_type": _collateral(event),
        "mutually_exclusive": event.mutually_exclusive,
        "settlement_sources": [{"name": "ktape simulator", "url": "https://example.invalid/"}],
        "strike_date": _rfc3339(event.strike_date_ms), "category": event.series.category,
        "available_on_brokers": False,
    }
    if markets is not None:
        body["markets"] = markets
    return body


def _series_json(series: SeriesSpec) -> dict[str, Any]:
    """A Series object with every field PROTOCOL.md §6.4 requires, Kalshi's usual fee
    schedule included (quadratic, multiplier 0.07)."""
    return {"ticker": series.ticker, "frequency": series.frequency, "title": series.title,
            "category": series.category, "categories": [series.category], "tags": [],
            "settlement_sources": [{"name": "ktape simulator",
                                    "url": "https://example.invalid/"}],
            "contract_url": "", "contract_terms_url": "", "fee_type": "quadratic",
            "fee_multiplier": 0.07, "additional_prohibitions": []}


def _flag(query: dict[str, str], key: str) -> bool:
    return query.get(key, "false").lower() == "true"


def _json(status: int, body: Any) -> Response:
    data = orjson.dumps(body)
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                       ("Connection", "close")])
    return Response(status, http.HTTPStatus(status).phrase, headers, data)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
