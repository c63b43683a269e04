"""Day manifests: a manifest written and read back is the same manifest, the bytes are
deterministic (sorted), a rebuild bumps only source and time, and a manifest of another
format version is refused rather than misread."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from ktape.datasets.manifest import DayManifest, FileEntry

DAY = dt.date(2026, 12, 1)


def _entry(name: str, **changes) -> FileEntry:
    fields = dict(name=name, data_type=name.split("/")[0], date="2026-12-01", ticker="KXA",
                  series_ticker="KXS", format="parquet", bytes=1234, rows=56,
                  sha256="ab" * 32, first_ts_us=1_764_547_200_000_000,
                  last_ts_us=1_764_633_599_000_000, condition="AVAILABLE",
                  last_modified_us=1_764_640_000_000_000, source="fp-1")
    return FileEntry(**{**fields, **changes})


def test_round_trip_and_sorted_bytes():
    manifest = DayManifest(DAY, closed=True)
    manifest.put(_entry("trades/2026-12-01/KXA.parquet"))
    manifest.put(_entry("book_changes/2026-12-01/KXA.parquet", first_ts_us=None, last_ts_us=None,
                        rows=0, condition="DEGRADED"))
    data = manifest.to_bytes()
    back = DayManifest.from_bytes(data)
    assert back == manifest
    assert back.files["trades/2026-12-01/KXA.parquet"].file_name.ticker == "KXA"
    names = [f["name"] for f in json.loads(data)["files"]]
    assert names == sorted(names)
    reordered = DayManifest(DAY, dict(reversed(list(manifest.files.items()))), closed=True)
    assert reordered.to_bytes() == data  # same content, same bytes


def test_touched_bumps_source_and_time_only():
    manifest = DayManifest(DAY)
    entry = _entry("quotes/2026-12-01/KXA.csv.gz", format="csv.gz")
    bumped = manifest.touched(entry, source="fp-2", when_us=entry.last_modified_us + 1)
    assert (bumped.source, bumped.last_modified_us) == ("fp-2", entry.last_modified_us + 1)
    assert bumped.sha256 == entry.sha256 and bumped.name == entry.name


def test_another_version_is_refused():
    doc = json.loads(DayManifest(DAY).to_bytes())
    doc["version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        DayManifest.from_bytes(json.dumps(doc).encode())
