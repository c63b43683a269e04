"""Small asyncio helpers shared by the processes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object] | None]) -> None:
    """Cancel every task, then wait until each has finished (cancellation swallowed)."""
    pending = [t for t in tasks if t is not None]
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def all_of(*awaitables: Awaitable[Any]) -> list[Any]:
    """Every awaitable's result, run concurrently (e.g. queries on separate connections).
    The first failure cancels the others and, once they have all stopped, is raised as
    itself: nothing still runs on a connection its caller is about to hand back, and
    the services' error handler sees the error it maps (asyncio.TaskGroup would raise
    an ExceptionGroup instead)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        for task in tasks:  # retrieved, so none is logged as "never retrieved"
            if not task.cancelled():
                task.exception()
        raise


class TokenBucket:
    """A rate limit that waits rather than refuses: `take` returns once `cost` tokens,
    refilled at `rate_per_sec` up to `capacity`, are available (Kalshi's REST read budget,
    the WebSocket command rate)."""

    def __init__(self, rate_per_sec: float, capacity: float) -> None:
        self.rate, self.capacity = rate_per_sec, capacity
        self.tokens, self.updated = capacity, time.monotonic()

    async def take(self, cost: float = 1.0) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= cost:
                self.tokens -= cost
                return
            await asyncio.sleep((cost - self.tokens) / self.rate)


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter (each delay in [ceiling/2, ceiling]); `rng`
    is injectable for tests. One rule for every retry: the supervisor's restarts, Kalshi
    REST retries, reconnects and resent WebSocket commands."""

    initial_secs: float = 0.5
    max_secs: float = 30.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_secs, self.initial_secs * self.multiplier ** max(0, attempt))
        return self.jitter(ceiling)

    def jitter(self, ceiling: float) -> float:
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)
