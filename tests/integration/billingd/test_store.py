"""The billing store on SQLite: keys hashed and verifiable, ledger idempotent, no overdraft."""

from __future__ import annotations

import threading

import pytest

from billingd.keys import parse_key, secret_digest
from billingd.store import BillingStore
from ktape.errors import AlreadyExists, InsufficientCredits, Unauthenticated
from tests.fixtures.billing import assert_ledger_consistent


@pytest.fixture
def store(billing_store: BillingStore) -> BillingStore:
    return billing_store


def test_key_is_shown_once_and_stored_as_a_hash(store, tmp_path):
    account = store.create_account("acme")
    key = store.create_key(account.account_id, env="dev", name="laptop")
    env, key_id, secret = parse_key(key.full)
    assert (env, key_id) == ("dev", key.key_id)
    with store.db.tx() as tx:
        stored = [tuple(str(v) for v in row) for row in tx.all("SELECT * FROM api_keys")]
    assert secret_digest(secret) in stored[0] and not any(secret in v for v in stored[0])
    if store.db.dialect == "sqlite":  # nothing of the secret on disk either (db + WAL)
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("billing.sqlite3*"))
        assert secret.encode() not in raw
    found, row = store.authenticate(key.full)
    assert found.account_id == account.account_id and row.name == "laptop"


@pytest.mark.parametrize("bad", ["", "kt_prod_x_y", "Bearer kt_prod_000000000000_" + "0" * 64,
                                 "kt_test_000000000000_" + "0" * 64])
def test_malformed_keys_are_unauthenticated(store, bad):
    with pytest.raises(Unauthenticated):
        store.authenticate(bad)


def test_wrong_secret_and_revoked_keys_fail(store):
    account = store.create_account("acme")
    key = store.create_key(account.account_id, env="prod")
    forged = key.full[:-1] + ("0" if key.full[-1] != "0" else "1")
    with pytest.raises(Unauthenticated) as info:
        store.authenticate(forged)
    assert info.value.reason == "API_KEY_INVALID"
    store.revoke_key(account.account_id, key.key_id)
    with pytest.raises(Unauthenticated) as info:
        store.authenticate(key.full)
    assert info.value.reason == "API_KEY_REVOKED"


def test_accounts_are_unique_and_created_lazily(store):
    first = store.account_for_name("acme")
    assert store.account_for_name("acme") == first
    with pytest.raises(AlreadyExists):
        store.create_account("acme")


def test_ledger_is_idempotent_and_balance_is_the_sum(store):
    account = store.create_account("acme")
    a = store.append(account.account_id, 100, kind="grant", reason="welcome",
                     idempotency_key="g1")
    b = store.append(account.account_id, 100, kind="grant", reason="welcome",
                     idempotency_key="g1")
    assert a == b and store.balance(account.account_id) == 100
    store.append(account.account_id, -30, kind="usage", reason="GetOrderbook",
                 idempotency_key="u1", require_funds=True)
    assert store.balance(account.account_id) == 70
    with pytest.raises(InsufficientCredits):
        store.append(account.account_id, -71, kind="usage", reason="x", idempotency_key="u2",
                     require_funds=True)


def test_fifty_concurrent_debits_never_overdraw(store):
    account = store.create_account("acme")
    store.append(account.account_id, 100, kind="grant", reason="t", idempotency_key="g")
    results: list[bool] = []
    lock = threading.Lock()

    def debit(i: int) -> None:
        try:
            store.append(account.account_id, -3, kind="usage", reason="t",
                         idempotency_key=f"d{i}", require_funds=True)
            ok = True
        except InsufficientCredits:
            ok = False
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=debit, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 33  # 33 * 3 = 99 <= 100 < 34 * 3
    assert store.balance(account.account_id) == 1
    assert_ledger_consistent(store, account.account_id)


def test_ktape_keys_create_prints_the_key_once(billing_dsn, tmp_path, monkeypatch, capsys):
    from billingd.keys_cli import main

    monkeypatch.setenv("KTAPE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KTAPE_BILLING_DSN", billing_dsn)
    assert main(["create", "--account", "demo", "--credits", "500", "--env", "dev"]) == 0
    full = capsys.readouterr().out.strip()
    store = BillingStore.from_dsn(billing_dsn)
    account, _ = store.authenticate(full)
    assert account.name == "demo" and store.balance(account.account_id) == 500
