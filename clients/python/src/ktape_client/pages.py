"""Lazy results that page for you (AIP-158), and their columns for DataFrames.

Iterating fetches one page at a time, and asks for the next page as soon as one arrives,
so the server's (and the network's) time for page k+1 overlaps the caller's work on page
k. `to_df()` / `to_polars()` / `to_arrow()` read every page and build each column
directly: one extractor per column mapped over each page (no dict per row), then one
conversion per column — times as integer microseconds turned into datetime64[us, UTC] in
one step, decimal strings into Decimal objects through a per-column cache (prices repeat)
for pandas, or cast by Arrow itself into Decimal128 for Arrow and polars. Prices and
sizes stay exact, never a float. Book changes, the one listing that runs to millions of
rows, are read as column pages instead and kept as numpy arrays (delta_frames.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

Fetch = Callable[[str], Awaitable[Any]]  # page token -> response
# name, extractor, kind. The extractor gives the raw value: micros (int, 0 = unset) for
# "time", the decimal string ("" = none) for "price" / "size", the value itself otherwise.
Column = tuple[str, Callable[[Any], Any], str]
NAT = -(2**63)  # numpy's NaT as int64
# Arrow's exact type of each kind of column: (precision, scale); the scale is also the
# number of decimals of the API's strings and of the fixed-point integers of column pages.
ARROW_DECIMALS = {"price": (10, 4), "size": (18, 2)}


def enum_name(message: Any, field: str, prefix: str) -> str:
    value = getattr(message, field)
    name = message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[value].name
    return name.removeprefix(prefix).lower()


def enum_column(field: str, prefix: str) -> Callable[[Any], str]:
    """An extractor for an enum field giving its short lower-case name; the name of each
    value is looked up in the descriptor once, not per row."""
    names: dict[int, str] = {}

    def get(message: Any) -> str:
        value = getattr(message, field)
        found = names.get(value)
        if found is None:
            found = names[value] = enum_name(message, field, prefix)
        return found

    return get


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


_second: tuple[int, dt.datetime] = (0, EPOCH)  # the last whole second `at_micros` built


def at_micros(us: int) -> dt.datetime:
    """Microseconds since the epoch as an aware UTC datetime, by arithmetic, and from the
    last whole second when it is the same one: a stream's changes come in time order,
    many to a second, and `replace` is cheaper than a timedelta sum."""
    global _second
    seconds, micros = divmod(us, 1_000_000)
    last, base = _second
    if seconds != last:
        base = EPOCH + dt.timedelta(seconds=seconds)
        _second = (seconds, base)
    return base.replace(microsecond=micros)


def when(message: Any, field: str) -> dt.datetime | None:
    """A Timestamp field as an aware UTC datetime (microseconds), None if unset
    (Timestamp.ToDatetime costs ten times as much, per change of a stream)."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    return at_micros(value.seconds * 1_000_000 + value.nanos // 1000)


def micros_column(field: str) -> Callable[[Any], int]:
    """An extractor for a Timestamp field: microseconds since the epoch, 0 when unset
    (read as missing: no ktape time is exactly 1970-01-01T00:00:00Z). Without a
    HasField per row, which cost as much as the rest of the extraction."""

    def get(message: Any) -> int:
        value = getattr(message, field)
        return value.seconds * 1_000_000 + value.nanos // 1000

    return get


_DECIMALS: dict[str, Decimal | None] = {"": None}
_MISSING: Any = object()


def dec(text: str) -> Decimal | None:
    """A decimal string as a Decimal ("" = None), each distinct string parsed once: a
    market's prices and sizes repeat (Decimal is immutable, so sharing one is safe).
    The cache is bounded; past its size new strings are parsed each time."""
    found = _DECIMALS.get(text, _MISSING)
    if found is _MISSING:
        found = Decimal(text)
        if len(_DECIMALS) < 1 << 16:
            _DECIMALS[text] = found
    return found  # type: ignore[return-value]


def fixed_decimals(units: Any, exponent: int) -> list[Decimal]:
    """Exact Decimals for fixed-point integers (`units` times 10^exponent: 5500, -4 is
    Decimal("0.5500"), as the API's decimal strings give it), each distinct value built
    once (a market's prices and sizes repeat) and the rest looked up in C. The cache is
    bounded: past its size it starts again."""
    cache = _FIXED.setdefault(exponent, {})
    values = list(units)
    for value in set(values).difference(cache):
        cache[value] = Decimal(value).scaleb(exponent)
    out = list(map(cache.__getitem__, values))
    if len(cache) > 1 << 16:
        cache.clear()
    return out


_FIXED: dict[int, dict[int, Decimal]] = {}


def decimals(values: list[str]) -> list[Decimal | None]:
    """Decimal objects for decimal strings ("" = None), each distinct string parsed once."""
    cache: dict[str, Decimal | None] = {"": None}
    get = cache.get
    out: list[Decimal | None] = []
    append = out.append
    for text in values:
        value = get(text, cache)
        if value is cache:
            value = cache[text] = Decimal(text)
        append(value)  # type: ignore[arg-type]
    return out


class AsyncPages:
    """`async for item in pages`; `await pages.to_df()`. With `column_fetch` and
    `column_frames`, the frames are read from pages `column_fetch` asks for as columns
    (`columns` of the response), which a new `column_frames()` accumulator (see
    delta_frames.DeltaPages) keeps as arrays and turns into the frame."""

    def __init__(self, fetch: Fetch, items: str, columns: list[Column],
                 column_fetch: Fetch | None = None,
                 column_frames: Callable[[], Any] | None = None) -> None:
        self._fetch = fetch
        self._items = items
        self.columns = columns
        self._column_fetch = column_fetch
        self._column_frames = column_frames

    async def _responses(self, fetch: Fetch) -> AsyncIterator[Any]:
        """Each page's response, the next page already asked for while this one is used."""
        pending: asyncio.Future[Any] = asyncio.ensure_future(fetch(""))
        try:
            while True:
                page = await pending
                token = getattr(page, "next_page_token", "")
                if token:
                    pending = asyncio.ensure_future(fetch(token))
                yield page
                if not token:
                    return
        finally:  # stopped early: the page asked for ahead is not wanted
            if not pending.done():
                pending.cancel()
            elif not pending.cancelled():
                pending.exception()  # retrieved, so asyncio does not report it as lost

    async def pages(self) -> AsyncIterator[Any]:
        """Each page's items, the next page already asked for while this one is used."""
        async for page in self._responses(self._fetch):
            # A list: the columns each walk the page once, and walking the repeated
            # field itself would build every message's wrapper once per column.
            yield list(getattr(page, self._items))

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for items in self.pages():
            for item in items:
                yield item

    async def columns_of(self) -> dict[str, list[Any]]:
        """Every page read, each column's raw values in one list (see Column)."""
        out: dict[str, list[Any]] = {name: [] for name, _, _ in self.columns}
        getters = [(out[name], get) for name, get, _ in self.columns]
        async for items in self.pages():
            for values, get in getters:
                values.extend(map(get, items))
        return out

    async def _column_pages(self) -> Any:
        """Every page read as columns into a new accumulator (None without columns)."""
        if self._column_fetch is None or self._column_frames is None:
            return None
        frames = self._column_frames()
        async for page in self._responses(self._column_fetch):
            frames.add(page.columns)
        return frames

    async def to_df(self) -> Any:
        """A pandas DataFrame: Decimal objects (exact) for prices and sizes,
        datetime64[us, UTC] for times, int64, string and bool columns otherwise."""
        import pandas as pd

        frames = await self._column_pages()
        if frames is not None:
            return frames.to_pandas()
        data = await self.columns_of()
        return pd.DataFrame({name: _pandas_column(pd, data[name], kind)
                             for name, _, kind in self.columns})

    async def to_arrow(self) -> Any:
        """A pyarrow Table: decimal128 for prices (scale 4) and sizes (scale 2),
        timestamp[us, UTC] for times."""
        import pyarrow as pa

        frames = await self._column_pages()
        if frames is not None:
            return frames.to_arrow()
        data = await self.columns_of()
        return pa.table({name: _arrow_column(pa, data[name], kind)
                         for name, _, kind in self.columns})

    async def to_polars(self) -> Any:
        """A polars DataFrame (from the Arrow table: Decimal columns, UTC datetimes)."""
        import polars as pl

        return pl.from_arrow(await self.to_arrow())


def _pandas_column(pd: Any, values: list[Any], kind: str) -> Any:
    if kind == "time":
        import numpy as np

        micros = np.array(values, dtype="int64")
        micros[micros == 0] = NAT  # unset (see micros_column)
        return pd.Series(micros.view("datetime64[us]")).dt.tz_localize("UTC")
    if kind in ("price", "size"):
        return pd.Series(decimals(values), dtype="object")  # exact
    return pd.Series(values, dtype={"int": "int64", "str": "string", "bool": "bool"}[kind])


def _arrow_column(pa: Any, values: list[Any], kind: str) -> Any:
    if kind == "time":
        import pyarrow.compute as pc

        micros = pa.array(values, pa.int64())
        unset = pc.equal(micros, 0)  # see micros_column
        return pc.if_else(unset, None, micros).cast(pa.timestamp("us", tz="UTC"))
    if kind in ("price", "size"):
        exact = pa.decimal128(*ARROW_DECIMALS[kind])
        return pa.array([v or None for v in values], pa.string()).cast(exact)
    return pa.array(values, {"int": pa.int64(), "str": pa.string(), "bool": pa.bool_()}[kind])


DELTA_COLUMNS: list[Column] = [
    ("ts", micros_column("ts"), "time"),
    ("seq", lambda d: d.seq, "int"),
    ("sid", lambda d: d.sid, "int"),
    ("kind", enum_column("kind", "DELTA_KIND_"), "str"),
    ("side", enum_column("side", "SIDE_"), "str"),
    ("price", lambda d: d.price, "price"),
    ("delta", lambda d: d.delta, "size"),
    ("quantity", lambda d: d.quantity, "size"),
    ("cause", enum_column("cause", "DELTA_CAUSE_"), "str"),  # new, cancel, trade
    ("receive_time", micros_column("receive_time"), "time"),
    ("gap_reason", lambda d: d.gap.reason if d.HasField("gap") else "", "str"),
]


def enum_names(enum: Any, prefix: str) -> dict[int, str]:
    """An enum's values by number as the short lower-case names its columns hold."""
    return {v.number: v.name.removeprefix(prefix).lower() for v in enum.DESCRIPTOR.values}


TRADE_COLUMNS: list[Column] = [
    ("ts", micros_column("ts"), "time"),
    ("trade_id", lambda t: t.trade_id, "str"),
    ("yes_price", lambda t: t.yes_price, "price"),
    ("no_price", lambda t: t.no_price, "price"),
    ("count", lambda t: t.count, "size"),
    ("taker_side", enum_column("taker_side", "TAKER_SIDE_"), "str"),
    ("is_block_trade", lambda t: t.is_block_trade, "bool"),
]
CANDLE_COLUMNS: list[Column] = [
    ("start_time", micros_column("start_time"), "time"),
    ("open", lambda c: c.open, "price"), ("high", lambda c: c.high, "price"),
    ("low", lambda c: c.low, "price"), ("close", lambda c: c.close, "price"),
    ("volume", lambda c: c.volume, "size"),
    ("trade_count", lambda c: c.trade_count, "int"),
]
MARKET_COLUMNS: list[Column] = [
    ("ticker", lambda m: m.ticker, "str"), ("event_ticker", lambda m: m.event_ticker, "str"),
    ("series_ticker", lambda m: m.series_ticker, "str"), ("status", lambda m: m.status, "str"),
    ("title", lambda m: m.title, "str"), ("open_time", micros_column("open_time"), "time"),
    ("close_time", micros_column("close_time"), "time"),
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
    ("settlement_value", lambda s: s.settlement_value, "price"),
    ("settle_time", micros_column("settle_time"), "time"),
]
USAGE_COLUMNS: list[Column] = [
    ("day", lambda u: u.day, "str"), ("method", lambda u: u.method, "str"),
    ("calls", lambda u: u.calls, "int"), ("credits", lambda u: u.credits, "int"),
]
KEY_COLUMNS: list[Column] = [
    ("key_id", lambda k: k.key_id, "str"), ("prefix", lambda k: k.prefix, "str"),
    ("name", lambda k: k.name, "str"), ("env", enum_column("env", "KEY_ENV_"), "str"),
    ("create_time", micros_column("create_time"), "time"),
    ("last_used_time", micros_column("last_used_time"), "time"),
    ("revoke_time", micros_column("revoke_time"), "time"),
]
