"""The billing store: accounts, API keys, the credits ledger, usage, audit, Stripe state —
one area per module, behind one facade (`BillingStore`). It is synchronous (the drivers
block); billingd's async services use it through `AsyncBillingStore`
(billingd/store/aio.py), which runs each call on a thread pool bounded by the database's
connections.

Money rules, all enforced here so every caller gets them:
- The ledger is append-only; every entry has a kind, a reason and an idempotency key
  unique per account — a repeat returns the first entry instead of applying twice.
  Balance = sum of the ledger, never a stored counter.
- Each UTC month an account's plan grants a free allowance (an `allowance` entry, keyed
  by the month) the first time the account is touched; at the first touch of a later
  month the unused rest expires (`allowance_expiry`). Usage draws on the allowance first.
- Debits that must not overdraw lock the account first (see billingd/db.py), so 50
  concurrent callers can never take the balance below zero. Usage arrives after the
  call was served (batched by queryd's interceptor); it is charged up to the balance,
  and what exceeds it is billed through Stripe meters on postpaid plans, or written off
  as `unpaid` (bounded by the interceptor's cache window) on prepaid ones.
- dev keys draw on a daily sandbox quota and never touch the ledger.

Times are stored as ISO-8601 UTC text with microseconds (sortable, dialect-neutral).
"""

from __future__ import annotations

from billingd.db import Database, open_database
from billingd.schema import migrate
from billingd.store.accounts import AccountsArea
from billingd.store.audit import AuditArea
from billingd.store.keys import KeysArea
from billingd.store.ledger import LedgerArea
from billingd.store.records import (
    Account,
    ApiKeyRow,
    AuditEvent,
    GapLookup,
    LedgerEntry,
    MeterReport,
    RecordResult,
    Standing,
    UsageIn,
    UsageRow,
    month_of,
    stamp,
    utcnow,
)
from billingd.store.stripe_state import StripeArea
from billingd.store.usage import UsageArea

__all__ = ["Account", "ApiKeyRow", "AuditEvent", "BillingStore", "GapLookup", "LedgerEntry",
           "MeterReport", "RecordResult", "Standing", "UsageIn", "UsageRow", "month_of",
           "stamp", "utcnow"]


class BillingStore(AccountsArea, KeysArea, LedgerArea, UsageArea, AuditArea, StripeArea):
    """The one facade billingd's services use: every area's methods on one object, all
    over the same database (each method is one transaction)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db)

    @classmethod
    def from_dsn(cls, dsn: str, *, max_connections: int | None = None) -> BillingStore:
        """The store of a DSN (billingd/db.py `open_database`), migrated."""
        return cls(open_database(dsn, max_connections=max_connections))

    def close(self) -> None:
        self.db.close()
