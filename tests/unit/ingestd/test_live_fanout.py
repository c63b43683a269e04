"""The live fan-out over a real loopback socket: every row once, in order, numbered
without holes, for followers that join before and in the middle of a burst."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from ingestd.book_change_lines import BookChangeLines
from ingestd.live import LiveFanout


async def _follow(session: aiohttp.ClientSession, port: int
                  ) -> tuple[aiohttp.ClientResponse, dict]:
    response = await session.get(f"http://127.0.0.1:{port}/live")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    hello = orjson.loads(await response.content.readline())
    return response, hello


async def _rows(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while len(rows) < count:
        row = orjson.loads(await asyncio.wait_for(response.content.readline(), 5))
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
    joined = 0

    async def live(request: web.Request) -> web.StreamResponse:
        nonlocal joined
        joined += 1
        if joined == 2:
            # rows published in the same loop turn as the late follower joins: still in
            # the outbox, they belong to the early follower only
            for i in range(400, 410):
                _publish(fan, lines, i)
        return await fan.serve(request)

    lines = BookChangeLines("KX-A", "yes", "delta", "exchange")
    app = web.Application()
    app.router.add_get("/live", live)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    for i in range(5):  # before anyone follows: only the last row is kept, for the hello
        _publish(fan, lines, i)
    try:
        async with aiohttp.ClientSession() as session:
            early, early_hello = await _follow(session, port)
            assert early_hello["n"] == 5
            assert early_hello["last"]["book_changes"]["seq"] == 4
            for i in range(5, 400):
                _publish(fan, lines, i)
            late, late_hello = await _follow(session, port)
            assert late_hello["n"] == 410
            for i in range(410, 1000):
                _publish(fan, lines, i)

            early_rows = await _rows(early, 995)
            late_rows = await _rows(late, 1000 - late_hello["n"])
            early.close()
            late.close()
        assert [r["n"] for r in early_rows] == list(range(6, 1001))
        assert [r["n"] for r in late_rows] == list(range(late_hello["n"] + 1, 1001))
        assert late_rows == early_rows[len(early_rows) - len(late_rows):]
        gaps = [r for r in early_rows if r["tb"] == "gaps"]
        assert [g["expected_seq"] for g in gaps] == list(range(50, 1000, 50))
        change = next(r for r in early_rows if r["tb"] == "book_changes" and r["seq"] == 7)
        assert change == {"n": 8, "tb": "book_changes", "ts": 1_007, "ticker": "KX-A",
                          "side": "yes", "kind": "delta", "ts_source": "exchange",
                          "price_e4": 4007, "qty_after_e2": 700, "delta_e2": 1, "seq": 7,
                          "sid": 7, "recv_ts": 2_007}
        for _ in range(50):  # both followers' handlers notice they left
            if fan.followers == 0:
                break
            await asyncio.sleep(0.1)
        assert fan.followers == 0
    finally:
        await runner.cleanup()
