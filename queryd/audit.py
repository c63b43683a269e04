"""The audit checker: does each REST book ingestd sampled (`audit_books`, ingestd/audit.py)
equal the recorded book at some instant of its window?

The window of a sample is [request sent - staleness allowance, response received]: the
REST book was read at some moment of its request, perhaps from an edge cache's copy a
little older, and Kalshi stamps changes in whole milliseconds (the allowance, stored with
each sample, is ingestd's KTAPE_AUDIT_STALENESS_ALLOWANCE_MS, docs/ingestd.md "Audit").

Cost per sample: the book at the window's start by GetOrderbook's own rule (checkpoint
plus the changes since, queryd/orderbook.py), then one pass over the changes inside the
window keeping a count of the levels that differ from the REST book, updated per change
(so an instant's comparison costs nothing extra). The book at the closest instant is
rebuilt only for a disagreement. A sample whose window touches a gap, or starts before
the market's recording began, is `unverified`: the recorded book is not known there.
GetAuditReport and ListIncidents (reason `audit_mismatch`) both read this module, so a
disagreement in the report is always an incident.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from psycopg_pool import AsyncConnectionPool

from ktape.book.ladder import Book, parse_ladder
from ktape.conditions import Incident
from ktape.marketdata.v1 import analytics_pb2 as pb
from ktape.sql_lists import with_tickers
from queryd.convert import continuity_message, duration_us, ladder, timestamp
from queryd.orderbook import Continuity, GapSpan, OrderbookAt, orderbook_at
from queryd.timeutil import as_utc, from_us, to_us

AGREES, DISAGREES, UNVERIFIED = "agrees", "disagrees", "unverified"
MISMATCH_REASON = "audit_mismatch"
CONCURRENT_CHECKS = 4  # pool connections one report may hold at once

SAMPLES = """SELECT ts, ticker, response_ts, allowance_ms, yes_levels, no_levels
FROM audit_books WHERE ts >= %(start)s AND ts < %(end)s ORDER BY ts, ticker"""
SAMPLES_OF = """SELECT ts, ticker, response_ts, allowance_ms, yes_levels, no_levels
FROM audit_books WHERE ticker IN ({tickers}) AND ts >= %(start)s AND ts < %(end)s
ORDER BY ts, ticker"""
# Changes inside a window after its start instant, in application order (as
# sql.CHANGES_BETWEEN, but the start is exclusive: those rows are in the start book).
WINDOW_CHANGES = """SELECT ts, kind, side, price_e4, qty_after_e2, seq, sid FROM book_changes
WHERE ticker = %(ticker)s AND ts > %(start)s AND ts <= %(end)s ORDER BY ts, sid, seq"""
# Gaps whose span [start, end) meets the window [start, end] (open gaps run to now).
WINDOW_GAP = """SELECT reason, coalesce(start_ts, ts), end_ts FROM gaps
WHERE ticker = %(ticker)s AND coalesce(start_ts, ts) <= %(end)s
  AND (end_ts IS NULL OR end_ts > %(start)s)
ORDER BY 2 LIMIT 1"""
SERIES_OF = """SELECT ticker, series_ticker FROM markets WHERE ticker IN ({tickers})
LATEST ON ts PARTITION BY ticker"""
SERIES_MARKETS = """SELECT ticker FROM markets WHERE series_ticker = %(series)s
LATEST ON ts PARTITION BY ticker"""

Row = tuple[int, str, str, int, int, int, int]  # ts µs, kind, side, price, qty, seq, sid


@dataclass(frozen=True)
class Sample:
    ticker: str
    request_us: int
    response_us: int
    allowance_us: int
    rest: Book

    @property
    def window_start_us(self) -> int:
        return self.request_us - self.allowance_us


@dataclass(frozen=True)
class Verdict:
    """What one sample's window showed; `book` is the recorded book at `at_us` (the
    instant of agreement, or the closest instant of a disagreement)."""

    sample: Sample
    outcome: str
    at_us: int
    book: Book
    seq: int
    differing: int
    continuity: OrderbookAt | None = None  # the recorded book's proof at `at_us`


def differing_levels(a: Book, b: Book) -> int:
    """Levels (side, price) whose sizes differ (a level missing on one side counts)."""
    count = 0
    for side in ("yes", "no"):
        x, y = a.side(side), b.side(side)
        count += sum(1 for p in x.keys() | y.keys() if x.get(p) != y.get(p))
    return count


def _apply(book: Book, rows: Sequence[Row], i: int, snapshot: tuple[int, int, int] | None
           ) -> tuple[bool, tuple[int, int, int] | None]:
    """Apply row `i` (GetOrderbook's rule: the rows of one exchange snapshot, same ts, sid
    and seq, replace the book); whether the book was cleared first, and the snapshot key."""
    ts, kind, side, price, qty, seq, sid = rows[i]
    cleared = False
    if kind == "snapshot":
        key = (ts, sid, seq)
        if key != snapshot:
            book.clear()
            cleared, snapshot = True, key
    else:
        snapshot = None
    book.set_level(side, price, qty)
    return cleared, snapshot


def check_window(start: Book, start_seq: int, start_us: int, rows: Sequence[Row],
                 rest: Book) -> tuple[bool, int, int, Book, int]:
    """Walk `rows` (the changes in (start_us, window end], in (ts, sid, seq) order) from
    `start` (the book at `start_us`), comparing the book with `rest` at every instant:
    (agrees, instant, levels differing, the book then, its seq). The instant is the first
    one of agreement, else the one with the fewest differing levels (the latest of ties)."""
    book = start.copy()
    diff = differing_levels(book, rest)
    if diff == 0:
        return True, start_us, 0, book, start_seq
    best_us, best_diff, best_i = start_us, diff, -1
    snapshot: tuple[int, int, int] | None = None
    for i, (ts, _kind, side, price, _qty, _seq, _sid) in enumerate(rows):
        ladder, want = book.side(side), rest.side(side)
        before = ladder.get(price) != want.get(price)
        cleared, snapshot = _apply(book, rows, i, snapshot)
        if cleared:
            diff = differing_levels(book, rest)
        else:
            diff += (ladder.get(price) != want.get(price)) - before
        if i + 1 < len(rows) and rows[i + 1][0] == ts:
            continue  # an instant's book is the one after all its rows
        if diff == 0:
            return True, ts, 0, book, rows[i][5]
        if diff <= best_diff:
            best_us, best_diff, best_i = ts, diff, i
    closest = start.copy()
    return False, best_us, best_diff, closest, replay(closest, start_seq, rows, best_i + 1)


def replay(book: Book, seq: int, rows: Sequence[Row], count: int) -> int:
    """Apply the first `count` rows to `book`; the seq of the last one applied."""
    snapshot: tuple[int, int, int] | None = None
    for i in range(count):
        _cleared, snapshot = _apply(book, rows, i, snapshot)
        seq = rows[i][5]
    return seq


def sample_of(row: tuple) -> Sample:
    ts, ticker, response_ts, allowance_ms, yes_levels, no_levels = row
    return Sample(str(ticker), to_us(ts), to_us(response_ts), int(allowance_ms) * 1000,
                  Book(parse_ladder(yes_levels), parse_ladder(no_levels)))


class AuditChecker:
    """Reads samples and checks them against the recording (QuestDB via `pool`)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def samples(self, start: dt.datetime, end: dt.datetime,
                      tickers: list[str] | None = None) -> list[Sample]:
        """Samples whose request was sent in [start, end), optionally of `tickers` only."""
        if tickers is not None and not tickers:
            return []
        window = {"start": start, "end": end}
        async with self.pool.connection() as conn:
            query = SAMPLES if tickers is None else with_tickers(SAMPLES_OF, tickers)
            rows = await (await conn.execute(query, window)).fetchall()
        return [sample_of(r) for r in rows]

    async def series_markets(self, series: str) -> list[str]:
        async with self.pool.connection() as conn:
            return sorted(str(r[0]) for r in await (await conn.execute(
                SERIES_MARKETS, {"series": series})).fetchall())

    async def series_of(self, tickers: list[str]) -> dict[str, str]:
        if not tickers:
            return {}
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(with_tickers(SERIES_OF, tickers))).fetchall()
        return {str(t): str(s or "") for t, s in rows}

    async def check_all(self, samples: list[Sample]) -> list[Verdict]:
        """Every sample's verdict, in the samples' order, a few at a time."""
        limit = asyncio.Semaphore(CONCURRENT_CHECKS)

        async def one(sample: Sample) -> Verdict:
            async with limit:
                return await self.check(sample)

        return list(await asyncio.gather(*(one(s) for s in samples)))

    async def check(self, sample: Sample) -> Verdict:
        start, end = from_us(sample.window_start_us), from_us(sample.response_us)
        async with self.pool.connection() as conn:
            at_start = await orderbook_at(conn, sample.ticker, start)
            gap = await (await conn.execute(WINDOW_GAP, {
                "ticker": sample.ticker, "start": start, "end": end})).fetchone()
            rows = [(to_us(ts), str(kind), str(side), int(price), int(qty), int(seq), int(sid))
                    for ts, kind, side, price, qty, seq, sid in await (await conn.execute(
                        WINDOW_CHANGES, {"ticker": sample.ticker, "start": start, "end": end})
                    ).fetchall()]
        if at_start.continuity is Continuity.NOT_RECORDED or gap is not None:
            book = at_start.book.copy()
            seq = replay(book, at_start.seq or 0, rows, len(rows))
            proof = at_start if gap is None else _in_gap(at_start, gap)
            return Verdict(sample, UNVERIFIED, sample.response_us, book, seq,
                           differing_levels(book, sample.rest), proof)
        agrees, at_us, differing, book, seq = check_window(
            at_start.book, at_start.seq or 0, sample.window_start_us, rows, sample.rest)
        proof = OrderbookAt(sample.ticker, from_us(at_us), book, seq, None,
                            Continuity.CONTINUOUS, at_start.continuous_since)
        return Verdict(sample, AGREES if agrees else DISAGREES, at_us, book, seq, differing,
                       proof)


def _in_gap(at_start: OrderbookAt, gap: tuple) -> OrderbookAt:
    """The proof of an unverified sample's book: the gap its window touches."""
    reason, lo, hi = gap
    span = GapSpan(str(reason), as_utc(lo), None if hi is None else as_utc(hi), None, None)
    return OrderbookAt(at_start.ticker, at_start.at, at_start.book, at_start.seq, None,
                       Continuity.GAP, gap=span,
                       detail=f"the window touches a {span.reason} gap")


# -- the report -------------------------------------------------------------------------

RATE_PLACES = Decimal("0.0001")


def agreement_rate(agreements: int, disagreements: int) -> str:
    """agreements / verified, cut to 4 places (never rounded up to a better rate)."""
    verified = agreements + disagreements
    if verified == 0:
        return ""
    return str((Decimal(agreements) / Decimal(verified)).quantize(RATE_PLACES, ROUND_FLOOR))


def _book_message(book: Book) -> pb.AuditBook:
    return pb.AuditBook(yes=ladder(book, "yes", 0), no=ladder(book, "no", 0))


def sample_message(verdict: Verdict, series: str) -> pb.AuditSample:
    sample = verdict.sample
    out = pb.AuditSample(
        ticker=sample.ticker, series_ticker=series, rest_book=_book_message(sample.rest),
        recorded_book=_book_message(verdict.book), recorded_seq=verdict.seq,
        levels_differing=verdict.differing,
        staleness_allowance=duration_us(sample.allowance_us))
    out.request_time.CopyFrom(timestamp(from_us(sample.request_us)))
    out.response_time.CopyFrom(timestamp(from_us(sample.response_us)))
    out.window_start_time.CopyFrom(timestamp(from_us(sample.window_start_us)))
    out.recorded_time.CopyFrom(timestamp(from_us(verdict.at_us)))
    if verdict.continuity is not None:
        out.continuity.CopyFrom(continuity_message(verdict.continuity))
    return out


def report_message(day: dt.date, verdicts: list[Verdict], series_of: dict[str, str],
                   only_series: str = "") -> pb.GetAuditReportResponse:
    """The day's report: counts per series, then every disagreement and every unverified
    sample (both by request time, as `verdicts` come)."""
    counts: dict[str, dict[str, int]] = {}
    if only_series:
        counts[only_series] = {AGREES: 0, DISAGREES: 0, UNVERIFIED: 0}
    out = pb.GetAuditReportResponse(date=day.isoformat())
    for verdict in verdicts:
        series = series_of.get(verdict.sample.ticker, "")
        counts.setdefault(series, {AGREES: 0, DISAGREES: 0, UNVERIFIED: 0})[verdict.outcome] += 1
        if verdict.outcome == DISAGREES:
            out.disagreements.append(sample_message(verdict, series))
        elif verdict.outcome == UNVERIFIED:
            out.unverified.append(sample_message(verdict, series))
    for series, n in sorted(counts.items()):
        out.series.append(pb.AuditSeriesDay(
            series_ticker=series, date=day.isoformat(), samples=sum(n.values()),
            agreements=n[AGREES], disagreements=n[DISAGREES], unverified=n[UNVERIFIED],
            agreement_rate=agreement_rate(n[AGREES], n[DISAGREES])))
    return out


# -- incidents --------------------------------------------------------------------------

INCIDENT_JOIN_US = 300_000_000  # disagreements this close in time are one incident


def mismatch_incidents(verdicts: list[Verdict], join_us: int = INCIDENT_JOIN_US
                       ) -> list[Incident]:
    """Disagreements as incidents (reason `audit_mismatch`), newest first: each opens one,
    and later ones within `join_us` of the last join it, so a lasting fault is one
    incident naming every market it showed in. Its span runs from the earliest window
    start to the latest response; detected when the first response arrived."""
    found: list[Incident] = []
    for verdict in sorted((v for v in verdicts if v.outcome == DISAGREES),
                          key=lambda v: v.sample.response_us):
        sample = verdict.sample
        current = found[-1] if found else None
        if current is None or sample.response_us - current.last_detect_us > join_us:
            current = Incident(sample.response_us, MISMATCH_REASON, sample.window_start_us,
                               sample.response_us)
            found.append(current)
        current.last_detect_us = sample.response_us
        current.start_us = min(current.start_us, sample.window_start_us)
        current.end_us = max(current.end_us or 0, sample.response_us)
        current.tickers.add(sample.ticker)
    return found[::-1]
