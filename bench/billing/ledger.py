"""How many credits can the ledger book per second, on SQLite and on PostgreSQL?

Intent: "how fast under concurrency" — two shapes, each on both stores:
- debits: N threads each appending `require_funds` debits (one per call, the strictest
  path: balance check + insert under the account lock) to one shared account — the
  worst contention — and to one account per thread;
- usage batches: RecordUsage-sized batches of 500 events booked by N threads, the path
  the metering interceptor actually uses.
Also re-checks no overdraft: the final balance is never negative.
Saves bench/results/billing_ledger.json.

Run: .venv/bin/python bench/billing/ledger.py [--threads 8] [--seconds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import save
from billingd.store import BillingStore, UsageIn
from ktape.errors import InsufficientCredits
from ktape.log import configure_logging
from ktape.runtime.postgres import PostgresProcess


def _run_threads(threads: int, seconds: float, work) -> int:
    done = [0] * threads
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            done[i] += work(i)

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done)


def debits(store: BillingStore, threads: int, seconds: float, shared: bool) -> dict:
    accounts = []
    for i in range(1 if shared else threads):
        account = store.create_account(f"debit-{uuid.uuid4().hex[:8]}-{i}")
        store.append(account.account_id, 10**12, kind="grant", reason="bench",
                     idempotency_key="seed")
        accounts.append(account.account_id)
    refused = [0]

    def work(i: int) -> int:
        account_id = accounts[0 if shared else i]
        try:
            store.append(account_id, -1, kind="usage", reason="bench",
                         idempotency_key=uuid.uuid4().hex, require_funds=True)
            return 1
        except InsufficientCredits:
            refused[0] += 1
            return 0

    count = _run_threads(threads, seconds, work)
    assert all(store.balance(a) >= 0 for a in accounts)
    return {"debits": count, "per_sec": round(count / seconds), "refused": refused[0]}


def usage_batches(store: BillingStore, threads: int, seconds: float) -> dict:
    keys = []
    for i in range(threads):
        account = store.create_account(f"usage-{uuid.uuid4().hex[:8]}-{i}")
        store.append(account.account_id, 10**12, kind="grant", reason="bench",
                     idempotency_key="seed")
        keys.append(store.create_key(account.account_id, env="prod").key_id)

    def work(i: int) -> int:
        now = dt.datetime.now(dt.UTC)
        batch = [UsageIn(uuid.uuid4().hex, keys[i], "/bench/Method", 2, now) for _ in range(500)]
        return store.record_usage(batch).applied

    count = _run_threads(threads, seconds, work)
    return {"events": count, "per_sec": round(count / seconds)}


def measure(dsn: str, threads: int, seconds: float) -> dict:
    store = BillingStore.from_dsn(dsn)
    try:
        return {"debits_one_account": debits(store, threads, seconds, shared=True),
                "debits_account_per_thread": debits(store, threads, seconds, shared=False),
                "usage_batches_of_500": usage_batches(store, threads, seconds)}
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    configure_logging()
    result = {"threads": args.threads, "seconds": args.seconds}
    with tempfile.TemporaryDirectory(prefix="ktape-bench-ledger-") as tmp:
        result["sqlite"] = measure(f"sqlite:///{tmp}/billing.sqlite3", args.threads, args.seconds)
    server = PostgresProcess().start()
    try:
        result["postgres"] = measure(server.create_database(), args.threads, args.seconds)
    finally:
        server.stop()
    save("billing_ledger", result)


if __name__ == "__main__":
    main()
