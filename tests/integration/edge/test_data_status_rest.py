"""Data conditions and incidents through Envoy: public (no key, no credits), JSON errors."""

from __future__ import annotations

import httpx


def test_incidents_and_conditions_need_no_key(edge):
    incidents = httpx.get(f"{edge.http_url}/v1/incidents",
                          params={"start_time": "2026-11-01T00:00:00Z"}, timeout=10)
    assert incidents.status_code == 200, incidents.text
    assert "incidents" in incidents.json()
    unknown = httpx.get(f"{edge.http_url}/v1/conditions", params={"series_ticker": "KXNOPE"},
                        timeout=10)
    assert unknown.status_code == 404  # answered, not 401: no key is needed
    assert unknown.json()["details"][0]["reason"] == "UNKNOWN_SERIES"
    bad = httpx.get(f"{edge.http_url}/v1/conditions",
                    params={"ticker": "KX-A", "start_date": "yesterday"}, timeout=10)
    assert bad.status_code == 400 and "start_date" in bad.json()["message"]
