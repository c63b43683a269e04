"""`ktape sim`: run the Kalshi-compatible exchange simulator in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ktape.log import configure_logging
from ktape.sim.server import FaultConfig, SimConfig, SimServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ktape sim",
        description=(
            "Kalshi-compatible exchange simulator: WebSocket v2 at /trade-api/ws/v2 and a "
            "REST subset at /trade-api/v2 on one port, driven by a seeded market model. "
            "Prints one JSON line {\"event\": \"sim.ready\", \"port\": N} when listening. "
            "One-shot faults on demand: GET /_sim/control?action=drop|duplicate|reorder|"
            "malformed|unknown_type|disconnect|unsubscribe|rest_429|rest_500|stale_book|"
            "wrong_book&n=N "
            "(status: action=status); one market's lifecycle: "
            "action=close|determine|settle&ticker=T."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0,
                        help="TCP port; 0 picks a free one and prints it (default 0)")
    parser.add_argument("--seed", type=int, default=42, help="model seed (default 42)")
    parser.add_argument("--markets", type=int, default=50,
                        help="markets open at start, in Kalshi-like events of several "
                             "markets each (default 50; 10,000 works)")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="model events per second: book changes, trades, lifecycle (default 200)")
    parser.add_argument("--price-decimals", type=int, choices=(2, 3, 4), default=4,
                        help="decimals of WebSocket prices, shortened only where exact "
                             "(Kalshi has sent 2, 3 and 4; default 4)")
    parser.add_argument("--faults", default="",
                        help="random faults, comma list of NAME=VALUE: drop, duplicate, reorder, "
                             "malformed, unknown_type, unknown_key, rest_429, rest_500, "
                             "stale_book, wrong_book (probability per "
                             "message/request, 0-1), disconnect_every_secs (seconds) and "
                             "stale_book_ms (how old a stale REST book is, default 400); "
                             "e.g. drop=0.001,disconnect_every_secs=30")
    parser.add_argument("--lag-ms", type=int, default=0,
                        help="deliver every frame this many ms after it was queued: stale "
                             "frames, deltas behind their ts_ms (PROTOCOL.md §5.11; default 0)")
    parser.add_argument("--lag-growth-ms-per-s", type=float, default=0.0,
                        help="the delivery lag grows this much per second of a connection "
                             "(a backlog, PROTOCOL.md §5.11; default 0)")
    parser.add_argument("--sending-ts", choices=("all", "no_snapshots", "none"), default="all",
                        help="which messages carry sending_ts_ms (default all)")
    parser.add_argument("--reuse-sids", action="store_true",
                        help="a new subscription takes the lowest sid number not held, so an "
                             "ended subscription's sid comes back (PROTOCOL.md §5.11)")
    parser.add_argument("--deflate", action="store_true",
                        help="accept permessage-deflate when offered (default off: it halves "
                             "throughput)")
    parser.add_argument("--journal", type=Path, default=None,
                        help="append the ground-truth journal (NDJSON) to this file")
    parser.add_argument("--public-key", type=Path, default=None,
                        help="RSA or Ed25519 public key PEM: verify Kalshi request signatures "
                             "(401 otherwise)")
    return parser


async def _run(config: SimConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SimServer(config) as sim:
        print(json.dumps({"event": "sim.ready", "port": sim.port, "host": config.host,
                          "seed": config.seed, "markets": config.markets}), flush=True)
        await stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        faults = FaultConfig.parse(args.faults)
    except ValueError as exc:
        print(f"ktape sim: --faults: {exc}", file=sys.stderr)
        return 2
    if args.markets < 1 or args.rate < 0 or args.lag_ms < 0:
        print("ktape sim: --markets must be >= 1, --rate and --lag-ms >= 0", file=sys.stderr)
        return 2
    configure_logging(component="sim")
    config = SimConfig(host=args.host, port=args.port, seed=args.seed, markets=args.markets,
                       rate=args.rate, faults=faults, journal_path=args.journal,
                       public_key_path=args.public_key, price_decimals=args.price_decimals,
                       delivery_lag_ms=args.lag_ms, sending_ts=args.sending_ts,
                       reuse_sids=args.reuse_sids, lag_growth_ms_per_s=args.lag_growth_ms_per_s,
                       deflate=args.deflate)
    return asyncio.run(_run(config))
