"""The ground-truth journal: every true book change, trade, lifecycle event and fault.

Tests of ingestd and queryd use it as the oracle: what ktape stored must rebuild exactly
the journal's book at every instant outside recorded gaps.

API (stable):
    journal = Journal()                  # in memory; `Journal(path)` also appends NDJSON
    Journal.load(path) -> Journal        # read a journal file back
    journal.book_at(ticker, ts_ms) -> (yes, no)   # dicts price_e4 -> qty_e2, inclusive
    journal.trades(ticker=None) -> list[dict]
    journal.faults() -> list[dict]
    journal.tickers() -> set[str]

Record kinds (`k`): `book` (initial full book at start), `chg` (one level change:
t, m, s, p, d, q, and `c` its true cause: `new`, `cancel` or `trade`; journals written
before causes were recorded lack `c`, and load as they are), `clr` (book emptied at
close), `trd` (trade; `oi` = open interest after it), `life` (lifecycle), `fault` (an
injected fault: t, what, details). Times `t` are exchange milliseconds.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

import orjson

from ktape.sim.model import BookChange, BookCleared, Event, LifecycleEvent, Market, TradeEvent


class Journal:
    def __init__(self, path: Path | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self._by_ticker: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._file: IO[bytes] | None = open(path, "ab") if path else None  # noqa: SIM115

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None

    # -- writing -----------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        ticker = record.get("m")
        if ticker is not None:
            self._by_ticker[ticker].append(record)
        if self._file:
            self._file.write(orjson.dumps(record) + b"\n")

    def initial_book(self, ts_ms: int, market: Market) -> None:
        self.append({"k": "book", "t": ts_ms, "m": market.ticker,
                     "yes": sorted(market.yes.items()), "no": sorted(market.no.items())})

    def event(self, event: Event) -> None:
        if isinstance(event, BookChange):
            self.append({"k": "chg", "t": event.ts_ms, "m": event.ticker, "s": event.side,
                         "p": event.price_e4, "d": event.delta_e2, "q": event.qty_after_e2,
                         "c": event.cause})
        elif isinstance(event, BookCleared):
            self.append({"k": "clr", "t": event.ts_ms, "m": event.ticker})
        elif isinstance(event, TradeEvent):
            self.append({"k": "trd", "t": event.ts_ms, "m": event.ticker, "id": event.trade_id,
                         "p": event.yes_price_e4, "c": event.count_e2, "side": event.taker_side,
                         "oi": event.open_interest_e2})
        elif isinstance(event, LifecycleEvent):
            self.append({"k": "life", "t": event.ts_ms, "m": event.ticker,
                         "type": event.event_type, **event.fields})

    def fault(self, ts_ms: int, what: str, **details: Any) -> None:
        self.append({"k": "fault", "t": ts_ms, "what": what, **details})

    def flush(self) -> None:
        if self._file:
            self._file.flush()

    # -- reading -----------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> Journal:
        journal = cls()
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    journal.append(orjson.loads(line))
        return journal

    def tickers(self) -> set[str]:
        return set(self._by_ticker)

    def book_at(self, ticker: str, ts_ms: int) -> tuple[dict[int, int], dict[int, int]]:
        """The true book of `ticker` after every change stamped ≤ `ts_ms`."""
        yes: dict[int, int] = {}
        no: dict[int, int] = {}
        records = self._by_ticker.get(ticker, [])
        end = bisect.bisect_right([r["t"] for r in records], ts_ms)
        for record in records[:end]:
            yes, no = apply_record(yes, no, record)
        return yes, no

    def trades(self, ticker: str | None = None) -> list[dict[str, Any]]:
        source = self._by_ticker.get(ticker, []) if ticker else self.records
        return [r for r in source if r["k"] == "trd"]

    def faults(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["k"] == "fault"]

    def changes(self, ticker: str) -> list[dict[str, Any]]:
        return [r for r in self._by_ticker.get(ticker, []) if r["k"] in ("chg", "clr", "book")]


def apply_record(yes: dict[int, int], no: dict[int, int], record: dict[str, Any]
                 ) -> tuple[dict[int, int], dict[int, int]]:
    """The book after one journal record (`book` replaces, `clr` empties, `chg` sets a
    level); other records leave it as it is. May update the given ladders in place."""
    kind = record["k"]
    if kind == "book":
        return ({int(p): int(q) for p, q in record["yes"]},
                {int(p): int(q) for p, q in record["no"]})
    if kind == "clr":
        return {}, {}
    if kind == "chg":
        ladder = yes if record["s"] == "yes" else no
        if record["q"] == 0:
            ladder.pop(record["p"], None)
        else:
            ladder[record["p"]] = record["q"]
    return yes, no
