"""The markets a restarted recorder was following, as it last wrote them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ingestd.metadata.markets import MarketRow
from ktape.clock import datetime_us

# The latest row of every market, for a restarted recorder.
MARKETS_TO_FOLLOW = """
SELECT ts, ticker, event_ticker, series_ticker, status, market_type, title, subtitle,
       yes_sub_title, no_sub_title, open_time, close_time, expiration_time, result,
       price_level_structure, price_ranges, raw, settlement_value_e4, determination_time,
       settlement_time
FROM markets LATEST ON ts PARTITION BY ticker
"""


def stored_market_rows(conn: Any) -> tuple[list[MarketRow], dict[str, int]]:
    """Rows written before this process started, and each one's `ts` (µs)."""
    def us(value: dt.datetime | None) -> int | None:
        return None if value is None else datetime_us(value)

    rows: list[MarketRow] = []
    last: dict[str, int] = {}
    for (ts, ticker, event, series, status, mtype, title, subtitle, yes_sub, no_sub, open_,
         close, expiration, result, structure, ranges, raw, value, determined,
         settled) in conn.execute(MARKETS_TO_FOLLOW).fetchall():
        rows.append(MarketRow(
            str(ticker), event or "", series or "", status or "", mtype or "", title or "",
            subtitle or "", yes_sub or "", no_sub or "", us(open_), us(close), us(expiration),
            result or "", structure or "", ranges or "[]", raw or "{}",
            None if value is None else int(value), us(determined), us(settled)))
        last[str(ticker)] = us(ts) or 0
    return rows, last
