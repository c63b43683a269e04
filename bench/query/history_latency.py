"""How fast are a deltas page and a day of candles, and do they slow with history?

Intent: "how fast" for the issue's deltas-page and candles-day numbers, and whether the
candles need materialized views. On a private QuestDB with synthetic history (1,000
markets over 7 days: `--sizes` book changes plus a tenth as many trades), measures the
cores queryd runs for ListOrderbookDeltas (one 1,000-row page from a random hour of a
random market; and the first page of a random market's whole day, which holds up to
1,000 rows at any density, so its cost compares equal work) and ListCandles (1m candles
over a random whole day of a random market), at each size. The candles' book closes
are also timed on their own, both ways side by side on the same buckets: from the tops
stored on each change (what ListCandles reads) and by replaying the day's changes (what
it did before, and still does where the tops cannot vouch for themselves; the share of
days read from stored tops is reported). Saves bench/results/query_history_latency.json.

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
from typing import Any

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
from queryd.candles import INTERVAL_US, book_closes, candles, replayed_closes, stored_tops
from queryd.history import deltas_page

WARM_UP = 20  # samples of each call timed and left out


async def measure(conninfo: str, markets: int, span_days: int, samples: int, seed: int) -> dict:
    rng = random.Random(seed)
    times: dict[str, list[float]] = {"page": [], "full": [], "day": [], "stored": [],
                                     "replayed": []}
    rows = full_rows = buckets = from_tops = 0
    minute = INTERVAL_US["1m"]
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        async def timed(name: str, call: Any) -> Any:
            began = time.perf_counter()
            out = await call
            times[name].append((time.perf_counter() - began) * 1000)
            return out

        for i in range(samples + WARM_UP):
            ticker = f"KXBENCH-{rng.randrange(markets)}"
            hour = START + dt.timedelta(hours=rng.randrange(1, span_days * 24 - 1))
            page = await timed("page", deltas_page(conn, ticker, hour,
                                                   hour + dt.timedelta(hours=1), None, 1000))
            day = START + dt.timedelta(days=rng.randrange(0, span_days))
            end = day + dt.timedelta(days=1)
            full = await timed("full", deltas_page(conn, ticker, day, end, None, 1000))
            day_candles = (await timed("day", candles(conn, ticker, day, end, "1m"))).candles
            starts = [c.start_time.ToMicroseconds() for c in day_candles]
            ends = [s + minute for s in starts]
            ways = [("stored", book_closes(conn, ticker, day, end, "1m", starts, ends)),
                    ("replayed", replayed_closes(conn, ticker, day, end, ends))]
            if i % 2:
                ways.reverse()  # alternate which way reads the day first
            for name, call in ways:  # synthetic tops are random prices: only cost compares
                await timed(name, call)
            if i >= WARM_UP:
                rows += len(page.items)
                full_rows += len(full.items)
                buckets += len(day_candles)
                from_tops += await stored_tops(conn, ticker, day, end, "1m") is not None
    warm = {name: percentiles(ms[WARM_UP:]) for name, ms in times.items()}  # warm-up out
    return {"deltas_page": {**warm["page"], "mean_rows": round(rows / samples)},
            "deltas_day_first_page": {**warm["full"], "mean_rows": round(full_rows / samples)},
            "candles_1m_day": {**warm["day"], "mean_candles": round(buckets / samples)},
            "candle_closes_stored": warm["stored"],
            "candle_closes_replayed": warm["replayed"],
            "candle_days_from_stored_tops": round(from_tops / samples, 3)}


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
