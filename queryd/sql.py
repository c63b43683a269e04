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

# Changes in [from, to] for one ticker in application order, times as µs (LONG: no
# datetime per row; a book at T replays hundreds). book_changes carries the
# resulting level size, so order within one (ts, sid) is by seq, and a replay needs no
# delta (not read: each column costs ~0.3 µs a row to send and decode, ~12% of a row).
# Asked for in binary (integers and symbols only: QuestDB sends and psycopg reads a
# binary row ~15% faster, and a book replays hundreds of them).
CHANGES_BETWEEN = """
SELECT cast(ts AS LONG), side, price_e4, qty_after_e2, kind, seq, sid
FROM book_changes
WHERE ticker = %(ticker)s AND ts >= %(start)s AND ts <= %(end)s
ORDER BY ts, sid, seq
"""

# The same rows for a day of candles' book closes, ~10,000 of them for a busy market's
# day at 100M changes a day: side and price packed into one LONG (price_e4 * 2 + 1 for
# NO; NULL for an unknown side, which the replay refuses), a snapshot's identity only on
# snapshot rows (NULL on deltas). Four columns instead of seven: 23 against 33 ms for
# 10,000 rows (docs/performance.md, "Ticker indexes adopted"); each column sent costs
# ~0.3 µs a row.
CANDLE_CHANGES = """
SELECT cast(ts AS LONG),
       price_e4 * 2 + CASE side WHEN 'yes' THEN 0 WHEN 'no' THEN 1 END,
       qty_after_e2,
       CASE WHEN kind = 'snapshot' THEN concat(sid, ':', seq) END
FROM book_changes
WHERE ticker = %(ticker)s AND ts >= %(start)s AND ts <= %(end)s
ORDER BY ts, sid, seq
"""

# Gaps whose span contains T: start_ts <= T < end_ts, an open gap (end_ts null) extends
# to now; a gap with unknown start counts from its detection time (ts). Detection time is
# not bounded by T: a gap is usually detected after the instants it covers.
GAP_AT = """
SELECT ts, reason, start_ts, end_ts, expected_seq, got_seq
FROM gaps
WHERE ticker = %(ticker)s
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

# Trades in [start, end) after a keyset position, in (ts, seq, trade_id) order.
# trades: DEDUP(ts, ticker, trade_id), so (ts, trade_id) is unique; seq orders the
# prints of one subscription within a millisecond and is null for backfilled trades.
# `ts >= after_ts` is implied by the keyset OR, but QuestDB narrows the scanned interval
# only by a bound standing alone: without it every page scanned from `start`.
TRADES_PAGE = """
SELECT ts, coalesce(seq, -1) AS seq_order, trade_id, yes_price_e4, no_price_e4, count_e2,
       taker_side, is_block, recv_ts
FROM trades
WHERE ticker = %(ticker)s AND ts >= %(start)s AND ts < %(end)s
  AND ts >= %(after_ts)s
  AND (ts > %(after_ts)s
       OR (ts = %(after_ts)s AND (coalesce(seq, -1) > %(after_seq)s
           OR (coalesce(seq, -1) = %(after_seq)s AND trade_id > %(after_id)s))))
ORDER BY ts, seq_order, trade_id
LIMIT %(limit)s
"""

# Book changes in [start, end) after a keyset position, in application order; times as
# microseconds (LONG): a page is built without one datetime per row.
# book_changes: DEDUP(ts, ticker, sid, seq, side, price_e4) makes the order total, and
# ingestd's book time makes (ts, sid, seq) seq order (docs/ingestd.md, Order and time).
CHANGES_PAGE = """
SELECT cast(ts AS LONG), sid, seq, side, price_e4, qty_after_e2, delta_e2, kind,
       cast(recv_ts AS LONG), cast(source_ts AS LONG)
FROM book_changes
WHERE ticker = %(ticker)s AND ts >= %(start)s AND ts < %(end)s
  AND ts >= %(after_ts)s
  AND (ts > %(after_ts)s
       OR (ts = %(after_ts)s AND (sid > %(after_sid)s
           OR (sid = %(after_sid)s AND (seq > %(after_seq)s
               OR (seq = %(after_seq)s AND (side > %(after_side)s
                   OR (side = %(after_side)s AND price_e4 > %(after_price)s))))))))
ORDER BY ts, sid, seq, side, price_e4
LIMIT %(limit)s
"""

# Change labelling (queryd/causes.py). The decreases of a deltas page's first and last
# exchange milliseconds, wherever the page cut them off: a cause depends on every fall at
# its instant and level. book_changes: `ts` is the book time, which equals the change's own
# `ts_ms` except for the few rows moved later (`source_ts` set, inside a healed gap). One
# interval per edge millisecond: the rows between the edges are the page's, and reading
# them again (one range over the page's span with an OR) cost ~1 ms a 1,000-row page.
_FALLS = """
SELECT cast(ts AS LONG), sid, seq, side, price_e4, delta_e2, cast(source_ts AS LONG)
FROM book_changes
WHERE ticker = %(ticker)s AND kind = 'delta' AND delta_e2 < 0"""
FALLS_AT_EDGE = _FALLS + " AND ts >= %(first)s AND ts < %(first_end)s\n"
FALLS_AT_EDGES = (FALLS_AT_EDGE + "UNION ALL" + _FALLS
                  + " AND ts >= %(last)s AND ts < %(last_end)s\n")

# The prints of a deltas page's span [start, end), for change labelling. trades:
# DEDUP(ts, ticker, trade_id), one row per print; block trades are kept (the labeller
# skips them) so the one rule lives in queryd/causes.py.
PRINTS_BETWEEN = """
SELECT ts, yes_price_e4, count_e2, taker_side, is_block
FROM trades
WHERE ticker = %(ticker)s AND ts >= %(start)s AND ts < %(end)s
"""

# The book time of the row `skip` rows into [after_ts, end) (designated-timestamp order,
# a forward scan that stops there): a bound that lets CHANGES_PAGE sort only the rows up to
# it instead of everything after the page (whose cost grows with the rest of the range).
CHANGES_BOUND = """
SELECT ts FROM book_changes
WHERE ticker = %(ticker)s AND ts >= %(after_ts)s AND ts < %(end)s
ORDER BY ts
LIMIT %(skip)s, %(skip_end)s
"""

# Gaps overlapping [start, end) (by their span), for inline gap markers.
GAPS_OVERLAPPING = """
SELECT ts, reason, coalesce(start_ts, ts) AS gap_start, end_ts, expected_seq, got_seq, sid
FROM gaps
WHERE ticker = %(ticker)s AND coalesce(start_ts, ts) < %(end)s
  AND (end_ts IS NULL OR end_ts >= %(start)s)
ORDER BY gap_start
"""

# OHLCV candles from trades. The inner ORDER BY fixes first()/last() to the documented
# trade order (ts, seq, trade_id): several prints share a millisecond when a taker sweeps
# levels, and without it QuestDB's first()/last() follow storage order. The SAMPLE BY
# unit is one of CANDLE_UNITS (a constant chosen by the code, never request text). Bucket
# starts in µs, as CANDLE_TOPS and OPEN_INTEREST give them.
_CANDLES = """
SELECT cast(ts AS LONG), open_e4, high_e4, low_e4, close_e4, volume_e2, trade_count
FROM (
    SELECT ts, first(yes_price_e4) AS open_e4, max(yes_price_e4) AS high_e4,
           min(yes_price_e4) AS low_e4, last(yes_price_e4) AS close_e4,
           sum(count_e2) AS volume_e2, count() AS trade_count
    FROM (
        SELECT ts, coalesce(seq, -1) AS seq_order, trade_id, yes_price_e4, count_e2
        FROM trades
        WHERE ticker = %(ticker)s AND ts >= %(start)s AND ts < %(end)s
        ORDER BY ts, seq_order, trade_id
    ) timestamp(ts)
    SAMPLE BY {unit} ALIGN TO CALENDAR
)
"""

CANDLE_UNITS = {"1m": "1m", "1h": "1h", "1d": "1d"}

# The book's top at each bucket's close, from the tops ingestd writes on every change
# (migration 7): the last row of each bucket, and what says whether it is the bucket's
# last message. Book time never goes backwards in application order, so the last message
# is at the bucket's last book time; only several messages sharing that time (deltas of
# one millisecond, changes moved up to a snapshot's time) leave storage order to decide,
# which QuestDB does not promise to keep: the last row must hold the bucket's highest seq
# (one subscription at any one book time: a new one's snapshot is strictly later). A
# null top is a row from before migration 7. The caller replays the changes instead when
# a bucket fails either. Counting rows or comparing sids as well would cost as much
# again: each LONG column read through the index here adds ~4 ms to a 10,000-row day.
# Bucket starts in µs (a datetime each costs ~2 µs in Python); the same buckets as
# _CANDLES (SAMPLE BY … ALIGN TO CALENDAR).
_CANDLE_TOPS = """
SELECT cast(ts AS LONG), best_yes, best_no, last_seq, max_seq
FROM (
    SELECT ts, last(best_yes_bid_e4) AS best_yes, last(best_no_bid_e4) AS best_no,
           last(seq) AS last_seq, max(seq) AS max_seq
    FROM book_changes
    WHERE ticker = %(ticker)s AND ts >= %(start)s AND ts < %(end)s
    SAMPLE BY {unit} ALIGN TO CALENDAR
)
"""
CANDLE_TOPS = {name: _CANDLE_TOPS.format(unit=unit) for name, unit in CANDLE_UNITS.items()}

# Backfilled Kalshi candles; `ts` is the period's end, so [start, end) of bucket starts is
# (start, end] shifted by one period — the caller passes the shifted bounds.
KALSHI_CANDLES = """
SELECT ts, price_open_e4, price_high_e4, price_low_e4, price_close_e4, volume_e2,
       yes_bid_close_e4, yes_ask_close_e4
FROM kalshi_candles
WHERE ticker = %(ticker)s AND period_min = %(period)s AND ts >= %(start)s AND ts < %(end)s
ORDER BY ts
"""
CANDLES = {name: _CANDLES.format(unit=unit) for name, unit in CANDLE_UNITS.items()}

# Reference data: the latest version of each row (markets/events/series are appended on
# every change, DEDUP(ts, key)); keyset pagination by the key. Optional filters are
# whole clauses picked from constants by the code — values are always parameters.
# The columns of a market as reference.market_message reads them.
_MARKET_COLUMNS = """ts, ticker, event_ticker, series_ticker, status, market_type, title,
       subtitle, yes_sub_title, no_sub_title, open_time, close_time, expiration_time,
       result, price_level_structure, price_ranges, settlement_value_e4,
       determination_time, settlement_time"""

MARKETS_LATEST = f"""
SELECT {_MARKET_COLUMNS}
FROM (
    SELECT * FROM markets LATEST ON ts PARTITION BY ticker
)
WHERE ticker > %(after)s {{filters}}
ORDER BY ticker
LIMIT %(limit)s
"""
MARKET_FILTERS = {
    "event_ticker": "AND event_ticker = %(event_ticker)s",
    "series_ticker": "AND series_ticker = %(series_ticker)s",
    "status": "AND status = %(status)s",
}

MARKET_ONE = f"""
SELECT {_MARKET_COLUMNS}
FROM markets
WHERE ticker = %(ticker)s
LATEST ON ts PARTITION BY ticker
"""

# The version of one market in force at an instant (every change is a new row, at the
# time ingestd wrote it): GetMarket with `at`.
MARKET_AT = f"""
SELECT {_MARKET_COLUMNS}
FROM markets
WHERE ticker = %(ticker)s AND ts <= %(at)s
LATEST ON ts PARTITION BY ticker
"""

MARKET_FIRST_VERSION = """
SELECT min(ts) FROM markets WHERE ticker = %(ticker)s
"""

EVENTS_LATEST = """
SELECT ts, event_ticker, series_ticker, title, sub_title, category, mutually_exclusive
FROM (SELECT * FROM events LATEST ON ts PARTITION BY event_ticker)
WHERE event_ticker > %(after)s {filters}
ORDER BY event_ticker
LIMIT %(limit)s
"""
EVENT_FILTERS = {"series_ticker": "AND series_ticker = %(series_ticker)s"}

EVENT_ONE = """
SELECT ts, event_ticker, series_ticker, title, sub_title, category, mutually_exclusive
FROM events WHERE event_ticker = %(event_ticker)s
LATEST ON ts PARTITION BY event_ticker
"""

SERIES_LATEST = """
SELECT ts, series_ticker, title, category, frequency
FROM (SELECT * FROM series LATEST ON ts PARTITION BY series_ticker)
WHERE series_ticker > %(after)s
ORDER BY series_ticker
LIMIT %(limit)s
"""

SERIES_ONE = """
SELECT ts, series_ticker, title, category, frequency
FROM series WHERE series_ticker = %(series_ticker)s
LATEST ON ts PARTITION BY series_ticker
"""

SETTLEMENTS_PAGE = """
SELECT ts, ticker, event_ticker, series_ticker, result, settlement_value_e4
FROM (SELECT * FROM settlements LATEST ON ts PARTITION BY ticker)
WHERE ticker > %(after)s {filters}
ORDER BY ticker
LIMIT %(limit)s
"""
SETTLEMENT_FILTERS = {
    "event_ticker": "AND event_ticker = %(event_ticker)s",
    "result": "AND result = %(result)s",
}

# Coverage of one market: recorded span from checkpoints/changes, gaps count and time.
COVERAGE_SPAN = """
SELECT min(ts), max(ts) FROM book_checkpoints WHERE ticker = %(ticker)s
"""
COVERAGE_LAST_CHANGE = """
SELECT max(ts) FROM book_changes WHERE ticker = %(ticker)s
"""
COVERAGE_GAPS = """
SELECT count(), sum(datediff('u', coalesce(start_ts, ts), coalesce(end_ts, now())))
FROM gaps WHERE ticker = %(ticker)s
"""


def with_filters(template: str, clauses: dict[str, str], present: set[str]) -> str:
    """Insert the constant clauses of the filters that are present (never request text)."""
    unknown = present - set(clauses)
    if unknown:
        raise KeyError(f"unknown filters {sorted(unknown)}")
    return template.format(filters=" ".join(clauses[name] for name in sorted(present)))

# Gap rows detected (written) after a moment, for live streams: a gap is detected after
# the instants it covers, so a stream cursor positioned by exchange time would miss it.
GAPS_DETECTED_AFTER = """
SELECT ts, reason, coalesce(start_ts, ts) AS gap_start, end_ts, expected_seq, got_seq, sid
FROM gaps
WHERE ticker = %(ticker)s AND ts > %(after)s
ORDER BY ts
"""


# Kalshi's ticker-channel statistics of one market at or before T (tickers: one complete
# row per report). Bounded below like CHECKPOINT_AT, with an unbounded fallback.
TICKER_STATS_AT = """
SELECT ts, volume_e2, open_interest_e2
FROM tickers
WHERE ticker = %(ticker)s AND ts >= %(since)s AND ts <= %(at)s
LATEST ON ts PARTITION BY ticker
"""
TICKER_STATS_AT_UNBOUNDED = """
SELECT ts, volume_e2, open_interest_e2
FROM tickers
WHERE ticker = %(ticker)s AND ts <= %(at)s
LATEST ON ts PARTITION BY ticker
"""

# Open interest at each candle bucket's close: the last report in each bucket (a bucket
# without one carries the one before). Same buckets as _CANDLES.
_OPEN_INTEREST = """
SELECT cast(ts AS LONG), open_interest_e2
FROM (
    SELECT ts, last(open_interest_e2) AS open_interest_e2
    FROM tickers
    WHERE ticker = %(ticker)s AND ts >= %(start)s AND ts < %(end)s
    SAMPLE BY {unit} ALIGN TO CALENDAR
)
"""
OPEN_INTEREST = {name: _OPEN_INTEREST.format(unit=unit) for name, unit in CANDLE_UNITS.items()}
