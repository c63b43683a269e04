"""Follow a market's book live over plain HTTP (NDJSON), keeping the book up to date.

    .venv/bin/python examples/rest_stream_orderbook.py TICKER [--base http://127.0.0.1:8080]
        [--start-time 2026-11-24T18:00:00Z] [--max-messages 100]

The first line is a snapshot, then deltas (each with the level's resulting quantity),
gap markers and heartbeats; a final `end` line says why a stream ended. Prices and
quantities stay strings: compare them as Decimal, never float.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal

import httpx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("ticker")
    parser.add_argument("--base", default="http://127.0.0.1:8080")
    parser.add_argument("--start-time")
    parser.add_argument("--max-messages", type=int, default=0, help="0 = forever")
    parser.add_argument("--key", default="")
    args = parser.parse_args()
    params = {"start_time": args.start_time} if args.start_time else {}
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    book: dict[str, dict[str, Decimal]] = {"SIDE_YES": {}, "SIDE_NO": {}}
    seen = 0
    url = f"{args.base}/v1/markets/{args.ticker}/orderbook:stream"
    with httpx.stream("GET", url, params=params, headers=headers, timeout=None) as resp:
        if resp.status_code != 200:
            print(resp.read().decode(), file=sys.stderr)
            return 1
        for line in resp.iter_lines():
            if not line:
                continue
            message = json.loads(line)
            if "snapshot" in message:
                snap = message["snapshot"]
                book["SIDE_YES"] = {lvl["price"]: Decimal(lvl["quantity"]) for lvl in snap["yes"]}
                book["SIDE_NO"] = {lvl["price"]: Decimal(lvl["quantity"]) for lvl in snap["no"]}
                print(f"snapshot seq={snap['seq']} {snap['continuity']['status']}")
            elif "delta" in message:
                delta = message["delta"]
                if delta["kind"] == "DELTA_KIND_GAP":
                    print(f"GAP {delta['gap']['reason']} from {delta['gap']['start_time']}")
                else:
                    side = book[delta["side"]]
                    quantity = Decimal(delta["quantity"])
                    if quantity:
                        side[delta["price"]] = quantity
                    else:
                        side.pop(delta["price"], None)
                    best = max(book["SIDE_YES"], default="-")
                    print(f"{delta['ts']} seq={delta['seq']} {delta['side']} {delta['price']} "
                          f"-> {delta['quantity']}  best yes bid {best}")
            elif "heartbeat" in message:
                print(f"heartbeat {message['heartbeat']['server_time']}")
            elif "end" in message:
                print(f"end: {message['end']['code']} {message['end']['message']}")
                return 0
            seen += 1
            if args.max_messages and seen >= args.max_messages:
                return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
