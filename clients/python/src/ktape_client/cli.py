"""ktape-data: the client from a shell.

    ktape-data book TICKER [--at T] [--depth N]
    ktape-data download --type book_changes --series S --from D --to D [--format parquet]
        [--dest DIR] [--dry-run]

The key comes from KTAPE_API_KEY, the server from --target (default localhost:8080).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ktape_client.datasets import format_bytes
from ktape_client.errors import KtapeError
from ktape_client.sync import Client

DATA_TYPES = ["book_changes", "book_top10_1s", "quotes", "trades", "candles_1m"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ktape-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="localhost:8080", help="host:port of ktape")
    sub = parser.add_subparsers(dest="command", required=True)
    book = sub.add_parser("book", help="print a market's book at an instant")
    book.add_argument("ticker")
    book.add_argument("--at", help="RFC 3339 time (default now)")
    book.add_argument("--depth", type=int, default=10)
    download = sub.add_parser("download", help="buy and download dataset files")
    download.add_argument("--type", dest="data_type", required=True, choices=DATA_TYPES)
    which = download.add_mutually_exclusive_group(required=True)
    which.add_argument("--series", help="a series: its whole-series file and its markets'")
    which.add_argument("--ticker", help="one market")
    download.add_argument("--from", dest="start", required=True, help="first UTC day, YYYY-MM-DD")
    download.add_argument("--to", dest="end", help="last UTC day, inclusive (default --from)")
    download.add_argument("--format", choices=["parquet", "csv.gz"], default="parquet")
    download.add_argument("--series-files-only", action="store_true",
                          help="only the whole-series files, not each market's")
    download.add_argument("--dest", default=".", help="directory for the files (default .)")
    download.add_argument("--dry-run", action="store_true",
                          help="print what it would cost and download nothing")
    download.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    with Client(target=args.target) as client:
        try:
            return _book(client, args) if args.command == "book" else _download(client, args)
        except KtapeError as exc:
            print(f"error: {exc.message} ({exc.reason or exc.code})", file=sys.stderr)
            return 1


def _book(client: Client, args: argparse.Namespace) -> int:
    found = client.orderbook(args.ticker, at=args.at, depth=args.depth)
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


def _download(client: Client, args: argparse.Namespace) -> int:
    """Price first (free), then buy what is not already in --dest and fetch it."""
    filt = {"data_type": args.data_type, "start_date": args.start, "end_date": args.end or "",
            "series_ticker": args.series or "", "ticker": args.ticker or "",
            "format": args.format, "series_files_only": args.series_files_only}
    cost = client.datasets.cost(**filt)
    print(f"{cost.file_count} files, {format_bytes(cost.bytes)}, {cost.credits} credits "
          "(files bought before cost nothing)")
    if args.dry_run or not cost.file_count:
        return 0
    result = client.datasets.download(dest_dir=args.dest, progress=not args.quiet, **filt)
    present = result.count("present")
    bought = len(result.files) - present
    print(f"bought {bought} files for {result.charged_credits} credits, fetched "
          f"{format_bytes(result.fetched_bytes)}; {present} already in {args.dest}")
    for f in result.files:
        print(f"{f.status:>10}  {f.sha256[:12]}  {f.path}")
    print(f"files are in {Path(args.dest).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
