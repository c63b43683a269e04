"""Lazy results that page for you (AIP-158), and their columns for DataFrames.

Iterating fetches one page at a time. `to_df()` / `to_polars()` / `to_arrow()` read every
page and build each column directly (a list per column, no dict per row). Prices and sizes
stay exact: Decimal objects in pandas, Decimal128 in Arrow and polars.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

Fetch = Callable[[str], Awaitable[Any]]  # page token -> response
Column = tuple[str, Callable[[Any], Any], str]  # name, extractor, kind


def enum_name(message: Any, field: str, prefix: str) -> str:
    value = getattr(message, field)
    name = message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[value].name
    return name.removeprefix(prefix).lower()


def when(message: Any, field: str) -> dt.datetime | None:
    return getattr(message, field).ToDatetime(dt.UTC) if message.HasField(field) else None


def dec(text: str) -> Decimal | None:
    return Decimal(text) if text else None


class AsyncPages:
    """`async for item in pages`; `await pages.to_df()`."""

    def __init__(self, fetch: Fetch, items: str, columns: list[Column]) -> None:
        self._fetch = fetch
        self._items = items
        self.columns = columns

    async def __aiter__(self) -> AsyncIterator[Any]:
        token = ""
        while True:
            page = await self._fetch(token)
            for item in getattr(page, self._items):
                yield item
            token = getattr(page, "next_page_token", "")
            if not token:
                return

    async def columns_of(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {name: [] for name, _, _ in self.columns}
        getters = [(out[name], get) for name, get, _ in self.columns]
        async for item in self:
            for values, get in getters:
                values.append(get(item))
        return out

    async def to_df(self) -> Any:
        import pandas as pd

        data = await self.columns_of()
        frame = pd.DataFrame({name: pd.Series(values, dtype=_pandas_dtype(kind))
                              for (name, _, kind), values in zip(self.columns, data.values(),
                                                                 strict=True)})
        return frame

    async def to_arrow(self) -> Any:
        import pyarrow as pa

        data = await self.columns_of()
        return pa.table({name: pa.array(values, type=_arrow_type(kind))
                         for (name, _, kind), values in zip(self.columns, data.values(),
                                                            strict=True)})

    async def to_polars(self) -> Any:
        import polars as pl

        return pl.from_arrow(await self.to_arrow())


def _pandas_dtype(kind: str) -> Any:
    return {"time": "datetime64[us, UTC]", "int": "int64", "str": "string", "bool": "bool"}.get(
        kind, "object")  # prices and sizes: Decimal objects, exact


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {"time": pa.timestamp("us", tz="UTC"), "int": pa.int64(), "str": pa.string(),
            "bool": pa.bool_(), "price": pa.decimal128(10, 4),
            "size": pa.decimal128(18, 2)}[kind]


DELTA_COLUMNS: list[Column] = [
    ("ts", lambda d: when(d, "ts"), "time"),
    ("seq", lambda d: d.seq, "int"),
    ("sid", lambda d: d.sid, "int"),
    ("kind", lambda d: enum_name(d, "kind", "DELTA_KIND_"), "str"),
    ("side", lambda d: enum_name(d, "side", "SIDE_"), "str"),
    ("price", lambda d: dec(d.price), "price"),
    ("delta", lambda d: dec(d.delta), "size"),
    ("quantity", lambda d: dec(d.quantity), "size"),
    ("receive_time", lambda d: when(d, "receive_time"), "time"),
    ("gap_reason", lambda d: d.gap.reason if d.HasField("gap") else "", "str"),
]
TRADE_COLUMNS: list[Column] = [
    ("ts", lambda t: when(t, "ts"), "time"),
    ("trade_id", lambda t: t.trade_id, "str"),
    ("yes_price", lambda t: dec(t.yes_price), "price"),
    ("no_price", lambda t: dec(t.no_price), "price"),
    ("count", lambda t: dec(t.count), "size"),
    ("taker_side", lambda t: enum_name(t, "taker_side", "TAKER_SIDE_"), "str"),
    ("is_block_trade", lambda t: t.is_block_trade, "bool"),
]
CANDLE_COLUMNS: list[Column] = [
    ("start_time", lambda c: when(c, "start_time"), "time"),
    ("open", lambda c: dec(c.open), "price"), ("high", lambda c: dec(c.high), "price"),
    ("low", lambda c: dec(c.low), "price"), ("close", lambda c: dec(c.close), "price"),
    ("volume", lambda c: dec(c.volume), "size"),
    ("trade_count", lambda c: c.trade_count, "int"),
]
MARKET_COLUMNS: list[Column] = [
    ("ticker", lambda m: m.ticker, "str"), ("event_ticker", lambda m: m.event_ticker, "str"),
    ("series_ticker", lambda m: m.series_ticker, "str"), ("status", lambda m: m.status, "str"),
    ("title", lambda m: m.title, "str"), ("open_time", lambda m: when(m, "open_time"), "time"),
    ("close_time", lambda m: when(m, "close_time"), "time"),
]
EVENT_COLUMNS: list[Column] = [
    ("event_ticker", lambda e: e.event_ticker, "str"),
    ("series_ticker", lambda e: e.series_ticker, "str"), ("title", lambda e: e.title, "str"),
    ("mutually_exclusive", lambda e: e.mutually_exclusive, "bool"),
]
SERIES_COLUMNS: list[Column] = [
    ("series_ticker", lambda s: s.series_ticker, "str"), ("title", lambda s: s.title, "str"),
    ("category", lambda s: s.category, "str"), ("frequency", lambda s: s.frequency, "str"),
]
SETTLEMENT_COLUMNS: list[Column] = [
    ("ticker", lambda s: s.ticker, "str"), ("event_ticker", lambda s: s.event_ticker, "str"),
    ("result", lambda s: s.result, "str"),
    ("settlement_value", lambda s: dec(s.settlement_value), "price"),
    ("settle_time", lambda s: when(s, "settle_time"), "time"),
]
