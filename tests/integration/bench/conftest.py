"""Benches are not in `make test`; these small runs of them are, so a bench that stopped
working against today's code fails here. `run_bench` runs one as a user would (its own
process, from the repo root) with its result file in the test's directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def run_bench(tmp_path: Path) -> Callable[..., Any]:
    def run(script: str, args: list[str], result: str, timeout: float) -> Any:
        env = {**os.environ, "KTAPE_BENCH_RESULTS_DIR": str(tmp_path),
               "KTAPE_LOG_LEVEL": "WARNING"}
        done = subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((tmp_path / f"{result}.json").read_text())

    return run
