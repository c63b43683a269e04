"""The audit sampler: Kalshi's own REST books, a few markets a minute, stored beside the
recorded ones so queryd can check the recording against them (GetAuditReport).

Why REST: it is a second, independent reading of the exchange's book (no WebSocket, no
seq, no recorder state), so a book ktape rebuilt wrongly shows up as a disagreement
instead of going unnoticed. It is never used to change a recorded book: a REST book has
no seq and may be an edge cache's copy (PROTOCOL.md §6.1).

Each sample is one `audit_books` row (ktape/schema/tables.py): the request's send time
(`ts`), its answer's arrival (`response_ts`), the staleness allowance in force and both
ladders. Markets are taken in ticker order, each after the last one sampled, so every
recorded market comes round in turn whatever joins or leaves the set. Reads share
ingestd's REST client and token bucket with discovery. Off unless
KTAPE_AUDIT_MARKETS_PER_MINUTE is set; a failed sample is logged and counted, never fatal.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from ingestd.book import ladder_text
from ingestd.kalshi.normalize import NormalizeError, price_e4, qty_e2
from ingestd.kalshi.rest import KalshiRest, RestError
from ingestd.metrics import AUDIT_SAMPLES
from ingestd.sink import RowSink, TimestampMicros
from ktape.aio import cancel_and_wait
from ktape.log import get_logger

log = get_logger(__name__)

TABLE = "audit_books"
PRICE_LIMIT_E4 = 10_000  # prices lie strictly between $0 and $1


class BookFormatError(ValueError):
    """A REST book that is not the documented shape."""


def parse_book(body: dict[str, Any]) -> tuple[dict[int, int], dict[int, int]]:
    """`{"orderbook_fp": {"yes_dollars": [["0.4200", "150.00"], ...], "no_dollars": [...]}}`
    -> (yes, no) ladders price_e4 -> qty_e2. Levels may come in any order (PROTOCOL.md
    §4: sort yourself); a repeated price, a size <= 0 or a price off (0, 1) is an error."""
    book = body.get("orderbook_fp")
    if not isinstance(book, dict):
        raise BookFormatError("no orderbook_fp object")
    out: list[dict[int, int]] = []
    for key in ("yes_dollars", "no_dollars"):
        levels = book.get(key) or []
        if not isinstance(levels, list):
            raise BookFormatError(f"{key} is not a list")
        ladder: dict[int, int] = {}
        for level in levels:
            if not isinstance(level, list) or len(level) != 2:
                raise BookFormatError(f"{key} level {level!r} is not [price, size]")
            price, qty = price_e4(level[0]), qty_e2(level[1])
            if not 0 < price < PRICE_LIMIT_E4 or qty <= 0 or price in ladder:
                raise BookFormatError(f"{key} level {level!r} is out of range or repeated")
            ladder[price] = qty
        out.append(ladder)
    return out[0], out[1]


class AuditSampler:
    """Samples `per_minute` REST books a minute, evenly spaced, from `recorded()` (the
    markets whose book ingestd holds now)."""

    def __init__(self, rest: KalshiRest, sink: RowSink, recorded: Callable[[], Iterable[str]],
                 *, per_minute: int, allowance_ms: int) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be > 0 (the sampler is not built when off)")
        self.rest = rest
        self.sink = sink
        self.recorded = recorded
        self.interval_secs = 60.0 / per_minute
        self.allowance_ms = allowance_ms
        self.last: str | None = None

    def next_ticker(self) -> str | None:
        """The recorded market after the last one sampled, in ticker order (wrapping)."""
        tickers = sorted(self.recorded())
        if not tickers:
            return None
        i = 0 if self.last is None else bisect.bisect_right(tickers, self.last)
        self.last = tickers[i % len(tickers)]
        return self.last

    async def sample(self, ticker: str) -> bool:
        """One REST book of `ticker` as an audit_books row; False (logged, counted) when
        the read failed or its book does not parse."""
        try:
            timed = await self.rest.orderbook(ticker)
            yes, no = parse_book(timed.body)
        except (RestError, NormalizeError, BookFormatError, ValueError) as exc:
            AUDIT_SAMPLES.labels("failed").inc()
            log.warning("audit.sample_failed", ticker=ticker, error=str(exc),
                        error_type=type(exc).__name__)
            return False
        self.sink.row(TABLE, symbols={"ticker": ticker}, columns={
            "response_ts": TimestampMicros(timed.received_us), "allowance_ms": self.allowance_ms,
            "yes_levels": ladder_text(yes), "no_levels": ladder_text(no)}, at_us=timed.sent_us)
        AUDIT_SAMPLES.labels("stored").inc()
        log.debug("audit.sampled", ticker=ticker,
                  request_us=timed.received_us - timed.sent_us)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until `stop`; a read in progress (perhaps backing off a 429) is
        abandoned at stop, so shutdown never waits for Kalshi. Samples start on a fixed
        schedule (a slow answer does not lower the rate; one that overran its slot is
        not made up for by a burst)."""
        clock = asyncio.get_running_loop().time
        due = clock()
        while not stop.is_set():
            due = max(due + self.interval_secs, clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), due - clock())
            ticker = None if stop.is_set() else self.next_ticker()
            if ticker is None:
                continue
            sampling = asyncio.create_task(self.sample(ticker), name="audit-sample")
            stopping = asyncio.create_task(stop.wait(), name="audit-stop")
            await asyncio.wait({sampling, stopping}, return_when=asyncio.FIRST_COMPLETED)
            try:
                await cancel_and_wait([sampling, stopping])
            except Exception as exc:  # a bug in one sample must not stop the recording
                AUDIT_SAMPLES.labels("failed").inc()
                log.exception("audit.sample_crashed", ticker=ticker, error=str(exc))
