"""`ktape up --simulator` end to end: every component healthy, reachable through Envoy,
and a SIGTERM stops the whole tree within 15 s.

This is the foundation's promise (`make demo`), exercised with private ports and a
private data dir so it runs beside anything else on the machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fixtures.stack import stack_env

pytestmark = pytest.mark.integration


def _status(env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "ktape", "status", "--json"],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )
    return json.loads(proc.stdout)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stack_comes_up_healthy_and_stops_cleanly(tmp_path):
    env = stack_env(tmp_path / "data")
    log_path = tmp_path / "stack.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ktape", "up", "--simulator", "--sim-markets", "20"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        report: dict = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-4000:]
            report = _status(env)
            if all(c["healthy"] for c in report["components"]):
                break
            time.sleep(1)
        else:
            pytest.fail(f"stack not healthy: {report}\n{log_path.read_text()[-4000:]}")

        http_port = env["KTAPE_HTTP_PORT"]
        resp = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5)
        assert resp.status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert "ingestd_messages_total" in metrics.text

        # The standard gRPC health service of each backend, reached through Envoy.
        with grpc.insecure_channel(f"127.0.0.1:{http_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for backend, service in (("queryd", "ktape.marketdata.v1.MarketDataService"),
                                     ("billingd", "ktape.billing.v1.BillingService")):
                answer = stub.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    metadata=[("x-ktape-backend", backend)], timeout=5,
                )
                assert answer.status == health_pb2.HealthCheckResponse.SERVING, backend

        deadline = time.monotonic() + 45  # its own process (billingd's key command): slow on a busy machine
        while "demo API key (shown once): kt_dev_" not in log_path.read_text():
            assert time.monotonic() < deadline, "no demo key printed"
            time.sleep(0.2)
        demo_key = re.search(r"demo API key \(shown once\): (kt_dev_\w+)",
                             log_path.read_text()).group(1)
        # The demo account works out of the box: a metered call and the account view.
        auth = {"Authorization": f"Bearer {demo_key}"}
        markets = httpx.get(f"http://127.0.0.1:{http_port}/v1/markets", headers=auth, timeout=10)
        assert markets.status_code == 200, markets.text
        assert httpx.get(f"http://127.0.0.1:{http_port}/v1/markets",
                         timeout=10).status_code == 401
        account = httpx.get(f"http://127.0.0.1:{http_port}/v1/account", headers=auth, timeout=10)
        assert account.json()["account"]["name"] == "demo", account.text
        # Each service's own metrics through Envoy (Prometheus text).
        queryd_metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics/queryd", timeout=10)
        assert 'queryd_rpc_total{code="OK",method="ListMarkets"}' in queryd_metrics.text
        assert 'code="UNAUTHENTICATED"' in queryd_metrics.text  # the keyless call above
        billingd_metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics/billingd",
                                     timeout=10)
        assert 'billingd_rpc_total{code="OK",method="GetAccount"}' in billingd_metrics.text
        # The console through Envoy: its page, with its security and cache headers.
        page = httpx.get(f"http://127.0.0.1:{http_port}/keys", timeout=10)
        assert page.status_code == 200 and '<div id="app">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-cache"
        # Dataset downloads reach datasetd through Envoy: an unsigned URL is its JSON 403.
        unsigned = httpx.get(f"http://127.0.0.1:{http_port}/v1/files/trades/2026-12-01/KXA.parquet",
                             timeout=10)
        assert unsigned.status_code == 403, unsigned.text
        assert unsigned.json()["details"][0]["reason"] == "DOWNLOAD_URL_INVALID"
        datasetd_metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics/datasetd", timeout=10)
        assert 'datasetd_file_refusals_total{reason="missing_signature"}' in datasetd_metrics.text
        children = _started_children(log_path)
        pids = {c["pid"] for c in children}
        assert {c["component"] for c in children} >= {
            "questdb", "sim", "ingestd", "queryd", "billingd", "consoled", "datasetd", "envoy"}

        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - began < 15
        assert not [pid for pid in pids if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in _started_children(log_path):  # children run in their own sessions
            if _alive(child["pid"]):
                os.kill(child["pid"], signal.SIGKILL)


def _started_children(log_path: Path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines()
            if line.startswith("{") and '"child.started"' in line]
