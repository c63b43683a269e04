"""The billing store: accounts, API keys and an append-only credits ledger (SQLite).

Why SQLite by default: one file in KTAPE_DATA_DIR, transactional, no server to run.
Journal mode WAL lets readers proceed during a debit; every debit runs in a
`BEGIN IMMEDIATE` transaction (one writer at a time), so the balance check and the
ledger insert are atomic and concurrent callers can never overdraw an account. Every
ledger entry carries a kind, a reason and an idempotency key unique per account: a
repeated grant or debit with the same key returns the first entry instead of applying
twice. Balance = sum of the ledger, never a stored counter.

PostgreSQL (KTAPE_BILLING_DSN=postgresql://...) is issue 8's next step.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from billingd.keys import NewKey, generate_key, parse_key, secret_matches
from ktape.errors import AlreadyExists, InsufficientCredits, NotFound, PermissionDenied, Unauthenticated

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL DEFAULT 'active',
    plan TEXT NOT NULL DEFAULT 'free',
    admin INTEGER NOT NULL DEFAULT 0,
    spending_cap_credits INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    env TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    secret_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS ledger (
    entry_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(account_id),
    credits INTEGER NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (account_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS ledger_account ON ledger(account_id);
"""


@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    state: str
    plan: str
    admin: bool
    spending_cap_credits: int
    created_at: str


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str
    account_id: str
    credits: int
    kind: str
    reason: str
    idempotency_key: str
    created_at: str
    balance_after: int


@dataclass(frozen=True)
class ApiKeyRow:
    key_id: str
    account_id: str
    env: str
    name: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)  # idempotent DDL; executescript commits itself

    @classmethod
    def from_dsn(cls, dsn: str) -> SqliteStore:
        if not dsn.startswith("sqlite:///"):
            raise ValueError("only sqlite:///PATH is supported by this store")
        return cls(Path(dsn.removeprefix("sqlite:///")))

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- accounts --------------------------------------------------------------------

    def create_account(self, name: str, *, plan: str = "free", admin: bool = False) -> Account:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"account {name!r} exists", metadata={"name": name})
            account_id = f"acct_{uuid.uuid4().hex[:16]}"
            conn.execute("INSERT INTO accounts (account_id, name, plan, admin, created_at) "
                         "VALUES (?, ?, ?, ?, ?)", (account_id, name, plan, int(admin), _now()))
        return self.account(account_id)

    def account(self, account_id: str) -> Account:
        row = self._conn().execute(
            "SELECT account_id, name, state, plan, admin, spending_cap_credits, created_at "
            "FROM accounts WHERE account_id = ?", (account_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown account {account_id!r}", reason="UNKNOWN_ACCOUNT",
                           metadata={"account_id": account_id})
        return Account(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])

    def account_by_name(self, name: str) -> Account | None:
        row = self._conn().execute("SELECT account_id FROM accounts WHERE name = ?",
                                   (name,)).fetchone()
        return self.account(row[0]) if row else None

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

    # -- keys ------------------------------------------------------------------------

    def create_key(self, account_id: str, *, env: str, name: str = "") -> NewKey:
        self.account(account_id)
        key = generate_key(env)
        with self._tx() as conn:
            conn.execute("INSERT INTO api_keys (key_id, account_id, env, name, secret_sha256, "
                         "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (key.key_id, account_id, env, name, key.secret_sha256, _now()))
        return key

    def keys(self, account_id: str) -> list[ApiKeyRow]:
        rows = self._conn().execute(
            "SELECT key_id, account_id, env, name, created_at, last_used_at, revoked_at "
            "FROM api_keys WHERE account_id = ? ORDER BY created_at DESC", (account_id,))
        return [ApiKeyRow(*row) for row in rows.fetchall()]

    def revoke_key(self, account_id: str, key_id: str) -> ApiKeyRow:
        with self._tx() as conn:
            updated = conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) "
                "WHERE key_id = ? AND account_id = ?", (_now(), key_id, account_id)).rowcount
        if not updated:
            raise NotFound(f"unknown key {key_id!r}", reason="UNKNOWN_KEY",
                           metadata={"key_id": key_id})
        return next(k for k in self.keys(account_id) if k.key_id == key_id)

    def authenticate(self, full_key: str) -> tuple[Account, ApiKeyRow]:
        """The account and key behind a presented key, or UNAUTHENTICATED /
        PERMISSION_DENIED with the reason."""
        try:
            _env, key_id, secret = parse_key(full_key)
        except ValueError as exc:
            raise Unauthenticated(str(exc), reason="API_KEY_MALFORMED") from None
        row = self._conn().execute(
            "SELECT key_id, account_id, env, name, created_at, last_used_at, revoked_at, "
            "secret_sha256 FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is None or not secret_matches(secret, row[7]):
            raise Unauthenticated("unknown API key", reason="API_KEY_INVALID",
                                  metadata={"key_id": key_id})
        key = ApiKeyRow(*row[:7])
        if key.revoked_at is not None:
            raise Unauthenticated("API key revoked", reason="API_KEY_REVOKED",
                                  metadata={"key_id": key_id})
        account = self.account(key.account_id)
        if account.state != "active":
            raise PermissionDenied("account suspended", reason="ACCOUNT_SUSPENDED",
                                   metadata={"account_id": account.account_id})
        return account, key

    # -- ledger ----------------------------------------------------------------------

    def balance(self, account_id: str) -> int:
        (total,) = self._conn().execute(
            "SELECT coalesce(sum(credits), 0) FROM ledger WHERE account_id = ?",
            (account_id,)).fetchone()
        return int(total)

    def _entry(self, conn: sqlite3.Connection, account_id: str, key: str) -> LedgerEntry | None:
        row = conn.execute(
            "SELECT entry_id, account_id, credits, kind, reason, idempotency_key, created_at "
            "FROM ledger WHERE account_id = ? AND idempotency_key = ?", (account_id, key)
        ).fetchone()
        if row is None:
            return None
        (balance,) = conn.execute(
            "SELECT coalesce(sum(credits), 0) FROM ledger WHERE account_id = ? AND rowid <= "
            "(SELECT rowid FROM ledger WHERE entry_id = ?)", (account_id, row[0])).fetchone()
        return LedgerEntry(*row, balance_after=int(balance))

    def append(self, account_id: str, credits: int, *, kind: str, reason: str,
               idempotency_key: str, require_funds: bool = False) -> LedgerEntry:
        """Append one entry (idempotent per account and key). A debit with
        `require_funds` fails with INSUFFICIENT_CREDITS rather than overdraw."""
        if not idempotency_key:
            raise ValueError("idempotency_key is required")
        self.account(account_id)
        with self._tx() as conn:
            existing = self._entry(conn, account_id, idempotency_key)
            if existing is not None:
                return existing
            if require_funds and credits < 0:
                (balance,) = conn.execute(
                    "SELECT coalesce(sum(credits), 0) FROM ledger WHERE account_id = ?",
                    (account_id,)).fetchone()
                if balance + credits < 0:
                    raise InsufficientCredits(
                        f"{-credits} credits needed, {balance} available",
                        subject=f"account:{account_id}",
                        metadata={"account_id": account_id, "needed": str(-credits),
                                  "available": str(balance)})
            conn.execute("INSERT INTO ledger (entry_id, account_id, credits, kind, reason, "
                         "idempotency_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (f"le_{uuid.uuid4().hex}", account_id, credits, kind, reason,
                          idempotency_key, _now()))
            entry = self._entry(conn, account_id, idempotency_key)
        assert entry is not None
        return entry
