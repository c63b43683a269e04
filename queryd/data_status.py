"""DataStatusService: per-market, per-day data conditions and incidents (public, free).

The facts come from QuestDB in a few grouped queries (one per kind, for every market of
the request at once); what they mean is decided in ktape/conditions.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
from psycopg_pool import AsyncConnectionPool

from ktape.clock import now_us
from ktape.conditions import (
    DayCondition,
    DayFacts,
    GapSpan,
    day_condition,
    day_start_us,
    incidents,
)
from ktape.errors import InvalidArgument, NotFound, rpc_handler
from ktape.log import get_logger
from ktape.marketdata.v1 import data_status_pb2 as pb
from ktape.marketdata.v1 import data_status_pb2_grpc as pb_grpc
from ktape.paging import PageTokens, checked_page_size, position_of, query_digest
from ktape.sql_lists import with_tickers
from queryd.audit import AuditChecker, mismatch_incidents
from queryd.convert import duration_us, timestamp
from queryd.service import _ticker, time_range
from queryd.timeutil import from_us, request_date, to_us

log = get_logger(__name__)
_rpc = rpc_handler(log)
MAX_DAYS = 31  # as every ranged read (queryd.service.MAX_RANGE)
MAX_TICKERS_LISTED = 100

MARKET = """SELECT ticker, open_time, close_time FROM markets WHERE ticker = %(ticker)s
LATEST ON ts PARTITION BY ticker"""
SERIES_MARKETS = """SELECT ticker, open_time, close_time FROM markets
WHERE series_ticker = %(series)s LATEST ON ts PARTITION BY ticker"""
COVERAGE_START = "SELECT ticker, min(ts) FROM book_checkpoints WHERE ticker IN ({tickers})"
DAY_FACTS = """SELECT ts, ticker, count(), min(ts), max(ts) FROM book_changes
WHERE ticker IN ({tickers}) AND ts >= %(start)s AND ts < %(end)s SAMPLE BY 1d ALIGN TO CALENDAR"""
GAPS = """SELECT ticker, reason, coalesce(start_ts, ts), end_ts FROM gaps
WHERE ticker IN ({tickers}) AND coalesce(start_ts, ts) < %(end)s
  AND (end_ts IS NULL OR end_ts > %(start)s)"""
RECORDED_SERIES = """SELECT series_ticker, count() FROM
(SELECT ticker, series_ticker FROM markets LATEST ON ts PARTITION BY ticker)
WHERE series_ticker IS NOT NULL AND series_ticker > %(after)s
ORDER BY series_ticker LIMIT %(limit)s"""
INCIDENT_ROWS = """SELECT ts, ticker, reason, start_ts, end_ts FROM gaps
WHERE ts >= %(start)s AND ts < %(end)s"""

CONDITIONS = {"AVAILABLE": pb.DATA_CONDITION_AVAILABLE, "DEGRADED": pb.DATA_CONDITION_DEGRADED,
              "MISSING": pb.DATA_CONDITION_MISSING, "PENDING": pb.DATA_CONDITION_PENDING}


def _us(value: dt.datetime | None) -> int | None:
    return None if value is None else to_us(value)


def _ts(us: int) -> Any:
    return timestamp(from_us(us))


class DataStatusService(pb_grpc.DataStatusServiceServicer):
    def __init__(self, pool: AsyncConnectionPool, tokens: PageTokens,
                 audit: AuditChecker | None = None) -> None:
        self.pool = pool
        self.tokens = tokens
        self.audit = audit or AuditChecker(pool)  # one per process: its settled verdicts

    @_rpc
    async def ListDataConditions(self, request: pb.ListDataConditionsRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> pb.ListDataConditionsResponse:
        if bool(request.ticker) == bool(request.series_ticker):
            raise InvalidArgument.field("ticker", "give exactly one of ticker or series_ticker")
        if request.ticker:
            _ticker(request.ticker)
        else:
            _ticker(request.series_ticker, "series_ticker")
        today = dt.datetime.now(dt.UTC).date()
        first = request_date(request.start_date, "start_date", today)
        last = request_date(request.end_date, "end_date", first)
        if last < first:
            raise InvalidArgument.field("end_date", "must not be before start_date")
        if (last - first).days >= MAX_DAYS:
            raise InvalidArgument.field("end_date", f"at most {MAX_DAYS} days in one request")
        size = checked_page_size(request.page_size)
        digest = query_digest("ListDataConditions", {
            "ticker": request.ticker, "series": request.series_ticker,
            "first": first.isoformat(), "last": last.isoformat()})
        position = position_of(self.tokens, request.page_token, digest)
        offset = int(position[0]) if position else 0
        rows = await self._conditions(request.ticker, request.series_ticker, first, last)
        page = rows[offset:offset + size]
        token = self.tokens.seal(digest, [offset + size]) if offset + size < len(rows) else ""
        return pb.ListDataConditionsResponse(conditions=page, next_page_token=token)

    async def _conditions(self, ticker: str, series: str, first: dt.date,
                          last: dt.date) -> list[pb.DayCondition]:
        start_us = day_start_us(first)
        end_us = day_start_us(last) + 86_400_000_000
        window = {"start": from_us(start_us), "end": from_us(end_us)}
        async with self.pool.connection() as conn:
            if ticker:
                markets = await (await conn.execute(MARKET, {"ticker": ticker})).fetchall()
                if not markets:
                    raise NotFound(f"no market {ticker!r} is recorded", reason="UNKNOWN_TICKER",
                                   metadata={"ticker": ticker})
            else:
                markets = await (await conn.execute(SERIES_MARKETS, {"series": series})).fetchall()
                if not markets:
                    raise NotFound(f"no series {series!r} is recorded", reason="UNKNOWN_SERIES",
                                   metadata={"series_ticker": series})
            tickers = sorted(str(m[0]) for m in markets)
            coverage = {str(t): _us(first_ts) for t, first_ts in
                        await (await conn.execute(with_tickers(COVERAGE_START, tickers))).fetchall()}
            facts: dict[tuple[str, dt.date], DayFacts] = {}
            for day, t, count, lo, hi in await (await conn.execute(
                    with_tickers(DAY_FACTS, tickers), window)).fetchall():
                facts[str(t), day.date()] = DayFacts(int(count), _us(lo), _us(hi))
            gaps: dict[str, list[GapSpan]] = {}
            for t, reason, lo, hi in await (await conn.execute(with_tickers(GAPS, tickers),
                                                               window)).fetchall():
                gaps.setdefault(str(t), []).append(GapSpan(to_us(lo), _us(hi), str(reason)))
        now = now_us()
        out: list[pb.DayCondition] = []
        for t, open_time, close_time in sorted(markets, key=lambda m: str(m[0])):
            day = first
            while day <= last:
                found = day_condition(str(t), day, now_us=now, coverage_start_us=coverage.get(str(t)),
                                      open_us=_us(open_time), close_us=_us(close_time),
                                      gaps=gaps.get(str(t), []), facts=facts.get((str(t), day)))
                if found is not None:
                    out.append(_condition_message(found))
                day += dt.timedelta(days=1)
        return out

    @_rpc
    async def ListIncidents(self, request: pb.ListIncidentsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListIncidentsResponse:
        start, end = time_range(request)  # start required, end default now, <= 31 days
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(INCIDENT_ROWS, {"start": start, "end": end})
                          ).fetchall()
        found = incidents([(to_us(ts), str(t), str(reason), _us(lo), _us(hi))
                           for ts, t, reason, lo, hi in rows])
        # audit disagreements (queryd/audit.py): computed from audit_books, never stored
        audited = await self.audit.verdicts(start, end)
        found = sorted(found + mismatch_incidents(audited), key=lambda i: i.detect_us,
                       reverse=True)
        out = pb.ListIncidentsResponse()
        for i in found:
            incident = out.incidents.add(
                detect_time=_ts(i.detect_us), start_time=_ts(i.start_us), reason=i.reason,
                market_count=len(i.tickers),
                tickers=sorted(i.tickers)[:MAX_TICKERS_LISTED] or
                (["*"] if i.subscription_wide else []))
            if i.end_us is not None:
                incident.end_time.CopyFrom(_ts(i.end_us))
        return out

    @_rpc
    async def ListRecordedSeries(self, request: pb.ListRecordedSeriesRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> pb.ListRecordedSeriesResponse:
        size = checked_page_size(request.page_size)
        digest = query_digest("ListRecordedSeries", {})
        position = position_of(self.tokens, request.page_token, digest)
        after = str(position[0]) if position else ""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(RECORDED_SERIES, {
                "after": after, "limit": size + 1})).fetchall()
        page, last = _series_page(rows, size)
        return pb.ListRecordedSeriesResponse(
            series=[pb.RecordedSeries(series_ticker=str(s), market_count=int(n))
                    for s, n in page],
            next_page_token=self.tokens.seal(digest, [last]) if last else "")


def _series_page(rows: list[tuple], size: int) -> tuple[list[tuple], str | None]:
    """The page and, when there is more, the last series ticker shown."""
    page = rows[:size]
    return page, (str(page[-1][0]) if len(rows) > size else None)


def _condition_message(found: DayCondition) -> pb.DayCondition:
    message = pb.DayCondition(
        ticker=found.ticker, date=found.date.isoformat(), condition=CONDITIONS[found.condition],
        gaps=[pb.GapInterval(start_time=_ts(span.start_us), end_time=_ts(span.end_us),
                             reason=span.reason, open=span.open) for span in found.spans],
        total_gap_duration=duration_us(found.total_gap_us),
        change_count=found.facts.changes)
    if found.facts.first_us is not None:
        message.first_change_time.CopyFrom(_ts(found.facts.first_us))
    if found.facts.last_us is not None:
        message.last_change_time.CopyFrom(_ts(found.facts.last_us))
    return message
