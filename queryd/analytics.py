"""AnalyticsService: whole events at one instant, simulated orders, and top-of-book and
sampled books over a span — each in one request, with the continuity of its books — and
the audit of the recorded books against Kalshi's REST books (queryd/audit.py).

GetEventOrderbook reads every market of the event in five grouped queries on two
connections side by side (checkpoints then changes; the event, its markets, their gaps)
and builds each book by GetOrderbook's own rule (queryd.orderbook.assemble). ListQuotes
and ListOrderbookSnapshots walk the stored changes once from the book at the page's first
instant (ktape/book/walk.py, the walk the datasets job writes `quotes` and
`book_top10_1s` with).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal, InvalidOperation
from typing import Any

import grpc
from psycopg import AsyncConnection
from psycopg import sql as psql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ktape.aio import all_of, cancel_and_wait
from ktape.book.ladder import PRICE_SCALE, Book, format_price, format_quantity
from ktape.book.reconstruct import Checkpoint
from ktape.book.walk import NULL, BookWalk, Quote, Run
from ktape.errors import InvalidArgument, NotFound, UnknownTicker, rpc_handler
from ktape.log import get_logger
from ktape.marketdata.v1 import analytics_pb2 as pb
from ktape.marketdata.v1 import analytics_pb2_grpc as pb_grpc
from ktape.marketdata.v1 import marketdata_pb2 as md
from ktape.paging import PageTokens, checked_page_size, position_of, query_digest
from ktape.sql_lists import bound_tickers, ticker_list
from queryd import simulate, sql
from queryd.audit import AuditChecker, report_message
from queryd.convert import CONTINUITY, continuity_message, fill_ladder, set_us, timestamp
from queryd.orderbook import (
    CHECKPOINT_LOOKBACK,
    Continuity,
    assemble,
    checkpoint_of,
    not_recorded,
    orderbook_at,
)
from queryd.service import _ticker, instant, page_window
from queryd.timeutil import as_utc, from_us, request_date, to_us

log = get_logger(__name__)
_rpc = rpc_handler(log)

MAX_DEPTH = 100
INTERVALS = {"1s": 1_000_000, "1m": 60_000_000, "1h": 3_600_000_000}
CHANGE_CHUNK = 20_000
MAX_SCAN_PER_PAGE = 2_000_000  # changes one page may walk before it answers what it has
NEVER = 1 << 62  # a walk's step for what it is not asked for (no candle closes here)

EVENT_MARKETS = """SELECT ticker FROM markets WHERE event_ticker = %(event)s
LATEST ON ts PARTITION BY ticker"""
EVENT_META = """SELECT mutually_exclusive, series_ticker, raw FROM events
WHERE event_ticker = %(event)s LATEST ON ts PARTITION BY event_ticker"""
SERIES_RAW = """SELECT raw FROM series WHERE series_ticker = %(series)s
LATEST ON ts PARTITION BY series_ticker"""
MARKET_EVENT = """SELECT event_ticker, series_ticker FROM markets WHERE ticker = %(ticker)s
LATEST ON ts PARTITION BY ticker"""
# The markets by the event itself (EVENT_MARKETS as a subquery), so this need not wait
# for the list of them; a market it misses (listed between the two reads, or with no
# checkpoint within the lookback) is looked up by CHECKPOINTS_AT_UNBOUNDED.
EVENT_CHECKPOINTS_AT = f"""SELECT ticker, ts, sid, seq, reason, yes_levels, no_levels,
continuous_since FROM book_checkpoints WHERE ticker IN ({EVENT_MARKETS})
  AND ts >= %(since)s AND ts <= %(at)s
LATEST ON ts PARTITION BY ticker"""
CHECKPOINTS_AT_UNBOUNDED = """SELECT ticker, ts, sid, seq, reason, yes_levels, no_levels,
continuous_since FROM book_checkpoints WHERE ticker IN ({tickers}) AND ts <= %(at)s
LATEST ON ts PARTITION BY ticker"""
# Every market's rows since the oldest of their checkpoints, found through the ticker
# index (docs/performance.md, "Ticker indexes adopted"); a market's rows before its own
# checkpoint are skipped by the replay (apply_rows). Bounding each market by its own
# checkpoint (an OR of 20 bounds) returned half the rows yet cost more: QuestDB spent
# longer on the OR than the driver on the extra rows.
CHANGES_SINCE = """SELECT ticker, cast(ts AS LONG), side, price_e4, qty_after_e2, kind, seq, sid
FROM book_changes WHERE ticker IN ({tickers}) AND ts >= %(from)s AND ts <= %(at)s
ORDER BY ts, sid, seq"""
GAPS_AT = """SELECT ticker, ts, reason, start_ts, end_ts, expected_seq, got_seq FROM gaps
WHERE ticker IN ({tickers}) AND coalesce(start_ts, ts) <= %(at)s
  AND (end_ts IS NULL OR end_ts > %(at)s)
ORDER BY ts DESC"""
# `ts >= %(ts)s` is implied by the keyset condition but QuestDB only narrows the scan's
# interval by it when it stands alone: without it every chunk scanned from the table's
# first row (most of a snapshots page's cost). Times come as integer µs (a datetime per
# row, then µs again, cost more than the walk itself), in binary (QuestDB sends and the
# driver reads a binary row faster), the receive time only for quotes, which carry it.
CHANGES_AFTER = """SELECT cast(ts AS LONG), side, price_e4, qty_after_e2, kind, seq, sid{recv}
FROM book_changes WHERE ticker = %(ticker)s AND ts >= %(ts)s AND ts < %(end)s
  AND (ts > %(ts)s OR (ts = %(ts)s AND (sid > %(sid)s OR (sid = %(sid)s AND seq > %(seq)s))))
ORDER BY ts, sid, seq LIMIT %(limit)s"""
GAP_SPANS = """SELECT coalesce(start_ts, ts), end_ts FROM gaps WHERE ticker = %(ticker)s
  AND coalesce(start_ts, ts) < %(end)s AND (end_ts IS NULL OR end_ts > %(start)s)"""


SPARE_WAIT_SECS = 0.002


@asynccontextmanager
async def spare_connection(pool: AsyncConnectionPool, held: AsyncConnection
                           ) -> AsyncIterator[AsyncConnection]:
    """A second connection if the pool has one free now, else `held` itself (psycopg runs
    two tasks' queries on one connection one after the other). Never a wait for it: calls
    that each hold one connection and wait for a second would starve each other once
    they hold the whole pool."""
    try:
        spare = await pool.getconn(timeout=SPARE_WAIT_SECS)
    except PoolTimeout:
        yield held
        return
    try:
        yield spare
    finally:
        await pool.putconn(spare)


async def _fetchall(conn: AsyncConnection, query: Any, params: dict, binary: bool = False
                    ) -> list[tuple]:
    return await (await conn.execute(query, params, binary=binary)).fetchall()


async def _fetchone(conn: AsyncConnection, query: Any, params: dict) -> tuple | None:
    return await (await conn.execute(query, params)).fetchone()


def _depth(value: int, default: int) -> int:
    if value < 0 or value > MAX_DEPTH:
        raise InvalidArgument.field("depth", f"must be 0 to {MAX_DEPTH}")
    return value or default


def _levels(state: tuple[int, ...], at: int, depth: int,
            made: dict[tuple[int, int], md.PriceLevel]) -> list[md.PriceLevel]:
    """One side's levels of a walk's state (`depth` (price, qty) pairs from `at`, NULL
    when the side has fewer), each message made once per page (`made`)."""
    out = []
    for i in range(at, at + 2 * depth, 2):
        price = state[i]
        if price == NULL:
            break
        key = (price, state[i + 1])
        level = made.get(key)
        if level is None:
            level = made[key] = md.PriceLevel(price=format_price(price),
                                               quantity=format_quantity(key[1]))
        out.append(level)
    return out


class Spans:
    """When a market's book is proven, for the rows of a walk: from its first checkpoint,
    outside its gap spans [start, end) — GetOrderbook's answer at each instant."""

    def __init__(self, first_us: int | None, gaps: list[tuple[int, int | None]]) -> None:
        self.first_us = first_us
        self.gaps = gaps

    def status(self, us: int) -> int:
        if self.first_us is None or us < self.first_us:
            return md.CONTINUITY_STATUS_NOT_RECORDED
        for start, end in self.gaps:
            if start <= us and (end is None or us < end):
                return md.CONTINUITY_STATUS_GAP
        return md.CONTINUITY_STATUS_CONTINUOUS


class AnalyticsService(pb_grpc.AnalyticsServiceServicer):
    def __init__(self, pool: AsyncConnectionPool, tokens: PageTokens,
                 audit: AuditChecker | None = None) -> None:
        self.pool = pool
        self.tokens = tokens
        self.audit = audit or AuditChecker(pool)  # one per process: its settled verdicts

    # -- GetEventOrderbook --------------------------------------------------------------

    @_rpc
    async def GetEventOrderbook(self, request: pb.GetEventOrderbookRequest,
                                context: grpc.aio.ServicerContext) -> pb.GetEventOrderbookResponse:
        event = _ticker(request.event_ticker, "event_ticker")
        depth = _depth(request.depth, 0)
        at = instant(request)
        params = {"event": event, "at": at, "since": at - CHECKPOINT_LOOKBACK}
        # Two connections, so what does not wait on each other runs side by side: the
        # checkpoints of the event's markets (found by the event, not the list of its
        # markets) and then the changes since them on one, the event's row, its markets
        # and their gaps on the other (or on the same one, one after the other, when the
        # pool has none spare).
        async with self.pool.connection() as conn, spare_connection(self.pool, conn) as aside:
            replays, (meta, tickers, gap_rows) = await all_of(
                self._replays(conn, EVENT_CHECKPOINTS_AT, params),
                self._event_rows(aside, params))
            if meta is None and not tickers:
                raise NotFound(f"unknown event {event!r}", reason="UNKNOWN_EVENT",
                               metadata={"field": "event_ticker", "event_ticker": event})
            missing = [t for t in tickers if t not in replays]
            if missing:  # no checkpoint within the lookback: the unbounded lookup
                query, listed = bound_tickers(CHECKPOINTS_AT_UNBOUNDED, missing)
                replays |= await self._replays(conn, query, params | listed)
        gaps: dict[str, tuple] = {}
        for row in gap_rows:
            gaps.setdefault(str(row[0]), row[1:])  # newest first: the one GetOrderbook picks
        at = as_utc(at)
        books = {}
        for ticker in tickers:
            if ticker not in replays:
                books[ticker] = not_recorded(ticker, at, None)
                continue
            checkpoint, changes, parsed = replays[ticker]
            books[ticker] = assemble(ticker, at, checkpoint, changes, gaps.get(ticker), parsed)
        out = pb.GetEventOrderbookResponse(event_ticker=event,
                                           mutually_exclusive=bool(meta and meta[0]))
        out.at.CopyFrom(timestamp(at))
        bids = asks = 0
        for ticker in tickers:
            result = books[ticker]
            yes = max(result.book.yes) if result.book.yes else None
            no = max(result.book.no) if result.book.no else None
            bids += yes or 0
            asks += PRICE_SCALE - no if no is not None else PRICE_SCALE
            if result.continuity is not Continuity.CONTINUOUS:
                out.markets_not_continuous += 1
            market = out.markets.add(  # in place: an appended message is copied whole
                ticker=ticker, best_yes_bid=format_price(yes) if yes is not None else "",
                best_yes_ask=format_price(PRICE_SCALE - no) if no is not None else "",
                seq=result.seq or 0, continuity=continuity_message(result))
            fill_ladder(market.yes, result.book, "yes", depth)
            fill_ladder(market.no, result.book, "no", depth)
        out.sum_best_yes_bids = format_price(bids)
        out.sum_best_yes_asks = format_price(asks)
        return out

    async def _event_rows(self, conn: AsyncConnection, params: dict
                          ) -> tuple[tuple | None, list[str], list[tuple]]:
        """The event's row, its markets (sorted) and their gaps open at `at`."""
        meta = await _fetchone(conn, EVENT_META, params)
        tickers = sorted(str(r[0]) for r in await _fetchall(conn, EVENT_MARKETS, params))
        if not tickers:
            return meta, tickers, []
        query, listed = bound_tickers(GAPS_AT, tickers)  # gaps carry no ticker index
        return meta, tickers, await _fetchall(conn, query, params | listed)

    async def _replays(self, conn: AsyncConnection, checkpoints_query: Any, params: dict
                       ) -> dict[str, tuple[Checkpoint, list[tuple], Book]]:
        """For each market the query finds a checkpoint of: that checkpoint, its
        changes after it up to `at` (rows as sql.CHANGES_BETWEEN gives them) and its
        parsed book — assemble's arguments, with the ladders parsed while QuestDB scans
        the changes."""
        checkpoints = {str(r[0]): r[1:] for r in await _fetchall(conn, checkpoints_query, params)}
        if not checkpoints:
            return {}
        changes: dict[str, list[tuple]] = {t: [] for t in checkpoints}
        query = psql.SQL(CHANGES_SINCE).format(tickers=ticker_list(checkpoints))
        scan = asyncio.ensure_future(_fetchall(conn, query, {
            "from": min(as_utc(row[0]) for row in checkpoints.values()), "at": params["at"]},
            binary=True))
        try:
            await asyncio.sleep(0)  # the scan's query leaves; the ladders parse meanwhile
            made = {t: checkpoint_of(row) for t, row in checkpoints.items()}
            parsed = {t: checkpoint.book() for t, checkpoint in made.items()}
            rows = await scan
        finally:
            await cancel_and_wait([scan])
        for row in rows:
            changes[row[0]].append(row[1:])  # ticker: a str from the driver already
        return {t: (checkpoint, changes[t], parsed[t]) for t, checkpoint in made.items()}

    # -- SimulateOrder -------------------------------------------------------------------

    @_rpc
    async def SimulateOrder(self, request: pb.SimulateOrderRequest,
                            context: grpc.aio.ServicerContext) -> pb.SimulateOrderResponse:
        ticker = _ticker(request.ticker)
        if request.side not in ("yes", "no"):
            raise InvalidArgument.field("side", "must be yes or no")
        if request.action not in ("buy", "sell"):
            raise InvalidArgument.field("action", "must be buy or sell")
        if bool(request.quantity) == bool(request.max_cost):
            raise InvalidArgument.field("quantity", "give exactly one of quantity or max_cost")
        quantity_e2 = max_cost_e6 = None
        if request.quantity:
            quantity_e2 = _scaled(request.quantity, 2, "quantity")
        else:
            if request.action != "buy":
                raise InvalidArgument.field("max_cost", "applies to buys; give quantity to sell")
            max_cost_e6 = _scaled(request.max_cost, 6, "max_cost")
        at = instant(request)
        async with self.pool.connection() as conn:
            result = await orderbook_at(conn, ticker, at)
            owner = await (await conn.execute(MARKET_EVENT, {"ticker": ticker})).fetchone()
            if owner is None and result.seq is None:
                raise UnknownTicker(ticker)
            schedule = await self._fee_schedule(conn, owner)
        walked = simulate.walk(result.book, request.side, request.action,
                               quantity_e2=quantity_e2, max_cost_e6=max_cost_e6)
        out = pb.SimulateOrderResponse(
            ticker=ticker, filled_quantity=format_quantity(walked.filled_e2),
            total_cost=simulate.dollars_e6(walked.cost_e6),
            continuity=continuity_message(result))
        out.at.CopyFrom(timestamp(result.at))
        for fill in walked.fills:
            out.fills.append(pb.Fill(price=format_price(fill.price_e4),
                                     quantity=format_quantity(fill.qty_e2),
                                     cost=simulate.dollars_e6(fill.cost_e6)))
        out.partial = walked.partial
        average = simulate.average_e6(walked)
        if average is not None and walked.best_e4 is not None:
            best = Decimal(walked.best_e4) / PRICE_SCALE
            out.average_price = f"{average:.6f}"
            slip = average - best if request.action == "buy" else best - average
            out.slippage = f"{slip:.6f}"
        fee, note = simulate.taker_fee(walked.fills, schedule)
        out.fee = f"{fee:.2f}" if fee is not None else ""
        out.fee_note = note
        return out

    async def _fee_schedule(self, conn: AsyncConnection, owner: tuple | None
                            ) -> tuple[str, Decimal] | None:
        if owner is None:
            return None
        event_row = await (await conn.execute(EVENT_META, {"event": owner[0]})).fetchone()
        series = owner[1] or (event_row[1] if event_row else None)
        series_row = (await (await conn.execute(SERIES_RAW, {"series": series})).fetchone()
                      if series else None)
        return simulate.fee_schedule(series_row[0] if series_row else None,
                                     event_row[2] if event_row else None)

    # -- ListQuotes and ListOrderbookSnapshots --------------------------------------------

    async def _walk(self, conn: AsyncConnection, ticker: str, begin: dt.datetime,
                    end: dt.datetime, first_quote: bool, step_us: int, depth: int,
                    take: Callable[[list[Quote], list[Run]], bool], quotes: bool = True
                    ) -> tuple[Spans, int, bool]:
        """Walk `ticker`'s changes in (begin, end) from its book at `begin`, handing what
        the walk yields to `take` until it says enough or the end is reached (then the
        walk's last output too); (spans, last instant walked, reached the end)."""
        start = await orderbook_at(conn, ticker, begin)
        first = await (await conn.execute(sql.FIRST_CHECKPOINT, {"ticker": ticker})).fetchone()
        first_us = to_us(first[0]) if first and first[0] is not None else None
        if first_us is None and not await (await conn.execute(
                sql.TICKER_KNOWN, {"ticker": ticker})).fetchone():
            raise UnknownTicker(ticker)
        gaps = [(to_us(lo), None if hi is None else to_us(hi)) for lo, hi in await (
            await conn.execute(GAP_SPANS, {"ticker": ticker, "start": begin, "end": end})
        ).fetchall()]
        walk = BookWalk(start.book.copy(), start.seq or 0, 0, to_us(begin), to_us(end), first_us,
                        step_us=step_us, depth=depth, close_step_us=NEVER,
                        initial_quote=first_quote, quotes=quotes)
        key = {"ts": begin, "sid": 2**62, "seq": 2**62}  # after everything at `begin`
        scanned, last_us, enough = 0, to_us(begin), False
        spans = Spans(first_us, gaps)
        query = CHANGES_AFTER.format(recv=", cast(recv_ts AS LONG)" if quotes else "")
        while not enough and scanned < MAX_SCAN_PER_PAGE:
            rows = await (await conn.execute(query, {
                "ticker": ticker, "end": end, "limit": CHANGE_CHUNK, **key}, binary=True)).fetchall()
            if not rows:
                take(*walk.finish())
                return spans, last_us, True
            ts, side, price, qty, kind, seq, sid, *got = zip(*rows, strict=True)
            recv = got[0] if quotes else [None] * len(rows)
            enough = take(*walk.feed(ts, recv, kind, side, price, qty, seq, sid))
            scanned += len(rows)
            last_us = ts[-1]
            key = {"ts": from_us(last_us), "sid": sid[-1], "seq": seq[-1]}
            if not enough and len(rows) < CHANGE_CHUNK:  # that was all: no query to say so
                take(*walk.finish())
                return spans, last_us, True
        return spans, last_us, False

    @_rpc
    async def ListQuotes(self, request: pb.ListQuotesRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListQuotesResponse:
        w = page_window(self.tokens, "ListQuotes", request)
        size = w.size
        begin = from_us(int(w.after[0])) if w.after else w.start
        quotes: list[Quote] = []

        def take(found: list[Quote], _runs: list[Run]) -> bool:
            quotes.extend(found)
            return len(quotes) > size

        async with self.pool.connection() as conn:
            spans, last_us, done = await self._walk(
                conn, w.ticker, begin, w.end, w.after is None, NEVER, 0, take)
        page, more = quotes[:size], len(quotes) > size or not done
        out = pb.ListQuotesResponse()
        for ts, _recv, yp, yq, np_, nq, seq, _sid in page:
            quote = md_quote(ts, yp, yq, np_, nq, seq, spans.status(ts))
            out.quotes.append(quote)
        if more:
            # after the page's last quote; or, when the scan budget ran out first, just
            # before the last instant walked (its group may not be complete, and the last
            # quote is the book as of that instant minus one microsecond)
            resume = page[-1][0] if len(quotes) > size else last_us - 1
            out.next_page_token = w.token(self.tokens, [resume])
        return out

    @_rpc
    async def ListOrderbookSnapshots(self, request: pb.ListOrderbookSnapshotsRequest,
                                     context: grpc.aio.ServicerContext
                                     ) -> pb.ListOrderbookSnapshotsResponse:
        if request.interval not in INTERVALS:
            raise InvalidArgument.field("interval", "must be one of 1s, 1m, 1h")
        step = INTERVALS[request.interval]
        depth = _depth(request.depth, 10)
        w = page_window(self.tokens, "ListOrderbookSnapshots", request,
                        {"i": request.interval, "d": depth})
        first_boundary = int(w.after[0]) if w.after else -(-to_us(w.start) // step) * step
        page_end = min(to_us(w.end), first_boundary + w.size * step)
        out = pb.ListOrderbookSnapshotsResponse()
        if first_boundary >= to_us(w.end):
            return out
        runs: list[Run] = []

        def take(_quotes: list[Quote], found: list[Run]) -> bool:
            runs.extend(found)
            return False

        async with self.pool.connection() as conn:
            spans, _last, _done = await self._walk(
                conn, w.ticker, from_us(first_boundary), from_us(page_end), False, step, depth,
                take, quotes=False)
        levels: dict[tuple[int, int], md.PriceLevel] = {}  # a book's levels repeat run to run
        template, shown_yes, shown_no, mid = pb.OrderbookSnapshot(), None, None, 1 + 2 * depth
        add = out.snapshots.add
        for first, last, state in runs:
            # Most runs move the seq and one side at most: the other side's levels are as
            # the template holds them already.
            if (yes := state[1:mid]) != shown_yes:
                shown_yes = yes
                del template.yes[:]
                template.yes.extend(_levels(state, 1, depth, levels))
            if (no := state[mid:]) != shown_no:
                shown_no = no
                del template.no[:]
                template.no.extend(_levels(state, mid, depth, levels))
            template.seq = state[0]
            # One message per book, copied per boundary in C and given its time in place:
            # building each from the levels, a Timestamp through a datetime and appending
            # it (another copy) was most of a page's cost.
            for boundary in range(first, last + 1, step):
                if (status := spans.status(boundary)) != template.continuity:
                    template.continuity = status  # type: ignore[assignment]
                snapshot = add()
                snapshot.CopyFrom(template)
                set_us(snapshot.ts, boundary)
        if page_end < to_us(w.end):
            out.next_page_token = w.token(self.tokens, [page_end])
        return out

    # -- GetAuditReport ---------------------------------------------------------------------

    @_rpc
    async def GetAuditReport(self, request: pb.GetAuditReportRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetAuditReportResponse:
        """The day's samples checked against the recording (queryd/audit.py)."""
        if not request.date:
            raise InvalidArgument.field("date", "is required")
        day = request_date(request.date, "date", dt.date.min)
        series = _ticker(request.series_ticker, "series_ticker") if request.series_ticker else ""
        size = checked_page_size(request.page_size)
        digest = query_digest("GetAuditReport", {"date": day.isoformat(), "series": series})
        position = position_of(self.tokens, request.page_token, digest)
        offset = int(position[0]) if position else 0
        tickers = None
        if series:
            tickers = await self.audit.series_markets(series)
            if not tickers:
                raise NotFound(f"no series {series!r} is recorded", reason="UNKNOWN_SERIES",
                               metadata={"series_ticker": series})
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        verdicts = await self.audit.verdicts(start, start + dt.timedelta(days=1), tickers)
        series_of = await self.audit.series_of(sorted({v.sample.ticker for v in verdicts}))
        out, more = report_message(day, verdicts, series_of, series, offset, size)
        if more:
            out.next_page_token = self.tokens.seal(digest, [offset + size])
        return out


def md_quote(ts: int, yp: int, yq: int, np_: int, nq: int, seq: int, status: int) -> pb.Quote:
    quote = pb.Quote(seq=seq, continuity=status)
    set_us(quote.ts, ts)
    if yp != NULL:
        quote.best_yes_bid.price, quote.best_yes_bid.quantity = format_price(yp), format_quantity(yq)
    if np_ != NULL:
        quote.best_no_bid.price, quote.best_no_bid.quantity = format_price(np_), format_quantity(nq)
    return quote


def _scaled(text: str, places: int, field: str) -> int:
    """A positive decimal string with at most `places` decimals, as an integer scaled by 10^places."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidArgument.field(field, "must be a decimal number") from None
    if not value.is_finite() or value <= 0:
        raise InvalidArgument.field(field, "must be greater than 0")
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise InvalidArgument.field(field, f"at most {places} decimals")
    return int(scaled)


__all__ = ["CONTINUITY", "AnalyticsService"]
