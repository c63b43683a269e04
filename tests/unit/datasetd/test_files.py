"""datasetd's file route over a real loopback socket, on a real local store: signed URLs
only (403 forged, missing or expired; 404 for a file that does not exist), whole files,
HEAD, each single-range form (206), 416 past the end, 304 for a matching ETag, the
validators from the manifest, and a download cut mid-way resumed with Range to the same
SHA-256 — in bounded memory."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import hashlib
import os
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from datasetd.files import FileMetrics, make_app
from ktape.datasets.manifest import DayManifest, FileEntry
from ktape.datasets.manifest_cache import ManifestCache
from ktape.datasets.names import FileName, manifest_name
from ktape.datasets.signing import expiry, signed_path
from ktape.datasets.storage import LocalStorage, S3Storage, Storage

KEY = os.urandom(32)
DAY = dt.date(2026, 12, 1)
PARQUET = "book_changes/2026-12-01/KXBTC-26DEC01-T100000.parquet"
CSV = "trades/2026-12-01/series/KXBTC.csv.gz"
UNLISTED = "quotes/2026-12-01/KXBTC-26DEC01-T100000.parquet"


def _entry(name: str, data: bytes, sha256: str | None = None) -> FileEntry:
    parsed = FileName.parse(name)
    return FileEntry(name=name, data_type=parsed.data_type, date=DAY.isoformat(),
                     ticker=parsed.ticker, series_ticker=parsed.series_ticker or "KXBTC",
                     format=parsed.format, bytes=len(data), rows=10,
                     sha256=sha256 or hashlib.sha256(data).hexdigest(), first_ts_us=1, last_ts_us=2,
                     condition="AVAILABLE", last_modified_us=1_764_640_000_000_000, source="fp")


def publish(store: Storage, files: dict[str, bytes], **sha_overrides: str) -> DayManifest:
    """Files first, then the manifest naming them: the build job's order."""
    manifest = DayManifest(DAY, closed=True)
    for name, data in files.items():
        local = store.scratch_dir() / "f.part"
        local.write_bytes(data)
        store.publish(local, name)
        manifest.put(_entry(name, data, sha_overrides.get(name)))
    store.write_bytes(manifest_name(DAY), manifest.to_bytes())
    return manifest


@dataclass
class Served:
    client: httpx.AsyncClient
    store: LocalStorage
    metrics: FileMetrics
    files: dict[str, bytes]

    def url(self, name: str, expires: int | None = None) -> str:
        return signed_path(KEY, name, expires if expires is not None else expiry(time.time()))


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    store = LocalStorage(tmp_path / "datasets")
    files = {PARQUET: os.urandom(3 * (1 << 20) + 4321), CSV: gzip.compress(b"ts,price\n1,0.42\n" * 500)}
    publish(store, files)
    metrics = FileMetrics()
    app = make_app(store, KEY, metrics=metrics, manifests=ManifestCache(store, recheck_secs=0))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            yield Served(client, store, metrics, files)
    finally:
        await server.close()


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


async def test_whole_file_with_every_header(served):
    data = served.files[PARQUET]
    before = time.time()
    resp = await served.client.get(served.url(PARQUET))
    assert resp.status_code == 200
    assert resp.content == data
    h = resp.headers
    assert h["content-length"] == str(len(data))
    assert h["accept-ranges"] == "bytes"
    assert h["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert h["repr-digest"] == f"sha-256=:{b64_sha256(data)}:"
    assert h["content-type"] == "application/vnd.apache.parquet"
    assert h["content-disposition"] == (
        'attachment; filename="book_changes_2026-12-01_KXBTC-26DEC01-T100000.parquet"')
    assert "content-range" not in h
    cache, max_age = h["cache-control"].split(", max-age=")
    assert cache == "private" and 24 * 3600 - 5 <= int(max_age) <= 24 * 3600
    assert h["last-modified"].endswith(" GMT")
    assert time.time() - before < 10


async def test_csv_gz_is_served_as_gzip_bytes_not_decoded(served):
    resp = await served.client.get(served.url(CSV))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in resp.headers  # the file is gzip; the transfer is not
    assert resp.content == served.files[CSV]
    assert resp.headers["content-disposition"].endswith('filename="trades_2026-12-01_series_KXBTC.csv.gz"')


async def test_head_has_the_headers_and_no_body(served):
    data = served.files[PARQUET]
    resp = await served.client.head(served.url(PARQUET))
    assert resp.status_code == 200 and resp.content == b""
    assert resp.headers["content-length"] == str(len(data))
    assert resp.headers["repr-digest"] == f"sha-256=:{b64_sha256(data)}:"
    ranged = await served.client.head(served.url(PARQUET), headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206 and ranged.headers["content-length"] == "100"


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-0", 0, 1),
    ("bytes=100-199", 100, 200),
    ("bytes=1048570-2097160", 1048570, 2097161),  # across a read chunk boundary
    ("bytes=3000000-", 3000000, None),
    ("bytes=3000000-99999999", 3000000, None),  # a last position past the end is clipped
    ("bytes=-500", -500, None),
    ("bytes=-99999999", 0, None),  # a suffix longer than the file is the whole file
])
async def test_each_single_range_form_is_206(served, header, start, end):
    data = served.files[PARQUET]
    expected = data[start:end]
    first = start if start >= 0 else len(data) + start
    resp = await served.client.get(served.url(PARQUET), headers={"Range": header})
    assert resp.status_code == 206
    assert resp.content == expected
    assert resp.headers["content-length"] == str(len(expected))
    assert resp.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/{len(data)}"
    # The digest is of the whole file (the representation), not of the part.
    assert resp.headers["repr-digest"] == f"sha-256=:{b64_sha256(data)}:"
    assert resp.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'


@pytest.mark.parametrize("header", ["bytes=99999999-", "bytes=99999999-100000000", "bytes=-0"])
async def test_a_range_outside_the_file_is_416(served, header):
    size = len(served.files[PARQUET])
    resp = await served.client.get(served.url(PARQUET), headers={"Range": header})
    assert resp.status_code == 416
    assert resp.headers["content-range"] == f"bytes */{size}"
    body = resp.json()
    assert body["code"] == 11 and body["details"][0]["reason"] == "RANGE_NOT_SATISFIABLE"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=10-5", "bytes=abc", "bytes=-"])
async def test_ranges_it_does_not_serve_are_ignored_for_the_whole_file(served, header):
    resp = await served.client.get(served.url(PARQUET), headers={"Range": header})
    assert resp.status_code == 200 and resp.content == served.files[PARQUET]


async def test_if_none_match_is_304_with_the_validators(served):
    data = served.files[PARQUET]
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    for header in (etag, f'"other", W/{etag}', "*"):
        resp = await served.client.get(served.url(PARQUET), headers={"If-None-Match": header})
        assert resp.status_code == 304, header
        assert resp.content == b""
        assert resp.headers["etag"] == etag
        assert resp.headers["repr-digest"] == f"sha-256=:{b64_sha256(data)}:"
        assert resp.headers["cache-control"].startswith("private, max-age=")
    resp = await served.client.get(served.url(PARQUET), headers={"If-None-Match": '"stale"'})
    assert resp.status_code == 200 and resp.content == data


async def test_if_range_with_another_etag_sends_the_whole_file(served):
    data = served.files[PARQUET]
    etag = f'"{hashlib.sha256(data).hexdigest()}"'
    same = await served.client.get(served.url(PARQUET), headers={"Range": "bytes=10-", "If-Range": etag})
    assert same.status_code == 206 and same.content == data[10:]
    other = await served.client.get(served.url(PARQUET),
                                    headers={"Range": "bytes=10-", "If-Range": '"older-version"'})
    assert other.status_code == 200 and other.content == data


async def test_validators_come_from_the_manifest_not_from_hashing(served):
    """The manifest is the source of truth for ETag and Repr-Digest: the file server
    never re-hashes a file per request."""
    data = os.urandom(1000)
    pretend = "cd" * 32  # deliberately not the file's hash
    publish(served.store, {**served.files, PARQUET: data}, **{PARQUET: pretend})
    resp = await served.client.get(served.url(PARQUET))
    assert resp.status_code == 200 and resp.content == data
    assert resp.headers["etag"] == f'"{pretend}"'
    assert resp.headers["repr-digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(pretend)).decode()}:"


async def test_forged_missing_and_expired_signatures_are_403(served):
    good = served.url(PARQUET)
    forged_sig = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    other_name = good.replace("KXBTC-26DEC01-T100000", "KXBTC-26DEC01-T200000")
    cases = {
        "forged_signature": [forged_sig, other_name,
                             good.replace("expires=", "expires=9")],  # a longer life
        "missing_signature": [f"/v1/files/{PARQUET}", f"/v1/files/{PARQUET}?expires=1"],
        "malformed_signature": [good.split("&sig=")[0] + "&sig=%%%"],
        "expired": [served.url(PARQUET, expires=int(time.time()) - 1)],
    }
    with capture_logs() as logs:
        for reason, urls in cases.items():
            for url in urls:
                resp = await served.client.get(url)
                assert resp.status_code == 403, (reason, url)
                body = resp.json()
                assert body["code"] == 7
                info = body["details"][0]
                assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
                assert info["domain"] == "ktape.dev"
                assert info["reason"] == ("DOWNLOAD_URL_EXPIRED" if reason == "expired"
                                          else "DOWNLOAD_URL_INVALID")
                assert resp.content.find(served.files[PARQUET][:64]) == -1
    refused = [(e["reason"], e["status"]) for e in logs if e["event"] == "file.refused"]
    assert sorted(refused) == sorted((reason, 403) for reason, urls in cases.items() for _ in urls)
    assert all("sig" not in e for e in logs)  # the signature itself is never logged
    assert served.metrics.registry.get_sample_value(
        "datasetd_file_refusals_total", {"reason": "expired"}) == 1


async def test_a_file_that_does_not_exist_is_404(served):
    # A valid signature on a name the day's manifest does not list...
    unlisted = await served.client.get(served.url(UNLISTED))
    # ...on a day with no manifest at all...
    no_day = await served.client.get(served.url("trades/2026-11-30/KXBTC.parquet"))
    # ...and on a listed file whose object is gone.
    (served.store.root / PARQUET).unlink()
    gone = await served.client.get(served.url(PARQUET))
    for resp in (unlisted, no_day, gone):
        assert resp.status_code == 404
        assert resp.json()["details"][0]["reason"] == "DATASET_FILE_NOT_FOUND"
        assert resp.json()["code"] == 5


async def test_a_file_mid_rebuild_is_503_with_retry_after(served):
    """Published but the manifest not yet rewritten: the stored size disagrees with the
    entry, and serving the entry's ETag with the new bytes would be a lie."""
    local = served.store.scratch_dir() / "f.part"
    local.write_bytes(b"a rebuilt, shorter file")
    served.store.publish(local, PARQUET)
    resp = await served.client.get(served.url(PARQUET))
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "5"
    assert resp.json()["details"][0]["reason"] == "DATASET_FILE_REBUILDING"


async def test_a_rebuild_is_seen_with_its_new_etag(served):
    old = await served.client.get(served.url(PARQUET))
    new_data = os.urandom(2048)
    publish(served.store, {**served.files, PARQUET: new_data})
    new = await served.client.get(served.url(PARQUET), headers={"If-None-Match": old.headers["etag"]})
    assert new.status_code == 200 and new.content == new_data
    assert new.headers["etag"] == f'"{hashlib.sha256(new_data).hexdigest()}"'


async def test_other_methods_are_405_json(served):
    resp = await served.client.post(served.url(PARQUET))
    assert resp.status_code == 405 and resp.headers["allow"] == "GET, HEAD"
    assert resp.json()["code"] == 12


async def _cut_download(port: int, path: str, keep: int) -> tuple[dict[str, str], bytes]:
    """GET over a raw socket, keep the headers and the first `keep` body bytes, then reset
    the connection (as a dropped network would): deterministic, unlike closing a client
    library's stream, which may linger until garbage collection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status_line, *lines = head.strip().split("\r\n")
    assert status_line == "HTTP/1.1 200 OK", status_line
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    body = await reader.readexactly(keep)
    writer.transport.abort()
    return headers, body


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_cut_download_resumed_with_range_has_the_same_sha256(tmp_path, handler_cancellation):
    """The whole point of Range and Repr-Digest: a client cut off mid-way asks for the
    rest and, joined, has exactly the file the header promised. Both ways aiohttp can
    tell a handler of the cut: a failed write (datasetd's runner) or a cancellation."""
    store = LocalStorage(tmp_path / "datasets")
    data = os.urandom(24 << 20)  # well past socket buffers, so the cut is mid-body
    publish(store, {PARQUET: data})
    metrics = FileMetrics()
    runner = web.AppRunner(make_app(store, KEY, metrics=metrics), access_log=None,
                           handler_cancellation=handler_cancellation)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    path = signed_path(KEY, PARQUET, expiry(time.time()))
    try:
        with capture_logs() as logs:
            headers, got = await _cut_download(port, path, 3 << 20)
            assert headers["content-length"] == str(len(data))
            async with httpx.AsyncClient(timeout=30) as client:
                rest = await client.get(f"http://127.0.0.1:{port}{path}",
                                        headers={"Range": f"bytes={len(got)}-"})
            assert rest.status_code == 206
            assert rest.headers["content-range"] == f"bytes {len(got)}-{len(data) - 1}/{len(data)}"
            whole = got + rest.content
            assert headers["repr-digest"] == f"sha-256=:{b64_sha256(whole)}:"
            assert hashlib.sha256(whole).digest() == hashlib.sha256(data).digest()
            deadline = time.monotonic() + 10
            while metrics.registry.get_sample_value(
                    "datasetd_file_requests_total", {"method": "GET", "status": "200"}) != 1:
                assert time.monotonic() < deadline, f"the server never finished the cut one: {logs}"
                await asyncio.sleep(0.05)
        cut = [e for e in logs if e["event"] == "file.interrupted"]
        assert len(cut) == 1 and cut[0]["name"] == PARQUET
        assert len(got) <= cut[0]["bytes"] < len(data)
        assert metrics.registry.get_sample_value("datasetd_file_downloads_open") == 0
        sent = metrics.registry.get_sample_value("datasetd_file_sent_bytes_total")
        assert sent == cut[0]["bytes"] + len(rest.content)  # what was written, not what was asked
    finally:
        await runner.cleanup()


async def test_memory_stays_bounded_for_a_large_file(tmp_path):
    """A 256 MiB file (sparse on disk) streams through in chunks: Python's peak
    allocation stays a small fraction of the file, so a 1 GB file is not read whole."""
    store = LocalStorage(tmp_path / "datasets")
    size = 256 << 20
    local = store.scratch_dir() / "big.part"
    with open(local, "wb") as out:
        out.truncate(size)
    store.publish(local, PARQUET)
    manifest = DayManifest(DAY, closed=True)
    manifest.put(replace(_entry(PARQUET, b""), bytes=size, sha256="00" * 32))
    store.write_bytes(manifest_name(DAY), manifest.to_bytes())
    server = TestServer(make_app(store, KEY), host="127.0.0.1", port=0)
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}{signed_path(KEY, PARQUET, expiry(time.time()))}"
    tracemalloc.start()
    try:
        received = 0
        async with httpx.AsyncClient(timeout=60) as client, client.stream("GET", url) as resp:
            assert resp.status_code == 200
            async for chunk in resp.aiter_raw():
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await server.close()
    assert received == size
    assert peak < 32 << 20, f"peak {peak / 2**20:.1f} MiB for a {size >> 20} MiB file"


async def test_serves_from_an_s3_store(tmp_path, s3_server, s3_env):
    """The same route over S3Storage (moto's server): ranges become ranged GETs."""
    store = S3Storage(s3_server.new_bucket(), "ds", endpoint_url=s3_server.endpoint_url,
                      scratch_root=tmp_path)
    data = os.urandom((2 << 20) + 99)
    publish(store, {PARQUET: data})
    server = TestServer(make_app(store, KEY), host="127.0.0.1", port=0)
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}{signed_path(KEY, PARQUET, expiry(time.time()))}"
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            whole = await client.get(url)
            part = await client.get(url, headers={"Range": "bytes=1048570-1048590"})
            missing = await client.get(f"http://127.0.0.1:{server.port}"
                                       f"{signed_path(KEY, UNLISTED, expiry(time.time()))}")
    finally:
        await server.close()
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["repr-digest"] == f"sha-256=:{b64_sha256(data)}:"
    assert part.status_code == 206 and part.content == data[1048570:1048591]
    assert missing.status_code == 404
