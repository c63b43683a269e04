"""The real Envoy in front of real queryd and billingd: config validity, health, routing."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ktape.envoy import envoy_binary, render_envoy_config
from ktape.runtime.pins import REPO_ROOT


@pytest.mark.parametrize("queryd_addr", ["127.0.0.1:50051", ["127.0.0.1:50051",
                                                               "127.0.0.1:50151"]])
def test_rendered_config_passes_envoy_validate(tmp_path: Path, queryd_addr):
    """One queryd or several replicas (with their balancing, ejection and retries)."""
    config = tmp_path / "envoy.yaml"
    config.write_text(render_envoy_config(
        http_port=18080, admin_port=19901, queryd_addr=queryd_addr,
        billingd_addr="queryd.internal:50052", descriptor_path=REPO_ROOT / "build" / "api.pb",
        access_log_path=str(tmp_path / "access.log"), datasetd_addr="datasetd.internal:9105"))
    proc = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK" in proc.stdout + proc.stderr


def test_broken_config_fails_validation(tmp_path: Path):
    """The validate step can fail: a transcoder pointing at a missing descriptor."""
    config = tmp_path / "envoy.yaml"
    config.write_text(render_envoy_config(
        http_port=18080, admin_port=19901, queryd_addr="127.0.0.1:50051",
        billingd_addr="127.0.0.1:50052", descriptor_path=tmp_path / "missing.pb"))
    proc = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0


def test_healthz_answers_when_backends_are_up(edge):
    resp = httpx.get(f"{edge.http_url}/healthz", timeout=5)
    assert resp.status_code == 200
    body = resp.json()  # each component named, with its state
    assert body["status"] == "ok"
    assert body["components"]["queryd"] == body["components"]["billingd"] == "serving"
    assert body["components"]["consoled"] == "serving"
    assert body["components"]["ingestd"].startswith("unreachable")  # none in this fixture


def test_grpc_health_reaches_each_backend_through_envoy(edge):
    with grpc.insecure_channel(edge.grpc_addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        cases = (("queryd", "ktape.marketdata.v1.MarketDataService"),
                 ("billingd", "ktape.billing.v1.BillingService"),
                 ("billingd", "ktape.billing.v1.BillingAdminService"))
        for backend, service in cases:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service),
                                metadata=[("x-ktape-backend", backend)], timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, (backend, service)
        # Routing by header is real: billingd does not know queryd's service name.
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="ktape.marketdata.v1.MarketDataService"),
                       metadata=[("x-ktape-backend", "billingd")], timeout=5)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
        else:
            raise AssertionError("billingd answered for queryd's service")


def test_rest_routes_are_transcoded_with_json_errors(edge):
    resp = httpx.get(f"{edge.http_url}/v1/markets", headers=edge.auth,
                     params={"page_size": 5, "event_ticker": "KX-NO-SUCH-EVENT"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"markets": [], "next_page_token": ""}
    resp = httpx.get(f"{edge.http_url}/v1/markets", headers=edge.auth, params={"bogus": "1"}, timeout=10)
    assert resp.status_code == 400
    assert resp.headers["content-type"].startswith("application/json")
    # Envoy's own error, in the services' shape: code, message, details with an ErrorInfo
    body = resp.json()
    assert body["code"] == 3 and body["message"]
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert body["details"][0]["reason"] and body["details"][0]["domain"] == "envoy.ktape.dev"

    resp = httpx.get(f"{edge.http_url}/v1/markets/KXNOPE-1/orderbook", headers=edge.auth, timeout=10)
    assert resp.status_code == 404
    body = resp.json()
    assert body["code"] == 5 and "KXNOPE-1" in body["message"]
    assert body["details"][0]["reason"] == "UNKNOWN_TICKER"

    resp = httpx.get(f"{edge.http_url}/v1/markets/KX-A/deltas", headers=edge.auth,
                     params={"end_time": "2026-11-24T00:00:00Z"}, timeout=10)
    assert resp.status_code == 400
    assert resp.json()["details"][-1]["field_violations"][0]["field"] == "start_time"
    # end_time may be left out: it means now (CONTRACT.md "Time ranges")
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")
    resp = httpx.get(f"{edge.http_url}/v1/markets/KXNOPE-1/trades", headers=edge.auth,
                     params={"start_time": since}, timeout=10)
    assert resp.status_code == 404, resp.text  # past validation: the ticker is unknown

    resp = httpx.get(f"{edge.http_url}/v1/no-such-route", timeout=10)
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["code"] == 5 and resp.json()["details"][0]["reason"]


def test_request_size_limits_answer_json(edge):
    big = httpx.post(f"{edge.http_url}/v1/billing/checkout", headers=edge.auth,
                     content=b'{"pack": "' + b"x" * (2 << 20) + b'"}', timeout=10)
    assert big.status_code == 413, big.text[:200]
    assert big.headers["content-type"].startswith("application/json")
    assert big.json()["code"] == 3 and big.json()["details"][0]["reason"]
    huge_header = httpx.get(f"{edge.http_url}/v1/series", timeout=10,
                            headers={**edge.auth, "x-padding": "y" * (64 << 10)})
    assert huge_header.status_code == 431


def test_access_log_is_json_and_admin_listens_on_loopback_only(edge):
    httpx.get(f"{edge.http_url}/v1/series", headers=edge.auth, timeout=5)
    deadline = time.monotonic() + 10
    entries: list[dict] = []

    def logged() -> bool:
        return any((e.get("path") or "").startswith("/v1/series") for e in entries)

    while not logged() and time.monotonic() < deadline:  # Envoy flushes every second
        log = edge.work_dir / "access.log"
        entries = [json.loads(line) for line in log.read_text().splitlines()
                   if line.strip()] if log.exists() else []
        time.sleep(0.2)
    assert logged(), entries[-3:]
    listeners = httpx.get(f"http://127.0.0.1:{edge.admin_port}/listeners?format=json",
                          timeout=5)
    assert listeners.status_code == 200  # the admin answers on loopback ...
    server_info = httpx.get(f"http://127.0.0.1:{edge.admin_port}/server_info", timeout=5).json()
    assert server_info["state"] == "LIVE"
    with socket.socket() as sock:  # ... and nowhere else: its socket is bound to 127.0.0.1
        sock.settimeout(2)
        hosts = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        other = next((h for h in hosts if not h.startswith("127.")), None)
        if other is not None:
            assert sock.connect_ex((other, edge.admin_port)) != 0
