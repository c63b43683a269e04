"""The credits ledger: append-only entries, balance, standing, the month's allowance."""

from __future__ import annotations

import datetime as dt

from billingd.db import Database
from billingd.store.records import ENTRY_COLUMNS, LedgerEntry, Standing, utcnow
from billingd.store.tx import balance_of, entry_by_key, get_account, insert_entry, open_month, standing_of
from ktape.errors import (
    InsufficientCredits,
)
from ktape.log import get_logger

log = get_logger(__name__)


class LedgerArea:
    db: Database

    def balance(self, account_id: str) -> int:
        with self.db.tx() as tx:
            return balance_of(tx, account_id)

    def append(self, account_id: str, credits: int, *, kind: str, reason: str,
               idempotency_key: str, require_funds: bool = False) -> LedgerEntry:
        """Append one entry (idempotent per account and key). A debit with
        `require_funds` fails with INSUFFICIENT_CREDITS rather than overdraw."""
        if not idempotency_key:
            raise ValueError("idempotency_key is required")
        with self.db.tx() as tx:
            get_account(tx, account_id)
            tx.lock_account(account_id)
            existing = entry_by_key(tx, account_id, idempotency_key)
            if existing is not None:
                return existing
            if require_funds and credits < 0:
                balance = balance_of(tx, account_id)
                if balance + credits < 0:
                    raise InsufficientCredits(
                        f"{-credits} credits needed, {balance} available",
                        subject=f"account:{account_id}",
                        metadata={"account_id": account_id, "needed": str(-credits),
                                  "available": str(balance)})
            insert_entry(tx, account_id, credits, kind, reason, idempotency_key, utcnow())
            entry = entry_by_key(tx, account_id, idempotency_key)
        assert entry is not None
        return entry

    def entries(self, account_id: str) -> list[LedgerEntry]:
        with self.db.tx() as tx:
            rows = tx.all(f"SELECT {ENTRY_COLUMNS}, balance_after FROM ledger "
                          "WHERE account_id = ? ORDER BY seq", (account_id,))
        return [LedgerEntry(*row[:7], balance_after=int(row[7])) for row in rows]

    def ledger_page(self, account_id: str, *, before_seq: int | None,
                    limit: int) -> list[tuple[int, LedgerEntry]]:
        """Entries newest first, each with its seq (the page position)."""
        with self.db.tx() as tx:
            rows = tx.all(f"SELECT seq, {ENTRY_COLUMNS}, balance_after FROM ledger "
                          "WHERE account_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                          (account_id, before_seq if before_seq is not None else 2**62, limit))
        return [(int(row[0]), LedgerEntry(*row[1:8], balance_after=int(row[8])))
                for row in rows]

    def standing(self, account_id: str, *, now: dt.datetime | None = None) -> Standing:
        """Balance, allowance left, month's spend and today's sandbox calls. A read: it
        writes nothing (the month's allowance is granted by `open_month`)."""
        now = now or utcnow()
        with self.db.tx() as tx:
            return standing_of(tx, get_account(tx, account_id), now)

    def open_month(self, account_id: str, *, now: dt.datetime | None = None) -> None:
        """Grant `now`'s month its allowance (expiring earlier months' rest), once. Usage
        booking does it before charging; reads show its effect without it."""
        now = now or utcnow()
        with self.db.tx() as tx:
            account = get_account(tx, account_id)
            tx.lock_account(account_id)
            open_month(tx, account, now)
