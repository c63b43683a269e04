"""ingestd against the simulator and a real QuestDB, judged by the simulator's journal.

After a faulty run (dropped frames, duplicates, reordering, malformed and unknown
messages, a disconnect), the stored changes — read back through queryd's own
reconstruction — must equal the journal's true book at every checked instant that is not
inside a recorded gap, and every injected gap must have produced `gaps` rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg

from ingestd.app import Ingestd
from ingestd.config import IngestSettings
from ingestd.spill import SpillFile
from ingestd.writer import IlpWriter, TimestampMicros
from ktape.config import Settings, load_settings
from ktape.runtime.ports import free_port
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig, SimServer
from queryd.orderbook import Continuity, orderbook_at


def recorder_settings(questdb, data_dir, sim, **extra: str) -> Settings:
    """Settings of a recorder (and queryd) pointed at this QuestDB and this simulator."""
    return load_settings({
        **questdb.env(), "KTAPE_DATA_DIR": str(data_dir),
        "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2",
        "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{sim.port}/trade-api/v2", **extra})


@contextlib.asynccontextmanager
async def recording(questdb, data_dir, sim, env: dict[str, str] | None = None,
                    **ingest: Any) -> AsyncIterator[Ingestd]:
    """A recorder running against `sim` for the body of the block (`env`: more KTAPE_*
    settings); then the simulator is quiesced, the recorder catches up and stops."""
    recorder = Ingestd(recorder_settings(questdb, data_dir, sim, **(env or {})),
                        IngestSettings(flush_interval_ms=100, **ingest))
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    try:
        yield recorder
        sim.config.rate = 0
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def final_books_match(questdb, journal) -> int:
    """Each market's book at its last journal change equals the exchange's wherever
    ktape claims continuity; returns how many markets were compared."""
    checked = 0
    async with await psycopg.AsyncConnection.connect(questdb.conninfo, autocommit=True) as conn:
        for ticker in sorted(journal.tickers()):
            t_ms = max((r["t"] for r in journal.changes(ticker)), default=None)
            if t_ms is None:
                continue
            result = await orderbook_at(conn, ticker, dt.datetime.fromtimestamp(t_ms / 1000,
                                                                                 dt.UTC))
            if result.continuity is Continuity.CONTINUOUS:
                assert (result.book.yes, result.book.no) == journal.book_at(ticker, t_ms)
                checked += 1
    return checked


async def _control(port: int, action: str, n: int = 1, **more: str) -> None:
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"http://127.0.0.1:{port}/_sim/control",
                                params={"action": action, "n": n, **more})
        assert resp.status_code == 200, resp.text


async def test_faulty_run_rebuilds_the_true_book_outside_recorded_gaps(clean_questdb, tmp_path):
    async with SimServer(SimConfig(markets=12, rate=400, seed=21)) as sim:
        settings = load_settings({
            **clean_questdb.env(), "KTAPE_DATA_DIR": str(tmp_path),
            "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2",
            "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{sim.port}/trade-api/v2",
        })
        recorder = Ingestd(settings, IngestSettings(checkpoint_every_changes=50,
                                                     flush_interval_ms=100))
        stop = asyncio.Event()
        task = asyncio.create_task(recorder.run(stop))
        await asyncio.sleep(2.0)
        for fault in ("drop", "duplicate", "malformed", "unknown_type", "reorder"):
            await _control(sim.port, fault)
            await asyncio.sleep(0.7)
        await _control(sim.port, "disconnect")
        await asyncio.sleep(3.0)
        await _control(sim.port, "drop")
        await asyncio.sleep(2.0)
        sim.config.rate = 0  # quiesce, let ingestd catch up
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(task, 20)
        journal = sim.journal

    faults = [f["what"] for f in journal.faults()]
    assert {"drop", "duplicate", "malformed", "unknown_type", "disconnect"} <= set(faults)

    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        gap_reasons = {r for (r,) in conn.execute("SELECT DISTINCT reason FROM gaps").fetchall()}
        open_gaps = conn.execute("SELECT count() FROM gaps WHERE end_ts IS NULL AND ticker != '*'"
                                 ).fetchone()[0]
    # A dropped frame is a seq jump on whichever subscription it belonged to (book, or
    # the trade / lifecycle sid, recorded as seq_jump_trade etc.).
    assert "reconnect" in gap_reasons
    assert any(reason.startswith("seq_jump") for reason in gap_reasons), gap_reasons
    assert open_gaps == 0  # every gap healed by a snapshot

    rng = random.Random(5)
    checked = skipped = 0
    async with await psycopg.AsyncConnection.connect(clean_questdb.conninfo,
                                                     autocommit=True) as conn:
        for ticker in sorted(journal.tickers()):
            times = sorted({r["t"] for r in journal.changes(ticker) if r["k"] != "book"})
            for t_ms in rng.sample(times, min(25, len(times))):
                at = dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC)
                result = await orderbook_at(conn, ticker, at)
                if result.continuity is not Continuity.CONTINUOUS:
                    skipped += 1
                    continue
                yes, no = journal.book_at(ticker, t_ms)
                assert (result.book.yes, result.book.no) == (yes, no), (ticker, t_ms)
                checked += 1
    print(f"checked {checked} instants, skipped {skipped} inside gaps")
    assert checked > 100, (checked, skipped)
    assert skipped < checked


async def _trades_written_while_questdb_is_down(tmp_path, *, spill_bytes: int, ticker: str,
                                                side: str, prefix: str, count: int,
                                                yes_e4: int, base_us: int) -> IlpWriter:
    """A writer pointed at a port nobody listens on, after `count` one-trade flushes:
    trade i is `{prefix}{i}` at yes price yes_e4 + i (no = 10000 - that)."""
    writer = IlpWriter(f"127.0.0.1:{free_port()}", SpillFile(tmp_path / "s.spill", spill_bytes))
    for i in range(count):
        writer.row("trades", symbols={"ticker": ticker, "taker_side": side, "source": "ws"},
                   columns={"trade_id": f"{prefix}{i}", "yes_price_e4": yes_e4 + i,
                            "no_price_e4": 10_000 - yes_e4 - i, "count_e2": 100,
                            "is_block": False, "seq": i, "sid": 1,
                            "recv_ts": TimestampMicros(base_us)}, at_us=base_us + i)
        await writer.flush()
    return writer


async def test_writer_spills_while_questdb_is_unreachable_and_replays_once(clean_questdb,
                                                                           tmp_path):
    writer = await _trades_written_while_questdb_is_down(
        tmp_path, spill_bytes=1 << 20, ticker="KX-SPILL", side="yes", prefix="t", count=3,
        yes_e4=4200, base_us=1_764_000_000_000_000)
    assert not writer.healthy and writer.spill.size > 0
    writer.url = f"http://{clean_questdb.http}/write?precision=n"
    await writer.flush()  # replays the spilled batches in order
    await writer.flush()
    assert writer.healthy and writer.spill.size == 0
    # replaying the same batch again (as after a crash mid-replay) is exactly-once
    writer.spill.append(b"trades,ticker=KX-SPILL,taker_side=yes,source=ws trade_id=\"t0\","
                        b"yes_price_e4=4200i,no_price_e4=5800i,count_e2=100i,is_block=f,seq=0i,"
                        b"sid=1i,recv_ts=1764000000000000t 1764000000000000000\n")
    await writer.flush()
    await writer.close()
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        rows = conn.execute("SELECT trade_id, yes_price_e4 FROM trades WHERE ticker = 'KX-SPILL'"
                            " ORDER BY trade_id").fetchall()
    assert rows == [("t0", 4200), ("t1", 4201), ("t2", 4202)]


async def test_full_spill_holds_batches_and_loses_nothing(clean_questdb, tmp_path):
    writer = await _trades_written_while_questdb_is_down(
        tmp_path, spill_bytes=600, ticker="KX-FULL", side="no", prefix="f", count=6,
        yes_e4=5000, base_us=1_764_100_000_000_000)
    assert writer.spill.size > 0 and writer.held  # the spill bound was hit: held, not dropped
    writer.url = f"http://{clean_questdb.http}/write?precision=n"
    await writer.backpressure()  # returns once everything held is in QuestDB
    await writer.close()
    assert not writer.held and writer.spill.size == 0
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        rows = conn.execute("SELECT trade_id FROM trades WHERE ticker = 'KX-FULL' "
                            "ORDER BY trade_id").fetchall()
    assert [r for (r,) in rows] == [f"f{i}" for i in range(6)]


async def test_two_decimal_prices_record_the_same_books(clean_questdb, tmp_path):
    """Kalshi has sent 2-, 3- and 4-decimal prices: with the simulator shortening prices
    to 2 decimals wherever exact, the recorded books are still the exchange's, and no
    snapshot ever disagrees with the book ingestd held (no false gaps)."""
    async with SimServer(SimConfig(markets=8, rate=500, seed=77, price_decimals=2)) as sim:
        async with recording(clean_questdb, tmp_path, sim):
            await asyncio.sleep(4.0)
        journal = sim.journal
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        reasons = {r for (r,) in conn.execute("SELECT DISTINCT reason FROM gaps").fetchall()}
    assert "snapshot_mismatch" not in reasons, reasons
    checked = await final_books_match(clean_questdb, journal)
    assert checked >= 4, checked


async def test_channel_error_abrupt_disconnect_unknown_keys_and_maintenance(clean_questdb,
                                                                           tmp_path):
    """Error 10 (subscription killed, socket open), a TCP abort without close frame,
    unknown keys and a maintenance pause: each is survived, the first two are recorded
    gaps, and the books outside gaps are the exchange's."""
    async with SimServer(SimConfig(markets=8, rate=400, seed=33)) as sim:
        async with recording(clean_questdb, tmp_path, sim):
            await asyncio.sleep(1.5)
            await _control(sim.port, "unknown_key", 20)
            await _control(sim.port, "maintenance", 1)
            await asyncio.sleep(1.5)
            await _control(sim.port, "error_10")
            await asyncio.sleep(3.0)
            await _control(sim.port, "abrupt_disconnect")
            await asyncio.sleep(4.0)
        journal = sim.journal
    assert {"unknown_key", "maintenance", "error_10", "abrupt_disconnect"} <= {
        f["what"] for f in journal.faults()}
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        reasons = {r for (r,) in conn.execute("SELECT DISTINCT reason FROM gaps").fetchall()}
        open_gaps = conn.execute("SELECT count() FROM gaps WHERE end_ts IS NULL AND "
                                 "ticker != '*'").fetchone()[0]
    assert {"error_10", "reconnect"} <= reasons, reasons
    assert open_gaps == 0
    checked = await final_books_match(clean_questdb, journal)
    assert checked >= 4, checked


async def test_markets_sharded_across_three_connections(clean_questdb, tmp_path):
    """KTAPE_INGEST_CONNECTIONS=3: three sockets each record their share of the markets
    (lifecycle on one, effects routed to the owner), nothing twice, nothing missing."""
    async with SimServer(SimConfig(markets=30, rate=600, seed=44)) as sim:
        async with recording(clean_questdb, tmp_path, sim, connections=3) as recorder:
            await asyncio.sleep(1.5)
            assert len(sim.clients) == 3
            shares = [len(feed.wanted) for feed in recorder.feeds]
            assert all(shares) and sum(shares) == len(set().union(*(f.wanted
                                                                   for f in recorder.feeds)))
            sim.model.lifecycle_rate = 0.02  # markets close and new ones appear mid-run
            await asyncio.sleep(4.0)
            sim.config.rate = 0
            await asyncio.sleep(1.5)
            ok, health = recorder.health()
            assert ok and health["connections_up"] == 3
        journal = sim.journal
    created = [r for r in journal.records if r["k"] == "life" and r["type"] == "created"]
    assert created, "no market appeared mid-run"
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        stored_created = conn.execute("SELECT count() FROM lifecycle WHERE event_type = "
                                      "'created'").fetchone()[0]
        recorded_new = {t for (t,) in conn.execute(
            "SELECT DISTINCT ticker FROM book_changes").fetchall()}
        stored_trades = conn.execute("SELECT trade_id, ts FROM trades").fetchall()
    assert stored_created == len(created)  # lifecycle once (one connection follows it)
    new_with_changes = {r["m"] for r in created
                        if any(c["k"] == "chg" for c in journal.changes(r["m"]))}
    assert new_with_changes <= recorded_new  # each new market recorded by its owner
    # every trade once, from the moment the trade subscription began
    first_ms = min(int(ts.replace(tzinfo=dt.UTC).timestamp() * 1000) for _, ts in stored_trades)
    expected_trades = {t["id"] for t in journal.trades() if t["t"] >= first_ms}
    assert len(stored_trades) == len({tid for tid, _ in stored_trades})
    assert {tid for tid, _ in stored_trades} == expected_trades
    checked = await final_books_match(clean_questdb, journal)
    assert checked >= 20, checked
