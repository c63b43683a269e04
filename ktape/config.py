"""Configuration read once from the environment into frozen, validated settings.

Why: CONTRACT.md fixes the variable names and defaults; every process reads the same
variables, so one module parses them and fails at startup with the variable's name, the
bad value and the expected form, instead of a stack trace deep inside a service. Secrets
are wrapped in `Secret` so they never reach a log line or a repr.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

KALSHI_PRODUCTION_WS_URL = "wss://external-api-ws.kalshi.com/trade-api/ws/v2"
KALSHI_PRODUCTION_REST_URL = "https://external-api.kalshi.com/trade-api/v2"

DEFAULTS: Mapping[str, str] = {
    "KTAPE_DATA_DIR": "./.ktape",
    "KTAPE_HTTP_PORT": "8080",
    "KTAPE_QUERYD_ADDR": "127.0.0.1:50051",
    "KTAPE_BILLINGD_ADDR": "127.0.0.1:50052",
    "KTAPE_QUESTDB_HTTP": "127.0.0.1:9000",
    "KTAPE_QUESTDB_PG": "127.0.0.1:8812",
    "KTAPE_KALSHI_WS_URL": KALSHI_PRODUCTION_WS_URL,
    "KTAPE_KALSHI_REST_URL": KALSHI_PRODUCTION_REST_URL,
    "KTAPE_MARKETS": "all",
    # Internal ports (not part of CONTRACT.md; documented in docs/operations.md).
    "KTAPE_INGESTD_METRICS_ADDR": "127.0.0.1:9101",
    "KTAPE_QUERYD_METRICS_ADDR": "127.0.0.1:9102",
    "KTAPE_BILLINGD_METRICS_ADDR": "127.0.0.1:9103",
    "KTAPE_CONSOLE_ADDR": "127.0.0.1:9104",
    "KTAPE_DATASETD_ADDR": "127.0.0.1:9105",
    "KTAPE_ENVOY_ADMIN_PORT": "9901",
    "KTAPE_SIM_PORT": "8790",
    # Scale: N queryd replicas and M ingest shards (`ktape up --queryd-replicas N
    # --ingest-shards M`); each process of them learns its index from *_REPLICA/*_SHARD.
    "KTAPE_QUERYD_REPLICAS": "1",
    "KTAPE_QUERYD_REPLICA": "0",
    "KTAPE_INGEST_SHARDS": "1",
    "KTAPE_INGEST_SHARD": "0",
}


# Queryd replicas and ingest shards at most (ktape/sharding.py: each at base port + 100 i).
MAX_PROCESSES = 8

# A shared signing secret shorter than this is guessable offline from one signed URL.
MIN_SIGNING_KEY_CHARS = 16


class ConfigError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""

    def __init__(self, variable: str, value: str | None, expected: str) -> None:
        self.variable = variable
        self.value = value
        self.expected = expected
        shown = "<unset>" if value is None else repr(value)
        super().__init__(f"{variable}={shown} is invalid: expected {expected}")


class Secret:
    """A string that never prints itself (repr, str and logs show `***`)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class HostPort:
    """A `host:port` address; host is kept as given (IPv6 in brackets)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DatasetsLocation:
    """Where dataset files live: a local directory, or an S3 bucket and key prefix.

    Why a value rather than the raw URL: the two backends need different parts (a path;
    a bucket and a prefix) and each is checked once here, at start-up, not at the first
    publish hours later. `str()` gives the URL back in its canonical form.
    """

    local_dir: Path | None = None
    bucket: str = ""
    prefix: str = ""  # no leading or trailing slash; "" for the bucket's root

    def __str__(self) -> str:
        if self.local_dir is not None:
            return f"file://{self.local_dir.absolute()}"
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class MarketFilter:
    """Which markets ingestd records: everything, or listed tickers and series."""

    all: bool
    tickers: frozenset[str] = frozenset()
    series: frozenset[str] = frozenset()

    def matches(self, ticker: str, series_ticker: str | None) -> bool:
        if self.all:
            return True
        return ticker in self.tickers or (series_ticker is not None and series_ticker in self.series)

    def in_shard(self, ticker: str) -> bool:
        """Whether this process records `ticker` at all (one ingest shard of several
        records only its own: ktape/sharding.py ShardFilter)."""
        return True


# --- Storage lifecycle (datasetd/partitions.py; docs/operations.md, "Storage lifecycle") ---
# The big tables whose closed days the partitions job may convert to Parquet.
PARQUET_TABLES = ("book_changes", "book_checkpoints", "trades", "tickers")
# The tables whose old days may be dropped (QuestDB TTL). The metadata tables (markets,
# events, series, settlements, lifecycle) are not here: their newest row per ticker can be
# months old and is the current state, so a per-day retention would silently lose it.
RETENTION_TABLES = ("book_changes", "book_checkpoints", "gaps", "trades", "tickers")
# The datasets job re-plans the last 7 closed days and would publish a day whose rows were
# dropped as an empty day; a retention must outlive that window (and its grace).
MIN_RETENTION_DAYS = 8


@dataclass(frozen=True)
class StorageSettings:
    """When closed days become Parquet and how long each table keeps its days.

    `parquet_after_days` 0 means never convert; a retention of 0 days means keep forever.
    """

    parquet_after_days: int = 0
    retention_days: Mapping[str, int] = field(
        default_factory=lambda: dict.fromkeys(RETENTION_TABLES, 0))

    def retention_of(self, table: str) -> int:
        return self.retention_days.get(table, 0)


def retention_variable(table: str) -> str:
    return f"KTAPE_RETENTION_DAYS_{table.upper()}"


def parse_storage(env: Mapping[str, str]) -> StorageSettings:
    """KTAPE_PARQUET_AFTER_DAYS and KTAPE_RETENTION_DAYS_<TABLE>, checked together.

    Why the book tables are checked against each other: GetOrderbook takes the newest
    checkpoint at or before T, the changes since it and the gaps over T. A checkpoint kept
    longer than the changes after it, or changes kept longer than the gaps among them,
    would rebuild a wrong book or claim continuity across a gap; so checkpoints go no
    later than changes, and gaps no earlier.
    """

    def days(name: str, minimum: int, what: str) -> int:
        text = env.get(name) or "0"
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(name, text, what) from None
        if value != 0 and value < minimum:
            raise ConfigError(name, text, what)
        return value

    after = days("KTAPE_PARQUET_AFTER_DAYS", 1,
                 "a whole number of days >= 1 after a day closes, or 0 (never convert)")
    retention = {table: days(retention_variable(table), MIN_RETENTION_DAYS,
                             f"a whole number of days >= {MIN_RETENTION_DAYS}, or 0 (keep forever)")
                 for table in RETENTION_TABLES}

    def kept(table: str) -> float:
        return retention[table] or float("inf")

    if kept("book_checkpoints") > kept("book_changes"):
        variable = retention_variable("book_checkpoints")
        raise ConfigError(variable, env.get(variable) or "0",
                          f"no more days than {retention_variable('book_changes')} (0 = forever)")
    if kept("gaps") < kept("book_changes"):
        variable = retention_variable("gaps")
        raise ConfigError(variable, env.get(variable) or "0",
                          f"at least as many days as {retention_variable('book_changes')} "
                          "(0 = forever)")
    return StorageSettings(parquet_after_days=after, retention_days=retention)


@dataclass(frozen=True)
class Settings:
    """Every variable from CONTRACT.md, parsed. Services take the fields they need."""

    data_dir: Path
    http_port: int
    queryd_addr: HostPort
    billingd_addr: HostPort
    questdb_http: HostPort
    questdb_pg: HostPort
    kalshi_ws_url: str
    kalshi_rest_url: str
    kalshi_key_id: str | None
    kalshi_private_key_path: Path | None
    markets: MarketFilter
    billing_dsn: str | None
    stripe_api_key: Secret | None
    stripe_webhook_secret: Secret | None
    stripe_api_base: str | None
    ingestd_metrics_addr: HostPort
    queryd_metrics_addr: HostPort
    billingd_metrics_addr: HostPort
    console_addr: HostPort
    internal_token: Secret | None
    datasets: DatasetsLocation
    s3_endpoint_url: str | None
    datasetd_addr: HostPort
    datasets_signing_key: Secret | None
    public_url_override: str | None  # KTAPE_PUBLIC_URL
    envoy_admin_port: int
    sim_port: int
    storage: StorageSettings = field(default_factory=StorageSettings)
    raw: Mapping[str, str] = field(repr=False, default_factory=dict)
    # Scale (ktape/sharding.py): how many of each process, and which one this process is.
    queryd_replicas: int = 1  # KTAPE_QUERYD_REPLICAS
    queryd_replica: int = 0  # KTAPE_QUERYD_REPLICA, set per process by `ktape up`
    ingest_shards: int = 1  # KTAPE_INGEST_SHARDS
    ingest_shard: int = 0  # KTAPE_INGEST_SHARD, set per process by `ktape up`

    @property
    def questdb_dir(self) -> Path:
        return self.data_dir / "questdb"

    @property
    def spill_dir(self) -> Path:
        return self.data_dir / "spill"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def datasets_signing_key_path(self) -> Path:
        """The generated URL-signing key, used when KTAPE_DATASETS_SIGNING_KEY is unset."""
        return self.data_dir / "datasets-signing.key"

    @property
    def public_url(self) -> str:
        """Where users reach the edge (signed download URLs start with it):
        KTAPE_PUBLIC_URL, else Envoy's port on loopback."""
        return self.public_url_override or f"http://127.0.0.1:{self.http_port}"

    @property
    def billing_dsn_effective(self) -> str:
        """The billing store: KTAPE_BILLING_DSN, else a SQLite file in the data dir."""
        return self.billing_dsn or f"sqlite:///{(self.data_dir / 'billing.sqlite3').resolve()}"

    @property
    def questdb_ilp_conf(self) -> str:
        """py-questdb-client connection string for ILP over HTTP."""
        return f"http::addr={self.questdb_http};"

    @property
    def questdb_pg_conninfo(self) -> str:
        """psycopg conninfo for QuestDB's PostgreSQL wire (default credentials)."""
        return (
            f"host={self.questdb_pg.host} port={self.questdb_pg.port} "
            "user=admin password=quest dbname=qdb"
        )

    def effective(self) -> dict[str, str]:
        """The effective configuration for `ktape status`, secrets redacted."""
        shown: dict[str, str] = {}
        for name in sorted(set(DEFAULTS) | set(self.raw)):
            value = self.raw.get(name, DEFAULTS.get(name, ""))
            if any(word in name for word in ("KEY", "SECRET", "DSN")) and value:
                value = "***"
            shown[name] = value
        # Its default depends on KTAPE_DATA_DIR, so it is not in DEFAULTS.
        shown.setdefault("KTAPE_DATASETS_URL", str(self.datasets))
        return dict(sorted(shown.items()))


def parse_port(variable: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(variable, value, "a TCP port number 1-65535") from None
    if not 0 < port < 65536:
        raise ConfigError(variable, value, "a TCP port number 1-65535")
    return port


def parse_count(variable: str, value: str) -> int:
    """A process count, 1 to MAX_PROCESSES."""
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(variable, value, f"a whole number 1-{MAX_PROCESSES}") from None
    if not 1 <= count <= MAX_PROCESSES:
        raise ConfigError(variable, value, f"a whole number 1-{MAX_PROCESSES}")
    return count


def parse_index(variable: str, value: str, count: int, count_variable: str) -> int:
    """Which of `count` processes this one is: 0 to count - 1."""
    try:
        index = int(value)
    except ValueError:
        index = -1
    if not 0 <= index < count:
        raise ConfigError(variable, value, f"0-{count - 1} (below {count_variable}={count})")
    return index


def parse_hostport(variable: str, value: str) -> HostPort:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(variable, value, "host:port, e.g. 127.0.0.1:9000")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(variable, value, "host:port with a numeric port") from None
    if not 0 < port < 65536:
        raise ConfigError(variable, value, "host:port with a port 1-65535")
    return HostPort(host, port)


def parse_url(variable: str, value: str, schemes: tuple[str, ...]) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in schemes or not rest or rest.startswith("/"):
        raise ConfigError(variable, value, f"a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return value.rstrip("/")


_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DATASETS_URL_FORM = "file:///absolute/path or s3://bucket[/prefix]"


def parse_datasets_url(variable: str, value: str | None, data_dir: Path) -> DatasetsLocation:
    """`file:///abs/path` or `s3://bucket/prefix`; unset means `<data_dir>/datasets`."""
    if value is None:
        return DatasetsLocation(local_dir=data_dir / "datasets")
    scheme, sep, rest = value.partition("://")
    if scheme == "file" and sep:
        if not rest.startswith("/") or rest.rstrip("/") == "":
            raise ConfigError(variable, value, _DATASETS_URL_FORM)
        return DatasetsLocation(local_dir=Path(rest.rstrip("/")))
    if scheme == "s3" and sep:
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/")
        parts = prefix.split("/") if prefix else []
        if (not _S3_BUCKET.match(bucket) or ".." in bucket
                or any(part in ("", ".", "..") for part in parts)):
            raise ConfigError(variable, value, _DATASETS_URL_FORM + " (a valid bucket name)")
        return DatasetsLocation(bucket=bucket, prefix=prefix)
    raise ConfigError(variable, value, _DATASETS_URL_FORM)


def parse_markets(variable: str, value: str) -> MarketFilter:
    text = value.strip()
    if text.lower() == "all":
        return MarketFilter(all=True)
    tickers: set[str] = set()
    series: set[str] = set()
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            continue
        if item.startswith("series:"):
            name = item.removeprefix("series:").strip()
            if not name:
                raise ConfigError(variable, value, "'all' or a comma list of TICKER / series:SERIES")
            series.add(name)
        elif any(c.isspace() for c in item):
            raise ConfigError(variable, value, "'all' or a comma list of TICKER / series:SERIES")
        else:
            tickers.add(item)
    if not tickers and not series:
        raise ConfigError(variable, value, "'all' or a comma list of TICKER / series:SERIES")
    return MarketFilter(all=False, tickers=frozenset(tickers), series=frozenset(series))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse the environment (default `os.environ`); raise ConfigError on the first bad one."""
    env = dict(os.environ if environ is None else environ)
    ktape_env = {k: v for k, v in env.items() if k.startswith("KTAPE_")}

    def get(name: str) -> str:
        return env.get(name) or DEFAULTS[name]

    def optional(name: str) -> str | None:
        value = env.get(name)
        return value if value else None

    key_path_text = optional("KTAPE_KALSHI_PRIVATE_KEY")
    key_path = Path(key_path_text) if key_path_text else None
    if key_path is not None and not key_path.is_file():
        raise ConfigError("KTAPE_KALSHI_PRIVATE_KEY", key_path_text, "the path of a readable PEM file")
    key_id = optional("KTAPE_KALSHI_KEY_ID")
    if (key_id is None) != (key_path is None):
        missing = "KTAPE_KALSHI_KEY_ID" if key_id is None else "KTAPE_KALSHI_PRIVATE_KEY"
        raise ConfigError(missing, None, "set together with its partner (Kalshi key id + PEM path)")

    dsn = optional("KTAPE_BILLING_DSN")
    if dsn is not None and not dsn.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ConfigError("KTAPE_BILLING_DSN", "***", "postgresql://... or sqlite:///path")

    stripe_base = optional("KTAPE_STRIPE_API_BASE")
    if stripe_base is not None:
        stripe_base = parse_url("KTAPE_STRIPE_API_BASE", stripe_base, ("http", "https"))

    s3_endpoint = optional("KTAPE_S3_ENDPOINT_URL")
    if s3_endpoint is not None:
        s3_endpoint = parse_url("KTAPE_S3_ENDPOINT_URL", s3_endpoint, ("http", "https"))
    signing = optional("KTAPE_DATASETS_SIGNING_KEY")
    if signing is not None and len(signing) < MIN_SIGNING_KEY_CHARS:
        raise ConfigError("KTAPE_DATASETS_SIGNING_KEY", "***",
                          f"a secret of at least {MIN_SIGNING_KEY_CHARS} characters "
                          "(e.g. `openssl rand -hex 32`)")

    stripe_key = optional("KTAPE_STRIPE_API_KEY")
    data_dir = Path(get("KTAPE_DATA_DIR")).expanduser()
    webhook_secret = optional("KTAPE_STRIPE_WEBHOOK_SECRET")
    replicas = parse_count("KTAPE_QUERYD_REPLICAS", get("KTAPE_QUERYD_REPLICAS"))
    shards = parse_count("KTAPE_INGEST_SHARDS", get("KTAPE_INGEST_SHARDS"))
    return Settings(
        data_dir=data_dir,
        http_port=parse_port("KTAPE_HTTP_PORT", get("KTAPE_HTTP_PORT")),
        queryd_addr=parse_hostport("KTAPE_QUERYD_ADDR", get("KTAPE_QUERYD_ADDR")),
        billingd_addr=parse_hostport("KTAPE_BILLINGD_ADDR", get("KTAPE_BILLINGD_ADDR")),
        questdb_http=parse_hostport("KTAPE_QUESTDB_HTTP", get("KTAPE_QUESTDB_HTTP")),
        questdb_pg=parse_hostport("KTAPE_QUESTDB_PG", get("KTAPE_QUESTDB_PG")),
        kalshi_ws_url=parse_url("KTAPE_KALSHI_WS_URL", get("KTAPE_KALSHI_WS_URL"), ("ws", "wss")),
        kalshi_rest_url=parse_url(
            "KTAPE_KALSHI_REST_URL", get("KTAPE_KALSHI_REST_URL"), ("http", "https")
        ),
        kalshi_key_id=key_id,
        kalshi_private_key_path=key_path,
        markets=parse_markets("KTAPE_MARKETS", get("KTAPE_MARKETS")),
        billing_dsn=dsn,
        stripe_api_key=Secret(stripe_key) if stripe_key else None,
        stripe_webhook_secret=Secret(webhook_secret) if webhook_secret else None,
        stripe_api_base=stripe_base,
        ingestd_metrics_addr=parse_hostport(
            "KTAPE_INGESTD_METRICS_ADDR", get("KTAPE_INGESTD_METRICS_ADDR")
        ),
        queryd_metrics_addr=parse_hostport(
            "KTAPE_QUERYD_METRICS_ADDR", get("KTAPE_QUERYD_METRICS_ADDR")),
        billingd_metrics_addr=parse_hostport(
            "KTAPE_BILLINGD_METRICS_ADDR", get("KTAPE_BILLINGD_METRICS_ADDR")),
        console_addr=parse_hostport("KTAPE_CONSOLE_ADDR", get("KTAPE_CONSOLE_ADDR")),
        internal_token=Secret(token) if (token := optional("KTAPE_INTERNAL_TOKEN")) else None,
        datasets=parse_datasets_url("KTAPE_DATASETS_URL", optional("KTAPE_DATASETS_URL"), data_dir),
        s3_endpoint_url=s3_endpoint,
        datasetd_addr=parse_hostport("KTAPE_DATASETD_ADDR", get("KTAPE_DATASETD_ADDR")),
        datasets_signing_key=Secret(signing) if signing else None,
        public_url_override=(parse_url("KTAPE_PUBLIC_URL", optional("KTAPE_PUBLIC_URL"),
                                       ("http", "https"))
                             if optional("KTAPE_PUBLIC_URL") else None),
        envoy_admin_port=parse_port("KTAPE_ENVOY_ADMIN_PORT", get("KTAPE_ENVOY_ADMIN_PORT")),
        sim_port=parse_port("KTAPE_SIM_PORT", get("KTAPE_SIM_PORT")),
        storage=parse_storage(env),
        raw=ktape_env,
        queryd_replicas=replicas,
        queryd_replica=parse_index("KTAPE_QUERYD_REPLICA", get("KTAPE_QUERYD_REPLICA"),
                                   replicas, "KTAPE_QUERYD_REPLICAS"),
        ingest_shards=shards,
        ingest_shard=parse_index("KTAPE_INGEST_SHARD", get("KTAPE_INGEST_SHARD"), shards,
                                 "KTAPE_INGEST_SHARDS"),
    )
