"""Statements shared by the store's areas, each inside the caller's transaction
(money rules in billingd/store/__init__.py)."""

from __future__ import annotations

import datetime as dt
import uuid

from billingd.db import Tx
from billingd.store.records import (
    ACCOUNT_COLUMNS,
    ENTRY_COLUMNS,
    Account,
    LedgerEntry,
    Standing,
    account_row,
    month_of,
    stamp,
)
from ktape.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from ktape.pricing import DEFAULT_PLAN, PLANS


def check_plan(plan: str) -> None:
    if plan not in PLANS:
        raise InvalidArgument.field("plan", f"unknown plan (one of {', '.join(sorted(PLANS))})",
                                    plan=plan)


def usable(account: Account) -> Account:
    if account.state != "active":
        raise PermissionDenied("account suspended", reason="ACCOUNT_SUSPENDED",
                               metadata={"account_id": account.account_id})
    return account


def get_account(tx: Tx, account_id: str) -> Account:
    row = tx.one(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = ?", (account_id,))
    if row is None:
        raise NotFound(f"unknown account {account_id!r}", reason="UNKNOWN_ACCOUNT",
                       metadata={"account_id": account_id})
    return account_row(row)


def balance_of(tx: Tx, account_id: str) -> int:
    """The running balance of the newest entry (= the sum of the ledger, kept per entry
    so a balance is one index lookup, not a scan of the account's history)."""
    row = tx.one("SELECT balance_after FROM ledger WHERE account_id = ? ORDER BY seq DESC "
                 "LIMIT 1", (account_id,))
    return int(row[0]) if row else 0


def entry_by_key(tx: Tx, account_id: str, key: str) -> LedgerEntry | None:
    row = tx.one(f"SELECT {ENTRY_COLUMNS}, balance_after FROM ledger WHERE account_id = ? AND "
                 "idempotency_key = ?", (account_id, key))
    return LedgerEntry(*row[:7], balance_after=int(row[7])) if row else None


def insert_entry(tx: Tx, account_id: str, credits: int, kind: str, reason: str, key: str,
                  now: dt.datetime) -> None:
    """Append one entry; callers hold the account lock, so the running balance is exact."""
    tx.run("INSERT INTO ledger (entry_id, account_id, credits, kind, reason, idempotency_key, "
           "created_at, balance_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
           (f"le_{uuid.uuid4().hex}", account_id, credits, kind, reason, key, stamp(now),
            balance_of(tx, account_id) + credits))


def add_totals(tx: Tx, account_id: str, period: str, *, calls: int = 0, allowance: int = 0,
                paid: int = 0) -> None:
    tx.run("INSERT INTO usage_totals (account_id, period, calls, allowance_credits, "
           "paid_credits) VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, period) DO UPDATE SET "
           "calls = usage_totals.calls + excluded.calls, "
           "allowance_credits = usage_totals.allowance_credits + excluded.allowance_credits, "
           "paid_credits = usage_totals.paid_credits + excluded.paid_credits",
           (account_id, period, calls, allowance, paid))


def totals(tx: Tx, account_id: str, period: str) -> tuple[int, int, int]:
    """(calls, allowance credits, paid credits) of a month ("YYYY-MM", prod keys) or a
    sandbox day ("dev:YYYY-MM-DD")."""
    row = tx.one("SELECT calls, allowance_credits, paid_credits FROM usage_totals WHERE "
                 "account_id = ? AND period = ?", (account_id, period))
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


def allowance_granted(tx: Tx, account_id: str, month: str) -> int:
    row = tx.one("SELECT credits FROM ledger WHERE account_id = ? AND idempotency_key = ?",
                 (account_id, f"allowance:{month}"))
    return int(row[0]) if row else 0


def allowance_used(tx: Tx, account_id: str, month: str) -> int:
    return totals(tx, account_id, month)[1]


def allowance_left(tx: Tx, account_id: str, month: str) -> int:
    if tx.one("SELECT 1 FROM ledger WHERE account_id = ? AND idempotency_key = ?",
              (account_id, f"allowance_expiry:{month}")):
        return 0
    return max(0, allowance_granted(tx, account_id, month) - allowance_used(tx, account_id, month))


def pending_month(tx: Tx, account: Account,
                  now: dt.datetime) -> tuple[list[tuple[str, int]], int] | None:
    """What opening `now`'s month would write — the unused rest of each earlier month to
    expire, and this month's grant — or None when the month is open already."""
    month = month_of(now)
    if tx.one("SELECT 1 FROM ledger WHERE account_id = ? AND idempotency_key = ?",
              (account.account_id, f"allowance:{month}")):
        return None
    earlier = tx.all("SELECT idempotency_key FROM ledger WHERE account_id = ? AND kind = "
                     "'allowance' AND idempotency_key < ?",
                     (account.account_id, f"allowance:{month}"))
    expiring = []
    for (key,) in earlier:
        old = str(key).removeprefix("allowance:")
        if not tx.one("SELECT 1 FROM ledger WHERE account_id = ? AND idempotency_key = ?",
                      (account.account_id, f"allowance_expiry:{old}")):
            expiring.append((old, allowance_left(tx, account.account_id, old)))
    return expiring, PLANS.get(account.plan, PLANS[DEFAULT_PLAN]).monthly_allowance_credits


def open_month(tx: Tx, account: Account, now: dt.datetime) -> None:
    """The month's one explicit write, made before usage is charged in it: expire what
    earlier months left unused, then grant this month's allowance (once)."""
    pending = pending_month(tx, account, now)
    if pending is None:
        return
    expiring, grant = pending
    for old, left in expiring:
        insert_entry(tx, account.account_id, -left, "allowance_expiry",
                     f"unused free allowance of {old} expired", f"allowance_expiry:{old}", now)
    plan = PLANS.get(account.plan, PLANS[DEFAULT_PLAN])
    month = month_of(now)
    insert_entry(tx, account.account_id, grant, "allowance",
                 f"free allowance for {month} ({plan.name} plan)", f"allowance:{month}", now)


def standing_of(tx: Tx, account: Account, now: dt.datetime) -> Standing:
    """A pure read. A month nobody has charged in yet reads as if opened (what
    `open_month` will write), so reads never need to write."""
    month = month_of(now)
    balance = balance_of(tx, account.account_id)
    allowance = allowance_left(tx, account.account_id, month)
    pending = pending_month(tx, account, now)
    if pending is not None:
        expiring, grant = pending
        balance += grant - sum(left for _, left in expiring)
        allowance = grant  # nothing is charged in a month before it is opened
    return Standing(balance=balance, allowance_remaining=allowance,
                    spent_this_month=totals(tx, account.account_id, month)[2],
                    dev_calls_today=totals(tx, account.account_id, f"dev:{stamp(now)[:10]}")[0])
