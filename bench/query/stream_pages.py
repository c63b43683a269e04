"""How big should a stream's history page be? QuestDB's and queryd's cost per row of
`queryd.history.change_rows` (the query StreamOrderbook pages history with) at several
page sizes, side by side in one run, reading the same `--changes` rows of one market in
order; and QuestDB's own Parquet export (`/exp`) of the same rows in pages of the largest
size, as the engine's own bulk read to compare with.

Intent: stream.PAGE. A page's query has a fixed cost (parse, the bound's scan, the sort)
that a bigger page spreads over more rows; past some size a bigger page only holds more
rows in memory per stream.

Run: .venv/bin/python bench/query/stream_pages.py [--changes 300000] [--sizes 5000,20000,50000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import cpu_secs, save
from bench.query.synthetic import START, bench_questdb, conninfo_of, generate

TICKER = "KXBENCH-0"


async def page_through(conninfo: str, size: int) -> int:
    import psycopg

    from queryd.history import change_rows

    end = START + dt.timedelta(days=2)
    after = (int(START.timestamp() * 1_000_000) - 1, 2**62, 2**62, "~", 2**62)
    got = 0
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        while True:
            rows = await change_rows(conn, TICKER, START, end, after, size)
            got += len(rows)
            if len(rows) < size:
                return got
            after = rows[-1][:5]


def export_through(http: str, size: int) -> int:
    """The same rows by QuestDB's Parquet export, `size` a request, read into columns."""
    import httpx
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ktape.clock import us_rfc3339

    after_us, got = int(START.timestamp() * 1_000_000) - 1, 0
    with httpx.Client(timeout=120) as client:
        while True:
            query = ("SELECT cast(ts AS LONG) ts, sid, seq, side, price_e4, qty_after_e2, "
                     "delta_e2, kind, cast(recv_ts AS LONG) recv, cast(source_ts AS LONG) src "
                     f"FROM book_changes WHERE ticker = '{TICKER}' "
                     f"AND ts > '{us_rfc3339(after_us)}' "
                     f"ORDER BY ts, sid, seq, side, price_e4 LIMIT {size}")
            resp = client.get(f"http://{http}/exp", params={"query": query, "fmt": "parquet"})
            resp.raise_for_status()
            table = pq.read_table(pa.BufferReader(resp.content))
            columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
            got += table.num_rows
            if table.num_rows < size:  # synthetic rows have distinct times: ts > is exact
                return got
            after_us = columns[0][-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=300_000)
    parser.add_argument("--sizes", default="5000,20000,50000")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs: list[dict] = []
    with bench_questdb("ktape-bench-pages-", []) as (qdb, conn, _root):
        generate(conn, changes=args.changes, markets=1, span_days=1)
        pid = qdb.proc.pid if qdb.proc is not None else None
        conninfo = conninfo_of(qdb)
        asyncio.run(page_through(conninfo, sizes[0]))  # warm up QuestDB's JIT and caches
        for _ in range(args.rounds):
            variants = [("change_rows", size) for size in sizes] + [("exp_parquet", sizes[-1])]
            for name, size in variants:
                began, cpu, db = time.perf_counter(), cpu_secs(), cpu_secs(pid)
                rows = (asyncio.run(page_through(conninfo, size)) if name == "change_rows"
                        else export_through(str(qdb.http), size))
                secs = time.perf_counter() - began
                runs.append({"read": name, "page": size, "rows": rows,
                             "rows_per_sec": round(rows / secs),
                             "ours_cpu_us_per_row": round((cpu_secs() - cpu) / rows * 1e6, 2),
                             "questdb_cpu_us_per_row": round((cpu_secs(pid) - db) / rows * 1e6,
                                                             2)})
                print(runs[-1], flush=True)
    save("stream_pages", {"changes": args.changes, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
