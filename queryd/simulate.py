"""SimulateOrder's arithmetic: an order walked through a book as Kalshi matches it, in
exact integers (price_e4, qty_e2, cost_e6), and the taker fee from the fee schedule.

Kalshi's book is two bid ladders (PROTOCOL.md §4): a NO bid at p is a YES ask at 1 - p.
So buying YES takes the NO bids, best (highest) first, at 1 - p; selling YES takes the
YES bids at p; buying NO takes the YES bids at 1 - p; selling NO takes the NO bids at p.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from ktape.book.ladder import PRICE_SCALE, Book

FEE_TYPES_QUADRATIC = ("quadratic", "quadratic_with_maker_fees",
                       "quadratic_with_combo_maker_fees")


@dataclass(frozen=True)
class Fill:
    price_e4: int
    qty_e2: int

    @property
    def cost_e6(self) -> int:
        return self.price_e4 * self.qty_e2


@dataclass(frozen=True)
class Walked:
    fills: list[Fill]
    wanted_left_e2: int  # quantity not filled (quantity orders)
    budget_left_e6: int  # dollars not spent (max_cost orders)
    best_e4: int | None
    exhausted: bool  # every level of the side was taken whole: the book ran out

    @property
    def partial(self) -> bool:
        """The book was too thin for the order: contracts left unfilled, or (a budget)
        money left with nothing left to buy. A budget that stops at a level it cannot
        buy one more 0.01 contract of is a full fill."""
        return self.wanted_left_e2 > 0 or (self.exhausted and self.budget_left_e6 > 0)

    @property
    def filled_e2(self) -> int:
        return sum(f.qty_e2 for f in self.fills)

    @property
    def cost_e6(self) -> int:
        return sum(f.cost_e6 for f in self.fills)


def levels_taken(book: Book, side: str, action: str) -> list[tuple[int, int]]:
    """(price of the traded side, size) in the order an order of `action` on `side`
    consumes them."""
    ladder = book.no if (side, action) in (("yes", "buy"), ("no", "sell")) else book.yes
    taken = sorted(ladder.items(), key=lambda kv: -kv[0])  # best bid first
    if action == "buy":
        return [(PRICE_SCALE - p, q) for p, q in taken]
    return taken


def walk(book: Book, side: str, action: str, *, quantity_e2: int | None = None,
         max_cost_e6: int | None = None) -> Walked:
    """Fill `quantity_e2` contracts, or (a buy) as many as `max_cost_e6` pays for, level
    by level; a level is taken partly in whole 0.01-contract units."""
    levels = levels_taken(book, side, action)
    fills: list[Fill] = []
    wanted, budget = quantity_e2, max_cost_e6
    for price, size in levels:
        if wanted is not None:
            if wanted <= 0:
                break
            take = min(size, wanted)
            wanted -= take
        else:
            assert budget is not None
            take = min(size, budget // price)
            if take <= 0:
                break
            budget -= take * price
        fills.append(Fill(price, take))
    exhausted = sum(f.qty_e2 for f in fills) == sum(size for _price, size in levels)
    return Walked(fills, wanted or 0, budget or 0, levels[0][0] if levels else None, exhausted)


def fee_schedule(series_raw: str | None, event_raw: str | None) -> tuple[str, Decimal] | None:
    """(fee type, multiplier) from the series' Kalshi metadata, with the event's
    overrides; None when it is not recorded. The multiplier is a JSON number, parsed as
    a Decimal from its text (never through a float)."""
    def load(raw: str | None) -> dict:
        if not raw:
            return {}
        try:
            found = json.loads(raw, parse_float=Decimal, parse_int=Decimal)
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    series, event = load(series_raw), load(event_raw)
    fee_type = event.get("fee_type_override") or series.get("fee_type")
    multiplier = event.get("fee_multiplier_override")
    if multiplier is None:
        multiplier = series.get("fee_multiplier")
    if not fee_type or multiplier is None:
        return None
    return str(fee_type), Decimal(multiplier)


def taker_fee(fills: list[Fill], schedule: tuple[str, Decimal] | None) -> tuple[Decimal | None, str]:
    """Kalshi's taker fee for the fills, rounded up to the cent, and how it was found."""
    if schedule is None:
        return None, "fee schedule not known for this market (no fee_type/fee_multiplier recorded)"
    fee_type, multiplier = schedule
    if fee_type not in FEE_TYPES_QUADRATIC:
        return None, f"fee type {fee_type!r} has no formula here"
    raw = sum((multiplier * (Decimal(f.qty_e2) / 100) * (Decimal(f.price_e4) / PRICE_SCALE)
               * (1 - Decimal(f.price_e4) / PRICE_SCALE) for f in fills), Decimal(0))
    fee = raw.quantize(Decimal("0.01"), rounding=ROUND_CEILING)
    return fee, (f"{fee_type}: ceil(multiplier * contracts * P * (1 - P)) to the cent, "
                 f"multiplier {multiplier}")


def dollars_e6(value_e6: int) -> str:
    return f"{Decimal(value_e6) / 1_000_000:.6f}"


def average_e6(walked: Walked) -> Decimal | None:
    """Average price per contract in dollars, 6 decimals (half-even)."""
    if not walked.filled_e2:
        return None
    return (Decimal(walked.cost_e6) / walked.filled_e2 / 10_000).quantize(
        Decimal("0.000001"), rounding=ROUND_HALF_EVEN)
