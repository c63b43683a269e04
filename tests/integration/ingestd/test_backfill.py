"""`ktape backfill` against the simulator's REST API and a real QuestDB."""

from __future__ import annotations

from ingestd.backfill import _run
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
