"""Accounts: creation, lookup, state, plan and spending cap."""

from __future__ import annotations

import datetime as dt
import uuid

from billingd.db import Database
from billingd.store.records import ACCOUNT_COLUMNS, Account, account_row, stamp, utcnow
from billingd.store.tx import check_plan, get_account
from ktape.errors import (
    AlreadyExists,
    InvalidArgument,
)
from ktape.log import get_logger
from ktape.pricing import DEFAULT_PLAN

log = get_logger(__name__)


class AccountsArea:
    db: Database

    def create_account(self, name: str, *, plan: str = DEFAULT_PLAN, admin: bool = False,
                       now: dt.datetime | None = None) -> Account:
        check_plan(plan)
        with self.db.tx() as tx:
            if tx.one("SELECT 1 FROM accounts WHERE name = ?", (name,)):
                raise AlreadyExists(f"account {name!r} exists", reason="ACCOUNT_EXISTS",
                                    metadata={"name": name})
            account_id = f"acct_{uuid.uuid4().hex[:16]}"
            tx.run("INSERT INTO accounts (account_id, name, plan, admin, created_at) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (account_id, name, plan, int(admin), stamp(now or utcnow())))
        return self.account(account_id)

    def account(self, account_id: str) -> Account:
        with self.db.tx() as tx:
            return get_account(tx, account_id)

    def account_by_name(self, name: str) -> Account | None:
        with self.db.tx() as tx:
            row = tx.one(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?", (name,))
        return account_row(row) if row else None

    def account_for_name(self, name: str) -> Account:
        """The named account, created on first use (accounts are created lazily)."""
        existing = self.account_by_name(name)
        if existing is not None:
            return existing
        try:
            return self.create_account(name)
        except AlreadyExists:  # created concurrently
            found = self.account_by_name(name)
            assert found is not None
            return found

    def list_accounts(self, *, suspended_only: bool, after_id: str, limit: int) -> list[Account]:
        where = "account_id > ?" + (" AND state = 'suspended'" if suspended_only else "")
        with self.db.tx() as tx:
            rows = tx.all(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE {where} "
                          "ORDER BY account_id LIMIT ?", (after_id, limit))
        return [account_row(r) for r in rows]

    def set_state(self, account_id: str, state: str) -> Account:
        return self._update_account(account_id, "state = ?", state)

    def set_plan(self, account_id: str, plan: str) -> Account:
        check_plan(plan)
        return self._update_account(account_id, "plan = ?", plan)

    def set_spending_cap(self, account_id: str, cap: int) -> Account:
        if cap < 0:
            raise InvalidArgument.field("spending_cap_credits", "must not be negative")
        return self._update_account(account_id, "spending_cap_credits = ?", cap)

    def _update_account(self, account_id: str, assignment: str, value: object) -> Account:
        with self.db.tx() as tx:
            get_account(tx, account_id)
            tx.run(f"UPDATE accounts SET {assignment} WHERE account_id = ?", (value, account_id))
            return get_account(tx, account_id)
