"""ingestd's Prometheus metrics (own registry; label sets bounded — never a ticker)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

MESSAGES = Counter("ingestd_messages_total", "WebSocket messages received, by type",
                   ["type"], registry=REGISTRY)
BAD_INPUT = Counter("ingestd_bad_input_total", "Rejected input, by reason", ["reason"],
                    registry=REGISTRY)
ROWS = Counter("ingestd_ilp_rows_total", "Rows written over ILP, by table", ["table"],
               registry=REGISTRY)
FLUSH_SECONDS = Histogram("ingestd_flush_seconds", "ILP flush latency", registry=REGISTRY,
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
FLUSH_FAILURES = Counter("ingestd_flush_failures_total", "ILP flushes that failed",
                         registry=REGISTRY)
LAG_SECONDS = Histogram("ingestd_ingest_lag_seconds",
                        "Exchange time to committed in QuestDB", registry=REGISTRY,
                        buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1,
                                 1.5, 2, 5, 10, 30))
GAPS = Counter("ingestd_gaps_total", "Gaps recorded, by reason", ["reason"], registry=REGISTRY)
SPILL_BYTES = Gauge("ingestd_spill_bytes", "Bytes waiting in the spill file", registry=REGISTRY)
MOVED_CHANGES = Counter(
    "ingestd_moved_changes_total",
    "Book changes stamped before a row already written for their market, stored at that "
    "book time to keep seq order (docs/ingestd.md, Order and time)", registry=REGISTRY)
LEFT_OUT = Counter(
    "ingestd_tickers_left_out_total",
    "Tickers a subscribe/add_markets asked for that the reply did not list (retried)",
    registry=REGISTRY)
RECONNECTS = Counter("ingestd_reconnects_total", "Feed reconnects", registry=REGISTRY)
EXCHANGE_LAG = Gauge(
    "ingestd_exchange_lag_seconds",
    "Exchange→receive lag of book deltas (ts_ms to our receive time): the floor of the "
    "latest window, per connection", ["connection"], registry=REGISTRY)
MARKETS = Gauge("ingestd_markets_recorded", "Markets with a live book", registry=REGISTRY)
CROSSED_BOOKS = Counter(
    "ingestd_crossed_books_total",
    "Books that crossed or locked (best YES bid + best NO bid >= $1.00): recorded as a "
    "crossed_book gap until uncrossed", registry=REGISTRY)
AUDIT_SAMPLES = Counter(
    "ingestd_audit_samples_total",
    "REST books sampled for the audit, by outcome (stored, failed: REST error or a book "
    "that does not parse; logged as audit.sample_failed)", ["outcome"], registry=REGISTRY)
