"""The store's async facade on real SQLite: every store and People method is on it (with
its docstring and signature), calls never run more at once than the pool has threads
while the event loop keeps turning, 50 concurrent debits never overdraw, and billingd's
services reach blocking code only through it."""

from __future__ import annotations

import ast
import asyncio
import contextvars
import inspect
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from billingd.db import SQLITE_CONNECTIONS, SqliteDb
from billingd.people import AsyncPeople, People
from billingd.store import BillingStore
from billingd.store.aio import AsyncBillingStore, StorePool, offloaded
from ktape.errors import InsufficientCredits
from tests.fixtures.billing import assert_ledger_consistent

ROOT = Path(__file__).resolve().parents[4]
NOT_OFFLOADED = {BillingStore: {"from_dsn", "close"}, People: set()}


class SlowCountingDb(SqliteDb):
    """Real SQLite whose transactions each take a while to begin, counting how many
    threads are inside `tx()` at once."""

    def __init__(self, path: Path, *, max_connections: int, delay_secs: float = 0.02) -> None:
        super().__init__(path, max_connections=max_connections)
        self.delay_secs = delay_secs
        self.active = self.peak = 0
        self.threads: set[str] = set()
        self._count = threading.Lock()

    @contextmanager
    def tx(self) -> Iterator:
        with self._count:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(self.delay_secs)  # outside SQLite's lock: calls can overlap here
            with super().tx() as tx:
                yield tx
        finally:
            with self._count:
                self.active -= 1


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[AsyncBillingStore]:
    facade = await AsyncBillingStore.open(f"sqlite:///{tmp_path / 'billing.sqlite3'}")
    try:
        yield facade
    finally:
        facade.close()


def _offloaded_names(facade: type) -> set[str]:
    return {name for name, value in vars(facade).items() if isinstance(value, offloaded)}


def _public_methods(sync: type) -> set[str]:
    return {name for name, value in inspect.getmembers(sync, inspect.isfunction)
            if not name.startswith("_")} - NOT_OFFLOADED[sync]


@pytest.mark.parametrize(("facade", "sync"), [(AsyncBillingStore, BillingStore),
                                               (AsyncPeople, People)])
def test_every_method_of_the_sync_object_is_on_its_facade(facade, sync):
    assert _offloaded_names(facade) == _public_methods(sync)
    for name in _offloaded_names(facade):
        assert getattr(facade, name).__doc__ == getattr(sync, name).__doc__, name


async def test_a_facade_method_is_a_coroutine_function_with_the_store_signature(store):
    method = store.ledger_page
    assert inspect.iscoroutinefunction(method)
    assert inspect.signature(method) == inspect.signature(store.sync.ledger_page)
    assert method.__doc__ == BillingStore.ledger_page.__doc__
    assert store.ledger_page is method  # made once per facade, then an attribute


async def test_the_pool_is_sized_to_the_database(tmp_path):
    default = await AsyncBillingStore.open(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    small = await AsyncBillingStore.open(f"sqlite:///{tmp_path / 'b.sqlite3'}", max_connections=3)
    try:
        assert default.pool.size == default.sync.db.max_connections == SQLITE_CONNECTIONS
        assert small.pool.size == small.sync.db.max_connections == 3
    finally:
        default.close()
        small.close()


async def test_calls_never_run_more_at_once_than_the_pool_has_threads(tmp_path):
    db = SlowCountingDb(tmp_path / "billing.sqlite3", max_connections=3)
    facade = AsyncBillingStore(BillingStore(db))  # migrations ran on this thread
    db.peak, db.threads = 0, set()
    try:
        account = await facade.create_account("acme")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        ticker = asyncio.create_task(tick())
        found = await asyncio.gather(*(facade.account(account.account_id) for _ in range(30)))
        ticker.cancel()
        assert {a.account_id for a in found} == {account.account_id}
        assert db.peak == 3  # the calls overlapped, three at a time and never more
        assert len(db.threads) == 3 and all(t.startswith("billing-store") for t in db.threads)
        assert ticks >= 10  # 30 calls x 20 ms / 3 threads = 200 ms: the loop ran all along
    finally:
        facade.close()


async def test_fifty_concurrent_debits_through_the_facade_never_overdraw(store):
    account = await store.create_account("acme")
    await store.append(account.account_id, 100, kind="grant", reason="t", idempotency_key="g")

    async def debit(i: int) -> bool:
        try:
            await store.append(account.account_id, -3, kind="usage", reason="t",
                               idempotency_key=f"d{i}", require_funds=True)
        except InsufficientCredits:
            return False
        return True

    results = await asyncio.gather(*(debit(i) for i in range(50)))
    assert results.count(True) == 33  # 33 * 3 = 99 <= 100 < 34 * 3
    assert await store.balance(account.account_id) == 1
    assert_ledger_consistent(store.sync, account.account_id)


async def test_a_call_cancelled_while_queued_never_runs(tmp_path):
    db = SlowCountingDb(tmp_path / "billing.sqlite3", max_connections=1, delay_secs=0.3)
    facade = AsyncBillingStore(BillingStore(db))
    try:
        first = asyncio.create_task(facade.create_account("first"))
        queued = asyncio.create_task(facade.create_account("queued"))
        await asyncio.sleep(0.005)  # `first` holds the one thread; `queued` waits
        queued.cancel()
        await first
        with pytest.raises(asyncio.CancelledError):
            await queued
        await facade.account_by_name("first")  # the pool went on after the cancel
        assert await facade.account_by_name("queued") is None
    finally:
        facade.close()


async def test_people_share_the_store_pool(store):
    people = AsyncPeople(store)
    assert people.pool is store.pool
    session = await people.sign_up("ada@example.com", "correct horse battery")
    assert (await people.session(session.token)).account_id == session.account_id


async def test_calls_carry_the_callers_context_variables():
    request = contextvars.ContextVar("request")
    request.set("req-1")  # as structlog's bound request fields are
    pool = StorePool(1)
    try:
        assert await pool.run(request.get) == "req-1"
    finally:
        pool.close()


def test_billingd_reaches_blocking_code_only_through_the_facade():
    """No `asyncio.to_thread` (or `run_in_executor`) in billingd but the facade's own."""
    found = []
    for path in sorted((ROOT / "billingd").rglob("*.py")):
        if path == ROOT / "billingd" / "store" / "aio.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in {"to_thread", "run_in_executor"}:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
