"""Writing beside (the series file in a second thread) gives the files that writing one
after another gives, and the same rows always give the same bytes."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq

from datasetd.columns import parquet_schema
from datasetd.writers import WriterSet
from ktape.datasets.names import FileName

DAY = dt.date(2026, 11, 2)
START = 1_793_577_600_000_000  # 2026-11-02T00:00:00Z


def _batch(first: int, n: int) -> pa.Table:
    tickers = [f"M{i % 3}" for i in range(first, first + n)]
    return pa.Table.from_pydict({
        "ts": [START + i for i in range(first, first + n)],
        "recv_ts": [START + i + 5 for i in range(first, first + n)], "ticker": tickers,
        "kind": ["delta"] * n, "side": ["yes" if i % 2 else "no" for i in range(n)],
        "price_e4": [100 * (i % 90 + 1) for i in range(n)], "quantity_e2": list(range(n)),
        "delta_e2": [-i for i in range(n)], "seq": list(range(first, first + n)),
        "sid": [1] * n, "gap_start_ts": [None] * n, "gap_end_ts": [None] * n,
        "gap_reason": [None] * n}, schema=parquet_schema("book_changes"))


def _write(tmp, beside: bool) -> dict[str, bytes]:
    writers = WriterSet(tmp, ("parquet", "csv.gz"))
    for first in range(0, 3000, 1000):
        table = _batch(first, 1000)
        whole = FileName("book_changes", DAY, "", "S")
        parts = [(FileName("book_changes", DAY, t), table.filter(pa.compute.equal(
            table.column("ticker"), t))) for t in ("M0", "M1", "M2")]
        if beside:
            with writers.beside(whole, table):
                for name, part in parts:
                    writers.add(name, part)
        else:
            writers.add(whole, table)
            for name, part in parts:
                writers.add(name, part)
    return {str(w.name): w.path.read_bytes() for w in writers.close()}


def test_beside_writes_the_same_files_as_one_after_another(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    together, alone, again = (_write(tmp_path / "a", True), _write(tmp_path / "b", False),
                              _write(tmp_path / "c", True))
    assert together == alone == again  # byte for byte: sha256 and last_modified hold
    series = pq.read_table(io.BytesIO(together["book_changes/2026-11-02/series/S.parquet"]))
    assert series.column("seq").to_pylist() == list(range(3000))
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(
        together["book_changes/2026-11-02/M1.csv.gz"]).decode())))
    assert [int(r["seq"]) for r in rows] == list(range(1, 3000, 3))
    assert rows[0]["ts"] == "2026-11-02T00:00:00.000001Z" and rows[0]["price"] == "0.0200"
