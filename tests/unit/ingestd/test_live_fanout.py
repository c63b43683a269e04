"""The live fan-out over a real loopback socket: every row once, in order, numbered
without holes, for followers that join before and in the middle of a burst."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from ingestd.book_change_lines import BookChangeLines
from ingestd.live import LiveFanout


async def _follow(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /live HTTP/1.1\r\n\r\n")
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    hello = orjson.loads(await reader.readline())
    return reader, writer, hello


async def _rows(reader: asyncio.StreamReader, count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while len(rows) < count:
        row = orjson.loads(await asyncio.wait_for(reader.readline(), 5))
        if "hb" not in row:
            rows.append(row)
    return rows


def _publish(fan: LiveFanout, lines: BookChangeLines, i: int) -> None:
    if i % 50 == 0:  # a gap row through the generic path, between book changes
        fan.publish("gaps", {"ticker": "KX-A", "reason": "seq_jump"},
                    {"expected_seq": i, "got_seq": i + 2}, 1_000 + i)
    else:
        fan.publish_book_change(lines, 4000 + i, 100 * i, 1, i, 7, 2_000 + i, 1_000 + i)


async def test_rows_arrive_once_in_order_for_early_and_late_followers() -> None:
    fan = LiveFanout()
    served: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.add(asyncio.current_task())  # type: ignore[arg-type]
        await reader.readline()
        await reader.readline()
        if len(served) == 2:
            # rows published in the same loop turn as the late follower joins: still in
            # the outbox, they belong to the early follower only
            for i in range(400, 410):
                _publish(fan, lines, i)
        await fan.serve(reader, writer)

    lines = BookChangeLines("KX-A", "yes", "delta", "exchange")
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for i in range(5):  # before anyone follows: only the last row is kept, for the hello
        _publish(fan, lines, i)
    writers: list[asyncio.StreamWriter] = []
    try:
        early_reader, early_writer, early_hello = await _follow(port)
        writers.append(early_writer)
        assert early_hello["n"] == 5
        assert early_hello["last"]["book_changes"]["seq"] == 4
        for i in range(5, 400):
            _publish(fan, lines, i)
        late_reader, late_writer, late_hello = await _follow(port)
        writers.append(late_writer)
        assert late_hello["n"] == 410
        for i in range(410, 1000):
            _publish(fan, lines, i)

        early = await _rows(early_reader, 995)
        late = await _rows(late_reader, 1000 - late_hello["n"])
        assert [r["n"] for r in early] == list(range(6, 1001))
        assert [r["n"] for r in late] == list(range(late_hello["n"] + 1, 1001))
        assert late == early[len(early) - len(late):]
        gaps = [r for r in early if r["tb"] == "gaps"]
        assert [g["expected_seq"] for g in gaps] == list(range(50, 1000, 50))
        change = next(r for r in early if r["tb"] == "book_changes" and r["seq"] == 7)
        assert change == {"n": 8, "tb": "book_changes", "ts": 1_007, "ticker": "KX-A",
                          "side": "yes", "kind": "delta", "ts_source": "exchange",
                          "price_e4": 4007, "qty_after_e2": 700, "delta_e2": 1, "seq": 7,
                          "sid": 7, "recv_ts": 2_007}
    finally:
        for writer in writers:
            writer.close()
        server.close()
        for task in served:
            await asyncio.wait_for(task, 5)
        await server.wait_closed()
