"""Browser and abuse protections at the edge: CORS preflight and the local rate limit."""

from __future__ import annotations

import subprocess
import time

import httpx

from ktape.envoy import envoy_binary, render_envoy_config
from ktape.runtime.pins import REPO_ROOT
from ktape.runtime.ports import free_port


def test_cors_preflight_is_answered_by_envoy(edge):
    resp = httpx.options(f"{edge.http_url}/v1/markets", timeout=5, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "https://app.example"
    assert "GET" in resp.headers["access-control-allow-methods"]
    assert "authorization" in resp.headers["access-control-allow-headers"]
    simple = httpx.get(f"{edge.http_url}/v1/markets", params={"event_ticker": "KX-NONE"},
                       headers={**edge.auth, "Origin": "https://app.example"}, timeout=5)
    assert simple.headers["access-control-allow-origin"] == "https://app.example"


def test_local_rate_limit_answers_json_429(edge, tmp_path):
    port, admin = free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(render_envoy_config(
        http_port=port, admin_port=admin, queryd_addr=edge.queryd_addr,
        billingd_addr=edge.billingd_addr, descriptor_path=REPO_ROOT / "build" / "api.pb",
        access_log_path=str(tmp_path / "access.log"), rate_limit_per_sec=1, rate_limit_burst=3))
    proc = subprocess.Popen([str(envoy_binary()), "-c", str(config), "--disable-hot-restart",
                             "--log-level", "error"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1/markets?event_ticker=KX-NONE"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, headers=edge.auth, timeout=2).status_code in (200, 429, 503):
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        statuses = [httpx.get(url, headers=edge.auth, timeout=5) for _ in range(8)]
        limited = [r for r in statuses if r.status_code == 429]
        assert limited, [r.status_code for r in statuses]
        assert limited[0].headers["content-type"].startswith("application/json")
        body = limited[0].json()  # the services' error shape: RESOURCE_EXHAUSTED + ErrorInfo
        assert body["code"] == 8 and body["details"][0]["domain"] == "envoy.ktape.dev"
        assert body["details"][0]["metadata"]["http_status"] == "429"
        assert limited[0].headers["x-ktape-rate-limited"] == "edge"
    finally:
        proc.terminate()
        proc.wait(10)
