"""Backtest a simple spread strategy on a recorded stretch of one market, in exact decimals.

    pip install ./clients/python
    python examples/backtest.py TICKER --start 2026-12-01T00:00:00Z [--end ...]
        [--target localhost:8080] [--enter-below 0.05] [--exit-above 0.08] [--size 10]

The strategy: when flat and the YES spread tightens to `--enter-below` or less, buy up to
`--size` YES at the best YES ask (1 - the best NO bid, as much as that level holds); when
long and the spread widens to `--exit-above` or more, sell at the best YES bid. It never
trades on a book that is not proven gap-free (continuity other than CONTINUOUS). At the
end the position is marked to the mid. Fees and queue position are left out: a taker
that always fills at the touch, the simplest honest baseline.

It replays the book after every stored change with the client's `replay` (the same
books `orderbook(at=...)` answers), so the P&L is exactly what the recorded books imply:
every price, size and P&L is a Decimal, never a float. Needs KTAPE_API_KEY.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from decimal import Decimal

from ktape_client import Book, Client, KtapeError

CONTRACTS = Decimal("0.01")


@dataclass
class Account:
    """Position and cash of one strategy; cash starts at 0 (P&L is cash + marked value)."""

    position: Decimal = Decimal(0)  # YES contracts held
    cash: Decimal = Decimal(0)  # dollars: minus what was paid, plus what was received
    cost: Decimal = Decimal(0)  # dollars paid for the contracts now held
    realized: Decimal = Decimal(0)
    trades: list[str] = field(default_factory=list)

    def buy(self, when: str, quantity: Decimal, price: Decimal, spread: Decimal) -> None:
        self.position += quantity
        self.cash -= quantity * price
        self.cost += quantity * price
        self.trades.append(f"{when}  BUY  {quantity} @ {price}  (spread {spread})")

    def sell(self, when: str, quantity: Decimal, price: Decimal, spread: Decimal) -> None:
        basis = self.cost * quantity / self.position  # average cost of what is sold
        self.realized += quantity * price - basis
        self.cost -= basis
        self.position -= quantity
        self.cash += quantity * price
        self.trades.append(f"{when}  SELL {quantity} @ {price}  (spread {spread})")


def step(account: Account, book: Book, enter_below: Decimal, exit_above: Decimal,
         size: Decimal) -> None:
    """One decision on the book after one change."""
    spread = book.spread
    if spread is None or not book.continuity.proven:
        return
    when = book.at.isoformat()
    if account.position == 0 and spread <= enter_below:
        quantity = min(size, book.no[0].quantity)  # the best NO bid is the YES ask's size
        account.buy(when, quantity, book.best_yes_ask, spread)  # type: ignore[arg-type]
    elif account.position > 0 and spread >= exit_above:
        quantity = min(account.position, book.yes[0].quantity)
        account.sell(when, quantity, book.best_yes_bid, spread)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ticker")
    parser.add_argument("--start", required=True, help="RFC 3339, inclusive")
    parser.add_argument("--end", help="RFC 3339, exclusive (default now)")
    parser.add_argument("--target", default="localhost:8080")
    parser.add_argument("--enter-below", type=Decimal, default=Decimal("0.05"))
    parser.add_argument("--exit-above", type=Decimal, default=Decimal("0.08"))
    parser.add_argument("--size", type=Decimal, default=Decimal("10"))
    args = parser.parse_args()
    size = args.size.quantize(CONTRACTS)  # contracts come in hundredths
    account = Account()
    changes = gaps = 0
    spreads: list[Decimal] = []
    last: Book | None = None
    with Client(target=args.target) as client:
        try:
            for change, book in client.replay(args.ticker, args.start, args.end):
                changes += 1
                gaps += change.kind == "gap"
                if book.spread is not None:
                    spreads.append(book.spread)
                step(account, book, args.enter_below, args.exit_above, size)
                last = book
        except KtapeError as exc:
            print(f"error: {exc.message} ({exc.reason or exc.code})", file=sys.stderr)
            return 1
    for line in account.trades:
        print(line)
    spreads.sort()
    print(f"changes replayed {changes} (gap markers {gaps})")
    if spreads:
        print(f"spread min {spreads[0]} median {spreads[len(spreads) // 2]} max {spreads[-1]}")
    mid = last.mid if last is not None else None
    marked = account.position * mid - account.cost if mid is not None else Decimal(0)
    buys = sum(1 for t in account.trades if " BUY " in t)
    print(f"trades {len(account.trades)} ({buys} buys), position {account.position} YES")
    print(f"realized P&L {account.realized}")
    print(f"unrealized P&L {marked} (marked at mid {mid})")
    print(f"total P&L {account.realized + marked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
