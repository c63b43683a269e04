"""API keys over REST through Envoy: account, create, list, revoke; auth errors."""

from __future__ import annotations

from pathlib import Path

import httpx

from ktape.keys import create_key


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
