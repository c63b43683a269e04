"""The audit checker: does each REST book ingestd sampled (`audit_books`, ingestd/audit.py)
equal the recorded book at some instant of its window?

The window of a sample is [request sent - staleness allowance, response received]: the
REST book was read at some moment of its request, perhaps from an edge cache's copy a
little older, and Kalshi stamps changes in whole milliseconds (the allowance, stored with
each sample, is ingestd's KTAPE_AUDIT_STALENESS_ALLOWANCE_MS, docs/ingestd.md "Audit").

Cost: one query reads the day's samples, each with its market's last checkpoint before
the request (ASOF JOIN); one reads the sampled markets' gaps; then one query per batch of
up to 64 samples close in time reads their changes from checkpoint to window end. Each
sample's book at its window's start is GetOrderbook's own rule (queryd.orderbook.assemble);
one pass over the changes inside the window keeps a count of the levels that differ from
the REST book, updated per change, so an instant's comparison costs nothing extra; the
closest book is rebuilt only for a disagreement. A sample whose window touches a gap, or
starts before the market's recording began, is `unverified`: the recorded book is not
known there. Settled verdicts (window ended 10 minutes ago) are kept in memory, so a
report or the status page's week of incidents checks each sample once per process
(bench/query/audit.py, docs/performance.md "Audit").
GetAuditReport and ListIncidents (reason `audit_mismatch`) both read this module, so a
disagreement in the report is always an incident.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from psycopg import AsyncConnection
from psycopg import sql as psql
from psycopg_pool import AsyncConnectionPool

from ktape.book.ladder import Book, parse_ladder
from ktape.clock import now_us
from ktape.conditions import Incident
from ktape.marketdata.v1 import analytics_pb2 as pb
from ktape.sql_lists import any_of, ticker_list, with_tickers
from queryd import sql
from queryd.convert import continuity_message, duration_us, fill_ladder, timestamp
from queryd.orderbook import (
    CHECKPOINT_LOOKBACK,
    Continuity,
    GapSpan,
    OrderbookAt,
    assemble,
    checkpoint_of,
)
from queryd.timeutil import as_utc, from_us, to_us

AGREES, DISAGREES, UNVERIFIED = "agrees", "disagrees", "unverified"
MISMATCH_REASON = "audit_mismatch"
CONCURRENT_CHECKS = 4  # pool connections one report may hold at once

# The day's samples, each with the last checkpoint of its market at or before its request
# (keyed ASOF JOIN; the checkpoints bounded below like sql.CHECKPOINT_AT, so the join never
# reads back to the first partition). A checkpoint later than the window's start, or none,
# sends that sample to the exact lookup (sql.CHECKPOINT_AT at the window's start).
SAMPLES = """SELECT a.ts, a.ticker, a.response_ts, a.allowance_ms, a.yes_levels, a.no_levels,
       c.ts AS cp_ts, c.sid, c.seq, c.reason, c.yes_levels AS cp_yes, c.no_levels AS cp_no,
       c.continuous_since
FROM (SELECT * FROM audit_books WHERE ts >= %(start)s AND ts < %(end)s {only}) a
ASOF JOIN (SELECT * FROM book_checkpoints WHERE ts >= %(since)s AND ts < %(end)s) c
ON (ticker)
ORDER BY a.ts, a.ticker"""
ONLY_TICKERS = "AND ticker IN ({tickers})"
# Gaps of the sampled markets whose span [start, end) meets the day (and its windows).
GAPS = """SELECT ticker, reason, coalesce(start_ts, ts), end_ts FROM gaps
WHERE ticker IN ({tickers}) AND coalesce(start_ts, ts) <= %(end)s
  AND (end_ts IS NULL OR end_ts > %(start)s)"""
# The changes of a batch of samples, each from its checkpoint to its window's end, in
# application order (one scan of the batch's time span instead of one query a sample).
BATCH_CHANGES = """SELECT ticker, cast(ts AS LONG), side, price_e4, qty_after_e2, kind, seq, sid
FROM book_changes WHERE ticker IN ({tickers}) AND ts >= %(from)s AND ts <= %(to)s AND ({ranges})
ORDER BY ts, sid, seq"""
SERIES_OF = """SELECT ticker, series_ticker FROM markets WHERE ticker IN ({tickers})
LATEST ON ts PARTITION BY ticker"""
SERIES_MARKETS = """SELECT ticker FROM markets WHERE series_ticker = %(series)s
LATEST ON ts PARTITION BY ticker"""
# A sample's verdict is kept once its window ended this long ago: by then every gap that
# touches it has been detected (liveness 30 s, lag windows 40 s; docs/ingestd.md), except
# an ingest restart's, which is written when ingestd starts again — a verdict kept before
# that stays as it was until queryd restarts (docs/ingestd.md, "Audit").
SETTLED_US = 10 * 60 * 1_000_000
CACHE_SIZE = 100_000  # verdicts kept per queryd process (a week at 10 samples a minute)
BATCH_SAMPLES = 64  # samples whose changes one query reads
BATCH_SPAN_US = 15 * 60 * 1_000_000  # ... when their ranges lie within this span
MAX_ALLOWANCE_US = 60_000_000  # ingestd's bound on the allowance (ingestd/config.py)

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


@dataclass
class _Pending:
    """A sample on its way to a verdict: its checkpoint row (sql.CHECKPOINT_AT's shape)."""

    sample: Sample
    checkpoint: tuple | None


class AuditChecker:
    """Reads samples and checks them against the recording (QuestDB via `pool`)."""

    def __init__(self, pool: AsyncConnectionPool, *, settled_us: int = SETTLED_US,
                 cache_size: int = CACHE_SIZE) -> None:
        self.pool = pool
        self.settled_us = settled_us
        self.cache_size = cache_size
        # (ticker, request µs) -> verdict, for samples whose window ended `settled_us` ago
        self.cache: collections.OrderedDict[tuple[str, int], Verdict] = collections.OrderedDict()

    def _cached(self, sample: Sample) -> Verdict | None:
        key = (sample.ticker, sample.request_us)
        verdict = self.cache.get(key)
        if verdict is not None:
            self.cache.move_to_end(key)
        return verdict

    def _keep(self, verdict: Verdict, now: int) -> None:
        """Remember a settled verdict (an agreement without its book: it is never listed)."""
        sample = verdict.sample
        if now - sample.response_us < self.settled_us:
            return
        if verdict.outcome == AGREES:
            verdict = dataclasses.replace(verdict, book=Book(), continuity=None)
        self.cache[sample.ticker, sample.request_us] = verdict
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

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

    async def verdicts(self, start: dt.datetime, end: dt.datetime,
                       tickers: list[str] | None = None) -> list[Verdict]:
        """The verdict of every sample whose request was sent in [start, end) (of
        `tickers` only, when given), in request order."""
        if tickers is not None and not tickers:
            return []
        query = psql.SQL(SAMPLES).format(only=psql.SQL("") if tickers is None else
                                         with_tickers(ONLY_TICKERS, tickers))
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query, {
                "start": start, "end": end, "since": start - CHECKPOINT_LOOKBACK})).fetchall()
            samples = [(sample_of(r[:6]), r) for r in rows]
            known = {id(sample): v for sample, _r in samples
                     if (v := self._cached(sample)) is not None}
            pending = [_Pending(sample, None if r[6] is None else r[6:])
                       for sample, r in samples if id(sample) not in known]
            for item in pending:  # a checkpoint inside the window, or none in the lookback
                if item.checkpoint is None or to_us(item.checkpoint[0]) > item.sample.window_start_us:
                    item.checkpoint = await _checkpoint_at(conn, item.sample)
            sampled = sorted({p.sample.ticker for p in pending})
            gaps: dict[str, list[tuple[str, int, int | None]]] = {}
            if sampled:
                for t, reason, lo, hi in await (await conn.execute(with_tickers(GAPS, sampled), {
                        "start": start - dt.timedelta(microseconds=MAX_ALLOWANCE_US),
                        "end": end + dt.timedelta(hours=1)})).fetchall():
                    gaps.setdefault(str(t), []).append(
                        (str(reason), to_us(lo), None if hi is None else to_us(hi)))
        limit = asyncio.Semaphore(CONCURRENT_CHECKS)

        async def batch(items: list[_Pending]) -> list[Verdict]:
            async with limit:
                return await self._batch(items, gaps)

        recorded = [p for p in pending if p.checkpoint is not None]
        done = {id(v.sample): v for group in await asyncio.gather(
            *(batch(b) for b in _batches(recorded))) for v in group}
        done |= {id(p.sample): _not_recorded(p.sample) for p in pending if p.checkpoint is None}
        now = now_us()
        for verdict in done.values():
            self._keep(verdict, now)
        return [known.get(id(sample)) or done[id(sample)] for sample, _r in samples]

    async def _batch(self, items: list[_Pending], gaps: dict) -> list[Verdict]:
        """The verdicts of samples whose changes one query reads (its ranges bound as
        parameters: compiled once per batch size, ktape/sql_lists.py `any_of`)."""
        ranges, params = any_of("(ticker = {} AND ts >= {} AND ts <= {})", [
            (p.sample.ticker, as_utc(p.checkpoint[0]), from_us(p.sample.response_us))
            for p in items])
        params |= {"from": min(as_utc(p.checkpoint[0]) for p in items),
                   "to": max(from_us(p.sample.response_us) for p in items)}
        by_ticker: dict[str, list[tuple]] = {}
        async with self.pool.connection() as conn:
            query = psql.SQL(BATCH_CHANGES).format(
                ranges=ranges, tickers=ticker_list(sorted({p.sample.ticker for p in items})))
            for row in await (await conn.execute(query, params)).fetchall():
                by_ticker.setdefault(str(row[0]), []).append((row[1], *row[1:]))
        return [_verdict(p.sample, p.checkpoint, by_ticker.get(p.sample.ticker, []),
                         gaps.get(p.sample.ticker, [])) for p in items]


async def _checkpoint_at(conn: AsyncConnection, sample: Sample) -> tuple | None:
    """The last checkpoint at or before the window's start (GetOrderbook's lookup)."""
    params = {"ticker": sample.ticker, "at": from_us(sample.window_start_us),
              "since": from_us(sample.window_start_us) - CHECKPOINT_LOOKBACK}
    row = await (await conn.execute(sql.CHECKPOINT_AT, params)).fetchone()
    if row is None:
        row = await (await conn.execute(sql.CHECKPOINT_AT_UNBOUNDED, params)).fetchone()
    return row


def _batches(items: list[_Pending]) -> list[list[_Pending]]:
    """Samples in request order, cut into batches of at most BATCH_SAMPLES whose change
    ranges lie within BATCH_SPAN_US (a market idle since an old checkpoint goes alone)."""
    out: list[list[_Pending]] = []
    lo = hi = 0
    for item in items:
        first, last = to_us(item.checkpoint[0]), item.sample.response_us
        if out and len(out[-1]) < BATCH_SAMPLES and max(hi, last) - min(lo, first) <= BATCH_SPAN_US:
            out[-1].append(item)
            lo, hi = min(lo, first), max(hi, last)
        else:
            out.append([item])
            lo, hi = first, last
    return out


def _not_recorded(sample: Sample) -> Verdict:
    proof = OrderbookAt(sample.ticker, from_us(sample.window_start_us), Book(), None, None,
                        Continuity.NOT_RECORDED,
                        detail=f"{sample.ticker} was not recorded at the window's start")
    return Verdict(sample, UNVERIFIED, sample.response_us, Book(), 0,
                   differing_levels(Book(), sample.rest), proof)


def _verdict(sample: Sample, checkpoint: tuple, rows: list[tuple],
             gaps: list[tuple[str, int, int | None]]) -> Verdict:
    """One sample from its checkpoint and its market's rows of the batch (each row its
    µs time first, then BATCH_CHANGES' columns)."""
    cp_us, start_us, end_us = to_us(checkpoint[0]), sample.window_start_us, sample.response_us
    first = bisect.bisect_left(rows, cp_us, key=lambda r: r[0])
    split = bisect.bisect_right(rows, start_us, key=lambda r: r[0])
    last = bisect.bisect_right(rows, end_us, key=lambda r: r[0])
    at_start = assemble(sample.ticker, from_us(start_us), checkpoint_of(checkpoint),
                        [r[1:] for r in rows[first:split]], None)
    window: list[Row] = [(r[0], str(r[5]), str(r[2]), int(r[3]), int(r[4]), int(r[6]), int(r[7]))
                         for r in rows[split:last]]
    gap = next(((reason, lo, hi) for reason, lo, hi in gaps
                if lo <= end_us and (hi is None or hi > start_us)), None)
    if gap is not None:
        book = at_start.book.copy()
        seq = replay(book, at_start.seq or 0, window, len(window))
        return Verdict(sample, UNVERIFIED, end_us, book, seq, differing_levels(book, sample.rest),
                       _in_gap(at_start, gap))
    agrees, at_us, differing, book, seq = check_window(
        at_start.book, at_start.seq or 0, start_us, window, sample.rest)
    proof = OrderbookAt(sample.ticker, from_us(at_us), book, seq, None, Continuity.CONTINUOUS,
                        at_start.continuous_since)
    return Verdict(sample, AGREES if agrees else DISAGREES, at_us, book, seq, differing, proof)


def _in_gap(at_start: OrderbookAt, gap: tuple[str, int, int | None]) -> OrderbookAt:
    """The proof of an unverified sample's book: the gap its window touches."""
    reason, lo, hi = gap
    span = GapSpan(reason, from_us(lo), None if hi is None else from_us(hi), None, None)
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
    out = pb.AuditBook()
    fill_ladder(out.yes, book, "yes", 0)
    fill_ladder(out.no, book, "no", 0)
    return out


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
                   only_series: str = "", offset: int = 0, size: int | None = None
                   ) -> tuple[pb.GetAuditReportResponse, bool]:
    """The day's report: counts per series, then the listed samples [offset, offset +
    size) of every disagreement followed by every unverified sample (each by request
    time, as `verdicts` come); and whether more are listed after them."""
    counts: dict[str, dict[str, int]] = {}
    if only_series:
        counts[only_series] = {AGREES: 0, DISAGREES: 0, UNVERIFIED: 0}
    out = pb.GetAuditReportResponse(date=day.isoformat())
    for verdict in verdicts:
        series = series_of.get(verdict.sample.ticker, "")
        counts.setdefault(series, {AGREES: 0, DISAGREES: 0, UNVERIFIED: 0})[verdict.outcome] += 1
    listed = ([v for v in verdicts if v.outcome == DISAGREES]
              + [v for v in verdicts if v.outcome == UNVERIFIED])
    end = len(listed) if size is None else offset + size
    for verdict in listed[offset:end]:
        field = out.disagreements if verdict.outcome == DISAGREES else out.unverified
        field.append(sample_message(verdict, series_of.get(verdict.sample.ticker, "")))
    for series, n in sorted(counts.items()):
        out.series.append(pb.AuditSeriesDay(
            series_ticker=series, date=day.isoformat(), samples=sum(n.values()),
            agreements=n[AGREES], disagreements=n[DISAGREES], unverified=n[UNVERIFIED],
            agreement_rate=agreement_rate(n[AGREES], n[DISAGREES])))
    return out, end < len(listed)


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
