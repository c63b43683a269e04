"""Kalshi fixed-point strings -> exact integers (PROTOCOL.md §3).

Prices are normalised to integer units of $0.0001 (`_e4`), sizes to integer units of 0.01
contract (`_e2`). Any number of decimals is accepted as long as the value is exact at that
scale ("0.96" == "0.9600"); a longer value is rejected, never rounded. No floats.
"""

from __future__ import annotations

PRICE_DIGITS = 4
QTY_DIGITS = 2


class NormalizeError(ValueError):
    """A value that is not an exact decimal at the required scale."""


def parse_fixed(text: object, digits: int) -> int:
    if not isinstance(text, str) or not text:
        raise NormalizeError(f"expected a decimal string, got {text!r}")
    negative = text.startswith("-")
    body = text[1:] if negative or text.startswith("+") else text
    whole, dot, frac = body.partition(".")
    if not whole and not frac:
        raise NormalizeError(f"not a decimal: {text!r}")
    if not (whole or "0").isdigit() or (dot and frac and not frac.isdigit()) or (dot and not frac):
        raise NormalizeError(f"not a decimal: {text!r}")
    if len(frac) > digits:
        if frac[digits:].strip("0"):
            raise NormalizeError(f"{text!r} has more than {digits} decimals")
        frac = frac[:digits]
    value = int(whole or "0") * 10**digits + int(frac.ljust(digits, "0") or "0")
    return -value if negative else value


# Parsed values by string: prices come from a grid of at most 10,000 levels and sizes
# repeat a lot, so most strings are seen many times; parsing was a quarter of ingest's
# per-message CPU. Bounded: cleared when full (a cache of exact results cannot go stale).
_CACHE_LIMIT = 200_000
PRICE_CACHE: dict[str, int] = {}
QTY_CACHE: dict[str, int] = {}


def _cached(cache: dict[str, int], text: object, digits: int) -> int:
    cached = cache.get(text) if isinstance(text, str) else None
    if cached is not None:
        return cached
    value = parse_fixed(text, digits)
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[text] = value  # type: ignore[index]  # parse_fixed accepted only a str
    return value


def price_e4(text: object) -> int:
    return _cached(PRICE_CACHE, text, PRICE_DIGITS)


def qty_e2(text: object) -> int:
    return _cached(QTY_CACHE, text, QTY_DIGITS)
