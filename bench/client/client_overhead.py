"""What does ktape-client cost over the raw gRPC stubs, and how fast does a replay stream?

Intent: "how fast" for issue 17's two client targets, on a private QuestDB with synthetic
history (bench/query/synthetic.py) and queryd in its own process (no metering:
bench/query/queryd_unmetered.py), as it is deployed:

1. `client.deltas(...).to_df()` over `--changes` stored changes of one market, beside
   the raw stubs paging the same rows (ListOrderbookDeltas, 1,000 a page) in the same
   run, alternating, `--rounds` times each. Target: the client ≤ 10% over the raw stubs.
   The raw side only pages (keeps the messages); the client also builds the DataFrame
   (exact Decimal and datetime columns), so the ratio is the client's whole cost. The
   same pair runs once more against a canned server answering prebuilt pages ("canned"):
   with the server nearly free, that ratio shows the client's own cost undiluted.
2. `client.stream(ticker, start_time)` replaying `--stream-changes` changes (an hour of
   a busy market by default: `--stream-minutes`) from history to one consumer, beside the
   raw StreamOrderbook stub over the same range, one change a message, 1,000 a message
   and 1,000 a message as columns (as the client asks). Target: ≥ 100,000 changes/s
   through the client. A stream replays at most the last 2 hours (older history is
   paged), so each run gets a market of its own, written just behind now right before it.

The client is the source tree's (clients/python/src) with stubs generated from proto/
into a scratch directory, exactly as its build does; pandas must be importable (dev
extra). Saves bench/results/client_overhead.json.

Run: .venv/bin/python bench/client/client_overhead.py [--changes 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import cpu_secs, save
from bench.query.synthetic import START, bench_questdb, conninfo_of, generate

REPO = Path(__file__).resolve().parents[2]


def load_client(scratch: Path) -> None:
    """ktape_client from the source tree, its stubs generated like `pip install` does."""
    spec = importlib.util.spec_from_file_location("client_setup", REPO / "clients/python/setup.py")
    assert spec is not None and spec.loader is not None
    setup = importlib.util.module_from_spec(spec)
    sys.argv, argv = ["setup.py"], sys.argv  # the module's __main__ guard stays shut
    try:
        spec.loader.exec_module(setup)
    finally:
        sys.argv = argv
    shutil.copytree(REPO / "clients/python/src/ktape_client", scratch / "ktape_client")
    setup.generate(scratch)
    sys.path.insert(0, str(scratch))


def write_recent(conninfo: str, ticker: str, changes: int, span_minutes: int) -> dt.datetime:
    """`changes` changes of a new market, evenly over the `span_minutes` before a few
    seconds ago, and a checkpoint before them (the stream's first book), visible when this
    returns; the instant just before the first. Written per run, right before it: a
    stream replays at most the last 2 hours."""
    import psycopg

    from ktape.schema.wal import wait_for_wal

    span_us = span_minutes * 60 * 1_000_000
    first_us = int((time.time() - 5) * 1_000_000) - span_us
    step_us = max(1, span_us // changes)
    levels = ",".join(f"{p}00:{1000 + p}" for p in range(10, 60, 2))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"""
            INSERT INTO book_changes
            SELECT timestamp_sequence({first_us}, {step_us}) AS ts,
                   cast('{ticker}' AS SYMBOL) AS ticker, rnd_symbol('yes', 'no') AS side,
                   100 * (1 + rnd_long(1, 98, 0)) AS price_e4,
                   rnd_long(0, 500000, 0) AS qty_after_e2, rnd_long(-5000, 5000, 0) AS delta_e2,
                   cast('delta' AS SYMBOL) AS kind, x AS seq, 1L AS sid,
                   timestamp_sequence({first_us}, {step_us}) AS recv_ts,
                   cast('exchange' AS SYMBOL) AS ts_source, cast(NULL AS TIMESTAMP) AS source_ts,
                   cast(NULL AS INT) AS best_yes_bid_e4, cast(NULL AS INT) AS best_no_bid_e4
            FROM long_sequence({changes})""")
        conn.execute(f"""
            INSERT INTO book_checkpoints
            SELECT cast({first_us - 1000} AS TIMESTAMP) AS ts, cast('{ticker}' AS SYMBOL),
                   cast('periodic' AS SYMBOL), 0L, 1L, cast({first_us - 1000} AS TIMESTAMP),
                   cast('exchange' AS SYMBOL), '{levels}', '{levels}',
                   cast({first_us - 1000} AS TIMESTAMP)
            FROM long_sequence(1)""")
        wait_for_wal(conn, ["book_changes", "book_checkpoints"], timeout_secs=600)
    return dt.datetime.fromtimestamp((first_us - 1) / 1e6, dt.UTC)


async def raw_pages(addr: str, ticker: str, start: dt.datetime, end: dt.datetime,
                    layout: int = 0) -> int:
    """ListOrderbookDeltas by the stubs, every page, messages kept: the floor (as
    messages, the default layout, or as columns as the client's frames read them)."""
    import grpc
    from google.protobuf import timestamp_pb2

    from ktape.marketdata.v1 import marketdata_pb2 as pb
    from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc

    begin, finish = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    begin.FromDatetime(start)
    finish.FromDatetime(end)
    kept: list = []
    token, rows = "", 0
    async with grpc.aio.insecure_channel(addr, options=[
            ("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        while True:
            page = await stub.ListOrderbookDeltas(pb.ListOrderbookDeltasRequest(
                ticker=ticker, start_time=begin, end_time=finish, page_size=1000,
                page_token=token, layout=layout), timeout=60)
            if layout:
                kept.append(page.columns)
                rows += len(page.columns.kinds)
            else:
                kept.extend(page.deltas)
                rows += len(page.deltas)
            token = page.next_page_token
            if not token:
                return rows


async def raw_pages_columns(addr: str, ticker: str, start: dt.datetime, end: dt.datetime
                            ) -> int:
    from ktape.marketdata.v1 import marketdata_pb2 as pb

    return await raw_pages(addr, ticker, start, end, pb.BATCH_LAYOUT_COLUMNS)


async def client_frame(addr: str, ticker: str, start: dt.datetime, end: dt.datetime) -> int:
    from ktape_client import AsyncClient

    async with AsyncClient(target=addr) as client:
        frame = await client.deltas(ticker, start, end).to_df()
    assert str(frame["price"].dtype) == "object" and str(frame["ts"].dtype).startswith("datetime")
    return len(frame)


async def raw_stream(addr: str, ticker: str, start: dt.datetime, count: int,
                     batch_size: int = 1000, layout: int = 0) -> int:
    import grpc
    from google.protobuf import timestamp_pb2

    from ktape.marketdata.v1 import marketdata_pb2 as pb
    from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc

    begin = timestamp_pb2.Timestamp()
    begin.FromDatetime(start)
    seen = 0
    async with grpc.aio.insecure_channel(addr) as channel:
        call = pb_grpc.MarketDataServiceStub(channel).StreamOrderbook(
            pb.StreamOrderbookRequest(ticker=ticker, start_time=begin, batch_size=batch_size,
                                      batch_layout=layout))
        async for message in call:
            kind = message.WhichOneof("payload")
            if kind == "delta":
                seen += 1
            elif kind == "deltas":
                seen += len(message.deltas.deltas)
            elif kind == "columns":
                seen += len(message.columns.kinds)
            if seen >= count:
                call.cancel()
                break
    return seen


async def raw_stream_unbatched(addr: str, ticker: str, start: dt.datetime, count: int) -> int:
    """The stream as before batching: one message per change (`batch_size` 0)."""
    return await raw_stream(addr, ticker, start, count, batch_size=0)


async def raw_stream_columns(addr: str, ticker: str, start: dt.datetime, count: int) -> int:
    """Batched as columns (BATCH_LAYOUT_COLUMNS), as the client asks."""
    from ktape.marketdata.v1 import marketdata_pb2 as pb

    return await raw_stream(addr, ticker, start, count, layout=pb.BATCH_LAYOUT_COLUMNS)


async def client_stream(addr: str, ticker: str, start: dt.datetime, count: int) -> int:
    from ktape_client import AsyncClient, Change

    seen = 0
    async with AsyncClient(target=addr) as client:
        async for item in client.stream(ticker, start_time=start):
            if isinstance(item, Change):
                seen += 1
                if seen == count:
                    break
    return seen


QUESTDB_PID: int | None = None  # set once QuestDB runs: its CPU is where the rest goes


async def timed(make, *args, server_pid: int | None = None) -> dict:
    """Wall time, this process's CPU (the consumer), the queryd process's CPU and
    QuestDB's CPU for one run: wall minus the CPUs is waiting (I/O, or the other
    processes of a loaded machine)."""
    began, cpu = time.perf_counter(), cpu_secs()
    db_cpu = cpu_secs(QUESTDB_PID) if QUESTDB_PID else 0.0
    server_cpu = cpu_secs(server_pid) if server_pid else 0.0
    rows = await make(*args)
    secs = time.perf_counter() - began
    return {"rows": rows, "secs": round(secs, 3), "rows_per_sec": round(rows / secs),
            "cpu_secs": round(cpu_secs() - cpu, 3),
            "server_cpu_secs": round(cpu_secs(server_pid) - server_cpu if server_pid else 0.0,
                                     3),
            "questdb_cpu_secs": round((cpu_secs(QUESTDB_PID) - db_cpu)
                                      if QUESTDB_PID else 0.0, 3)}


async def canned_server(pages: int) -> tuple:
    """A MarketDataService whose ListOrderbookDeltas answers prebuilt 1,000-row pages
    (nearly free to serve): raw stubs against client with the server out of the way,
    i.e. the client's own cost at its most visible."""
    import grpc

    from ktape.marketdata.v1 import marketdata_pb2 as pb
    from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc

    template = pb.ListOrderbookDeltasResponse()
    for i in range(1000):
        d = template.deltas.add(kind=pb.DELTA_KIND_DELTA, seq=i, sid=1,
                                side=pb.SIDE_YES if i % 2 else pb.SIDE_NO,
                                price=f"0.{100 + (i * 37) % 9800:04d}", delta="-12.00",
                                quantity=f"{(i * 7919) % 100000}.00")
        d.ts.FromMicroseconds(1_793_491_200_000_000 + i * 1000)
        d.receive_time.FromMicroseconds(1_793_491_200_000_500 + i * 1000)
    columns = pb.OrderbookDeltaColumns(
        kinds=[d.kind for d in template.deltas], seqs=[d.seq for d in template.deltas],
        sids=[d.sid for d in template.deltas], sides=[d.side for d in template.deltas],
        ts_unix_micros=[d.ts.ToMicroseconds() for d in template.deltas],
        receive_unix_micros=[d.receive_time.ToMicroseconds() for d in template.deltas],
        source_unix_micros=[0] * len(template.deltas),
        prices_e4=[int(d.price.replace(".", "")) for d in template.deltas],
        deltas_e2=[int(d.delta.replace(".", "")) for d in template.deltas],
        quantities_e2=[int(d.quantity.replace(".", "")) for d in template.deltas],
        causes=[d.cause for d in template.deltas])
    answers, column_answers = [], []
    for n in range(pages):
        token = str(n + 1) if n + 1 < pages else ""
        page = pb.ListOrderbookDeltasResponse(next_page_token=token)
        page.deltas.extend(template.deltas)
        answers.append(page)
        column_answers.append(pb.ListOrderbookDeltasResponse(columns=columns,
                                                             next_page_token=token))

    class Canned(pb_grpc.MarketDataServiceServicer):
        async def ListOrderbookDeltas(self, request, context):
            found = column_answers if request.layout == pb.BATCH_LAYOUT_COLUMNS else answers
            return found[int(request.page_token or 0)]

    server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 << 20)])
    pb_grpc.add_MarketDataServiceServicer_to_server(Canned(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def run_canned(args: argparse.Namespace) -> dict:
    server, addr = await canned_server(args.changes // 1000)
    out: dict = {"raw": [], "raw_columns": [], "client": []}
    try:
        for _ in range(args.rounds):
            for name, fn in (("raw", raw_pages), ("raw_columns", raw_pages_columns),
                             ("client", client_frame)):
                out[name].append(await timed(fn, addr, "KXBENCH-0", START, START))
                print("canned", name, out[name][-1], flush=True)
    finally:
        await server.stop(0)
    return out


def queryd_process(env: dict) -> tuple[subprocess.Popen[str], str]:
    """queryd in its own process (bench/query/queryd_unmetered.py, history only), as it is
    deployed: the server's work and its consumer's then run on two cores, not in one
    event loop under one GIL (in one process, every µs the client spends converting a
    page is a µs the server is not serving the next one)."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench/query/queryd_unmetered.py"), "--no-live"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"port"' in line:
            return proc, f"127.0.0.1:{json.loads(line)['port']}"
    raise RuntimeError(f"queryd exited ({proc.wait()}) before serving")


async def run(env: dict, conninfo: str, args: argparse.Namespace, parts: list[str]) -> dict:
    server, addr = queryd_process(env)
    ticker, start = "KXBENCH-0", START
    end = START + dt.timedelta(days=args.span_days)
    out: dict = {part: {"raw": [], "client": []} for part in ("stream", "deltas") if part in parts}
    if "stream" in parts:
        out["stream"]["raw_unbatched"] = []
        out["stream"]["raw_columns"] = []
    if "deltas" in parts:
        out["deltas"]["raw_columns"] = []
    try:
        await raw_pages(addr, ticker, start, start + dt.timedelta(hours=1))  # warm up
        await client_frame(addr, ticker, start, start + dt.timedelta(hours=1))
        for i in range(args.rounds if "stream" in parts else 0):  # first: history must be recent
            for name, fn in (("raw_unbatched", raw_stream_unbatched), ("raw", raw_stream),
                             ("raw_columns", raw_stream_columns), ("client", client_stream)):
                market = f"KXBENCH-STREAM-{i}-{name}"
                begin = await asyncio.to_thread(write_recent, conninfo, market,
                                                args.stream_changes, args.stream_minutes)
                out["stream"][name].append(await timed(
                    fn, addr, market, begin, args.stream_changes, server_pid=server.pid))
            for name in ("raw_unbatched", "raw", "raw_columns", "client"):
                print(name, out["stream"][name][-1], flush=True)
        for _ in range(args.rounds if "deltas" in parts else 0):
            out["deltas"]["raw"].append(await timed(raw_pages, addr, ticker, start, end,
                                                    server_pid=server.pid))
            out["deltas"]["raw_columns"].append(await timed(raw_pages_columns, addr, ticker,
                                                            start, end, server_pid=server.pid))
            out["deltas"]["client"].append(await timed(client_frame, addr, ticker, start, end,
                                                       server_pid=server.pid))
            for name in ("raw", "raw_columns", "client"):
                print(name, out["deltas"][name][-1], flush=True)
    finally:
        server.terminate()
        server.wait(30)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--stream-changes", type=int, default=300_000)
    parser.add_argument("--stream-minutes", type=int, default=60,
                        help="the replayed market's changes are this many minutes of it")
    parser.add_argument("--span-days", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="stream,deltas,canned",
                        help="which of stream, deltas, canned to run")
    args = parser.parse_args()
    parts = args.parts.split(",")
    scratch = Path(tempfile.mkdtemp(prefix="ktape-bench-client-"))
    try:
        load_client(scratch)
        found: dict = {}
        if "stream" in parts or "deltas" in parts:
            with bench_questdb("ktape-bench-client-", []) as (qdb, conn, root):
                global QUESTDB_PID
                QUESTDB_PID = qdb.proc.pid if qdb.proc is not None else None
                info = generate(conn, changes=args.changes, markets=1, span_days=args.span_days)
                print(f"generated {info}", flush=True)
                env = {"KTAPE_QUESTDB_HTTP": str(qdb.http), "KTAPE_QUESTDB_PG": str(qdb.pg),
                       "KTAPE_DATA_DIR": str(root / "data"), "KTAPE_PAGE_TOKEN_SECRET": "bench"}
                found = asyncio.run(run(env, conninfo_of(qdb), args, parts))
            QUESTDB_PID = None
        if "canned" in parts:
            found["canned"] = asyncio.run(run_canned(args))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary: dict = {"changes": args.changes, "stream_changes": args.stream_changes,
                     "rounds": args.rounds, "runs": found}
    for part in found:
        raw = statistics.median(r["secs"] for r in found[part]["raw"])
        client = statistics.median(r["secs"] for r in found[part]["client"])
        cpu = {side: statistics.median(r["cpu_secs"] for r in found[part][side])
               for side in ("raw", "client")}
        summary[part] = {"raw_median_secs": raw, "client_median_secs": client,
                         "client_extra_cpu_us_per_row": round(
                             (cpu["client"] - cpu["raw"]) / found[part]["raw"][0]["rows"] * 1e6,
                             2),
                         "client_over_raw": round(client / raw - 1, 3),
                         "raw_rows_per_sec": round(found[part]["raw"][0]["rows"] / raw),
                         "client_rows_per_sec": round(found[part]["client"][0]["rows"] / client)}
        for variant in ("raw_unbatched", "raw_columns"):  # stream only
            if found[part].get(variant):
                secs = statistics.median(r["secs"] for r in found[part][variant])
                summary[part][f"{variant}_rows_per_sec"] = round(
                    found[part][variant][0]["rows"] / secs)
        if found[part].get("raw_columns"):  # the client streams columns: its own baseline
            summary[part]["client_over_raw_columns"] = round(
                client / statistics.median(r["secs"] for r in found[part]["raw_columns"]) - 1,
                3)
            # Each round's pair ran back to back on the same machine: the ratio of each
            # pair moves less with the machine's load than the ratio of the medians.
            pairs = [c["secs"] / r["secs"] - 1 for r, c in zip(
                found[part]["raw_columns"], found[part]["client"], strict=True)]
            summary[part]["client_over_raw_columns_by_round"] = [round(p, 3) for p in pairs]
            summary[part]["client_over_raw_columns_round_median"] = round(
                statistics.median(pairs), 3)
            summary[part]["client_extra_cpu_us_per_row_over_columns"] = round(
                (cpu["client"] - statistics.median(r["cpu_secs"] for r in
                                                   found[part]["raw_columns"]))
                / found[part]["raw_columns"][0]["rows"] * 1e6, 2)
    save("client_overhead", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
