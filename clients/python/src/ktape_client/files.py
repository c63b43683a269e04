"""Fetching one dataset file by its signed URL: resumable, verified, moved into place whole.

Plain HTTP through the standard library (urllib, so `http_proxy` / `https_proxy` /
`no_proxy` are honoured like in any other tool): the URL is the whole credential, no key
is sent. Bytes go to `<dest>/<dir>/.<file>.part`; a cut transfer is resumed with
`Range: bytes=<have>-` and `If-Range: <ETag>`, so a file rebuilt in between comes back
whole (200) instead of two versions joined. The SHA-256 is computed while writing and
checked against the download's `sha256` and the server's `Repr-Digest` (RFC 9530) before
the file is renamed into place, so a file under its final name is always complete and
right. Blocking: AsyncClient runs it in a worker thread per file.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ktape_client.errors import (
    ChecksumMismatchError,
    DownloadError,
    backoff_seconds,
    from_http_error,
)

CHUNK_BYTES = 1 << 20
HASH_READ_BYTES = 4 << 20


class _Cut(Exception):
    """The body ended before its length: http.client returns b"" then, raising nothing."""


TRANSIENT = (_Cut, http.client.HTTPException, ConnectionError, TimeoutError,
             urllib.error.URLError)
RETRIED_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class FileResult:
    """What happened to one file: `status` is `downloaded`, `resumed` (part of it was
    already on disk from a cut transfer) or `present` (already there, right SHA-256,
    nothing fetched). `fetched_bytes` is what went over the network this time."""

    name: str
    path: Path
    bytes: int
    sha256: str
    status: str
    fetched_bytes: int


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def target_path(dest: Path, name: str) -> Path:
    """Where a file goes: its name below `dest` (the name's `/` become directories).
    Names come from the server; one that would leave `dest` is refused."""
    path = (dest / name).resolve()
    if not path.is_relative_to(dest.resolve()) or name.startswith("/"):
        raise DownloadError("the file name leaves the destination directory", name=name)
    return path


def part_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.part")


def present(path: Path, size: int, sha256: str) -> bool:
    """A file already in place with the right size and SHA-256 (never fetched again)."""
    return path.is_file() and path.stat().st_size == size and sha256_of(path) == sha256


def digest_header(value: str | None) -> str | None:
    """The hex SHA-256 in a `Repr-Digest: sha-256=:<base64>:` header, if there is one."""
    for item in (value or "").split(","):
        algorithm, _, encoded = item.strip().partition("=")
        if algorithm.strip().lower() == "sha-256" and encoded.startswith(":"):
            try:
                return base64.b64decode(encoded.strip(":")).hex()
            except ValueError:
                return None
    return None


def fetch_file(name: str, url: str, size: int, sha256: str, dest: Path, *,
               on_bytes: Callable[[int], None], retries: int = 4, timeout: float = 60.0,
               max_backoff: float = 8.0) -> FileResult:
    """Fetch one file into `dest` (see the module docstring). A cut is retried up to
    `retries` times, each resuming from what is on disk; after that DownloadError, with
    the part file kept for the next call. A wrong SHA-256 is ChecksumMismatchError (the
    part file is deleted). `on_bytes(n)` is told of every chunk written, and of a
    negative n when bytes already counted are thrown away (a restart from zero)."""
    path = target_path(dest, name)
    if present(path, size, sha256):
        return FileResult(name, path, size, sha256, "present", 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(path)
    resumed_from = part.stat().st_size if part.exists() else 0
    etag = f'"{sha256}"'  # the file route's ETag is the quoted hex SHA-256
    fetched = 0
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if have > size:  # not this file's prefix: start afresh
            part.unlink()
            have = 0
        digest = hashlib.sha256()
        if have:
            with open(part, "rb") as f:
                while chunk := f.read(HASH_READ_BYTES):
                    digest.update(chunk)
        if attempt == 0:
            on_bytes(have)  # what is already on disk counts once toward the total
        if have == size and digest.hexdigest() == sha256:
            os.replace(part, path)  # complete already (cut before the rename): no request
            return FileResult(name, path, size, sha256, "resumed", fetched)
        request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
        if have:
            request.add_header("Range", f"bytes={have}-")
            request.add_header("If-Range", etag)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                server_digest = digest_header(response.headers.get("Repr-Digest"))
                etag = response.headers.get("ETag") or etag
                if response.status == 206:
                    start = _range_start(response.headers.get("Content-Range"))
                    if start != have:
                        raise DownloadError(f"asked for bytes from {have}, got a range from "
                                            f"{start}", name=name)
                    mode = "ab"
                else:  # 200: the whole file (no range asked, or the file changed)
                    if have:
                        on_bytes(-have)
                    have, digest, mode = 0, hashlib.sha256(), "wb"
                with open(part, mode) as out:
                    while chunk := response.read(CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        fetched += len(chunk)
                        on_bytes(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
                if part.stat().st_size < size:
                    raise _Cut()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            if exc.code == 416 and have:  # what we hold is not a prefix of this file
                part.unlink(missing_ok=True)
                on_bytes(-have)
                attempt += 1
                continue
            error = from_http_error(exc.code, body, exc.headers.get("Retry-After"))
            if exc.code not in RETRIED_STATUS or attempt >= retries:
                raise DownloadError(error.message, name=name, code=error.code,
                                    reason=error.reason, metadata=error.metadata) from None
            time.sleep(backoff_seconds(attempt, max_backoff, error.retry_after))
            attempt += 1
            continue
        except TRANSIENT as exc:
            if attempt >= retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"the transfer was cut ({type(exc).__name__}) after {kept} of {size} "
                    "bytes; download again to resume", name=name, reason="TRANSFER_CUT",
                    metadata={"bytes_kept": str(kept)}) from None
            time.sleep(backoff_seconds(attempt, max_backoff))
            attempt += 1
            continue
        got = digest.hexdigest()
        if part.stat().st_size != size or got != sha256 or (server_digest not in (None, sha256)):
            part.unlink(missing_ok=True)
            why = ("the server's Repr-Digest is another file's: it was rebuilt since the "
                   "download was created; create the download again"
                   if server_digest not in (None, sha256) else
                   "the bytes received do not have the SHA-256 the download promised")
            raise ChecksumMismatchError(why, name=name, expected=sha256, got=got)
        os.replace(part, path)
        status = "resumed" if resumed_from else "downloaded"
        return FileResult(name, path, size, sha256, status, fetched)


def _range_start(content_range: str | None) -> int | None:
    """The first byte of `Content-Range: bytes a-b/size`."""
    if not content_range or not content_range.startswith("bytes "):
        return None
    first = content_range[6:].split("-", 1)[0]
    return int(first) if first.isdigit() else None

