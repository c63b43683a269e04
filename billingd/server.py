"""billingd's process: serves BillingService and BillingAdminService with gRPC health.

The store is SQLite in KTAPE_DATA_DIR (KTAPE_BILLING_DSN=sqlite:///...). RPCs of issue 8
not built yet answer UNIMPLEMENTED (see billingd/service.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from billingd.service import BillingAdminService, BillingService
from billingd.store import SqliteStore
from ktape.billing.v1 import billing_pb2_grpc as pb_grpc
from ktape.config import ConfigError, Settings, load_settings
from ktape.entrypoint import run_service
from ktape.grpc_server import RunningServer, serve_until_signalled, start_server
from ktape.log import get_logger

log = get_logger(__name__)

SERVICE_NAMES = ["ktape.billing.v1.BillingService", "ktape.billing.v1.BillingAdminService"]


async def build_server(settings: Settings, addr: str | None = None) -> RunningServer:
    store = SqliteStore.from_dsn(settings.billing_dsn_effective)
    return await start_server(
        addr or str(settings.billingd_addr),
        [
            lambda s: pb_grpc.add_BillingServiceServicer_to_server(BillingService(store), s),
            lambda s: pb_grpc.add_BillingAdminServiceServicer_to_server(
                BillingAdminService(store), s),
        ],
        SERVICE_NAMES,
    )


async def _main(settings: Settings) -> int:
    running = await build_server(settings)
    log.info("server.started", component="billingd", port=running.port,
             addr=str(settings.billingd_addr))
    await serve_until_signalled(running, "billingd")
    return 0


def _check_store_dsn() -> None:
    dsn = load_settings().billing_dsn_effective
    if not dsn.startswith("sqlite:///"):
        raise ConfigError("KTAPE_BILLING_DSN", "***",
                          "sqlite:///PATH (the PostgreSQL store is not built yet)")


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("billingd", _main, validate=_check_store_dsn)
