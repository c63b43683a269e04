"""The markets one connection records, and what Kalshi's lifecycle events do to them.

A market is wanted when KTAPE_MARKETS matches it (REST discovery, or a `created` event);
its known close time and a pending reactivation go to the book recorder (they decide
whether an empty snapshot is expected); a settled market is dropped from the book
subscription (Kalshi may not drop it, PROTOCOL.md §5.6). Its `markets` rows are
ingestd/metadata.py's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ingestd.kalshi.subscriptions import Subscriptions
from ingestd.metadata import MarketRow, MarketRows, created_market, series_of
from ingestd.recorder import BookRecorder
from ktape.clock import now_us
from ktape.config import MarketFilter

# What a change of the market set does to the subscriptions that list markets.
MarketsChange = tuple[str, list[str]]  # (add_markets | delete_markets, tickers)


class MarketSet:
    def __init__(self, markets: MarketFilter, wanted: set[str], market_rows: MarketRows,
                 recorder: BookRecorder, subscriptions: Subscriptions) -> None:
        self.filter = markets
        self.wanted = wanted
        self.market_rows = market_rows
        self.recorder = recorder
        self.subscriptions = subscriptions

    def add(self, markets: Iterable[dict[str, Any]], source: str = "rest") -> list[str]:
        """Record markets (REST-shaped objects); returns the tickers newly wanted."""
        added: list[str] = []
        for market in markets:
            ticker = market.get("ticker")
            if not isinstance(ticker, str):
                continue
            series = series_of(market)
            if not self.filter.matches(ticker, series):
                continue
            row = MarketRow.from_market(market, series)
            if row.close_us is not None:
                self.recorder.closes_at(ticker, row.close_us)
            if ticker not in self.wanted:
                self.wanted.add(ticker)
                added.append(ticker)
            self.market_rows.record(row, source, now_us())
        return added

    def apply_lifecycle(self, ticker: str, event_type: str, msg: dict[str, Any],
                        ts_us: int) -> MarketsChange | None:
        """Close times, a pending reactivation wipe, a new market to record, a settled one
        to drop. Returns the change for the market-wide subscriptions that list markets."""
        if event_type == "activated":
            self.recorder.reactivated(ticker, ts_us)
        if event_type in ("created", "close_date_updated") and type(msg.get("close_ts")) is int:
            self.recorder.closes_at(ticker, msg["close_ts"] * 1_000_000)
        if event_type == "created":
            added = self.add([created_market(ticker, msg, now_us())], source="lifecycle")
            for new in added:
                self.recorder.track(new)
            if added:
                self.subscriptions.spawn(self.subscriptions.update_books("add_markets", added))
                return "add_markets", added
        elif event_type == "settled" and ticker in self.wanted:
            self.wanted.discard(ticker)
            self.recorder.forget(ticker)
            self.subscriptions.spawn(self.subscriptions.update_books("delete_markets", [ticker]))
            return "delete_markets", [ticker]
        return None
