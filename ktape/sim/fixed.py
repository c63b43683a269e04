"""Kalshi's fixed-point wire strings, produced exactly (no floats).

Prices are kept as integers of $0.0001 (`*_e4`), sizes as integers of 0.01 contract
(`*_e2`). Kalshi sends dollars with 4 decimals and sizes with exactly 2.
"""

from __future__ import annotations


def dollars(price_e4: int, decimals: int = 4) -> str:
    """`4200` -> "0.4200" (decimals 4), "0.42" (decimals 2, only if exact)."""
    sign = "-" if price_e4 < 0 else ""
    whole, frac = divmod(abs(price_e4), 10_000)
    text = f"{frac:04d}"
    if decimals < 4 and not text[decimals:].strip("0"):
        text = text[:decimals]  # shorter form only when exact
    return f"{sign}{whole}.{text}"


def contracts(qty_e2: int) -> str:
    """`15000` -> "150.00", `-5` -> "-0.05"."""
    sign = "-" if qty_e2 < 0 else ""
    whole, frac = divmod(abs(qty_e2), 100)
    return f"{sign}{whole}.{frac:02d}"
