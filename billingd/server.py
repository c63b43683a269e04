"""billingd's process: serves BillingService and BillingAdminService with gRPC health.

Until issue 8 lands the services are registered with the generated base servicers, so
every billing RPC answers UNIMPLEMENTED (a clear status, routed through Envoy), while
health, reflection, routing and lifecycle are the real ones the full service will keep.
"""

from __future__ import annotations

from collections.abc import Sequence

from ktape.billing.v1 import billing_pb2_grpc as pb_grpc
from ktape.config import Settings
from ktape.entrypoint import run_service
from ktape.grpc_server import RunningServer, serve_until_signalled, start_server
from ktape.log import get_logger

log = get_logger(__name__)

SERVICE_NAMES = ["ktape.billing.v1.BillingService", "ktape.billing.v1.BillingAdminService"]


async def build_server(settings: Settings, addr: str | None = None) -> RunningServer:
    return await start_server(
        addr or str(settings.billingd_addr),
        [
            lambda s: pb_grpc.add_BillingServiceServicer_to_server(
                pb_grpc.BillingServiceServicer(), s),
            lambda s: pb_grpc.add_BillingAdminServiceServicer_to_server(
                pb_grpc.BillingAdminServiceServicer(), s),
        ],
        SERVICE_NAMES,
    )


async def _main(settings: Settings) -> int:
    running = await build_server(settings)
    log.info("server.started", component="billingd", port=running.port,
             addr=str(settings.billingd_addr))
    await serve_until_signalled(running, "billingd")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("billingd", _main)
