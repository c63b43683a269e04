"""Derived views of one market's day, from one walk over its changes: the top 10 levels
at every whole second (`book_top10_1s`), every change of either best bid (`quotes`), and
the best bid and ask just before every minute's end (the closes of `candles_1m`).

The walk applies rows by the replay rule of ktape/book/reconstruct.py (rows in
(ts, sid, seq) order; rows of one exchange snapshot replace the book), starting from the
book as it stood just before the day began. Instants follow GetOrderbook's rule: the book
"at T" counts changes stamped exactly T; a candle's close is the book just before the
minute's end, as ListCandles computes it. The walk yields rows as seconds pass, so a
market's day is never held whole; repeated seconds are expanded with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from datasetd.columns import DEPTH, TS, parquet_schema
from ktape.book.ladder import PRICE_SCALE, Book

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
NULL = np.iinfo(np.int64).min  # in the numpy staging arrays only; written as null


def ceil_to(us: int, step: int) -> int:
    return -(-us // step) * step


@dataclass(frozen=True)
class Continuity:
    """When a market's book is proven: from `coverage_us` (its first checkpoint) on,
    except inside the gap spans [start, end) (end None: still open)."""

    coverage_us: int | None
    spans: Sequence[tuple[int, int | None]]

    def of(self, ts: np.ndarray) -> pa.Array:
        out = np.full(len(ts), "CONTINUOUS", dtype=object)
        for start, end in self.spans:
            hit = (ts >= start) if end is None else ((ts >= start) & (ts < end))
            out[hit] = "GAP"
        if self.coverage_us is None:
            out[:] = "NOT_RECORDED"
        else:
            out[ts < self.coverage_us] = "NOT_RECORDED"
        return pa.array(out, pa.string())


def _column(values: np.ndarray) -> pa.Array:
    mask = values == NULL
    return pa.array(values, pa.int64(), mask=mask if mask.any() else None)


@dataclass
class MarketWalk:
    """Walks one market's rows of one day; `feed` the rows in order, then `finish`."""

    ticker: str
    book: Book
    seq: int
    sid: int
    start_us: int  # the day's start
    end_us: int  # exclusive: the day's end, or now for a day not closed
    continuity: Continuity
    _next_second: int = 0
    _next_minute_end: int = 0
    _state: tuple[int, ...] | None = None  # seq + top levels, None when stale
    _runs: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)
    _quotes: list[tuple[int, int, int, int, int, int, int, int]] = field(default_factory=list)
    _last_quote: tuple[int, int, int, int] | None = None
    _first_instant: int | None = None  # where the initial quote goes, until it is written
    _group_ts: int | None = None
    _group_recv: int = NULL
    _snapshot_key: tuple[int, int, int] | None = None
    closes: list[tuple[int, int | None, int | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        first = self.start_us if self.continuity.coverage_us is None else max(
            self.start_us, self.continuity.coverage_us)
        # a market with no recorded book has no seconds to show (GetOrderbook: NOT_RECORDED)
        self._next_second = (ceil_to(first, SECOND_US) if self.continuity.coverage_us is not None
                             else ceil_to(self.end_us, SECOND_US))
        self._next_minute_end = self.start_us + MINUTE_US
        if self.continuity.coverage_us is not None and first < self.end_us:
            self._first_instant = first

    # -- the book's summaries -----------------------------------------------------------

    def _top(self) -> tuple[int, int, int, int]:
        yes = max(self.book.yes) if self.book.yes else None
        no = max(self.book.no) if self.book.no else None
        return (NULL if yes is None else yes, NULL if yes is None else self.book.yes[yes],
                NULL if no is None else no, NULL if no is None else self.book.no[no])

    def _levels(self) -> tuple[int, ...]:
        if self._state is None:
            out: list[int] = [self.seq]
            for side in (self.book.yes, self.book.no):
                best = sorted(side.items(), reverse=True)[:DEPTH]
                for price, qty in best:
                    out += (price, qty)
                out += (NULL, NULL) * (DEPTH - len(best))
            self._state = tuple(out)
        return self._state

    # -- time passing -------------------------------------------------------------------

    def _seconds_before(self, t: int) -> None:
        """Every whole second S < t (and before the end) has the current book."""
        last = min(t - 1, self.end_us - 1) // SECOND_US * SECOND_US
        if last >= self._next_second:
            self._runs.append((self._next_second, last, self._levels()))
            self._next_second = last + SECOND_US

    def _minutes_until(self, t: int) -> None:
        """Every minute end M <= t (within the day) closes on the current book."""
        while self._next_minute_end <= t and self._next_minute_end <= self.start_us + 86_400 * SECOND_US:
            top = self._top()
            bid = None if top[0] == NULL else top[0]
            ask = None if top[2] == NULL else PRICE_SCALE - top[2]
            self.closes.append((self._next_minute_end - MINUTE_US, bid, ask))
            self._next_minute_end += MINUTE_US

    def _initial_quote(self, t: int) -> None:
        """The quote as the day (or the recording) begins, unless a change at that very
        instant makes the first quote itself."""
        first, self._first_instant = self._first_instant, None
        if first is not None and t > first:
            self._last_quote = self._top()
            self._quotes.append((first, NULL, *self._last_quote, self.seq, self.sid))

    def _end_group(self) -> None:
        if self._group_ts is None:
            return
        top = self._top()
        if top != self._last_quote:
            self._quotes.append((self._group_ts, self._group_recv, *top, self.seq, self.sid))
            self._last_quote = top

    # -- feeding ------------------------------------------------------------------------

    def feed(self, ts: Sequence[int], recv: Sequence[int | None], kind: Sequence[str],
             side: Sequence[str], price: Sequence[int], qty: Sequence[int],
             seq: Sequence[int], sid: Sequence[int]) -> tuple[pa.Table, pa.Table]:
        """Apply rows (µs times, in (ts, sid, seq) order); the quotes and top-10 rows
        whose instants have passed."""
        book = self.book
        for i in range(len(ts)):
            t = ts[i]
            if t != self._group_ts:
                self._end_group()
                if self._first_instant is not None:
                    self._initial_quote(t)
                self._minutes_until(t)
                self._seconds_before(t)
                self._group_ts = t
            if kind[i] == "snapshot":
                key = (t, sid[i], seq[i])
                if key != self._snapshot_key:
                    book.clear()
                    self._snapshot_key = key
            else:
                self._snapshot_key = None
            ladder = book.yes if side[i] == "yes" else book.no
            if qty[i] > 0:
                ladder[price[i]] = qty[i]
            else:
                ladder.pop(price[i], None)
            self.seq, self.sid = seq[i], sid[i]
            self._group_recv = NULL if recv[i] is None else recv[i]
            self._state = None
        return self._drain()

    def finish(self) -> tuple[pa.Table, pa.Table]:
        self._end_group()
        self._group_ts = None
        if self._first_instant is not None:
            self._initial_quote(self.end_us)
        self._minutes_until(self.start_us + 86_400 * SECOND_US)
        self._seconds_before(self.end_us)
        return self._drain()

    def _drain(self) -> tuple[pa.Table, pa.Table]:
        quotes, self._quotes = self._quotes, []
        runs, self._runs = self._runs, []
        return self._quote_table(quotes), self._top10_table(runs)

    def _quote_table(self, rows: list[tuple[int, ...]]) -> pa.Table:
        schema = parquet_schema("quotes")
        if not rows:
            return schema.empty_table()
        data = np.array(rows, dtype=np.int64)
        ts = data[:, 0]
        columns = [pa.array(ts, TS), pa.array(data[:, 1], TS, mask=data[:, 1] == NULL),
                   pa.array([self.ticker] * len(rows), pa.string()), self.continuity.of(ts)]
        columns += [_column(data[:, j]) for j in range(2, 8)]
        return pa.Table.from_arrays(columns, schema=schema)

    def _top10_table(self, runs: list[tuple[int, int, tuple[int, ...]]]) -> pa.Table:
        schema = parquet_schema("book_top10_1s")
        if not runs:
            return schema.empty_table()
        counts = np.array([(last - first) // SECOND_US + 1 for first, last, _ in runs])
        states = np.array([state for _, _, state in runs], dtype=np.int64)
        starts = np.repeat(np.array([first for first, _, _ in runs], dtype=np.int64), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        ts = starts + offsets * SECOND_US
        expanded = np.repeat(states, counts, axis=0)
        columns = [pa.array(ts, TS), pa.array([self.ticker] * len(ts), pa.string()),
                   self.continuity.of(ts)]
        columns += [_column(expanded[:, j]) for j in range(expanded.shape[1])]
        return pa.Table.from_arrays(columns, schema=schema)
