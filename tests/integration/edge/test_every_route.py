"""Every REST route of CONTRACT.md once through the real Envoy: a success and an error.

Successes are checked for their JSON shape (proto field names, int64 as strings, enum
names, RFC 3339 times); errors for the HTTP status and a google.rpc.Status body whose
ErrorInfo reason says what went wrong.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from ktape.schema import apply_migrations
from ktape.schema.wal import wait_for_wal

SUFFIX = str(int(time.time() * 1000))
TICKER, EVENT, SERIES = f"KXRT-{SUFFIX}-A", f"KXRT-{SUFFIX}", f"KXRTS{SUFFIX}"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
START = (NOW - dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
END = (NOW + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def recorded(edge, questdb) -> dict[str, str]:
    t0 = NOW - dt.timedelta(minutes=5)
    with questdb.connect() as conn:
        apply_migrations(conn)
        conn.execute("INSERT INTO series (ts, series_ticker, title, category, frequency) "
                     "VALUES (%s, %s, 'Route test series', 'Test', 'daily')", (t0, SERIES))
        conn.execute("INSERT INTO events (ts, event_ticker, series_ticker, title, category, "
                     "mutually_exclusive) VALUES (%s, %s, %s, 'Route test', 'Test', true)",
                     (t0, EVENT, SERIES))
        conn.execute("INSERT INTO markets (ts, ticker, event_ticker, series_ticker, status, "
                     "title) VALUES (%s, %s, %s, %s, 'settled', 'Route test market')",
                     (t0, TICKER, EVENT, SERIES))
        conn.execute("INSERT INTO book_checkpoints (ts, ticker, reason, seq, sid, recv_ts, "
                     "ts_source, yes_levels, no_levels, continuous_since) VALUES (%s, %s, "
                     "'snapshot', 1, 1, %s, 'receive', '4200:15000', '5700:2000', %s)",
                     (t0, TICKER, t0, t0))
        conn.execute("INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, "
                     "delta_e2, kind, seq, sid, recv_ts, ts_source) VALUES (%s, %s, 'yes', "
                     "4300, 100, 100, 'delta', 2, 1, %s, 'exchange')",
                     (t0 + dt.timedelta(seconds=10), TICKER, t0))
        conn.execute("INSERT INTO trades (ts, ticker, trade_id, yes_price_e4, no_price_e4, "
                     "count_e2, taker_side, is_block, seq, sid, recv_ts, source) VALUES "
                     "(%s, %s, 'tr-1', 4200, 5800, 500, 'yes', false, 2, 2, %s, 'ws')",
                     (t0 + dt.timedelta(seconds=30), TICKER, t0))
        conn.execute("INSERT INTO settlements (ts, ticker, event_ticker, series_ticker, result, "
                     "settlement_value_e4, recv_ts, ts_source) VALUES (%s, %s, %s, %s, 'yes', "
                     "10000, %s, 'exchange')", (t0 + dt.timedelta(minutes=1), TICKER, EVENT,
                                                SERIES, t0))
        wait_for_wal(conn)
    created = httpx.post(f"{edge.http_url}/v1/account/keys", headers=edge.auth,
                         json={"name": "route-test"}, timeout=5).json()
    return {"key_id": created["key"]["key_id"]}


@dataclass
class Case:
    name: str
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    status: int = 200
    reason: str = ""  # expected ErrorInfo reason for errors
    admin: bool = False
    auth: bool = True
    check: Callable[[dict], bool] = lambda body: True


CASES = [
    Case("orderbook", "GET", f"/v1/markets/{TICKER}/orderbook", {"depth": 5},
         check=lambda b: b["yes"] == [{"price": "0.4300", "quantity": "1.00"},
                                      {"price": "0.4200", "quantity": "150.00"}]
         and b["continuity"]["status"].startswith("CONTINUITY_STATUS_")),
    Case("orderbook bad depth", "GET", f"/v1/markets/{TICKER}/orderbook", {"depth": -1},
         status=400, reason="INVALID_ARGUMENT"),
    Case("deltas", "GET", f"/v1/markets/{TICKER}/deltas", {"start_time": START, "end_time": END},
         check=lambda b: [(d["kind"], d["price"], d["delta"]) for d in b["deltas"]]
         == [("DELTA_KIND_DELTA", "0.4300", "1.00")]),
    Case("deltas as columns", "GET", f"/v1/markets/{TICKER}/deltas",
         {"start_time": START, "end_time": END, "layout": "BATCH_LAYOUT_COLUMNS"},
         check=lambda b: not b.get("deltas") and (b["columns"]["kinds"], b["columns"]["prices_e4"],
                                                b["columns"]["deltas_e2"])
         == (["DELTA_KIND_DELTA"], ["4300"], ["100"])),
    Case("deltas inverted", "GET", f"/v1/markets/{TICKER}/deltas",
         {"start_time": END, "end_time": START}, status=400, reason="INVALID_ARGUMENT"),
    Case("trades", "GET", f"/v1/markets/{TICKER}/trades", {"start_time": START, "end_time": END},
         check=lambda b: b["trades"][0]["count"] == "5.00" and b["trades"][0]["yes_price"] == "0.4200"),
    Case("trades forged token", "GET", f"/v1/markets/{TICKER}/trades",
         {"start_time": START, "end_time": END, "page_token": "forged"}, status=400,
         reason="PAGE_TOKEN_INVALID"),
    Case("candles", "GET", f"/v1/markets/{TICKER}/candles",
         {"start_time": START, "end_time": END, "interval": "1m"},
         check=lambda b: b["candles"][0]["volume"] == "5.00"),
    Case("candles bad interval", "GET", f"/v1/markets/{TICKER}/candles",
         {"start_time": START, "end_time": END, "interval": "5m"}, status=400,
         reason="INVALID_ARGUMENT"),
    Case("markets", "GET", "/v1/markets", {"event_ticker": EVENT},
         check=lambda b: [m["ticker"] for m in b["markets"]] == [TICKER]),
    Case("markets bad page size", "GET", "/v1/markets", {"page_size": -1}, status=400,
         reason="INVALID_ARGUMENT"),
    Case("market", "GET", f"/v1/markets/{TICKER}",
         check=lambda b: b["market"]["event_ticker"] == EVENT and "coverage" in b["market"]),
    Case("market unknown", "GET", "/v1/markets/KXRT-NOPE", status=404, reason="UNKNOWN_TICKER"),
    Case("events", "GET", "/v1/events", {"series_ticker": SERIES},
         check=lambda b: [e["event_ticker"] for e in b["events"]] == [EVENT]),
    Case("events bad page size", "GET", "/v1/events", {"page_size": -5}, status=400,
         reason="INVALID_ARGUMENT"),
    Case("event", "GET", f"/v1/events/{EVENT}", check=lambda b: b["event"]["title"] == "Route test"),
    Case("event unknown", "GET", "/v1/events/KXRT-NOPE", status=404),
    Case("series list", "GET", "/v1/series", {"page_size": 1000},
         check=lambda b: SERIES in [s["series_ticker"] for s in b["series"]]),
    Case("series list bad token", "GET", "/v1/series", {"page_token": "nope"}, status=400,
         reason="PAGE_TOKEN_INVALID"),
    Case("series", "GET", f"/v1/series/{SERIES}", check=lambda b: b["series"]["frequency"] == "daily"),
    Case("series unknown", "GET", "/v1/series/KXRTNOPE", status=404),
    Case("settlements", "GET", "/v1/settlements", {"event_ticker": EVENT},
         check=lambda b: b["settlements"][0]["ticker"] == TICKER),
    Case("settlements bad page size", "GET", "/v1/settlements", {"page_size": -1}, status=400),
    Case("stream unknown", "GET", "/v1/markets/KXRT-NOPE/orderbook:stream", status=404,
         reason="UNKNOWN_TICKER"),
    Case("stream batch too big", "GET", f"/v1/markets/{TICKER}/orderbook:stream",
         {"batch_size": 5001}, status=400, reason="INVALID_ARGUMENT",
         check=lambda b: "batch_size" in json.dumps(b)),
    Case("stream start too old", "GET", f"/v1/markets/{TICKER}/orderbook:stream",
         {"start_time": "2026-01-01T00:00:00Z"}, status=400, reason="INVALID_ARGUMENT",
         check=lambda b: "start_time" in json.dumps(b) and "2 hours" in b["message"]),
    Case("stream unknown layout", "GET", f"/v1/markets/{TICKER}/orderbook:stream",
         {"batch_size": 10, "batch_layout": 9}, status=400, reason="",  # Envoy's own answer
         check=lambda b: "batch_layout" in b["message"]),
    Case("no key", "GET", "/v1/series", auth=False, status=401, reason="API_KEY_MISSING"),
    Case("account", "GET", "/v1/account", check=lambda b: b["account"]["plan"] == "pro"),
    Case("usage", "GET", "/v1/account/usage", check=lambda b: isinstance(b.get("usage", []), list)),
    Case("usage inverted", "GET", "/v1/account/usage",
         {"start_time": END, "end_time": START}, status=400),
    Case("create key", "POST", "/v1/account/keys", body={"name": "k", "env": "KEY_ENV_DEV"},
         check=lambda b: b["secret"].startswith("kt_dev_")),
    Case("create key long name", "POST", "/v1/account/keys", body={"name": "n" * 101},
         status=400),
    Case("list keys", "GET", "/v1/account/keys", {"page_size": 1},
         check=lambda b: len(b["keys"]) == 1 and b["next_page_token"]),
    Case("list keys bad token", "GET", "/v1/account/keys", {"page_token": "x"}, status=400,
         reason="PAGE_TOKEN_INVALID"),
    Case("delete key", "DELETE", "/v1/account/keys/{key_id}",
         check=lambda b: b["key"]["revoke_time"]),
    Case("delete key unknown", "DELETE", "/v1/account/keys/000000000000", status=404,
         reason="UNKNOWN_KEY"),
    Case("checkout", "POST", "/v1/billing/checkout", body={"pack": "credits_10k"},
         check=lambda b: b["url"]),
    Case("checkout unknown pack", "POST", "/v1/billing/checkout", body={"pack": "free-money"},
         status=400),
    Case("webhook unsigned", "POST", "/v1/billing/stripe/webhook", body={"id": "evt"},
         auth=False, status=400, reason="STRIPE_SIGNATURE_MISSING"),
    Case("admin usage", "GET", "/v1/admin/usage", admin=True,
         check=lambda b: isinstance(b.get("usage", []), list)),
    Case("admin usage not admin", "GET", "/v1/admin/usage", status=403, reason="ADMIN_REQUIRED"),
    Case("admin audit", "GET", "/v1/admin/audit", {"page_size": 2}, admin=True,
         check=lambda b: len(b["events"]) <= 2),
    Case("admin gap refunds", "POST", "/v1/admin/refunds:gaps",
         body={"start_time": START, "end_time": END}, admin=True,
         check=lambda b: b["refunded_calls"] == "0"),
    Case("admin gap refunds no range", "POST", "/v1/admin/refunds:gaps", body={}, admin=True,
         status=400),
    Case("admin unknown account", "GET", "/v1/admin/accounts/acct_none", admin=True,
         status=404, reason="UNKNOWN_ACCOUNT"),
    Case("unknown path", "GET", "/v1/nothing-here", status=404),
    Case("unknown query parameter", "GET", "/v1/series", {"colour": "red"}, status=400),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_route(edge, recorded, case: Case):
    headers = edge.admin_auth if case.admin else edge.auth if case.auth else {}
    resp = httpx.request(case.method, edge.http_url + case.path.format(**recorded),
                         params=case.params, json=case.body, headers=headers, timeout=10)
    assert resp.status_code == case.status, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    if case.status == 200:
        assert case.check(body), body
    else:
        assert body["code"] == case.status or body.get("message"), body
        if case.reason:
            assert body["details"][0]["reason"] == case.reason, body
        assert case.check(body), body  # e.g. the field an INVALID_ARGUMENT names
