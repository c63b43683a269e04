"""AsyncClient: every call of ktape's API, with retries, deadlines and paging built in.

Idempotent reads are retried on UNAVAILABLE, DEADLINE_EXCEEDED and RATE_LIMITED with a
capped, jittered exponential backoff that waits at least the server's RetryInfo. Every
call has a deadline. The key comes from the argument or KTAPE_API_KEY and is never
printed (repr shows its prefix only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from ktape_client._gen.ktape.billing.v1 import billing_pb2, billing_pb2_grpc
from ktape_client._gen.ktape.marketdata.v1 import (
    data_status_pb2,
    data_status_pb2_grpc,
    marketdata_pb2,
    marketdata_pb2_grpc,
)
from ktape_client.book import Book, Continuity, Level, book_from
from ktape_client.datasets import AsyncDatasets
from ktape_client.errors import (
    CODES_BY_NAME,
    KtapeError,
    RateLimitedError,
    UnavailableError,
    backoff_seconds,
    error_for,
    from_rpc_error,
)
from ktape_client.pages import (
    CANDLE_COLUMNS,
    DELTA_COLUMNS,
    EVENT_COLUMNS,
    KEY_COLUMNS,
    MARKET_COLUMNS,
    SERIES_COLUMNS,
    SETTLEMENT_COLUMNS,
    TRADE_COLUMNS,
    USAGE_COLUMNS,
    AsyncPages,
    at_micros,
    dec,
    enum_column,
    enum_names,
    fixed_decimals,
    when,
)

T = TypeVar("T")
RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
STREAM_BATCH = 1000  # changes per stream message at most; the server never waits to fill one
Time = dt.datetime | str | None


def timestamp(value: Time) -> timestamp_pb2.Timestamp | None:
    """A datetime (naive = UTC) or an RFC 3339 string as a protobuf Timestamp."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


@dataclass(frozen=True)
class CreatedKey:
    """A key just created: its listing and, this once, the whole key (`secret`, the
    `kt_<env>_<id>_<secret>` to send as the bearer token; kept out of the repr)."""

    key_id: str
    prefix: str
    name: str
    env: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Gap:
    """A recorded gap: the book is not proven between `start_time` and `end_time` (None
    while the gap is still open, i.e. until the healing snapshot)."""

    start_time: dt.datetime | None
    end_time: dt.datetime | None
    reason: str  # seq_jump, reconnect, snapshot_mismatch, ingest_restart, ...
    expected_seq: int
    got_seq: int


@dataclass(frozen=True)
class Change:
    """One stored change: a delta, a snapshot level (kind `snapshot`: the book is replaced
    by the levels sharing its ts, sid and seq) or a gap marker (kind `gap`, with `gap`)."""

    ts: dt.datetime | None
    seq: int
    sid: int
    kind: str
    side: str
    price: Decimal | None
    delta: Decimal | None
    quantity: Decimal | None
    gap: Gap | None = None
    # Why the level changed (deltas pages): "new", "cancel" or "trade", inferred from the
    # recorded trades; "unspecified" for snapshot levels, gap markers and stream changes.
    cause: str = "unspecified"

    @property
    def key(self) -> tuple[Any, ...]:
        """The change's place in ListOrderbookDeltas' order (ts, sid, seq, side, price):
        unique per stored change, so it identifies one across reconnects."""
        return (self.ts, self.sid, self.seq, self.side, self.price)


class AsyncClient:
    """ktape's API over gRPC (through Envoy, `target` host:port). Every method is a
    coroutine, an async iterator (streams) or a lazy AsyncPages (listings); `datasets`
    holds the dataset-file calls. Use it as `async with AsyncClient() as client:`."""

    def __init__(self, api_key: str | None = None, target: str = "localhost:8080", *,
                 timeout: float = 30.0, retries: int = 4, max_backoff: float = 8.0,
                 secure: bool = False) -> None:
        self._key = api_key or os.environ.get("KTAPE_API_KEY", "")
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.max_backoff = max_backoff
        options = [("grpc.max_receive_message_length", 64 << 20)]
        self._channel = (grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options)
                         if secure else grpc.aio.insecure_channel(target, options))
        self._md = marketdata_pb2_grpc.MarketDataServiceStub(self._channel)
        self._status = data_status_pb2_grpc.DataStatusServiceStub(self._channel)
        self._billing = billing_pb2_grpc.BillingServiceStub(self._channel)
        self.datasets = AsyncDatasets(self._call, self._channel, retries=retries,
                                      max_backoff=max_backoff, timeout=timeout)

    def __repr__(self) -> str:
        shown = f"{self._key[:12]}…" if self._key else "none"
        return f"AsyncClient(target={self.target!r}, key={shown})"

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled); `async with` does it."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- calls -------------------------------------------------------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._key}"),) if self._key else ()

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any, *,
                    idempotent: bool = True) -> T:
        """One unary call with a deadline, retried when the server says it may be (and
        the call may safely run twice: never a call that creates something)."""
        for attempt in range(self.retries + 1 if idempotent else 1):
            try:
                return await method(request, timeout=self.timeout, metadata=self._metadata())
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if attempt == self.retries or not _retriable(exc, error):
                    raise error from None
                await asyncio.sleep(self._delay(attempt, error))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, error: KtapeError) -> float:
        return backoff_seconds(attempt, self.max_backoff, error.retry_after)

    # -- market data -------------------------------------------------------------------------

    async def orderbook(self, ticker: str, at: Time = None, depth: int | None = None) -> Book:
        """The book at `at` (default now), with its continuity."""
        request = marketdata_pb2.GetOrderbookRequest(ticker=ticker, depth=depth or 0,
                                                     at=timestamp(at))
        return book_from(await self._call(self._md.GetOrderbook, request))

    async def market(self, ticker: str) -> Any:
        """The market's reference data and coverage (first and last recorded time,
        gap count) as the `Market` message (GET /v1/markets/{ticker})."""
        reply = await self._call(self._md.GetMarket, marketdata_pb2.GetMarketRequest(ticker=ticker))
        return reply.market

    def _pages(self, rpc: Callable[..., Awaitable[Any]], make: Callable[[str], Any],
               items: str, columns: list[Any]) -> AsyncPages:
        return AsyncPages(lambda token: self._call(rpc, make(token)), items, columns)

    def deltas(self, ticker: str, start: Time, end: Time = None,
               page_size: int = 1000) -> AsyncPages:
        """Every stored change in [start, end) by exchange time (end default now, fixed
        for all pages of this listing), in (ts, sid, seq) order, snapshot levels and gap
        markers included (GET /v1/markets/{ticker}/deltas; metered per page). Naive times
        are UTC. Items are `OrderbookDelta` messages; `to_df()` has one row each."""
        start_at, end_at = timestamp(start), timestamp(end)

        def request(token: str, layout: int = 0) -> Any:
            return marketdata_pb2.ListOrderbookDeltasRequest(
                ticker=ticker, start_time=start_at, end_time=end_at, page_size=page_size,
                page_token=token, layout=layout)

        rpc = self._md.ListOrderbookDeltas
        # Frames read the pages as columns: no message per row to build or to take apart.
        return AsyncPages(
            lambda token: self._call(rpc, request(token)), "deltas", DELTA_COLUMNS,
            lambda token: self._call(rpc, request(token, marketdata_pb2.BATCH_LAYOUT_COLUMNS)),
            _delta_pages)

    def trades(self, ticker: str, start: Time, end: Time = None,
               page_size: int = 1000) -> AsyncPages:
        """Trades in [start, end) by exchange time (end default now), in (ts, seq,
        trade_id) order (GET /v1/markets/{ticker}/trades; metered per page)."""
        return self._pages(self._md.ListTrades, lambda token: marketdata_pb2.ListTradesRequest(
            ticker=ticker, start_time=timestamp(start), end_time=timestamp(end),
            page_size=page_size, page_token=token), "trades", TRADE_COLUMNS)

    def candles(self, ticker: str, start: Time, end: Time = None,
                interval: str = "1m") -> AsyncPages:
        """OHLCV candles of `interval` (1m, 1h or 1d) in [start, end), from trades;
        empty buckets are left out (GET /v1/markets/{ticker}/candles)."""
        return self._pages(self._md.ListCandles, lambda _token: marketdata_pb2.ListCandlesRequest(
            ticker=ticker, start_time=timestamp(start), end_time=timestamp(end),
            interval=interval), "candles", CANDLE_COLUMNS)

    def markets(self, *, series_ticker: str = "", event_ticker: str = "", status: str = "",
                page_size: int = 500) -> AsyncPages:
        """Markets, optionally of one series or event or with one status
        (GET /v1/markets)."""
        return self._pages(self._md.ListMarkets, lambda token: marketdata_pb2.ListMarketsRequest(
            series_ticker=series_ticker, event_ticker=event_ticker, status=status,
            page_size=page_size, page_token=token), "markets", MARKET_COLUMNS)

    def events(self, *, series_ticker: str = "", page_size: int = 500) -> AsyncPages:
        """Events, optionally of one series (GET /v1/events)."""
        return self._pages(self._md.ListEvents, lambda token: marketdata_pb2.ListEventsRequest(
            series_ticker=series_ticker, page_size=page_size, page_token=token), "events",
            EVENT_COLUMNS)

    def series(self, *, page_size: int = 500) -> AsyncPages:
        """Every series (GET /v1/series)."""
        return self._pages(self._md.ListSeries, lambda token: marketdata_pb2.ListSeriesRequest(
            page_size=page_size, page_token=token), "series", SERIES_COLUMNS)

    def settlements(self, *, event_ticker: str = "", result: str = "",
                    page_size: int = 500) -> AsyncPages:
        """Settled markets, optionally of one event or with one result
        (GET /v1/settlements)."""
        return self._pages(self._md.ListSettlements, lambda token: (
            marketdata_pb2.ListSettlementsRequest(event_ticker=event_ticker, result=result,
                                                  page_size=page_size, page_token=token)),
            "settlements", SETTLEMENT_COLUMNS)

    async def conditions(self, *, ticker: str = "", series_ticker: str = "",
                         start_date: str = "", end_date: str = "") -> list[Any]:
        """Each market's data condition per UTC day (public: no key needed)."""
        out: list[Any] = []
        token = ""
        while True:
            reply = await self._call(self._status.ListDataConditions,
                                     data_status_pb2.ListDataConditionsRequest(
                                         ticker=ticker, series_ticker=series_ticker,
                                         start_date=start_date, end_date=end_date,
                                         page_token=token))
            out.extend(reply.conditions)
            token = reply.next_page_token
            if not token:
                return out

    async def account(self) -> Any:
        """The key's account: balance, plan, allowance (GET /v1/account)."""
        reply = await self._call(self._billing.GetAccount, billing_pb2.GetAccountRequest())
        return reply.account

    # -- billing self-service ----------------------------------------------------------------

    def usage(self, start: Time = None, end: Time = None) -> AsyncPages:
        """The account's calls and credits per UTC day and method in [start, end)
        (default: this month so far; GET /v1/account/usage); `to_df()` like a listing."""
        return self._pages(self._billing.GetAccountUsage, lambda _token: (
            billing_pb2.GetAccountUsageRequest(start_time=timestamp(start),
                                               end_time=timestamp(end))), "usage", USAGE_COLUMNS)

    def keys(self, page_size: int = 100) -> AsyncPages:
        """The account's API keys, newest first, revoked ones included (never a secret;
        GET /v1/account/keys)."""
        return self._pages(self._billing.ListApiKeys, lambda token: billing_pb2.ListApiKeysRequest(
            page_size=page_size, page_token=token), "keys", KEY_COLUMNS)

    async def create_key(self, name: str = "", env: str = "prod") -> CreatedKey:
        """A new API key for the account (POST /v1/account/keys). Its secret is in this
        answer only (`CreatedKey.secret`, kept out of its repr): store it now. Not retried:
        a retry after a lost answer would make a second key."""
        envs = {"dev": billing_pb2.KEY_ENV_DEV, "prod": billing_pb2.KEY_ENV_PROD}
        if env not in envs:
            raise ValueError(f"env must be dev or prod, not {env!r}")
        reply = await self._call(self._billing.CreateApiKey, billing_pb2.CreateApiKeyRequest(
            name=name, env=envs[env]), idempotent=False)
        return CreatedKey(reply.key.key_id, reply.key.prefix, reply.key.name, env, reply.secret)

    async def delete_key(self, key_id: str) -> Any:
        """Revoke one of the account's keys (DELETE /v1/account/keys/{key_id}); it stops
        working everywhere within seconds. Returns the revoked `ApiKey`."""
        reply = await self._call(self._billing.DeleteApiKey,
                                 billing_pb2.DeleteApiKeyRequest(key_id=key_id))
        return reply.key

    async def set_spending_cap(self, credits: int) -> Any:
        """Cap the month's spending beyond the allowance at `credits` (0 clears the cap;
        POST /v1/account:setSpendingCap). Returns the `Account` after the change."""
        reply = await self._call(self._billing.UpdateSpendingCap,
                                 billing_pb2.UpdateSpendingCapRequest(spending_cap_credits=credits))
        return reply.account

    async def credit_packs(self) -> list[Any]:
        """The credit packs on sale, cheapest first (`CreditPack`: pack_id, credits, price)."""
        reply = await self._call(self._billing.ListCreditPacks,
                                 billing_pb2.ListCreditPacksRequest())
        return list(reply.packs)

    async def checkout(self, pack: str, success_url: str = "", cancel_url: str = "") -> str:
        """A Stripe Checkout session buying credit pack `pack` (POST /v1/billing/checkout):
        the URL to open in a browser. Credits arrive when Stripe confirms the payment."""
        reply = await self._call(self._billing.CreateCheckoutSession,
                                 billing_pb2.CreateCheckoutSessionRequest(
                                     pack=pack, success_url=success_url, cancel_url=cancel_url),
                                 idempotent=False)
        return reply.url

    async def replay(self, ticker: str, start: Time, end: Time = None,
                     page_size: int = 1000) -> AsyncIterator[tuple[Change, Book]]:
        """The book after every stored change in [start, end): (change, book) pairs,
        starting from the book just before `start`. Snapshot rows replace the book, deltas
        set a level's size, a gap marker makes the continuity GAP until the next snapshot."""
        begin = timestamp(start)
        assert begin is not None
        before = begin.ToDatetime(dt.UTC) - dt.timedelta(microseconds=1)
        book = await self.orderbook(ticker, at=before)
        sides = {"yes": {lv.price: lv.quantity for lv in book.yes},
                 "no": {lv.price: lv.quantity for lv in book.no}}
        status, snapshot_key = book.continuity.status, None
        async for delta in self.deltas(ticker, start, end, page_size=page_size):
            change = _change(delta)
            if change.kind == "gap":
                status = "GAP"
            elif change.kind == "snapshot":
                key = (change.ts, change.sid, change.seq)
                if key != snapshot_key:  # a new snapshot: the book is replaced
                    sides = {"yes": {}, "no": {}}
                    snapshot_key, status = key, "CONTINUOUS"
                _set(sides, change)
            else:
                _set(sides, change)
            yield change, Book(
                ticker=ticker, at=change.ts or before, seq=change.seq,
                yes=_ladder(sides["yes"]), no=_ladder(sides["no"]),
                continuity=Continuity(status), last_change=change.ts)

    # -- streams -----------------------------------------------------------------------------

    async def stream(self, ticker: str, start_time: Time = None) -> AsyncIterator[Any]:
        """The book's first snapshot (a Book), then every Change as it happens (gap
        markers included). A transient failure (UNAVAILABLE, a server shutting down, a
        cut connection) reconnects with `start_time` at the last change given: nothing
        is lost (history fills the cut) and nothing repeats (see `_Resume`). Ends when
        the market settles; raises the mapped KtapeError for anything else, or when
        `retries` reconnects in a row fail."""
        resume = _Resume(timestamp(start_time))
        attempt = 0
        while True:
            request = marketdata_pb2.StreamOrderbookRequest(
                ticker=ticker, start_time=resume.start(), batch_size=STREAM_BATCH,
                batch_layout=marketdata_pb2.BATCH_LAYOUT_COLUMNS)
            ended = None
            try:
                async for message in self._md.StreamOrderbook(request, metadata=self._metadata()):
                    kind = message.WhichOneof("payload")
                    if kind == "snapshot":
                        if resume.first_book(message.snapshot):
                            yield book_from(message.snapshot)
                        continue
                    attempt = 0  # the stream is flowing again
                    if kind in ("columns", "delta", "deltas"):  # a batch, or one change
                        for change in (_column_changes(message.columns) if kind == "columns"
                                       else map(_change, message.deltas.deltas
                                                if kind == "deltas" else (message.delta,))):
                            if resume.is_new(change):
                                yield change
                    elif kind == "end":
                        ended = message.end  # over gRPC a non-OK end is followed by its status
                if ended is not None and ended.code == "OK":
                    return  # the market settled
                error = (error_for(ended.message or ended.code, CODES_BY_NAME.get(ended.code),
                                   ended.reason) if ended is not None else
                         UnavailableError("the stream closed without an end message"))
                if not isinstance(error, UnavailableError):
                    raise error
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if not (_retriable(exc, error) or _stream_cut(exc)):
                    raise error from None
            if attempt >= self.retries:
                raise error
            await asyncio.sleep(self._delay(attempt, error))
            attempt += 1


class _Resume:
    """Where a stream is, so a reconnect neither loses nor repeats a change.

    The server replays from `start_time` exclusive: the book at start_time comes as the
    snapshot, changes after it as deltas. So the reconnect asks from 1 µs before the
    newest change time given (the frontier) and drops changes of that instant already
    given (several changes share an instant: a snapshot's levels always do). Changes
    before the frontier cannot come back (history is in time order); gap markers come
    by detection, not in time order, so those given are remembered whole."""

    def __init__(self, start: timestamp_pb2.Timestamp | None) -> None:
        self.requested = start
        self.book_given = False
        self.frontier: dt.datetime | None = None
        # the changes given at the frontier instant; their keys are made only on a
        # reconnect (a set of keys per change was a third of the client's cost per change)
        self.at_frontier: list[Change] = []
        self.frontier_keys: set[tuple[Any, ...]] = set()
        self.gaps: set[Gap] = set()
        self.checking = False  # True from a reconnect until the stream passes the frontier

    def start(self) -> timestamp_pb2.Timestamp | None:
        if self.frontier is not None:
            self.checking = True
            self.frontier_keys = {change.key for change in self.at_frontier}
            return timestamp(self.frontier - dt.timedelta(microseconds=1))
        return self.requested

    def first_book(self, snapshot: Any) -> bool:
        """True for the first connection's snapshot (given); later ones are the book at
        the resume point, which the changes given already built."""
        if self.book_given:
            return False
        self.book_given = True
        if self.requested is None:  # "from now": resume from the instant the server chose
            self.requested = snapshot.at
        return True

    def is_new(self, change: Change) -> bool:
        if change.kind == "gap":
            if change.gap in self.gaps:
                return False
            self.gaps.add(change.gap)  # type: ignore[arg-type]
            return True
        if self.checking and self.frontier is not None and change.ts is not None:
            if change.ts < self.frontier or (change.ts == self.frontier
                                             and change.key in self.frontier_keys):
                return False
            if change.ts > self.frontier:
                self.checking = False
        if change.ts != self.frontier:
            self.frontier, self.at_frontier = change.ts, []
        self.at_frontier.append(change)
        return True


def _set(sides: dict[str, dict[Decimal, Decimal]], change: Change) -> None:
    """A stored row carries the level's size after it: set it (0 removes the level; the
    empty snapshot's row at price 0 sets nothing)."""
    if change.price is None or change.quantity is None or change.side not in sides:
        return
    if change.quantity == 0:
        sides[change.side].pop(change.price, None)
    elif change.price != 0:
        sides[change.side][change.price] = change.quantity


def _ladder(side: dict[Decimal, Decimal]) -> tuple[Level, ...]:
    return tuple(Level(p, q) for p, q in sorted(side.items(), reverse=True))


_new = object.__new__
_KIND = enum_column("kind", "DELTA_KIND_")
_SIDE = enum_column("side", "SIDE_")
_CAUSE = enum_column("cause", "DELTA_CAUSE_")


def _change(d: Any) -> Change:
    gap = None
    if d.HasField("gap"):
        g = d.gap
        gap = Gap(when(g, "start_time"), when(g, "end_time"), g.reason, g.expected_seq,
                  g.got_seq)
    # A frozen dataclass's __init__ sets each field through object.__setattr__: at stream
    # rates that was half the client's cost per change. Filling __dict__ makes the same
    # object (no __post_init__ to skip) and it stays frozen to its users.
    change = _new(Change)
    change.__dict__.update(ts=when(d, "ts"), seq=d.seq, sid=d.sid, kind=_KIND(d), side=_SIDE(d),
                           price=dec(d.price), delta=dec(d.delta), quantity=dec(d.quantity),
                           gap=gap, cause=_CAUSE(d))
    return change


_KIND_NAMES = enum_names(marketdata_pb2.DeltaKind, "DELTA_KIND_")
_SIDE_NAMES = enum_names(marketdata_pb2.Side, "SIDE_")
_CAUSE_NAMES = enum_names(marketdata_pb2.DeltaCause, "DELTA_CAUSE_")


def _delta_pages() -> Any:
    """A new accumulator of column pages for one frame (numpy, so imported only when a
    frame is built: the client itself needs neither numpy nor pandas)."""
    from ktape_client.delta_frames import DeltaPages

    return DeltaPages({"kind": _KIND_NAMES, "side": _SIDE_NAMES, "cause": _CAUSE_NAMES},
                      marketdata_pb2.DELTA_KIND_GAP)


def _column_changes(columns: Any) -> list[Change]:
    """A stream's OrderbookDeltaColumns as Changes equal to those its messages give:
    each column converted whole (times by arithmetic, prices and sizes through a cache of
    exact Decimals), then one object per change."""
    kinds, sides = _KIND_NAMES, _SIDE_NAMES
    out: list[Change] = []
    append = out.append
    for ts, seq, sid, kind, side, price, delta, quantity in zip(
            map(at_micros, columns.ts_unix_micros), columns.seqs, columns.sids,
            columns.kinds, columns.sides, fixed_decimals(columns.prices_e4, -4),
            fixed_decimals(columns.deltas_e2, -2), fixed_decimals(columns.quantities_e2, -2),
            strict=True):
        change = _new(Change)  # as in _change: no frozen __init__ per change
        change.__dict__.update(ts=ts, seq=seq, sid=sid, kind=kinds[kind], side=sides[side],
                               price=price, delta=delta, quantity=quantity, gap=None,
                               cause="unspecified")
        append(change)
    return out


def _stream_cut(exc: grpc.aio.AioRpcError) -> bool:
    """A stream cut under way by a proxy: when the server behind Envoy dies mid-stream
    (a replica killed), Envoy can only reset the client's HTTP/2 stream (RST_STREAM),
    which gRPC reports as INTERNAL. For a stream that is a cut connection — resumed from
    the last change, nothing lost or repeated — not a server error (those carry their
    own message, never the transport's RST_STREAM)."""
    return exc.code() == grpc.StatusCode.INTERNAL and "RST_STREAM" in (exc.details() or "")


def _retriable(exc: grpc.aio.AioRpcError, error: KtapeError) -> bool:
    return exc.code() in RETRIED or (isinstance(error, RateLimitedError) and \
        error.reason == "RATE_LIMITED")
