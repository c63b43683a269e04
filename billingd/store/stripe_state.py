"""Stripe state: customers, checkout sessions, events applied once."""

from __future__ import annotations

from billingd.db import Database
from billingd.store.records import stamp, utcnow
from billingd.store.tx import entry_by_key, get_account, insert_entry
from ktape.log import get_logger

log = get_logger(__name__)


class StripeArea:
    db: Database

    def record_checkout(self, session_id: str, account_id: str, pack: str, credits: int) -> None:
        with self.db.tx() as tx:
            if not tx.one("SELECT 1 FROM checkout_sessions WHERE session_id = ?", (session_id,)):
                tx.run("INSERT INTO checkout_sessions (session_id, account_id, pack, credits, "
                       "created_at) VALUES (?, ?, ?, ?, ?)",
                       (session_id, account_id, pack, credits, stamp(utcnow())))

    def checkout(self, session_id: str) -> tuple[str, str, int] | None:
        with self.db.tx() as tx:
            row = tx.one("SELECT account_id, pack, credits FROM checkout_sessions WHERE "
                         "session_id = ?", (session_id,))
        return (str(row[0]), str(row[1]), int(row[2])) if row else None

    def apply_stripe_event(self, event_id: str, event_type: str, created: int,
                           grant: tuple[str, int, str, str] | None) -> bool:
        """Mark a Stripe event applied and, with `grant` = (account_id, credits,
        idempotency_key, reason), add the purchase — in one transaction. Returns False
        for an event applied before. The grant's own key (per checkout session) keeps
        two different events about one payment from granting twice."""
        with self.db.tx() as tx:
            if tx.one("SELECT 1 FROM stripe_events WHERE event_id = ?", (event_id,)):
                return False
            tx.run("INSERT INTO stripe_events (event_id, type, created, applied_at) "
                   "VALUES (?, ?, ?, ?)", (event_id, event_type, created, stamp(utcnow())))
            if grant is not None:
                account_id, credits, key, reason = grant
                get_account(tx, account_id)
                tx.lock_account(account_id)
                if entry_by_key(tx, account_id, key) is None:
                    insert_entry(tx, account_id, credits, "purchase", reason, key, utcnow())
                tx.run("UPDATE checkout_sessions SET completed_at = coalesce(completed_at, ?) "
                       "WHERE session_id = ?", (stamp(utcnow()), key.removeprefix("checkout:")))
        return True

    def stripe_customer(self, account_id: str) -> str | None:
        with self.db.tx() as tx:
            row = tx.one("SELECT customer_id FROM stripe_customers WHERE account_id = ?",
                         (account_id,))
        return str(row[0]) if row else None

    def set_stripe_customer(self, account_id: str, customer_id: str) -> str:
        """Remember the account's Stripe customer; the first one stored wins."""
        with self.db.tx() as tx:
            row = tx.one("SELECT customer_id FROM stripe_customers WHERE account_id = ?",
                         (account_id,))
            if row:
                return str(row[0])
            tx.run("INSERT INTO stripe_customers (account_id, customer_id) VALUES (?, ?)",
                   (account_id, customer_id))
        return customer_id
