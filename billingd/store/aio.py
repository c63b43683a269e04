"""The billing store for async code: `AsyncBillingStore`, each store method as a coroutine.

Why it exists:
- The database drivers block (the stdlib's sqlite3, psycopg's sync pool), and so does a
  transaction waiting for SQLite's write lock or a PostgreSQL row lock. Run on the event
  loop, one slow transaction would stall every other RPC of billingd; so each store call
  runs on a worker thread and the coroutine awaits it.
- One bounded pool, sized to the database. The workers are this facade's own threads,
  exactly as many as the database may hold connections (`Database.max_connections`): a
  worker never waits for a PostgreSQL connection (psycopg's pool would time out after
  30 s under a burst), SQLite opens at most that many connections (one per thread), and
  a burst of RPCs queues here, as cheap awaiting coroutines, rather than in asyncio's
  default executor, which everything else in the process shares.
- No second implementation. The money rules live once, in the sync areas
  (billingd/store/*.py), which tests, `ktape keys create` and benches call directly; this
  module adds no logic. Each method is declared by one line,
  `ledger_page = offloaded(BillingStore.ledger_page)`: its parameters, return type and
  docstring are the sync method's (a ParamSpec carries them), so type checkers and IDEs
  see `await store.ledger_page(account_id, before_seq=None, limit=10)` as the store
  method it is, and tests/unit/billingd/store/test_aio.py fails when a store method is
  missing here.

Each call is one transaction, as on `BillingStore`: an operation that must be atomic
belongs in an area as one method, never in two awaits.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from billingd.db import default_connections
from billingd.store import BillingStore

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class StorePool:
    """The bounded thread pool every billing-store call of the process runs on."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a store pool needs at least one thread, not {size}")
        self.size = size
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="billing-store")

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """`fn(*args, **kwargs)` on a worker, with the caller's context variables (the
        request fields structlog binds), as `asyncio.to_thread` would. Cancelled while
        queued, the call never starts; cancelled while running, it finishes (its
        transaction commits or rolls back whole) and its result is dropped."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def close(self) -> None:
        """Stop taking calls: queued ones are cancelled, running ones finish first."""
        self._executor.shutdown(wait=True, cancel_futures=True)


class OnPool(Generic[T_co]):
    """Base of an async facade: a sync object, and the pool its `offloaded` methods run on."""

    def __init__(self, target: T_co, pool: StorePool) -> None:
        self._sync = target
        self._pool = pool

    @property
    def sync(self) -> T_co:
        """The sync object itself: for tests, tools, and code already on a worker thread."""
        return self._sync

    @property
    def pool(self) -> StorePool:
        return self._pool


class offloaded(Generic[T, P, R]):  # a descriptor: lower case, like `property`
    """Declares, on an `OnPool` facade, the coroutine version of one method of the sync
    object: same name, parameters, docstring and result, run on the facade's pool."""

    def __init__(self, method: Callable[Concatenate[T, P], R]) -> None:
        self.method = method
        self.name: str = getattr(method, "__name__", "")
        self.__doc__ = method.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        if name != self.name:
            raise TypeError(f"{owner.__name__}.{name} offloads {self.name!r}: "
                            "the facade keeps the store's names")

    @overload
    def __get__(self, instance: None, owner: type) -> offloaded[T, P, R]: ...

    @overload
    def __get__(self, instance: OnPool[T], owner: type
                ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    def __get__(self, instance: OnPool[T] | None, owner: type
                ) -> offloaded[T, P, R] | Callable[P, Coroutine[Any, Any, R]]:
        if instance is None:
            return self
        method: Callable[P, R] = getattr(instance.sync, self.name)  # bound: no `self`
        pool = instance.pool

        @functools.wraps(method)
        async def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return await pool.run(method, *args, **kwargs)

        vars(instance)[self.name] = call  # later look-ups find it without this descriptor
        return call


class AsyncBillingStore(OnPool[BillingStore]):
    """`BillingStore` for billingd's async services: `await store.ledger_page(...)`.

    Every method below is the store method of the same name (see each area's module for
    what it does), run on this facade's pool of `store.db.max_connections` threads.
    """

    def __init__(self, store: BillingStore, pool: StorePool | None = None) -> None:
        super().__init__(store, pool or StorePool(store.db.max_connections))

    @classmethod
    async def open(cls, dsn: str, *, max_connections: int | None = None) -> AsyncBillingStore:
        """Open and migrate the store of `dsn` (billingd/db.py), on the facade's own pool:
        connecting and migrating block too. One number sizes both the database's
        connections and the pool."""
        size = max_connections or default_connections(dsn)
        pool = StorePool(size)
        try:
            store = await pool.run(BillingStore.from_dsn, dsn, max_connections=size)
        except BaseException:
            pool.close()
            raise
        return cls(store, pool)

    def close(self) -> None:
        """Finish the calls under way, then close the database. Blocks: call it once the
        server has stopped."""
        self.pool.close()
        self.sync.close()

    # accounts (billingd/store/accounts.py)
    create_account = offloaded(BillingStore.create_account)
    account = offloaded(BillingStore.account)
    account_by_name = offloaded(BillingStore.account_by_name)
    account_for_name = offloaded(BillingStore.account_for_name)
    list_accounts = offloaded(BillingStore.list_accounts)
    set_state = offloaded(BillingStore.set_state)
    set_plan = offloaded(BillingStore.set_plan)
    set_spending_cap = offloaded(BillingStore.set_spending_cap)

    # API keys (billingd/store/keys.py)
    create_key = offloaded(BillingStore.create_key)
    keys = offloaded(BillingStore.keys)
    key = offloaded(BillingStore.key)
    revoke_key = offloaded(BillingStore.revoke_key)
    authenticate = offloaded(BillingStore.authenticate)
    usable_account = offloaded(BillingStore.usable_account)

    # the ledger (billingd/store/ledger.py)
    balance = offloaded(BillingStore.balance)
    append = offloaded(BillingStore.append)
    entries = offloaded(BillingStore.entries)
    ledger_page = offloaded(BillingStore.ledger_page)
    standing = offloaded(BillingStore.standing)
    open_month = offloaded(BillingStore.open_month)

    # usage, gap refunds, meters (billingd/store/usage.py)
    record_usage = offloaded(BillingStore.record_usage)
    charge_purchase = offloaded(BillingStore.charge_purchase)
    usage = offloaded(BillingStore.usage)
    recent_calls = offloaded(BillingStore.recent_calls)
    refund_gap_calls = offloaded(BillingStore.refund_gap_calls)
    unreported_meter_usage = offloaded(BillingStore.unreported_meter_usage)
    mark_meter_reported = offloaded(BillingStore.mark_meter_reported)

    # the audit trail (billingd/store/audit.py)
    audit = offloaded(BillingStore.audit)
    audit_events = offloaded(BillingStore.audit_events)

    # Stripe state (billingd/store/stripe_state.py)
    record_checkout = offloaded(BillingStore.record_checkout)
    checkout = offloaded(BillingStore.checkout)
    apply_stripe_event = offloaded(BillingStore.apply_stripe_event)
    stripe_customer = offloaded(BillingStore.stripe_customer)
    set_stripe_customer = offloaded(BillingStore.set_stripe_customer)
