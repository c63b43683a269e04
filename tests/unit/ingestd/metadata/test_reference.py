"""Series and events from REST into rows, each whole (raw) and skipped when keyless."""

from __future__ import annotations

import orjson

from ingestd.metadata.reference import record_reference_data
from tests.unit.ingestd.test_recorder import Rows


class Rest:
    async def series(self) -> list[dict]:
        return [{"ticker": "KXHIGHCHI", "category": "Climate", "frequency": "daily",
                 "title": "Chicago high"}, {"no_ticker": True}]

    async def events(self) -> list[dict]:
        return [{"event_ticker": "KXHIGHCHI-26NOV24", "series_ticker": "KXHIGHCHI",
                 "mutually_exclusive": True, "title": "High on Nov 24"}]


async def test_series_and_events_are_written_whole():
    sink = Rows()
    counts = await record_reference_data(Rest(), sink, 7, source="backfill")  # type: ignore[arg-type]
    assert counts == {"series": 2, "events": 1}
    series, event = sink.rows
    assert series[0] == "series" and series[1]["series_ticker"] == "KXHIGHCHI"
    assert series[1]["source"] == "backfill" and series[3] == 7
    assert event[0] == "events" and event[2]["mutually_exclusive"] is True
    assert orjson.loads(event[2]["raw"])["title"] == "High on Nov 24"
