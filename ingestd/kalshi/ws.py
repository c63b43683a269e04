"""One WebSocket connection to Kalshi: signed handshake, commands, ping/pong, liveness,
reconnect with backoff. It yields what arrives and knows nothing of what frames mean.

`frames(stop)` yields CONNECTED once a socket is up, then (raw frame, receive µs) for every
text or binary frame, then DISCONNECTED when the socket is gone (the consumer records its
gaps), then backs off and connects again — until `stop`. Commands go out at a bounded rate
(no resubscribe storms, PROTOCOL.md §5.11) and are remembered until answered, so a command
refused with error 27 can be sent again.

The watchdog closes a connection that can no longer be trusted: nothing arrived, not even
a ping, for `liveness_secs` (Kalshi pings every 10 s; the socket can look open while dead),
or the consumer's `verdict` (called every few seconds) names a reason.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from ingestd import metrics
from ingestd.kalshi.auth import KalshiSigner
from ktape.aio import Backoff, TokenBucket, cancel_and_wait
from ktape.clock import now_us
from ktape.log import get_logger

log = get_logger(__name__)

MAX_BACKOFF_SECS = 30.0
CONNECT_TIMEOUT_SECS = 15.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a snapshot of a deep book is one message
COMMANDS_PER_SEC = 20.0  # ours per connection; Kalshi allows 10,000/s (PROTOCOL.md §5.1)
MAX_REMEMBERED_COMMANDS = 10_000
WATCH_EVERY_SECS = 5.0
TEXT, BINARY, PING = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.PING


class Link(enum.Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


CONNECTED, DISCONNECTED = Link.CONNECTED, Link.DISCONNECTED
Sent = tuple[str, dict[str, Any] | None, int]  # (cmd, params, attempt)


class KalshiConnection:
    def __init__(self, url: str, *, signer: KalshiSigner | None = None,
                 liveness_secs: float = 30.0, rng: random.Random | None = None,
                 verdict: Callable[[int], str | None] | None = None, name: str = "0") -> None:
        self.url = url
        self.signer = signer
        self.name = name
        self.liveness_us = int(liveness_secs * 1_000_000)
        self.verdict = verdict or (lambda now: None)
        # reconnects, resent commands and left-out retries: 0.5 s doubling, jittered
        self.backoff = Backoff(0.5, MAX_BACKOFF_SECS, rng=rng or random.Random())
        self.connected = False
        self.last_message_us: int | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._cmd_id = 0
        self._sent: dict[int, Sent] = {}
        self._rate = TokenBucket(COMMANDS_PER_SEC, COMMANDS_PER_SEC)

    async def frames(self, stop: asyncio.Event) -> AsyncIterator[
            tuple[bytes | str, int] | Link]:
        attempt = 0
        # No overall timeout: the session's sockets are long-lived WebSockets.
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_SECS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                try:
                    headers = (self.signer.headers("GET", urlsplit(self.url).path)
                               if self.signer else {})
                    # Our own ping every 20 s notices a dead peer (no pong within 10 s).
                    # Pings are answered here, not by aiohttp (autoping off), so that a
                    # server ping counts as a sign of life. permessage-deflate is offered
                    # (compress=15): deep snapshots then come in a fraction of the bytes.
                    async with session.ws_connect(
                            self.url, headers=headers, max_msg_size=MAX_MESSAGE_BYTES,
                            heartbeat=20.0, compress=15, autoping=False,
                            decode_text=False) as ws:
                        self._ws, self.connected, attempt = ws, True, 0
                        self.last_message_us = now_us()
                        self._sent.clear()
                        yield CONNECTED
                        guards = self._guard(ws, stop)
                        try:
                            # One plain `async for`, inline: a task and an `asyncio.wait`
                            # per frame, or a second generator, cost more than the frame.
                            async for message in ws:  # ends at a close frame
                                kind = message.type
                                if kind is TEXT or kind is BINARY:
                                    recv = self.last_message_us = now_us()
                                    yield message.data, recv
                                elif kind is PING:
                                    self.last_message_us = now_us()
                                    await ws.pong(message.data)
                                elif kind is aiohttp.WSMsgType.ERROR:
                                    log.warning("feed.read_error", error=str(message.data),
                                                url=self.url)
                                    break
                        finally:
                            await self._unguard(guards, stop)
                    if not stop.is_set():
                        log.warning("feed.disconnected", error=f"closed, code {ws.close_code}",
                                    url=self.url)
                except (OSError, aiohttp.ClientError, TimeoutError) as exc:
                    log.warning("feed.disconnected", error=f"{type(exc).__name__}: {exc}",
                                url=self.url)
                finally:
                    self._ws, self.connected = None, False
                if stop.is_set():
                    return
                metrics.RECONNECTS.inc()
                yield DISCONNECTED
                delay = self.backoff.delay(attempt)
                attempt += 1
                log.info("feed.reconnecting", delay_secs=round(delay, 2), attempt=attempt)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass

    def _guard(self, ws: aiohttp.ClientWebSocketResponse,
               stop: asyncio.Event) -> tuple[asyncio.Task[None], asyncio.Task[None]]:
        """The tasks that close `ws`: on `stop`, and when the watchdog distrusts it."""
        async def close_on_stop() -> None:
            await stop.wait()
            await ws.close()

        return (asyncio.create_task(close_on_stop(), name="feed-close-on-stop"),
                asyncio.create_task(self._watchdog(ws), name="feed-watchdog"))

    async def _unguard(self, guards: tuple[asyncio.Task[None], asyncio.Task[None]],
                       stop: asyncio.Event) -> None:
        closer, watchdog = guards
        await cancel_and_wait([watchdog])
        if stop.is_set():
            await closer  # let the close handshake finish (bounded by aiohttp's timeout)
        else:
            await cancel_and_wait([closer])

    async def _watchdog(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        tick = min(WATCH_EVERY_SECS, self.liveness_us / 3e6)
        while True:
            await asyncio.sleep(tick)
            now = now_us()
            reason = self.verdict(now)
            if reason is None and self.last_message_us is not None \
                    and now - self.last_message_us > self.liveness_us:
                reason = "silent"
                log.warning("feed.silent", secs=round((now - self.last_message_us) / 1e6, 1),
                            url=self.url)
            if reason is not None:
                log.warning("feed.closing", reason=reason, url=self.url, connection=self.name)
                await ws.close()
                return

    def reconnect(self, reason: str) -> None:
        """Close the socket now; `frames` yields DISCONNECTED and connects again."""
        if self._ws is not None:
            log.warning("feed.closing", reason=reason, url=self.url, connection=self.name)
            asyncio.get_running_loop().create_task(self._ws.close())

    async def send(self, cmd: str, params: dict[str, Any] | None = None,
                   attempt: int = 0) -> int:
        """Send one command at the bounded rate; returns its id (also when there is no
        socket: the command is then lost with the connection, as Kalshi would lose it)."""
        await self._rate.take()
        self._cmd_id += 1
        body: dict[str, Any] = {"id": self._cmd_id, "cmd": cmd}
        if params is not None:
            body["params"] = params
        self._sent[self._cmd_id] = (cmd, params, attempt)
        while len(self._sent) > MAX_REMEMBERED_COMMANDS:  # replies that never came
            self._sent.pop(next(iter(self._sent)))
        if self._ws is not None:
            await self._ws.send_str(orjson.dumps(body).decode())
        return self._cmd_id

    def answered(self, cmd_id: int | None) -> Sent | None:
        """The command a reply answers (forgotten from now on), if we sent it."""
        return self._sent.pop(cmd_id, None) if cmd_id is not None else None

    async def resend(self, sent: Sent) -> int:
        """A command refused with error 27 (too many requests), after a backoff."""
        cmd, params, attempt = sent
        await asyncio.sleep(self.backoff.delay(attempt))
        return await self.send(cmd, params, attempt + 1)
