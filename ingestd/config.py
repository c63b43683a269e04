"""ingestd's own settings (beyond ktape.config), validated like the shared ones."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ktape.config import ConfigError


@dataclass(frozen=True)
class IngestSettings:
    checkpoint_every_changes: int = 200
    checkpoint_interval_secs: float = 60.0
    flush_interval_ms: int = 200
    flush_rows: int = 20_000
    spill_max_bytes: int = 2 * 1024**3
    connections: int = 1  # WebSocket connections, markets sharded across them by ticker
    # No frame and no ping for this long: the connection is dead (reconnect, a gap).
    liveness_secs: float = 30.0
    # Exchange→receive lag: its floor per window; `lag_windows` rising floors, up by
    # `lag_growth_secs` in all, are a backlog (reconnect, a gap). PROTOCOL.md §5.11.
    lag_window_secs: float = 10.0
    lag_windows: int = 4
    lag_growth_secs: float = 10.0
    # Audit (ingestd/audit.py, docs/ingestd.md "Audit"): REST books sampled per minute,
    # 0 = off; each sample costs one REST read of the shared budget (15 GETs/s).
    audit_markets_per_minute: int = 0
    # How far before its request a sampled REST book may lie and still agree: Kalshi
    # stamps changes in whole ms, clocks differ by some ms, edge caches serve copies.
    audit_staleness_allowance_ms: int = 1000


def _positive(env: Mapping[str, str], name: str, default: float, cast: type) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = cast(text)
    except ValueError:
        raise ConfigError(name, text, "a positive number") from None
    if value <= 0:
        raise ConfigError(name, text, "a positive number")
    return value


def _bounded_int(env: Mapping[str, str], name: str, default: int, most: int) -> int:
    text = env.get(name)
    if not text:
        return default
    expected = f"a whole number from 0 to {most}"
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(name, text, expected) from None
    if not 0 <= value <= most:
        raise ConfigError(name, text, expected)
    return value


# At most 10 REST reads per second for audits: two thirds of the budget stays for discovery.
MAX_AUDIT_PER_MINUTE = 600
MAX_AUDIT_ALLOWANCE_MS = 60_000


def load_ingest_settings(environ: Mapping[str, str] | None = None) -> IngestSettings:
    env = os.environ if environ is None else environ
    return IngestSettings(
        checkpoint_every_changes=int(_positive(env, "KTAPE_CHECKPOINT_EVERY_CHANGES", 200, int)),
        checkpoint_interval_secs=_positive(env, "KTAPE_CHECKPOINT_INTERVAL_SECS", 60.0, float),
        flush_interval_ms=int(_positive(env, "KTAPE_FLUSH_INTERVAL_MS", 200, int)),
        flush_rows=int(_positive(env, "KTAPE_FLUSH_ROWS", 20_000, int)),
        spill_max_bytes=int(_positive(env, "KTAPE_SPILL_MAX_BYTES", 2 * 1024**3, int)),
        connections=int(_positive(env, "KTAPE_INGEST_CONNECTIONS", 1, int)),
        liveness_secs=_positive(env, "KTAPE_INGEST_LIVENESS_SECS", 30.0, float),
        lag_window_secs=_positive(env, "KTAPE_INGEST_LAG_WINDOW_SECS", 10.0, float),
        lag_windows=int(_positive(env, "KTAPE_INGEST_LAG_WINDOWS", 4, int)),
        lag_growth_secs=_positive(env, "KTAPE_INGEST_LAG_GROWTH_SECS", 10.0, float),
        audit_markets_per_minute=_bounded_int(env, "KTAPE_AUDIT_MARKETS_PER_MINUTE", 0,
                                              MAX_AUDIT_PER_MINUTE),
        audit_staleness_allowance_ms=_bounded_int(env, "KTAPE_AUDIT_STALENESS_ALLOWANCE_MS",
                                                  1000, MAX_AUDIT_ALLOWANCE_MS),
    )
