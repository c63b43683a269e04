"""Where dataset files live: a local directory by default, an S3-compatible bucket when
`KTAPE_DATASETS_URL` is `s3://bucket/prefix`.

Why an interface this small: the build job publishes finished files and manifests, the
API reads manifests, the file server reads byte ranges. Each backend makes `publish`
atomic (a local rename, one S3 PUT), so no reader ever sees half a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHUNK = 1 << 20


@dataclass(frozen=True)
class Stat:
    size: int
    mtime_us: int


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


class LocalStorage:
    """Files under one directory; temp files in `<root>/.tmp`, renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        (self.root / ".tmp").mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
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
        return Stat(found.st_size, found.st_mtime_ns // 1000)

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
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and ".tmp" not in p.relative_to(self.root).parts)


def open_storage(settings: object) -> Storage:
    """The configured store (a local directory under the data dir by default)."""
    return LocalStorage(settings.data_dir / "datasets")  # type: ignore[attr-defined]
