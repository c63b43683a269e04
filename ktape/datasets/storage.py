"""Where dataset files live: a local directory by default, an S3-compatible bucket when
`KTAPE_DATASETS_URL` is `s3://bucket/prefix`.

Why an interface this small: the build job publishes finished files and manifests, the
API reads manifests, the file server reads byte ranges. Each backend makes `publish`
atomic (a local rename; one S3 upload, which S3 shows only once complete), so no reader
ever sees half a file. `open_storage(settings)` picks the backend.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ktape.config import Settings

CHUNK = 1 << 20
# Above this a publish to S3 is a multipart upload (boto3's default is 8 MiB); parts of
# this size keep a 10 GB file under S3's 10,000-part limit.
MULTIPART_THRESHOLD_BYTES = 64 << 20
MULTIPART_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class Stat:
    size: int
    mtime_us: int
    # Changes whenever the object is replaced, even within one mtime tick (S3's are whole
    # seconds): inode and nanosecond mtime locally, the ETag on S3. Readers that cache
    # (datasetd's manifests) compare whole Stats.
    version: str = ""


class Storage(Protocol):
    """Names are relative paths such as `book_changes/2026-12-01/T.parquet`."""

    def publish(self, local: Path, name: str) -> None:
        """Move a finished local file to `name`, replacing any earlier version atomically."""

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a small object (a manifest) atomically."""

    def read_bytes(self, name: str) -> bytes | None:
        """A small object's bytes, or None when it does not exist."""

    def stat(self, name: str) -> Stat | None:
        """Size and modification time, or None when it does not exist."""

    def read_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of `name` in chunks."""

    def list(self, prefix: str) -> list[str]:
        """Every name under `prefix`, sorted."""

    def scratch_dir(self) -> Path:
        """A local directory for files being built (same filesystem as the files, for the
        local backend, so publishing is a rename)."""


def _check_name(name: str) -> str:
    """A relative name with no empty, `.` or `..` part: both backends refuse the same
    names (S3 would take `a//b` as a key of its own; a directory would fold it into `a/b`)."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{name!r} is outside the dataset store")
    return name


class LocalStorage:
    """Files under one directory; temp files in `<root>/.tmp`, renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        (self.root / ".tmp").mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        path = (self.root / _check_name(name)).resolve()
        if self.root not in path.parents:
            raise ValueError(f"{name!r} is outside the dataset store")
        return path

    def scratch_dir(self) -> Path:
        return self.root / ".tmp"

    def publish(self, local: Path, name: str) -> None:
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, target)

    def write_bytes(self, name: str, data: bytes) -> None:
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.scratch_dir(), prefix="obj-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def stat(self, name: str) -> Stat | None:
        try:
            found = self._path(name).stat()
        except FileNotFoundError:
            return None
        return Stat(found.st_size, found.st_mtime_ns // 1000,
                    f"{found.st_ino}:{found.st_mtime_ns}")

    def read_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        with open(self._path(name), "rb") as src:
            src.seek(start)
            left = end - start
            while left > 0:
                chunk = src.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def list(self, prefix: str) -> list[str]:
        prefix = prefix.strip("/")
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and ".tmp" not in p.relative_to(self.root).parts)


def open_storage(settings: Settings) -> Storage:
    """The store `KTAPE_DATASETS_URL` names: a local directory (the default,
    `<KTAPE_DATA_DIR>/datasets`) or an S3 bucket, through `KTAPE_S3_ENDPOINT_URL` when set.

    Cheap to call once per process; the S3 client is safe to share between threads.
    """
    location = settings.datasets
    if location.local_dir is not None:
        return LocalStorage(location.local_dir)
    return S3Storage(location.bucket, location.prefix, endpoint_url=settings.s3_endpoint_url,
                     scratch_root=settings.data_dir / "datasets-scratch")


class S3Storage:
    """Objects in one S3 (or S3-compatible) bucket under a key prefix.

    Credentials and region come the standard AWS way (environment, shared config and
    credentials files, an instance or container role), never from ktape's own settings.
    `publish` is one upload: a single PUT, or above MULTIPART_THRESHOLD_BYTES a multipart
    upload, and S3 makes an object visible only when the upload completes, so a reader
    sees the old version or the new one, never a part. Files are built in a local
    scratch directory (S3 has no rename); that directory is this instance's own.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 scratch_root: Path | None = None, client: Any = None,
                 multipart_threshold_bytes: int = MULTIPART_THRESHOLD_BYTES,
                 multipart_chunk_bytes: int = MULTIPART_CHUNK_BYTES) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else boto3.client(
            "s3", endpoint_url=endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 5}))
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold_bytes,
                                        multipart_chunksize=multipart_chunk_bytes)
        self._scratch_root = scratch_root
        self._scratch: Path | None = None

    def __repr__(self) -> str:
        return f"S3Storage('s3://{self.bucket}/{self.prefix}')"

    def _key(self, name: str) -> str:
        _check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _name(self, key: str) -> str:
        return key[len(self.prefix) + 1:] if self.prefix else key

    def scratch_dir(self) -> Path:
        if self._scratch is None:
            root = self._scratch_root
            if root is not None:
                root.mkdir(parents=True, exist_ok=True)
            self._scratch = Path(tempfile.mkdtemp(prefix="ktape-datasets-",
                                                  dir=None if root is None else root))
        return self._scratch

    def publish(self, local: Path, name: str) -> None:
        self.client.upload_file(str(local), self.bucket, self._key(name), Config=self._transfer)
        local.unlink()  # published: the local copy was only the build's scratch

    def write_bytes(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def read_bytes(self, name: str) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
        except self.client.exceptions.ClientError as error:
            if _missing(error):
                return None
            raise
        with answer["Body"] as body:
            return bytes(body.read())

    def stat(self, name: str) -> Stat | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(name))
        except self.client.exceptions.ClientError as error:
            if _missing(error):
                return None
            raise
        modified: dt.datetime = head["LastModified"]
        return Stat(int(head["ContentLength"]), int(modified.timestamp() * 1_000_000),
                    str(head.get("ETag", "")))

    def read_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        if end <= start:
            return
        answer = self.client.get_object(Bucket=self.bucket, Key=self._key(name),
                                        Range=f"bytes={start}-{end - 1}")
        body = answer["Body"]
        try:  # closed however the consumer stops, so a cut download frees its connection
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def list(self, prefix: str) -> list[str]:
        # A prefix is a directory, as for LocalStorage: "manifests" must not match
        # "manifests-old/...".
        prefix = prefix.strip("/")
        under = f"{_check_name(prefix)}/" if prefix else ""
        key_prefix = (f"{self.prefix}/" if self.prefix else "") + under
        names: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=key_prefix)
        for page in pages:
            names.extend(self._name(item["Key"]) for item in page.get("Contents", ()))
        return sorted(names)


def _missing(error: Any) -> bool:
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
