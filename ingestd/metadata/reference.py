"""Series and event rows from Kalshi REST: written at start-up (so queries have events and
series from the first minute) and by `ktape backfill`; re-running is harmless.
"""

from __future__ import annotations

from typing import Any

import orjson

from ingestd.kalshi.rest import KalshiRest
from ingestd.sink import RowSink
from ktape.log import get_logger

log = get_logger(__name__)


def write_event(sink: RowSink, event: dict[str, Any], at_us: int, source: str) -> None:
    sink.row("events", symbols={
        "event_ticker": str(event["event_ticker"]),
        "series_ticker": str(event.get("series_ticker") or ""),
        "category": str(event.get("category") or ""), "source": source},
        columns={"title": event.get("title") or "", "sub_title": event.get("sub_title") or "",
                 "mutually_exclusive": bool(event.get("mutually_exclusive", False)),
                 "raw": orjson.dumps(event).decode()}, at_us=at_us)


def write_series(sink: RowSink, series: dict[str, Any], at_us: int, source: str) -> None:
    sink.row("series", symbols={
        "series_ticker": str(series["ticker"]), "category": str(series.get("category") or ""),
        "frequency": str(series.get("frequency") or ""), "source": source},
        columns={"title": series.get("title") or "", "raw": orjson.dumps(series).decode()},
        at_us=at_us)


async def record_reference_data(rest: KalshiRest, sink: RowSink, at_us: int,
                                source: str = "rest") -> dict[str, int]:
    """Write every series and event; returns counts."""
    series = await rest.series()
    for item in series:
        if isinstance(item.get("ticker"), str):
            write_series(sink, item, at_us, source)
    events = await rest.events()
    for item in events:
        if isinstance(item.get("event_ticker"), str):
            write_event(sink, item, at_us, source)
    log.info("reference.recorded", series=len(series), events=len(events))
    return {"series": len(series), "events": len(events)}
