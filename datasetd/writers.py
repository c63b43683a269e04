"""Writing one dataset file: Parquet (zstd, row groups) or CSV.gz, in a scratch file that
is published by one atomic step only once it is complete.

Why buffered row groups: the build splits a series' rows into each market's file batch
by batch; writing every small slice as its own row group would make files slow to read.
Each writer keeps up to ROW_GROUP_ROWS rows and `WriterSet` caps what all of them hold
together, so memory is bounded however many markets a series has.

Why `beside`: a batch goes to its series file and, split by ticker, to each market's
file; the two are independent files, and pyarrow's encoders and zlib release the GIL,
so the series file is written in a second thread while the caller writes the markets'
files (measured: docs/performance.md, "Datasets: export").

Encodings (measured: docs/performance.md, "Datasets: export"): strings are
dictionary-encoded, timestamps and sequence numbers DELTA_BINARY_PACKED, other integers
plain, all under zstd. Dictionary-encoding every column (pyarrow's default) made the
writer hash each timestamp into a dictionary it then abandons: 2.5-3 times the time, for
files 1.7-2.4 times larger. CSV.gz is deflated by ISA-L (`isal`, Intel's library for
exactly this) at its level 2: standard gzip any reader opens, for 0.22 µs a row where
zlib's level 6 took 3.2 µs (zlib's deflate was two thirds of a CSV build), for files 9%
(market) and 14% (series) larger; zlib-ng's level 6 gave 4% smaller files at 1.8 µs. Neither choice changes a
value in any file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from isal import igzip

from datasetd.columns import csv_table, parquet_schema
from ktape.datasets.names import FileName

ROW_GROUP_ROWS = 262_144
BUFFER_BUDGET_ROWS = 1_048_576
ZSTD_LEVEL = 3
GZIP_LEVEL = 2  # ISA-L's levels are 0-3; 3 cost twice as much for files 1% smaller
DELTA_COLUMNS = frozenset({"seq", "sid"})  # and every timestamp column


def parquet_encodings(schema: pa.Schema) -> tuple[list[str], dict[str, str]]:
    """(dictionary-encoded columns, {column: encoding}) for a data type's schema."""
    dictionary = [f.name for f in schema if pa.types.is_string(f.type)]
    delta = {f.name: "DELTA_BINARY_PACKED" for f in schema
             if pa.types.is_timestamp(f.type) or f.name in DELTA_COLUMNS}
    return dictionary, delta


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
        self._raw: BinaryIO | None = None
        self._stream: igzip.IGzipFile | None = None
        self._csv: pacsv.CSVWriter | None = None
        self._parquet: pq.ParquetWriter | None = None
        if name.format == "parquet":
            dictionary, encodings = parquet_encodings(self.schema)
            self._parquet = pq.ParquetWriter(
                self.path, self.schema, compression="zstd", compression_level=ZSTD_LEVEL,
                use_dictionary=dictionary, column_encoding=encodings, write_statistics=True)
        else:
            # mtime 0 and no file name in the header: the same rows give the same bytes,
            # so a rebuilt file that did not change keeps its sha256 and modification time
            self._raw = open(self.path, "wb")  # noqa: SIM115 (closed in close/abandon)
            self._stream = igzip.IGzipFile(filename="", mode="wb", fileobj=self._raw,
                                         compresslevel=GZIP_LEVEL, mtime=0)
            csv_schema = csv_table(self.schema.empty_table(), name.data_type).schema
            self._csv = pacsv.CSVWriter(self._stream, csv_schema)

    def add(self, table: pa.Table, rendered: pa.Table | None = None) -> None:
        """`rendered`: the same rows already in CSV form (`csv_table`), when the caller
        rendered a whole batch once for the series file and every market's slice of it."""
        if table.num_rows == 0:
            return
        ts = table.column("ts")
        lo, hi = pc.min(ts).value, pc.max(ts).value
        self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
        self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)
        self.rows += table.num_rows
        if self._csv is not None:
            self._csv.write_table(rendered if rendered is not None
                                  else csv_table(table, self.name.data_type))
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
        if self._raw is not None:
            self._raw.close()
        return Written(self.name, self.path, self.rows, self.path.stat().st_size,
                       sha256_of(self.path), self.first_ts, self.last_ts)

    def abandon(self) -> None:
        for closer in (self._parquet, self._csv, self._stream, self._raw):
            try:
                if closer is not None:
                    closer.close()
            except (OSError, ValueError, pa.ArrowException):
                pass
        self.path.unlink(missing_ok=True)


class WriterSet:
    """The writers of one build step, both formats of each name, with one row budget."""

    def __init__(self, scratch: Path, formats: tuple[str, ...]) -> None:
        self.scratch = scratch
        self.formats = formats
        self.writers: dict[FileName, FileWriter] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._beside: list[FileWriter] = []  # being written by the second thread

    def _writers_of(self, name: FileName) -> list[FileWriter]:
        out = []
        for fmt in self.formats:
            key = name.with_format(fmt)
            writer = self.writers.get(key)
            if writer is None:
                writer = self.writers[key] = FileWriter(key, self.scratch)
            out.append(writer)
        return out

    def csv_form(self, table: pa.Table, data_type: str) -> pa.Table | None:
        """The table's CSV form when rows added here are written as CSV too (rendered
        once, for a batch's series file and, split alike, its markets' files), else None."""
        return csv_table(table, data_type) if "csv.gz" in self.formats else None

    def add(self, name: FileName, table: pa.Table, rendered: pa.Table | None = None) -> None:
        """`name` in any format: the table goes to that name in every format (`rendered`:
        its CSV form, if the caller has it)."""
        writers = self._writers_of(name)
        if any(w in self._beside for w in writers):
            raise RuntimeError(f"{name} is being written beside; add to it after the block")
        for writer in writers:
            writer.add(table, rendered)
        if not self._beside:
            self._keep_budget()

    def _keep_budget(self) -> None:
        """Flush the fullest writers until all of them together hold the budget or less
        (only ever called with no second thread writing, so the same rows always give
        the same row groups)."""
        while sum(w.pending_rows for w in self.writers.values()) > BUFFER_BUDGET_ROWS:
            max(self.writers.values(), key=lambda w: w.pending_rows).flush()

    @contextmanager
    def beside(self, name: FileName, table: pa.Table, rendered: pa.Table | None = None
               ) -> Iterator[None]:
        """`table` goes to `name` (every format) in a second thread while the block
        writes other names; on leaving, the block waits for it (its error, if any, is
        raised) and then keeps the row budget."""
        if self._beside:
            raise RuntimeError("one write beside at a time")
        writers = self._writers_of(name)  # made here: only this thread touches the dict
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="series-file")
        self._beside = writers
        future = self._pool.submit(lambda: [w.add(table, rendered) for w in writers])
        try:
            yield
        finally:
            try:
                future.result()
            finally:
                self._beside = []
        self._keep_budget()

    def ensure(self, name: FileName) -> None:
        """An empty file for `name` when nothing was written to it (a quiet market still
        has a day file: its rows say nothing happened)."""
        self.add(name, parquet_schema(name.data_type).empty_table())

    def close(self) -> list[Written]:
        self._stop()
        return [w.close() for w in self.writers.values()]

    def abandon(self) -> None:
        self._stop()
        for writer in self.writers.values():
            writer.abandon()

    def _stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
