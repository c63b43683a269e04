"""Derived views of one market's day, from one walk over its changes: the top 10 levels
at every whole second (`book_top10_1s`), every change of either best bid (`quotes`), and
the best bid and ask just before every minute's end (the closes of `candles_1m`).

The walk itself is ktape/book/walk.py (shared with queryd's ListQuotes and
ListOrderbookSnapshots), started from the book as it stood just before the day began;
this module turns what it yields into Arrow tables as seconds pass, so a market's day is
never held whole; repeated seconds are expanded with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from datasetd.columns import DEPTH, TS, parquet_schema
from ktape.book.ladder import Book
from ktape.book.walk import MINUTE_US, NULL, SECOND_US, BookWalk, Quote, Run


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
    """One market's day walked once (ktape/book/walk.py), its output as Arrow tables in
    the `quotes` and `book_top10_1s` schemas. `feed` the rows in order, then `finish`."""

    ticker: str
    book: Book
    seq: int
    sid: int
    start_us: int  # the day's start
    end_us: int  # exclusive: the day's end, or now for a day not closed
    continuity: Continuity
    walk: BookWalk = field(init=False)

    def __post_init__(self) -> None:
        self.walk = BookWalk(self.book, self.seq, self.sid, self.start_us, self.end_us,
                             self.continuity.coverage_us, step_us=SECOND_US, depth=DEPTH,
                             close_step_us=MINUTE_US,
                             close_until_us=self.start_us + 86_400 * SECOND_US)

    @property
    def closes(self) -> list[tuple[int, int | None, int | None]]:
        """(minute start, best YES bid, best YES ask) just before each minute's end."""
        return self.walk.closes

    def feed(self, ts: Sequence[int], recv: Sequence[int | None], kind: Sequence[str],
             side: Sequence[str], price: Sequence[int], qty: Sequence[int],
             seq: Sequence[int], sid: Sequence[int]) -> tuple[pa.Table, pa.Table]:
        """Apply rows (µs times, in (ts, sid, seq) order); the quotes and top-10 rows
        whose instants have passed."""
        return self._tables(*self.walk.feed(ts, recv, kind, side, price, qty, seq, sid))

    def finish(self) -> tuple[pa.Table, pa.Table]:
        return self._tables(*self.walk.finish())

    def _tables(self, quotes: list[Quote], runs: list[Run]) -> tuple[pa.Table, pa.Table]:
        return self._quote_table(quotes), self._top10_table(runs)

    def _quote_table(self, rows: list[Quote]) -> pa.Table:
        schema = parquet_schema("quotes")
        if not rows:
            return schema.empty_table()
        data = np.array(rows, dtype=np.int64)
        ts = data[:, 0]
        columns = [pa.array(ts, TS), pa.array(data[:, 1], TS, mask=data[:, 1] == NULL),
                   pa.array([self.ticker] * len(rows), pa.string()), self.continuity.of(ts)]
        columns += [_column(data[:, j]) for j in range(2, 8)]
        return pa.Table.from_arrays(columns, schema=schema)

    def _top10_table(self, runs: list[Run]) -> pa.Table:
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
