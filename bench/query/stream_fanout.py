"""Stream fan-out: 1,000 live subscribers, how far behind ingest is each one?

Intent: the issue's "1,000 stream subscribers each under 50 ms p99 behind ingest".
`ktape sim` (own process) feeds `--rate` events/s over `--markets` markets to a real
ingestd (own process) recording into a private QuestDB; queryd (own process, the real
server following ingestd's live fan-out, without metering) serves `--subscribers`
StreamOrderbook calls spread evenly over `--tickers` markets, opened by this process.
Lag per delivered change = the client's receive time minus `receive_time` (when ingestd
got the change from the exchange), same host and clock. Reports the distribution over
all deliveries and the worst subscriber's p99. Saves bench/results/query_stream_fanout.json.

Run: .venv/bin/python bench/query/stream_fanout.py [--subscribers 1000] [--secs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import cpu_secs, json_line, percentiles, save, spawn, stop
from ktape.config import HostPort
from ktape.runtime.ports import free_port
from ktape.runtime.questdb import QuestDBProcess


async def subscribe(addr: str, tickers: list[str], subscribers: int, warmup: float,
                    secs: float) -> dict:
    import grpc

    from ktape.marketdata.v1 import marketdata_pb2 as pb
    from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc

    channels = [grpc.aio.insecure_channel(addr) for _ in range(8)]
    lags: list[list[float]] = [[] for _ in range(subscribers)]
    ends: list[str] = []
    measure_from = time.time() + warmup
    measure_to = measure_from + secs

    async def follow(i: int) -> None:
        stub = pb_grpc.MarketDataServiceStub(channels[i % len(channels)])
        call = stub.StreamOrderbook(pb.StreamOrderbookRequest(ticker=tickers[i % len(tickers)]))
        try:
            async for message in call:
                now = time.time()
                if message.HasField("end"):
                    ends.append(message.end.code)
                    return
                if now > measure_to:
                    call.cancel()
                    return
                if message.HasField("delta") and now >= measure_from \
                        and message.delta.kind != pb.DELTA_KIND_GAP:
                    lags[i].append((now - message.delta.receive_time.ToMicroseconds() / 1e6)
                                   * 1000)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                ends.append(exc.code().name)

    await asyncio.gather(*(follow(i) for i in range(subscribers)))
    for channel in channels:
        await channel.close()
    per_sub_p99 = sorted(percentiles(sub)["p99_ms"] for sub in lags if sub)
    return {"deliveries": sum(len(s) for s in lags),
            "subscribers_with_data": len(per_sub_p99),
            "lag_all": percentiles([x for sub in lags for x in sub]),
            "worst_subscriber_p99_ms": per_sub_p99[-1] if per_sub_p99 else None,
            "median_subscriber_p99_ms": per_sub_p99[len(per_sub_p99) // 2] if per_sub_p99 else None,
            "subscribers_p99_under_50ms": sum(1 for p in per_sub_p99 if p < 50),
            "abnormal_ends": ends}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--tickers", type=int, default=50)
    parser.add_argument("--markets", type=int, default=100)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--warmup", type=float, default=15,
                        help="seconds for 1,000 streams to join before measuring")
    parser.add_argument("--secs", type=float, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ktape-bench-fanout-"))
    procs: list[subprocess.Popen[str]] = []
    try:
        sim = spawn([sys.executable, "-m", "ktape", "sim", "--port", "0", "--markets",
                      str(args.markets), "--rate", str(args.rate)], dict(os.environ),
                     root / "sim.log")
        procs.append(sim)
        sim_port = json_line(sim, '"sim.ready"')["port"]
        with QuestDBProcess(root / "qdb", HostPort("127.0.0.1", free_port()),
                            HostPort("127.0.0.1", free_port()), heap_mb=2048) as qdb:
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("KTAPE_")},
                   "KTAPE_QUESTDB_HTTP": str(qdb.http), "KTAPE_QUESTDB_PG": str(qdb.pg),
                   "KTAPE_DATA_DIR": str(root / "data"), "KTAPE_LOG_FORMAT": "json",
                   "KTAPE_LOG_LEVEL": "WARNING",
                   "KTAPE_INGESTD_METRICS_ADDR": f"127.0.0.1:{free_port()}",
                   "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{sim_port}/trade-api/ws/v2",
                   "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{sim_port}/trade-api/v2"}
            ingestd = spawn([sys.executable, "-m", "ingestd"], env, root / "ingestd.log")
            procs.append(ingestd)
            time.sleep(3)
            queryd = spawn([sys.executable, str(Path(__file__).with_name("queryd_unmetered.py"))],
                            env, root / "queryd.log")
            procs.append(queryd)
            port = json_line(queryd, '"port"')["port"]
            markets = httpx.get(f"http://127.0.0.1:{sim_port}/trade-api/v2/markets",
                                params={"limit": args.tickers, "status": "open"}, timeout=10)
            tickers = [m["ticker"] for m in markets.json()["markets"]][: args.tickers]
            cpu_before = {name: cpu_secs(proc.pid) for name, proc in
                          (("sim", sim), ("ingestd", ingestd), ("queryd", queryd))}
            client_before, wall_before = time.process_time(), time.monotonic()
            result = asyncio.run(subscribe(f"127.0.0.1:{port}", tickers, args.subscribers,
                                           args.warmup, args.secs))
            wall = time.monotonic() - wall_before
            result["cpu_share_of_one_core"] = {
                **{name: round((cpu_secs(proc.pid) - cpu_before[name]) / wall, 2)
                   for name, proc in (("sim", sim), ("ingestd", ingestd), ("queryd", queryd))},
                "clients": round((time.process_time() - client_before) / wall, 2)}
    finally:
        stop(procs)
        shutil.rmtree(root, ignore_errors=True)
    save("query_stream_fanout", {"subscribers": args.subscribers, "tickers": len(tickers),
                                 "rate": args.rate, "markets": args.markets, "secs": args.secs,
                                 **result, "target": {"worst_subscriber_p99_ms": 50}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
