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
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
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
from ktape_client.errors import KtapeError, RateLimitedError, from_rpc_error
from ktape_client.pages import (
    CANDLE_COLUMNS,
    DELTA_COLUMNS,
    EVENT_COLUMNS,
    MARKET_COLUMNS,
    SERIES_COLUMNS,
    SETTLEMENT_COLUMNS,
    TRADE_COLUMNS,
    AsyncPages,
    dec,
    enum_name,
    when,
)

T = TypeVar("T")
RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
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
class Change:
    """One stream event: a book change (kind delta/snapshot) or a gap marker."""

    ts: dt.datetime | None
    seq: int
    sid: int
    kind: str
    side: str
    price: Decimal | None
    delta: Decimal | None
    quantity: Decimal | None


class AsyncClient:
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

    def __repr__(self) -> str:
        shown = f"{self._key[:12]}…" if self._key else "none"
        return f"AsyncClient(target={self.target!r}, key={shown})"

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- calls -------------------------------------------------------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._key}"),) if self._key else ()

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        """One unary call with a deadline, retried when the server says it may be."""
        for attempt in range(self.retries + 1):
            try:
                return await method(request, timeout=self.timeout, metadata=self._metadata())
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if attempt == self.retries or not _retriable(exc, error):
                    raise error from None
                await asyncio.sleep(self._delay(attempt, error))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, error: KtapeError) -> float:
        backoff = min(self.max_backoff, 0.25 * 2 ** attempt) * random.uniform(0.5, 1.0)
        return max(backoff, error.retry_after or 0.0)

    # -- market data -------------------------------------------------------------------------

    async def orderbook(self, ticker: str, at: Time = None, depth: int | None = None) -> Book:
        """The book at `at` (default now), with its continuity."""
        request = marketdata_pb2.GetOrderbookRequest(ticker=ticker, depth=depth or 0,
                                                     at=timestamp(at))
        return book_from(await self._call(self._md.GetOrderbook, request))

    async def market(self, ticker: str) -> Any:
        reply = await self._call(self._md.GetMarket, marketdata_pb2.GetMarketRequest(ticker=ticker))
        return reply.market

    def _pages(self, rpc: Callable[..., Awaitable[Any]], make: Callable[[str], Any],
               items: str, columns: list[Any]) -> AsyncPages:
        return AsyncPages(lambda token: self._call(rpc, make(token)), items, columns)

    def deltas(self, ticker: str, start: Time, end: Time = None,
               page_size: int = 1000) -> AsyncPages:
        """Every stored change in [start, end) (end default now), gap markers included."""
        return self._pages(self._md.ListOrderbookDeltas, lambda token: (
            marketdata_pb2.ListOrderbookDeltasRequest(
                ticker=ticker, start_time=timestamp(start), end_time=timestamp(end),
                page_size=page_size, page_token=token)), "deltas", DELTA_COLUMNS)

    def trades(self, ticker: str, start: Time, end: Time = None,
               page_size: int = 1000) -> AsyncPages:
        return self._pages(self._md.ListTrades, lambda token: marketdata_pb2.ListTradesRequest(
            ticker=ticker, start_time=timestamp(start), end_time=timestamp(end),
            page_size=page_size, page_token=token), "trades", TRADE_COLUMNS)

    def candles(self, ticker: str, start: Time, end: Time = None,
                interval: str = "1m") -> AsyncPages:
        return self._pages(self._md.ListCandles, lambda _token: marketdata_pb2.ListCandlesRequest(
            ticker=ticker, start_time=timestamp(start), end_time=timestamp(end),
            interval=interval), "candles", CANDLE_COLUMNS)

    def markets(self, *, series_ticker: str = "", event_ticker: str = "", status: str = "",
                page_size: int = 500) -> AsyncPages:
        return self._pages(self._md.ListMarkets, lambda token: marketdata_pb2.ListMarketsRequest(
            series_ticker=series_ticker, event_ticker=event_ticker, status=status,
            page_size=page_size, page_token=token), "markets", MARKET_COLUMNS)

    def events(self, *, series_ticker: str = "", page_size: int = 500) -> AsyncPages:
        return self._pages(self._md.ListEvents, lambda token: marketdata_pb2.ListEventsRequest(
            series_ticker=series_ticker, page_size=page_size, page_token=token), "events",
            EVENT_COLUMNS)

    def series(self, *, page_size: int = 500) -> AsyncPages:
        return self._pages(self._md.ListSeries, lambda token: marketdata_pb2.ListSeriesRequest(
            page_size=page_size, page_token=token), "series", SERIES_COLUMNS)

    def settlements(self, *, event_ticker: str = "", result: str = "",
                    page_size: int = 500) -> AsyncPages:
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
        reply = await self._call(self._billing.GetAccount, billing_pb2.GetAccountRequest())
        return reply.account

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
        """The book's first snapshot (a Book), then every Change as it happens. A
        transient failure reconnects from the last change seen: nothing is lost (history
        fills the cut) and nothing repeats (changes already given are skipped)."""
        last: tuple[Any, int, int] | None = None
        start = timestamp(start_time)
        attempt = 0
        while True:
            request = marketdata_pb2.StreamOrderbookRequest(ticker=ticker, start_time=start)
            try:
                async for message in self._md.StreamOrderbook(request, metadata=self._metadata()):
                    attempt = 0
                    kind = message.WhichOneof("payload")
                    if kind == "snapshot" and last is None:
                        yield book_from(message.snapshot)
                    elif kind == "delta":
                        change = _change(message.delta)
                        key = (change.ts, change.sid, change.seq)
                        if last is not None and key <= last:
                            continue  # given before the reconnect
                        last = key
                        yield change
                    elif kind == "end":
                        if message.end.code != "OK":  # over gRPC the status follows
                            raise KtapeError(message.end.message or message.end.code,
                                             reason=message.end.reason)
                        return  # the market settled
                return
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if not _retriable(exc, error) or attempt >= self.retries:
                    raise error from None
                await asyncio.sleep(self._delay(attempt, error))
                attempt += 1
                if last is not None and last[0] is not None:
                    start = timestamp(last[0])  # replay from the last change: skip repeats


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


def _change(d: Any) -> Change:
    return Change(when(d, "ts"), d.seq, d.sid, enum_name(d, "kind", "DELTA_KIND_"),
                  enum_name(d, "side", "SIDE_"), dec(d.price), dec(d.delta), dec(d.quantity))


def _retriable(exc: grpc.aio.AioRpcError, error: KtapeError) -> bool:
    return exc.code() in RETRIED or (isinstance(error, RateLimitedError) and \
        error.reason == "RATE_LIMITED")
