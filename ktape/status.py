"""`ktape status`: probe every component directly and report health and ingest details.

Why probe rather than ask the supervisor: status must work whether the stack runs under
`ktape up`, under systemd, or split across machines; each component's own health
endpoint is the truth.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ktape.config import Settings
from ktape.probes import ProbeResult, grpc_health_probe, http_probe


async def collect_status(settings: Settings) -> dict[str, Any]:
    checks: dict[str, tuple[str, Any]] = {
        "questdb": (str(settings.questdb_http),
                    http_probe(f"http://{settings.questdb_http}/exec?query=SELECT%201")),
        "ingestd": (str(settings.ingestd_metrics_addr),
                    http_probe(f"http://{settings.ingestd_metrics_addr}/healthz")),
        "queryd": (str(settings.queryd_addr), grpc_health_probe(str(settings.queryd_addr))),
        "billingd": (str(settings.billingd_addr), grpc_health_probe(str(settings.billingd_addr))),
        "consoled": (str(settings.console_addr),
                     http_probe(f"http://{settings.console_addr}/livez")),
        "datasetd": (str(settings.datasetd_addr),
                     http_probe(f"http://{settings.datasetd_addr}/livez")),
        "envoy": (f"127.0.0.1:{settings.http_port}",
                  http_probe(f"http://127.0.0.1:{settings.http_port}/healthz")),
    }
    results: list[ProbeResult] = await asyncio.gather(*(c for _, c in checks.values()))
    components = []
    for (name, (address, _)), result in zip(checks.items(), results, strict=True):
        data = result.data
        if name == "questdb":
            data = None  # the SQL answer itself is not interesting
        components.append(
            {"name": name, "address": address, "healthy": result.healthy,
             "detail": result.detail, "data": data}
        )
    return {"components": components, "config": settings.effective()}
