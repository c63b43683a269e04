"""Run by tests/integration/client/test_stream_restart.py in the clean client venv: follow a
market's stream from START, printing one JSON line per item as it arrives, until the
stream reaches STOP_AT or the wall clock passes it by 4 s (a market may go quiet); the test
restarts queryd meanwhile. Arguments: TARGET TICKER START STOP_AT (RFC 3339)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys

from ktape_client import AsyncClient, Book

target, ticker, start, stop_at = sys.argv[1:5]
stop = dt.datetime.fromisoformat(stop_at)


async def follow() -> None:
    # Reconnects are spaced by up to 2 s and thirty in a row may fail: queryd takes a few
    # seconds to come back, tens on a loaded 2-core machine (ten were seen to run out).
    async with AsyncClient(target=target, retries=30, max_backoff=2.0) as client:
        async for item in client.stream(ticker, start_time=start):
            if isinstance(item, Book):
                print(json.dumps({"book": str(item.at)}), flush=True)
                continue
            if item.kind != "gap" and item.ts >= stop:
                return
            print(json.dumps({"ts": item.ts.isoformat(), "sid": item.sid, "seq": item.seq,
                              "kind": item.kind, "side": item.side, "price": str(item.price),
                              "quantity": str(item.quantity)}), flush=True)


async def main() -> None:
    wall_stop = stop + dt.timedelta(seconds=4)
    try:
        async with asyncio.timeout((wall_stop - dt.datetime.now(dt.UTC)).total_seconds()):
            await follow()
    except TimeoutError:
        pass
    print(json.dumps({"done": True}), flush=True)


asyncio.run(main())
