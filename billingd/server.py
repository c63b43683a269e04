"""billingd's process: BillingService, BillingAdminService and the internal
MeteringService with gRPC health, plus the Stripe meter reporter when Stripe is set up.

The store is SQLite in KTAPE_DATA_DIR by default, PostgreSQL with
KTAPE_BILLING_DSN=postgresql://...; migrations run at start. Every service reaches it
through one `AsyncBillingStore` (billingd/store/aio.py), whose thread pool is the bound on
the process's concurrent store calls.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from billingd.auth_service import AuthService, SessionAuth
from billingd.metering_service import MeteringService
from billingd.people import AsyncPeople
from billingd.service import BillingAdminService, BillingService
from billingd.store import GapLookup
from billingd.store.aio import AsyncBillingStore
from billingd.stripe_gateway import StripeGateway
from ktape.aio import cancel_and_wait
from ktape.billing.v1 import auth_pb2_grpc as auth_grpc
from ktape.billing.v1 import billing_pb2_grpc as pb_grpc
from ktape.billing.v1 import metering_pb2_grpc as metering_grpc
from ktape.config import Settings
from ktape.entrypoint import run_service
from ktape.grpc_server import RunningServer, serve_until_signalled, start_server
from ktape.internal_auth import InternalTokenServer
from ktape.log import get_logger
from ktape.paging import PageTokens, load_key
from ktape.service_metrics import ServiceMetrics

log = get_logger(__name__)

SERVICE_NAMES = ["ktape.billing.v1.BillingService", "ktape.billing.v1.BillingAdminService",
                 "ktape.billing.v1.AuthService",
                 "ktape.billing.v1.MeteringService"]


@dataclass
class Billingd:
    running: RunningServer
    store: AsyncBillingStore  # `store.sync` is the BillingStore itself (tests, tools)
    stripe: StripeGateway | None


def stripe_gateway(settings: Settings, store: AsyncBillingStore) -> StripeGateway | None:
    api_key = settings.stripe_api_key.reveal() if settings.stripe_api_key else None
    secret = settings.stripe_webhook_secret.reveal() if settings.stripe_webhook_secret else None
    if not api_key and not secret:
        return None
    return StripeGateway(store, api_key=api_key, webhook_secret=secret,
                         api_base=settings.stripe_api_base)


async def build_server(settings: Settings, addr: str | None = None,
                       stats: ServiceMetrics | None = None) -> Billingd:
    store = await AsyncBillingStore.open(settings.billing_dsn_effective)
    tokens = PageTokens(load_key(settings.data_dir))
    stripe = stripe_gateway(settings, store)
    people = AsyncPeople(store)
    running = await start_server(
        addr or str(settings.billingd_addr),
        [
            lambda s: pb_grpc.add_BillingServiceServicer_to_server(
                BillingService(store, tokens, stripe, SessionAuth(people)), s),
            lambda s: auth_grpc.add_AuthServiceServicer_to_server(AuthService(people), s),
            lambda s: pb_grpc.add_BillingAdminServiceServicer_to_server(
                BillingAdminService(store, tokens, people), s),
            lambda s: metering_grpc.add_MeteringServiceServicer_to_server(MeteringService(store, people), s),
        ],
        SERVICE_NAMES,
        interceptors=[*([stats] if stats else []),
                      *([InternalTokenServer(settings.internal_token.reveal(),
                                             "/ktape.billing.v1.MeteringService/")]
                        if settings.internal_token else [])],
    )
    return Billingd(running, store, stripe)


GAP_REFUND_INTERVAL_SECS = 60.0
GAP_REFUND_LOOKBACK = dt.timedelta(days=2)


def questdb_gaps(conninfo: str) -> GapLookup:
    """Recorded gaps from QuestDB (read-only), for refunds of gaps found after a call."""
    def lookup(start: dt.datetime, end: dt.datetime
               ) -> dict[str, list[tuple[dt.datetime, dt.datetime]]]:
        out: dict[str, list[tuple[dt.datetime, dt.datetime]]] = {}
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT ticker, coalesce(start_ts, ts), coalesce(end_ts, now()) FROM gaps "
                "WHERE ts >= %s AND coalesce(start_ts, ts) <= %s", (start, end)).fetchall()
        for ticker, lo, hi in rows:
            out.setdefault(str(ticker), []).append((lo.replace(tzinfo=dt.UTC),
                                                    hi.replace(tzinfo=dt.UTC)))
        return out

    return lookup


async def refund_gap_calls_forever(store: AsyncBillingStore,
                                   interval_secs: float = GAP_REFUND_INTERVAL_SECS,
                                   gaps: GapLookup | None = None) -> None:
    """Refund, automatically, the credits of calls whose answer fell in a recorded gap.

    Usage arrives in batches (and after outages, late), so each pass looks back
    GAP_REFUND_LOOKBACK; refunds are idempotent per call, so overlapping passes are safe.
    """
    while True:
        now = dt.datetime.now(dt.UTC)
        try:
            calls, credits = await store.refund_gap_calls(now - GAP_REFUND_LOOKBACK, now,
                                                          gaps=gaps)
            if calls:
                log.info("billing.gap_refunds", calls=calls, credits=credits)
        except Exception:  # keep refunding on the next pass; the store may be back
            log.exception("billing.gap_refunds_failed")
        await asyncio.sleep(interval_secs)


async def _main(settings: Settings) -> int:
    stats = ServiceMetrics("billingd")
    billingd = await build_server(settings, stats=stats)
    metrics_http = stats.serve(settings.billingd_metrics_addr)
    log.info("server.started", component="billingd", port=billingd.running.port,
             addr=str(settings.billingd_addr), stripe=billingd.stripe is not None)
    tasks = [asyncio.create_task(refund_gap_calls_forever(
        billingd.store, gaps=questdb_gaps(settings.questdb_pg_conninfo)),
        name="billingd-gap-refunds")]
    if billingd.stripe is not None and billingd.stripe.client is not None:
        tasks.append(asyncio.create_task(billingd.stripe.run_meter_reporter(),
                                         name="billingd-meter-reporter"))
    try:
        await serve_until_signalled(billingd.running, "billingd")
    finally:
        await cancel_and_wait(tasks)
        billingd.store.close()
        metrics_http.shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("billingd", _main)
