"""A day's manifest: every file built for one UTC day, with what a buyer checks first
(rows, bytes, sha256, first/last timestamp, data condition) and when it last changed.

Why one JSON document per day: a day is the unit that is built, rebuilt and listed; the
manifest is written after the files it names (each file is published by an atomic
rename first), so a reader never sees an entry for a file that is not complete. The
`source` of an entry is the fingerprint of the recorded rows it was built from; when a
heal or a late row changes it, that file is rebuilt and its `last_modified_us` bumped.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ktape.datasets.names import FileName

MANIFEST_VERSION = 1
CONDITIONS = ("AVAILABLE", "DEGRADED", "MISSING", "PENDING")


@dataclass(frozen=True)
class FileEntry:
    """One published file."""

    name: str
    data_type: str
    date: str  # YYYY-MM-DD
    ticker: str  # "" for a series file
    series_ticker: str
    format: str
    bytes: int
    rows: int
    sha256: str  # hex of the whole file
    first_ts_us: int | None  # first and last row's exchange time, None for an empty file
    last_ts_us: int | None
    condition: str  # AVAILABLE / DEGRADED / MISSING / PENDING (worst of its markets)
    last_modified_us: int
    source: str  # fingerprint of the rows it was built from

    @property
    def file_name(self) -> FileName:
        return FileName.parse(self.name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileEntry:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass
class DayManifest:
    """All files of one day, by name."""

    date: dt.date
    files: dict[str, FileEntry] = field(default_factory=dict)
    closed: bool = False  # built after the day closed (otherwise PENDING files)

    def put(self, entry: FileEntry) -> None:
        self.files[entry.name] = entry

    def touched(self, entry: FileEntry, *, source: str, when_us: int) -> FileEntry:
        """The entry as a rebuild republishes it: same name, new source, bumped time."""
        return replace(entry, source=source, last_modified_us=when_us)

    def to_bytes(self) -> bytes:
        doc = {"version": MANIFEST_VERSION, "date": self.date.isoformat(), "closed": self.closed,
               "files": [self.files[n].to_json() for n in sorted(self.files)]}
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> DayManifest:
        doc = json.loads(data)
        if doc.get("version") != MANIFEST_VERSION:
            raise ValueError(f"manifest version {doc.get('version')!r} is not "
                             f"{MANIFEST_VERSION}")
        files = {e["name"]: FileEntry.from_json(e) for e in doc["files"]}
        return cls(dt.date.fromisoformat(doc["date"]), files, bool(doc.get("closed")))
