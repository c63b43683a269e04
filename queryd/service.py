"""The MarketDataService servicer: validation, paging, error mapping — the thin layer.

The work lives in orderbook.py, history.py, candles.py and reference.py; this module
turns requests into calls on them, validates every argument (INVALID_ARGUMENT with a
BadRequest field violation naming it) and maps failures to AIP-193 statuses in one
place (`_rpc`): domain errors as they are, a store that cannot be reached as UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ktape.errors import (
    InvalidArgument,
    KtapeError,
    MarketNotYetKnown,
    NotFound,
    Unavailable,
    UnknownTicker,
    abort_with,
    rpc_handler,
)
from ktape.log import get_logger
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.paging import PageTokens, checked_page_size, position_of, query_digest
from ktape.schema.tables import MARKET_STATUSES
from queryd import reference, sql
from queryd.candles import INTERVAL_US, MAX_BUCKETS, candles
from queryd.convert import from_timestamp, orderbook_response
from queryd.history import Page, deltas_page, trades_page
from queryd.live import LiveShards
from queryd.orderbook import Continuity, orderbook_at
from queryd.stream import MAX_STREAM_BATCH, REPLAY_WINDOW, stream_orderbook
from queryd.timeutil import as_utc, from_us, now_utc, to_us

log = get_logger(__name__)

MAX_RANGE = dt.timedelta(days=31)
FUTURE_SLACK = dt.timedelta(seconds=5)
_TICKER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")



def _store_outage(exc: Exception, method: str) -> KtapeError | None:
    """QuestDB unreachable: UNAVAILABLE with RetryInfo (not a bug, not logged as one)."""
    if not isinstance(exc, (psycopg.OperationalError, PoolTimeout)):
        return None
    log.warning("store.unavailable", method=method, error=str(exc))
    return Unavailable("the history store is unreachable; retry shortly", retry_after_secs=2.0,
                       reason="STORE_UNAVAILABLE")


_rpc = rpc_handler(log, translate=_store_outage,
                   log_context=lambda request: {"ticker": getattr(request, "ticker", "")})


def _ticker(value: str, field: str = "ticker") -> str:
    if not value:
        raise InvalidArgument.field(field, "is required")
    if not _TICKER_RE.match(value):
        raise InvalidArgument.field(field, "is not a valid Kalshi ticker")
    return value


def _layout(value: int, field: str) -> int:
    if value not in pb.BatchLayout.values():
        raise InvalidArgument.field(field, "is not a known layout")
    return value


def instant(request: Any) -> dt.datetime:
    """A request's `at`: when it arrived if omitted; INVALID_ARGUMENT in the future."""
    now = now_utc()
    at = from_timestamp(request.at) if request.HasField("at") else now
    if at > now + FUTURE_SLACK:
        raise InvalidArgument.field("at", "is in the future")
    return at


def time_range(request: Any) -> tuple[dt.datetime, dt.datetime]:
    """[start_time, end_time): start required, end omitted means the time the request
    arrived (CONTRACT.md "Time ranges")."""
    if not request.HasField("start_time"):
        raise InvalidArgument.field("start_time", "is required")
    start = from_timestamp(request.start_time)
    end = from_timestamp(request.end_time) if request.HasField("end_time") else now_utc()
    if end <= start:
        raise InvalidArgument.field("end_time", "must be after start_time")
    if end - start > MAX_RANGE:
        raise InvalidArgument.field("end_time", "the range may span at most 31 days")
    return start, end


@dataclass(frozen=True)
class Window:
    """One page of a ranged read: the ticker, [start, end), where the page resumes
    (`after`, None on a first page) and how to seal the next page's token.

    An omitted end means "now" at the first page; later pages must keep that end
    (AIP-158: same query), so it travels in the page token, after the position."""

    ticker: str
    start: dt.datetime
    end: dt.datetime
    size: int
    after: list[Any] | None
    digest: str
    open_end: bool

    def token(self, tokens: PageTokens, position: list[Any] | None) -> str:
        """The next page's token after `position` ("" when there is no next page)."""
        if position is None:
            return ""
        return tokens.seal(self.digest, [*position, to_us(self.end)] if self.open_end
                           else position)


def page_window(tokens: PageTokens, method: str, request: Any,
                extra: dict[str, Any] | None = None) -> Window:
    """The window of a ranged, paged request (ticker, start_time, end_time, page_size,
    page_token); `extra` are its other arguments that a page token must belong to."""
    ticker = _ticker(request.ticker)
    start, end = time_range(request)
    size = checked_page_size(request.page_size)
    open_end = not request.HasField("end_time")
    digest = query_digest(method, {"t": ticker, "s": start, **(extra or {}),
                                   "e": "now" if open_end else end})
    after = position_of(tokens, request.page_token, digest)
    if open_end and after is not None:
        end, after = from_us(int(after[-1])), after[:-1]
    return Window(ticker, start, end, size, after, digest, open_end)


# `settled` is the word users (and Kalshi's own REST filter) use for `finalized`.
STATUS_ALIASES = {"settled": "finalized"}


def _market_status(value: str) -> str:
    """A ListMarkets status filter: a status GetMarket can report, or INVALID_ARGUMENT
    naming them (an unknown word would silently match nothing)."""
    status = STATUS_ALIASES.get(value, value)
    if status and status not in MARKET_STATUSES:
        raise InvalidArgument.field("status", f"must be one of {', '.join(MARKET_STATUSES)} "
                                              "(or 'settled' for finalized)")
    return status


class MarketDataService(pb_grpc.MarketDataServiceServicer):
    def __init__(self, pool: AsyncConnectionPool, tokens: PageTokens,
                 live: LiveShards | None = None) -> None:
        self.pool = pool
        self.tokens = tokens
        self.stopping = asyncio.Event()  # set at shutdown: streams end with a message
        self.live = live  # the ingest shards' fan-outs, when followed (queryd/live.py)

    # -- helpers -----------------------------------------------------------------------

    def _next_token(self, digest: str, position: list[Any] | None) -> str:
        return self.tokens.seal(digest, position) if position is not None else ""

    async def _require_ticker(self, conn: psycopg.AsyncConnection, ticker: str) -> None:
        for query in (sql.TICKER_KNOWN, sql.TICKER_RECORDED):
            if await (await conn.execute(query, {"ticker": ticker})).fetchone():
                return
        raise UnknownTicker(ticker)

    @staticmethod
    async def _not_yet_known(conn: Any, ticker: str, at: dt.datetime) -> None:
        """GetMarket at an instant before ktape's first version of the market."""
        first = (await (await conn.execute(sql.MARKET_FIRST_VERSION, {"ticker": ticker})
                        ).fetchone() or (None,))[0]
        if first is None:
            return  # no version at all: the usual unknown-ticker path decides
        raise MarketNotYetKnown(ticker, at, as_utc(first))

    # -- book --------------------------------------------------------------------------

    @_rpc
    async def GetOrderbook(self, request: pb.GetOrderbookRequest,
                           context: grpc.aio.ServicerContext) -> pb.GetOrderbookResponse:
        ticker = _ticker(request.ticker)
        if request.depth < 0:
            raise InvalidArgument.field("depth", "must not be negative")
        at = instant(request)
        async with self.pool.connection() as conn:
            result = await orderbook_at(conn, ticker, at)
            if result.continuity is Continuity.NOT_RECORDED and result.seq is None:
                # Only a book never recorded needs the existence check: one round trip
                # fewer on the hot path.
                await self._require_ticker(conn, ticker)
        return orderbook_response(result, request.depth)

    async def _history(self, method: str, request: Any, fetch: Callable[..., Awaitable[Page]]
                       ) -> tuple[Page, str]:
        """One page of a ticker's history in [start_time, end_time), keyset-paged."""
        w = page_window(self.tokens, method, request)
        async with self.pool.connection() as conn:
            await self._require_ticker(conn, w.ticker)
            page = await fetch(conn, w.ticker, w.start, w.end, w.after, w.size)
        return page, w.token(self.tokens, page.last_key)

    @_rpc
    async def ListOrderbookDeltas(self, request: pb.ListOrderbookDeltasRequest,
                                  context: grpc.aio.ServicerContext
                                  ) -> pb.ListOrderbookDeltasResponse:
        page, token = await self._history("ListOrderbookDeltas", request, functools.partial(
            deltas_page, layout=_layout(request.layout, "layout")))
        if page.response is None:  # deltas_page builds every page into its response
            raise RuntimeError("deltas page without its response")
        page.response.next_page_token = token
        return page.response

    @_rpc
    async def ListTrades(self, request: pb.ListTradesRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListTradesResponse:
        page, token = await self._history("ListTrades", request, trades_page)
        return pb.ListTradesResponse(trades=page.items, next_page_token=token)

    @_rpc
    async def ListCandles(self, request: pb.ListCandlesRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListCandlesResponse:
        ticker = _ticker(request.ticker)
        if request.interval not in INTERVAL_US:
            raise InvalidArgument.field("interval", "must be one of 1m, 1h, 1d")
        if not request.HasField("start_time"):
            raise InvalidArgument.field("start_time", "is required")
        start = from_timestamp(request.start_time)
        end = from_timestamp(request.end_time) if request.HasField("end_time") else now_utc()
        if end <= start:
            raise InvalidArgument.field("end_time", "must be after start_time")
        span_us = (end - start) // dt.timedelta(microseconds=1)
        if span_us // INTERVAL_US[request.interval] > MAX_BUCKETS:
            raise InvalidArgument.field("end_time", f"at most {MAX_BUCKETS} buckets per call")
        async with self.pool.connection() as conn:
            await self._require_ticker(conn, ticker)
            return await candles(conn, ticker, start, end, request.interval)

    # -- reference data ----------------------------------------------------------------

    async def _keyed_page(self, method: str, template: str, clauses: dict[str, str],
                          filters: dict[str, str], token: str, requested_size: int,
                          build: Callable[[tuple[Any, ...]], Any]) -> tuple[list[Any], str]:
        size = checked_page_size(requested_size)
        present = {k: v for k, v in filters.items() if v}
        digest = query_digest(method, present)
        after = position_of(self.tokens, token, digest)
        query = sql.with_filters(template, clauses, set(present))
        params = {**present, "after": after[0] if after else "", "limit": size + 1}
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query, params)).fetchall()
        items = [build(r) for r in rows[:size]]
        next_token = self._next_token(digest, [rows[size - 1][1]]) if len(rows) > size else ""
        return items, next_token

    @_rpc
    async def ListMarkets(self, request: pb.ListMarketsRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListMarketsResponse:
        filters = {"event_ticker": request.event_ticker, "series_ticker": request.series_ticker,
                   "status": _market_status(request.status)}
        for field in ("event_ticker", "series_ticker"):
            if filters[field]:
                _ticker(filters[field], field)
        items, token = await self._keyed_page(
            "ListMarkets", sql.MARKETS_LATEST, sql.MARKET_FILTERS, filters, request.page_token,
            request.page_size, reference.market_message)
        return pb.ListMarketsResponse(markets=items, next_page_token=token)

    @_rpc
    async def GetMarket(self, request: pb.GetMarketRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetMarketResponse:
        ticker = _ticker(request.ticker)
        at = from_timestamp(request.at) if request.HasField("at") else None
        async with self.pool.connection() as conn:
            if at is not None:
                row = await (await conn.execute(sql.MARKET_AT, {"ticker": ticker, "at": at})
                             ).fetchone()
                if row is None:
                    await self._not_yet_known(conn, ticker, at)
            else:
                row = await (await conn.execute(sql.MARKET_ONE, {"ticker": ticker})).fetchone()
            if row is None:
                if not await (await conn.execute(sql.TICKER_RECORDED,
                                                 {"ticker": ticker})).fetchone():
                    raise UnknownTicker(ticker)
                market = pb.Market(ticker=ticker)
            else:
                market = reference.market_message(row)
            market.coverage.CopyFrom(await reference.coverage(conn, ticker))
            reference.add_statistics(market, await reference.statistics_at(
                conn, ticker, at if at is not None else now_utc()))
        return pb.GetMarketResponse(market=market)

    @_rpc
    async def ListEvents(self, request: pb.ListEventsRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListEventsResponse:
        filters = {"series_ticker": request.series_ticker}
        if filters["series_ticker"]:
            _ticker(filters["series_ticker"], "series_ticker")
        items, token = await self._keyed_page(
            "ListEvents", sql.EVENTS_LATEST, sql.EVENT_FILTERS, filters, request.page_token,
            request.page_size, reference.event_message)
        return pb.ListEventsResponse(events=items, next_page_token=token)

    async def _one(self, query: str, field: str, value: str, what: str) -> tuple[Any, ...]:
        """The latest row of one keyed reference entity, or NOT_FOUND naming it."""
        _ticker(value, field)
        async with self.pool.connection() as conn:
            row = await (await conn.execute(query, {field: value})).fetchone()
        if row is None:
            raise NotFound(f"unknown {what} {value!r}", reason=f"UNKNOWN_{what.upper()}",
                           metadata={field: value})
        return row

    @_rpc
    async def GetEvent(self, request: pb.GetEventRequest,
                       context: grpc.aio.ServicerContext) -> pb.GetEventResponse:
        row = await self._one(sql.EVENT_ONE, "event_ticker", request.event_ticker, "event")
        return pb.GetEventResponse(event=reference.event_message(row))

    @_rpc
    async def ListSeries(self, request: pb.ListSeriesRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListSeriesResponse:
        items, token = await self._keyed_page(
            "ListSeries", sql.SERIES_LATEST, {}, {},
            request.page_token, request.page_size, reference.series_message)
        return pb.ListSeriesResponse(series=items, next_page_token=token)

    @_rpc
    async def GetSeries(self, request: pb.GetSeriesRequest,
                        context: grpc.aio.ServicerContext) -> pb.GetSeriesResponse:
        row = await self._one(sql.SERIES_ONE, "series_ticker", request.series_ticker, "series")
        return pb.GetSeriesResponse(series=reference.series_message(row))

    @_rpc
    async def ListSettlements(self, request: pb.ListSettlementsRequest,
                              context: grpc.aio.ServicerContext
                              ) -> pb.ListSettlementsResponse:
        if request.result and request.result not in ("yes", "no", "scalar"):
            raise InvalidArgument.field("result", "must be one of yes, no, scalar")
        filters = {"event_ticker": request.event_ticker, "result": request.result}
        if filters["event_ticker"]:
            _ticker(filters["event_ticker"], "event_ticker")
        items, token = await self._keyed_page(
            "ListSettlements", sql.SETTLEMENTS_PAGE, sql.SETTLEMENT_FILTERS, filters,
            request.page_token, request.page_size, reference.settlement_message)
        return pb.ListSettlementsResponse(settlements=items, next_page_token=token)

    # -- streaming ----------------------------------------------------------------------

    async def StreamOrderbook(self, request: pb.StreamOrderbookRequest,
                              context: grpc.aio.ServicerContext
                              ) -> AsyncIterator[pb.StreamOrderbookResponse]:
        try:
            ticker = _ticker(request.ticker)
            if request.depth < 0:
                raise InvalidArgument.field("depth", "must not be negative")
            if not 0 <= request.batch_size <= MAX_STREAM_BATCH:
                raise InvalidArgument.field("batch_size", f"must be 0 to {MAX_STREAM_BATCH}")
            _layout(request.batch_layout, "batch_layout")
            start = from_timestamp(request.start_time) if request.HasField("start_time") else None
            if start is not None and start > now_utc() + FUTURE_SLACK:
                raise InvalidArgument.field("start_time", "is in the future")
            if start is not None and start < now_utc() - REPLAY_WINDOW:
                raise InvalidArgument.field(
                    "start_time", "is more than 2 hours ago: a stream replays at most the last "
                    "2 hours; page older history with ListOrderbookDeltas or the daily files")
            async with self.pool.connection() as conn:
                await self._require_ticker(conn, ticker)
        except KtapeError as error:
            await abort_with(context, error)
            return
        except (psycopg.OperationalError, PoolTimeout):
            await abort_with(context, Unavailable("the history store is unreachable; retry "
                                                  "shortly", reason="STORE_UNAVAILABLE"))
            return
        log.info("stream.opened", ticker=ticker, replay=start is not None)
        try:
            async for message in stream_orderbook(self.pool, ticker, start, request.depth,
                                                  self.stopping,
                                                  self.live.tail(ticker) if self.live else None,
                                                  request.batch_size, request.batch_layout):
                yield message
                if message.HasField("end"):
                    return
            yield pb.StreamOrderbookResponse(end=pb.StreamEnd(
                code="UNAVAILABLE", message="the server is shutting down; reconnect with "
                                            "start_time to resume"))
        except (psycopg.OperationalError, PoolTimeout) as exc:
            log.warning("stream.store_lost", ticker=ticker, error=str(exc))
            yield pb.StreamOrderbookResponse(end=pb.StreamEnd(
                code="UNAVAILABLE", message="the history store became unreachable; reconnect "
                                            "with start_time to resume"))
        except Exception:  # a bug: logged whole; the client gets an explicit end
            log.exception("stream.failed", ticker=ticker)
            yield pb.StreamOrderbookResponse(end=pb.StreamEnd(
                code="INTERNAL", message="internal error; reconnect with start_time to resume",
                reason="INTERNAL"))
        finally:
            log.info("stream.closed", ticker=ticker)
