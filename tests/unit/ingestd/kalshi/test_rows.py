"""Rows of the market-wide channels: exact values, the one time rule, nothing invented."""

from __future__ import annotations

import orjson

from ingestd.kalshi import rows, schemas
from tests.unit.ingestd.test_recorder import Rows


def _frame(body: dict) -> object:
    return schemas.decode(orjson.dumps(body))


def test_a_trade_row_is_exact_and_stamped_by_the_exchange():
    sink = Rows()
    rows.trade(sink, _frame({"type": "trade", "sid": 4, "seq": 8, "msg": {  # type: ignore[arg-type]
        "trade_id": "t1", "market_ticker": "KX-A", "yes_price_dollars": "0.2700",
        "count_fp": "5.54", "taker_outcome_side": "no", "taker_side": "yes",
        "ts": 1764007199, "ts_ms": 1764007199812}}), 9)
    [(table, symbols, columns, at_us)] = sink.rows
    assert table == "trades" and at_us == 1764007199812000
    assert symbols == {"ticker": "KX-A", "taker_side": "no", "source": "ws"}
    assert (columns["yes_price_e4"], columns["no_price_e4"], columns["count_e2"]) == (
        2700, 7300, 554)


def test_a_ticker_row_leaves_out_what_kalshi_left_empty():
    sink = Rows()
    rows.ticker(sink, _frame({"type": "ticker", "sid": 5, "msg": {  # type: ignore[arg-type]
        "market_ticker": "KX-A", "price_dollars": "", "yes_bid_dollars": "0.27",
        "volume_fp": "10155.43", "dollar_volume": 4812, "ts": 1764007199}}), 9)
    [(_, _, columns, at_us)] = sink.rows
    assert at_us == 1764007199000000  # no ts_ms: the deprecated seconds
    assert columns["yes_bid_e4"] == 2700 and columns["volume_e2"] == 1015543
    assert "price_e4" not in columns and columns["dollar_volume"] == 4812


def test_a_determined_event_is_a_lifecycle_row_and_a_settlement():
    sink = Rows()
    frame = _frame({"type": "market_lifecycle_v2", "sid": 1, "seq": 3,
                    "sending_ts_ms": 1764007200000, "msg": {
                        "market_ticker": "KX-A", "event_type": "determined", "result": "yes",
                        "settlement_value": "1.0000", "determination_ts": 1764007100,
                        "new_key": 1}})
    at = rows.lifecycle(sink, frame, 9, "KX")  # type: ignore[arg-type]
    assert at == 1764007200000000  # sending time: lifecycle bodies carry no stamp
    lifecycle, settlement = sink.rows
    assert lifecycle[1]["ts_source"] == "sending"
    assert orjson.loads(lifecycle[2]["payload"])["new_key"] == 1  # the body, whole
    assert settlement[0] == "settlements" and settlement[3] == 1764007100000000
    assert settlement[1]["series_ticker"] == "KX" and settlement[2]["settlement_value_e4"] == 10000
