"""How many messages/s can `ktape sim` push to one subscriber? (target ≥ 50,000)

Intent: "how fast" — the simulator must never be what limits ingest benchmarks. Starts
`ktape sim` as a subprocess on a free loopback port with a high model rate, subscribes a
plain websockets client to every market's orderbook_delta and trade channels, and counts
messages for a fixed window. Saves bench/results/sim_throughput.json.

Run: .venv/bin/python bench/sim/throughput.py [--secs 10] [--rate 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import save


async def measure(port: int, secs: float) -> dict:
    base = f"http://127.0.0.1:{port}/trade-api/v2"
    async with httpx.AsyncClient() as client:
        tickers, cursor = [], ""
        while True:
            page = (await client.get(f"{base}/markets", params={"limit": 1000,
                                                                "cursor": cursor})).json()
            tickers += [m["ticker"] for m in page["markets"]]
            cursor = page["cursor"]
            if not cursor:
                break
    async with websockets.connect(f"ws://127.0.0.1:{port}/trade-api/ws/v2",
                                  max_size=None, compression=None,
                                  ping_interval=None) as ws:
        await ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": {
            "channels": ["orderbook_delta", "trade"], "market_tickers": tickers,
            "use_yes_price": False}}))
        count = 0
        warm_until = time.monotonic() + 1.0
        while time.monotonic() < warm_until:
            await ws.recv()
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < secs:
            await ws.recv()
            count += 1
    return {"messages": count, "secs": round(elapsed, 3),
            "messages_per_sec": round(count / elapsed), "markets": len(tickers)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--secs", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100_000)
    parser.add_argument("--markets", type=int, default=1000)
    args = parser.parse_args()
    proc = subprocess.Popen([sys.executable, "-m", "ktape", "sim", "--port", "0", "--markets",
                             str(args.markets), "--rate", str(args.rate)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "KTAPE_LOG_LEVEL": "WARNING"})
    try:
        assert proc.stdout is not None
        ready = json.loads(next(line for line in proc.stdout if '"sim.ready"' in line))
        result = asyncio.run(measure(ready["port"], args.secs))
    finally:
        proc.terminate()
        proc.wait(10)
    save("sim_throughput", {"model_rate": args.rate, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
