"""The console's web server: the Vite build's files with cache and security headers.

Why a process of its own rather than Envoy's direct responses: a single-page app needs
every page path answered with index.html, and hashed assets want a year of caching while
index.html must never be cached (it names the current hashes). The console calls the
public API through Envoy like any customer code; this process serves files and nothing
else (and, for `/healthz`, asks each backend's health), so it holds no secret.
"""

from __future__ import annotations

import asyncio
import mimetypes
import signal
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from consoled.health import Health
from ktape.config import Settings
from ktape.entrypoint import run_service
from ktape.log import get_logger
from ktape.runtime.pins import REPO_ROOT

log = get_logger(__name__)

BUILD_DIR = REPO_ROOT / "build" / "console"
IMMUTABLE = "public, max-age=31536000, immutable"
# No inline script anywhere (Vite emits module files); styles may be set by the chart
# libraries at run time; Stripe Checkout is a top-level navigation, not a frame.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
       "frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def make_app(build_dir: Path = BUILD_DIR, health: Health | None = None) -> web.Application:
    """The console's files; with `health`, also `GET /healthz` (Envoy routes its own
    /healthz here). `GET /livez` is this process alone (the supervisor's probe)."""
    mimetypes.add_type("text/javascript", ".js")  # not every system's table has it
    root = build_dir.resolve()
    index = root / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"{index} is missing: run `make console` (npm ci + vite build)")

    async def livez(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def serve(request: web.Request) -> web.StreamResponse:
        path = request.match_info.get("path", "")
        target = (root / path).resolve() if path else index
        if path.startswith("assets/"):
            if not target.is_file() or root not in target.parents:
                return web.Response(status=404, text="not found", headers=SECURITY_HEADERS)
            response: web.StreamResponse = web.FileResponse(target, headers={
                "Cache-Control": IMMUTABLE, **SECURITY_HEADERS})
        else:  # a page of the app: index.html, which is never cached
            response = web.FileResponse(index, headers={"Cache-Control": "no-cache",
                                                        **SECURITY_HEADERS})
        return response

    app = web.Application()
    app.router.add_get("/livez", livez)
    if health is not None:
        app.router.add_get("/healthz", health.handle)
    app.router.add_get("/{path:.*}", serve)
    return app


async def _main(settings: Settings) -> int:
    runner = web.AppRunner(make_app(health=Health(settings)), access_log=None)
    await runner.setup()
    addr = settings.console_addr
    await web.TCPSite(runner, addr.host, addr.port).start()
    log.info("consoled.started", addr=str(addr), build=str(BUILD_DIR))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("consoled", _main)
