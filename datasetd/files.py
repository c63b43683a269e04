"""`GET/HEAD /v1/files/{name}?expires=&sig=`: dataset files, by signed URL, by byte range.

Why its own small HTTP server rather than a gRPC method: downloads are plain HTTP so any
client (curl -C -, a browser, pandas reading a URL) can fetch and resume them, and a
gigabyte must stream through Envoy without transcoding or buffering.

The order of checks is the order of what a request may learn: the signature first (a
forged URL learns nothing, not even whether the file exists: 403), then the day's
manifest (a file that is not in it does not exist: 404), then the stored object. The
validators come from the manifest entry, never from re-hashing the file: `ETag` is the
file's SHA-256 (strong), `Repr-Digest` (RFC 9530) the same digest in base64, sent with
every 200, 206 and 304 so a resumed download can be checked whole at the end.

Ranges (RFC 9110 §14): one `bytes=a-b`, `a-` or `-n` range gives 206 with
`Content-Range`; a range starting past the end gives 416 with `Content-Range: bytes
*/size`; several ranges, another unit or a malformed header are ignored (200, the whole
file), as the RFC allows. `If-Range` with anything but the current ETag also gives the
whole file, so a resume across a rebuild never splices two versions. The body streams
from `Storage.read_range` chunk by chunk (bounded memory), each chunk read off the event
loop, each write awaited (a slow client slows the reads, it never queues the file).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from ktape.datasets.manifest_cache import ManifestCache
from ktape.datasets.names import BadName, FileName
from ktape.datasets.signing import URL_PREFIX, Verdict, verify
from ktape.datasets.storage import Storage
from ktape.errors import (
    KtapeError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    Unavailable,
    Unimplemented,
)
from ktape.log import get_logger

log = get_logger(__name__)

CONTENT_TYPES = {"parquet": "application/vnd.apache.parquet", "csv.gz": "application/gzip"}
REBUILD_RETRY_SECS = 5
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


class FileMetrics:
    """Prometheus metrics of the file server: requests by method and status, bytes sent,
    refusals by reason, downloads in flight. Labels are bounded sets (never the name)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter("datasetd_file_requests_total",
                                "File requests by method and HTTP status", ["method", "status"],
                                registry=self.registry)
        self.bytes_sent = Counter("datasetd_file_sent_bytes_total",
                                  "Bytes of file bodies sent to clients", registry=self.registry)
        self.refusals = Counter("datasetd_file_refusals_total",
                                "Requests refused, by reason (bad signature, expired, missing file)",
                                ["reason"], registry=self.registry)
        self.open = Gauge("datasetd_file_downloads_open", "File bodies being sent now",
                          registry=self.registry)


class _Refused(Exception):
    """A request answered with an error: HTTP status, the API's error body, log reason."""

    def __init__(self, status: int, error: KtapeError, reason: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers or {}


class _Unsatisfiable(Exception):
    pass


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range `header` asks for as [start, end), or None for the whole file;
    raises _Unsatisfiable when it starts past the end (416)."""
    if header is None:
        return None
    found = _RANGE.fullmatch(header.strip())
    if found is None or found[0] == "bytes=-":
        return None  # several ranges, another unit, malformed: ignored (RFC 9110 §14.2)
    first, last = found[1], found[2]
    if first:
        start = int(first)
        if last and int(last) < start:
            return None  # an invalid range-spec: ignored like any malformed one
        if start >= size:
            raise _Unsatisfiable
        return start, size if not last else min(int(last) + 1, size)
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise _Unsatisfiable
    return max(0, size - suffix), size


def _matches(header: str, etag: str) -> bool:
    """If-None-Match: `*` or a list of tags, weak comparison (RFC 9110 §13.1.2)."""
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def repr_digest(sha256_hex: str) -> str:
    """RFC 9530 `Repr-Digest` of a file whose SHA-256 is `sha256_hex`."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256_hex)).decode('ascii')}:"


def download_filename(name: FileName) -> str:
    """One flat, unique file name per dataset file, for `Content-Disposition` (the last
    path part alone would collide across days and data types)."""
    return str(name).replace("/", "_")


def make_app(storage: Storage, key: bytes, *, metrics: FileMetrics | None = None,
             clock: Callable[[], float] = time.time,
             manifests: ManifestCache | None = None) -> web.Application:
    """The file routes over `storage`, checking URLs signed with `key`."""
    metrics = metrics or FileMetrics()
    manifests = manifests or ManifestCache(storage)

    async def serve(request: web.Request) -> web.StreamResponse:
        began = time.perf_counter()
        name = request.match_info["name"]
        fields: dict[str, Any] = {"name": name, "method": request.method,
                                  "request_id": request.headers.get("X-Request-Id", "")}
        try:
            response = await _serve(request, name, fields)
        except (ConnectionError, asyncio.CancelledError):  # the client left mid-body (_stream logs it)
            metrics.requests.labels(request.method, str(fields.get("status", 0))).inc()
            raise
        except _Refused as refused:
            metrics.refusals.labels(refused.reason).inc()
            metrics.requests.labels(request.method, str(refused.status)).inc()
            log.info("file.refused", reason=refused.reason, status=refused.status, **fields)
            return web.json_response(refused.error.to_json(), status=refused.status, dumps=_compact,
                                     headers={"Cache-Control": "no-store", **refused.headers})
        metrics.requests.labels(request.method, str(response.status)).inc()
        fields.pop("status", None)
        log.info("file.served", status=response.status,
                 duration_ms=round((time.perf_counter() - began) * 1000, 2), **fields)
        return response

    async def _serve(request: web.Request, name: str, fields: dict[str, Any]) -> web.StreamResponse:
        now = clock()
        expires, sig = request.query.get("expires"), request.query.get("sig")
        verdict = verify(key, name, expires, sig, now)
        if verdict is Verdict.EXPIRED:
            raise _Refused(403, PermissionDenied(
                "this download URL has expired: ask for a new one (CreateDatasetDownload; "
                "fetching a file again costs nothing)", reason="DOWNLOAD_URL_EXPIRED",
                metadata={"name": name, "expires": str(expires)}), verdict.value)
        if not verdict.ok:
            raise _Refused(403, PermissionDenied(
                "this download URL is not valid: its signature is missing or does not match",
                reason="DOWNLOAD_URL_INVALID", metadata={"name": name}), verdict.value)
        assert expires is not None  # a valid verdict has both
        try:
            file_name = FileName.parse(name)
        except BadName:
            raise _Refused(404, _not_found(name), "bad_name") from None
        entry = await manifests.entry(file_name)
        if entry is None:
            raise _Refused(404, _not_found(name), "not_in_manifest")
        stat = await asyncio.to_thread(storage.stat, name)
        if stat is None:
            raise _Refused(404, _not_found(name), "no_stored_file")
        if stat.size != entry.bytes:  # published, manifest not yet rewritten (a rebuild)
            raise _Refused(503, Unavailable(
                f"{name} is being rebuilt; retry in {REBUILD_RETRY_SECS} s",
                retry_after_secs=REBUILD_RETRY_SECS, reason="DATASET_FILE_REBUILDING",
                metadata={"name": name}), "being_rebuilt",
                {"Retry-After": str(REBUILD_RETRY_SECS)})

        size = entry.bytes
        etag = f'"{entry.sha256}"'
        headers = {
            "ETag": etag,
            "Repr-Digest": repr_digest(entry.sha256),
            "Accept-Ranges": "bytes",
            "Cache-Control": f"private, max-age={max(0, int(expires) - int(now))}",
            "Last-Modified": email.utils.formatdate(entry.last_modified_us / 1e6, usegmt=True),
        }
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None and _matches(if_none_match, etag):
            return web.Response(status=304, headers=headers)

        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if if_range is not None and if_range.strip() != etag:
            range_header = None  # the client's part is of another version: send it all
        try:
            wanted = byte_range(range_header, size)
        except _Unsatisfiable:
            raise _Refused(416, OutOfRange(
                f"range {range_header!r} is outside the file ({size} bytes)",
                reason="RANGE_NOT_SATISFIABLE", metadata={"name": name, "bytes": str(size)}),
                "range_not_satisfiable", {"Content-Range": f"bytes */{size}",
                                          "Accept-Ranges": "bytes"}) from None
        start, end = wanted if wanted is not None else (0, size)
        headers["Content-Type"] = CONTENT_TYPES[file_name.format]
        headers["Content-Disposition"] = f'attachment; filename="{download_filename(file_name)}"'
        headers["X-Content-Type-Options"] = "nosniff"
        if wanted is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            fields["range"] = f"{start}-{end - 1}"
        fields["status"] = 206 if wanted is not None else 200
        response = web.StreamResponse(status=fields["status"], headers=headers)
        response.content_length = end - start
        await response.prepare(request)
        if request.method == "HEAD":
            await response.write_eof()
            return response
        fields["bytes"] = await _stream(response, name, start, end)
        await response.write_eof()
        return response

    async def _stream(response: web.StreamResponse, name: str, start: int, end: int) -> int:
        chunks = storage.read_range(name, start, end)
        reading: asyncio.Task[bytes | None] | None = None
        sent = 0
        metrics.open.inc()
        try:
            while True:
                # Shielded: a cancelled handler must not abandon a read still running in
                # its thread (closing the generator under it would fail).
                reading = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
                chunk = await asyncio.shield(reading)
                reading = None
                if chunk is None:
                    break
                await response.write(chunk)
                sent += len(chunk)
                metrics.bytes_sent.inc(len(chunk))
        except (ConnectionError, asyncio.CancelledError):
            # The client went away: a write fails, or (with aiohttp's handler_cancellation)
            # the handler is cancelled. Either way aiohttp drops the connection quietly.
            log.info("file.interrupted", name=name, start=start, end=end, bytes=sent)
            raise
        finally:
            metrics.open.dec()
            if reading is not None:
                await asyncio.wait([reading])
                if not reading.cancelled():
                    reading.exception()  # retrieved: the error that matters is already raised
            await asyncio.to_thread(chunks.close)  # frees an S3 stream of a cut download
        if sent != end - start:  # the stored file shrank under us: never end the body short
            log.error("file.truncated", name=name, start=start, end=end, bytes=sent)
            raise ConnectionAbortedError(f"{name}: {sent} of {end - start} bytes")
        return sent

    async def not_allowed(request: web.Request) -> web.Response:
        error = Unimplemented(f"{request.method} is not supported here: GET or HEAD",
                              reason="METHOD_NOT_ALLOWED", metadata={"method": request.method})
        metrics.requests.labels(request.method, "405").inc()
        return web.json_response(error.to_json(), status=405, dumps=_compact,
                                 headers={"Allow": "GET, HEAD"})

    app = web.Application()
    route = URL_PREFIX + "{name:.+}"
    app.router.add_get(route, serve)  # HEAD too
    app.router.add_route("*", route, not_allowed)
    return app


def _compact(body: Any) -> str:
    """JSON as Envoy's transcoder writes error bodies (no whitespace)."""
    return json.dumps(body, separators=(",", ":"))


def _not_found(name: str) -> NotFound:
    return NotFound(f"no dataset file {name!r}", reason="DATASET_FILE_NOT_FOUND",
                    metadata={"name": name})
