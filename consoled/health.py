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
from ktape.sharding import ingestd_addrs, queryd_addrs

CACHE_SECS = 1.0


def _ingest_summary(recorders: list[dict[str, Any]]) -> dict[str, Any]:
    """The recorder's figures over every ingest shard that answered: counts summed, the
    oldest last message, the writer "committing" only when every shard's is."""
    summed = {k: sum(int(r.get(k) or 0) for r in recorders) for k in (
        "connections_up", "connections", "markets_recorded", "markets_wanted")}
    quiet = [r["secs_since_last_message"] for r in recorders
             if r.get("secs_since_last_message") is not None]
    writers = {r.get("writer") for r in recorders}
    return {**summed, "secs_since_last_message": max(quiet) if quiet else None,
            "writer": "committing" if writers == {"committing"} else "spilling"}


class Health:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cached: tuple[float, int, dict[str, Any]] | None = None

    async def state(self) -> tuple[int, dict[str, Any]]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < CACHE_SECS:
            return self._cached[1], self._cached[2]
        s = self.settings
        replicas, shards = queryd_addrs(s), ingestd_addrs(s)
        probes = await asyncio.gather(
            grpc_health_probe(str(s.billingd_addr), timeout_secs=1.0),
            *(grpc_health_probe(str(addr), timeout_secs=1.0) for addr in replicas),
            *(http_probe(f"http://{addr}/healthz", timeout_secs=1.0) for addr in shards))
        billingd, queryd = probes[0], probes[1:1 + len(replicas)]
        ingestd = probes[1 + len(replicas):]
        # The API answers while any replica does (Envoy sends calls to the serving ones).
        serving = [p for p in queryd if p.healthy]
        recorders = [p.data for p in ingestd if p.data]
        components = {
            "queryd": (f"serving ({len(serving)} of {len(queryd)} replicas)"
                       if serving and len(queryd) > 1 else "serving" if serving
                       else f"not serving ({queryd[0].detail})"),
            "billingd": "serving" if billingd.healthy else f"not serving ({billingd.detail})",
            "ingestd": ("recording" if all(p.healthy for p in ingestd) else
                        "degraded" if recorders else f"unreachable ({ingestd[0].detail})"),
            "consoled": "serving",
        }
        ok = bool(serving) and billingd.healthy
        body = {"status": "ok" if ok else "degraded", "components": components}
        if recorders:
            body["ingest"] = _ingest_summary(recorders)
        self._cached = (now, 200 if ok else 503, body)
        return self._cached[1], body

    async def handle(self, request: web.Request) -> web.Response:
        status, body = await self.state()
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})
