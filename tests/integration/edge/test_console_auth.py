"""Console sign-in through Envoy as a browser does it: the session cookie set and read by
billingd, CSRF on cookie writes, one message for a failed sign-in, 429, the reset link in
billingd's log, every session ended by a password change."""

from __future__ import annotations

import re
import time
import uuid

import httpx

PASSWORD = "correct horse battery"


def _email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@example.com"


def test_sign_up_sets_an_httponly_cookie_that_authenticates_self_service(edge):
    browser = httpx.Client(base_url=edge.http_url, timeout=10)
    email = _email()
    signed = browser.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
    assert signed.status_code == 200, signed.text
    cookie, hint = signed.headers.get_list("set-cookie")
    assert cookie.startswith("ktape_session=")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback
    # its companion, readable by the page, holds no secret
    assert hint.startswith("ktape_signed_in=1;") and "HttpOnly" not in hint
    assert PASSWORD not in signed.text
    session = browser.get("/v1/auth/session")
    assert session.status_code == 200, session.text
    body = session.json()
    assert body["email"] == email and body["csrf_token"] and body["expire_time"]
    assert set(body) == {"account_id", "email", "csrf_token", "expire_time"}

    account = browser.get("/v1/account")
    assert account.status_code == 200 and account.json()["account"]["name"] == email
    no_csrf = browser.post("/v1/account/keys", json={"name": "laptop"})
    assert no_csrf.status_code == 403, no_csrf.text
    assert no_csrf.json()["details"][0]["reason"] == "CSRF_TOKEN_MISSING"
    wrong = browser.post("/v1/account/keys", json={"name": "laptop"},
                         headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403
    made = browser.post("/v1/account/keys", json={"name": "laptop"},
                        headers={"X-CSRF-Token": body["csrf_token"]})
    assert made.status_code == 200, made.text
    keys = browser.get("/v1/account/keys").json()["keys"]
    assert [k["name"] for k in keys] == ["laptop"]

    again = httpx.post(f"{edge.http_url}/v1/auth/signup",
                       json={"email": email.upper(), "password": PASSWORD}, timeout=10)
    assert again.status_code == 409

    out = browser.post("/v1/auth/signout", json={})
    assert out.status_code == 200 and "Max-Age=0" in out.headers["set-cookie"]
    assert browser.get("/v1/auth/session").status_code == 401


def test_without_a_session_every_self_service_route_is_401(edge):
    anonymous = httpx.Client(base_url=edge.http_url, timeout=10)
    for method, path in (("GET", "/v1/auth/session"), ("GET", "/v1/account"),
                         ("GET", "/v1/account/usage"), ("GET", "/v1/account/keys"),
                         ("POST", "/v1/account/keys"), ("DELETE", "/v1/account/keys/k1"),
                         ("POST", "/v1/billing/checkout")):
        response = anonymous.request(method, path, json={} if method == "POST" else None)
        assert response.status_code == 401, (method, path, response.text)
    stale = httpx.Client(base_url=edge.http_url, timeout=10,
                         cookies={"ktape_session": "made-up"})
    assert stale.get("/v1/account").status_code == 401


def test_failed_sign_ins_look_alike_and_are_throttled(edge):
    email = _email()
    assert httpx.post(f"{edge.http_url}/v1/auth/signup",
                      json={"email": email, "password": PASSWORD}, timeout=10).status_code == 200
    wrong = httpx.post(f"{edge.http_url}/v1/auth/signin",
                       json={"email": email, "password": "not the password"}, timeout=10)
    unknown = httpx.post(f"{edge.http_url}/v1/auth/signin",
                         json={"email": _email(), "password": PASSWORD}, timeout=10)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["message"] == unknown.json()["message"]
    for _ in range(9):
        httpx.post(f"{edge.http_url}/v1/auth/signin",
                   json={"email": email, "password": "not the password"}, timeout=10)
    throttled = httpx.post(f"{edge.http_url}/v1/auth/signin",
                           json={"email": email, "password": PASSWORD}, timeout=10)
    assert throttled.status_code == 429, throttled.text


def _reset_path(edge, email: str) -> str:
    log = edge.work_dir / "billingd.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in reversed(log.read_text().splitlines()):
            if "auth.password_reset_link" in line and email in line:
                found = re.search(r"/reset\?token=([A-Za-z0-9_-]+)", line)
                assert found, line
                return found.group(1)
        time.sleep(0.1)
    raise AssertionError("no reset link in billingd's log")


def test_a_password_reset_from_the_log_ends_every_session(edge):
    email = _email()
    first = httpx.Client(base_url=edge.http_url, timeout=10)
    assert first.post("/v1/auth/signup",
                      json={"email": email, "password": PASSWORD}).status_code == 200
    second = httpx.Client(base_url=edge.http_url, timeout=10)
    assert second.post("/v1/auth/signin",
                       json={"email": email, "password": PASSWORD}).status_code == 200
    asked = httpx.post(f"{edge.http_url}/v1/auth/password-reset", json={"email": email},
                       timeout=10)
    unknown = httpx.post(f"{edge.http_url}/v1/auth/password-reset",
                         json={"email": _email()}, timeout=10)
    assert asked.status_code == unknown.status_code == 200  # says nothing about the email
    token = _reset_path(edge, email)
    done = httpx.post(f"{edge.http_url}/v1/auth/password-reset:confirm",
                      json={"token": token, "password": "a brand new password"}, timeout=10)
    assert done.status_code == 200, done.text
    assert first.get("/v1/account").status_code == 401
    assert second.get("/v1/account").status_code == 401
    assert PASSWORD not in (edge.work_dir / "billingd.log").read_text()
    assert httpx.post(f"{edge.http_url}/v1/auth/signin",
                      json={"email": email, "password": "a brand new password"},
                      timeout=10).status_code == 200


def test_an_admin_gives_an_existing_account_a_login(edge):
    email = _email()
    created = httpx.post(f"{edge.http_url}/v1/admin/accounts", headers=edge.admin_auth,
                         json={"name": f"keys-create-{uuid.uuid4().hex[:6]}"}, timeout=10)
    assert created.status_code == 200, created.text
    account_id = created.json()["account"]["account_id"]
    login = httpx.post(f"{edge.http_url}/v1/admin/accounts/{account_id}:createLogin",
                       headers=edge.admin_auth, json={"email": email}, timeout=10)
    assert login.status_code == 200, login.text
    token = login.json()["reset_path"].split("token=")[1]
    assert httpx.post(f"{edge.http_url}/v1/auth/password-reset:confirm",
                      json={"token": token, "password": PASSWORD}, timeout=10).status_code == 200
    browser = httpx.Client(base_url=edge.http_url, timeout=10)
    assert browser.post("/v1/auth/signin",
                        json={"email": email, "password": PASSWORD}).status_code == 200
    assert browser.get("/v1/auth/session").json()["account_id"] == account_id
    plain = httpx.post(f"{edge.http_url}/v1/admin/accounts/{account_id}:createLogin",
                       headers=edge.auth, json={"email": _email()}, timeout=10)
    assert plain.status_code == 403


def test_billing_page_routes_packs_ledger_pages_and_the_portal(edge):
    packs = httpx.get(f"{edge.http_url}/v1/billing/packs", timeout=10)  # no key needed
    assert packs.status_code == 200
    listed = packs.json()["packs"]
    assert [p["pack_id"] for p in listed] == ["credits_10k", "credits_100k", "credits_1m"]
    assert listed[0] == {"pack_id": "credits_10k", "credits": "10000", "price_cents": "1000"}

    browser = httpx.Client(base_url=edge.http_url, timeout=10)
    assert browser.post("/v1/auth/signup",
                        json={"email": _email(), "password": PASSWORD}).status_code == 200
    csrf = browser.get("/v1/auth/session").json()["csrf_token"]
    account = browser.get("/v1/account").json()["account"]
    assert account["balance_credits"] == "1000"  # this month's allowance, read not written
    assert browser.get("/v1/account/ledger").json()["entries"] == []
    for i in range(3):
        granted = httpx.post(f"{edge.http_url}/v1/admin/accounts/{account['account_id']}:grant",
                             headers=edge.admin_auth, timeout=10,
                             json={"credits": str(10 * (i + 1)), "reason": f"grant {i}",
                                   "idempotency_key": f"ledger-page-{i}"})
        assert granted.status_code == 200, granted.text
    first = browser.get("/v1/account/ledger", params={"page_size": 2}).json()
    assert [e["credits"] for e in first["entries"]] == ["30", "20"]  # newest first
    rest = browser.get("/v1/account/ledger", params={"page_size": 2,
                                                     "page_token": first["next_page_token"]})
    assert [e["credits"] for e in rest.json()["entries"]] == ["10"]
    assert rest.json()["next_page_token"] == ""

    assert browser.get("/v1/account/calls").json() == {"calls": []}  # none made yet
    capped = browser.post("/v1/account:setSpendingCap", json={"spending_cap_credits": "5000"},
                          headers={"X-CSRF-Token": csrf})
    assert capped.status_code == 200 and capped.json()["account"]["spending_cap_credits"] == "5000"
    assert browser.post("/v1/account:setSpendingCap", json={"spending_cap_credits": "-1"},
                        headers={"X-CSRF-Token": csrf}).status_code == 400
    assert browser.post("/v1/account:setSpendingCap",
                        json={"spending_cap_credits": "1"}).status_code == 403  # no CSRF
    assert browser.post("/v1/billing/portal", json={}).status_code == 403  # no CSRF token
    portal = browser.post("/v1/billing/portal", json={"return_url": f"{edge.http_url}/billing"},
                          headers={"X-CSRF-Token": csrf})
    assert portal.status_code == 200, portal.text
    assert portal.json()["url"].startswith("https://")
