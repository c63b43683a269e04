"""The market set of one connection: the filter, close times, created and settled."""

from __future__ import annotations

import asyncio

from ingestd.kalshi.markets import MarketSet
from ingestd.kalshi.subscriptions import Subscriptions
from ingestd.metadata import MarketRows
from ingestd.recorder import BookRecorder
from ktape.config import MarketFilter
from tests.unit.ingestd.kalshi.test_subscriptions import Connection
from tests.unit.ingestd.test_recorder import Rows


def _market_set(markets: MarketFilter) -> tuple[MarketSet, Connection, BookRecorder, Rows]:
    rows, connection = Rows(), Connection()
    recorder = BookRecorder(rows)  # type: ignore[arg-type]
    subs = Subscriptions(connection, recorder)  # type: ignore[arg-type]
    subs.book_sid = 3
    return (MarketSet(markets, subs.wanted, MarketRows(rows), recorder, subs),  # type: ignore[arg-type]
            connection, recorder, rows)


async def test_rest_markets_are_filtered_and_their_close_times_known():
    markets, _, recorder, rows = _market_set(MarketFilter(all=False, series=("KXA",)))
    added = markets.add([{"ticker": "KXA-1", "event_ticker": "KXA-E",
                          "close_time": "2030-01-01T00:00:00Z"},
                         {"ticker": "KXB-1", "event_ticker": "KXB-E"}, {"no": "ticker"}])
    assert added == ["KXA-1"] and markets.wanted == {"KXA-1"}
    assert recorder.close_us["KXA-1"] == 1_893_456_000_000_000
    assert [r[1]["ticker"] for r in rows.table("markets")] == ["KXA-1"]
    assert markets.add([{"ticker": "KXA-1", "event_ticker": "KXA-E"}]) == []  # known


async def test_created_is_recorded_and_subscribed_settled_is_dropped():
    markets, connection, recorder, _ = _market_set(MarketFilter(all=True))
    change = markets.apply_lifecycle("KX-NEW", "created", {
        "open_ts": 1, "close_ts": 2_000_000_000,
        "additional_metadata": {"event_ticker": "KX-E"}}, 5)
    assert change == ("add_markets", ["KX-NEW"])
    assert "KX-NEW" in recorder.books and recorder.close_us["KX-NEW"] == 2_000_000_000_000_000
    assert markets.apply_lifecycle("KX-NEW", "activated", {}, 9) is None
    assert recorder.reactivated_us["KX-NEW"] == 9
    assert markets.apply_lifecycle("KX-NEW", "settled", {}, 10) == ("delete_markets",
                                                                   ["KX-NEW"])
    assert "KX-NEW" not in recorder.books and not markets.wanted
    await asyncio.sleep(0)
    assert [c[2]["action"] for c in connection.sent] == ["add_markets", "delete_markets"]
