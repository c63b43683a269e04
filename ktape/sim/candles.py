"""Kalshi candlesticks (PROTOCOL.md §6.6) computed from the simulator's journal.

Periods of 1, 60 or 1440 minutes end on multiples of the period (Unix seconds); a candle
covers (end - period, end] and is returned when its end lies in [start_ts, end_ts], from
the market's first journal record on. `yes_bid`/`yes_ask` OHLC follow the best prices
of the book through the period (the ask is 1 minus the best NO bid); `price` is the
period's trades (null when none, `previous` = the last trade before it); `mean` is the
count-weighted mean, rounded half up to 4 places. All arithmetic is integer.
"""

from __future__ import annotations

from typing import Any

from ktape.sim.fixed import contracts, dollars
from ktape.sim.journal import Journal, apply_record

PERIODS = (1, 60, 1440)
MAX_CANDLES = 10_000


class CandleRangeError(ValueError):
    """Bad period or a range over MAX_CANDLES periods."""


def _best(ladder: dict[int, int]) -> int | None:
    return max(ladder) if ladder else None


def _ohlc(values: list[int | None]) -> dict[str, int | None]:
    present = [v for v in values if v is not None]
    if not present:
        return {"open": None, "low": None, "high": None, "close": None}
    return {"open": values[0], "low": min(present), "high": max(present), "close": values[-1]}


def _money(value: int | None) -> str | None:
    return dollars(value) if value is not None else None


def candlesticks(journal: Journal, ticker: str, start_ts: int, end_ts: int, period: int,
                 *, include_latest_before_start: bool = False, historical: bool = False
                 ) -> list[dict[str, Any]]:
    if period not in PERIODS:
        raise CandleRangeError("period_interval must be 1, 60 or 1440")
    if end_ts < start_ts:
        raise CandleRangeError("end_ts must not be before start_ts")
    step = period * 60
    records = journal.changes(ticker) + journal.trades(ticker)
    records.sort(key=lambda r: r["t"])
    if not records:
        return []
    first_end = ((records[0]["t"] // 1000) // step + 1) * step
    first = max(first_end, -(-start_ts // step) * step)
    last = (end_ts // step) * step
    if (last - first) // step + 1 > MAX_CANDLES:
        raise CandleRangeError(f"more than {MAX_CANDLES} candles requested")
    yes: dict[int, int] = {}
    no: dict[int, int] = {}
    previous: int | None = None
    i = 0
    out: list[dict[str, Any]] = []

    def apply(record: dict[str, Any]) -> None:
        nonlocal yes, no
        yes, no = apply_record(yes, no, record)

    def quote() -> tuple[int | None, int | None]:
        best_no = _best(no)
        return _best(yes), (10_000 - best_no if best_no is not None else None)

    # everything up to the first period's start
    while i < len(records) and records[i]["t"] <= (first - step) * 1000:
        if records[i]["k"] == "trd":
            previous = records[i]["p"]
        apply(records[i])
        i += 1
    if include_latest_before_start:
        out.append(_candle(first - step, None, None, [], previous, historical))
    for end in range(first, last + 1, step):
        bid, ask = quote()
        bids, asks, trades = [bid], [ask], []
        while i < len(records) and records[i]["t"] <= end * 1000:
            record = records[i]
            if record["k"] == "trd":
                trades.append((record["p"], record["c"]))
            else:
                apply(record)
                bid, ask = quote()
                bids.append(bid)
                asks.append(ask)
            i += 1
        out.append(_candle(end, _ohlc(bids), _ohlc(asks), trades, previous, historical))
        if trades:
            previous = trades[-1][0]
    return out


def _candle(end: int, bid: dict[str, int | None] | None, ask: dict[str, int | None] | None,
            trades: list[tuple[int, int]], previous: int | None,
            historical: bool) -> dict[str, Any]:
    suffix = "" if historical else "_dollars"
    empty = {"open": None, "low": None, "high": None, "close": None}
    volume = sum(c for _, c in trades)
    if trades:
        prices = [p for p, _ in trades]
        mean = (2 * sum(p * c for p, c in trades) + volume) // (2 * volume) if volume else None
        price = {"open": prices[0], "low": min(prices), "high": max(prices),
                 "close": prices[-1], "mean": mean}
    else:
        price = {**empty, "mean": None}
    price_json = {f"{k}{suffix}": _money(v) for k, v in price.items()}
    price_json[f"previous{suffix}"] = _money(previous)
    if not historical:
        price_json["min_dollars"] = None
        price_json["max_dollars"] = None
    return {
        "end_period_ts": end,
        "yes_bid": {f"{k}{suffix}": _money(v) for k, v in (bid or empty).items()},
        "yes_ask": {f"{k}{suffix}": _money(v) for k, v in (ask or empty).items()},
        "price": price_json,
        "volume" if historical else "volume_fp": contracts(volume),
        "open_interest" if historical else "open_interest_fp": contracts(0),
    }
