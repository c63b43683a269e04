"""Open interest at each candle's close, from Kalshi's ticker reports.

Why shared: ListCandles (queryd) and the `candles_1m` files (the datasets job) must give
the same number for the same minute; one rule, written once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def at_closes(bucket_starts_us: Sequence[int], reports: Mapping[int, int | None],
              before: int | None) -> list[int | None]:
    """For each bucket: its last report (`reports` by bucket start, as `SAMPLE BY` gives
    them), else the last one before it, else `before` (the latest before the first)."""
    wanted = set(bucket_starts_us)
    carried, at_close = before, {}
    for bucket in sorted(wanted | set(reports)):
        if reports.get(bucket) is not None:
            carried = reports[bucket]
        if bucket in wanted:
            at_close[bucket] = carried
    return [at_close[b] for b in bucket_starts_us]
