"""What does a stored book change cost on disk, native and as Parquet, and what does
Parquet do to GetOrderbook?

Intent: "how much disk" and "how much slower", per Parquet codec (QuestDB's default
LZ4_RAW, and ZSTD), each on a private QuestDB:
1. Synthetic: one closed day of book changes and checkpoints (bench/query/synthetic.py,
   random values: a poor case for compression), plus a row the next day so the day is not
   the active partition. Bytes per stored row from table_partitions() (`diskSize`) and the
   partition directory on disk, native, then after the partitions job's conversion
   (datasetd/partitions.py `convert`), with the conversion's time.
2. GetOrderbook's core (queryd.orderbook.orderbook_at) at random markets and instants of
   that day, on the native day and again on the converted day.
3. A late row and a re-sent (deduplicated) row written into the converted day, as a heal
   or a spill replay would: how long until visible, whether both land exactly once and
   the day stays Parquet.
4. With --sim-secs > 0: the same byte counts for a day recorded by the real ingestd from
   the simulator (realistic ladders and values), closed the same way.
The machine is shared with other work (2 cores, several people): timings are indicative.
Saves bench/results/storage_bytes_per_change.json.

Run: .venv/bin/python bench/storage/bytes_per_change.py [--changes 2000000] [--sim-secs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import percentiles, save
from bench.query.synthetic import START, START_US, bench_questdb, conninfo_of, generate
from datasetd.partitions import Partition, convert, read_partitions
from ktape.schema.wal import wait_for_wal
from queryd.orderbook import orderbook_at

TABLES = ("book_changes", "book_checkpoints")
DAY = START.date()
NEXT_DAY_US = START_US + 86_400_000_000
CODEC_ENV = "QDB_CAIRO_PARTITION_ENCODER_PARQUET_COMPRESSION_CODEC"
LEVEL_ENV = "QDB_CAIRO_PARTITION_ENCODER_PARQUET_COMPRESSION_LEVEL"
CODEC_LEVELS = {"LZ4_RAW": "0", "ZSTD": "9", "UNCOMPRESSED": "0"}


def partition(conn: psycopg.Connection, table: str, day: dt.date) -> Partition:
    return next(p for p in read_partitions(conn, table) if p.day == day)


def dir_bytes(root: Path, table: str, day: dt.date) -> int:
    """Allocated bytes (du) of the day's partition directory: QuestDB keeps one per
    partition version (`<day>` or `<day>.<txn>`); the newest is the live one."""
    tables = [d for d in (root / "db").iterdir() if d.is_dir() and d.name.split("~")[0] == table]
    versions = sorted((d for d in tables[0].iterdir()
                       if d.is_dir() and d.name.split(".")[0] == day.isoformat()),
                      key=lambda d: int(d.name.split(".")[1]) if "." in d.name else -1)
    out = subprocess.run(["du", "-s", "--block-size=1", str(versions[-1])], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0])


def close_day(conn: psycopg.Connection, next_day_us: int) -> None:
    """One row the next day in each table, so the measured day is no longer the active
    partition (QuestDB truncates its files then, as it does at every midnight)."""
    conn.execute(f"INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, delta_e2, "
                 f"kind, seq, sid, recv_ts, ts_source) VALUES ({next_day_us}, 'KXNEXT', 'yes', "
                 f"100, 0, 0, 'delta', 1, 1, {next_day_us}, 'exchange')")
    conn.execute(f"INSERT INTO book_checkpoints (ts, ticker, reason, seq, sid, recv_ts, ts_source, "
                 f"yes_levels, no_levels) VALUES ({next_day_us}, 'KXNEXT', 'periodic', 1, 1, "
                 f"{next_day_us}, 'exchange', '', '')")
    wait_for_wal(conn, TABLES, timeout_secs=120)


def sizes(conn: psycopg.Connection, root: Path, day: dt.date) -> dict:
    out = {}
    for table in TABLES:
        p = partition(conn, table, day)
        on_disk = dir_bytes(root, table, day)
        out[table] = {"rows": p.rows, "parquet": p.parquet, "disk_size": p.bytes,
                      "dir_bytes": on_disk, "bytes_per_row": round(p.bytes / p.rows, 2),
                      "dir_bytes_per_row": round(on_disk / p.rows, 2)}
    return out


def convert_day(conn: psycopg.Connection, day: dt.date) -> dict[str, float]:
    secs = {}
    for table in TABLES:
        began = time.monotonic()
        convert(conn, table, [day], timeout_secs=900)
        secs[table] = round(time.monotonic() - began, 2)
    return secs


async def time_books(conninfo: str, markets: int, samples: int, seed: int) -> dict:
    rng = random.Random(seed)
    day_us = 86_400_000_000
    timings: list[float] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for i in range(samples + 30):
            ticker = f"KXBENCH-{rng.randrange(markets)}"
            at = START + dt.timedelta(microseconds=rng.randrange(day_us // 10, day_us - 1))
            began = time.perf_counter()
            result = await orderbook_at(conn, ticker, at)
            if i >= 30:  # warm-up excluded
                timings.append((time.perf_counter() - began) * 1000)
            assert result.book.yes or result.book.no, (ticker, at)
    return percentiles(timings)


def late_rows(conn: psycopg.Connection, http: str) -> dict:
    """A new row and a re-sent existing row into the converted day, over ILP/HTTP as
    ingestd writes: both must land exactly once, visibly, and the day stay Parquet."""
    before = partition(conn, "book_changes", DAY)
    ts, ticker, side, price, qty, delta, seq, sid = conn.execute(
        "SELECT ts, ticker, side, price_e4, qty_after_e2, delta_e2, seq, sid FROM book_changes "
        f"WHERE ts IN '{DAY.isoformat()}' LIMIT 1000, 1001").fetchone()
    ts_us = int(ts.replace(tzinfo=dt.UTC).timestamp()) * 1_000_000 + ts.microsecond
    late_us = START_US + 43_200_000_000 + 7  # noon, between existing rows
    lines = (f"book_changes,ticker=KXLATE,side=yes,kind=delta,ts_source=exchange price_e4=4200i,"
             f"qty_after_e2=700i,delta_e2=700i,seq=1i,sid=99i,recv_ts={late_us}t {late_us * 1000}\n"
             f"book_changes,ticker={ticker},side={side},kind=delta,ts_source=exchange "
             f"price_e4={price}i,qty_after_e2={qty}i,delta_e2={delta}i,seq={seq}i,sid={sid}i,"
             f"recv_ts={ts_us}t {ts_us * 1000}\n")
    began = time.monotonic()
    response = httpx.post(f"http://{http}/write?precision=n", content=lines.encode(), timeout=60)
    response.raise_for_status()
    wait_for_wal(conn, ["book_changes"], timeout_secs=300)
    visible_secs = time.monotonic() - began
    after = partition(conn, "book_changes", DAY)
    (late,) = conn.execute("SELECT count() FROM book_changes WHERE ticker = 'KXLATE'").fetchone()
    (copies,) = conn.execute(
        f"SELECT count() FROM book_changes WHERE ts = {ts_us} AND ticker = '{ticker}' "
        f"AND seq = {seq} AND side = '{side}' AND price_e4 = {price}").fetchone()
    # more late commits, one row each (a heal per gap): does the file keep growing?
    bytes_after_each = []
    for k in range(1, 6):
        at_us = late_us + k * 3_600_000_000
        httpx.post(f"http://{http}/write?precision=n", timeout=60, content=(
            f"book_changes,ticker=KXLATE,side=yes,kind=delta,ts_source=exchange price_e4=4200i,"
            f"qty_after_e2=700i,delta_e2=0i,seq={k + 1}i,sid=99i,recv_ts={at_us}t "
            f"{at_us * 1000}\n").encode()).raise_for_status()
        wait_for_wal(conn, ["book_changes"], timeout_secs=300)
        bytes_after_each.append(partition(conn, "book_changes", DAY).bytes)
    return {"visible_after_secs": round(visible_secs, 2), "late_row_count": int(late),
            "resent_row_copies": int(copies), "rows_before": before.rows,
            "rows_after": after.rows, "still_parquet": after.parquet,
            "bytes_before": before.bytes, "bytes_after": after.bytes,
            "bytes_after_5_more_late_commits": bytes_after_each}


def recorded_day(qdb, root: Path, conn: psycopg.Connection, secs: float) -> dict:
    """Record `secs` of the simulator with the real ingestd, close that day, convert it."""
    from ingestd.app import Ingestd
    from ingestd.config import IngestSettings
    from ktape.config import load_settings
    from ktape.sim.server import SimConfig, SimServer

    async def record() -> None:
        async with SimServer(SimConfig(markets=40, rate=800, seed=7)) as sim:
            settings = load_settings({
                "KTAPE_QUESTDB_HTTP": str(qdb.http), "KTAPE_QUESTDB_PG": str(qdb.pg),
                "KTAPE_DATA_DIR": str(root / "ingest"),
                "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2",
                "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{sim.port}/trade-api/v2"})
            stop = asyncio.Event()
            task = asyncio.create_task(Ingestd(settings, IngestSettings()).run(stop))
            await asyncio.sleep(secs)
            sim.config.rate = 0
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.wait_for(task, 30)

    asyncio.run(record())
    wait_for_wal(conn, TABLES, timeout_secs=120)
    today = dt.datetime.now(dt.UTC).date()
    close_day(conn, int(dt.datetime.combine(today + dt.timedelta(days=1), dt.time(),
                                            dt.UTC).timestamp()) * 1_000_000)
    native = sizes(conn, root, today)
    convert_secs = convert_day(conn, today)
    return {"day": today.isoformat(), "native": native, "parquet": sizes(conn, root, today),
            "convert_secs": convert_secs}


def run_codec(codec: str, args: argparse.Namespace) -> dict:
    os.environ[CODEC_ENV] = codec  # the QuestDB child reads its config overrides from env
    os.environ[LEVEL_ENV] = CODEC_LEVELS[codec]
    with bench_questdb(f"ktape-bench-storage-{codec.lower()}-", []) as (qdb, conn, root):
        db_root = root  # QuestDB's root: its tables are under db/
        began = time.monotonic()
        info = generate(conn, changes=args.changes, markets=args.markets, span_days=1,
                        checkpoint_every=args.checkpoint_every)
        close_day(conn, NEXT_DAY_US)
        print(f"[{codec}] generated {info} in {time.monotonic() - began:.1f}s", flush=True)
        native = sizes(conn, db_root, DAY)
        native_books = asyncio.run(time_books(conninfo_of(qdb), args.markets, args.samples, 1))
        convert_secs = convert_day(conn, DAY)
        parquet = sizes(conn, db_root, DAY)
        parquet_books = asyncio.run(time_books(conninfo_of(qdb), args.markets, args.samples, 1))
        late = late_rows(conn, str(qdb.http))
        out = {"generated": info, "native": native, "parquet": parquet,
               "convert_secs": convert_secs,
               "orderbook_native": native_books, "orderbook_parquet": parquet_books,
               "orderbook_p50_ratio": round(parquet_books["p50_ms"] / native_books["p50_ms"], 3),
               "late_rows_into_parquet": late}
        for table in TABLES:
            out[f"{table}_parquet_over_native"] = round(
                parquet[table]["disk_size"] / native[table]["disk_size"], 3)
        if args.sim_secs > 0:
            out["recorded"] = recorded_day(qdb, db_root, conn, args.sim_secs)
        print(f"[{codec}] {out}", flush=True)
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=2_000_000)
    parser.add_argument("--markets", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--checkpoint-every", type=int, default=200,
                        help="changes per market between checkpoints (ingestd's default)")
    parser.add_argument("--codecs", default="LZ4_RAW,ZSTD")
    parser.add_argument("--sim-secs", type=float, default=20.0,
                        help="seconds of simulator recorded by ingestd (0: skip)")
    args = parser.parse_args()
    by_codec = {codec: run_codec(codec, args) for codec in args.codecs.split(",")}
    save("storage_bytes_per_change", {
        "machine_note": "shared with other work (2 cores, several people): timings indicative",
        "changes": args.changes, "markets": args.markets, "by_codec": by_codec})
    return 0


if __name__ == "__main__":
    sys.exit(main())
