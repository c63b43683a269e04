"""ktape/sql_lists.py: ticker lists quoted as literals, per-row conditions as parameters."""

from __future__ import annotations

from ktape.sql_lists import any_of, bound_tickers, with_tickers


def test_any_of_binds_every_value_and_keeps_the_text_for_the_same_count():
    first, params = any_of("(ticker = {} AND ts >= {})", [("A", 1), ("B'; --", 2)])
    second, other = any_of("(ticker = {} AND ts >= {})", [("C", 3), ("D", 4)])
    assert first.as_string(None) == second.as_string(None) == (
        "(ticker = %(any0_0)s AND ts >= %(any0_1)s) OR (ticker = %(any1_0)s AND ts >= %(any1_1)s)")
    assert params == {"any0_0": "A", "any0_1": 1, "any1_0": "B'; --", "any1_1": 2}
    assert other == {"any0_0": "C", "any0_1": 3, "any1_0": "D", "any1_1": 4}


def test_with_tickers_quotes_each_ticker():
    assert with_tickers("x IN ({tickers})", ["A", "B'C"]).as_string(None) == "x IN ('A', 'B''C')"


def test_bound_tickers_binds_each_and_keeps_the_text_for_the_same_count():
    first, params = bound_tickers("x IN ({tickers})", ["A", "B'C"])
    second, other = bound_tickers("x IN ({tickers})", ["D", "E"])
    assert first.as_string(None) == second.as_string(None) == "x IN (%(tk0)s, %(tk1)s)"
    assert params == {"tk0": "A", "tk1": "B'C"} and other == {"tk0": "D", "tk1": "E"}
