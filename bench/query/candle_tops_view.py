"""Would a per-minute table of tops make a day of candles' closes density-free?

Intent: issue 19 item 2 leaves a day of 1m candles at 100M changes a day above twice its 10M
number, and the largest part left is the book closes: `sql.CANDLE_TOPS` takes each
minute's last row of the market's day from `book_changes` (10,000 rows at 100M). The
next step docs/performance.md named was one row per market-minute. This measures that
step before anyone builds it, with the cheapest exact form of it: a QuestDB materialized
view over `book_changes` with the same `SAMPLE BY 1m` and the same check columns, which
QuestDB keeps consistent with its base table across late rows itself (a table written by
ingestd would need its own story for heals and restarts).

On one private QuestDB with the history bench's synthetic day (`--sizes` changes over
`--markets` markets in one day, appended size after size), the view is created over the
first size's rows (a whole build, timed on its own: QuestDB's CPU for it is the view's
cost for those rows) and then follows the later sizes' rows incrementally, as it would
follow ingest (QuestDB's CPU while generating those includes the refresh; compare its CPU
per row with the first size's, generated without the view). After each size it reports
how long QuestDB took to bring the view up to the base table's last transaction and the
CPU it spent on that, the view's rows and bytes, then times the closes query both
ways on the same random markets' days, alternating which goes first, and checks that both
give the same rows. Saves bench/results/query_candle_tops_view.json.

Run: .venv/bin/python bench/query/candle_tops_view.py --sizes 10000000,100000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import cpu_secs, percentiles, save
from bench.query.synthetic import (
    START,
    add_shape_arguments,
    bench_questdb,
    generate,
)
from queryd import sql

VIEW = "book_tops_1m"
CREATE_VIEW = f"""
CREATE MATERIALIZED VIEW {VIEW} AS (
    SELECT ts, ticker, last(best_yes_bid_e4) AS best_yes, last(best_no_bid_e4) AS best_no,
           last(seq) AS last_seq, max(seq) AS max_seq
    FROM book_changes
    SAMPLE BY 1m
) PARTITION BY DAY
"""
INDEX_VIEW = f"ALTER MATERIALIZED VIEW {VIEW} ALTER COLUMN ticker ADD INDEX"
# The closes as ListCandles would read them from the view (1m: the view's rows as they are).
FROM_VIEW = f"""
SELECT cast(ts AS LONG), best_yes, best_no, last_seq, max_seq
FROM {VIEW}
WHERE ticker = %(ticker)s AND ts >= %(start)s AND ts < %(end)s
"""
WARM_UP = 20


def wait_refreshed(conn: psycopg.Connection, pid: int, timeout_secs: float = 1800.0) -> dict:
    """Seconds and QuestDB CPU seconds until the view has caught up with the base table's
    last applied transaction (checked every 0.2 s; a view that never does ends the run)."""
    began, cpu0 = time.perf_counter(), cpu_secs(pid)
    deadline = time.monotonic() + timeout_secs
    while True:
        refreshed, base, status = conn.execute(
            "SELECT refresh_base_table_txn, base_table_txn, view_status FROM "
            "materialized_views() WHERE view_name = %s", (VIEW,)).fetchone()
        writer, sequencer = conn.execute(
            "SELECT writerTxn, sequencerTxn FROM wal_tables() WHERE name = 'book_changes'"
        ).fetchone()
        if status == "invalid":
            raise RuntimeError(f"{VIEW} is {status}")
        if refreshed == base == writer == sequencer:
            return {"secs": round(time.perf_counter() - began, 2),
                    "questdb_cpu_secs": round(cpu_secs(pid) - cpu0, 2)}
        if time.monotonic() > deadline:
            raise TimeoutError(f"{VIEW} not refreshed after {timeout_secs} s: "
                               f"view at base txn {refreshed}, base at {writer}/{sequencer}")
        time.sleep(0.2)


def view_storage(conn: psycopg.Connection) -> dict:
    rows = conn.execute(f"SELECT sum(numRows), sum(diskSize) FROM table_partitions('{VIEW}')"
                        ).fetchone()
    base = conn.execute("SELECT sum(numRows), sum(diskSize) FROM "
                        "table_partitions('book_changes')").fetchone()
    indexed = conn.execute(f"SELECT indexed FROM (SHOW COLUMNS FROM {VIEW}) "
                           "WHERE column = 'ticker'").fetchone()[0]
    return {"view_rows": rows[0], "view_bytes": rows[1], "base_rows": base[0],
            "base_bytes": base[1], "view_ticker_indexed": indexed}


def measure(conn: psycopg.Connection, markets: int, samples: int, seed: int) -> dict:
    rng = random.Random(seed)
    params = {"start": START, "end": START + dt.timedelta(days=1)}
    ways = {"base": sql.CANDLE_TOPS["1m"], "view": FROM_VIEW}
    times: dict[str, list[float]] = {name: [] for name in ways}
    rows = mismatched = 0
    for i in range(samples + WARM_UP):
        asked = {**params, "ticker": f"KXBENCH-{rng.randrange(markets)}"}
        order = list(ways) if i % 2 else list(reversed(ways))
        got = {}
        for name in order:
            began = time.perf_counter()
            got[name] = conn.execute(ways[name], asked, binary=True).fetchall()
            times[name].append((time.perf_counter() - began) * 1000)
        mismatched += got["base"] != got["view"]
        rows += len(got["base"])
    return {"closes_from_book_changes": percentiles(times["base"][WARM_UP:]),
            "closes_from_view": percentiles(times["view"][WARM_UP:]),
            "rows_per_day": round(rows / (samples + WARM_UP)), "days_mismatched": mismatched}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_shape_arguments(parser, sizes="10000000,100000000", markets=10000, span_days=1,
                        samples=300)
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with bench_questdb("ktape-bench-tops-view-", []) as (qdb, conn, _):
        pid = qdb.proc.pid
        generated = 0
        for size in (int(s) for s in args.sizes.split(",")):
            cpu0, began = cpu_secs(pid), time.perf_counter()
            info = generate(conn, changes=size - generated, markets=args.markets,
                            first=generated == 0, span_days=args.span_days)
            info["generate_secs"] = round(time.perf_counter() - began, 2)
            info["generate_questdb_cpu_secs"] = round(cpu_secs(pid) - cpu0, 2)
            info["view_existed_while_generating"] = generated > 0
            if generated == 0:  # built whole over the first size: its cost on its own
                conn.execute(CREATE_VIEW)
                conn.execute(INDEX_VIEW)
            info["view_refresh"] = wait_refreshed(conn, pid)
            generated = size
            results[str(size)] = {**info, **view_storage(conn),
                                  **measure(conn, args.markets, args.samples, seed=size)}
            print(results[str(size)], flush=True)
    save("query_candle_tops_view", {"sizes": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
