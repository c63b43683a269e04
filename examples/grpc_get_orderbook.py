"""Get the order book of a market at an instant over gRPC (through Envoy or queryd).

    .venv/bin/python examples/grpc_get_orderbook.py TICKER [--at 2026-11-24T18:00:00Z]
        [--addr 127.0.0.1:8080] [--depth 5]

Uses the stubs generated from proto/ (`make install`). Prints the ladders best first and
whether the book is proven gap-free.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import grpc
from google.protobuf import timestamp_pb2

from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("ticker")
    parser.add_argument("--at", help="RFC 3339 instant (default: now)")
    parser.add_argument("--addr", default="127.0.0.1:8080")
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--key", default="", help="API key (Authorization: Bearer ...)")
    args = parser.parse_args()
    request = pb.GetOrderbookRequest(ticker=args.ticker, depth=args.depth)
    if args.at:
        at = timestamp_pb2.Timestamp()
        at.FromDatetime(dt.datetime.fromisoformat(args.at.replace("Z", "+00:00")))
        request.at.CopyFrom(at)
    metadata = [("authorization", f"Bearer {args.key}")] if args.key else []
    with grpc.insecure_channel(args.addr) as channel:
        try:
            book = pb_grpc.MarketDataServiceStub(channel).GetOrderbook(
                request, metadata=metadata, timeout=10)
        except grpc.RpcError as err:
            print(f"{err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    status = pb.ContinuityStatus.Name(book.continuity.status)
    print(f"{book.ticker} at {book.at.ToJsonString()} seq={book.seq} {status}")
    for side, levels in (("YES", book.yes), ("NO", book.no)):
        for level in levels:
            print(f"  {side:<3} {level.price}  {level.quantity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
