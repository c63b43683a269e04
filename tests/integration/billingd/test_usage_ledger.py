"""Usage, allowance, caps and refunds in the billing store, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from billingd.store import BillingStore, UsageIn
from ktape.errors import InvalidArgument
from tests.fixtures.billing import assert_ledger_consistent

NOV = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC)
DEC = dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC)
GET_BOOK = "/ktape.marketdata.v1.MarketDataService/GetOrderbook"


def _event(key_id: str, n: int, credits: int, when: dt.datetime, **kw) -> UsageIn:
    return UsageIn(event_id=f"ev-{key_id}-{n}", key_id=key_id, method=GET_BOOK, credits=credits,
                   served_at=when, **kw)


def _account_with_key(store: BillingStore, name: str, *, plan: str = "free", env: str = "prod"):
    account = store.create_account(name, plan=plan, now=NOV)
    key = store.create_key(account.account_id, env=env, now=NOV)
    return account, key


def test_allowance_is_spent_first_and_expires_at_month_end(billing_store: BillingStore):
    account, key = _account_with_key(billing_store, "acme")
    billing_store.append(account.account_id, 500, kind="grant", reason="t", idempotency_key="g")
    billing_store.record_usage([_event(key.key_id, 1, 300, NOV)], now=NOV)
    nov = billing_store.standing(account.account_id, now=NOV)
    assert (nov.balance, nov.allowance_remaining, nov.spent_this_month) == (1200, 700, 0)
    billing_store.record_usage([_event(key.key_id, 2, 800, NOV)], now=NOV)
    nov = billing_store.standing(account.account_id, now=NOV)
    assert (nov.balance, nov.allowance_remaining, nov.spent_this_month) == (400, 0, 100)
    # December: November's allowance is gone (fully used), a fresh one arrives. Reading
    # shows it before anything is written; opening the month writes exactly that.
    dec = billing_store.standing(account.account_id, now=DEC)
    assert (dec.balance, dec.allowance_remaining, dec.spent_this_month) == (1400, 1000, 0)
    assert len(billing_store.entries(account.account_id)) == 4  # the read wrote nothing
    billing_store.open_month(account.account_id, now=DEC)
    billing_store.open_month(account.account_id, now=DEC)  # once
    assert billing_store.standing(account.account_id, now=DEC) == dec
    kinds = [(e.kind, e.credits) for e in billing_store.entries(account.account_id)]
    assert kinds == [("grant", 500), ("allowance", 1000), ("usage", -300), ("usage", -800),
                     ("allowance_expiry", 0), ("allowance", 1000)]
    assert billing_store.entries(account.account_id)[-1].balance_after == 1400
    assert_ledger_consistent(billing_store, account.account_id)


def test_unused_allowance_expires(billing_store: BillingStore):
    account, key = _account_with_key(billing_store, "idle")
    billing_store.record_usage([_event(key.key_id, 1, 10, NOV)], now=NOV)
    assert billing_store.standing(account.account_id, now=DEC).balance == 1000
    assert not [e for e in billing_store.entries(account.account_id)
                if e.kind == "allowance_expiry"]  # a read does not write
    billing_store.record_usage([_event(key.key_id, 2, 1, DEC)], now=DEC)  # opens December
    expiry = [e for e in billing_store.entries(account.account_id) if e.kind == "allowance_expiry"]
    assert [e.credits for e in expiry] == [-990]
    assert billing_store.standing(account.account_id, now=DEC).balance == 999


def test_usage_is_applied_once_and_counted_per_day_and_method(billing_store: BillingStore):
    account, key = _account_with_key(billing_store, "acme")
    events = [_event(key.key_id, i, 2, NOV + dt.timedelta(hours=i)) for i in range(3)]
    first = billing_store.record_usage(events, now=NOV)
    again = billing_store.record_usage(events, now=NOV)
    assert (first.applied, first.duplicates, again.applied, again.duplicates) == (3, 0, 0, 3)
    rows = billing_store.usage(account_id=account.account_id, start=NOV - dt.timedelta(days=1),
                               end=NOV + dt.timedelta(days=1))
    assert [(r.day, r.method, r.calls, r.credits) for r in rows] == [("2026-11-10", GET_BOOK, 3, 6)]
    assert billing_store.standing(account.account_id, now=NOV).balance == 994
    assert billing_store.keys(account.account_id)[0].last_used_at.startswith("2026-11-10T14:00")


def test_prepaid_usage_never_overdraws_and_postpaid_is_metered(billing_store: BillingStore):
    prepaid, pre_key = _account_with_key(billing_store, "pre")
    billing_store.record_usage([_event(pre_key.key_id, 1, 1200, NOV)], now=NOV)
    assert billing_store.balance(prepaid.account_id) == 0  # 200 written off as unpaid
    post, post_key = _account_with_key(billing_store, "post", plan="payg")
    billing_store.record_usage([_event(post_key.key_id, 1, 1200, NOV)], now=NOV)
    assert billing_store.balance(post.account_id) == 0
    (report,) = billing_store.unreported_meter_usage()
    assert (report.account_id, report.credits) == (post.account_id, 200)
    billing_store.mark_meter_reported([report.event_id])
    assert billing_store.unreported_meter_usage() == []


def test_spending_cap_limits_what_is_available(billing_store: BillingStore):
    account, key = _account_with_key(billing_store, "capped", plan="payg")
    billing_store.set_spending_cap(account.account_id, 50)
    billing_store.record_usage([_event(key.key_id, 1, 1030, NOV)], now=NOV)
    standing = billing_store.standing(account.account_id, now=NOV)
    account = billing_store.account(account.account_id)
    assert standing.spent_this_month == 30
    assert standing.available(account, "prod") == 20
    with pytest.raises(InvalidArgument):
        billing_store.set_spending_cap(account.account_id, -1)


def test_dev_keys_use_the_sandbox_quota_not_the_ledger(billing_store: BillingStore):
    account, key = _account_with_key(billing_store, "dev", env="dev")
    now = dt.datetime.now(dt.UTC)
    billing_store.record_usage([_event(key.key_id, i, 2, now) for i in range(5)], now=now)
    standing = billing_store.standing(account.account_id)
    assert standing.dev_calls_today == 5 and standing.balance == 1000
    assert standing.available(billing_store.account(account.account_id), "dev") == 995


def test_gap_calls_are_refunded_once(billing_store: BillingStore):
    account, key = _account_with_key(billing_store, "gappy")
    billing_store.record_usage([_event(key.key_id, 1, 2, NOV, in_gap=True, ticker="KX-A"),
                                _event(key.key_id, 2, 2, NOV)], now=NOV)
    window = (NOV - dt.timedelta(hours=1), NOV + dt.timedelta(hours=1))
    assert billing_store.refund_gap_calls(*window) == (1, 2)
    assert billing_store.refund_gap_calls(*window) == (0, 0)
    assert billing_store.standing(account.account_id, now=NOV).balance == 998
    assert_ledger_consistent(billing_store, account.account_id)


def test_stripe_events_apply_once_and_grants_once_per_session(billing_store: BillingStore):
    account, _ = _account_with_key(billing_store, "buyer")
    billing_store.record_checkout("cs_1", account.account_id, "credits_10k", 10_000)
    grant = (account.account_id, 10_000, "checkout:cs_1", "pack")
    assert billing_store.apply_stripe_event("evt_1", "checkout.session.completed", 1, grant)
    assert not billing_store.apply_stripe_event("evt_1", "checkout.session.completed", 1, grant)
    assert billing_store.apply_stripe_event("evt_2", "checkout.session.async_payment_succeeded",
                                            2, grant)
    assert billing_store.balance(account.account_id) == 10_000


def test_audit_events_page_newest_first(billing_store: BillingStore):
    for i in range(5):
        billing_store.audit("acct_admin", "GrantCredits", f"acct_{i % 2}", {"i": i})
    page = billing_store.audit_events(target_account_id="", before_seq=None, limit=3)
    assert [e.detail_json for e in page] == ['{"i": 4}', '{"i": 3}', '{"i": 2}']
    rest = billing_store.audit_events(target_account_id="", before_seq=page[-1].seq, limit=3)
    assert [e.detail_json for e in rest] == ['{"i": 1}', '{"i": 0}']
    only = billing_store.audit_events(target_account_id="acct_1", before_seq=None, limit=10)
    assert {e.target_account_id for e in only} == {"acct_1"} and len(only) == 2


async def test_gap_refunds_run_automatically(billing_store: BillingStore):
    import asyncio

    from billingd.server import refund_gap_calls_forever
    from billingd.store.aio import AsyncBillingStore

    account, key = _account_with_key(billing_store, "auto-refund")
    now = dt.datetime.now(dt.UTC)
    billing_store.record_usage([_event(key.key_id, 1, 2, now, in_gap=True, ticker="KX-A")])
    assert billing_store.standing(account.account_id).balance == 998
    facade = AsyncBillingStore(billing_store)
    task = asyncio.create_task(refund_gap_calls_forever(facade, interval_secs=0.05))
    try:
        for _ in range(100):
            if billing_store.standing(account.account_id).balance == 1000:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        facade.pool.close()  # the fixture closes the store itself
    assert billing_store.standing(account.account_id).balance == 1000
    refunds = [e for e in billing_store.entries(account.account_id) if e.kind == "refund"]
    assert len(refunds) == 1


def test_calls_are_refunded_for_gaps_recorded_after_them(billing_store: BillingStore):
    account, key = _account_with_key(billing_store, "late-gap")
    at = NOV
    later = NOV + dt.timedelta(hours=2)
    billing_store.record_usage([
        _event(key.key_id, 1, 2, NOV, ticker="KX-A", answer_start=at, answer_end=at),
        _event(key.key_id, 2, 2, NOV, ticker="KX-B", answer_start=at, answer_end=at),
        _event(key.key_id, 3, 1, NOV, ticker="KX-A", answer_start=later, answer_end=later),
    ], now=NOV)
    found = {"KX-A": [(at - dt.timedelta(minutes=1), at + dt.timedelta(minutes=1))]}
    asked = []

    def gaps(lo, hi):
        asked.append((lo, hi))
        return found

    window = (NOV - dt.timedelta(hours=1), NOV + dt.timedelta(hours=1))
    assert billing_store.refund_gap_calls(*window, gaps=gaps, now=later) == (1, 2)
    assert billing_store.refund_gap_calls(*window, gaps=gaps, now=later) == (0, 0)
    found["*"] = [(later, later)]  # an outage of every market covering call 3's instant
    assert billing_store.refund_gap_calls(*window, gaps=gaps, now=later) == (1, 1)
    assert asked and asked[0][0] <= window[0]
    assert_ledger_consistent(billing_store, account.account_id)


def test_recent_calls_are_the_latest_booked_ones_newest_first(billing_store: BillingStore):
    account, key = _account_with_key(billing_store, "recent")
    billing_store.record_usage([_event(key.key_id, i, 1 + i, NOV + dt.timedelta(minutes=i))
                                for i in range(5)], now=NOV)
    calls = billing_store.recent_calls(account.account_id, limit=3)
    assert [c[5] for c in calls] == [5, 4, 3]  # credits of the three latest
    assert all(c[1] == GET_BOOK and c[3] == key.key_id for c in calls)
    other, _ = _account_with_key(billing_store, "other")
    assert billing_store.recent_calls(other.account_id, limit=3) == []
