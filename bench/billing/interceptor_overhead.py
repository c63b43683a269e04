"""What does metering add to a call?

Intent: "how much does the interceptor cost" — p50/p99 latency of a trivial unary RPC
over loopback gRPC, with and without the metering interceptor (warm verdict cache, real
billingd in process for verification and usage batches), alternating runs so drift hits
both equally. The handler returns a canned answer so the difference is the interceptor.
Target: p50 added < 0.2 ms. Saves bench/results/billing_interceptor_overhead.json.

Run: .venv/bin/python bench/billing/interceptor_overhead.py [--calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import percentiles, save
from billingd.server import build_server as build_billingd
from ktape import pricing
from ktape.billing.v1 import metering_pb2_grpc
from ktape.config import load_settings
from ktape.grpc_server import start_server
from ktape.log import configure_logging
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.service_metrics import ServiceMetrics
from queryd.metering.interceptor import MeteringInterceptor
from queryd.metering.usage import UsageRecorder
from queryd.metering.verifier import KeyVerifier


class Canned(pb_grpc.MarketDataServiceServicer):
    async def GetSeries(self, request, context):
        return pb.GetSeriesResponse(series=pb.Series(series_ticker=request.series_ticker))


async def _serve(interceptors):
    return await start_server("127.0.0.1:0", [
        lambda s: pb_grpc.add_MarketDataServiceServicer_to_server(Canned(), s)],
        ["ktape.marketdata.v1.MarketDataService"], interceptors=interceptors)


async def _timed(stub, calls: int, metadata) -> list[float]:
    out = []
    request = pb.GetSeriesRequest(series_ticker="KXBENCH")
    for _ in range(calls):
        began = time.perf_counter()
        await stub.GetSeries(request, metadata=metadata)
        out.append((time.perf_counter() - began) * 1000)
    return out


async def main(calls: int, rounds: int) -> dict:
    pricing.PLANS["bench"] = pricing.Plan("bench", 10**12, 10**9, postpaid=False)
    with tempfile.TemporaryDirectory(prefix="ktape-bench-billing-") as tmp:
        settings = load_settings({"KTAPE_DATA_DIR": tmp, "KTAPE_PAGE_TOKEN_SECRET": "bench"})
        billingd = await build_billingd(settings, addr="127.0.0.1:0")
        account = await billingd.store.create_account("bench", plan="bench")
        key = (await billingd.store.create_key(account.account_id, env="prod")).full
        billing_channel = grpc.aio.insecure_channel(f"127.0.0.1:{billingd.running.port}")
        metering_stub = metering_pb2_grpc.MeteringServiceStub(billing_channel)
        interceptor = MeteringInterceptor(KeyVerifier(metering_stub),
                                          UsageRecorder(metering_stub, Path(tmp) / "spool"))
        recorder = asyncio.create_task(interceptor.recorder.run())
        plain, metered = await _serve([]), await _serve([interceptor])
        full = await _serve([ServiceMetrics("queryd"), interceptor])  # as queryd runs
        metadata = (("authorization", f"Bearer {key}"),)
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{s.port}")
                    for s in (plain, metered, full)]
        stubs = [pb_grpc.MarketDataServiceStub(c) for c in channels]
        await _timed(stubs[0], 200, metadata)  # warm both paths (and the verdict cache)
        await _timed(stubs[1], 200, metadata)
        await _timed(stubs[2], 200, metadata)
        without, with_, with_all = [], [], []
        for _ in range(rounds):
            without += await _timed(stubs[0], calls // rounds, metadata)
            with_ += await _timed(stubs[1], calls // rounds, metadata)
            with_all += await _timed(stubs[2], calls // rounds, metadata)
        await interceptor.recorder.flush()
        booked = await billingd.store.usage(account_id=account.account_id,
                                            start=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                                            end=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
        recorder.cancel()
        for channel in (*channels, billing_channel):
            await channel.close()
        for server in (plain, metered, full, billingd.running):
            await server.stop(0)
        billingd.store.close()
    base, metered_p, all_p = percentiles(without), percentiles(with_), percentiles(with_all)
    return {"calls_per_variant": len(with_), "without_interceptor": base,
            "with_interceptor": metered_p,
            "added_p50_ms": round(metered_p["p50_ms"] - base["p50_ms"], 3),
            "added_p99_ms": round(metered_p["p99_ms"] - base["p99_ms"], 3),
            "with_metrics_and_metering": all_p,
            "added_with_metrics_p50_ms": round(all_p["p50_ms"] - base["p50_ms"], 3),
            "verify_rpcs": interceptor.verifier.remote_calls,
            "usage_calls_booked": sum(r.calls for r in booked),
            "target": {"added_p50_ms": 0.2}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    configure_logging()
    result = asyncio.run(main(args.calls, args.rounds))
    save("billing_interceptor_overhead", result)
