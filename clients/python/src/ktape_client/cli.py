"""ktape-data: the client from a shell. `ktape-data book TICKER [--at T] [--depth N]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ktape_client.errors import KtapeError
from ktape_client.sync import Client


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ktape-data", description=__doc__)
    parser.add_argument("--target", default="localhost:8080")
    sub = parser.add_subparsers(dest="command", required=True)
    book = sub.add_parser("book", help="print a market's book at an instant")
    book.add_argument("ticker")
    book.add_argument("--at", help="RFC 3339 time (default now)")
    book.add_argument("--depth", type=int, default=10)
    args = parser.parse_args(argv)
    with Client(target=args.target) as client:
        try:
            found = client.orderbook(args.ticker, at=args.at, depth=args.depth)
        except KtapeError as exc:
            print(f"error: {exc.message} ({exc.reason or exc.code})", file=sys.stderr)
            return 1
    print(f"{found.ticker} at {found.at.isoformat()} — {found.continuity.status}")
    print(f"{'YES bid':>10} {'size':>12}   {'NO bid':>10} {'size':>12}")
    for i in range(max(len(found.yes), len(found.no))):
        yes = found.yes[i] if i < len(found.yes) else None
        no = found.no[i] if i < len(found.no) else None
        print(f"{yes.price if yes else '':>10} {yes.quantity if yes else '':>12}   "
              f"{no.price if no else '':>10} {no.quantity if no else '':>12}")
    if found.spread is not None:
        print(f"spread {found.spread}  mid {found.mid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
