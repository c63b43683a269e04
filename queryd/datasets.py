"""DatasetService: list, price and sell the daily files the datasets job builds.

Reads the day manifests (ktape/datasets/manifest.py) from the configured storage; never
the files themselves. A download is priced per file by its bytes (ktape/pricing.py),
charged through billingd's ChargeCredits — all files or none, refused before anything
is charged — and answered with URLs signed for 24 h that datasetd's file server checks.
The charge's id is the account, the name and the file's sha256: the same file version
is never charged twice, a rebuilt one (new bytes) is a new purchase.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_status import rpc_status
from psycopg_pool import AsyncConnectionPool

from ktape.billing.v1 import metering_pb2, metering_pb2_grpc
from ktape.datasets import signing
from ktape.datasets.manifest import FileEntry
from ktape.datasets.manifest_cache import ManifestCache
from ktape.datasets.names import DATA_TYPES, FORMATS, BadName, FileName, manifest_name, valid_ticker
from ktape.datasets.storage import Storage
from ktape.errors import InvalidArgument, NotFound, Unauthenticated, Unavailable, rpc_handler
from ktape.log import get_logger
from ktape.marketdata.v1 import data_status_pb2
from ktape.marketdata.v1 import datasets_pb2 as pb
from ktape.marketdata.v1 import datasets_pb2_grpc as pb_grpc
from ktape.paging import PageTokens, checked_page_size, position_of, query_digest
from ktape.pricing import DATASETS, dataset_credits
from queryd.convert import timestamp
from queryd.metering.verifier import RelayedError
from queryd.timeutil import from_us, request_date

log = get_logger(__name__)
_rpc = rpc_handler(log)
MAX_DAYS = 31
MAX_FILES_PER_DOWNLOAD = 1000
DOWNLOAD_METHOD = DATASETS + "CreateDatasetDownload"
CONDITIONS = {"AVAILABLE": data_status_pb2.DATA_CONDITION_AVAILABLE,
              "DEGRADED": data_status_pb2.DATA_CONDITION_DEGRADED,
              "MISSING": data_status_pb2.DATA_CONDITION_MISSING,
              "PENDING": data_status_pb2.DATA_CONDITION_PENDING}
MARKET_KNOWN = "SELECT ticker FROM markets WHERE ticker = %(v)s LIMIT 1"
SERIES_KNOWN = "SELECT series_ticker FROM markets WHERE series_ticker = %(v)s LIMIT 1"


@dataclass(frozen=True)
class Filter:
    """A checked DatasetFilter."""

    first: dt.date
    last: dt.date
    data_type: str
    ticker: str
    series: str
    format: str
    series_only: bool

    def matches(self, entry: FileEntry) -> bool:
        return ((not self.data_type or entry.data_type == self.data_type)
                and (not self.format or entry.format == self.format)
                and (not self.ticker or entry.ticker == self.ticker)
                and (not self.series or entry.series_ticker == self.series)
                and (not self.series_only or not entry.ticker))

    def digest(self) -> str:
        return query_digest("datasets", {
            "first": self.first.isoformat(), "last": self.last.isoformat(), "t": self.data_type,
            "ticker": self.ticker, "series": self.series, "f": self.format,
            "so": str(self.series_only)})


FilterRequest = (pb.ListDatasetFilesRequest | pb.GetDatasetCostRequest
                 | pb.CreateDatasetDownloadRequest)


def checked_filter(f: FilterRequest, today: dt.date) -> Filter:
    """The request's filter fields (each of the three requests has the same ones)."""
    first = request_date(f.start_date, "start_date", today)
    last = request_date(f.end_date, "end_date", first)
    if last < first:
        raise InvalidArgument.field("end_date", "must not be before start_date")
    if (last - first).days >= MAX_DAYS:
        raise InvalidArgument.field("end_date", f"at most {MAX_DAYS} days in one request")
    if f.data_type and f.data_type not in DATA_TYPES:
        raise InvalidArgument.field("data_type", f"one of {', '.join(DATA_TYPES)}")
    if f.format and f.format not in FORMATS:
        raise InvalidArgument.field("format", f"one of {', '.join(FORMATS)}")
    if f.ticker and f.series_ticker:
        raise InvalidArgument.field("ticker", "give ticker or series_ticker, not both")
    for field, value in (("ticker", f.ticker), ("series_ticker", f.series_ticker)):
        if value and not valid_ticker(value):
            raise InvalidArgument.field(field, "is not a valid Kalshi ticker")
    return Filter(first, last, f.data_type, f.ticker, f.series_ticker, f.format,
                  f.series_files_only)


class DatasetService(pb_grpc.DatasetServiceServicer):
    def __init__(self, pool: AsyncConnectionPool, tokens: PageTokens, storage: Storage,
                 metering: metering_pb2_grpc.MeteringServiceStub, signing_key: bytes,
                 public_base: str, caller: Callable[[], object | None],
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.tokens = tokens
        self.manifests = ManifestCache(storage)
        self.metering = metering
        self.signing_key = signing_key
        self.public_base = public_base.rstrip("/")
        self.caller = caller
        self.clock = clock

    async def _known(self, f: Filter) -> None:
        """NOT_FOUND for a market or series that was never recorded (rather than an
        empty list that reads as "no files yet")."""
        for value, query, field, reason in (
                (f.ticker, MARKET_KNOWN, "ticker", "UNKNOWN_TICKER"),
                (f.series, SERIES_KNOWN, "series_ticker", "UNKNOWN_SERIES")):
            if not value:
                continue
            async with self.pool.connection() as conn:
                row = await (await conn.execute(query, {"v": value})).fetchone()
            if row is None:
                raise NotFound(f"no {field} {value!r} is recorded", reason=reason,
                               metadata={"field": field, "value": value})

    async def _matching(self, f: Filter) -> list[FileEntry]:
        await self._known(f)
        out: list[FileEntry] = []
        day = f.first
        while day <= f.last:
            manifest = await self.manifests.manifest(manifest_name(day))
            if manifest is not None:
                out += [e for e in manifest.files.values() if f.matches(e)]
            day += dt.timedelta(days=1)
        out.sort(key=lambda e: (e.date, e.data_type, e.name))
        return out

    async def _named(self, names: list[str]) -> list[FileEntry]:
        out = []
        for index, name in enumerate(names):
            try:
                parsed = FileName.parse(name)
            except BadName as exc:
                raise InvalidArgument.field(f"names[{index}]", str(exc)) from None
            entry = await self.manifests.entry(parsed)
            if entry is None:
                raise NotFound(f"no file {name!r}", reason="FILE_NOT_FOUND",
                               metadata={"field": f"names[{index}]", "name": name})
            out.append(entry)
        return out

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(int(self.clock()), dt.UTC).date()

    @_rpc
    async def ListDatasetFiles(self, request: pb.ListDatasetFilesRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListDatasetFilesResponse:
        f = checked_filter(request, self._today())
        size = checked_page_size(request.page_size)
        position = position_of(self.tokens, request.page_token, f.digest())
        offset = int(position[0]) if position else 0
        files = await self._matching(f)
        page = files[offset:offset + size]
        token = self.tokens.seal(f.digest(), [offset + size]) if offset + size < len(files) else ""
        return pb.ListDatasetFilesResponse(files=[_file(e) for e in page], next_page_token=token)

    @_rpc
    async def GetDatasetCost(self, request: pb.GetDatasetCostRequest,
                             context: grpc.aio.ServicerContext) -> pb.GetDatasetCostResponse:
        files = (await self._named(list(request.names)) if request.names
                 else await self._matching(checked_filter(request, self._today())))
        return pb.GetDatasetCostResponse(file_count=len(files), bytes=sum(e.bytes for e in files),
                                         credits=sum(dataset_credits(e.bytes) for e in files))

    @_rpc
    async def CreateDatasetDownload(self, request: pb.CreateDatasetDownloadRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> pb.CreateDatasetDownloadResponse:
        grant = self.caller()
        if grant is None:
            raise Unauthenticated("a download needs an API key or a console session",
                                  reason="API_KEY_MISSING")
        if len(request.names) > MAX_FILES_PER_DOWNLOAD:
            raise InvalidArgument.field("names", f"at most {MAX_FILES_PER_DOWNLOAD} files")
        files = (await self._named(list(request.names)) if request.names
                 else await self._matching(checked_filter(request, self._today())))
        if not files:
            raise NotFound("no file matches the filter", reason="FILE_NOT_FOUND",
                           metadata={"field": "names"})
        if len(files) > MAX_FILES_PER_DOWNLOAD:
            raise InvalidArgument.field("names", f"{len(files)} files match; at most "
                                        f"{MAX_FILES_PER_DOWNLOAD} in one download")
        account = getattr(grant, "account_id", "")
        try:
            charged = await self.metering.ChargeCredits(metering_pb2.ChargeCreditsRequest(
                key_id=getattr(grant, "key_id", ""), method=DOWNLOAD_METHOD,
                items=[metering_pb2.ChargeItem(
                    item_id=f"dataset:{account}:{e.sha256}:{e.name}",
                    credits=dataset_credits(e.bytes), description=e.ticker or e.series_ticker)
                    for e in files]), timeout=10)
        except grpc.aio.AioRpcError as exc:
            status = rpc_status.from_call(exc)
            if status is not None:  # billingd's refusal (credits, cap, suspended) as it is
                raise RelayedError(status) from None
            log.error("dataset.charge_failed", account_id=account, error=exc.code().name)
            raise Unavailable("billing is unavailable; retry shortly",
                              reason="BILLING_UNAVAILABLE", retry_after_secs=2.0) from None
        expires = signing.expiry(self.clock())
        out = pb.CreateDatasetDownloadResponse(charged_credits=charged.charged_credits)
        for e in files:
            out.downloads.append(pb.DatasetDownload(
                name=e.name, url=self.public_base + signing.signed_path(self.signing_key, e.name,
                                                                        expires),
                expire_time=timestamp(dt.datetime.fromtimestamp(expires, dt.UTC)),
                bytes=e.bytes, sha256=e.sha256))
        log.info("dataset.download_created", account_id=account, files=len(files),
                 credits=charged.charged_credits, already=len(charged.already_charged))
        return out


def _file(e: FileEntry) -> pb.DatasetFile:
    out = pb.DatasetFile(
        name=e.name, data_type=e.data_type, date=e.date, ticker=e.ticker,
        series_ticker=e.series_ticker, format=e.format, bytes=e.bytes, rows=e.rows,
        sha256=e.sha256, condition=CONDITIONS.get(e.condition, 0),
        last_modified_time=timestamp(from_us(e.last_modified_us)),
        credits=dataset_credits(e.bytes))
    if e.first_ts_us is not None:
        out.first_time.CopyFrom(timestamp(from_us(e.first_ts_us)))
    if e.last_ts_us is not None:
        out.last_time.CopyFrom(timestamp(from_us(e.last_ts_us)))
    return out
