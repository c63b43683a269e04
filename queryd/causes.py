"""Change labelling: why each recorded level change happened (OrderbookDelta.cause).

Kalshi's book feed says only that a level changed; the print that consumed resting size
arrives separately on the trade channel (PROTOCOL.md §4, §5.8), with the same exchange
millisecond as the book change it caused. So the cause is inferred by matching the two:

- an increase is NEW (an order added, or a level growing);
- a decrease on side S at price P at exchange instant T is TRADE when an on-book trade
  at the same millisecond took resting size at (S, P): a taker buying YES takes NO bids
  at $1 - yes_price, a taker buying NO takes YES bids at yes_price. A taker walking the
  book prints one trade per level, so each trade matches one (S, P); block trades are
  off the book and match nothing;
- each trade's count is matched at most once in total. Within one (T, S, P), decreases
  equal to a whole trade's count are matched to that trade first (a cancel and a fill of
  one level in the same millisecond are told apart by size), then the remaining
  decreases, in application order, while the unmatched count covers them whole (one
  fill reported as several smaller changes, or several fills as one);
- every other decrease is CANCEL. Snapshot levels, gap markers and zero changes carry
  no cause (UNSPECIFIED).

A label depends only on the changes and trades of its own (T, S, P): a page must hold
every decrease of the instants it touches (queryd.history fetches those beyond its
edges) and every trade of its instants (one query for the page's whole time span).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

from ktape.book.ladder import PRICE_SCALE
from ktape.marketdata.v1 import marketdata_pb2 as pb

# A print and the book change it caused carry the same exchange millisecond: Kalshi stamps
# both from one match (PROTOCOL.md §5.6 and §5.8 show one fill, one `ts_ms`), and on
# simulator recordings every trade-caused change has exactly its print's millisecond
# (tests/integration/queryd/test_recorded_history.py measures the offset: 0 ms). So the match is on
# the same millisecond, with no tolerance: a window would let one print explain falls at
# several instants, and cancels next to a print pass for fills.
US_PER_MS = 1000


class Change(NamedTuple):
    """One recorded level change: its exchange instant (µs), side, price and signed size
    change, and whether it is an incremental delta (snapshot levels are not). A named
    tuple, not a frozen dataclass: a deltas page makes one per row, and a frozen
    dataclass cost ~3 times as much to build."""

    instant_us: int
    side: str  # "yes" | "no"
    price_e4: int
    delta_e2: int
    is_delta: bool = True


class Print(NamedTuple):
    """One recorded trade: exchange time (µs), YES price, count, and the outcome the taker
    bought ("yes" | "no"; anything else cannot be placed on a side and matches nothing)."""

    instant_us: int
    yes_price_e4: int
    count_e2: int
    taker_side: str
    is_block: bool = False


Key = tuple[int, str, int]  # (exchange millisecond, side, price_e4)


def consumed_level(trade: Print) -> Key | None:
    """The book level a print took resting size from, or None for a block trade or an
    unknown taker side."""
    if trade.is_block:
        return None
    ms = trade.instant_us // US_PER_MS
    if trade.taker_side == "yes":
        return ms, "no", PRICE_SCALE - trade.yes_price_e4
    if trade.taker_side == "no":
        return ms, "yes", trade.yes_price_e4
    return None


def label(changes: Sequence[Change], trades: Sequence[Print]) -> list[int]:
    """The cause (a `pb.DeltaCause` value) of each change, in the order given, which must be
    application order. `trades` must hold every print of the changes' instants."""
    causes = [pb.DELTA_CAUSE_UNSPECIFIED] * len(changes)
    falls: dict[Key, list[int]] = defaultdict(list)
    for i, change in enumerate(changes):
        if not change.is_delta or change.delta_e2 == 0:
            continue
        if change.delta_e2 > 0:
            causes[i] = pb.DELTA_CAUSE_NEW
        else:
            falls[(change.instant_us // US_PER_MS, change.side, change.price_e4)].append(i)
    counts: dict[Key, list[int]] = defaultdict(list)
    for trade in trades:
        key = consumed_level(trade)
        if key is not None and trade.count_e2 > 0:
            counts[key].append(trade.count_e2)
    for key, indices in falls.items():
        sizes = {i: -changes[i].delta_e2 for i in indices}
        for i, cause in _match(indices, sizes, counts.get(key, [])).items():
            causes[i] = cause
    return causes


def _match(indices: list[int], sizes: dict[int, int], available: list[int]) -> dict[int, int]:
    """TRADE or CANCEL for the falls of one level and instant, given the counts of the
    prints that took from it."""
    out: dict[int, int] = {}
    unused = list(available)
    for i in indices:  # whole fills first: a fall of exactly one print's count
        if sizes[i] in unused:
            unused.remove(sizes[i])
            out[i] = pb.DELTA_CAUSE_TRADE
    left = sum(unused)
    for i in indices:  # then what the unmatched count covers, in order
        if i in out:
            continue
        if sizes[i] <= left:
            left -= sizes[i]
            out[i] = pb.DELTA_CAUSE_TRADE
        else:
            out[i] = pb.DELTA_CAUSE_CANCEL
    return out
