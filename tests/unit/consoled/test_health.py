"""consoled's /healthz over real loopback servers: each component named; 503 when the API
cannot answer."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from consoled.app import make_app
from consoled.health import Health
from ktape.config import load_settings
from ktape.grpc_server import start_server
from ktape.runtime.ports import free_port


async def test_components_are_named_and_a_missing_backend_is_503(tmp_path):
    (tmp_path / "index.html").write_text("x")
    grpc_up = await start_server("127.0.0.1:0", [], [])  # health service only: SERVING
    async def ingestd_health(_request: web.Request) -> web.Response:
        return web.json_response(
            {"feed_connected": True, "markets_recorded": 3, "writer": "committing"})

    recorder = web.Application()
    recorder.router.add_get("/healthz", ingestd_health)
    runner = web.AppRunner(recorder)
    await runner.setup()
    ingest_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", ingest_port).start()
    try:
        up = load_settings({"KTAPE_QUERYD_ADDR": f"127.0.0.1:{grpc_up.port}",
                            "KTAPE_BILLINGD_ADDR": f"127.0.0.1:{grpc_up.port}",
                            "KTAPE_INGESTD_METRICS_ADDR": f"127.0.0.1:{ingest_port}",
                            "KTAPE_DATA_DIR": str(tmp_path)})
        async with TestClient(TestServer(make_app(tmp_path, Health(up)))) as client:
            response = await client.get("/healthz")
            assert response.status == 200
            body = await response.json()
            assert body["components"] == {"queryd": "serving", "billingd": "serving",
                                          "ingestd": "recording", "consoled": "serving"}
            assert body["ingest"]["markets_recorded"] == 3
            assert (await client.get("/livez")).status == 200
        down = load_settings({"KTAPE_QUERYD_ADDR": f"127.0.0.1:{grpc_up.port}",
                              "KTAPE_BILLINGD_ADDR": f"127.0.0.1:{free_port()}",
                              "KTAPE_INGESTD_METRICS_ADDR": f"127.0.0.1:{free_port()}",
                              "KTAPE_DATA_DIR": str(tmp_path)})
        async with TestClient(TestServer(make_app(tmp_path, Health(down)))) as client:
            response = await client.get("/healthz")
            assert response.status == 503
            body = await response.json()
            assert body["status"] == "degraded"
            assert body["components"]["billingd"].startswith("not serving")
            assert body["components"]["ingestd"].startswith("unreachable")
    finally:
        await runner.cleanup()
        await grpc_up.server.stop(None)
