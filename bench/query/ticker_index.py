"""Do symbol indexes on `ticker` pay for themselves at Kalshi's full density?

Intent: the measurement behind migration 6 (ktape/schema/tables.py, V0006), kept so the
decision can be re-checked (docs/performance.md, "Ticker indexes"): QuestDB stores rows
in time order only, so one market's rows of a busy day are found by scanning every
market's; an index on `ticker` finds them directly but costs work on every row written.
Measured side by side in one run, on one private QuestDB with synthetic history
(`--markets` markets over `--span-days`, bench/query/synthetic.py), at each of
`--sizes`: the cores queryd runs for GetOrderbook (the book at a random instant), a
deltas page from a random hour, the first deltas page of a market's day and a day of 1m
candles, first without and then with migration 6's indexes on `ticker` (dropped at the
start, added to the stored rows, dropped again before more rows are written). The write
side: the time QuestDB takes to apply `--write-rows` rows copied into a fresh table
shaped like `book_changes`, with and without the index, alternated `--write-rounds`
times. Saves bench/results/query_ticker_index.json.

Run: .venv/bin/python bench/query/ticker_index.py [--sizes 10000000,100000000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import save
from bench.query import history_latency, orderbook_latency
from bench.query.synthetic import add_shape_arguments, bench_questdb, conninfo_of, generate, generate_trades
from ktape.schema.tables import INDEXED_TICKERS, SMALL_SYMBOL, TICKER

INDEXED = INDEXED_TICKERS  # migration 6's indexes; dropped first to measure without them


def set_indexes(conn, on: bool) -> float:
    """Add (or drop) the ticker indexes; the seconds QuestDB took, WAL applied."""
    from ktape.schema.wal import wait_for_wal

    began = time.monotonic()
    for table in INDEXED:
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN ticker {'ADD' if on else 'DROP'} INDEX")
    wait_for_wal(conn, list(INDEXED), timeout_secs=3600)
    return round(time.monotonic() - began, 2)


def write_cost(conn, rows: int, rounds: int) -> dict:
    """Seconds to write and apply `rows` changes into a fresh book_changes-shaped table,
    without and with a ticker index, alternated."""
    from ktape.schema.wal import wait_for_wal

    out: dict[str, list[float]] = {"plain": [], "indexed": []}
    for i in range(rounds):
        for variant in ("plain", "indexed"):
            table = f"bench_write_{variant}_{i}"
            index = " INDEX" if variant == "indexed" else ""
            conn.execute(f"""CREATE TABLE {table} (
                ts TIMESTAMP, ticker {TICKER}{index}, side {SMALL_SYMBOL},
                price_e4 LONG, qty_after_e2 LONG, delta_e2 LONG, kind {SMALL_SYMBOL}, seq LONG,
                sid LONG, recv_ts TIMESTAMP, ts_source {SMALL_SYMBOL}, source_ts TIMESTAMP
            ) TIMESTAMP(ts) PARTITION BY DAY WAL
            DEDUP UPSERT KEYS(ts, ticker, sid, seq, side, price_e4)""")
            began = time.monotonic()
            conn.execute(f"""INSERT INTO {table} SELECT ts, ticker, side, price_e4,
                qty_after_e2, delta_e2, kind, seq, sid, recv_ts, ts_source, source_ts
                FROM book_changes LIMIT {rows}""")
            wait_for_wal(conn, [table], timeout_secs=3600)
            out[variant].append(round(time.monotonic() - began, 2))
            conn.execute(f"DROP TABLE {table}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(parser, sizes="10000000,100000000", markets=10000, span_days=1,
                        samples=300)
    parser.add_argument("--checkpoint-every", type=int, default=200,
                        help="changes per market between checkpoints (ingestd's default)")
    parser.add_argument("--write-rows", type=int, default=5_000_000)
    parser.add_argument("--write-rounds", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, dict] = {}
    with bench_questdb("ktape-bench-index-", []) as (qdb, conn, root):
        conninfo = conninfo_of(qdb)
        set_indexes(conn, on=False)  # the migrations add them: start from none
        generated = 0
        for size in sizes:
            info = generate(conn, changes=size - generated, markets=args.markets,
                            first=generated == 0, span_days=args.span_days,
                            checkpoint_every=args.checkpoint_every)
            info["trades"] = generate_trades(conn, trades=(size - generated) // 10,
                                             markets=args.markets, span_days=args.span_days)
            generated = size
            print(f"generated {info}", flush=True)
            found: dict = {"stored": info}
            for variant in ("plain", "indexed"):
                if variant == "indexed":
                    try:
                        found["index_build_secs"] = set_indexes(conn, on=True)
                    except psycopg.Error as exc:  # kept, with QuestDB's last words
                        found["index_build_error"] = str(exc)
                        found["questdb_alive"] = qdb.proc is not None and qdb.proc.poll() is None
                        found["questdb_log_tail"] = {  # its log, and the JVM's own output
                            log.name: log.read_text(errors="replace").splitlines()[-40:]
                            for log in sorted((root / "log").glob("*")) if log.is_file()}
                        print(f"{size}: index build failed: {found}", flush=True)
                        break
                found[variant] = {
                    "orderbook_core": asyncio.run(orderbook_latency.measure(
                        conninfo, args.markets, args.span_days, args.samples, seed=size)),
                    **asyncio.run(history_latency.measure(
                        conninfo, args.markets, args.span_days, args.samples, seed=size))}
                print(f"{size} {variant}: {found[variant]}", flush=True)
            results[str(size)] = found
            if "index_build_error" in found:
                break
            if size == sizes[-1]:
                found["write_secs"] = write_cost(conn, args.write_rows, args.write_rounds)
                print(f"write: {found['write_secs']}", flush=True)
            set_indexes(conn, on=False)
    save("query_ticker_index", {"markets": args.markets, "span_days": args.span_days,
                                "write_rows": args.write_rows, "by_size": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
