"""In-memory order books (venue-neutral): exact integer levels, checkpoint text format."""

from __future__ import annotations

from dataclasses import dataclass, field

from ingestd.book_change_lines import BookChangeLines


class NegativeLevel(ValueError):
    """A delta that would leave a level below zero: the book we hold is stale."""


@dataclass
class MarketBook:
    ticker: str
    yes: dict[int, int] = field(default_factory=dict)
    no: dict[int, int] = field(default_factory=dict)
    awaiting_snapshot: bool = True
    last_exchange_us: int | None = None  # exchange time of the last applied change
    last_seq: int = 0
    last_sid: int = 0
    continuous_since_us: int | None = None
    changes_since_checkpoint: int = 0
    last_checkpoint_us: int = 0
    gap_detected_us: int | None = None  # `ts` of the open gap row, healed by a snapshot
    gap_reason: str | None = None
    gap_start_us: int | None = None
    gap_expected_seq: int | None = None
    gap_got_seq: int | None = None
    snapshot_requested_us: int | None = None  # when we last asked for a snapshot
    # Text parts of this market's book_changes rows by (side, kind, ts_source)
    lines_by_shape: dict[tuple[str, str, str], BookChangeLines] = field(default_factory=dict)

    def change_lines(self, side: str, kind: str, ts_source: str) -> BookChangeLines:
        """The text parts for this market's rows of one shape, built on first use."""
        lines = self.lines_by_shape.get((side, kind, ts_source))
        if lines is None:
            lines = self.lines_by_shape[side, kind, ts_source] = BookChangeLines(
                self.ticker, side, kind, ts_source)
        return lines

    def ladder(self, side: str) -> dict[int, int]:
        return self.yes if side == "yes" else self.no

    def apply_delta(self, side: str, price_e4: int, delta_e2: int) -> int:
        """Apply and return the level's resulting size; raises NegativeLevel."""
        ladder = self.ladder(side)
        after = ladder.get(price_e4, 0) + delta_e2
        if after < 0:
            raise NegativeLevel(f"{self.ticker} {side} {price_e4}: {ladder.get(price_e4, 0)} "
                                f"{delta_e2:+d} < 0")
        if after == 0:
            ladder.pop(price_e4, None)
        else:
            ladder[price_e4] = after
        return after

    def replace(self, yes: dict[int, int], no: dict[int, int]) -> bool:
        """Replace the whole book; True if it differed from what we held."""
        differed = (yes != self.yes or no != self.no)
        self.yes, self.no = yes, no
        return differed


def ladder_text(ladder: dict[int, int]) -> str:
    """Checkpoint format (ktape/schema/tables.py): `price_e4:qty_e2,...` ascending."""
    return ",".join(f"{p}:{q}" for p, q in sorted(ladder.items()))
