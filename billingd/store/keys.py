"""API keys: made (secret shown once, stored hashed), listed, revoked, verified."""

from __future__ import annotations

import datetime as dt

from billingd.db import Database
from billingd.keys import NewKey, generate_key, parse_key, secret_matches
from billingd.store.records import KEY_COLUMNS, Account, ApiKeyRow, stamp, utcnow
from billingd.store.tx import get_account, usable
from ktape.errors import (
    NotFound,
    Unauthenticated,
)
from ktape.log import get_logger

log = get_logger(__name__)


class KeysArea:
    db: Database

    def create_key(self, account_id: str, *, env: str, name: str = "",
                   now: dt.datetime | None = None) -> NewKey:
        key = generate_key(env)
        with self.db.tx() as tx:
            get_account(tx, account_id)
            tx.run("INSERT INTO api_keys (key_id, account_id, env, name, secret_sha256, "
                   "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                   (key.key_id, account_id, env, name, key.secret_sha256,
                    stamp(now or utcnow())))
        return key

    def keys(self, account_id: str, *, before: tuple[str, str] | None = None,
             limit: int = 1000) -> list[ApiKeyRow]:
        """Keys newest first; `before` = (created_at, key_id) of the last key seen."""
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = ?"
        params: list[object] = [account_id]
        if before is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND key_id < ?))"
            params += [before[0], before[0], before[1]]
        sql += " ORDER BY created_at DESC, key_id DESC LIMIT ?"
        with self.db.tx() as tx:
            return [ApiKeyRow(*row) for row in tx.all(sql, [*params, limit])]

    def key(self, account_id: str, key_id: str) -> ApiKeyRow:
        with self.db.tx() as tx:
            row = tx.one(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ? AND "
                         "account_id = ?", (key_id, account_id))
        if row is None:
            raise NotFound(f"unknown key {key_id!r}", reason="UNKNOWN_KEY",
                           metadata={"key_id": key_id})
        return ApiKeyRow(*row)

    def revoke_key(self, account_id: str, key_id: str, *, now: dt.datetime | None = None
                   ) -> ApiKeyRow:
        with self.db.tx() as tx:
            updated = tx.run("UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) "
                             "WHERE key_id = ? AND account_id = ?",
                             (stamp(now or utcnow()), key_id, account_id))
        if not updated:
            raise NotFound(f"unknown key {key_id!r}", reason="UNKNOWN_KEY",
                           metadata={"key_id": key_id})
        return self.key(account_id, key_id)

    def authenticate(self, full_key: str) -> tuple[Account, ApiKeyRow]:
        """The account and key behind a presented key, or UNAUTHENTICATED /
        PERMISSION_DENIED with the reason."""
        try:
            _env, key_id, secret = parse_key(full_key)
        except ValueError as exc:
            raise Unauthenticated(str(exc), reason="API_KEY_MALFORMED") from None
        with self.db.tx() as tx:
            row = tx.one(f"SELECT {KEY_COLUMNS}, secret_sha256 FROM api_keys "
                         "WHERE key_id = ?", (key_id,))
            if row is None or not secret_matches(secret, str(row[7])):
                raise Unauthenticated("unknown API key", reason="API_KEY_INVALID",
                                      metadata={"key_id": key_id})
            key = ApiKeyRow(*row[:7])
            if key.revoked_at is not None:
                raise Unauthenticated("API key revoked", reason="API_KEY_REVOKED",
                                      metadata={"key_id": key_id})
            account = get_account(tx, key.account_id)
        return usable(account), key

    def usable_account(self, account_id: str) -> Account:
        """The account a signed-in person acts for; PERMISSION_DENIED when suspended."""
        return usable(self.account(account_id))
