"""What every call costs and what every plan allows: the one table billing reads.

Why one table: the metering interceptor (which charges), billingd (which books and
reports the charge), the docs and the tests all read prices from here, so a price
change is one edit and cannot disagree between components. Credits are integers.
"""

from __future__ import annotations

from dataclasses import dataclass

MARKETDATA = "/ktape.marketdata.v1.MarketDataService/"
DATASETS = "/ktape.marketdata.v1.DatasetService/"
ANALYTICS = "/ktape.marketdata.v1.AnalyticsService/"

# Credits per call, by full gRPC method name. A method missing here is not metered only
# if it is in FREE_METHODS; anything else is refused by the interceptor (fail closed).
PRICES: dict[str, int] = {
    MARKETDATA + "GetOrderbook": 2,
    MARKETDATA + "ListOrderbookDeltas": 1,
    MARKETDATA + "ListTrades": 1,
    MARKETDATA + "ListCandles": 1,
    MARKETDATA + "ListMarkets": 1,
    MARKETDATA + "GetMarket": 1,
    MARKETDATA + "ListEvents": 1,
    MARKETDATA + "GetEvent": 1,
    MARKETDATA + "ListSeries": 1,
    MARKETDATA + "GetSeries": 1,
    MARKETDATA + "ListSettlements": 1,
    # Analytics: priced by the books they read. All of an event's books cost two
    # GetOrderbooks; a simulated order reads one book; a page of quotes or snapshots
    # walks many changes in one pass.
    ANALYTICS + "GetEventOrderbook": 4,
    ANALYTICS + "SimulateOrder": 2,
    ANALYTICS + "ListQuotes": 2,
    ANALYTICS + "ListOrderbookSnapshots": 3,
    # Listing and pricing files are free (but need a key: they are account reads); a
    # download is charged by the files' bytes (dataset_credits) before URLs are issued.
    DATASETS + "ListDatasetFiles": 0,
    DATASETS + "GetDatasetCost": 0,
    DATASETS + "CreateDatasetDownload": 0,
}

# Methods that change something for the caller (they spend credits on the caller's
# behalf): called with a console session cookie they need the X-CSRF-Token header too.
SESSION_WRITES: frozenset[str] = frozenset({DATASETS + "CreateDatasetDownload"})

# Dataset files: one credit per started 100 kB of a file (at least one per file), so a
# quiet market's day costs 1 and a 50 MB busy series-day 500 (about $0.45 in packs).
DATASET_BYTES_PER_CREDIT = 100_000


def dataset_credits(size_bytes: int) -> int:
    """The price of one dataset file."""
    return max(1, -(-size_bytes // DATASET_BYTES_PER_CREDIT))

# Server streams cost this much per started minute open (charged at open, then at the
# start of every further minute).
STREAM_PRICES_PER_MINUTE: dict[str, int] = {
    MARKETDATA + "StreamOrderbook": 1,
}

# Infrastructure methods every client (and every load balancer) may call without a key.
FREE_PREFIXES: tuple[str, ...] = (
    # public reads: how complete the recording is (no key, no credits)
    "/ktape.marketdata.v1.DataStatusService/",
    # ... and how accurate: ktape's published audit against Kalshi's REST books
    ANALYTICS + "GetAuditReport",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

# dev keys draw on a sandbox quota instead of credits: this many calls per account and
# UTC day, never billed.
SANDBOX_CALLS_PER_DAY = 1_000


@dataclass(frozen=True)
class Plan:
    name: str
    monthly_allowance_credits: int  # free credits granted each UTC month, expiring at its end
    rate_limit_per_minute: int  # per key
    postpaid: bool  # usage beyond the balance is billed through Stripe Billing Meters


PLANS: dict[str, Plan] = {
    "free": Plan("free", 1_000, 120, postpaid=False),
    "payg": Plan("payg", 1_000, 600, postpaid=True),
    "pro": Plan("pro", 50_000, 1_200, postpaid=True),
}

DEFAULT_PLAN = "free"


@dataclass(frozen=True)
class CreditPack:
    pack_id: str
    credits: int
    price_cents: int  # USD


CREDIT_PACKS: dict[str, CreditPack] = {
    "credits_10k": CreditPack("credits_10k", 10_000, 1_000),
    "credits_100k": CreditPack("credits_100k", 100_000, 9_000),
    "credits_1m": CreditPack("credits_1m", 1_000_000, 80_000),
}


def price_of(method: str) -> int | None:
    """Credits for one unary call, or per started minute of a stream; None if unknown."""
    if method in PRICES:
        return PRICES[method]
    return STREAM_PRICES_PER_MINUTE.get(method)


def is_free(method: str) -> bool:
    return method.startswith(FREE_PREFIXES)
