"""How fast are a deltas page and a day of candles, and do they slow with history?

Intent: "how fast" for the issue's deltas-page and candles-day numbers, and whether the
candles need materialized views. On a private QuestDB with synthetic history (1,000
markets over 7 days: `--sizes` book changes plus a tenth as many trades), measures the
cores queryd runs for ListOrderbookDeltas (one 1,000-row page from a random hour of a
random market; and the first page of a random market's whole day, which holds up to
1,000 rows at any density, so its cost compares equal work) and ListCandles (1m candles
over a random whole day of a random market), at each size. Saves bench/results/query_history_latency.json.

Run: .venv/bin/python bench/query/history_latency.py [--sizes 1000000,10000000]
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
from bench.query.synthetic import (
    START,
    add_shape_arguments,
    bench_questdb,
    conninfo_of,
    generate,
    generate_trades,
)
from queryd.candles import candles
from queryd.history import deltas_page


async def measure(conninfo: str, markets: int, span_days: int, samples: int, seed: int) -> dict:
    rng = random.Random(seed)
    pages: list[float] = []
    full_pages: list[float] = []
    days: list[float] = []
    rows = full_rows = buckets = 0
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for i in range(samples + 20):
            ticker = f"KXBENCH-{rng.randrange(markets)}"
            hour = START + dt.timedelta(hours=rng.randrange(1, span_days * 24 - 1))
            began = time.perf_counter()
            page = await deltas_page(conn, ticker, hour, hour + dt.timedelta(hours=1), None, 1000)
            page_ms = (time.perf_counter() - began) * 1000
            day = START + dt.timedelta(days=rng.randrange(0, span_days))
            began = time.perf_counter()
            full = await deltas_page(conn, ticker, day, day + dt.timedelta(days=1), None, 1000)
            full_ms = (time.perf_counter() - began) * 1000
            began = time.perf_counter()
            day_candles = await candles(conn, ticker, day, day + dt.timedelta(days=1), "1m")
            day_ms = (time.perf_counter() - began) * 1000
            if i >= 20:  # warm-up excluded
                pages.append(page_ms)
                full_pages.append(full_ms)
                days.append(day_ms)
                rows += len(page.items)
                full_rows += len(full.items)
                buckets += len(day_candles)
    return {"deltas_page": {**percentiles(pages), "mean_rows": round(rows / samples)},
            "deltas_day_first_page": {**percentiles(full_pages),
                                      "mean_rows": round(full_rows / samples)},
            "candles_1m_day": {**percentiles(days), "mean_candles": round(buckets / samples)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_shape_arguments(parser, sizes="1000000,10000000", markets=1000, span_days=7,
                        samples=300)
    parser.add_argument("--extra-sql", action="append", default=[],
                        help="DDL to run after migrations (e.g. an index under test)")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with bench_questdb("ktape-bench-hist-", args.extra_sql) as (qdb, conn, _root):
        generated = 0
        for size in (int(s) for s in args.sizes.split(",")):
            info = generate(conn, changes=size - generated, markets=args.markets,
                            first=generated == 0, span_days=args.span_days)
            info["trades"] = generate_trades(conn, trades=(size - generated) // 10,
                                             markets=args.markets, span_days=args.span_days)
            generated = size
            print(f"generated {info}", flush=True)
            results[str(size)] = {**info, **asyncio.run(measure(
                conninfo_of(qdb), args.markets, args.span_days, args.samples, seed=size))}
    save("query_history_latency", {"sizes": results, "extra_sql": args.extra_sql})
    return 0


if __name__ == "__main__":
    sys.exit(main())
