"""The columns of every data type, in Parquet and in CSV (docs/datasets.md lists them).

Parquet keeps exact values as scaled integers whose scale is in the column name
(`price_e4` = units of $0.0001, `quantity_e2` = units of 0.01 contract) and in the
field's and the file's metadata; timestamps are `timestamp[us, UTC]`. CSV carries the
JSON API's decimal strings ("0.4200", "150.00") and RFC 3339 times, so a CSV row reads
exactly like the API's answer. Both are made from one Arrow table per batch, so the two
formats cannot disagree about a row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TS = pa.timestamp("us", tz="UTC")
SCHEMA_VERSION = "1"
DEPTH = 10  # levels per side in book_top10_1s


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str

    @property
    def scale(self) -> int | None:
        """Decimal places of a scaled integer column (`_e4` → 4), None otherwise."""
        stem, _, suffix = self.name.rpartition("_e")
        return int(suffix) if stem and suffix.isdigit() and pa.types.is_integer(self.type) else None

    @property
    def csv_name(self) -> str:
        return self.name.rpartition("_e")[0] if self.scale is not None else self.name


def _c(name: str, type_: pa.DataType, doc: str) -> Column:
    return Column(name, type_, doc)


BOOK_CHANGES = (
    _c("ts", TS, "book time of the row: exchange time, never earlier than the row before"),
    _c("recv_ts", TS, "when ktape received it (null on `initial` and `gap` rows)"),
    _c("ticker", pa.string(), "market ticker"),
    _c("kind", pa.string(), "initial (the book at 00:00 UTC), snapshot, delta or gap"),
    _c("side", pa.string(), "yes or no (null on gap rows)"),
    _c("price_e4", pa.int64(), "bid price of the level"),
    _c("quantity_e2", pa.int64(), "the level's size after the change (0: level removed)"),
    _c("delta_e2", pa.int64(), "the change in size (snapshot rows: the level's size; null on initial)"),
    _c("seq", pa.int64(), "Kalshi's sequence number in its subscription"),
    _c("sid", pa.int64(), "Kalshi's subscription id"),
    _c("gap_start_ts", TS, "gap rows: the last instant known good"),
    _c("gap_end_ts", TS, "gap rows: when the book was proven again (null: still open)"),
    _c("gap_reason", pa.string(), "gap rows: seq_jump, reconnect, ..."),
)

CONTINUITY = _c("continuity", pa.string(),
                "CONTINUOUS, GAP or NOT_RECORDED: as GetOrderbook answers at `ts`")


def _levels() -> tuple[Column, ...]:
    out = []
    for side in ("yes", "no"):
        for i in range(1, DEPTH + 1):
            out.append(_c(f"{side}_{i}_price_e4", pa.int64(), f"{side} bid level {i} (best first)"))
            out.append(_c(f"{side}_{i}_quantity_e2", pa.int64(), f"size at {side} level {i}"))
    return tuple(out)


BOOK_TOP10_1S = (
    _c("ts", TS, "a whole second; the book as of it (changes stamped exactly then count)"),
    _c("ticker", pa.string(), "market ticker"),
    CONTINUITY,
    _c("seq", pa.int64(), "seq of the last change applied"),
    *_levels(),
)

QUOTES = (
    _c("ts", TS, "when either side's best bid price or size changed"),
    _c("recv_ts", TS, "receive time of the last change at `ts`"),
    _c("ticker", pa.string(), "market ticker"),
    CONTINUITY,
    _c("yes_bid_price_e4", pa.int64(), "best YES bid (null: side empty)"),
    _c("yes_bid_quantity_e2", pa.int64(), "its size"),
    _c("no_bid_price_e4", pa.int64(), "best NO bid; the YES ask is 1 - this"),
    _c("no_bid_quantity_e2", pa.int64(), "its size"),
    _c("seq", pa.int64(), "seq of the last change at `ts`"),
    _c("sid", pa.int64(), "its subscription id"),
)

TRADES = (
    _c("ts", TS, "exchange time"),
    _c("recv_ts", TS, "when ktape received it"),
    _c("ticker", pa.string(), "market ticker"),
    _c("trade_id", pa.string(), "Kalshi's trade id"),
    _c("yes_price_e4", pa.int64(), "YES price"),
    _c("no_price_e4", pa.int64(), "NO price"),
    _c("count_e2", pa.int64(), "contracts traded"),
    _c("taker_side", pa.string(), "yes or no"),
    _c("is_block_trade", pa.bool_(), "matched off-book; did not change the book"),
    _c("seq", pa.int64(), "sequence number (0 for backfilled trades)"),
    _c("sid", pa.int64(), "subscription id"),
)

CANDLES_1M = (
    _c("ts", TS, "the minute's start"),
    _c("ticker", pa.string(), "market ticker"),
    _c("open_e4", pa.int64(), "first trade's YES price"),
    _c("high_e4", pa.int64(), "highest YES price"),
    _c("low_e4", pa.int64(), "lowest YES price"),
    _c("close_e4", pa.int64(), "last trade's YES price"),
    _c("volume_e2", pa.int64(), "contracts traded"),
    _c("trade_count", pa.int64(), "number of trades"),
    _c("yes_bid_close_e4", pa.int64(), "best YES bid just before the minute's end"),
    _c("yes_ask_close_e4", pa.int64(), "best YES ask (1 - best NO bid) then"),
    _c("open_interest_e2", pa.int64(), "Kalshi's latest open interest before the minute's end"),
)

COLUMNS: dict[str, tuple[Column, ...]] = {
    "book_changes": BOOK_CHANGES, "book_top10_1s": BOOK_TOP10_1S, "quotes": QUOTES,
    "trades": TRADES, "candles_1m": CANDLES_1M,
}


def parquet_schema(data_type: str) -> pa.Schema:
    """The Arrow schema of a data type's Parquet files, with the scales in the metadata."""
    columns = COLUMNS[data_type]
    fields = [pa.field(c.name, c.type, metadata={
        "doc": c.doc, **({"scale": str(c.scale)} if c.scale is not None else {})})
        for c in columns]
    scales = {c.name: c.scale for c in columns if c.scale is not None}
    return pa.schema(fields, metadata={
        "ktape.data_type": data_type, "ktape.schema_version": SCHEMA_VERSION,
        "ktape.scales": json.dumps(scales, sort_keys=True)})


def decimal_strings(values: pa.Array, scale: int) -> pa.Array:
    """Scaled integers as exact decimal strings (4200, scale 4 → "0.4200"): the integers
    become the unscaled values of a decimal128 column, which Arrow prints exactly."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    n = len(values)
    unscaled = np.empty((n, 2), dtype=np.int64)
    ints = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    unscaled[:, 0] = ints
    unscaled[:, 1] = ints >> 63  # sign extension into the high word
    decimals = pa.Array.from_buffers(pa.decimal128(38, scale), n, [None, pa.py_buffer(unscaled)])
    text = pc.cast(decimals, pa.string())
    if values.null_count:
        text = pc.if_else(values.is_null(), pa.scalar(None, pa.string()), text)
    return text


def rfc3339(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """UTC µs timestamps as `2026-11-02T00:00:01.000000Z` (the form `strftime` with
    `%Y-%m-%dT%H:%M:%SZ` prints, which the tests pin). Why not `strftime` itself: it
    cost ~3 µs a value, the largest part of a CSV build (bench/datasets/export.py);
    Arrow's cast of the same instants without their zone prints the same digits with a
    space for the `T` and no `Z` about 20 times faster, and patching those two
    characters is cheap."""
    text = pc.cast(values.cast(pa.timestamp("us")), pa.string())
    return pc.binary_join_element_wise(
        pc.utf8_replace_slice(text, start=10, stop=11, replacement="T"), "Z", "")


def csv_table(table: pa.Table, data_type: str) -> pa.Table:
    """The CSV form of a batch: decimal strings and RFC 3339 times, unscaled names."""
    arrays, names = [], []
    for column in COLUMNS[data_type]:
        values = table.column(column.name)
        if column.scale is not None:
            values = decimal_strings(values, column.scale)
        elif column.type == TS:
            values = rfc3339(values)
        arrays.append(values)
        names.append(column.csv_name)
    return pa.Table.from_arrays(arrays, names=names)
