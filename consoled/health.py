"""`GET /healthz` through Envoy: each component's state as a small JSON body.

200 when the API can answer (queryd and billingd SERVING), else 503; the recorder's and
the console's own state are named too (a stopped recorder leaves history servable).
Probes are cached for a second so a busy health checker costs the backends little.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from ktape.config import Settings
from ktape.probes import grpc_health_probe, http_probe

CACHE_SECS = 1.0


class Health:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cached: tuple[float, int, dict[str, Any]] | None = None

    async def state(self) -> tuple[int, dict[str, Any]]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < CACHE_SECS:
            return self._cached[1], self._cached[2]
        s = self.settings
        queryd, billingd, ingestd = await asyncio.gather(
            grpc_health_probe(str(s.queryd_addr), timeout_secs=1.0),
            grpc_health_probe(str(s.billingd_addr), timeout_secs=1.0),
            http_probe(f"http://{s.ingestd_metrics_addr}/healthz", timeout_secs=1.0))
        recorder = ingestd.data or {}
        components = {
            "queryd": "serving" if queryd.healthy else f"not serving ({queryd.detail})",
            "billingd": "serving" if billingd.healthy else f"not serving ({billingd.detail})",
            "ingestd": ("recording" if ingestd.healthy else
                        "degraded" if recorder else f"unreachable ({ingestd.detail})"),
            "consoled": "serving",
        }
        ok = queryd.healthy and billingd.healthy
        body = {"status": "ok" if ok else "degraded", "components": components}
        if recorder:
            body["ingest"] = {k: recorder.get(k) for k in (
                "connections_up", "connections", "markets_recorded", "markets_wanted",
                "secs_since_last_message", "writer")}
        self._cached = (now, 200 if ok else 503, body)
        return self._cached[1], body

    async def handle(self, request: web.Request) -> web.Response:
        status, body = await self.state()
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})
