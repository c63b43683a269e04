"""Purchases priced before serving (dataset files): all or nothing, never twice, within
the balance and the spending cap, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest

from billingd.store import BillingStore
from ktape.errors import InsufficientCredits, PermissionDenied
from tests.fixtures.billing import assert_ledger_consistent

NOV = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC)
DOWNLOAD = "/ktape.marketdata.v1.DatasetService/CreateDatasetDownload"


def _buyer(store: BillingStore, name: str, *, plan: str = "free", env: str = "prod",
           credits: int = 0):
    account = store.create_account(name, plan=plan, now=NOV)
    key = store.create_key(account.account_id, env=env, now=NOV)
    if credits:
        store.append(account.account_id, credits, kind="grant", reason="t", idempotency_key="g")
    return account, key


def test_a_purchase_is_charged_once_and_shows_as_usage(billing_store: BillingStore):
    account, key = _buyer(billing_store, "quant", credits=500)
    items = [("dataset:a:1", 300, "A"), ("dataset:b:1", 400, "B")]
    charged, already = billing_store.charge_purchase(key.key_id, DOWNLOAD, items, now=NOV)
    assert (charged, already) == (700, [])
    # the allowance (1000) pays first, like calls
    standing = billing_store.standing(account.account_id, now=NOV)
    assert (standing.balance, standing.allowance_remaining) == (800, 300)
    again = billing_store.charge_purchase(key.key_id, DOWNLOAD, [*items, ("dataset:c:1", 5, "C")],
                                          now=NOV)
    assert again == (5, ["dataset:a:1", "dataset:b:1"])
    rows = billing_store.usage(account_id=account.account_id, start=NOV - dt.timedelta(days=1),
                               end=NOV + dt.timedelta(days=1))
    assert sum(r.credits for r in rows) == 705
    assert_ledger_consistent(billing_store, account.account_id)


def test_a_purchase_beyond_the_balance_charges_nothing(billing_store: BillingStore):
    account, key = _buyer(billing_store, "thin", credits=0)  # 1000 allowance only
    before = billing_store.entries(account.account_id)
    with pytest.raises(InsufficientCredits) as refused:
        billing_store.charge_purchase(key.key_id, DOWNLOAD, [("x", 600, "X"), ("y", 600, "Y")],
                                      now=NOV)
    assert refused.value.reason == "INSUFFICIENT_CREDITS"
    assert refused.value.metadata["needed"] == "1200"
    # nothing of it was booked (the month's allowance grant may be the only new entry)
    assert [e.kind for e in billing_store.entries(account.account_id)
            if e not in before] in ([], ["allowance"])
    assert billing_store.standing(account.account_id, now=NOV).balance == 1000


def test_the_spending_cap_limits_a_postpaid_purchase(billing_store: BillingStore):
    account, key = _buyer(billing_store, "payg", plan="payg")
    billing_store.set_spending_cap(account.account_id, 200)
    with pytest.raises(InsufficientCredits) as refused:
        billing_store.charge_purchase(key.key_id, DOWNLOAD, [("big", 1300, "B")], now=NOV)
    assert refused.value.reason == "SPENDING_CAP_REACHED"
    assert billing_store.charge_purchase(key.key_id, DOWNLOAD, [("ok", 1200, "B")],
                                         now=NOV) == (1200, [])


def test_dev_keys_cannot_buy(billing_store: BillingStore):
    _account, key = _buyer(billing_store, "sandbox", env="dev")
    with pytest.raises(PermissionDenied) as refused:
        billing_store.charge_purchase(key.key_id, DOWNLOAD, [("x", 1, "X")], now=NOV)
    assert refused.value.reason == "DEV_KEY_NOT_ALLOWED"


def test_concurrent_purchases_never_overdraw(billing_store: BillingStore):
    account, key = _buyer(billing_store, "race", credits=0)  # 1000 of allowance

    def buy(n: int) -> bool:
        try:
            billing_store.charge_purchase(key.key_id, DOWNLOAD, [(f"f{n}", 100, "F")], now=NOV)
            return True
        except InsufficientCredits:
            return False

    with ThreadPoolExecutor(8) as pool:
        bought = sum(pool.map(buy, range(30)))
    assert bought == 10
    assert billing_store.standing(account.account_id, now=NOV).balance == 0
    assert_ledger_consistent(billing_store, account.account_id)
