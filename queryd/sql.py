"""Every SQL statement queryd runs, named and parameterised (never built from input).

Each query notes the table layout it relies on (ktape/schema/tables.py). Timestamps are
passed as timezone-aware UTC datetimes; QuestDB returns naive datetimes in UTC.
"""

from __future__ import annotations

# The last checkpoint at or before T. book_checkpoints: one row per full book
# (exchange snapshot or periodic), DEDUP(ts, ticker, sid, seq, reason). `LATEST ON` is
# bounded below by a lookback so a ticker that stopped trading long ago does not make
# QuestDB scan every partition (FIELD-NOTES: unbounded LATEST ON scans back to the start).
CHECKPOINT_AT = """
SELECT ts, sid, seq, reason, yes_levels, no_levels, continuous_since
FROM book_checkpoints
WHERE ticker = %(ticker)s AND ts >= %(since)s AND ts <= %(at)s
LATEST ON ts PARTITION BY ticker
"""

# Same without the lower bound: the fallback when the bounded lookup finds nothing.
CHECKPOINT_AT_UNBOUNDED = """
SELECT ts, sid, seq, reason, yes_levels, no_levels, continuous_since
FROM book_checkpoints
WHERE ticker = %(ticker)s AND ts <= %(at)s
LATEST ON ts PARTITION BY ticker
"""

# Changes in [from, to] for one ticker in application order. book_changes carries the
# resulting level size, so order within one (ts, sid) is by seq.
CHANGES_BETWEEN = """
SELECT ts, side, price_e4, qty_after_e2, delta_e2, kind, seq, sid
FROM book_changes
WHERE ticker = %(ticker)s AND ts >= %(start)s AND ts <= %(end)s
ORDER BY ts, sid, seq
"""

# Gaps whose span contains T: start_ts <= T < end_ts, an open gap (end_ts null) extends
# to now; a gap with unknown start counts from its detection time (ts).
GAP_AT = """
SELECT ts, reason, start_ts, end_ts, expected_seq, got_seq
FROM gaps
WHERE ticker = %(ticker)s AND ts <= %(horizon)s
  AND coalesce(start_ts, ts) <= %(at)s
  AND (end_ts IS NULL OR end_ts > %(at)s)
ORDER BY ts DESC
LIMIT 1
"""

# The latest gap that ended at or before T: continuity can only start after it.
LAST_GAP_END_BEFORE = """
SELECT max(end_ts) FROM gaps
WHERE ticker = %(ticker)s AND end_ts <= %(at)s
"""

# First recorded instant of a ticker (coverage start).
FIRST_CHECKPOINT = """
SELECT min(ts) FROM book_checkpoints WHERE ticker = %(ticker)s
"""

TICKER_KNOWN = """
SELECT ticker FROM markets WHERE ticker = %(ticker)s LIMIT 1
"""

TICKER_RECORDED = """
SELECT ticker FROM book_checkpoints WHERE ticker = %(ticker)s LIMIT 1
"""
