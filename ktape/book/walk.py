"""One walk over a market's changes that yields what is asked of many instants at once:
the book sampled at every step boundary (the top levels), every change of either best
bid (quotes), and the best bid and ask just before every candle's end.

Why one walk: the book at each of 86,400 seconds by one reconstruction each costs 86,400
checkpoint lookups; walking the changes once from the preceding checkpoint costs one.
queryd (ListQuotes, ListOrderbookSnapshots) and the datasets job (`quotes`,
`book_top10_1s`, the closes of `candles_1m`) share this code, so a file and the API
cannot disagree.

The rules are GetOrderbook's and ListCandles': rows are applied in (ts, sid, seq) order,
rows of one exchange snapshot (same ts, sid, seq) replace the book; the book "at T"
counts changes stamped exactly T; a candle's close is the book just before its end.
Emitted values are integers (price_e4, qty_e2); NULL marks an empty level.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from ktape.book.ladder import PRICE_SCALE, Book

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
NULL = -(2**63)  # "no level" in the emitted tuples
_NO_TOP = 2**63  # the cut-off of a walk that samples no levels (depth 0): no change is at it

Quote = tuple[int, int, int, int, int, int, int, int]  # ts, recv, yes p/q, no p/q, seq, sid
Run = tuple[int, int, tuple[int, ...]]  # first and last boundary with this state


def ceil_to(us: int, step: int) -> int:
    return -(-us // step) * step


@dataclass
class BookWalk:
    """Walks one market's rows in [start_us, end_us); `feed` them in order, then `finish`.

    `first_us` is the first instant with a recorded book (None: never recorded, nothing
    is sampled or quoted). Samples are at multiples of `step_us` (calendar aligned),
    each `seq` plus `depth` (price, qty) pairs per side, best first. Quotes begin with
    the book at the first instant (unless `initial_quote` is False: a page that goes on
    from an earlier one). Closes are at `start_us + k * close_step_us` up to `close_until_us`.
    """

    book: Book
    seq: int
    sid: int
    start_us: int
    end_us: int
    first_us: int | None
    step_us: int = SECOND_US
    depth: int = 10
    close_step_us: int = MINUTE_US
    close_until_us: int | None = None
    initial_quote: bool = True
    quotes: bool = True  # False: no quotes tracked (a walk for samples alone skips a top per instant)
    closes: list[tuple[int, int | None, int | None]] = field(default_factory=list)
    _next_sample: int = 0
    _next_close: int = 0
    _state: tuple[int, ...] | None = None
    _runs: list[Run] = field(default_factory=list)
    _quotes: list[Quote] = field(default_factory=list)
    _last_quote: tuple[int, int, int, int] | None = None
    _first_instant: int | None = None
    _group_ts: int | None = None
    _group_recv: int = NULL
    _snapshot_key: tuple[int, int, int] | None = None
    # Each side's top `depth` levels as the samples hold them (price, qty, ... padded with
    # NULL), kept until a change can alter them, and the top's prices (ascending) kept
    # through the changes that do: most changes land below the top levels, most of the
    # rest add or resize a level in it, and sorting a side per change was most of a
    # sampled walk's cost. Only a level leaving a full top needs the side sorted again.
    _tops: list[tuple[int, ...] | None] = field(default_factory=lambda: [None, None])
    _top_prices: list[list[int] | None] = field(default_factory=lambda: [None, None])
    _cutoff: list[int] = field(default_factory=lambda: [NULL, NULL])

    def __post_init__(self) -> None:
        self._cutoff = [self._empty_cutoff, self._empty_cutoff]
        first = self.start_us if self.first_us is None else max(self.start_us, self.first_us)
        self._next_sample = (ceil_to(first, self.step_us) if self.first_us is not None
                             else ceil_to(self.end_us, self.step_us))
        self._next_close = self.start_us + self.close_step_us
        if self.close_until_us is None:
            self.close_until_us = self.end_us
        if self.first_us is not None and first < self.end_us:
            if self.initial_quote:
                self._first_instant = first
            else:
                self._last_quote = self.top()

    # -- the book's summaries -----------------------------------------------------------

    def top(self) -> tuple[int, int, int, int]:
        """Best YES bid price and size, best NO bid price and size (NULL: side empty)."""
        yes = max(self.book.yes) if self.book.yes else None
        no = max(self.book.no) if self.book.no else None
        return (NULL if yes is None else yes, NULL if yes is None else self.book.yes[yes],
                NULL if no is None else no, NULL if no is None else self.book.no[no])

    @property
    def _empty_cutoff(self) -> int:
        """An empty side's cut-off: any change reaches its top, unless nothing is sampled."""
        return NULL if self.depth else _NO_TOP

    def _side_top(self, s: int) -> tuple[int, ...]:
        top = self._tops[s]
        if top is None:
            side = self.book.yes if s == 0 else self.book.no
            prices = self._top_prices[s]
            if prices is None:
                prices = self._top_prices[s] = sorted(side)[-self.depth:] if self.depth else []
                # a change can move the top only at or above its lowest price, unless the
                # side has fewer than `depth` levels (then any new level joins it)
                self._cutoff[s] = prices[0] if len(prices) == self.depth else NULL
            out: list[int] = []
            for price in reversed(prices):  # best first
                out += (price, side[price])
            top = self._tops[s] = tuple(out) + (NULL, NULL) * (self.depth - len(prices))
        return top

    def _at_top(self, s: int, ladder: dict[int, int], price: int, qty: int) -> None:
        """Apply a change at or above side `s`'s cut-off, keeping its top's prices."""
        existed = price in ladder
        if qty > 0:
            ladder[price] = qty
        else:
            ladder.pop(price, None)
        self._tops[s] = None
        prices = self._top_prices[s]
        if prices is None or existed == (qty > 0):
            return  # not known, or a level resized: the same prices
        if qty > 0:  # a new level in the top
            bisect.insort(prices, price)
            if len(prices) > self.depth:
                del prices[0]
            self._cutoff[s] = prices[0] if len(prices) == self.depth else NULL
        elif self._cutoff[s] == NULL:  # a level left a thin side: all its levels are shown
            prices.remove(price)
        else:  # a level left a full top: which level takes its place needs a sort
            self._top_prices[s] = None

    def _levels(self) -> tuple[int, ...]:
        if self._state is None:
            self._state = (self.seq, *self._side_top(0), *self._side_top(1))
        return self._state

    # -- time passing -------------------------------------------------------------------

    def _samples_before(self, t: int) -> None:
        """Every boundary S < t (and before the end) has the current book."""
        last = min(t - 1, self.end_us - 1) // self.step_us * self.step_us
        if last >= self._next_sample:
            self._runs.append((self._next_sample, last, self._levels()))
            self._next_sample = last + self.step_us

    def _closes_until(self, t: int) -> None:
        """Every candle end M <= t closes on the current book."""
        assert self.close_until_us is not None
        while self._next_close <= t and self._next_close <= self.close_until_us:
            top = self.top()
            bid = None if top[0] == NULL else top[0]
            ask = None if top[2] == NULL else PRICE_SCALE - top[2]
            self.closes.append((self._next_close - self.close_step_us, bid, ask))
            self._next_close += self.close_step_us

    def _initial(self, t: int) -> None:
        """The quote as the walk (or the recording) begins, unless a change at that very
        instant makes the first quote itself."""
        first, self._first_instant = self._first_instant, None
        if first is not None and t > first:
            self._last_quote = self.top()
            self._quotes.append((first, NULL, *self._last_quote, self.seq, self.sid))

    def _end_group(self) -> None:
        if self._group_ts is None or not self.quotes:
            return
        top = self.top()
        if top != self._last_quote:
            self._quotes.append((self._group_ts, self._group_recv, *top, self.seq, self.sid))
            self._last_quote = top

    # -- feeding ------------------------------------------------------------------------

    def feed(self, ts: Sequence[int], recv: Sequence[int | None], kind: Sequence[str],
             side: Sequence[str], price: Sequence[int], qty: Sequence[int],
             seq: Sequence[int], sid: Sequence[int]) -> tuple[list[Quote], list[Run]]:
        """Apply rows (µs times, in (ts, sid, seq) order); the quotes and sample runs
        whose instants have passed."""
        # The walk's state lives in locals while rows are applied and is written back
        # before anything that reads it runs (at a new instant, and at the end): a
        # busy market's day is millions of rows, and attribute writes per row were a
        # third of the walk.
        yes, no, tops, cutoff = self.book.yes, self.book.no, self._tops, self._cutoff
        cur_seq, cur_sid, cur_recv, key_of_snapshot = (self.seq, self.sid, self._group_recv,
                                                       self._snapshot_key)
        changed = False
        for t, r, k, sd, p, q, sq, si in zip(ts, recv, kind, side, price, qty, seq, sid,
                                             strict=True):
            if t != self._group_ts:
                self.seq, self.sid, self._group_recv = cur_seq, cur_sid, cur_recv
                if changed:
                    self._state, changed = None, False
                if self.quotes:
                    self._end_group()
                if self._first_instant is not None:
                    self._initial(t)
                if t >= self._next_close:
                    self._closes_until(t)
                if t > self._next_sample:  # a boundary before t may have passed
                    self._samples_before(t)
                self._group_ts = t
            if k == "snapshot":
                if key_of_snapshot != (t, si, sq):
                    yes.clear()
                    no.clear()
                    tops[0] = tops[1] = None
                    self._top_prices[0], self._top_prices[1] = [], []  # an empty book's
                    cutoff[0] = cutoff[1] = self._empty_cutoff
                    key_of_snapshot = (t, si, sq)
            else:
                key_of_snapshot = None
            s = 0 if sd == "yes" else 1
            ladder = yes if s == 0 else no
            if p >= cutoff[s]:
                self._at_top(s, ladder, p, q)
            elif q > 0:
                ladder[p] = q
            else:
                ladder.pop(p, None)
            cur_seq, cur_sid, cur_recv, changed = sq, si, NULL if r is None else r, True
        self.seq, self.sid, self._group_recv = cur_seq, cur_sid, cur_recv
        self._snapshot_key = key_of_snapshot
        if changed:
            self._state = None
        return self.drain()

    def finish(self) -> tuple[list[Quote], list[Run]]:
        """Everything up to the end: the last quote, the remaining samples and closes."""
        self._end_group()
        self._group_ts = None
        if self._first_instant is not None:
            self._initial(self.end_us)
        assert self.close_until_us is not None
        self._closes_until(self.close_until_us)
        self._samples_before(self.end_us)
        return self.drain()

    def drain(self) -> tuple[list[Quote], list[Run]]:
        quotes, self._quotes = self._quotes, []
        runs, self._runs = self._runs, []
        return quotes, runs
