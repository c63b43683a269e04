"""`ktape backfill` against the simulator's REST API and a real QuestDB."""

from __future__ import annotations

from ingestd.backfill import STATUSES, _run
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig, SimServer


async def test_backfill_writes_series_events_and_every_market_idempotently(
        clean_questdb, tmp_path, monkeypatch):
    async with SimServer(SimConfig(markets=1200, rate=0, seed=4)) as sim:
        for key, value in {**clean_questdb.env(), "KTAPE_DATA_DIR": str(tmp_path),
                           "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{sim.port}/trade-api/v2",
                           "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2",
                           }.items():
            monkeypatch.setenv(key, value)
        assert await _run(["open"]) == 0
        assert await _run(["open"]) == 0  # re-run: no duplicates in the latest view
        expected_markets = len(sim.model.markets)
        expected_events = len(sim.model.events)
        expected_series = len(sim.model.series)
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        markets = conn.execute(
            "SELECT count() FROM (SELECT * FROM markets LATEST ON ts PARTITION BY ticker)"
        ).fetchone()[0]
        events = conn.execute(
            "SELECT count() FROM (SELECT * FROM events LATEST ON ts PARTITION BY event_ticker)"
        ).fetchone()[0]
        series = conn.execute("SELECT count_distinct(series_ticker) FROM series").fetchone()[0]
    assert markets == expected_markets  # more than one REST page (limit 1000)
    assert events == expected_events
    assert series == expected_series


async def test_candles_backfill_for_markets_never_recorded(clean_questdb, tmp_path, monkeypatch):
    import asyncio
    import datetime as dt

    from ktape.sim.candles import candlesticks

    async with SimServer(SimConfig(markets=6, rate=400, seed=12)) as sim:
        await asyncio.sleep(2.5)  # a journal with trades and quote changes
        sim.config.rate = 0
        await asyncio.sleep(0.2)
        recorded = next(t for t, m in sorted(sim.model.markets.items()) if m.status == "active")
        with clean_questdb.connect() as conn:  # one market ktape recorded live: skipped
            now = dt.datetime.now(dt.UTC)
            conn.execute("INSERT INTO book_checkpoints (ts, ticker, reason, seq, sid, recv_ts, "
                         "ts_source, yes_levels, no_levels) VALUES (%s, %s, 'snapshot', 1, 1, "
                         "%s, 'receive', '', '')", (now, recorded, now))
            wait_for_wal(conn)
        for key, value in {**clean_questdb.env(), "KTAPE_DATA_DIR": str(tmp_path),
                           "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{sim.port}/trade-api/v2",
                           "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2",
                           }.items():
            monkeypatch.setenv(key, value)
        now_s = int(dt.datetime.now(dt.UTC).timestamp())
        monkeypatch.setattr("ingestd.backfill.now_us", lambda: now_s * 1_000_000)
        assert await _run(list(STATUSES), candles=True, period=1, since_days=1) == 0
        assert await _run(list(STATUSES), candles=True, period=1, since_days=1) == 0  # resumes
        expected = {t: candlesticks(sim.journal, t, now_s - 86_400,
                                    min(now_s + 60, m.close_ms // 1000 + 60), 1)
                    for t, m in sim.model.markets.items() if t != recorded}
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        rows = conn.execute("SELECT ticker, ts, price_close_e4, volume_e2, yes_bid_close_e4 "
                            "FROM kalshi_candles WHERE period_min = 1 ORDER BY ticker, ts"
                            ).fetchall()
    got: dict[str, list] = {}
    for ticker, ts, close, volume, bid in rows:
        got.setdefault(ticker, []).append(
            (int(ts.replace(tzinfo=dt.UTC).timestamp()), close, volume, bid))
    assert recorded not in got
    assert set(got) == set(expected)
    for ticker, candles in expected.items():
        want = [(c["end_period_ts"],
                 int(c["price"]["close_dollars"].replace(".", "")) if c["price"]["close_dollars"]
                 else None,
                 int(c["volume_fp"].replace(".", "")),
                 int(c["yes_bid"]["close_dollars"].replace(".", ""))
                 if c["yes_bid"]["close_dollars"] else None) for c in candles]
        assert got[ticker] == want, ticker  # once each, despite the second run
    # queryd serves them for those markets, marked as Kalshi's.
    import psycopg

    from queryd.candles import candles as list_candles

    ticker = next(t for t, c in expected.items() if any(x["price"]["open_dollars"] for x in c))
    async with await psycopg.AsyncConnection.connect(clean_questdb.conninfo,
                                                     autocommit=True) as conn:
        served = (await list_candles(
            conn, ticker, dt.datetime.fromtimestamp(now_s - 3600, dt.UTC),
            dt.datetime.fromtimestamp(now_s + 60, dt.UTC), "1m")).candles
    with_trades = [c for c in expected[ticker] if c["price"]["close_dollars"]]
    assert [(c.close, c.volume, c.source) for c in served] == [
        (x["price"]["close_dollars"], x["volume_fp"], "kalshi") for x in with_trades]
