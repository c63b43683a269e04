"""The client bench still runs against today's client and queryd (benches are not in `make
test`, and its stub generation and synthetic rows break silently when either changes).
Speed is not judged here; that both sides saw every row is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_client_bench_runs_both_parts(tmp_path: Path) -> None:
    env = {**os.environ, "KTAPE_BENCH_RESULTS_DIR": str(tmp_path), "KTAPE_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "bench/client/client_overhead.py", "--changes", "3000",
                           "--stream-changes", "2000", "--rounds", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "client_overhead.json").read_text())
    for part, rows in (("deltas", 3000), ("stream", 2000)):
        runs = result["runs"][part]
        assert runs["raw"][0]["rows"] == runs["client"][0]["rows"] == rows, part
        assert result[part]["client_rows_per_sec"] > 0
