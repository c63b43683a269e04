"""Versioned, idempotent billing-store migrations for SQLite and PostgreSQL.

Why versioned: a data dir from an older release must upgrade in place at start (new
tables and columns), and the two dialects differ only in the few spots listed here
(auto-increment ids). Each version runs in its own transaction and is recorded in
`schema_migrations`; a version already recorded is skipped.
"""

from __future__ import annotations

from billingd.db import Database, Tx

_SERIAL = {"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT", "postgres": "BIGSERIAL PRIMARY KEY"}

# (version, statements); `{serial}` becomes the dialect's auto-increment key.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE IF NOT EXISTS accounts (
            account_id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL DEFAULT 'active',
            plan TEXT NOT NULL DEFAULT 'free',
            admin INTEGER NOT NULL DEFAULT 0,
            spending_cap_credits BIGINT NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS api_keys (
            key_id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(account_id),
            env TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            secret_sha256 TEXT NOT NULL,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT)""",
        "CREATE INDEX IF NOT EXISTS api_keys_account ON api_keys(account_id)",
        """CREATE TABLE IF NOT EXISTS ledger (
            seq {serial},
            entry_id TEXT NOT NULL UNIQUE,
            account_id TEXT NOT NULL REFERENCES accounts(account_id),
            credits BIGINT NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            created_at TEXT NOT NULL,
            balance_after BIGINT NOT NULL,
            UNIQUE (account_id, idempotency_key))""",
        "CREATE INDEX IF NOT EXISTS ledger_account ON ledger(account_id, seq)",
        """CREATE TABLE IF NOT EXISTS usage_events (
            event_id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(account_id),
            key_id TEXT NOT NULL,
            env TEXT NOT NULL,
            method TEXT NOT NULL,
            calls INTEGER NOT NULL,
            credits BIGINT NOT NULL,
            allowance_credits BIGINT NOT NULL,
            ledger_credits BIGINT NOT NULL,
            metered_credits BIGINT NOT NULL,
            unpaid_credits BIGINT NOT NULL,
            day TEXT NOT NULL,
            served_at TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            ticker TEXT NOT NULL DEFAULT '',
            in_gap INTEGER NOT NULL DEFAULT 0,
            refunded_at TEXT,
            meter_reported_at TEXT)""",
        "CREATE INDEX IF NOT EXISTS usage_account_day ON usage_events(account_id, day)",
        "CREATE INDEX IF NOT EXISTS usage_served ON usage_events(served_at)",
        """CREATE TABLE IF NOT EXISTS usage_totals (
            account_id TEXT NOT NULL REFERENCES accounts(account_id),
            period TEXT NOT NULL,
            calls BIGINT NOT NULL DEFAULT 0,
            allowance_credits BIGINT NOT NULL DEFAULT 0,
            paid_credits BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (account_id, period))""",
        """CREATE TABLE IF NOT EXISTS audit_events (
            seq {serial},
            event_id TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            actor_account_id TEXT NOT NULL,
            action TEXT NOT NULL,
            target_account_id TEXT NOT NULL DEFAULT '',
            detail_json TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS stripe_events (
            event_id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            created BIGINT NOT NULL,
            applied_at TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS checkout_sessions (
            session_id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(account_id),
            pack TEXT NOT NULL,
            credits BIGINT NOT NULL,
            created_at TEXT NOT NULL,
            completed_at TEXT)""",
        """CREATE TABLE IF NOT EXISTS stripe_customers (
            account_id TEXT PRIMARY KEY REFERENCES accounts(account_id),
            customer_id TEXT NOT NULL UNIQUE)""",
    ]),
    (2, [
        # the market time an answer described, for refunds of gaps recorded after the call
        "ALTER TABLE usage_events ADD COLUMN answer_start TEXT",
        "ALTER TABLE usage_events ADD COLUMN answer_end TEXT",
    ]),
    (3, [
        # people who sign in to the console (billingd/people.py); an account may have many
        """CREATE TABLE IF NOT EXISTS users (
            user_id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts(account_id),
            email TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            password_changed_at TEXT,
            playground_key_id TEXT)""",
        # sessions by the sha256 of their cookie: a stolen database holds no cookie
        """CREATE TABLE IF NOT EXISTS sessions (
            session_sha256 TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(user_id),
            csrf_token TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            ended_at TEXT)""",
        "CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id)",
        """CREATE TABLE IF NOT EXISTS password_resets (
            token_sha256 TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(user_id),
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            used_at TEXT)""",
        """CREATE TABLE IF NOT EXISTS signin_failures (
            seq {serial},
            email TEXT NOT NULL,
            failed_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS signin_failures_email ON signin_failures(email, failed_at)",
    ]),
]


def _upgrade_unversioned_sqlite_ledger(tx: Tx) -> None:
    """Stores written before versioning had a `ledger` ordered by rowid without `seq`:
    keep its rows, in order, under the current shape."""
    if tx.dialect != "sqlite" or not tx.one(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger'"):
        return
    columns = {row[1] for row in tx.all("PRAGMA table_info(ledger)")}
    if "seq" not in columns:
        tx.run("ALTER TABLE ledger RENAME TO ledger_unversioned")
        tx.run("DROP INDEX IF EXISTS ledger_account")


def migrate(db: Database) -> None:
    with db.tx() as tx:
        tx.run("CREATE TABLE IF NOT EXISTS schema_migrations "
               "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        _upgrade_unversioned_sqlite_ledger(tx)
    for version, statements in MIGRATIONS:
        with db.tx() as tx:
            if tx.dialect == "postgres":  # one migrator at a time across processes
                tx.run("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
            if tx.one("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)):
                continue
            for statement in statements:
                tx.run(statement.replace("{serial}", _SERIAL[tx.dialect]))
            if version == 1 and tx.dialect == "sqlite" and tx.one(
                    "SELECT 1 FROM sqlite_master WHERE name = 'ledger_unversioned'"):
                tx.run("INSERT INTO ledger (entry_id, account_id, credits, kind, reason, "
                       "idempotency_key, created_at, balance_after) SELECT entry_id, "
                       "account_id, credits, kind, reason, idempotency_key, created_at, "
                       "sum(credits) OVER (PARTITION BY account_id ORDER BY rowid) "
                       "FROM ledger_unversioned ORDER BY rowid")
                tx.run("DROP TABLE ledger_unversioned")
            tx.run("INSERT INTO schema_migrations (version, applied_at) VALUES (?, "
                   "CURRENT_TIMESTAMP)", (version,))
