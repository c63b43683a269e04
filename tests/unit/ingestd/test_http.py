"""ingestd's HTTP side on aiohttp's server: health as JSON with its status code, metrics
as Prometheus text, the live fan-out, and a 404 for anything else."""

from __future__ import annotations

import httpx

from ingestd.http import start_http
from ingestd.live import LiveFanout
from ktape.runtime.ports import free_port


class Served:
    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.live = LiveFanout()

    def health(self):
        return self.ok, {"feed_connected": self.ok, "writer": "committing"}


async def test_healthz_metrics_live_and_not_found() -> None:
    served, port = Served(ok=False), free_port()
    runner = await start_http(served, "127.0.0.1", port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            down = await client.get("/healthz")
            assert down.status_code == 503
            assert down.json() == {"feed_connected": False, "writer": "committing"}
            served.ok = True
            assert (await client.get("/healthz")).status_code == 200
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert "ingestd_messages_total" in metrics.text
            assert metrics.headers["content-type"].startswith("text/plain")
            assert (await client.get("/nope")).status_code == 404
            async with client.stream("GET", "/live") as live:
                assert live.status_code == 200
                hello = await anext(live.aiter_lines())
                assert '"epoch"' in hello
    finally:
        await runner.cleanup()
