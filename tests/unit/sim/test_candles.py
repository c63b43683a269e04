"""Candlesticks from the journal: periods, OHLC of trades and quotes, exact mean."""

from __future__ import annotations

import pytest

from ktape.sim.candles import CandleRangeError, candlesticks
from ktape.sim.journal import Journal

T0 = 1_795_000_020  # seconds; a minute boundary is at 1_795_000_020 // 60 * 60 + 60


def _journal() -> Journal:
    j = Journal()
    j.append({"k": "book", "t": T0 * 1000, "m": "KX-A", "yes": [[4000, 100]], "no": [[5500, 100]]})
    j.append({"k": "trd", "t": (T0 + 5) * 1000, "m": "KX-A", "id": "t1", "p": 4100, "c": 300,
              "side": "yes"})
    j.append({"k": "chg", "t": (T0 + 6) * 1000, "m": "KX-A", "s": "yes", "p": 4300, "d": 50,
              "q": 50})
    j.append({"k": "trd", "t": (T0 + 7) * 1000, "m": "KX-A", "id": "t2", "p": 4400, "c": 100,
              "side": "no"})
    j.append({"k": "chg", "t": (T0 + 70) * 1000, "m": "KX-A", "s": "no", "p": 5500, "d": -100,
              "q": 0})
    return j


def test_minute_candles_follow_trades_and_quotes():
    first_end = (T0 // 60 + 1) * 60
    out = candlesticks(_journal(), "KX-A", T0, T0 + 180, 1)
    assert [c["end_period_ts"] for c in out] == [first_end, first_end + 60, first_end + 120,
                                                first_end + 180][: len(out)]
    first = out[0]
    assert first["price"]["open_dollars"] == "0.4100"
    assert first["price"]["close_dollars"] == "0.4400"
    # count-weighted mean (4100*3 + 4400*1) / 4 = 4175, exact
    assert first["price"]["mean_dollars"] == "0.4175"
    assert first["volume_fp"] == "4.00"
    assert first["yes_bid"] == {"open_dollars": "0.4000", "low_dollars": "0.4000",
                                "high_dollars": "0.4300", "close_dollars": "0.4300"}
    assert first["yes_ask"]["close_dollars"] == "0.4500"
    second = out[1]
    assert second["price"]["open_dollars"] is None
    assert second["price"]["previous_dollars"] == "0.4400"
    assert second["yes_ask"]["close_dollars"] is None  # the NO side emptied


def test_historical_names_and_latest_before_start():
    out = candlesticks(_journal(), "KX-A", T0 + 100, T0 + 200, 1,
                       include_latest_before_start=True, historical=True)
    assert out[0]["price"]["open"] is None and out[0]["price"]["previous"] == "0.4400"
    assert "volume" in out[1] and "open_interest" in out[1]


def test_bad_ranges_are_refused():
    with pytest.raises(CandleRangeError):
        candlesticks(_journal(), "KX-A", T0, T0 + 100, 5)
    with pytest.raises(CandleRangeError):
        candlesticks(_journal(), "KX-A", T0, T0 + 60 * 20_000, 1)
