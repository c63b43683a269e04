"""What does QuestDB's page frame size do to ktape's reads? The same queries against two
private QuestDBs holding the same synthetic day, one with QuestDB's default frames of
1,000,000 rows (`cairo.sql.page.frame.max.rows`) and one with 100,000, alternating query
by query in one run.

Intent: whether ktape's server.conf should set the frame size. A filtered query runs as parallel tasks of one
frame each, and a task scans its whole frame before a LIMIT applies: a deltas page (and
the bound it sorts up to), the walk's chunks and the stream's history pages all ask for
the first N rows of one market, and with few markets in a table nearly every row of a
1M-row frame matches. Measured with one market in the table (the worst case: every row
matches) and with 20.

Run: .venv/bin/python bench/query/page_frames.py [--changes 2000000] [--samples 30]
     [--markets 1,20]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import save
from bench.query.synthetic import START, bench_questdb, conninfo_of, generate

FRAMES = (1_000_000, 100_000)
TICKER = "KXBENCH-0"
BOUND = """SELECT ts FROM book_changes WHERE ticker = %(ticker)s AND ts >= %(after)s
AND ts < %(end)s ORDER BY ts LIMIT 2000, 2001"""  # queryd.sql.CHANGES_BOUND's shape
HOUR = """SELECT cast(ts AS LONG), sid, seq, side, price_e4, qty_after_e2 FROM book_changes
WHERE ticker = %(ticker)s AND ts >= %(after)s AND ts < %(hour)s"""  # a scan, no LIMIT


async def one_round(conninfo: str, after: dt.datetime) -> dict[str, float]:
    """Each read once at `after`: ms."""
    import psycopg

    from queryd.history import change_rows
    from queryd.orderbook import orderbook_at

    end = START + dt.timedelta(days=1)
    out: dict[str, float] = {}
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        params = {"ticker": TICKER, "after": after, "end": end,
                  "hour": after + dt.timedelta(hours=1)}
        for name, query in (("deltas_bound", BOUND), ("hour_scan", HOUR)):
            began = time.perf_counter()
            await (await conn.execute(query, params)).fetchall()
            out[name] = (time.perf_counter() - began) * 1000
        key = (int(after.timestamp() * 1_000_000), 2**62, 2**62, "~", 2**62)
        began = time.perf_counter()
        await change_rows(conn, TICKER, START, end, key, 1001)  # a ListOrderbookDeltas page
        out["deltas_page"] = (time.perf_counter() - began) * 1000
        began = time.perf_counter()
        await orderbook_at(conn, TICKER, after)
        out["orderbook_at"] = (time.perf_counter() - began) * 1000
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=2_000_000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--markets", default="1,20",
                        help="markets in the table, one run each (comma-separated)")
    args = parser.parse_args()
    result: dict = {"changes": args.changes, "samples": args.samples, "runs": {}}
    for markets in (int(m) for m in args.markets.split(",")):
        with ExitStack() as stack:
            conninfos = {}
            for frame in FRAMES:
                os.environ["QDB_CAIRO_SQL_PAGE_FRAME_MAX_ROWS"] = str(frame)
                try:
                    qdb, conn, _root = stack.enter_context(
                        bench_questdb(f"ktape-bench-frames-{frame}-", []))
                finally:
                    del os.environ["QDB_CAIRO_SQL_PAGE_FRAME_MAX_ROWS"]
                generate(conn, changes=args.changes, markets=markets, span_days=1,
                         checkpoint_every=200)
                conninfos[frame] = conninfo_of(qdb)
            times: dict[int, dict[str, list[float]]] = {f: {} for f in FRAMES}
            for k in range(args.samples):  # alternating: both see the same machine
                after = START + dt.timedelta(seconds=2000 * k)
                for frame in FRAMES:
                    for name, ms in asyncio.run(one_round(conninfos[frame], after)).items():
                        times[frame].setdefault(name, []).append(ms)
            result["runs"][f"{markets}_markets"] = {
                f"frames_{frame}": {name: round(statistics.median(v), 2)
                                    for name, v in times[frame].items()}
                for frame in FRAMES}
            print(markets, result["runs"][f"{markets}_markets"], flush=True)
    save("query_page_frames", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
