"""How fast is GetOrderbook's core, and does its cost grow with history length?

Intent: "how fast" — p50/p99 of the book-at-an-instant query at random markets and
instants, measured at 1M and at 10M stored changes on a private QuestDB, twice: the core
(the function queryd runs) and GetOrderbook over an in-process loopback gRPC channel.
Targets: p50 < 5 ms, p99 < 20 ms, 10M/1M ratio ≤ 1.5.
Saves bench/results/query_orderbook_core.json.

Run: .venv/bin/python bench/query/orderbook_latency.py [--sizes 1000000,10000000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import percentiles, save
from bench.query.synthetic import START, add_shape_arguments, bench_questdb, conninfo_of, generate
from queryd.orderbook import orderbook_at


async def measure_grpc(settings_env: dict, markets: int, span_days: int, samples: int,
                       seed: int) -> dict:
    """The same lookups as GetOrderbook calls over a loopback gRPC channel (in process)."""
    import grpc
    from google.protobuf import timestamp_pb2

    from ktape.config import load_settings
    from ktape.marketdata.v1 import marketdata_pb2 as pb
    from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
    from queryd.server import build_server

    running, pool, _ = await build_server(load_settings(settings_env), addr="127.0.0.1:0")
    rng = random.Random(seed)
    span_us = span_days * 86_400 * 1_000_000
    timings: list[float] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.MarketDataServiceStub(channel)
            for i in range(samples + 50):
                at = timestamp_pb2.Timestamp()
                at.FromDatetime(START + dt.timedelta(microseconds=rng.randrange(span_us // 10,
                                                                               span_us)))
                request = pb.GetOrderbookRequest(ticker=f"KXBENCH-{rng.randrange(markets)}",
                                                 at=at)
                began = time.perf_counter()
                await stub.GetOrderbook(request, timeout=10)
                if i >= 50:
                    timings.append((time.perf_counter() - began) * 1000)
    finally:
        await running.stop(0)
        await pool.close()
    return percentiles(timings)


async def measure(conninfo: str, markets: int, span_days: int, samples: int, seed: int) -> dict:
    rng = random.Random(seed)
    span_us = span_days * 86_400 * 1_000_000
    timings: list[float] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for i in range(samples + 50):
            ticker = f"KXBENCH-{rng.randrange(markets)}"
            at = START + dt.timedelta(microseconds=rng.randrange(span_us // 10, span_us))
            began = time.perf_counter()
            result = await orderbook_at(conn, ticker, at)
            elapsed = (time.perf_counter() - began) * 1000
            if i >= 50:  # warm-up excluded
                timings.append(elapsed)
            assert result.book.yes or result.book.no, (ticker, at)
    return percentiles(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_shape_arguments(parser, sizes="1000000,10000000", markets=1000, span_days=7,
                        samples=1000)
    parser.add_argument("--checkpoint-every", type=int, default=200,
                        help="changes per market between checkpoints (ingestd's default)")
    parser.add_argument("--extra-sql", action="append", default=[],
                        help="DDL to run after migrations (e.g. an index under test)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, dict] = {}
    with bench_questdb("ktape-bench-q-", args.extra_sql) as (qdb, conn, root):
        conninfo = conninfo_of(qdb)
        generated = 0
        for size in sizes:
            began = time.monotonic()
            info = generate(conn, changes=size - generated, markets=args.markets,
                            first=generated == 0, span_days=args.span_days,
                            checkpoint_every=args.checkpoint_every)
            generated = size
            print(f"generated {info} in {time.monotonic() - began:.1f}s", flush=True)
            stats = asyncio.run(measure(conninfo, args.markets, args.span_days,
                                        args.samples, seed=size))
            grpc_stats = asyncio.run(measure_grpc(
                {"KTAPE_QUESTDB_HTTP": str(qdb.http), "KTAPE_QUESTDB_PG": str(qdb.pg),
                 "KTAPE_DATA_DIR": str(root / "data"), "KTAPE_PAGE_TOKEN_SECRET": "bench"},
                args.markets, args.span_days, args.samples, seed=size + 1))
            results[str(size)] = {"core": stats, "grpc": grpc_stats,
                                  "stored_changes": info["changes"],
                                  "checkpoints": info["checkpoints"]}
            print(f"{size}: core {stats}\n{size}: grpc {grpc_stats}", flush=True)
    out: dict = {"markets": args.markets, "span_days": args.span_days, "by_size": results}
    if len(sizes) >= 2:
        small, large = results[str(sizes[0])], results[str(sizes[-1])]
        for layer in ("core", "grpc"):
            out[f"{layer}_p50_ratio"] = round(large[layer]["p50_ms"] / small[layer]["p50_ms"], 3)
            out[f"{layer}_p99_ratio"] = round(large[layer]["p99_ms"] / small[layer]["p99_ms"], 3)
    save("query_orderbook_core", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
