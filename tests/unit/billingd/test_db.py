"""SqliteDb: closing waits for a transaction still running in another thread (a gRPC call
cancelled at shutdown) instead of closing the connection under it — which crashed the
test process inside SQLite once (CI, test_metering teardown)."""

from __future__ import annotations

import threading
import time

from billingd.db import SqliteDb


def test_close_waits_for_a_transaction_under_way(tmp_path) -> None:
    db = SqliteDb(tmp_path / "b.sqlite3")
    with db.tx() as tx:
        tx.run("CREATE TABLE t (v INTEGER)")
    inside, results = threading.Event(), []

    def worker() -> None:
        with db.tx() as tx:
            inside.set()
            time.sleep(0.3)  # close() is called meanwhile
            tx.run("INSERT INTO t VALUES (1)")
            results.append(tx.one("SELECT count(*) FROM t")[0])

    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(5)
    began = time.monotonic()
    db.close()
    waited = time.monotonic() - began
    thread.join(5)
    assert results == [1] and waited >= 0.2
    again = SqliteDb(tmp_path / "b.sqlite3")  # the insert was committed, not lost
    with again.tx() as tx:
        assert tx.one("SELECT count(*) FROM t")[0] == 1
    again.close()
