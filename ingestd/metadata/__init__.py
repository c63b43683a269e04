"""Reference data into QuestDB: market, event and series rows (issue 14: all of them
here). Markets come from Kalshi REST, the lifecycle channel and the clock
(`markets.py`); series and events from REST (`reference.py`). Shared by live recording
and `ktape backfill`.
"""

from ingestd.metadata.markets import (
    LIFECYCLE_RANK,
    OPEN_STATUSES,
    MarketRow,
    MarketRows,
    created_market,
    series_of,
    write_market,
)
from ingestd.metadata.reference import record_reference_data, write_event, write_series
from ingestd.metadata.stored import stored_market_rows

__all__ = ["LIFECYCLE_RANK", "OPEN_STATUSES", "MarketRow", "MarketRows", "created_market",
           "record_reference_data", "series_of", "stored_market_rows", "write_event",
           "write_market", "write_series"]
