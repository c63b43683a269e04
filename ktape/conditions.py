"""Data conditions and incidents from recorded facts: pure functions, no store access.

A (market, UTC day) is listed when the market was open at some instant of the day or
anything of it was recorded. Within the market's open part of the day, the spans that are
not continuously recorded are: before recording of the market began (`not_recorded`),
and every gap's span [start, end) (an open gap runs to now, and its span is marked open:
its end is not a heal). Then:
- PENDING: the day has not closed (its spans so far are listed);
- MISSING: those spans cover the market's whole open part of the day;
- DEGRADED: some spans; AVAILABLE: none.
A quiet market with no change all day is AVAILABLE: a book stays proven until a gap.

An incident is a burst of gap rows of one connection-wide reason (a reconnect, a restart,
a lost subscription or a seq jump on a shared subscription) detected within a couple of
seconds of each other for two or more markets, or a subscription-wide row (ticker `*`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

DAY_US = 86_400_000_000
INCIDENT_WINDOW_US = 2_000_000
CONNECTION_REASONS = frozenset({"reconnect", "ingest_restart", "seq_jump", "unsubscribed",
                                "error_10", "error_25"})
EPOCH = dt.date(1970, 1, 1)
NOT_RECORDED = "not_recorded"  # the reason of a span before recording of a market began


@dataclass(frozen=True)
class GapSpan:
    start_us: int
    end_us: int | None  # None: still open
    reason: str


@dataclass(frozen=True)
class DayFacts:
    changes: int
    first_us: int | None
    last_us: int | None


@dataclass(frozen=True)
class Span:
    """One span of a day not continuously recorded: [start, end), the reason of its
    earliest gap, and whether a gap of it is still open (so `end_us` is now or a bound
    of the day, not when it healed)."""

    start_us: int
    end_us: int
    reason: str
    open: bool = False


@dataclass(frozen=True)
class DayCondition:
    ticker: str
    date: dt.date
    condition: str  # AVAILABLE | DEGRADED | MISSING | PENDING
    spans: tuple[Span, ...]
    total_gap_us: int
    facts: DayFacts


def day_start_us(day: dt.date) -> int:
    return (day - EPOCH).days * DAY_US


def day_condition(ticker: str, day: dt.date, *, now_us: int, coverage_start_us: int | None,
                  open_us: int | None, close_us: int | None, gaps: list[GapSpan],
                  facts: DayFacts | None) -> DayCondition | None:
    """The condition of one market on one day; None when the market was neither open
    nor recorded that day."""
    start = day_start_us(day)
    end = start + DAY_US
    facts = facts or DayFacts(0, None, None)
    was_open = (open_us is None or open_us < end) and (close_us is None or close_us > start)
    if not was_open and facts.changes == 0:
        return None
    lo = max(start, open_us) if open_us is not None else start
    hi = min(end, now_us, close_us) if close_us is not None else min(end, now_us)
    hi = max(lo, hi)
    raw: list[Span] = []
    if coverage_start_us is None or coverage_start_us > lo:
        raw.append(Span(lo, hi if coverage_start_us is None else min(hi, coverage_start_us),
                        NOT_RECORDED))
    for gap in gaps:
        s, e = max(gap.start_us, lo), min(hi if gap.end_us is None else gap.end_us, hi)
        if e > s:
            raw.append(Span(s, e, gap.reason, open=gap.end_us is None))
    spans = merge(raw)
    total = sum(span.end_us - span.start_us for span in spans)
    if end > now_us:
        condition = "PENDING"
    elif hi > lo and total >= hi - lo:
        condition = "MISSING"
    elif spans:
        condition = "DEGRADED"
    else:
        condition = "AVAILABLE"
    return DayCondition(ticker, day, condition, tuple(spans), total, facts)


def merge(spans: list[Span]) -> list[Span]:
    """Overlapping or touching spans as one (the earliest one's reason; open when any of
    them is: an open gap's span reaches the end of every span it joins) — except that
    time before recording began stays its own span beside a gap that merely starts where
    recording began (a quiet market's first gap starts at its first snapshot): joined,
    the gap would be listed as `not_recorded`."""
    def joins(last: Span, span: Span) -> bool:
        if span.start_us != last.end_us:
            return span.start_us < last.end_us
        return (span.reason == NOT_RECORDED) == (last.reason == NOT_RECORDED)

    out: list[Span] = []
    for span in sorted(spans, key=lambda g: (g.start_us, g.end_us, g.reason)):
        if span.end_us <= span.start_us:
            continue
        if out and joins(out[-1], span):
            last = out[-1]
            out[-1] = Span(last.start_us, max(last.end_us, span.end_us), last.reason,
                           last.open or span.open)
        else:
            out.append(span)
    return out


@dataclass
class Incident:
    detect_us: int
    reason: str
    start_us: int
    end_us: int | None
    tickers: set[str] = field(default_factory=set)
    last_detect_us: int = 0
    subscription_wide: bool = False


def incidents(rows: list[tuple[int, str, str, int | None, int | None]], *,
              window_us: int = INCIDENT_WINDOW_US, min_markets: int = 2) -> list[Incident]:
    """Incidents among gap rows (detect µs, ticker, reason, start µs, end µs), newest
    first. Start unknown → the detection time; end None → still open."""
    open_by_reason: dict[str, Incident] = {}
    found: list[Incident] = []
    for detect, ticker, reason, start, end in sorted(rows):
        wide = ticker == "*"
        if not wide and reason not in CONNECTION_REASONS:
            continue
        current = open_by_reason.get(reason)
        if current is None or detect - current.last_detect_us > window_us:
            current = open_by_reason[reason] = Incident(detect, reason, start or detect, end)
            found.append(current)
        current.last_detect_us = detect
        current.start_us = min(current.start_us, start if start is not None else detect)
        if current.end_us is not None:
            current.end_us = None if end is None else max(current.end_us, end)
        if wide:
            current.subscription_wide = True
        else:
            current.tickers.add(ticker)
    kept = [i for i in found if i.subscription_wide or len(i.tickers) >= min_markets]
    return sorted(kept, key=lambda i: i.detect_us, reverse=True)
