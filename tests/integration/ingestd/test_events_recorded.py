"""A real ingestd recording the simulator stores Kalshi-like events: each event row with its
`mutually_exclusive` flag, and every one of its markets in `markets`, linked by
`event_ticker` and carrying Kalshi's strike fields in the stored REST object (issue 18,
item 0: what event-wide queries will read)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import orjson

from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig
from tests.fixtures.recording import recorded_simulator


def _stored(questdb) -> tuple[dict[str, bool], dict[str, tuple[str, dict]]]:
    """The latest `events` rows (event -> mutually_exclusive) and `markets` rows (ticker ->
    (event_ticker, raw object))."""
    with questdb.connect() as conn:
        wait_for_wal(conn)
        events = {str(name): bool(flag) for name, flag in conn.execute(
            "SELECT event_ticker, mutually_exclusive FROM events "
            "LATEST ON ts PARTITION BY event_ticker").fetchall()}
        markets = {str(ticker): (str(event), orjson.loads(raw)) for ticker, event, raw in
                   conn.execute("SELECT ticker, event_ticker, raw FROM markets "
                                "LATEST ON ts PARTITION BY ticker").fetchall()}
    return events, markets


async def test_a_recording_stores_each_event_with_all_its_markets(clean_questdb, tmp_path):
    config = SimConfig(markets=40, rate=100, seed=17)
    async with recorded_simulator(clean_questdb, tmp_path, config) as (_recorder, sim):
        model = sim.model
        initial = {name: list(e.tickers) for name, e in model.events.items()}
        deadline = time.monotonic() + 30
        while True:
            events, markets = _stored(clean_questdb)
            if set(initial) <= set(events) and all(t in markets for ts in initial.values()
                                                     for t in ts):
                break
            assert time.monotonic() < deadline, (sorted(events), len(markets))
            await asyncio.sleep(0.5)
    sizes = []
    for name, exclusive in events.items():
        event = model.events[name]
        assert exclusive is event.mutually_exclusive, name
        recorded = sorted(t for t, (owner, _) in markets.items() if owner == name)
        assert recorded == sorted(event.tickers), name  # every market, linked to its event
        sizes.append(len(recorded))
    assert {events[name] for name in initial} == {True, False}
    assert sum(size >= 3 for size in sizes) >= 5 and sum(sizes) >= 40
    for ticker in (t for ts in initial.values() for t in ts):  # discovered over REST
        market = model.markets[ticker]
        raw = markets[ticker][1]
        assert raw.get("strike_type", "") == market.strike_type, ticker
        for key in ("floor_strike", "cap_strike"):
            want = getattr(market, key)
            assert (Decimal(str(raw[key])) if key in raw else None) == want, (ticker, key)
