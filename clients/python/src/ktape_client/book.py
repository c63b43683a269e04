"""The book of one market at one instant, in exact decimals.

Kalshi's book holds bids only, on two sides: a NO bid at p is an offer to sell YES at
1 - p. So the best YES ask is 1 - the best NO bid, and the spread is that ask minus the
best YES bid (PROTOCOL.md §4).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ktape_client.pages import enum_name, when

ONE = Decimal(1)


@dataclass(frozen=True)
class Level:
    """One price level of one side: the bid price and the contracts resting there."""
    price: Decimal  # dollars, 4 decimals
    quantity: Decimal  # contracts, 2 decimals


@dataclass(frozen=True)
class Continuity:
    """Whether the book is proven. CONTINUOUS: every delta since the last exchange
    snapshot arrived in sequence (since `since`). GAP: inside a recorded gap (bounds and
    reason given; the book is the best known, not proven). NOT_RECORDED: outside the
    market's coverage (the ladders are empty for that reason, never silently)."""
    status: str  # CONTINUOUS | GAP | NOT_RECORDED
    since: dt.datetime | None = None
    gap_start: dt.datetime | None = None
    gap_end: dt.datetime | None = None
    reason: str = ""

    @property
    def proven(self) -> bool:
        """True only for CONTINUOUS: a book a backtest may trade on."""
        return self.status == "CONTINUOUS"


@dataclass(frozen=True)
class Book:
    """A market's book at `at`: YES and NO bid ladders (best first), the sequence
    number and time of its last change, and its continuity. Kalshi books hold bids only;
    the asks are implied by the other side (see the module docstring)."""
    ticker: str
    at: dt.datetime
    yes: tuple[Level, ...]  # YES bids, best (highest) first
    no: tuple[Level, ...]  # NO bids, best first
    seq: int
    continuity: Continuity
    last_change: dt.datetime | None = None

    @property
    def best_yes_bid(self) -> Decimal | None:
        """The highest YES bid; None on an empty side."""
        return self.yes[0].price if self.yes else None

    @property
    def best_no_bid(self) -> Decimal | None:
        """The highest NO bid; None on an empty side."""
        return self.no[0].price if self.no else None

    @property
    def best_yes_ask(self) -> Decimal | None:
        """Implied by the best NO bid: 1 - its price."""
        return ONE - self.no[0].price if self.no else None

    @property
    def best_no_ask(self) -> Decimal | None:
        """Implied by the best YES bid: 1 - its price."""
        return ONE - self.yes[0].price if self.yes else None

    @property
    def spread(self) -> Decimal | None:
        """best_yes_ask - best_yes_bid (negative on a crossed book); None unless both
        sides have a level."""
        ask, bid = self.best_yes_ask, self.best_yes_bid
        return None if ask is None or bid is None else ask - bid

    @property
    def mid(self) -> Decimal | None:
        """(best_yes_ask + best_yes_bid) / 2, exact; None unless both sides have a level."""
        ask, bid = self.best_yes_ask, self.best_yes_bid
        return None if ask is None or bid is None else (ask + bid) / 2

    def to_frame(self) -> Any:
        """Both ladders as one pandas DataFrame (side, price, quantity; Decimal objects)."""
        import pandas as pd

        rows = [("yes", lv.price, lv.quantity) for lv in self.yes] + [
            ("no", lv.price, lv.quantity) for lv in self.no]
        return pd.DataFrame(rows, columns=["side", "price", "quantity"])


def book_from(response: Any) -> Book:
    c = response.continuity
    status = enum_name(c, "status", "CONTINUITY_STATUS_").upper()
    return Book(
        ticker=response.ticker, at=response.at.ToDatetime(dt.UTC),
        yes=tuple(Level(Decimal(lv.price), Decimal(lv.quantity)) for lv in response.yes),
        no=tuple(Level(Decimal(lv.price), Decimal(lv.quantity)) for lv in response.no),
        seq=response.seq,
        continuity=Continuity(status, when(c, "since"),
                              when(c, "gap_start_time"), when(c, "gap_end_time"), c.reason),
        last_change=when(response, "last_change_time"))
