"""The connection alone, against a real loopback WebSocket server: signed handshake,
frames and link events in order, pings answered, liveness, commands, reconnects."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import websockets
from cryptography.hazmat.primitives.asymmetric import ed25519

from ingestd.kalshi.auth import KalshiSigner
from ingestd.kalshi.ws import CONNECTED, DISCONNECTED, KalshiConnection


class Exchange:
    """A scripted server: each connection runs `script(ws, n)`; it records headers and
    every command received."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.connections = 0
        self.headers: list[dict[str, str]] = []
        self.commands: list[dict[str, Any]] = []

    async def handler(self, ws: Any) -> None:
        self.connections += 1
        self.headers.append(dict(ws.request.headers))
        reader = asyncio.create_task(self._read(ws))
        try:
            await self.script(ws, self.connections)
        finally:
            reader.cancel()

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            self.commands.append(orjson.loads(raw))


async def _serve(exchange: Exchange) -> tuple[Any, str]:
    server = await websockets.serve(exchange.handler, "127.0.0.1", 0, ping_interval=None)
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/trade-api/ws/v2"


async def _take(connection: KalshiConnection, stop: asyncio.Event, count: int,
                timeout: float = 10) -> list[Any]:
    seen: list[Any] = []

    async def consume() -> None:
        async for item in connection.frames(stop):
            seen.append(item if item in (CONNECTED, DISCONNECTED) else item[0])
            if len(seen) >= count:
                stop.set()

    await asyncio.wait_for(consume(), timeout)
    return seen


async def test_frames_between_link_events_and_a_reconnect_after_the_server_closes():
    async def script(ws: Any, n: int) -> None:
        if n == 1:
            await ws.send('{"n": 1}')
            await ws.send(b'{"n": 2}')
            await ws.close()
        else:
            await ws.send('{"n": 3}')
            await ws.wait_closed()

    exchange = Exchange(script)
    server, url = await _serve(exchange)
    try:
        connection = KalshiConnection(url, rng=random.Random(1))
        seen = await _take(connection, asyncio.Event(), 6)
    finally:
        server.close()
        await server.wait_closed()
    assert seen == [CONNECTED, b'{"n": 1}', b'{"n": 2}', DISCONNECTED, CONNECTED,
                    b'{"n": 3}']
    assert not connection.connected


async def test_the_handshake_is_signed_when_a_key_is_given():
    async def script(ws: Any, n: int) -> None:
        await ws.send("{}")
        await ws.wait_closed()

    exchange = Exchange(script)
    server, url = await _serve(exchange)
    try:
        signer = KalshiSigner("key-1", ed25519.Ed25519PrivateKey.generate())
        await _take(KalshiConnection(url, signer=signer), asyncio.Event(), 2)
    finally:
        server.close()
        await server.wait_closed()
    headers = {k.lower(): v for k, v in exchange.headers[0].items()}
    assert headers["kalshi-access-key"] == "key-1"
    assert headers["kalshi-access-signature"] and headers["kalshi-access-timestamp"]


async def test_a_server_ping_is_answered_and_counts_as_life():
    pongs: list[float] = []

    async def script(ws: Any, n: int) -> None:
        for _ in range(4):  # pings only, more often than the liveness limit
            waiter = await ws.ping()
            pongs.append(await asyncio.wait_for(waiter, 2))
            await asyncio.sleep(0.15)
        await ws.send("{}")
        await ws.wait_closed()

    exchange = Exchange(script)
    server, url = await _serve(exchange)
    try:
        connection = KalshiConnection(url, liveness_secs=0.4)
        seen = await _take(connection, asyncio.Event(), 2)
    finally:
        server.close()
        await server.wait_closed()
    assert seen == [CONNECTED, b"{}"]  # not closed as silent: the pings were life
    assert len(pongs) == 4


async def test_a_silent_connection_is_dropped_and_a_verdict_drops_it_too():
    async def silent(ws: Any, n: int) -> None:
        await ws.wait_closed()

    exchange = Exchange(silent)
    server, url = await _serve(exchange)
    try:
        seen = await _take(KalshiConnection(url, liveness_secs=0.3, rng=random.Random(1)),
                           asyncio.Event(), 2)
        assert seen == [CONNECTED, DISCONNECTED]
        reasons: list[int] = []

        def verdict(now: int) -> str | None:
            reasons.append(now)
            return "snapshot_timeout"

        seen = await _take(KalshiConnection(url, liveness_secs=0.6, verdict=verdict,
                                            rng=random.Random(1)), asyncio.Event(), 2)
        assert seen == [CONNECTED, DISCONNECTED] and reasons
    finally:
        server.close()
        await server.wait_closed()


async def test_commands_are_numbered_remembered_until_answered_and_resent():
    async def script(ws: Any, n: int) -> None:
        await ws.wait_closed()

    exchange = Exchange(script)
    server, url = await _serve(exchange)
    stop = asyncio.Event()
    connection = KalshiConnection(url, rng=random.Random(1))
    frames = connection.frames(stop)
    try:
        assert await frames.__anext__() is CONNECTED
        first = await connection.send("subscribe", {"channels": ["trade"]})
        second = await connection.send("list_subscriptions")
        assert (first, second) == (1, 2)
        sent = connection.answered(first)
        assert sent == ("subscribe", {"channels": ["trade"]}, 0)
        assert connection.answered(first) is None  # forgotten once answered
        assert await connection.resend(sent) == 3
        for _ in range(50):
            if len(exchange.commands) == 3:
                break
            await asyncio.sleep(0.02)
        assert exchange.commands == [
            {"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"]}},
            {"id": 2, "cmd": "list_subscriptions"},
            {"id": 3, "cmd": "subscribe", "params": {"channels": ["trade"]}}]
        assert connection.answered(3) == ("subscribe", {"channels": ["trade"]}, 1)
    finally:
        stop.set()
        await frames.aclose()
        server.close()
        await server.wait_closed()
