"""Per-key token buckets: `limit` calls per minute with bursts up to `limit`.

Why a token bucket and not a fixed window: a fixed minute lets a client send 2x the
limit across a window boundary; a bucket refills continuously, and the time until the
next token is exactly the RetryInfo delay a refused client should wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float
    limit: int


def replica_share(limit_per_minute: int, replicas: int) -> int:
    """One queryd replica's part of a key's limit. Envoy spreads a key's calls over the
    replicas (least-request), each holding its own buckets, so each admits 1/N of the
    limit (rounded up) and together they admit about the limit — not N times it. While a
    replica is down the others admit a little less, never more."""
    return max(1, -(-limit_per_minute // replicas))


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._max_keys = max_keys

    def take(self, key: str, limit_per_minute: int) -> float:
        """Take one token: 0.0 if admitted, else the seconds until one is available."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != limit_per_minute:
            if len(self._buckets) >= self._max_keys:
                self._evict_full(now)
            bucket = _Bucket(float(limit_per_minute), now, limit_per_minute)
            self._buckets[key] = bucket
        rate = limit_per_minute / 60.0
        bucket.tokens = min(float(limit_per_minute), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def _evict_full(self, now: float) -> None:
        """Forget buckets that have refilled completely: they carry no state."""
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * bucket.limit / 60.0 >= bucket.limit:
                del self._buckets[key]
