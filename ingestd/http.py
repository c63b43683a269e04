"""ingestd's HTTP side, on aiohttp's web server: `/healthz`, `/metrics` and `/live`.

`GET /healthz` is 200 while every feed connection is up and the writer is committing or
spilling (503 otherwise) with the recorder's health as JSON; `GET /metrics` is Prometheus
text; `GET /live` is the live fan-out that queryd follows (ingestd/live.py). Why a
library server: HTTP parsing (keep-alive, chunking, malformed requests, slow clients) is
exactly what not to hand-write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ingestd import metrics
from ingestd.live import LiveFanout


class Served(Protocol):
    """What the HTTP side needs of the recorder."""

    live: LiveFanout

    def health(self) -> tuple[bool, dict[str, Any]]: ...


async def start_http(served: Served, host: str, port: int) -> web.AppRunner:
    """Serve on host:port until `await runner.cleanup()`."""
    app = web.Application()
    app.router.add_get("/healthz", _healthz(served.health))
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/live", served.live.serve)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def _healthz(health: Callable[[], tuple[bool, dict[str, Any]]]) -> Any:
    async def handler(_request: web.Request) -> web.Response:
        ok, body = health()
        return web.Response(status=200 if ok else 503, body=orjson.dumps(body),
                            content_type="application/json")
    return handler


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(metrics.REGISTRY),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})
