"""queryd for benchmarks: the real server and live tail, without the metering interceptor.

Run by bench/query/stream_fanout.py as its own process (so the clients' work does not
share a GIL with the server); prints `{"port": N}` once serving. `--no-live`: history
only, no ingestd to follow (bench/client/client_overhead.py's replay). Not for production.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ktape.config import load_settings
from ktape.log import configure_logging
from queryd.server import build_server, live_shards


async def main(follow_live: bool) -> None:
    settings = load_settings()
    live = live_shards(settings) if follow_live else None
    running, pool, _service = await build_server(settings, addr="127.0.0.1:0", live=live)
    tail = asyncio.create_task(live.run()) if live is not None else None
    if live is not None:
        await asyncio.wait_for(asyncio.gather(*(t.connected.wait() for t in live.tails)), 30)
    print(json.dumps({"port": running.port}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        if tail is not None:
            tail.cancel()
        await running.stop(0)
        await pool.close()


if __name__ == "__main__":
    configure_logging()
    asyncio.run(main(follow_live="--no-live" not in sys.argv[1:]))
