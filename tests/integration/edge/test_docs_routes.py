"""/openapi.json and /llms.txt are served by Envoy and describe exactly the live routes."""

from __future__ import annotations

import re

import httpx

from ktape.marketdata.v1 import marketdata_pb2  # noqa: F401  (ensures stubs are built)

CONTRACT_PATHS = {
    "/v1/markets/{ticker}/orderbook", "/v1/markets/{ticker}/deltas", "/v1/markets/{ticker}/trades",
    "/v1/markets/{ticker}/candles", "/v1/markets", "/v1/markets/{ticker}", "/v1/events",
    "/v1/events/{event_ticker}", "/v1/series", "/v1/series/{series_ticker}", "/v1/settlements",
    "/v1/markets/{ticker}/orderbook:stream", "/v1/account", "/v1/account/usage",
    "/v1/account/keys", "/v1/account/keys/{key_id}", "/v1/billing/checkout",
    "/v1/billing/stripe/webhook",
}


def test_openapi_lists_every_contract_route_and_each_is_live(edge):
    resp = httpx.get(f"{edge.http_url}/openapi.json", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    spec = resp.json()
    paths = set(spec["paths"])
    assert paths >= CONTRACT_PATHS
    assert any(p.startswith("/v1/admin/") for p in paths)
    # Every GET route without path parameters is routed by the live Envoy (no 404/503).
    for path, ops in spec["paths"].items():
        if "get" in ops and "{" not in path and not path.endswith(":stream"):
            live = httpx.get(f"{edge.http_url}{path}", timeout=10)
            assert live.status_code not in (404, 503), (path, live.status_code, live.text)
    # Field names are the proto names, as the transcoder prints them.
    props = spec["definitions"]["v1GetOrderbookResponse"]["properties"]
    assert {"last_change_time", "continuity", "yes", "no"} <= set(props)


def test_llms_txt_names_every_endpoint_with_curl(edge):
    short = httpx.get(f"{edge.http_url}/llms.txt", timeout=5)
    full = httpx.get(f"{edge.http_url}/llms-full.txt", timeout=5)
    assert short.status_code == full.status_code == 200
    for path in CONTRACT_PATHS:
        assert re.search(rf"### (GET|POST|DELETE) {re.escape(path)} ", short.text), path
    assert short.text.count("curl -s") >= len(CONTRACT_PATHS)
    assert "Request `ktape.marketdata.v1.GetOrderbookRequest`" in full.text
