"""The ingest bench still runs against today's ingestd (a refactor broke it unnoticed once:
benches are not in `make test`, so this small run is). Speed is not judged here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_pipeline_bench_runs_every_stage(tmp_path: Path) -> None:
    env = {**os.environ, "KTAPE_BENCH_RESULTS_DIR": str(tmp_path), "KTAPE_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "bench/ingest/pipeline.py", "--messages", "4000",
                           "--markets", "20"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "ingest_pipeline.json").read_text())
    for key in ("raw_ilp_rows_per_sec", "handle_msgs_per_sec", "end_to_end_msgs_per_sec",
                "over_websocket_msgs_per_sec"):
        assert result[key] > 0, key
