"""`ktape datasets build --date today`: an operator's one-day build, with its summary."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys

from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig
from tests.fixtures.recording import recorded_simulator


async def test_build_today_on_demand_then_nothing_left_to_do(clean_questdb, tmp_path):
    async with recorded_simulator(clean_questdb, tmp_path / "rec", SimConfig(markets=2, seed=9)):
        await asyncio.sleep(3)
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KTAPE_")},
           **clean_questdb.env(), "KTAPE_DATA_DIR": str(tmp_path / "data")}

    def build(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ktape", "datasets", "build", *args],
                              env=env, capture_output=True, text=True, timeout=300)

    first = build("--date", "today")
    assert first.returncode == 0, first.stderr
    assert "series built" in first.stdout and "PENDING (day not closed)" in first.stdout
    assert "100%" in first.stderr  # the progress bar
    day = dt.datetime.now(dt.UTC).date().isoformat()
    manifest = json.loads((tmp_path / "data" / "datasets" / "manifests" / f"{day}.json")
                          .read_text())
    assert manifest["files"] and {f["condition"] for f in manifest["files"]} == {"PENDING"}
    for entry in manifest["files"]:
        assert (tmp_path / "data" / "datasets" / entry["name"]).stat().st_size == entry["bytes"]
    again = build("--date", "today")
    assert again.returncode == 0 and "0 series built" in again.stdout, again.stdout
    bad = build("--date", "2026-13-01")
    assert bad.returncode == 2 and "is not YYYY-MM-DD" in bad.stderr
