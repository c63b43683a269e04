"""Parquet keeps scaled integers with their scale; CSV the API's exact decimal strings."""

from __future__ import annotations

import json

import pyarrow as pa

from datasetd.columns import COLUMNS, csv_table, decimal_strings, parquet_schema


def test_decimal_strings_are_exact_at_every_scale_and_sign():
    values = pa.array([4200, -5, None, 0, 9_999, 123_456_789_012_345], pa.int64())
    assert decimal_strings(values, 4).to_pylist() == [
        "0.4200", "-0.0005", None, "0.0000", "0.9999", "12345678901.2345"]
    assert decimal_strings(pa.array([15000, -5], pa.int64()), 2).to_pylist() == ["150.00", "-0.05"]


def test_every_scaled_column_says_its_scale_in_name_field_and_file_metadata():
    for data_type, columns in COLUMNS.items():
        schema = parquet_schema(data_type)
        scales = json.loads(schema.metadata[b"ktape.scales"])
        for column in columns:
            if column.name.endswith(("_e4", "_e2")):
                assert column.scale == int(column.name[-1])
                assert scales[column.name] == column.scale
                assert schema.field(column.name).metadata[b"scale"] == str(column.scale).encode()
            else:
                assert column.scale is None and column.name not in scales
        assert schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_the_csv_form_renames_scaled_columns_and_prints_times_in_rfc3339():
    schema = parquet_schema("trades")
    table = pa.Table.from_pylist([{
        "ts": 1_796_083_200_123_456, "recv_ts": None, "ticker": "T", "trade_id": "x",
        "yes_price_e4": 4200, "no_price_e4": 5800, "count_e2": 1500, "taker_side": "yes",
        "is_block_trade": False, "seq": 3, "sid": 1}], schema=schema)
    row = csv_table(table, "trades").to_pylist()[0]
    assert row == {"ts": "2026-12-01T00:00:00.123456Z", "recv_ts": None, "ticker": "T",
                   "trade_id": "x", "yes_price": "0.4200", "no_price": "0.5800",
                   "count": "15.00", "taker_side": "yes", "is_block_trade": False, "seq": 3,
                   "sid": 1}


def test_rfc3339_prints_exactly_what_strftime_prints_over_the_whole_range():
    import numpy as np
    import pyarrow.compute as pc

    from datasetd.columns import TS, rfc3339

    rng = np.random.default_rng(16)
    edges = [0, 1, -1, 999_999, 1_796_083_200_000_000, -62_135_596_800_000_000,
             253_402_300_799_999_999]
    values = [*rng.integers(-62_135_596_800_000_000, 253_402_300_799_999_999, 20_000).tolist(),
              *edges, None]
    arr = pa.array(values, TS)
    assert rfc3339(arr).equals(pc.strftime(arr, format="%Y-%m-%dT%H:%M:%SZ"))
    chunked = pa.chunked_array([arr.slice(0, 7), arr.slice(7)])
    assert rfc3339(chunked).to_pylist() == rfc3339(arr).to_pylist()
