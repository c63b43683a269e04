"""Data conditions and incidents through Envoy: public (no key, no credits), JSON errors."""

from __future__ import annotations

import datetime as dt

import httpx


def test_incidents_and_conditions_need_no_key(edge):
    # relative to now: the range may span at most 31 days and its end defaults to now
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    incidents = httpx.get(f"{edge.http_url}/v1/incidents", params={"start_time": start},
                          timeout=10)
    assert incidents.status_code == 200, incidents.text
    assert "incidents" in incidents.json()
    unknown = httpx.get(f"{edge.http_url}/v1/conditions", params={"series_ticker": "KXNOPE"},
                        timeout=10)
    assert unknown.status_code == 404  # answered, not 401: no key is needed
    assert unknown.json()["details"][0]["reason"] == "UNKNOWN_SERIES"
    bad = httpx.get(f"{edge.http_url}/v1/conditions",
                    params={"ticker": "KX-A", "start_date": "yesterday"}, timeout=10)
    assert bad.status_code == 400 and "start_date" in bad.json()["message"]


def test_the_recorded_series_need_no_key_and_page(edge):
    first = httpx.get(f"{edge.http_url}/v1/status/series", params={"page_size": 1}, timeout=10)
    assert first.status_code == 200, first.text
    body = first.json()
    assert "series" in body
    seen = [s["series_ticker"] for s in body["series"]]
    token = body["next_page_token"]
    while token:
        page = httpx.get(f"{edge.http_url}/v1/status/series",
                         params={"page_size": 1, "page_token": token}, timeout=10).json()
        seen += [s["series_ticker"] for s in page["series"]]
        token = page["next_page_token"]
    assert seen == sorted(set(seen))
    whole = httpx.get(f"{edge.http_url}/v1/status/series", params={"page_size": 1000},
                      timeout=10).json()
    assert [s["series_ticker"] for s in whole["series"]] == seen
    assert all(int(s["market_count"]) >= 1 for s in whole["series"])
