"""Order-book ladders: exact fixed-point levels, the checkpoint text format, and display.

Why a module: the checkpoint VARCHAR format (`price_e4:qty_e2,...`, ascending price; see
ktape/schema/tables.py) is written by ingestd and read here; this is the reader, strict
about what it accepts so a corrupt checkpoint is an error, not a silently wrong book.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PRICE_SCALE = 10_000  # price_e4: units of $0.0001
QTY_SCALE = 100  # qty_e2: units of 0.01 contract


class LadderFormatError(ValueError):
    """A checkpoint ladder string that does not parse."""


def parse_ladder(text: str | None) -> dict[int, int]:
    """`"4200:15000,4300:100"` -> {4200: 15000, 4300: 100}; empty/None -> {}."""
    if not text:
        return {}
    levels: dict[int, int] = {}
    for item in text.split(","):
        price_text, sep, qty_text = item.partition(":")
        if not sep:
            raise LadderFormatError(f"level {item!r} lacks ':'")
        try:
            price, qty = int(price_text), int(qty_text)
        except ValueError:
            raise LadderFormatError(f"level {item!r} is not integer:integer") from None
        if price <= 0 or price >= PRICE_SCALE or qty <= 0:
            raise LadderFormatError(f"level {item!r} out of range")
        if price in levels:
            raise LadderFormatError(f"price {price} repeated")
        levels[price] = qty
    return levels


def _format_price(price_e4: int) -> str:
    sign = "-" if price_e4 < 0 else ""
    whole, frac = divmod(abs(price_e4), PRICE_SCALE)
    return f"{sign}{whole}.{frac:04d}"


# Every price a market can quote ($0.0000 to $1.0000), formatted once: a list index is
# ~10 times cheaper than formatting, and cheaper than an lru_cache hit.
_PRICES = tuple(_format_price(p) for p in range(PRICE_SCALE + 1))
_CENTS = tuple(f"{i:02d}" for i in range(QTY_SCALE))


def format_price(price_e4: int) -> str:
    """Dollars with exactly 4 decimals, as in CONTRACT.md ("0.4200")."""
    if 0 <= price_e4 <= PRICE_SCALE:
        return _PRICES[price_e4]
    return _format_price(price_e4)  # sums and costs beyond one contract's price


def format_quantity(qty_e2: int) -> str:
    """Contracts with exactly 2 decimals ("150.00", "-0.05"). Not cached: sizes of a busy
    day take hundreds of thousands of values, and an lru_cache miss (with its eviction)
    cost 3.6 times this arithmetic, a hit as much as it (docs/performance.md, "Deltas
    page: the cost of a row")."""
    if qty_e2 >= 0:
        whole, frac = divmod(qty_e2, QTY_SCALE)
        return f"{whole}.{_CENTS[frac]}"
    whole, frac = divmod(-qty_e2, QTY_SCALE)
    return f"-{whole}.{_CENTS[frac]}"


@dataclass
class Book:
    """Both bid ladders of one market: price_e4 -> qty_e2, levels of size 0 absent."""

    yes: dict[int, int] = field(default_factory=dict)
    no: dict[int, int] = field(default_factory=dict)

    def side(self, name: str) -> dict[int, int]:
        if name == "yes":
            return self.yes
        if name == "no":
            return self.no
        raise ValueError(f"unknown side {name!r}")

    def set_level(self, side: str, price_e4: int, qty_e2: int) -> None:
        ladder = self.side(side)
        if qty_e2 > 0:
            ladder[price_e4] = qty_e2
        else:
            ladder.pop(price_e4, None)

    def clear(self) -> None:
        self.yes.clear()
        self.no.clear()

    def best_first(self, side: str, depth: int | None = None) -> list[tuple[int, int]]:
        """Bids best first (highest price first), cut to `depth` levels when given."""
        ladder = self.side(side)
        prices = sorted(ladder, reverse=True)  # the prices alone: ints sort 2x faster than pairs
        if depth is not None and depth > 0:
            prices = prices[:depth]
        return [(price, ladder[price]) for price in prices]

    def copy(self) -> Book:
        return Book(dict(self.yes), dict(self.no))
