"""Health probes shared by the supervisor (readiness) and `ktape status`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    detail: str
    data: dict[str, Any] | None = None


async def http_probe(url: str, timeout_secs: float = 2.0) -> ProbeResult:
    """GET `url`; healthy on 2xx. A JSON body is kept as `data`."""
    try:
        async with httpx.AsyncClient(timeout=timeout_secs) as client:
            resp = await client.get(url)
    except httpx.HTTPError as exc:
        return ProbeResult(False, f"{type(exc).__name__}: {exc}")
    data: dict[str, Any] | None = None
    if resp.headers.get("content-type", "").startswith("application/json"):
        try:
            parsed = resp.json()
            data = parsed if isinstance(parsed, dict) else {"body": parsed}
        except ValueError:
            data = None
    return ProbeResult(200 <= resp.status_code < 300, f"HTTP {resp.status_code}", data)


async def grpc_health_probe(addr: str, service: str = "", timeout_secs: float = 2.0) -> ProbeResult:
    """The standard grpc.health.v1 Check; healthy when SERVING."""
    try:
        async with grpc.aio.insecure_channel(addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            resp = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_secs
            )
    except grpc.aio.AioRpcError as exc:
        return ProbeResult(False, f"{exc.code().name}: {exc.details()}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    return ProbeResult(resp.status == health_pb2.HealthCheckResponse.SERVING, status)


def healthy(result: ProbeResult) -> bool:
    return result.healthy
