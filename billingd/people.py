"""People who sign in to the console: logins, sessions, password resets, sign-in throttling.

The billing store's area for people (accounts, keys and the ledger are in
billingd/store/). Rules
(CONTRACT.md "Console and accounts"):
- passwords are at least 10 characters and kept only as argon2id hashes (argon2-cffi's
  defaults, RFC 9106's second recommended profile); never logged;
- a session is a random cookie value; only its sha256 is stored. It lasts 12 h from its
  last use (sliding), a new one is made at every sign-in, and every session of a person
  ends when the password changes;
- a wrong email and a wrong password fail alike (one message, and the same hashing work),
  and the 11th failure for an email within 15 minutes is refused before any check;
- a reset token is single use and short-lived; asking for one never says whether the
  email has an account.
Synchronous, like the store (its database calls and argon2's hashing both block);
billingd's services use `AsyncPeople`, which runs each method on the store's thread pool
(billingd/store/aio.py), so people share the one bound every store call has.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass

import argon2

from billingd.db import Database
from billingd.store import Account, ApiKeyRow, BillingStore, stamp, utcnow
from billingd.store.aio import AsyncBillingStore, OnPool, offloaded
from ktape.errors import AlreadyExists, InvalidArgument, RateLimited, Unauthenticated
from ktape.log import get_logger

log = get_logger(__name__)

MIN_PASSWORD_CHARS = 10
PLAYGROUND_KEY_NAME = "console playground"
SESSION_TTL = dt.timedelta(hours=12)
SLIDE_AFTER = dt.timedelta(minutes=5)  # extend at most this often (one write per 5 min)
RESET_TTL = dt.timedelta(hours=1)
LOGIN_RESET_TTL = dt.timedelta(hours=24)  # an admin-made login's first password
FAILURE_WINDOW = dt.timedelta(minutes=15)
MAX_FAILURES = 10
_HASHER = argon2.PasswordHasher()  # argon2id
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


@dataclass(frozen=True)
class Session:
    token: str  # the cookie value: only here, when the session is made
    user_id: str
    account_id: str
    email: str
    csrf_token: str
    expires_at: dt.datetime


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normal_email(email: str) -> str:
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or any(c.isspace() for c in email) or len(email) > 254:
        raise InvalidArgument.field("email", "not an email address")
    return email


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidArgument.field("password",
                                    f"at least {MIN_PASSWORD_CHARS} characters")


class People:
    def __init__(self, store: BillingStore) -> None:
        self.store = store
        self.db: Database = store.db

    # -- logins -----------------------------------------------------------------------------

    def sign_up(self, email: str, password: str, *, now: dt.datetime | None = None) -> Session:
        email = normal_email(email)
        _check_password(password)
        now = now or utcnow()
        with self.db.tx() as tx:
            if tx.one("SELECT 1 FROM users WHERE email = ?", (email,)):
                raise AlreadyExists("an account with this email exists", reason="EMAIL_EXISTS")
        account = self.store.create_account(email, now=now)  # ALREADY_EXISTS on a race
        user_id = self._add_user(account, email, _HASHER.hash(password), now)
        log.info("auth.signed_up", account_id=account.account_id, user_id=user_id)
        return self._new_session(user_id, account.account_id, email, now)

    def give_login(self, account_id: str, email: str, *,
                   now: dt.datetime | None = None) -> str:
        """A login for an existing account, with no usable password yet: returns a reset
        token (valid LOGIN_RESET_TTL) by which the person sets one."""
        email = normal_email(email)
        now = now or utcnow()
        account = self.store.account(account_id)
        with self.db.tx() as tx:
            if tx.one("SELECT 1 FROM users WHERE email = ?", (email,)):
                raise AlreadyExists("this email already has a login", reason="EMAIL_EXISTS")
        # a hash of a random secret nobody knows: no password works until the reset
        user_id = self._add_user(account, email, _HASHER.hash(secrets.token_urlsafe(32)), now)
        return self._reset_token(user_id, now, LOGIN_RESET_TTL)

    def _add_user(self, account: Account, email: str, password_hash: str,
                  now: dt.datetime) -> str:
        user_id = f"user_{uuid.uuid4().hex[:16]}"
        with self.db.tx() as tx:
            tx.run("INSERT INTO users (user_id, account_id, email, password_hash, created_at)"
                   " VALUES (?, ?, ?, ?, ?)",
                   (user_id, account.account_id, email, password_hash, stamp(now)))
        return user_id

    def sign_in(self, email: str, password: str, *, now: dt.datetime | None = None) -> Session:
        now = now or utcnow()
        email = email.strip().lower()
        with self.db.tx() as tx:
            failures = tx.one("SELECT COUNT(*) FROM signin_failures WHERE email = ? AND "
                              "failed_at > ?", (email, stamp(now - FAILURE_WINDOW)))
            row = tx.one("SELECT user_id, account_id, password_hash FROM users WHERE email = ?",
                         (email,))
        if failures and int(failures[0]) >= MAX_FAILURES:
            log.warning("auth.sign_in_throttled", failures=int(failures[0]))
            raise RateLimited("too many failed sign-ins for this email; try again later",
                              retry_after_secs=FAILURE_WINDOW.total_seconds())
        try:
            _HASHER.verify(row[2] if row else _DUMMY_HASH, password)
            if row is None:
                raise argon2.exceptions.VerifyMismatchError
        except argon2.exceptions.VerificationError:
            with self.db.tx() as tx:
                tx.run("INSERT INTO signin_failures (email, failed_at) VALUES (?, ?)",
                       (email, stamp(now)))
            log.info("auth.sign_in_failed", known_email=row is not None)
            raise Unauthenticated("wrong email or password", reason="SIGN_IN_FAILED") from None
        user_id, account_id = str(row[0]), str(row[1])
        if _HASHER.check_needs_rehash(str(row[2])):
            self._set_hash(user_id, _HASHER.hash(password))
        with self.db.tx() as tx:
            tx.run("DELETE FROM signin_failures WHERE email = ?", (email,))
        log.info("auth.signed_in", account_id=account_id, user_id=user_id)
        return self._new_session(user_id, account_id, email, now)

    # -- sessions ---------------------------------------------------------------------------

    def _new_session(self, user_id: str, account_id: str, email: str,
                     now: dt.datetime) -> Session:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        expires = now + SESSION_TTL
        with self.db.tx() as tx:
            tx.run("INSERT INTO sessions (session_sha256, user_id, csrf_token, created_at, "
                   "expires_at) VALUES (?, ?, ?, ?, ?)",
                   (_sha256(token), user_id, csrf, stamp(now), stamp(expires)))
        return Session(token, user_id, account_id, email, csrf, expires)

    def session(self, token: str, *, now: dt.datetime | None = None) -> Session:
        """The live session of a cookie value, its expiry slid forward; UNAUTHENTICATED
        when it is unknown, ended or expired."""
        now = now or utcnow()
        with self.db.tx() as tx:
            row = tx.one(
                "SELECT s.user_id, u.account_id, u.email, s.csrf_token, s.expires_at "
                "FROM sessions s JOIN users u ON u.user_id = s.user_id "
                "WHERE s.session_sha256 = ? AND s.ended_at IS NULL", (_sha256(token),))
            if row is None or str(row[4]) <= stamp(now):
                raise Unauthenticated("not signed in (or the session expired)",
                                      reason="SESSION_INVALID")
            expires = dt.datetime.fromisoformat(str(row[4]))
            if now + SESSION_TTL - expires >= SLIDE_AFTER:
                expires = now + SESSION_TTL
                tx.run("UPDATE sessions SET expires_at = ? WHERE session_sha256 = ?",
                       (stamp(expires), _sha256(token)))
        return Session("", str(row[0]), str(row[1]), str(row[2]), str(row[3]), expires)

    def playground_key(self, session: Session) -> tuple[Account, ApiKeyRow]:
        """The session's person's "console playground" key (made on first use, again if
        revoked): the console's market-data calls are metered to it like any call."""
        user_id, account_id = session.user_id, session.account_id
        with self.db.tx() as tx:
            row = tx.one("SELECT playground_key_id FROM users WHERE user_id = ?", (user_id,))
        key_id = row[0] if row else None
        if key_id is not None:
            key = self.store.key(account_id, str(key_id))
            if key.revoked_at is None:
                return self.store.usable_account(account_id), key
        made = self.store.create_key(account_id, env="prod", name=PLAYGROUND_KEY_NAME)
        with self.db.tx() as tx:
            tx.run("UPDATE users SET playground_key_id = ? WHERE user_id = ?",
                   (made.key_id, user_id))
        return self.store.usable_account(account_id), self.store.key(account_id, made.key_id)

    def sign_out(self, token: str, *, now: dt.datetime | None = None) -> None:
        with self.db.tx() as tx:
            tx.run("UPDATE sessions SET ended_at = ? WHERE session_sha256 = ? AND "
                   "ended_at IS NULL", (stamp(now or utcnow()), _sha256(token)))

    # -- password resets --------------------------------------------------------------------

    def request_reset(self, email: str, *, now: dt.datetime | None = None) -> str | None:
        """A reset token for the email's login, or None when it has none (the caller
        answers the same either way)."""
        now = now or utcnow()
        with self.db.tx() as tx:
            row = tx.one("SELECT user_id FROM users WHERE email = ?", (email.strip().lower(),))
        return None if row is None else self._reset_token(str(row[0]), now, RESET_TTL)

    def _reset_token(self, user_id: str, now: dt.datetime, ttl: dt.timedelta) -> str:
        token = secrets.token_urlsafe(32)
        with self.db.tx() as tx:
            tx.run("INSERT INTO password_resets (token_sha256, user_id, created_at, expires_at)"
                   " VALUES (?, ?, ?, ?)", (_sha256(token), user_id, stamp(now),
                                            stamp(now + ttl)))
        return token

    def confirm_reset(self, token: str, password: str, *,
                      now: dt.datetime | None = None) -> str:
        """Set the password of the token's login, ending all of its sessions; returns the
        account id."""
        _check_password(password)
        now = now or utcnow()
        with self.db.tx() as tx:
            row = tx.one("SELECT r.user_id, u.account_id FROM password_resets r "
                         "JOIN users u ON u.user_id = r.user_id WHERE r.token_sha256 = ? "
                         "AND r.used_at IS NULL AND r.expires_at > ?",
                         (_sha256(token), stamp(now)))
            if row is None:
                raise InvalidArgument.field("token", "unknown, used or expired reset token")
            user_id = str(row[0])
            tx.run("UPDATE password_resets SET used_at = ? WHERE token_sha256 = ?",
                   (stamp(now), _sha256(token)))
            tx.run("UPDATE users SET password_hash = ?, password_changed_at = ? "
                   "WHERE user_id = ?", (_HASHER.hash(password), stamp(now), user_id))
            ended = tx.run("UPDATE sessions SET ended_at = ? WHERE user_id = ? AND "
                           "ended_at IS NULL", (stamp(now), user_id))
        log.info("auth.password_changed", user_id=user_id, sessions_ended=ended)
        return str(row[1])

    def _set_hash(self, user_id: str, password_hash: str) -> None:
        with self.db.tx() as tx:
            tx.run("UPDATE users SET password_hash = ? WHERE user_id = ?",
                   (password_hash, user_id))


class AsyncPeople(OnPool[People]):
    """`People` for billingd's async services: `await people.sign_in(...)`. Every method
    below is the `People` method of the same name, run on the store facade's pool."""

    def __init__(self, store: AsyncBillingStore) -> None:
        super().__init__(People(store.sync), store.pool)

    sign_up = offloaded(People.sign_up)
    give_login = offloaded(People.give_login)
    sign_in = offloaded(People.sign_in)
    session = offloaded(People.session)
    playground_key = offloaded(People.playground_key)
    sign_out = offloaded(People.sign_out)
    request_reset = offloaded(People.request_reset)
    confirm_reset = offloaded(People.confirm_reset)
