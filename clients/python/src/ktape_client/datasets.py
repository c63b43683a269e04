"""`client.datasets`: list, price and download the daily flat files (DatasetService).

Listing and pricing are free. `download` is the metered call: it lists first (free) and
buys only the files not already in `dest_dir` with the right SHA-256, so a second run of
the same download neither fetches nor charges anything (and a file version bought once
is never charged again anyway). Each file is fetched by its signed URL as
ktape_client.files describes: resumable, verified, renamed into place only when whole.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ktape_client._gen.ktape.marketdata.v1 import datasets_pb2, datasets_pb2_grpc
from ktape_client.files import FileResult, fetch_file, present, target_path
from ktape_client.pages import AsyncPages, Column, enum_column, micros_column

Day = dt.date | str | None
MAX_NAMES_PER_DOWNLOAD = 1000  # the server's limit for one CreateDatasetDownload

DATASET_FILE_COLUMNS: list[Column] = [
    ("name", lambda f: f.name, "str"), ("data_type", lambda f: f.data_type, "str"),
    ("date", lambda f: f.date, "str"), ("ticker", lambda f: f.ticker, "str"),
    ("series_ticker", lambda f: f.series_ticker, "str"), ("format", lambda f: f.format, "str"),
    ("bytes", lambda f: f.bytes, "int"), ("rows", lambda f: f.rows, "int"),
    ("sha256", lambda f: f.sha256, "str"),
    ("condition", enum_column("condition", "DATA_CONDITION_"), "str"),
    ("last_modified_time", micros_column("last_modified_time"), "time"),
    ("first_time", micros_column("first_time"), "time"),
    ("last_time", micros_column("last_time"), "time"),
    ("credits", lambda f: f.credits, "int"),
]


@dataclass(frozen=True)
class DatasetCost:
    """What a download of the matching files would charge now (bought before: 0)."""

    file_count: int
    bytes: int
    credits: int


@dataclass(frozen=True)
class DownloadResult:
    """One `download`: every file matched, where it is, and what the call charged."""

    files: list[FileResult]
    charged_credits: int
    dest_dir: Path

    @property
    def fetched_bytes(self) -> int:
        """Bytes that went over the network in this call (0 when all were there)."""
        return sum(f.fetched_bytes for f in self.files)

    def count(self, status: str) -> int:
        """How many files ended with `status` (downloaded, resumed or present)."""
        return sum(1 for f in self.files if f.status == status)


@dataclass
class Filter:
    """The filter fields the three calls share (see DatasetService in the protos)."""

    data_type: str = ""
    start_date: Day = None
    end_date: Day = None
    series_ticker: str = ""
    ticker: str = ""
    format: str = ""
    series_files_only: bool = False

    def fields(self) -> dict[str, Any]:
        return {"data_type": self.data_type, "start_date": _day(self.start_date),
                "end_date": _day(self.end_date), "series_ticker": self.series_ticker,
                "ticker": self.ticker, "format": self.format,
                "series_files_only": self.series_files_only}


def _day(value: Day) -> str:
    return value.isoformat() if isinstance(value, dt.date) else (value or "")


class AsyncDatasets:
    """`client.datasets` of an AsyncClient (Client wraps it blocking, like the client)."""

    blocking_namespace = True  # sync.Client wraps this object's methods too

    def __init__(self, call: Callable[[Any, Any], Awaitable[Any]], channel: Any, *,
                 retries: int, max_backoff: float, timeout: float) -> None:
        self._call = call
        self._stub = datasets_pb2_grpc.DatasetServiceStub(channel)
        self._retries, self._max_backoff, self._timeout = retries, max_backoff, timeout

    def list(self, *, data_type: str = "", start_date: Day = None, end_date: Day = None,
             series_ticker: str = "", ticker: str = "", format: str = "",
             series_files_only: bool = False, page_size: int = 1000) -> AsyncPages:
        """Files matching the filter (GET /v1/datasets, free), by date, data type and
        name; lazy and paged like the other listings (`to_df()`, ...). Dates are UTC
        days, `end_date` inclusive (default `start_date`, which defaults to today)."""
        filt = Filter(data_type, start_date, end_date, series_ticker, ticker, format,
                      series_files_only).fields()
        return AsyncPages(lambda token: self._call(
            self._stub.ListDatasetFiles, datasets_pb2.ListDatasetFilesRequest(
                **filt, page_size=page_size, page_token=token)), "files", DATASET_FILE_COLUMNS)

    async def cost(self, names: Sequence[str] | None = None, *, data_type: str = "",
                   start_date: Day = None, end_date: Day = None, series_ticker: str = "",
                   ticker: str = "", format: str = "",
                   series_files_only: bool = False) -> DatasetCost:
        """What downloading these files (by name, or the filter) would charge, before
        anything is charged (GET /v1/datasets:cost, free)."""
        filt = Filter(data_type, start_date, end_date, series_ticker, ticker, format,
                      series_files_only).fields()
        reply = await self._call(self._stub.GetDatasetCost, datasets_pb2.GetDatasetCostRequest(
            names=list(names or ()), **({} if names else filt)))
        return DatasetCost(reply.file_count, reply.bytes, reply.credits)

    async def download(self, names: Sequence[str] | None = None, dest_dir: str | Path = ".",
                       *, data_type: str = "", start_date: Day = None, end_date: Day = None,
                       series_ticker: str = "", ticker: str = "", format: str = "",
                       series_files_only: bool = False, progress: bool = True,
                       concurrency: int = 4) -> DownloadResult:
        """Buy and fetch files (by name, or every file matching the filter) into
        `dest_dir`, keeping their names' directories (`book_changes/2026-12-01/X.parquet`).

        Metered (POST /v1/datasets:download): charges the files' credits once; files
        already in `dest_dir` with the right SHA-256 are neither bought nor fetched (with
        a filter; named files are bought, which costs nothing if bought before, and not
        fetched). Each file is written to `.<file>.part`, resumed with Range after a cut
        (within this call, or by calling again), checked against the SHA-256 promised and
        the server's Repr-Digest, then renamed into place. `progress` draws one bar of
        bytes on stderr (tqdm when installed: the `[progress]` extra; a plain line
        otherwise). Raises DownloadError / ChecksumMismatchError naming the file; files
        finished before it stay in place."""
        dest = Path(dest_dir)
        await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
        wanted = list(names or ())
        if not wanted:
            filt = Filter(data_type, start_date, end_date, series_ticker, ticker, format,
                          series_files_only)
            listed = [f async for f in self.list(**dataclasses.asdict(filt))]
            have = await asyncio.to_thread(_already_present, dest, listed)
            wanted = [f.name for f in listed if f.name not in have]
            results = [FileResult(f.name, target_path(dest, f.name), f.bytes, f.sha256,
                                  "present", 0) for f in listed if f.name in have]
        else:
            results = []
        downloads, charged = [], 0
        for i in range(0, len(wanted), MAX_NAMES_PER_DOWNLOAD):
            reply = await self._call(self._stub.CreateDatasetDownload,
                                     datasets_pb2.CreateDatasetDownloadRequest(
                                         names=wanted[i:i + MAX_NAMES_PER_DOWNLOAD]))
            downloads.extend(reply.downloads)
            charged += reply.charged_credits
        bar = Progress(sum(d.bytes for d in downloads), len(downloads), enabled=progress)
        limit = asyncio.Semaphore(max(1, concurrency))

        async def one(d: Any) -> FileResult:
            async with limit:
                got = await asyncio.to_thread(
                    fetch_file, d.name, d.url, d.bytes, d.sha256, dest, on_bytes=bar.advance,
                    retries=self._retries, timeout=self._timeout, max_backoff=self._max_backoff)
                bar.file_done(got)
                return got

        try:  # every file runs to its end, so one failure leaves the others whole
            outcomes = await asyncio.gather(*(one(d) for d in downloads), return_exceptions=True)
        finally:
            bar.close()
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            raise failed[0]
        fetched = [o for o in outcomes if isinstance(o, FileResult)]
        order = {name: i for i, name in enumerate([*(r.name for r in results), *wanted])}
        return DownloadResult(sorted([*results, *fetched], key=lambda r: order[r.name]),
                              charged, dest)


def _already_present(dest: Path, listed: Iterable[Any]) -> set[str]:
    """Names of listed files already in `dest`, whole and with the listed SHA-256."""
    return {f.name for f in listed if present(target_path(dest, f.name), f.bytes, f.sha256)}


@dataclass
class Progress:
    """One bar of bytes for a whole download, fed from the worker threads: tqdm when it
    is installed, else a plain stderr line (redrawn on a terminal, one per file off one)."""

    total: int
    files: int
    enabled: bool = True
    done_files: int = field(default=0, init=False)
    done_bytes: int = field(default=0, init=False)
    _bar: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _drawn: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.enabled or not self.files:
            self.enabled = False
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=self.total, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=f"{self.files} files", file=sys.stderr)

    def advance(self, n: int) -> None:
        with self._lock:
            self.done_bytes += n
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.update(n)
            elif sys.stderr.isatty() and time.monotonic() - self._drawn > 0.2:
                self._drawn = time.monotonic()
                sys.stderr.write(f"\r{self._line()}")
                sys.stderr.flush()

    def file_done(self, result: FileResult) -> None:
        with self._lock:
            self.done_files += 1
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.set_postfix_str(f"{self.done_files}/{self.files} done", refresh=True)
            elif not sys.stderr.isatty():
                sys.stderr.write(f"{self._line()}  {result.status} {result.name}\n")

    def close(self) -> None:
        with self._lock:
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.close()
            elif sys.stderr.isatty():
                sys.stderr.write(f"\r{self._line()}\n")

    def _line(self) -> str:
        return (f"{self.done_files}/{self.files} files, {format_bytes(self.done_bytes)} of "
                f"{format_bytes(self.total)}")


def format_bytes(n: int) -> str:
    """A size for people: 512 B, 18.8 KiB, 3.2 GiB."""
    if abs(n) < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
