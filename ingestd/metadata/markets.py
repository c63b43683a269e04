"""Market rows: one version per change, from REST discovery, lifecycle events and the
clock (Kalshi sends no event when a market opens or closes, PROTOCOL.md §7).

Every row is keyed (ts, ticker) and readers take the latest per ticker (`LATEST ON`), so
each version carries every column of the one before, and re-writing is harmless.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from typing import Any

import orjson

from ingestd.kalshi.normalize import NormalizeError, price_e4
from ingestd.sink import RowSink, TimestampMicros
from ktape.clock import rfc3339_us
from ktape.log import get_logger

log = get_logger(__name__)


OPEN_STATUSES = ("active", "inactive")  # they become `closed` at close_time, with no event
# How far along its lifecycle a status is: a market never moves back (a reopening moves
# closed → active, but only by its own `activated` event).
LIFECYCLE_RANK = {"initialized": 0, "active": 1, "inactive": 1, "closed": 2, "determined": 3,
                  "disputed": 3, "amended": 3, "finalized": 4}


def series_of(market: dict[str, Any]) -> str:
    """A market's series: `series_ticker`, else the event ticker's first part."""
    return str(market.get("series_ticker") or str(market.get("event_ticker", "")).split("-")[0])


def created_market(ticker: str, msg: dict[str, Any], now: int) -> dict[str, Any]:
    """A REST-shaped market object from a lifecycle `created` event (§5.9), so a market
    born while we record is recorded like one discovered over REST."""
    meta = msg.get("additional_metadata") or {}
    opens = msg.get("open_ts")
    opened = type(opens) is int and opens * 1_000_000 <= now
    return {"ticker": ticker, "event_ticker": meta.get("event_ticker", ""),
            "title": meta.get("title", ""), "yes_sub_title": meta.get("yes_sub_title", ""),
            "no_sub_title": meta.get("no_sub_title", ""),
            "status": "active" if opened else "initialized",
            "price_level_structure": msg.get("price_level_structure", ""),
            "price_ranges": msg.get("price_ranges") or [],
            "open_ts": opens, "close_ts": msg.get("close_ts")}


def _iso_us(value: Any) -> int | None:
    """An RFC 3339 REST time in µs; None when absent or not a time."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return rfc3339_us(value)
    except ValueError:
        return None


def _secs_us(value: Any) -> int | None:
    """Unix seconds (lifecycle `*_ts`) in µs; None unless a real integer."""
    return value * 1_000_000 if type(value) is int else None


@dataclass
class MarketRow:
    """One version of a market as the `markets` table holds it (ktape/schema/tables.py).

    Why a value of our own rather than the REST object: a market's row is written from
    REST discovery, from lifecycle events and from the clock (Kalshi sends no event when
    a market opens or closes, §7), and each later version must carry every column of the
    one before, since readers take the latest row per ticker.
    """

    ticker: str
    event_ticker: str = ""
    series_ticker: str = ""
    status: str = ""
    market_type: str = ""
    title: str = ""
    subtitle: str = ""
    yes_sub_title: str = ""
    no_sub_title: str = ""
    open_us: int | None = None
    close_us: int | None = None
    expiration_us: int | None = None
    result: str = ""
    price_level_structure: str = ""
    price_ranges: str = "[]"  # JSON text, as Kalshi sends it
    raw: str = "{}"  # the REST (or lifecycle `created`) object this row started from
    settlement_value_e4: int | None = None
    determination_us: int | None = None
    settlement_us: int | None = None

    @classmethod
    def from_market(cls, market: dict[str, Any], series_ticker: str) -> MarketRow:
        """From a REST market object (or one built from a lifecycle `created`)."""
        value = market.get("settlement_value_dollars")
        return cls(
            ticker=str(market["ticker"]), event_ticker=str(market.get("event_ticker") or ""),
            series_ticker=series_ticker, status=str(market.get("status") or ""),
            market_type=str(market.get("market_type") or ""),
            title=str(market.get("title") or ""), subtitle=str(market.get("subtitle") or ""),
            yes_sub_title=str(market.get("yes_sub_title") or ""),
            no_sub_title=str(market.get("no_sub_title") or ""),
            open_us=_iso_us(market.get("open_time")) or _secs_us(market.get("open_ts")),
            close_us=_iso_us(market.get("close_time")) or _secs_us(market.get("close_ts")),
            expiration_us=_iso_us(market.get("latest_expiration_time")),
            result=str(market.get("result") or ""),
            price_level_structure=str(market.get("price_level_structure") or ""),
            price_ranges=orjson.dumps(market.get("price_ranges") or []).decode(),
            raw=orjson.dumps(market).decode(),
            settlement_value_e4=_price_or_none(value),
            settlement_us=(_iso_us(market.get("settlement_ts"))
                           or _secs_us(market.get("settlement_ts"))))


def _price_or_none(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return price_e4(value)
    except NormalizeError:
        log.warning("market.bad_settlement_value", value=value[:40])
        return None


def write_market(sink: RowSink, row: MarketRow, at_us: int, source: str) -> None:
    """One `markets` row: this version of the market, as of `at_us` (our clock)."""
    columns: dict[str, Any] = {
        "title": row.title, "subtitle": row.subtitle, "yes_sub_title": row.yes_sub_title,
        "no_sub_title": row.no_sub_title, "price_ranges": row.price_ranges, "raw": row.raw}
    for column, value in (("open_time", row.open_us), ("close_time", row.close_us),
                          ("expiration_time", row.expiration_us),
                          ("determination_time", row.determination_us),
                          ("settlement_time", row.settlement_us)):
        if value is not None:
            columns[column] = TimestampMicros(value)
    if row.settlement_value_e4 is not None:
        columns["settlement_value_e4"] = row.settlement_value_e4
    sink.row("markets", symbols={
        "ticker": row.ticker, "event_ticker": row.event_ticker,
        "series_ticker": row.series_ticker, "status": row.status,
        "market_type": row.market_type, "result": row.result,
        "price_level_structure": row.price_level_structure, "source": source},
        columns=columns, at_us=at_us)


class MarketRows:
    """Every recorded market's current row, kept following its lifecycle.

    Status follows Kalshi's lifecycle (PROTOCOL.md §7): `created` → initialized (active
    once its open time has come), `deactivated` → inactive, `activated` → active,
    `determined` → determined (result, settlement value, determination time), `settled`
    → finalized (settlement time); open and close have no event, so the clock moves an
    initialized market to active at `open_time` and an active or inactive one to closed
    at `close_time` (`close_date_updated` moves that time). Each change writes the whole
    row again (`write_market`) at our clock, strictly later than the market's last row.
    Shared by every connection of one recorder: lifecycle arrives on one of them.
    """

    def __init__(self, sink: RowSink) -> None:
        self.sink = sink
        self.rows: dict[str, MarketRow] = {}
        # Finalized is terminal: such markets are remembered by ticker only, so a repeated
        # `settled` (§5.9) changes nothing and memory does not grow with every row.
        self.finalized: set[str] = set()
        self._last_us: dict[str, int] = {}
        self._due: list[tuple[int, str]] = []  # (time, ticker) of a possible clock change

    def known(self, ticker: str) -> bool:
        return ticker in self.rows or ticker in self.finalized

    def record(self, row: MarketRow, source: str, now: int) -> None:
        """Write `row` as the market's current version and remember it."""
        last = self._last_us.get(row.ticker)
        at = now if last is None or now > last else last + 1
        self._last_us[row.ticker] = at
        write_market(self.sink, row, at, source)
        if row.status == "finalized":
            self.rows.pop(row.ticker, None)
            self.finalized.add(row.ticker)
            return
        self.finalized.discard(row.ticker)
        self.rows[row.ticker] = row
        self._schedule(row)
        if self._clock_change(row, now):  # already due (e.g. created after its open time)
            self.tick(now)

    def unfinished(self) -> list[str]:
        """Tickers of the markets followed that are not finalized."""
        return sorted(self.rows)

    def catch_up(self, rest: MarketRow, now: int) -> bool:
        """A REST version of a market followed before a restart: taken when it is further
        along the lifecycle than the stored row (events sent while nobody recorded are
        lost; REST status lags, never leads, so it cannot move a market back)."""
        stored = self.rows.get(rest.ticker)
        if stored is None or (LIFECYCLE_RANK.get(rest.status, -1)
                              <= LIFECYCLE_RANK.get(stored.status, -1)):
            return False
        merged = replace(
            rest, series_ticker=rest.series_ticker or stored.series_ticker,
            settlement_value_e4=(rest.settlement_value_e4 if rest.settlement_value_e4
                                 is not None else stored.settlement_value_e4),
            determination_us=stored.determination_us,
            settlement_us=rest.settlement_us or stored.settlement_us)
        log.info("market.status_changed", ticker=rest.ticker, status=rest.status,
                 was=stored.status, source="rest_catch_up")
        self.record(merged, "rest", now)
        return True

    def load(self, rows: list[MarketRow], last_us: dict[str, int]) -> None:
        """Rows recorded before this process started (no write: they are stored)."""
        for row in rows:
            self._last_us[row.ticker] = last_us.get(row.ticker, 0)
            if row.status == "finalized":
                self.finalized.add(row.ticker)
                continue
            self.rows[row.ticker] = row
            self._schedule(row)

    def _schedule(self, row: MarketRow) -> None:
        when = (row.open_us if row.status == "initialized"
                else row.close_us if row.status in OPEN_STATUSES else None)
        if when is not None:
            heapq.heappush(self._due, (when, row.ticker))

    @staticmethod
    def _clock_change(row: MarketRow, now: int) -> str | None:
        """The status the clock gives the market now, if it differs."""
        if row.status == "initialized" and row.open_us is not None and row.open_us <= now:
            return "closed" if row.close_us is not None and row.close_us <= now else "active"
        if row.status in OPEN_STATUSES and row.close_us is not None and row.close_us <= now:
            return "closed"
        return None

    def tick(self, now: int) -> None:
        """Write the opens and closes whose time has come (no event announces them)."""
        while self._due and self._due[0][0] <= now:
            _, ticker = heapq.heappop(self._due)
            row = self.rows.get(ticker)
            if row is None:
                continue
            status = self._clock_change(row, now)
            if status is not None:
                log.info("market.status_changed", ticker=ticker, status=status, was=row.status,
                         source="clock")
                self.record(replace(row, status=status), "clock", now)

    def on_lifecycle(self, ticker: str, event_type: str, msg: dict[str, Any],
                     now: int) -> None:
        """Apply one `market_lifecycle_v2` event to the market's row (idempotently:
        Kalshi repeats `settled`, §5.9). `created` rows come from REST-shaped objects
        (`record` of `MarketRow.from_market`)."""
        if ticker in self.finalized:
            return  # terminal; a repeated `settled` is expected
        row = self.rows.get(ticker)
        if row is None:
            # Not discovered (it was not open at start-up, or was created while nobody
            # recorded): what the event says is still better than no row.
            log.warning("market.lifecycle_for_unknown_market", ticker=ticker,
                        event_type=event_type)
            row = MarketRow(ticker=ticker, event_ticker=str(msg.get("event_ticker") or ""),
                            status="active")
        new = _apply_event(row, event_type, msg, now)
        if new != row or ticker not in self.rows:
            if new.status != row.status:
                log.info("market.status_changed", ticker=ticker, status=new.status,
                         was=row.status, source=event_type)
            self.record(new, "lifecycle", now)


def _apply_event(row: MarketRow, event_type: str, msg: dict[str, Any], now: int) -> MarketRow:
    """The market's row after one lifecycle event (a new value; `row` is not changed)."""
    if event_type == "activated":
        return replace(row, status="active")
    if event_type == "deactivated":
        return replace(row, status="inactive")
    if event_type == "close_date_updated":
        close = _secs_us(msg.get("close_ts"))
        return row if close is None else replace(row, close_us=close)
    if event_type == "determined":
        value = msg.get("settlement_value")
        return replace(row, status="determined", result=str(msg.get("result") or row.result),
                       settlement_value_e4=_price_or_none(value) if value is not None
                       else row.settlement_value_e4,
                       determination_us=_secs_us(msg.get("determination_ts")) or now)
    if event_type == "settled":
        return replace(row, status="finalized",
                       settlement_us=_secs_us(msg.get("settled_ts")) or row.settlement_us or now)
    if event_type == "price_level_structure_updated":
        return replace(row, price_level_structure=str(msg.get("price_level_structure")
                                                      or row.price_level_structure),
                       price_ranges=orjson.dumps(msg.get("price_ranges") or []).decode()
                       if msg.get("price_ranges") else row.price_ranges)
    if event_type == "metadata_updated":
        return replace(row, yes_sub_title=str(msg.get("yes_sub_title") or row.yes_sub_title))
    return row
