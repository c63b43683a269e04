"""Which ingest shard records a market, and where each replica and shard listens.

Why by ticker (CRC-32 of the ticker text) and not by series: a series can hold hundreds of
markets (one per strike and date) while most hold a handful, so series would pile the
busiest series onto one shard; nothing in recording needs an event's markets together
(each book, its gaps and its checkpoints are per market). And queryd must find a market's
shard from the request alone: a ticker's owner is computable from the ticker, a series'
would need a lookup. CRC-32 rather than `hash()`: Python salts string hashes per process,
and a market must stay on its shard across restarts (its restart gap, its checkpoints and
its live stream come from that one process).

Inside one ingestd the markets are split again over its WebSocket connections
(KTAPE_INGEST_CONNECTIONS); `connection_of` uses the hash's quotient, so the two splits
are independent (with the remainder for both, every market of shard 0 of 2 would land on
an even connection).

Ports: replica or shard `i` listens on the configured base port plus `PORT_STRIDE * i`.
The stride is 100 rather than 1 because the defaults sit one apart (ingestd 9101, queryd
metrics 9102, billingd metrics 9103; queryd 50051, billingd 50052): `base + i` would
collide at the first extra process.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ktape.config import MAX_PROCESSES, HostPort, MarketFilter, Settings

PORT_STRIDE = 100
__all__ = ["MAX_PROCESSES", "PORT_STRIDE"]


def ticker_hash(ticker: str) -> int:
    return zlib.crc32(ticker.encode())


def shard_of(ticker: str, shards: int) -> int:
    """The ingest shard (process) that records `ticker`, of `shards`."""
    return 0 if shards == 1 else ticker_hash(ticker) % shards


def connection_of(ticker: str, shards: int, connections: int) -> int:
    """The WebSocket connection, of a shard's `connections`, that records `ticker`."""
    return 0 if connections == 1 else (ticker_hash(ticker) // shards) % connections


@dataclass(frozen=True)
class ShardFilter(MarketFilter):
    """KTAPE_MARKETS as one ingest shard of several applies it: the markets it matches
    that this shard owns. Discovery still lists every market; each shard keeps its own.
    With `all`, each shard still takes the trade and ticker channels whole (no ticker
    list to keep in step) and keeps its own markets' rows (`in_shard`)."""

    shard: int = 0
    shards: int = 1

    @classmethod
    def of(cls, markets: MarketFilter, shard: int, shards: int) -> MarketFilter:
        """`markets` itself with one shard (exactly as before shards existed)."""
        if shards == 1:
            return markets
        return cls(markets.all, markets.tickers, markets.series, shard, shards)

    def matches(self, ticker: str, series_ticker: str | None) -> bool:
        return self.in_shard(ticker) and super().matches(ticker, series_ticker)

    def in_shard(self, ticker: str) -> bool:
        return shard_of(ticker, self.shards) == self.shard


def instance_addr(base: HostPort, index: int) -> HostPort:
    """The address of replica or shard `index` whose first one listens on `base`."""
    port = base.port + PORT_STRIDE * index
    if port > 65535:
        raise ValueError(f"{base} + {PORT_STRIDE} x {index} is past the last TCP port")
    return HostPort(base.host, port)


def instance_addrs(base: HostPort, count: int) -> list[HostPort]:
    return [instance_addr(base, i) for i in range(count)]


def instance_name(component: str, index: int, count: int) -> str:
    """`queryd` with one replica (as before replicas existed), `queryd-0`... with more."""
    return component if count == 1 else f"{component}-{index}"


def ingestd_addrs(settings: Settings) -> list[HostPort]:
    """Every ingest shard's HTTP address (/healthz, /metrics, /live)."""
    return instance_addrs(settings.ingestd_metrics_addr, settings.ingest_shards)


def queryd_addrs(settings: Settings) -> list[HostPort]:
    """Every queryd replica's gRPC address."""
    return instance_addrs(settings.queryd_addr, settings.queryd_replicas)


def queryd_metrics_addrs(settings: Settings) -> list[HostPort]:
    return instance_addrs(settings.queryd_metrics_addr, settings.queryd_replicas)
