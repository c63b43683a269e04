"""How much do the analytics save over doing it with GetOrderbook?

Intent, measured side by side in one run on a private QuestDB with synthetic history
(bench/query/synthetic.py) through an in-process queryd over loopback gRPC:
1. GetEventOrderbook of a 20-market event vs one GetOrderbook (target: < 2x), at full
   depth and at depth 10;
2. a stretch of 1 s snapshots of a busy market by ListOrderbookSnapshots pages vs the
   same boundaries by one GetOrderbook each, 20 per page, interleaved page by page
   (target: >= 50x the rate);
3. ListQuotes pages over the same stretch, rows/s;
and item 1 again as a user makes the calls: REST through Envoy to queryd in its own process.
Saves bench/results/query_analytics.json.

Run: .venv/bin/python bench/query/analytics.py [--changes 2000000] [--markets 20]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    json_line,
    percentiles,
    save,
    spawn,
    spawn_envoy,
    stop,
    wait_for_http,
)
from bench.query.synthetic import (
    START,
    bench_questdb,
    generate,
    insert_bench_markets,
    queryd_channel,
    queryd_env,
)
from ingestd.config import IngestSettings

DEPTHS = (0, 10)  # 0: every level


def _ts(value: dt.datetime):
    from google.protobuf import timestamp_pb2

    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def random_instant(rng: random.Random, span_us: int) -> dt.datetime:
    """An instant in the last nine tenths of the synthetic history (the first tenth may
    precede a market's first checkpoint)."""
    return START + dt.timedelta(microseconds=rng.randrange(span_us // 10, span_us))


def pair_result(one_ms: list[float], event_ms: list[float], suffix: str = "") -> dict:
    """Percentiles of one GetOrderbook and of the event call measured beside it, and
    their p50 ratio (item 1's measure), under keys ending in `suffix`."""
    one, event = percentiles(one_ms), percentiles(event_ms)
    return {"get_orderbook" + suffix: one, "get_event_orderbook" + suffix: event,
            "event_over_one_p50" + suffix: round(event["p50_ms"] / one["p50_ms"], 2)}


async def run(env: dict, markets: int, span_days: int, samples: int, stretch_s: int) -> dict:
    from ktape.marketdata.v1 import analytics_pb2 as apb
    from ktape.marketdata.v1 import analytics_pb2_grpc as agrpc
    from ktape.marketdata.v1 import marketdata_pb2 as pb
    from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc

    rng = random.Random(7)
    span_us = span_days * 86_400 * 1_000_000
    out: dict = {}
    async with queryd_channel(env) as channel:
        md, an = pb_grpc.MarketDataServiceStub(channel), agrpc.AnalyticsServiceStub(channel)

        # Interleaved, so both see the same machine; at full depth (the default: every
        # level of 20 books, ~1,250) and at depth 10 (~400), which show what building
        # the answer's levels costs apart from reading the books.
        times: dict[tuple[str, int], list[float]] = {}
        for i in range(samples + 30):
            at = _ts(random_instant(rng, span_us))
            ticker = f"KXBENCH-{rng.randrange(markets)}"
            for depth in DEPTHS:
                began = time.perf_counter()
                await md.GetOrderbook(pb.GetOrderbookRequest(ticker=ticker, at=at, depth=depth),
                                      timeout=10)
                mid = time.perf_counter()
                got = await an.GetEventOrderbook(apb.GetEventOrderbookRequest(
                    event_ticker="KXBENCH-EVENT", at=at, depth=depth), timeout=10)
                end = time.perf_counter()
                assert len(got.markets) == markets
                if i >= 30:
                    times.setdefault(("one", depth), []).append((mid - began) * 1000)
                    times.setdefault(("event", depth), []).append((end - mid) * 1000)
        for depth in DEPTHS:
            out.update(pair_result(times["one", depth], times["event", depth],
                                   f"_depth{depth}" if depth else ""))

        start = START + dt.timedelta(days=span_days // 2)
        end = start + dt.timedelta(seconds=stretch_s)
        ticker = "KXBENCH-0"
        # Interleaved, page by page: each page of snapshots, then GetOrderbook at
        # `per_page` boundaries spread over that page's stretch, so both sides see the
        # same machine and the same data warm (run one after the other, the GetOrderbook
        # side moved between 206 and 477 calls/s from run to run).
        snap_secs = call_secs = 0.0
        snaps = calls = 0
        token, page_start, per_page = "", start, 20
        while True:
            began = time.perf_counter()
            page = await an.ListOrderbookSnapshots(apb.ListOrderbookSnapshotsRequest(
                ticker=ticker, start_time=_ts(start), end_time=_ts(end), interval="1s",
                depth=10, page_size=1000, page_token=token), timeout=60)
            snap_secs += time.perf_counter() - began
            snaps += len(page.snapshots)
            span_s = len(page.snapshots)
            began = time.perf_counter()
            for k in range(min(per_page, span_s)):
                await md.GetOrderbook(pb.GetOrderbookRequest(
                    ticker=ticker, depth=10, at=_ts(page_start + dt.timedelta(
                        seconds=k * span_s // per_page))), timeout=10)
                calls += 1
            call_secs += time.perf_counter() - began
            page_start += dt.timedelta(seconds=span_s)
            token = page.next_page_token
            if not token:
                break
        out["snapshots"] = {"boundaries": snaps, "secs": round(snap_secs, 3),
                            "per_s": round(snaps / snap_secs)}
        out["getorderbook_per_boundary"] = {"calls": calls, "secs": round(call_secs, 3),
                                            "per_s": round(calls / call_secs)}
        out["snapshots_speedup"] = round((snaps / snap_secs) / (calls / call_secs), 1)

        began, quotes, token = time.perf_counter(), 0, ""
        while True:
            page = await an.ListQuotes(apb.ListQuotesRequest(
                ticker=ticker, start_time=_ts(start), end_time=_ts(end), page_size=1000,
                page_token=token), timeout=60)
            quotes += len(page.quotes)
            token = page.next_page_token
            if not token:
                break
        secs = time.perf_counter() - began
        out["quotes"] = {"rows": quotes, "secs": round(secs, 3), "per_s": round(quotes / secs)}
    return out


def rest(env: dict[str, str], root: Path, markets: int, span_days: int, samples: int) -> dict:
    """Item 1 as a user makes the calls: REST through Envoy to a queryd in its own
    process (bench/query/queryd_unmetered.py), one keep-alive connection, pairs
    interleaved as over gRPC."""
    import httpx

    rng = random.Random(11)
    span_us = span_days * 86_400 * 1_000_000
    procs: list[subprocess.Popen[str]] = []
    try:
        queryd = spawn([sys.executable, str(Path(__file__).with_name("queryd_unmetered.py")),
                        "--no-live"], {**os.environ, **env, "KTAPE_LOG_LEVEL": "ERROR"},
                       root / "queryd.log")
        procs.append(queryd)
        port = json_line(queryd, '"port"')["port"]
        envoy, http_port = spawn_envoy(root, queryd_addr=f"127.0.0.1:{port}")
        procs.append(envoy)
        base = f"http://127.0.0.1:{http_port}"
        wait_for_http(f"{base}/v1/markets/KXBENCH-0/orderbook", 200)
        times: dict[str, list[float]] = {"one": [], "event": []}
        with httpx.Client(base_url=base, timeout=10) as client:
            for i in range(samples + 30):
                at = random_instant(rng, span_us).isoformat().replace("+00:00", "Z")
                began = time.perf_counter()
                client.get(f"/v1/markets/KXBENCH-{rng.randrange(markets)}/orderbook",
                           params={"at": at}).raise_for_status()
                mid = time.perf_counter()
                got = client.get("/v1/events/KXBENCH-EVENT/orderbook", params={"at": at})
                end = time.perf_counter()
                got.raise_for_status()
                assert len(got.json()["markets"]) == markets
                if i >= 30:
                    times["one"].append((mid - began) * 1000)
                    times["event"].append((end - mid) * 1000)
    finally:
        stop(procs)
    return pair_result(times["one"], times["event"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=2_000_000)
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--span-days", type=int, default=2)
    parser.add_argument("--samples", type=int, default=300)
    ingest = IngestSettings()  # the bench's checkpoints follow ingestd's defaults
    parser.add_argument("--checkpoint-every", type=int, default=ingest.checkpoint_every_changes,
                        help="changes per market between checkpoints (ingestd's default)")
    parser.add_argument("--checkpoint-interval-s", type=float,
                        default=ingest.checkpoint_interval_secs,
                        help="ingestd's time rule too (KTAPE_CHECKPOINT_INTERVAL_SECS): a "
                             "market's first change this long after its last checkpoint is "
                             "checkpointed; 0 = the count rule alone")
    parser.add_argument("--stretch-s", type=int, default=3600,
                        help="seconds of 1 s snapshots of the busiest market")
    args = parser.parse_args()
    with bench_questdb("ktape-bench-an-", []) as (qdb, conn, root):
        info = generate(conn, changes=args.changes, markets=args.markets,
                        span_days=args.span_days, checkpoint_every=args.checkpoint_every,
                        checkpoint_interval_s=args.checkpoint_interval_s or None)
        insert_bench_markets(conn, args.markets)
        conn.execute("""INSERT INTO events (ts, event_ticker, series_ticker, title,
            mutually_exclusive) VALUES (%s, 'KXBENCH-EVENT', 'KXBENCH', 'bench', true)""",
                     (START,))
        from ktape.schema.wal import wait_for_wal

        wait_for_wal(conn, ["markets", "events"])
        result = asyncio.run(run(queryd_env(qdb, root), args.markets, args.span_days, args.samples,
                                 args.stretch_s))
        result["rest"] = rest(queryd_env(qdb, root), root, args.markets, args.span_days,
                              args.samples)
    result.update(changes=info["changes"], checkpoints=info["checkpoints"],
                  checkpoint_every=info["checkpoint_every"], markets=args.markets,
                  span_days=args.span_days)
    print(result)
    save("query_analytics", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
