"""The analytics bench still runs against today's queryd and Envoy (benches are not in
`make test`, so this small run is). Speed is not judged here; that every measure was
taken, over gRPC and over REST, is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_analytics_bench_measures_grpc_and_rest(tmp_path: Path) -> None:
    env = {**os.environ, "KTAPE_BENCH_RESULTS_DIR": str(tmp_path), "KTAPE_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "bench/query/analytics.py", "--changes", "40000",
                           "--samples", "5", "--stretch-s", "120"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "query_analytics.json").read_text())
    for key in ("get_orderbook", "get_event_orderbook", "get_orderbook_depth10",
                "get_event_orderbook_depth10"):
        assert result[key]["n"] == 5
    assert result["rest"]["get_orderbook"]["n"] == result["rest"]["get_event_orderbook"]["n"] == 5
    assert result["snapshots"]["boundaries"] == 120
