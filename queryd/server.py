"""queryd's process: config, store pool, migrations, gRPC server, health, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import psycopg
from psycopg_pool import AsyncConnectionPool

from ktape.aio import cancel_and_wait
from ktape.billing.v1 import metering_pb2_grpc as metering_grpc
from ktape.config import Settings
from ktape.datasets.signing import signing_key
from ktape.datasets.storage import open_storage
from ktape.entrypoint import run_service
from ktape.grpc_server import RunningServer, serve_until_signalled, start_server
from ktape.internal_auth import InternalTokenClient
from ktape.log import get_logger
from ktape.marketdata.v1 import analytics_pb2_grpc as analytics_grpc
from ktape.marketdata.v1 import data_status_pb2_grpc as status_grpc
from ktape.marketdata.v1 import datasets_pb2_grpc as datasets_grpc
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.paging import PageTokens, load_key
from ktape.schema import apply_migrations
from ktape.service_metrics import ServiceMetrics
from ktape.sharding import ingestd_addrs, instance_addr
from queryd.analytics import AnalyticsService
from queryd.audit import AuditChecker
from queryd.data_status import DataStatusService
from queryd.datasets import DatasetService
from queryd.live import LiveShards
from queryd.metering.interceptor import CALLER, MeteringInterceptor
from queryd.metering.usage import UsageRecorder
from queryd.metering.verifier import KeyVerifier
from queryd.service import MarketDataService

log = get_logger(__name__)

SERVICE_NAME = "ktape.marketdata.v1.MarketDataService"
STATUS_SERVICE_NAME = "ktape.marketdata.v1.DataStatusService"
DATASETS_SERVICE_NAME = "ktape.marketdata.v1.DatasetService"
ANALYTICS_SERVICE_NAME = "ktape.marketdata.v1.AnalyticsService"
STORE_PROBE_INTERVAL_SECS = 2.0


def replica_addr(settings: Settings) -> str:
    """This replica's gRPC address: KTAPE_QUERYD_ADDR's port + 100 x KTAPE_QUERYD_REPLICA."""
    return str(instance_addr(settings.queryd_addr, settings.queryd_replica))


def live_shards(settings: Settings) -> LiveShards:
    """Followers of every ingest shard's `/live` (KTAPE_INGEST_SHARDS of them)."""
    return LiveShards([f"http://{addr}/live" for addr in ingestd_addrs(settings)])


def open_pool(settings: Settings, *, min_size: int = 2, max_size: int = 16) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        settings.questdb_pg_conninfo, min_size=min_size, max_size=max_size, open=False,
        kwargs={"autocommit": True}, timeout=5.0, name="questdb",
    )


async def build_server(settings: Settings, addr: str | None = None,
                       interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                       live: LiveShards | None = None,
                       metering: metering_grpc.MeteringServiceStub | None = None,
                       ) -> tuple[RunningServer, AsyncConnectionPool, MarketDataService]:
    """Start queryd on `addr` (default KTAPE_QUERYD_ADDR; port 0 allowed). With a
    `metering` stub (billingd) it also sells dataset files, which billingd charges."""
    with psycopg.connect(settings.questdb_pg_conninfo, autocommit=True, connect_timeout=10) as c:
        apply_migrations(c)
    pool = open_pool(settings)
    await pool.open(wait=True, timeout=30)
    if live is not None:
        live.pool = pool  # its visibility tracker reads QuestDB through the same pool
    tokens = PageTokens(load_key(settings.data_dir))
    service = MarketDataService(pool, tokens, live)
    audit = AuditChecker(pool)  # shared: GetAuditReport and ListIncidents check the same samples
    status = DataStatusService(pool, tokens, audit)
    analytics = AnalyticsService(pool, tokens, audit)
    adders = [lambda server: pb_grpc.add_MarketDataServiceServicer_to_server(service, server),
              lambda server: status_grpc.add_DataStatusServiceServicer_to_server(status, server),
              lambda server: analytics_grpc.add_AnalyticsServiceServicer_to_server(
                  analytics, server)]
    names = [SERVICE_NAME, STATUS_SERVICE_NAME, ANALYTICS_SERVICE_NAME]
    if metering is not None:
        datasets = DatasetService(pool, tokens, open_storage(settings), metering,
                                  signing_key(settings), settings.public_url, CALLER.get)
        adders.append(
            lambda server: datasets_grpc.add_DatasetServiceServicer_to_server(datasets, server))
        names.append(DATASETS_SERVICE_NAME)
    running = await start_server(addr or str(replica_addr(settings)), adders, names,
                                 interceptors=interceptors)
    return running, pool, service


async def watch_store(running: RunningServer, pool: AsyncConnectionPool) -> None:
    """Report NOT_SERVING while QuestDB is unreachable, SERVING once it is back."""
    serving = True
    while True:
        await asyncio.sleep(STORE_PROBE_INTERVAL_SECS)
        try:
            async with pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
            healthy = True
        except Exception as exc:  # any failure means "not serving"; logged below
            healthy = False
            error = str(exc)
        if healthy != serving:
            serving = healthy
            await running.set_serving([SERVICE_NAME], serving)
            if serving:
                log.info("store.recovered", component="queryd")
            else:
                log.warning("store.lost", component="queryd", error=error)


def build_metering(settings: Settings, channel: grpc.aio.Channel) -> MeteringInterceptor:
    """The interceptor that authenticates and meters every call, talking to billingd."""
    stub = metering_grpc.MeteringServiceStub(channel)
    return MeteringInterceptor(KeyVerifier(stub),
                               UsageRecorder(stub, settings.data_dir / "usage-spool"),
                               replicas=settings.queryd_replicas)


async def _main(settings: Settings) -> int:
    channel = grpc.aio.insecure_channel(
        str(settings.billingd_addr),
        interceptors=([InternalTokenClient(settings.internal_token.reveal())]
                      if settings.internal_token else None))
    metering = build_metering(settings, channel)
    live = live_shards(settings)
    stats = ServiceMetrics("queryd")  # outermost: counts metering refusals too
    running, pool, service = await build_server(
        settings, interceptors=[stats, metering], live=live,
        metering=metering_grpc.MeteringServiceStub(channel))
    metrics_http = stats.serve(instance_addr(settings.queryd_metrics_addr,
                                             settings.queryd_replica))
    log.info("server.started", component="queryd", port=running.port,
             addr=replica_addr(settings), replica=settings.queryd_replica,
             replicas=settings.queryd_replicas, ingest_shards=settings.ingest_shards,
             billingd=str(settings.billingd_addr))
    tasks = [asyncio.create_task(watch_store(running, pool), name="queryd-store-watch"),
             asyncio.create_task(metering.recorder.run(), name="queryd-usage-recorder"),
             asyncio.create_task(live.run(), name="queryd-live-tail")]
    try:
        await serve_until_signalled(running, "queryd", before_stop=service.stopping.set)
    finally:
        await cancel_and_wait(tasks)
        await metering.recorder.close()
        await channel.close()
        await pool.close()
        metrics_http.shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("queryd", _main)
