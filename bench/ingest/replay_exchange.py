"""A Kalshi WS v2 endpoint that replays the pipeline bench's frames as fast as TCP takes
them, in a process of its own (as the exchange is).

Why not `ktape sim`: its market model tops out near 60,000 messages/s to one subscriber
(docs/performance.md), below what ingestd reads, so it would measure the simulator. Here
the frames (`pipeline.frames`: a `subscribed` reply, a snapshot per market, then deltas,
one sid, consecutive seqs) are framed once up front and written to the socket in large
chunks after the client's subscribe commands, so sending costs almost no CPU and the
number measured is ingestd's.

Run by bench/ingest/pipeline.py: `python bench/ingest/replay_exchange.py PORT MESSAGES
MARKETS PREFIX T0_MS`; prints `ready` when listening and serves one connection at a time until killed.
"""

from __future__ import annotations

import asyncio
import struct
import sys
from pathlib import Path

import websockets
from websockets.asyncio.server import ServerConnection

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.ingest.pipeline import frames

CHUNK = 1 << 20
SUBSCRIBE_COMMANDS = 3  # lifecycle, trades, then the orderbook batch (500 markets)


def ws_frame(payload: bytes) -> bytes:
    """One unmasked server-to-client text frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


async def main(port: int, messages: int, markets: int, prefix: str, t0_ms: int) -> None:
    blob = b"".join(ws_frame(frame)
                    for frame in frames(messages, markets, prefix=prefix, t0_ms=t0_ms))

    async def replay(ws: ServerConnection) -> None:
        for _ in range(SUBSCRIBE_COMMANDS):
            await ws.recv()
        # Raw frames straight to the transport: websockets' own send costs more CPU per
        # frame than ingestd spends handling one. Text frames need no state of the
        # protocol object; the close frame that follows goes through it as usual.
        transport = ws.transport
        for start in range(0, len(blob), CHUNK):
            transport.write(blob[start:start + CHUNK])
            while transport.get_write_buffer_size() > 4 * CHUNK:  # the client's pace
                await asyncio.sleep(0.002)
        await ws.wait_closed()

    async with websockets.serve(replay, "127.0.0.1", port, compression=None,
                                max_size=1 << 20):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4],
                     int(sys.argv[5])))
