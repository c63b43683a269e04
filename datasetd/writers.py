"""Writing one dataset file: Parquet (zstd, row groups) or CSV.gz, in a scratch file that
is published by one atomic step only once it is complete.

Why buffered row groups: the build splits a series' rows into each market's file batch
by batch; writing every small slice as its own row group would make files slow to read.
Each writer keeps up to ROW_GROUP_ROWS rows and `WriterSet` caps what all of them hold
together, so memory is bounded however many markets a series has.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from datasetd.columns import csv_table, parquet_schema
from ktape.datasets.names import FileName

ROW_GROUP_ROWS = 262_144
BUFFER_BUDGET_ROWS = 1_048_576
ZSTD_LEVEL = 3


@dataclass(frozen=True)
class Written:
    """A finished scratch file, ready to publish."""

    name: FileName
    path: Path
    rows: int
    bytes: int
    sha256: str
    first_ts_us: int | None
    last_ts_us: int | None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class FileWriter:
    """One file being written. `add` takes Arrow tables in the data type's schema."""

    def __init__(self, name: FileName, scratch: Path) -> None:
        self.name = name
        self.schema = parquet_schema(name.data_type)
        fd, tmp = tempfile.mkstemp(dir=scratch, prefix="build-", suffix="." + name.format)
        os.close(fd)
        self.path = Path(tmp)
        self.rows = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self._pending: list[pa.Table] = []
        self.pending_rows = 0
        if name.format == "parquet":
            self._parquet: pq.ParquetWriter | None = pq.ParquetWriter(
                self.path, self.schema, compression="zstd", compression_level=ZSTD_LEVEL,
                use_dictionary=True, write_statistics=True)
            self._csv: pacsv.CSVWriter | None = None
            self._stream: pa.NativeFile | None = None
        else:
            self._parquet = None
            self._stream = pa.CompressedOutputStream(str(self.path), "gzip")
            csv_schema = csv_table(self.schema.empty_table(), name.data_type).schema
            self._csv = pacsv.CSVWriter(self._stream, csv_schema)

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        ts = table.column("ts")
        lo, hi = pc.min(ts).value, pc.max(ts).value
        self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
        self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)
        self.rows += table.num_rows
        if self._csv is not None:
            self._csv.write_table(csv_table(table, self.name.data_type))
            return
        self._pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._parquet is None or not self._pending:
            return
        group = pa.concat_tables(self._pending).cast(self.schema)
        self._pending, self.pending_rows = [], 0
        self._parquet.write_table(group, row_group_size=max(ROW_GROUP_ROWS, group.num_rows))

    def close(self) -> Written:
        self.flush()
        if self._parquet is not None:
            self._parquet.close()
        if self._csv is not None:
            self._csv.close()
        if self._stream is not None:
            self._stream.close()
        return Written(self.name, self.path, self.rows, self.path.stat().st_size,
                       sha256_of(self.path), self.first_ts, self.last_ts)

    def abandon(self) -> None:
        for closer in (self._parquet, self._csv, self._stream):
            try:
                if closer is not None:
                    closer.close()
            except (OSError, pa.ArrowException):
                pass
        self.path.unlink(missing_ok=True)


class WriterSet:
    """The writers of one build step, both formats of each name, with one row budget."""

    def __init__(self, scratch: Path, formats: tuple[str, ...]) -> None:
        self.scratch = scratch
        self.formats = formats
        self.writers: dict[FileName, FileWriter] = {}

    def add(self, name: FileName, table: pa.Table) -> None:
        """`name` in any format: the table goes to that name in every format."""
        for fmt in self.formats:
            key = name.with_format(fmt)
            writer = self.writers.get(key)
            if writer is None:
                writer = self.writers[key] = FileWriter(key, self.scratch)
            writer.add(table)
        if sum(w.pending_rows for w in self.writers.values()) > BUFFER_BUDGET_ROWS:
            max(self.writers.values(), key=lambda w: w.pending_rows).flush()

    def ensure(self, name: FileName) -> None:
        """An empty file for `name` when nothing was written to it (a quiet market still
        has a day file: its rows say nothing happened)."""
        self.add(name, parquet_schema(name.data_type).empty_table())

    def close(self) -> list[Written]:
        return [w.close() for w in self.writers.values()]

    def abandon(self) -> None:
        for writer in self.writers.values():
            writer.abandon()
