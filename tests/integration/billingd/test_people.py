"""Logins and sessions on both stores (SQLite and PostgreSQL): hashes only, one failure
message, throttling, sliding sessions, resets that end every session."""

from __future__ import annotations

import datetime as dt

import pytest

from billingd.people import MAX_FAILURES, SESSION_TTL, People
from billingd.store import BillingStore
from ktape.errors import AlreadyExists, InvalidArgument, RateLimited, Unauthenticated

PASSWORD = "correct horse battery"


@pytest.fixture
def people(billing_store: BillingStore) -> People:
    return People(billing_store)


def test_sign_up_stores_an_argon2id_hash_and_signs_in(people, tmp_path):
    session = people.sign_up("Ada@Example.com ", PASSWORD)
    assert session.email == "ada@example.com" and session.token and session.csrf_token
    with people.db.tx() as tx:
        stored = [str(v) for row in tx.all("SELECT * FROM users") for v in row]
        sessions = [str(v) for row in tx.all("SELECT * FROM sessions") for v in row]
    assert any(v.startswith("$argon2id$") for v in stored)
    assert not any(PASSWORD in v for v in stored)
    assert session.token not in sessions  # only its sha256
    if people.db.dialect == "sqlite":
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("billing.sqlite3*"))
        assert PASSWORD.encode() not in raw and session.token.encode() not in raw
    assert people.session(session.token).account_id == session.account_id
    account = people.store.account(session.account_id)
    assert account.name == "ada@example.com"


def test_sign_up_refuses_a_known_email_a_short_password_and_a_non_email(people):
    people.sign_up("ada@example.com", PASSWORD)
    with pytest.raises(AlreadyExists):
        people.sign_up("ADA@example.com", PASSWORD)
    with pytest.raises(InvalidArgument):
        people.sign_up("bob@example.com", "short")
    with pytest.raises(InvalidArgument):
        people.sign_up("not-an-email", PASSWORD)


def test_wrong_password_and_unknown_email_fail_alike_then_throttle(people):
    people.sign_up("ada@example.com", PASSWORD)
    errors = []
    for email, password in (("ada@example.com", "wrong password!"),
                            ("nobody@example.com", PASSWORD)):
        with pytest.raises(Unauthenticated) as info:
            people.sign_in(email, password)
        errors.append((str(info.value), info.value.reason))
    assert errors[0] == errors[1] == ("wrong email or password", "SIGN_IN_FAILED")
    now = dt.datetime.now(dt.UTC)
    for _ in range(MAX_FAILURES - 1):
        with pytest.raises(Unauthenticated):
            people.sign_in("ada@example.com", "wrong password!", now=now)
    with pytest.raises(RateLimited):  # even the right password, until the window passes
        people.sign_in("ada@example.com", PASSWORD, now=now)
    later = now + dt.timedelta(minutes=16)
    assert people.sign_in("ada@example.com", PASSWORD, now=later).token


def test_sessions_slide_expire_and_end(people):
    now = dt.datetime.now(dt.UTC)
    session = people.sign_up("ada@example.com", PASSWORD, now=now)
    second = people.sign_in("ada@example.com", PASSWORD, now=now)
    assert second.token != session.token  # a new session at every sign-in
    later = now + SESSION_TTL - dt.timedelta(minutes=1)
    slid = people.session(session.token, now=later)
    assert slid.expires_at == later + SESSION_TTL  # used: 12 h from now again
    with pytest.raises(Unauthenticated):
        people.session(second.token, now=now + SESSION_TTL + dt.timedelta(seconds=1))
    people.sign_out(session.token)
    with pytest.raises(Unauthenticated):
        people.session(session.token, now=later)
    with pytest.raises(Unauthenticated):
        people.session("made-up")


def test_a_reset_changes_the_password_once_and_ends_every_session(people):
    first = people.sign_up("ada@example.com", PASSWORD)
    second = people.sign_in("ada@example.com", PASSWORD)
    assert people.request_reset("nobody@example.com") is None
    token = people.request_reset("ada@example.com")
    assert token
    with pytest.raises(InvalidArgument):
        people.confirm_reset(token, "short")
    people.confirm_reset(token, "a brand new password")
    for old in (first, second):
        with pytest.raises(Unauthenticated):
            people.session(old.token)
    with pytest.raises(InvalidArgument):  # single use
        people.confirm_reset(token, "yet another password")
    with pytest.raises(Unauthenticated):
        people.sign_in("ada@example.com", PASSWORD)
    assert people.sign_in("ada@example.com", "a brand new password").token


def test_an_existing_account_gets_a_login_through_a_reset(people):
    account = people.store.create_account("made-by-ktape-keys-create")
    token = people.give_login(account.account_id, "ops@example.com")
    with pytest.raises(Unauthenticated):  # no password works before the reset
        people.sign_in("ops@example.com", "")
    people.confirm_reset(token, "the first password")
    session = people.sign_in("ops@example.com", "the first password")
    assert session.account_id == account.account_id
    with pytest.raises(AlreadyExists):
        people.give_login(account.account_id, "ops@example.com")
