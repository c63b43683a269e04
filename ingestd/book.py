"""In-memory order books (venue-neutral): exact integer levels, checkpoint text format,
and each market's book clock.

Book time (docs/ingestd.md, "Order and time"): every row ingestd writes for a market's
book carries a `ts` that never goes backwards in the order the rows were applied, so
that ordering by `ts` (then sid, seq) is seq order everywhere the rows are read. A
change is stamped with its exchange time; when that is earlier than the book's time
already written (a snapshot stamped by Kalshi's sending time or our receive time, which
are later than the instant the snapshot describes, or exchange stamps that go backwards),
the change takes the book's time instead and the instants between are a recorded gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingestd.book_change_lines import BookChangeLines
from ingestd.gaps import Gap
from ktape.book.ladder import PRICE_SCALE


class NegativeLevel(ValueError):
    """A delta that would leave a level below zero: the book we hold is stale."""


@dataclass
class MarketBook:
    ticker: str
    yes: dict[int, int] = field(default_factory=dict)
    no: dict[int, int] = field(default_factory=dict)
    awaiting_snapshot: bool = True
    last_book_us: int | None = None  # book time (`ts`) of the last row written
    snapshot_us: int | None = None  # book time of the latest snapshot
    # Instants before `snapshot_us`, from this one on, already answer GAP or NOT_RECORDED
    # (the snapshot healed a gap, or was the first): a change moved up to the snapshot's
    # time from within them needs no gap row of its own. None: nothing before is covered.
    covered_from_us: int | None = None
    clock_gap: Gap | None = None  # the latest `clock_order` gap row (widened in place)
    last_seq: int = 0
    last_sid: int = 0
    continuous_since_us: int | None = None
    changes_since_checkpoint: int = 0
    last_checkpoint_us: int = 0
    open_gap: Gap | None = None  # the gap a snapshot will heal (its row has no end yet)
    crossed: Gap | None = None  # an open `crossed_book` anomaly (best bids sum >= $1)
    snapshot_requested_us: int | None = None  # when we last asked for a snapshot
    # The best bid of each side (price_e4, 0 = none), kept as the ladders change: every
    # book_changes row carries them, and the crossed-book check reads them.
    best_yes_e4: int = 0
    best_no_e4: int = 0
    # Text parts of this market's book_changes rows by (side, kind, ts_source)
    lines_by_shape: dict[tuple[str, str, str], BookChangeLines] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.best_yes_e4 = max(self.yes) if self.yes else 0
        self.best_no_e4 = max(self.no) if self.no else 0

    def crosses(self, side: str | None = None, price_e4: int = 0) -> bool:
        """Whether best YES bid + best NO bid >= $1.00 (a crossed or locked book: Kalshi
        would have matched them, so a rebuilt one has lost an update). With `side` and
        `price_e4`, only whether that level does it (the cheap check after a delta)."""
        if side is not None:
            other = self.best_no_e4 if side == "yes" else self.best_yes_e4
            return other > 0 and price_e4 + other >= PRICE_SCALE
        return (self.best_yes_e4 > 0 and self.best_no_e4 > 0
                and self.best_yes_e4 + self.best_no_e4 >= PRICE_SCALE)

    def change_lines(self, side: str, kind: str, ts_source: str) -> BookChangeLines:
        """The text parts for this market's rows of one shape, built on first use."""
        lines = self.lines_by_shape.get((side, kind, ts_source))
        if lines is None:
            lines = self.lines_by_shape[side, kind, ts_source] = BookChangeLines(
                self.ticker, side, kind, ts_source)
        return lines

    def snapshot_time(self, clock_us: int) -> int:
        """A snapshot's book time: its clock's, but strictly after every row already
        written, so no row of an earlier subscription (whose seq counter may restart
        under a reused sid) shares a timestamp with the new subscription's rows."""
        last = self.last_book_us
        return clock_us if last is None or clock_us > last else last + 1

    def ladder(self, side: str) -> dict[int, int]:
        return self.yes if side == "yes" else self.no

    def apply_delta(self, side: str, price_e4: int, delta_e2: int) -> int:
        """Apply and return the level's resulting size; raises NegativeLevel."""
        ladder = self.ladder(side)
        after = ladder.get(price_e4, 0) + delta_e2
        if after < 0:
            raise NegativeLevel(f"{self.ticker} {side} {price_e4}: {ladder.get(price_e4, 0)} "
                                f"{delta_e2:+d} < 0")
        yes = ladder is self.yes
        best = self.best_yes_e4 if yes else self.best_no_e4
        if after == 0:
            ladder.pop(price_e4, None)
            if price_e4 == best:  # the best level emptied: the next one down
                best = max(ladder) if ladder else 0
        else:
            ladder[price_e4] = after
            if price_e4 > best:
                best = price_e4
        if yes:
            self.best_yes_e4 = best
        else:
            self.best_no_e4 = best
        return after

    def replace(self, yes: dict[int, int], no: dict[int, int]) -> bool:
        """Replace the whole book; True if it differed from what we held."""
        differed = (yes != self.yes or no != self.no)
        self.yes, self.no = yes, no
        self.best_yes_e4 = max(yes) if yes else 0
        self.best_no_e4 = max(no) if no else 0
        return differed


def ladder_text(ladder: dict[int, int]) -> str:
    """Checkpoint format (ktape/schema/tables.py): `price_e4:qty_e2,...` ascending."""
    return ",".join(f"{p}:{q}" for p, q in sorted(ladder.items()))
