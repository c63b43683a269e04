"""The QuestDB tables, as numbered migrations.

Conventions every reader of these tables relies on:
- Prices are LONG in units of $0.0001 (`*_e4`), quantities LONG in units of 0.01
  contract (`*_e2`): exact, no floats anywhere. NO-side book prices are NO prices
  (Kalshi's `use_yes_price: false` convention, same as REST).
- `ts` is the designated timestamp. It is exchange time when Kalshi sent one; rows whose
  message carries no exchange time (order-book snapshots, lifecycle, metadata) say where
  their `ts` came from in `ts_source` (`exchange` | `sending` = Kalshi's `sending_ts_ms`
  | `receive` = our clock). `recv_ts` is always our receive clock. One never silently
  stands in for the other. In `book_changes` and `book_checkpoints`, `ts` is the row's
  *book time*: that clock's reading, moved later where needed so that `ts` never goes
  backwards in seq order (docs/ingestd.md, "Order and time"; `source_ts`, V0003).
- Every table is WAL, partitioned by DAY, with DEDUP UPSERT KEYS that include `ts`, so a
  spill replay or a restart that re-sends rows is exactly-once.
- Tickers are SYMBOL with a large capacity and no cache (hundreds of thousands over time).
- Order-book ladders in checkpoints are VARCHAR `price_e4:qty_e2` pairs, ascending price,
  comma separated (`4200:15000,4300:100`); empty string = empty side. Exact and compact.
"""

from __future__ import annotations

# The values of `markets.status`: Kalshi's market statuses (PROTOCOL.md §7), which ingestd
# writes and queryd filters on.
MARKET_STATUSES = ("initialized", "active", "inactive", "closed", "determined", "disputed",
                   "amended", "finalized")

TICKER = "SYMBOL CAPACITY 262144 NOCACHE"
SMALL_SYMBOL = "SYMBOL CAPACITY 256 CACHE"

V0001_INITIAL = [
    f"""
    CREATE TABLE IF NOT EXISTS book_changes (
        ts TIMESTAMP,
        ticker {TICKER},
        side {SMALL_SYMBOL},
        price_e4 LONG,
        qty_after_e2 LONG,
        delta_e2 LONG,
        kind {SMALL_SYMBOL},
        seq LONG,
        sid LONG,
        recv_ts TIMESTAMP,
        ts_source {SMALL_SYMBOL}
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, ticker, sid, seq, side, price_e4)
    """,
    f"""
    CREATE TABLE IF NOT EXISTS book_checkpoints (
        ts TIMESTAMP,
        ticker {TICKER},
        reason {SMALL_SYMBOL},
        seq LONG,
        sid LONG,
        recv_ts TIMESTAMP,
        ts_source {SMALL_SYMBOL},
        yes_levels VARCHAR,
        no_levels VARCHAR,
        continuous_since TIMESTAMP
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, ticker, sid, seq, reason)
    """,
    f"""
    CREATE TABLE IF NOT EXISTS gaps (
        ts TIMESTAMP,
        ticker {TICKER},
        reason {SMALL_SYMBOL},
        start_ts TIMESTAMP,
        end_ts TIMESTAMP,
        expected_seq LONG,
        got_seq LONG,
        sid LONG,
        detail VARCHAR
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, ticker, reason)
    """,
    f"""
    CREATE TABLE IF NOT EXISTS trades (
        ts TIMESTAMP,
        ticker {TICKER},
        trade_id VARCHAR,
        yes_price_e4 LONG,
        no_price_e4 LONG,
        count_e2 LONG,
        taker_side {SMALL_SYMBOL},
        is_block BOOLEAN,
        seq LONG,
        sid LONG,
        recv_ts TIMESTAMP,
        source {SMALL_SYMBOL}
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, ticker, trade_id)
    """,
    f"""
    CREATE TABLE IF NOT EXISTS lifecycle (
        ts TIMESTAMP,
        ticker {TICKER},
        event_type {SMALL_SYMBOL},
        event_ticker {TICKER},
        payload VARCHAR,
        seq LONG,
        sid LONG,
        recv_ts TIMESTAMP,
        ts_source {SMALL_SYMBOL}
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, ticker, event_type)
    """,
    f"""
    CREATE TABLE IF NOT EXISTS markets (
        ts TIMESTAMP,
        ticker {TICKER},
        event_ticker {TICKER},
        series_ticker {TICKER},
        status {SMALL_SYMBOL},
        market_type {SMALL_SYMBOL},
        title VARCHAR,
        subtitle VARCHAR,
        yes_sub_title VARCHAR,
        no_sub_title VARCHAR,
        open_time TIMESTAMP,
        close_time TIMESTAMP,
        expiration_time TIMESTAMP,
        result {SMALL_SYMBOL},
        price_level_structure {SMALL_SYMBOL},
        price_ranges VARCHAR,
        raw VARCHAR,
        source {SMALL_SYMBOL}
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, ticker)
    """,
    f"""
    CREATE TABLE IF NOT EXISTS events (
        ts TIMESTAMP,
        event_ticker {TICKER},
        series_ticker {TICKER},
        title VARCHAR,
        sub_title VARCHAR,
        category {SMALL_SYMBOL},
        mutually_exclusive BOOLEAN,
        raw VARCHAR,
        source {SMALL_SYMBOL}
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, event_ticker)
    """,
    f"""
    CREATE TABLE IF NOT EXISTS series (
        ts TIMESTAMP,
        series_ticker {TICKER},
        title VARCHAR,
        category {SMALL_SYMBOL},
        frequency {SMALL_SYMBOL},
        raw VARCHAR,
        source {SMALL_SYMBOL}
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, series_ticker)
    """,
    f"""
    CREATE TABLE IF NOT EXISTS settlements (
        ts TIMESTAMP,
        ticker {TICKER},
        event_ticker {TICKER},
        series_ticker {TICKER},
        result {SMALL_SYMBOL},
        settlement_value_e4 LONG,
        recv_ts TIMESTAMP,
        ts_source {SMALL_SYMBOL}
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, ticker)
    """,
    f"""
    CREATE TABLE IF NOT EXISTS ingest_sessions (
        ts TIMESTAMP,
        session_id {SMALL_SYMBOL},
        feed {SMALL_SYMBOL},
        state {SMALL_SYMBOL},
        detail VARCHAR
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, session_id, state)
    """,
]

# Kalshi's own candlesticks, backfilled for markets ktape never recorded live (PROTOCOL.md
# §6.6). `ts` is the period's inclusive end (Kalshi's `end_period_ts`); `period_min` is
# 1, 60 or 1440. Prices are NULL where Kalshi sends null (no trade / no quote). `source`
# says which side of Kalshi's historical cutoff the candle came from.
V0002_KALSHI_CANDLES = [
    f"""
    CREATE TABLE IF NOT EXISTS kalshi_candles (
        ts TIMESTAMP,
        ticker {TICKER},
        period_min INT,
        price_open_e4 LONG,
        price_high_e4 LONG,
        price_low_e4 LONG,
        price_close_e4 LONG,
        price_mean_e4 LONG,
        price_previous_e4 LONG,
        yes_bid_close_e4 LONG,
        yes_ask_close_e4 LONG,
        volume_e2 LONG,
        open_interest_e2 LONG,
        source {SMALL_SYMBOL},
        recv_ts TIMESTAMP
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, ticker, period_min)
    """,
]

# Order and time (docs/ingestd.md): a book row's `ts` is its book time, which never goes
# backwards in seq order. `source_ts` keeps the row's own clock reading (the exchange's
# `ts_ms`, Kalshi's sending time or our receive time, as `ts_source` says) on the rare
# row whose book time had to be later than it; NULL means `ts` is that reading.
# Markets follow the lifecycle: determination and settlement as Kalshi reported them.
V0003_ORDER_AND_LIFECYCLE = [
    "ALTER TABLE book_changes ADD COLUMN IF NOT EXISTS source_ts TIMESTAMP",
    "ALTER TABLE markets ADD COLUMN IF NOT EXISTS settlement_value_e4 LONG",
    "ALTER TABLE markets ADD COLUMN IF NOT EXISTS determination_time TIMESTAMP",
    "ALTER TABLE markets ADD COLUMN IF NOT EXISTS settlement_time TIMESTAMP",
]

# Kalshi's `ticker` channel (PROTOCOL.md §5.7), as sent: derived market statistics, not
# the book (that is `book_changes`). Unsequenced, so a lost message cannot be detected;
# each row is a complete statement, so the latest row at or before T is the state at T.
# Prices NULL where Kalshi sends "" (no trade yet). `ts` is the exchange's `ts_ms`.
V0004_TICKERS = [
    f"""
    CREATE TABLE IF NOT EXISTS tickers (
        ts TIMESTAMP,
        ticker {TICKER},
        price_e4 LONG,
        yes_bid_e4 LONG,
        yes_ask_e4 LONG,
        yes_bid_size_e2 LONG,
        yes_ask_size_e2 LONG,
        last_trade_size_e2 LONG,
        volume_e2 LONG,
        open_interest_e2 LONG,
        dollar_volume LONG,
        dollar_open_interest LONG,
        sid LONG,
        recv_ts TIMESTAMP
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, ticker)
    """,
]

# Kalshi's own REST books (`GET /markets/{ticker}/orderbook`, PROTOCOL.md §6.2), sampled
# by ingestd's audit (ingestd/audit.py) to check the recorded books against (queryd's
# GetAuditReport). One row per sample: `ts` is our clock when the request was sent,
# `response_ts` when its answer arrived, `allowance_ms` how far before the request the
# book may still lie and agree (edge caching, millisecond exchange stamps; docs/ingestd.md,
# "Audit"). Ladders as in book_checkpoints. Never used to change a recorded book.
V0005_AUDIT_BOOKS = [
    f"""
    CREATE TABLE IF NOT EXISTS audit_books (
        ts TIMESTAMP,
        ticker {TICKER},
        response_ts TIMESTAMP,
        allowance_ms LONG,
        yes_levels VARCHAR,
        no_levels VARCHAR
    ) TIMESTAMP(ts) PARTITION BY DAY WAL
    DEDUP UPSERT KEYS(ts, ticker)
    """,
]

# Symbol indexes on `ticker` where a read takes one market's rows out of a busy day:
# QuestDB stores rows in time order only, so without an index one market's rows of a
# day are found by scanning every market's. Measured at 100M changes in one day over
# 10,000 markets (docs/performance.md, "Ticker indexes adopted"): a deltas page from a
# random hour ~18x faster, candles of a day ~1.3x; applying 90M changes + 9M trades
# took 121 s with the indexes against 99 s without. Not on book_checkpoints: its reads
# (LATEST ON over at most two days) measured the same with one. Not on tickers: with
# one, QuestDB 9.3.4 answered queryd's `LATEST ON ... WHERE ticker = $1` (GetMarket's
# statistics) with another market's row on a reused connection (test_ticker_channel,
# 3 of 3 runs). Parquet days need care (datasetd/partitions.py, convert). QuestDB has
# no IF NOT EXISTS for an index; migrate.py skips a column already indexed.
INDEXED_TICKERS = ("book_changes", "trades")
V0006_TICKER_INDEXES = [
    f"ALTER TABLE {table} ALTER COLUMN ticker ADD INDEX" for table in INDEXED_TICKERS
]

# The book's top after each change, on the change's own row: the best YES and best NO bid
# (price_e4, 0 = that side empty) once the whole message the row belongs to is applied
# (every row of a snapshot carries the top after the snapshot). ingestd knows it for
# free, and a reader wanting the top at many instants (candles' closes) takes the last
# row before each instant instead of replaying every change of the day. On the row
# itself, so a spill replay, a restart or a heal cannot make it disagree with the
# change it follows. NULL on rows written before migration 7: readers then replay.
V0007_BOOK_TOPS = [
    "ALTER TABLE book_changes ADD COLUMN IF NOT EXISTS best_yes_bid_e4 INT",
    "ALTER TABLE book_changes ADD COLUMN IF NOT EXISTS best_no_bid_e4 INT",
]
