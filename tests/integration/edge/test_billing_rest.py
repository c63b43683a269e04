"""Billing over REST through Envoy: keys, account, usage, admin RPCs, Stripe webhook."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import httpx
import pytest
import stripe

from billingd.keys_cli import create_key
from ktape.billing.v1 import metering_pb2, metering_pb2_grpc
from tests.fixtures.services import EDGE_WEBHOOK_SECRET


def _dsn(edge) -> str:
    return f"sqlite:///{Path(edge.env['KTAPE_DATA_DIR']).resolve() / 'billing.sqlite3'}"


def test_key_lifecycle_over_rest(edge):
    _, key = create_key(_dsn(edge), "rest-user", env="prod", credits=250, name="first")
    auth = {"Authorization": f"Bearer {key}"}
    account = httpx.get(f"{edge.http_url}/v1/account", headers=auth, timeout=5)
    assert account.status_code == 200, account.text
    body = account.json()["account"]
    # 250 granted + this month's free allowance of the free plan
    assert body["name"] == "rest-user" and body["balance_credits"] == "1250"
    assert body["free_allowance_remaining"] == "1000" and body["plan"] == "free"
    assert body["state"] == "ACCOUNT_STATE_ACTIVE"

    created = httpx.post(f"{edge.http_url}/v1/account/keys", headers=auth,
                         json={"name": "second", "env": "KEY_ENV_DEV"}, timeout=5)
    assert created.status_code == 200, created.text
    secret = created.json()["secret"]
    assert secret.startswith("kt_dev_")
    listed = httpx.get(f"{edge.http_url}/v1/account/keys", headers=auth, timeout=5).json()
    assert {k["name"] for k in listed["keys"]} == {"first", "second"}
    assert all("secret" not in k for k in listed["keys"])

    key_id = created.json()["key"]["key_id"]
    revoked = httpx.delete(f"{edge.http_url}/v1/account/keys/{key_id}", headers=auth, timeout=5)
    assert revoked.status_code == 200 and revoked.json()["key"]["revoke_time"]
    denied = httpx.get(f"{edge.http_url}/v1/account",
                       headers={"Authorization": f"Bearer {secret}"}, timeout=5)
    assert denied.status_code == 401
    assert denied.json()["details"][0]["reason"] == "API_KEY_REVOKED"


def test_missing_bad_and_non_admin_keys(edge):
    assert httpx.get(f"{edge.http_url}/v1/account", timeout=5).status_code == 401
    bad = httpx.get(f"{edge.http_url}/v1/account", headers={"Authorization": "Bearer nope"},
                    timeout=5)
    assert bad.status_code == 401 and bad.json()["details"][0]["reason"] == "API_KEY_MALFORMED"
    _, key = create_key(_dsn(edge), "not-admin", env="prod", credits=0, name="")
    admin = httpx.post(f"{edge.http_url}/v1/admin/accounts",
                       headers={"Authorization": f"Bearer {key}"}, json={"name": "x"}, timeout=5)
    assert admin.status_code == 403
    assert admin.json()["details"][0]["reason"] == "ADMIN_REQUIRED"


def test_admin_flows_over_rest_are_audited(edge):
    base, admin = edge.http_url, edge.admin_auth
    created = httpx.post(f"{base}/v1/admin/accounts", headers=admin,
                         json={"name": "rest-admin-target", "plan": "free"}, timeout=5)
    assert created.status_code == 200, created.text
    account_id = created.json()["account"]["account_id"]
    dup = httpx.post(f"{base}/v1/admin/accounts", headers=admin,
                     json={"name": "rest-admin-target"}, timeout=5)
    assert dup.status_code == 409 and dup.json()["details"][0]["reason"] == "ACCOUNT_EXISTS"

    grant = {"credits": "500", "reason": "support", "idempotency_key": "ticket-1"}
    first = httpx.post(f"{base}/v1/admin/accounts/{account_id}:grant", headers=admin,
                       json=grant, timeout=5).json()["entry"]
    again = httpx.post(f"{base}/v1/admin/accounts/{account_id}:grant", headers=admin,
                       json=grant, timeout=5).json()["entry"]
    assert first == again and first["credits"] == "500"
    refund = httpx.post(f"{base}/v1/admin/accounts/{account_id}:refund", headers=admin,
                        json={**grant, "idempotency_key": "ticket-2", "credits": "7"}, timeout=5)
    assert refund.json()["entry"]["kind"] == "refund"
    bad = httpx.post(f"{base}/v1/admin/accounts/{account_id}:grant", headers=admin,
                     json={**grant, "credits": "-5"}, timeout=5)
    assert bad.status_code == 400

    plan = httpx.post(f"{base}/v1/admin/accounts/{account_id}:setPlan", headers=admin,
                      json={"plan": "payg"}, timeout=5)
    assert plan.json()["account"]["plan"] == "payg"
    assert httpx.post(f"{base}/v1/admin/accounts/{account_id}:setPlan", headers=admin,
                      json={"plan": "gold"}, timeout=5).status_code == 400
    cap = httpx.post(f"{base}/v1/admin/accounts/{account_id}:setSpendingCap", headers=admin,
                     json={"spending_cap_credits": "900"}, timeout=5)
    assert cap.json()["account"]["spending_cap_credits"] == "900"
    suspended = httpx.post(f"{base}/v1/admin/accounts/{account_id}:suspend", headers=admin,
                           json={"reason": "abuse"}, timeout=5)
    assert suspended.json()["account"]["state"] == "ACCOUNT_STATE_SUSPENDED"
    only = httpx.get(f"{base}/v1/admin/accounts", headers=admin,
                     params={"suspended_only": "true"}, timeout=5).json()["accounts"]
    assert [a["account_id"] for a in only] == [account_id]
    httpx.post(f"{base}/v1/admin/accounts/{account_id}:resume", headers=admin, json={}, timeout=5)
    looked = httpx.get(f"{base}/v1/admin/accounts/{account_id}", headers=admin, timeout=5)
    assert looked.json()["account"]["state"] == "ACCOUNT_STATE_ACTIVE"
    assert httpx.get(f"{base}/v1/admin/accounts/acct_nope", headers=admin,
                     timeout=5).status_code == 404

    # Every account, one page at a time (AIP-158).
    seen, token = [], ""
    while True:
        page = httpx.get(f"{base}/v1/admin/accounts", headers=admin,
                         params={"page_size": 1, "page_token": token}, timeout=5).json()
        seen += [a["account_id"] for a in page["accounts"]]
        token = page.get("next_page_token", "")
        if not token:
            break
    assert account_id in seen and len(seen) == len(set(seen)) >= 3

    audit = httpx.get(f"{base}/v1/admin/audit", headers=admin,
                      params={"target_account_id": account_id}, timeout=5).json()["events"]
    actions = [e["action"] for e in audit]
    assert {"GrantCredits", "RefundCredits", "SetPlan", "SetSpendingCap", "SuspendAccount",
            "ResumeAccount", "LookupAccount"} <= set(actions)
    assert '"reason": "abuse"' in next(e["detail_json"] for e in audit
                                        if e["action"] == "SuspendAccount")


def test_usage_is_visible_to_the_account_and_to_admins(edge):
    account_id, key = create_key(_dsn(edge), "usage-viewer", env="prod", credits=50, name="")
    auth = {"Authorization": f"Bearer {key}"}
    for _ in range(3):
        assert httpx.get(f"{edge.http_url}/v1/series", headers=auth, timeout=5).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # queryd hands usage over in batches about once a second
        rows = httpx.get(f"{edge.http_url}/v1/account/usage", headers=auth,
                         timeout=5).json().get("usage", [])
        if rows and rows[0]["calls"] == "3":
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.3)
    assert rows[0]["method"] == "/ktape.marketdata.v1.MarketDataService/ListSeries"
    admin_rows = httpx.get(f"{edge.http_url}/v1/admin/usage", headers=edge.admin_auth,
                           params={"account_id": account_id}, timeout=5).json()["usage"]
    assert admin_rows[0]["account_id"] == account_id and admin_rows[0]["credits"] == "3"
    bad = httpx.get(f"{edge.http_url}/v1/account/usage", headers=auth,
                    params={"start_time": "2026-01-02T00:00:00Z",
                            "end_time": "2026-01-01T00:00:00Z"}, timeout=5)
    assert bad.status_code == 400


def test_stripe_webhook_arrives_with_its_exact_bytes(edge):
    account_id, _key = create_key(_dsn(edge), "webhook-buyer", env="prod", credits=0, name="")
    event = {"id": "evt_edge_1", "object": "event", "type": "checkout.session.completed",
             "created": int(time.time()), "data": {"object": {
                 "id": "cs_edge_1", "object": "checkout.session", "payment_status": "paid",
                 "metadata": {"ktape_account_id": account_id, "ktape_pack": "credits_10k"}}}}
    body = json.dumps(event, indent=1)  # whitespace matters to the signature
    signature = stripe.WebhookSignature.generate_signature_header(body, EDGE_WEBHOOK_SECRET)
    headers = {"Stripe-Signature": signature, "Content-Type": "application/json"}
    first = httpx.post(f"{edge.http_url}/v1/billing/stripe/webhook", content=body,
                       headers=headers, timeout=5)
    assert first.status_code == 200, first.text
    assert first.json() == {"event_id": "evt_edge_1", "applied": True}
    replay = httpx.post(f"{edge.http_url}/v1/billing/stripe/webhook", content=body,
                        headers=headers, timeout=5)
    assert replay.json() == {"event_id": "evt_edge_1", "applied": False}
    forged = httpx.post(f"{edge.http_url}/v1/billing/stripe/webhook",
                        content=body.replace("credits_10k", "credits_1m"), headers=headers,
                        timeout=5)
    assert forged.status_code == 400
    assert forged.json()["details"][0]["reason"] == "STRIPE_SIGNATURE_INVALID"


def test_checkout_session_over_rest(edge):
    _account_id, key = create_key(_dsn(edge), "checkout-rest", env="prod", credits=0, name="")
    resp = httpx.post(f"{edge.http_url}/v1/billing/checkout",
                      headers={"Authorization": f"Bearer {key}"},
                      json={"pack": "credits_100k"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["session_id"].startswith("cs_") and resp.json()["url"]


def test_metering_service_is_not_reachable_from_outside(edge):
    """The internal MeteringService (key verification, usage booking) is not routed."""
    with grpc.insecure_channel(edge.grpc_addr) as channel:
        stub = metering_pb2_grpc.MeteringServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.RecordUsage(metering_pb2.RecordUsageRequest(), timeout=5)
    assert info.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND,
                                 grpc.StatusCode.UNKNOWN), info.value
