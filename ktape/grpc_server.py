"""Build, start and gracefully stop a grpc.aio server — the lifecycle every service shares.

Why shared: queryd and billingd must behave the same way (bind and report the port they
got — port 0 in tests —, register the standard health and reflection services, stop with
a grace period so in-flight calls finish) and services never import each other, so the
common part lives in `ktape/`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ktape.log import get_logger

log = get_logger(__name__)

Registrar = Callable[[grpc.aio.Server], None]

GRACE_SECS = 5.0


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def set_serving(self, services: Iterable[str], serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *services):
            await self.health.set(name, status)

    async def stop(self, grace_secs: float = GRACE_SECS) -> None:
        await self.server.stop(grace_secs)


async def start_server(
    addr: str,
    registrars: Sequence[Registrar],
    service_names: Sequence[str],
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    options: Sequence[tuple[str, int]] = (),
) -> RunningServer:
    """Bind `addr` (port 0 allowed), register services + health + reflection, start."""
    server = grpc.aio.server(interceptors=list(interceptors), options=list(options))
    for register in registrars:
        register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(addr)
    if port == 0:
        raise OSError(f"could not bind gRPC server to {addr}")
    await server.start()
    running = RunningServer(server, port, health_servicer)
    await running.set_serving(service_names, True)
    return running


async def serve_until_signalled(running: RunningServer, component: str,
                                before_stop: Callable[[], None] | None = None) -> None:
    """Block until SIGTERM/SIGINT, then stop with a grace period (in-flight calls finish).

    `before_stop` runs first, e.g. to tell open streams to send their final message.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("server.stopping", component=component, grace_secs=GRACE_SECS)
    if before_stop is not None:
        before_stop()
    await running.set_serving([], False)
    await running.stop()
    log.info("server.stopped", component=component)
