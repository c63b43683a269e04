"""Day manifests cached in a process that answers requests (the file server, the
dataset listing API), read off the event loop and re-read only when the stored one
changed.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

from ktape.datasets.manifest import DayManifest, FileEntry
from ktape.datasets.names import FileName, manifest_name
from ktape.datasets.storage import Stat, Storage

MANIFEST_RECHECK_SECS = 1.0  # a rebuilt manifest is noticed within this long
MANIFEST_CACHE_DAYS = 64


@dataclass
class _Cached:
    manifest: DayManifest | None
    stat: Stat | None
    checked: float


class ManifestCache:
    """Day manifests read once and re-read only when the stored one changes.

    Why: a day's manifest can list tens of thousands of files; parsing it per request
    would cost more than serving a small file. A cached day is re-validated (one stat)
    at most every MANIFEST_RECHECK_SECS, so a rebuild is seen within about a second.
    """

    def __init__(self, storage: Storage, *, recheck_secs: float = MANIFEST_RECHECK_SECS,
                 max_days: int = MANIFEST_CACHE_DAYS) -> None:
        self.storage = storage
        self.recheck_secs = recheck_secs
        self.max_days = max_days
        self._days: collections.OrderedDict[str, _Cached] = collections.OrderedDict()
        self._lock = asyncio.Lock()

    async def entry(self, name: FileName) -> FileEntry | None:
        manifest = await self.manifest(manifest_name(name.date))
        return None if manifest is None else manifest.files.get(str(name))

    async def manifest(self, path: str) -> DayManifest | None:
        cached = self._days.get(path)
        now = time.monotonic()
        if cached is not None and now - cached.checked < self.recheck_secs:
            self._days.move_to_end(path)
            return cached.manifest
        async with self._lock:  # one load at a time: concurrent misses wait for it
            cached = self._days.get(path)
            if cached is not None and now - cached.checked < self.recheck_secs:
                return cached.manifest
            stat = await asyncio.to_thread(self.storage.stat, path)
            if cached is None or stat != cached.stat:
                manifest = await asyncio.to_thread(self._load, path) if stat is not None else None
                cached = _Cached(manifest, stat, now)
            cached.checked = now
            self._days[path] = cached
            self._days.move_to_end(path)
            while len(self._days) > self.max_days:
                self._days.popitem(last=False)
            return cached.manifest

    def _load(self, path: str) -> DayManifest | None:
        data = self.storage.read_bytes(path)
        return None if data is None else DayManifest.from_bytes(data)
