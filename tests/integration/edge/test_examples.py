"""The examples in examples/ run against a live edge with recorded data (docs that run)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from ktape.runtime.pins import REPO_ROOT
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig
from tests.fixtures.recording import recorded_simulator


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


async def test_examples_run_against_recorded_data(edge, questdb, tmp_path):
    config = SimConfig(markets=5, rate=200, seed=55)
    async with recorded_simulator(questdb, tmp_path, config) as (recorder, sim):
        await asyncio.sleep(3)
        ticker = max(recorder.feed.books,
                     key=lambda t: len(recorder.feed.books[t].yes) + len(recorder.feed.books[t].no))
        stream = asyncio.create_task(asyncio.to_thread(
            _run, [sys.executable, "examples/rest_stream_orderbook.py", ticker,
                   "--base", edge.http_url, "--max-messages", "5",
                   "--key", edge.api_key]))
        await asyncio.sleep(2)
        sim.config.rate = 0
        await asyncio.sleep(0.5)
    streamed = await asyncio.wait_for(stream, 60)
    yes, no = sim.journal.book_at(ticker, 2**62)
    with questdb.connect() as conn:
        wait_for_wal(conn)
    assert streamed.splitlines()[0].startswith("snapshot seq=")
    assert len(streamed.splitlines()) == 5

    book = await asyncio.to_thread(_run, [sys.executable, "examples/grpc_get_orderbook.py",
                                          ticker, "--addr", edge.grpc_addr, "--key", edge.api_key])
    assert book.startswith(f"{ticker} at ") and "CONTINUITY_STATUS_" in book
    levels = [line for line in book.splitlines()[1:] if line.strip()]
    assert len(levels) == min(5, len(yes)) + min(5, len(no)), book

    env = {**os.environ, "BASE": edge.http_url, "KTAPE_KEY": edge.api_key}
    session = await asyncio.to_thread(_run, ["bash", "examples/curl_session.sh"], env)
    assert "== book now" in session and "UNKNOWN_TICKER" in session
    assert "API_KEY_MISSING" in session.split("== without a key")[1]
