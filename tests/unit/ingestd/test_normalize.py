"""Exact normalisation of Kalshi fixed-point strings."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestd.kalshi.normalize import NormalizeError, price_e4, qty_e2


@pytest.mark.parametrize(("text", "value"), [
    ("0.4200", 4200), ("0.42", 4200), ("0.960", 9600), ("0.0001", 1), ("1.0000", 10000),
    ("0.45000000", 4500), (".5", 5000),
])
def test_prices(text, value):
    assert price_e4(text) == value


@pytest.mark.parametrize(("text", "value"), [("150.00", 15000), ("-0.05", -5), ("31.54", 3154),
                                               ("7", 700), ("0.5", 50)])
def test_quantities(text, value):
    assert qty_e2(text) == value


@pytest.mark.parametrize("bad", ["", "abc", "0.00001", "1.2.3", "--1", "1e5", "0.", None, 0.42,
                                 "0,42", " 1"])
def test_rejects_inexact_or_malformed(bad):
    with pytest.raises(NormalizeError):
        price_e4(bad)


@given(st.decimals(min_value=-10**9, max_value=10**9, places=2, allow_nan=False,
                   allow_infinity=False))
def test_any_two_place_decimal_is_exact(value: Decimal):
    assert qty_e2(f"{value:.2f}") == int(value * 100)
