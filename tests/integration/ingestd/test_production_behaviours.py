"""What production Kalshi does that the simulator did not (PROTOCOL.md §5.11), each
switched on in the simulator, against the real ingestd and QuestDB, judged by the
journal: books outside recorded gaps are the exchange's, and a fault's span is GAP."""

from __future__ import annotations

import asyncio
import datetime as dt

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ingestd import metrics
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig, SimServer
from queryd.orderbook import Continuity, orderbook_at
from tests.integration.ingestd.test_outages import _compare_with_journal
from tests.integration.ingestd.test_record_against_journal import (
    _control,
    final_books_match,
    recording,
)


async def test_server_unsubscribe_then_a_reused_sid(clean_questdb, tmp_path):
    """The venue ends the book subscription on its own, and hands its sid number to the
    next subscription: every market is in a gap from that moment until re-snapshotted on
    the new subscription (whose seq restarts at 1), never CONTINUOUS on a silent one."""
    async with SimServer(SimConfig(markets=8, rate=400, seed=57, reuse_sids=True)) as sim:
        sim.model.lifecycle_rate = 0  # the same eight markets throughout
        async with recording(clean_questdb, tmp_path, sim) as recorder:
            await asyncio.sleep(2.0)
            old_sid = recorder.feed.subscriptions.book_sid
            await _control(sim.port, "unsubscribe")
            await asyncio.sleep(3.0)
            assert recorder.feed.subscriptions.book_sid == old_sid  # the same number, a new subscription
            await _control(sim.port, "unsubscribe")  # and once more on the reused sid
            await asyncio.sleep(3.0)
        journal = sim.journal
    assert [f["what"] for f in journal.faults()].count("unsubscribe") == 2
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        gaps = conn.execute("SELECT ticker, start_ts, end_ts FROM gaps "
                            "WHERE reason = 'unsubscribed'").fetchall()
        open_gaps = conn.execute("SELECT count() FROM gaps WHERE end_ts IS NULL AND "
                                 "ticker != '*'").fetchone()[0]
    assert len({t for t, _, _ in gaps}) == 8 and len(gaps) == 16  # every market, twice
    assert open_gaps == 0  # each healed by the new subscription's snapshot
    async with await psycopg.AsyncConnection.connect(clean_questdb.conninfo,
                                                     autocommit=True) as conn:
        for ticker, start, end in gaps:
            middle = start + (end - start) / 2
            result = await orderbook_at(conn, ticker, middle.replace(tzinfo=dt.UTC))
            assert result.continuity is Continuity.GAP, (ticker, middle)
    assert await _compare_with_journal(clean_questdb.conninfo, journal, samples=30) > 100
    assert await final_books_match(clean_questdb, journal) >= 6


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
async def test_signed_handshake_with_an_rsa_or_an_ed25519_key(clean_questdb, tmp_path,
                                                             key_type):
    """PROTOCOL.md §2: production recorders sign with Ed25519 keys as well as RSA; the key
    type comes from the PEM. The simulator answers an unsigned or badly signed upgrade 401,
    so recording at all proves the signature."""
    key = (ed25519.Ed25519PrivateKey.generate() if key_type == "ed25519"
           else rsa.generate_private_key(public_exponent=65537, key_size=2048))
    private, public = tmp_path / "key.pem", tmp_path / "pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    env = {"KTAPE_KALSHI_KEY_ID": "key-1", "KTAPE_KALSHI_PRIVATE_KEY": str(private)}
    async with SimServer(SimConfig(markets=4, rate=200, seed=3, public_key_path=public)) as sim:
        async with recording(clean_questdb, tmp_path / "data", sim, env=env) as recorder:
            await asyncio.sleep(2.0)
            assert recorder.feed.connection.connected
            assert recorder.feed.connection.signer is not None
            assert recorder.feed.connection.signer.key_type == key_type
        journal = sim.journal
    assert await final_books_match(clean_questdb, journal) >= 3


def _reconnects() -> float:
    return metrics.REGISTRY.get_sample_value("ingestd_reconnects_total") or 0.0


async def _gaps_of(questdb, reason: str) -> list[tuple[str, dt.datetime, dt.datetime | None]]:
    with questdb.connect() as conn:
        wait_for_wal(conn)
        return conn.execute("SELECT ticker, start_ts, end_ts FROM gaps WHERE reason = %s",
                            (reason,)).fetchall()


async def test_a_silent_connection_is_reconnected_with_a_gap(clean_questdb, tmp_path):
    """The socket stays open but nothing comes, not even a ping (PROTOCOL.md §5.11
    liveness): after `liveness_secs` ingestd reconnects, and the silent span is a gap."""
    async with SimServer(SimConfig(markets=6, rate=300, seed=61)) as sim:
        sim.model.lifecycle_rate = 0
        before = _reconnects()
        async with recording(clean_questdb, tmp_path, sim, liveness_secs=1.5):
            await asyncio.sleep(2.0)
            await _control(sim.port, "silence")
            silenced_at = dt.datetime.now(dt.UTC)
            await asyncio.sleep(4.0)
            assert _reconnects() == before + 1
        journal = sim.journal
    gaps = await _gaps_of(clean_questdb, "reconnect")
    assert len({t for t, _, _ in gaps}) == 6 and all(end is not None for _, _, end in gaps)
    async with await psycopg.AsyncConnection.connect(clean_questdb.conninfo,
                                                     autocommit=True) as conn:
        for ticker, _start, _end in gaps:  # one second into the silence: a gap
            result = await orderbook_at(conn, ticker, silenced_at + dt.timedelta(seconds=1))
            assert result.continuity is Continuity.GAP, ticker
    assert await _compare_with_journal(clean_questdb.conninfo, journal, samples=30) > 60
    assert await final_books_match(clean_questdb, journal) >= 5


async def test_a_steadily_growing_lag_is_reconnected(clean_questdb, tmp_path):
    """Frames arrive later and later behind their ts_ms (a backlog, §5.11): the lag is
    reported per connection, and once its floor has risen window after window ingestd
    takes a new connection (recorded as a gap) instead of falling further behind."""
    async with SimServer(SimConfig(markets=6, rate=300, seed=62,
                                   lag_growth_ms_per_s=300)) as sim:
        sim.model.lifecycle_rate = 0
        before = _reconnects()
        lags: list[float] = []
        async with recording(clean_questdb, tmp_path, sim, lag_window_secs=0.5,
                             lag_windows=4, lag_growth_secs=0.25) as recorder:
            for _ in range(30):
                await asyncio.sleep(0.2)
                lag = recorder.health()[1]["exchange_lag_secs"][0]
                if lag is not None:
                    lags.append(lag)
            assert _reconnects() >= before + 1
        journal = sim.journal
    assert max(lags) > 0.3  # the growing lag was visible in /healthz (ktape status)
    assert await _gaps_of(clean_questdb, "reconnect")
    assert await _compare_with_journal(clean_questdb.conninfo, journal, samples=30) > 60


async def test_tickers_left_out_are_retried_and_not_reported_recorded(clean_questdb, tmp_path):
    """A subscribe (and then the retry's add_markets) answered without one of the tickers
    (§5.11): that market gets no snapshot and is not recorded — NOT_RECORDED, never a
    book — until a retry with backoff is answered with it."""
    async with SimServer(SimConfig(markets=5, rate=300, seed=63)) as sim:
        sim.model.lifecycle_rate = 0
        await _control(sim.port, "leave_out", 2)  # the first subscribe and the first retry
        before = metrics.REGISTRY.get_sample_value("ingestd_tickers_left_out_total") or 0
        async with recording(clean_questdb, tmp_path, sim) as recorder:
            await asyncio.sleep(0.3)
            assert recorder.health()[1]["markets_left_out"] == 1
            await asyncio.sleep(4.0)
            assert recorder.health()[1]["markets_left_out"] == 0
        journal = sim.journal
    left = [f for f in journal.faults() if f["what"] == "leave_out"]
    assert len(left) == 2 and left[0]["ticker"] == left[1]["ticker"]
    ticker = left[0]["ticker"]
    assert (metrics.REGISTRY.get_sample_value("ingestd_tickers_left_out_total") or 0) == before + 2
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        first = conn.execute("SELECT min(ts) FROM book_checkpoints WHERE ticker = %s",
                             (ticker,)).fetchone()[0]
        others = conn.execute("SELECT min(ts) FROM book_checkpoints WHERE ticker != %s",
                              (ticker,)).fetchone()[0]
    assert first is not None and first > others  # recorded, from the retry on
    async with await psycopg.AsyncConnection.connect(clean_questdb.conninfo,
                                                     autocommit=True) as conn:
        before_first = (first - dt.timedelta(milliseconds=50)).replace(tzinfo=dt.UTC)
        result = await orderbook_at(conn, ticker, before_first)
        assert result.continuity is Continuity.NOT_RECORDED
    assert await final_books_match(clean_questdb, journal) == 5


async def test_a_second_gap_during_recovery_reconnects(clean_questdb, tmp_path):
    """Two frames lost in quick succession on a lagged feed: the second seq jump comes
    while the first one's snapshots are still on their way. ingestd reconnects (one new
    subscription re-snapshots every book) instead of stacking get_snapshot requests."""
    async with SimServer(SimConfig(markets=6, rate=300, seed=64, delivery_lag_ms=400)) as sim:
        sim.model.lifecycle_rate = 0
        before = _reconnects()
        async with recording(clean_questdb, tmp_path, sim):
            await asyncio.sleep(2.0)
            await _control(sim.port, "drop", channel="orderbook_delta")
            await asyncio.sleep(0.1)  # the first jump is not even seen yet (400 ms lag)
            await _control(sim.port, "drop", channel="orderbook_delta")
            await asyncio.sleep(3.0)
            assert _reconnects() == before + 1
        journal = sim.journal
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        reasons = {r for (r,) in conn.execute("SELECT DISTINCT reason FROM gaps").fetchall()}
        open_gaps = conn.execute("SELECT count() FROM gaps WHERE end_ts IS NULL AND "
                                 "ticker != '*'").fetchone()[0]
    # every book was already in a seq_jump gap when the connection was replaced: those
    # gaps are healed by the new subscription's snapshots (no reconnect rows on top)
    assert "seq_jump" in reasons and open_gaps == 0
    assert len({f["client"] for f in journal.faults() if f["what"] == "drop"}) == 1
    assert await _compare_with_journal(clean_questdb.conninfo, journal, samples=30) > 60


async def test_permessage_deflate_is_offered_and_used_when_accepted(clean_questdb, tmp_path):
    """PROTOCOL.md §5.1: deflate is optional — ingestd offers it, and records the same
    books whether the venue takes it or not (every other test runs without it)."""
    async with SimServer(SimConfig(markets=4, rate=300, seed=65, deflate=True)) as sim:
        async with recording(clean_questdb, tmp_path, sim):
            await asyncio.sleep(2.0)
        journal = sim.journal
        assert sim.extensions_seen == [["permessage-deflate"]]
    assert await final_books_match(clean_questdb, journal) >= 3


async def test_commands_refused_for_rate_are_sent_again(clean_questdb, tmp_path):
    """Error 27 (PROTOCOL.md §5.4, too many requests): the refused commands — here the
    first two subscribes — are sent again after a backoff, and recording proceeds."""
    async with SimServer(SimConfig(markets=4, rate=300, seed=66)) as sim:
        sim.model.lifecycle_rate = 0
        await _control(sim.port, "too_many_requests", 2)
        async with recording(clean_questdb, tmp_path, sim) as recorder:
            await asyncio.sleep(3.0)
            assert sorted(recorder.feed.subscriptions.sids.values()) == [
                "market_lifecycle_v2", "orderbook_delta", "ticker", "trade"]
        journal = sim.journal
    assert [f["what"] for f in journal.faults()].count("too_many_requests") == 2
    assert await final_books_match(clean_questdb, journal) == 4


async def test_a_subscription_over_the_market_cap_records_nothing_as_recorded(clean_questdb,
                                                                            tmp_path):
    """Error 26 (the subscription's market cap) refuses the whole command: no market of
    it is recorded or reported as such, all are counted as left out and asked for again
    (more connections, KTAPE_INGEST_CONNECTIONS, are the way past a cap)."""
    async with SimServer(SimConfig(markets=5, rate=300, seed=67, max_markets_per_sub=3)) as sim:
        async with recording(clean_questdb, tmp_path, sim) as recorder:
            await asyncio.sleep(2.0)
            health = recorder.health()[1]
        journal = sim.journal
    assert health["markets_left_out"] == 5 and health["markets_recorded"] == 0
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        assert conn.execute("SELECT count() FROM book_checkpoints").fetchone()[0] == 0
    assert await final_books_match(clean_questdb, journal) == 0


async def test_book_subscribes_in_batches_are_merged_into_one_subscription(
        clean_questdb, tmp_path, monkeypatch):
    """§5.11 merged re-subscribe: each later batch of the book subscribe is answered `ok`
    with the existing sid and the full ticker list, and snapshots only for the tickers it
    added — every market recorded once, on one subscription, none reported left out."""
    monkeypatch.setattr("ingestd.kalshi.subscriptions.SUBSCRIBE_BATCH", 3)  # 8 markets: 3 subscribes
    async with SimServer(SimConfig(markets=8, rate=300, seed=69)) as sim:
        sim.model.lifecycle_rate = 0
        async with recording(clean_questdb, tmp_path, sim) as recorder:
            await asyncio.sleep(2.5)
            health = recorder.health()[1]
            client = next(iter(sim.clients.values()))
            book_subs = [s for s in client.subs.values() if s.channel == "orderbook_delta"]
        journal = sim.journal
    assert len(book_subs) == 1 and len(book_subs[0].tickers or ()) == 8
    assert health["markets_recorded"] == 8 and health["markets_left_out"] == 0
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        snapshots = conn.execute("SELECT ticker, count() FROM book_checkpoints "
                                 "WHERE reason = 'snapshot' GROUP BY ticker").fetchall()
    assert sorted(n for _, n in snapshots) == [1] * 8  # one snapshot each, none repeated
    assert await final_books_match(clean_questdb, journal) == 8
