"""Order-book ladders: exact fixed-point levels, the checkpoint text format, and display.

Why a module: the checkpoint VARCHAR format (`price_e4:qty_e2,...`, ascending price; see
ktape/schema/tables.py) is written by ingestd and read here; this is the reader, strict
about what it accepts so a corrupt checkpoint is an error, not a silently wrong book.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

PRICE_SCALE = 10_000  # price_e4: units of $0.0001
QTY_SCALE = 100  # qty_e2: units of 0.01 contract


class LadderFormatError(ValueError):
    """A checkpoint ladder string that does not parse."""


# A ladder as ingestd writes it: positive integers without signs, spaces or leading zeros.
_WRITTEN = re.compile(r"[1-9][0-9]*:[1-9][0-9]*(?:,[1-9][0-9]*:[1-9][0-9]*)*")


def parse_ladder(text: str | None) -> dict[int, int]:
    """`"4200:15000,4300:100"` -> {4200: 15000, 4300: 100}; empty/None -> {}.

    A ladder of the written form is checked by one regex and read by the C JSON parser
    (~40% cheaper than item by item; a 20-market GetEventOrderbook parses ~1,250 levels);
    anything else, or a price out of range or repeated, goes item by item, which names
    the item at fault."""
    if not text:
        return {}
    if _WRITTEN.fullmatch(text) is not None:
        values = json.loads(f"[{text.replace(':', ',')}]")
        prices = values[0::2]
        levels = dict(zip(prices, values[1::2], strict=True))
        if len(levels) == len(prices) and max(prices) < PRICE_SCALE:
            return levels
    return _parse_items(text)


def _parse_items(text: str) -> dict[int, int]:
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

    def best_prices(self, side: str, depth: int | None = None) -> list[int]:
        """A side's bid prices best first (highest first), cut to `depth` levels when
        given; the sizes are `side(name)[price]`. Prices alone, not (price, size) pairs:
        ints sort 2x faster than pairs, and an answer's levels need no pair made."""
        prices = sorted(self.side(side), reverse=True)
        return prices[:depth] if depth else prices

    def copy(self) -> Book:
        return Book(dict(self.yes), dict(self.no))
