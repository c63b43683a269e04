"""Rows of Kalshi's market-wide channels (trades, tickers, lifecycle), exactly as sent.

These channels change no book, so they need no recorder: each frame is one row (two for a
`determined` event: its lifecycle row and its settlement), written to the row sink with
the one exchange-time rule of ingestd/kalshi/schemas.py.
"""

from __future__ import annotations

import orjson

from ingestd.kalshi import schemas
from ingestd.kalshi.normalize import price_e4, qty_e2
from ingestd.sink import RowSink, TimestampMicros


def trade(sink: RowSink, frame: schemas.Trade, recv_us: int) -> None:
    msg = frame.msg
    ts_us, source = schemas.exchange_time(msg.ts_ms, msg.ts, frame.sending_ts_ms, recv_us)
    yes = price_e4(msg.yes_price_dollars)
    no = price_e4(msg.no_price_dollars) if msg.no_price_dollars else 10_000 - yes
    sink.row("trades", symbols={"ticker": msg.market_ticker,
                                "taker_side": msg.taker_outcome_side or msg.taker_side or "",
                                "source": "ws"},
             columns={"trade_id": msg.trade_id, "yes_price_e4": yes, "no_price_e4": no,
                      "count_e2": qty_e2(msg.count_fp), "is_block": msg.is_block_trade,
                      "seq": frame.seq or 0, "sid": frame.sid,
                      "recv_ts": TimestampMicros(recv_us)},
             at_us=ts_us, exchange_ms=ts_us // 1000 if source == "exchange" else None)


def _price(value: str | None) -> int | None:
    return None if value in (None, "") else price_e4(value)


def _size(value: str | None) -> int | None:
    return None if value in (None, "") else qty_e2(value)


def ticker(sink: RowSink, frame: schemas.Ticker, recv_us: int) -> None:
    """Kalshi's derived statistics of a market (PROTOCOL.md §5.7) — volume, open interest,
    last price, best bid and ask as Kalshi reports them — one complete row per message
    (the channel is unsequenced: nothing to gap)."""
    msg = frame.msg
    ts_us, source = schemas.exchange_time(msg.ts_ms, msg.ts, frame.sending_ts_ms, recv_us)
    columns = {"price_e4": _price(msg.price_dollars), "yes_bid_e4": _price(msg.yes_bid_dollars),
               "yes_ask_e4": _price(msg.yes_ask_dollars),
               "yes_bid_size_e2": _size(msg.yes_bid_size_fp),
               "yes_ask_size_e2": _size(msg.yes_ask_size_fp),
               "last_trade_size_e2": _size(msg.last_trade_size_fp),
               "volume_e2": _size(msg.volume_fp), "open_interest_e2": _size(msg.open_interest_fp),
               "dollar_volume": msg.dollar_volume,
               "dollar_open_interest": msg.dollar_open_interest,
               "sid": frame.sid, "recv_ts": TimestampMicros(recv_us)}
    sink.row("tickers", symbols={"ticker": msg.market_ticker},
             columns={k: v for k, v in columns.items() if v is not None},
             at_us=ts_us, exchange_ms=ts_us // 1000 if source == "exchange" else None)


def lifecycle(sink: RowSink, frame: schemas._LifecycleFrame, recv_us: int,
              series_ticker: str) -> int:
    """The lifecycle row (payload: the body as sent) and, for `determined`, the market's
    settlement; returns the event's time (µs)."""
    msg = frame.msg
    ts_ms, ts = msg.get("ts_ms"), msg.get("ts")
    ts_us, source = schemas.exchange_time(ts_ms if type(ts_ms) is int else None,
                                          ts if type(ts) in (int, str) else None,
                                          frame.sending_ts_ms, recv_us)
    event_ticker = msg.get("event_ticker") or (msg.get("additional_metadata") or {}).get(
        "event_ticker") or ""
    sink.row("lifecycle", symbols={"ticker": frame.ticker, "event_type": frame.event_type,
                                   "event_ticker": str(event_ticker), "ts_source": source},
             columns={"payload": orjson.dumps(msg).decode(), "seq": frame.seq or 0,
                      "sid": frame.sid, "recv_ts": TimestampMicros(recv_us)}, at_us=ts_us)
    if isinstance(frame, schemas.MarketLifecycle) and frame.event_type == "determined":
        value = msg.get("settlement_value")
        det = msg.get("determination_ts")
        sink.row("settlements", symbols={
            "ticker": frame.ticker, "event_ticker": "", "series_ticker": series_ticker,
            "result": str(msg.get("result", "")),
            "ts_source": "exchange" if type(det) is int else source},
            columns={"settlement_value_e4": price_e4(value) if value else None,
                     "recv_ts": TimestampMicros(recv_us)},
            at_us=det * 1_000_000 if type(det) is int else ts_us)
    return ts_us
