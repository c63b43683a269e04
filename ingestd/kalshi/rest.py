"""Kalshi REST: market discovery (all pages) and audit samples of books, with 429/5xx
backoff and one token budget for both.

Kalshi sends no Retry-After on 429 (PROTOCOL.md §6.1/§8): back off exponentially with
jitter. A small token bucket keeps us inside the Basic tier's read budget (~20 GETs/s).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from ingestd.kalshi.auth import KalshiSigner
from ktape.aio import Backoff, TokenBucket
from ktape.clock import now_us
from ktape.log import get_logger

log = get_logger(__name__)


class RestError(RuntimeError):
    pass


@dataclass(frozen=True)
class Timed:
    """A REST answer and our clock (Unix µs) around the request that got it."""

    sent_us: int
    received_us: int
    body: dict[str, Any]


class KalshiRest:
    def __init__(self, base_url: str, signer: KalshiSigner | None = None, *,
                 requests_per_sec: float = 15.0, max_attempts: int = 8,
                 rng: random.Random | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.base_path = urlsplit(self.base_url).path
        self.signer = signer
        self.bucket = TokenBucket(requests_per_sec, requests_per_sec)
        self.max_attempts = max_attempts
        self.backoff = Backoff(0.5, 30.0, rng=rng or random.Random())
        self.client = httpx.AsyncClient(timeout=20.0)

    async def close(self) -> None:
        await self.client.aclose()

    def backoff_secs(self, attempt: int) -> float:
        return self.backoff.delay(attempt)

    async def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return (await self.get_timed(path, params)).body

    async def get_timed(self, path: str, params: dict[str, Any] | None = None) -> Timed:
        """GET with the retries of `get`, and our clock when the answering attempt was
        sent and when its answer had arrived (the window an audit compares within)."""
        for attempt in range(self.max_attempts):
            await self.bucket.take()
            headers = self.signer.headers("GET", self.base_path + path) if self.signer else {}
            sent_us = now_us()
            try:
                resp = await self.client.get(self.base_url + path, params=params, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("rest.request_failed", path=path, error=str(exc), attempt=attempt)
                await asyncio.sleep(self.backoff_secs(attempt))
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                delay = self.backoff_secs(attempt)
                log.warning("rest.retrying", path=path, status=resp.status_code,
                            attempt=attempt, delay_secs=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            if resp.status_code != 200:
                raise RestError(f"GET {path}: HTTP {resp.status_code} {resp.text[:200]}")
            return Timed(sent_us, now_us(), resp.json())
        raise RestError(f"GET {path}: gave up after {self.max_attempts} attempts")

    async def _paged(self, path: str, key: str, limit: int, **filters: str
                     ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = ""
        while True:
            params: dict[str, Any] = {"limit": limit, **filters}
            if cursor:
                params["cursor"] = cursor
            page = await self.get(path, params)
            out.extend(page.get(key) or [])
            cursor = page.get("cursor") or ""
            if not cursor:
                return out

    async def markets(self, **filters: str) -> list[dict[str, Any]]:
        """Every market matching `filters`, following the cursor to the last page."""
        return await self._paged("/markets", "markets", 1000, **filters)

    async def events(self, **filters: str) -> list[dict[str, Any]]:
        """Every event (limit 200 per page, Kalshi's maximum)."""
        return await self._paged("/events", "events", 200, **filters)

    async def orderbook(self, ticker: str) -> Timed:
        """`GET /markets/{ticker}/orderbook` with every level (depth 0), timed."""
        return await self.get_timed(f"/markets/{quote(ticker, safe='')}/orderbook",
                                    {"depth": 0})

    async def series(self) -> list[dict[str, Any]]:
        """Every series (one unpaginated list)."""
        return list((await self.get("/series")).get("series") or [])
