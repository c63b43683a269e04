"""Datasets through Envoy as a user meets them: list, price, buy, download (whole, by
Range, again for free), with the key or the console session, and every refusal named."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import httpx
import pytest

from billingd.store import BillingStore
from ktape.pricing import dataset_credits
from ktape.sim.server import SimConfig
from tests.fixtures.datasets import build_todays_files


@pytest.fixture(scope="module")
def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


@pytest.fixture
async def files(edge, clean_questdb, tmp_path):
    """Today's files so far, built into the edge's own dataset store."""
    _storage, busiest = await build_todays_files(edge, clean_questdb, tmp_path,
                                                 SimConfig(markets=3, rate=150, seed=3))
    return busiest  # a market of this recording (the day's manifest may hold earlier ones)


def _balance(edge, key: str) -> int:
    got = httpx.get(f"{edge.http_url}/v1/account", headers={"Authorization": f"Bearer {key}"},
                    timeout=10)
    assert got.status_code == 200, got.text
    return int(got.json()["account"]["balance_credits"])


def _buyer(edge, credits: int) -> str:
    """A prod key of a fresh account: its balance moves only with this test's calls
    (the shared edge account's batched usage from earlier tests may still be landing)."""
    store = BillingStore.from_dsn(edge.billing_dsn)
    try:
        account = store.create_account(f"buyer-{uuid.uuid4().hex[:6]}", plan="free")
        store.append(account.account_id, credits, kind="grant", reason="test",
                     idempotency_key="grant")
        return store.create_key(account.account_id, env="prod", name="t").full
    finally:
        store.close()


def test_list_price_buy_and_download(edge, files, today):
    key = _buyer(edge, 10_000)
    api = httpx.Client(base_url=edge.http_url, headers={"Authorization": f"Bearer {key}"},
                       timeout=20)
    listed = api.get("/v1/datasets", params={"data_type": "book_changes", "start_date": today,
                                             "format": "parquet", "page_size": 2})
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert len(page["files"]) == 2 and page["next_page_token"]
    first = page["files"][0]
    assert first["condition"] == "DATA_CONDITION_PENDING" and first["name"].endswith(".parquet")
    assert int(first["bytes"]) > 0 and len(first["sha256"]) == 64
    assert int(first["credits"]) == dataset_credits(int(first["bytes"]))
    everything, token = [], ""
    while True:
        got = api.get("/v1/datasets", params={"data_type": "book_changes", "start_date": today,
                                              "format": "parquet", "page_token": token}).json()
        everything += got["files"]
        token = got["next_page_token"]
        if not token:
            break
    assert len({f["name"] for f in everything}) == len(everything) >= 4

    ticker = files
    assert ticker in {f["ticker"] for f in everything}
    filt = {"ticker": ticker, "start_date": today}
    cost = api.get("/v1/datasets:cost", params=filt).json()
    mine = [f for f in api.get("/v1/datasets", params=filt).json()["files"]]
    assert int(cost["file_count"]) == len(mine) == 10  # 5 data types x 2 formats
    assert int(cost["credits"]) == sum(dataset_credits(int(f["bytes"])) for f in mine)

    before = _balance(edge, key)
    bought = api.post("/v1/datasets:download", json=filt)
    assert bought.status_code == 200, bought.text
    body = bought.json()
    assert int(body["charged_credits"]) == int(cost["credits"])
    downloads = {d["name"]: d for d in body["downloads"]}
    assert set(downloads) == {f["name"] for f in mine}
    expire = dt.datetime.fromisoformat(body["downloads"][0]["expire_time"].replace("Z", "+00:00"))
    assert dt.timedelta(hours=23) < expire - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=24)

    parquet = next(d for n, d in downloads.items()
                   if n.startswith("book_changes/") and n.endswith(".parquet"))
    whole = httpx.get(parquet["url"], timeout=20)  # the URL is the credential
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == parquet["sha256"]
    assert whole.content[:4] == b"PAR1" and len(whole.content) == int(parquet["bytes"])
    cut = len(whole.content) // 3
    head = httpx.get(parquet["url"], headers={"Range": f"bytes=0-{cut - 1}"}, timeout=20)
    rest = httpx.get(parquet["url"], headers={"Range": f"bytes={cut}-"}, timeout=20)
    assert (head.status_code, rest.status_code) == (206, 206)
    assert hashlib.sha256(head.content + rest.content).hexdigest() == parquet["sha256"]
    assert whole.headers["etag"] and whole.headers["repr-digest"].startswith("sha-256=:")
    same = httpx.get(parquet["url"], headers={"If-None-Match": whole.headers["etag"]}, timeout=20)
    assert same.status_code == 304
    outside = httpx.get(parquet["url"], headers={"Range": f"bytes={10 * len(whole.content)}-"},
                        timeout=20)
    assert outside.status_code == 416

    # the usage appears on the account, and buying the same files again costs nothing
    assert _balance(edge, key) == before - int(cost["credits"])
    again = api.post("/v1/datasets:download", json={"names": list(downloads)}).json()
    assert int(again["charged_credits"]) == 0 and len(again["downloads"]) == 10
    assert _balance(edge, key) == before - int(cost["credits"])

    forged = parquet["url"].rsplit("sig=", 1)[0] + "sig=" + "A" * 43
    assert httpx.get(forged, timeout=20).status_code == 403


def test_every_refusal_names_its_field(edge, files, today):
    api = httpx.Client(base_url=edge.http_url, headers=edge.auth, timeout=20)

    def refused(resp: httpx.Response, status: int) -> dict:
        assert resp.status_code == status, resp.text
        return resp.json()["details"][0]

    bad_type = refused(api.get("/v1/datasets", params={"data_type": "ticks"}), 400)
    assert bad_type["metadata"]["field"] == "data_type"
    assert refused(api.get("/v1/datasets", params={"format": "xlsx"}), 400)["metadata"][
        "field"] == "format"
    assert refused(api.get("/v1/datasets", params={"start_date": "2026-13-01"}), 400)[
        "metadata"]["field"] == "start_date"
    too_long = refused(api.get("/v1/datasets", params={"start_date": "2026-01-01",
                                                       "end_date": "2026-03-01"}), 400)
    assert too_long["metadata"]["field"] == "end_date"
    unknown = refused(api.get("/v1/datasets", params={"ticker": "NOPE-1"}), 404)
    assert unknown["reason"] == "UNKNOWN_TICKER" and unknown["metadata"]["field"] == "ticker"
    missing = refused(api.post("/v1/datasets:download",
                               json={"names": [f"trades/{today}/NOPE-1.parquet"]}), 404)
    assert missing["reason"] == "FILE_NOT_FOUND"
    assert refused(api.post("/v1/datasets:download", json={"names": ["../../etc/passwd"]}),
                   400)["metadata"]["field"] == "names[0]"
    assert httpx.get(f"{edge.http_url}/v1/datasets", timeout=10).status_code == 401


def test_a_purchase_beyond_the_balance_charges_nothing(edge, files, today):
    store = BillingStore.from_dsn(edge.billing_dsn)
    try:
        account = store.create_account(f"broke-{uuid.uuid4().hex[:6]}", plan="free")
        key = store.create_key(account.account_id, env="prod", name="t").full
        store.open_month(account.account_id)
        store.append(account.account_id, -store.balance(account.account_id), kind="adjustment",
                     reason="test: spend it all", idempotency_key="zero")
    finally:
        store.close()
    api = httpx.Client(base_url=edge.http_url, headers={"Authorization": f"Bearer {key}"},
                       timeout=20)
    resp = api.post("/v1/datasets:download", json={"start_date": today, "format": "parquet"})
    assert resp.status_code == 429, resp.text
    assert resp.json()["details"][0]["reason"] == "INSUFFICIENT_CREDITS"
    assert _balance(edge, key) == 0


def test_the_console_session_buys_with_the_csrf_token_only(edge, files, today):
    browser = httpx.Client(base_url=edge.http_url, timeout=20)
    signed = browser.post("/v1/auth/signup", json={
        "email": f"ds-{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse battery"})
    assert signed.status_code == 200, signed.text
    csrf = browser.get("/v1/auth/session").json()["csrf_token"]
    listed = browser.get("/v1/datasets", params={"start_date": today, "data_type": "trades"})
    assert listed.status_code == 200, listed.text
    name = listed.json()["files"][0]["name"]
    no_csrf = browser.post("/v1/datasets:download", json={"names": [name]})
    assert no_csrf.status_code == 403, no_csrf.text
    assert no_csrf.json()["details"][0]["reason"] == "CSRF_TOKEN_MISSING"
    ok = browser.post("/v1/datasets:download", json={"names": [name]},
                      headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200, ok.text
    assert httpx.get(ok.json()["downloads"][0]["url"], timeout=20).status_code == 200
