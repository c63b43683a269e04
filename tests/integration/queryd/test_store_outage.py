"""queryd while QuestDB is down: UNAVAILABLE with RetryInfo, health NOT_SERVING, and
recovery without a restart once QuestDB is back."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from ktape.config import HostPort, load_settings
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.runtime.ports import free_port
from ktape.runtime.questdb import QuestDBProcess
from queryd import server as queryd_server


@pytest.mark.timeout(180)
async def test_store_outage_is_unavailable_then_recovers(tmp_path, monkeypatch):
    monkeypatch.setattr(queryd_server, "STORE_PROBE_INTERVAL_SECS", 0.3)
    root = Path(tempfile.mkdtemp(prefix="ktape-qdb-outage-"))
    http, pg = HostPort("127.0.0.1", free_port()), HostPort("127.0.0.1", free_port())
    qdb = QuestDBProcess(root, http, pg, heap_mb=768)
    qdb.start()
    settings = load_settings({"KTAPE_QUESTDB_HTTP": str(http), "KTAPE_QUESTDB_PG": str(pg),
                              "KTAPE_DATA_DIR": str(tmp_path),
                              "KTAPE_PAGE_TOKEN_SECRET": "outage-tests"})
    running, pool, _service = await queryd_server.build_server(settings, addr="127.0.0.1:0")
    watcher = asyncio.create_task(queryd_server.watch_store(running, pool))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub, health = pb_grpc.MarketDataServiceStub(channel), health_pb2_grpc.HealthStub(channel)
    service = health_pb2.HealthCheckRequest(service=queryd_server.SERVICE_NAME)
    try:
        await stub.ListSeries(pb.ListSeriesRequest(), timeout=10)
        await asyncio.to_thread(qdb.stop)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListSeries(pb.ListSeriesRequest(), timeout=20)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        status = rpc_status.from_call(info.value)
        assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
        for _ in range(50):
            if (await health.Check(service)).status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.2)
        assert (await health.Check(service)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        await asyncio.to_thread(qdb.start)
        for _ in range(100):  # the pool reconnects by itself
            try:
                await stub.ListSeries(pb.ListSeriesRequest(), timeout=5)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.3)
        await stub.ListSeries(pb.ListSeriesRequest(), timeout=5)
        for _ in range(50):
            if (await health.Check(service)).status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.2)
        assert (await health.Check(service)).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        watcher.cancel()
        await channel.close()
        await running.stop(0)
        await pool.close()
        await asyncio.to_thread(qdb.stop)
