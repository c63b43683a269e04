"""Outages that must lose nothing: QuestDB restarting mid-run, ingestd killed with -9."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psycopg

from ingestd.app import Ingestd
from ingestd.config import IngestSettings
from ktape.config import HostPort, load_settings
from ktape.runtime.ports import free_port
from ktape.runtime.questdb import QuestDBProcess
from ktape.schema import apply_migrations
from ktape.schema.wal import wait_for_wal
from ktape.sim.journal import Journal
from ktape.sim.server import SimConfig, SimServer
from queryd.orderbook import Continuity, orderbook_at


async def _compare_with_journal(conninfo: str, journal: Journal, samples: int = 20) -> int:
    """Books at random change instants equal the journal wherever they are CONTINUOUS."""
    rng = random.Random(1)
    checked = 0
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for ticker in sorted(journal.tickers()):
            times = sorted({r["t"] for r in journal.changes(ticker) if r["k"] != "book"})
            for t_ms in rng.sample(times, min(samples, len(times))):
                result = await orderbook_at(conn, ticker, dt.datetime.fromtimestamp(
                    t_ms / 1000, dt.UTC))
                if result.continuity is Continuity.CONTINUOUS:
                    assert (result.book.yes, result.book.no) == journal.book_at(ticker, t_ms)
                    checked += 1
    return checked


async def test_questdb_restart_mid_run_loses_nothing(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="ktape-qdb-restart-"))
    http, pg = HostPort("127.0.0.1", free_port()), HostPort("127.0.0.1", free_port())
    qdb = QuestDBProcess(root, http, pg, heap_mb=768)
    qdb.start()
    conninfo = f"host=127.0.0.1 port={pg.port} user=admin password=quest dbname=qdb"
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            apply_migrations(conn)
        async with SimServer(SimConfig(markets=8, rate=300, seed=31)) as sim:
            settings = load_settings({
                "KTAPE_QUESTDB_HTTP": str(http), "KTAPE_QUESTDB_PG": str(pg),
                "KTAPE_DATA_DIR": str(tmp_path),
                "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2",
                "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{sim.port}/trade-api/v2"})
            recorder = Ingestd(settings, IngestSettings(checkpoint_every_changes=50,
                                                         flush_interval_ms=100))
            stop = asyncio.Event()
            task = asyncio.create_task(recorder.run(stop))
            await asyncio.sleep(2.5)
            await asyncio.to_thread(qdb.stop)  # QuestDB goes away mid-run
            await asyncio.sleep(2.0)
            assert recorder.writer.spill.size > 0  # batches went to disk, not lost
            await asyncio.to_thread(qdb.start)
            await asyncio.sleep(2.5)
            sim.config.rate = 0
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.wait_for(task, 30)
            assert recorder.writer.spill.size == 0  # replayed in order
            journal = sim.journal
        with psycopg.connect(conninfo, autocommit=True) as conn:
            wait_for_wal(conn)
            gaps = conn.execute("SELECT ticker, reason FROM gaps").fetchall()
        # A store outage is not a gap in the book. The only gaps allowed are the short
        # spans in which a closing market's book emptied (market_close).
        closed = {r["m"] for r in journal.records if r["k"] == "clr"}
        assert all(reason == "market_close" and ticker in closed
                   for ticker, reason in gaps), gaps
        assert await _compare_with_journal(conninfo, journal) > 80
    finally:
        qdb.stop()


async def test_kill_minus_9_and_restart_records_the_downtime_as_a_gap(clean_questdb, tmp_path):
    async with SimServer(SimConfig(markets=6, rate=300, seed=41)) as sim:
        metrics_addr = f"127.0.0.1:{free_port()}"
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("KTAPE_")},
               **clean_questdb.env(), "KTAPE_DATA_DIR": str(tmp_path),
               "KTAPE_INGESTD_METRICS_ADDR": metrics_addr, "KTAPE_FLUSH_INTERVAL_MS": "100",
               "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2",
               "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{sim.port}/trade-api/v2"}

        async def start() -> subprocess.Popen[bytes]:
            proc = subprocess.Popen([sys.executable, "-m", "ingestd"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            async with httpx.AsyncClient() as client:
                for _ in range(150):
                    try:
                        health = (await client.get(f"http://{metrics_addr}/healthz")).json()
                        if health["rows_committed"] > 0:
                            return proc
                    except (httpx.HTTPError, ValueError):
                        pass
                    assert proc.poll() is None
                    await asyncio.sleep(0.2)
            raise AssertionError("ingestd did not commit rows")

        first = await start()
        await asyncio.sleep(1.5)
        killed_at = dt.datetime.now(dt.UTC)
        first.send_signal(signal.SIGKILL)
        first.wait()
        await asyncio.sleep(1.5)  # the exchange moves on while nobody records
        second = await start()
        await asyncio.sleep(1.5)
        sim.config.rate = 0
        await asyncio.sleep(1.0)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(second.wait, 20) == 0
        journal = sim.journal
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        gaps = conn.execute("SELECT ticker, start_ts, end_ts FROM gaps "
                            "WHERE reason = 'ingest_restart'").fetchall()
        recorded_before = {t for (t,) in conn.execute(
            "SELECT DISTINCT ticker FROM book_changes WHERE recv_ts < %s",
            (killed_at,)).fetchall()}
    assert recorded_before and {t for t, _, _ in gaps} == recorded_before
    naive_kill = killed_at.replace(tzinfo=None)
    for _ticker, start, end in gaps:
        assert start is not None and start <= naive_kill
        assert end is None or end > naive_kill  # open: closed while nobody recorded
    assert await _compare_with_journal(clean_questdb.conninfo, journal) > 50
