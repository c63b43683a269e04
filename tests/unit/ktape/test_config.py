"""Config validation: every bad variable is named in the error, good values parse exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from ktape.config import ConfigError, DatasetsLocation, HostPort, Secret, load_settings


def test_defaults_match_contract():
    s = load_settings({})
    assert s.http_port == 8080
    assert s.queryd_addr == HostPort("127.0.0.1", 50051)
    assert s.billingd_addr == HostPort("127.0.0.1", 50052)
    assert s.questdb_http == HostPort("127.0.0.1", 9000)
    assert s.questdb_pg == HostPort("127.0.0.1", 8812)
    assert s.kalshi_ws_url.startswith("wss://") and s.kalshi_ws_url.endswith("/trade-api/ws/v2")
    assert s.kalshi_rest_url.endswith("/trade-api/v2")
    assert s.markets.all
    assert str(s.data_dir) == ".ktape"
    assert s.billing_dsn_effective.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KTAPE_HTTP_PORT", "eighty"),
        ("KTAPE_HTTP_PORT", "70000"),
        ("KTAPE_QUERYD_ADDR", "localhost"),
        ("KTAPE_BILLINGD_ADDR", "127.0.0.1:x"),
        ("KTAPE_QUESTDB_HTTP", ":9000"),
        ("KTAPE_QUESTDB_PG", "127.0.0.1:0"),
        ("KTAPE_KALSHI_WS_URL", "https://example/trade-api/ws/v2"),
        ("KTAPE_KALSHI_REST_URL", "ftp://x"),
        ("KTAPE_MARKETS", "series:"),
        ("KTAPE_MARKETS", " , "),
        ("KTAPE_BILLING_DSN", "mysql://db"),
        ("KTAPE_STRIPE_API_BASE", "localhost:12111"),
        ("KTAPE_INGESTD_METRICS_ADDR", "9101"),
        ("KTAPE_DATASETD_ADDR", "127.0.0.1"),
        ("KTAPE_DATASETS_URL", "/srv/datasets"),
        ("KTAPE_DATASETS_URL", "file://relative/dir"),
        ("KTAPE_DATASETS_URL", "file:///"),
        ("KTAPE_DATASETS_URL", "s3://"),
        ("KTAPE_DATASETS_URL", "s3://Bad_Bucket/x"),
        ("KTAPE_DATASETS_URL", "s3://bucket/a/../b"),
        ("KTAPE_DATASETS_URL", "gs://bucket/x"),
        ("KTAPE_S3_ENDPOINT_URL", "127.0.0.1:9000"),
        ("KTAPE_DATASETS_SIGNING_KEY", "short"),
        ("KTAPE_QUERYD_REPLICAS", "0"),
        ("KTAPE_QUERYD_REPLICAS", "9"),
        ("KTAPE_INGEST_SHARDS", "two"),
        ("KTAPE_QUERYD_REPLICA", "1"),  # of the default one replica
        ("KTAPE_INGEST_SHARD", "-1"),
    ],
)
def test_bad_value_names_the_variable(variable, value):
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert info.value.variable == variable
    assert variable in str(info.value)


def test_scale_defaults_to_one_of_each_and_an_index_below_the_count():
    s = load_settings({})
    assert (s.queryd_replicas, s.queryd_replica, s.ingest_shards, s.ingest_shard) == (1, 0, 1, 0)
    s = load_settings({"KTAPE_QUERYD_REPLICAS": "3", "KTAPE_QUERYD_REPLICA": "2",
                       "KTAPE_INGEST_SHARDS": "2", "KTAPE_INGEST_SHARD": "1"})
    assert (s.queryd_replicas, s.queryd_replica, s.ingest_shards, s.ingest_shard) == (3, 2, 2, 1)
    with pytest.raises(ConfigError, match="KTAPE_INGEST_SHARDS=2"):
        load_settings({"KTAPE_INGEST_SHARDS": "2", "KTAPE_INGEST_SHARD": "2"})


def test_kalshi_key_needs_both_parts(tmp_path):
    pem = tmp_path / "k.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(ConfigError) as info:
        load_settings({"KTAPE_KALSHI_PRIVATE_KEY": str(pem)})
    assert info.value.variable == "KTAPE_KALSHI_KEY_ID"
    with pytest.raises(ConfigError) as info:
        load_settings({"KTAPE_KALSHI_KEY_ID": "abc", "KTAPE_KALSHI_PRIVATE_KEY": str(tmp_path)})
    assert info.value.variable == "KTAPE_KALSHI_PRIVATE_KEY"
    s = load_settings({"KTAPE_KALSHI_KEY_ID": "abc", "KTAPE_KALSHI_PRIVATE_KEY": str(pem)})
    assert s.kalshi_private_key_path == pem


def test_market_filter_tickers_and_series():
    s = load_settings({"KTAPE_MARKETS": "KXBTC-25DEC31-T100000, series:KXETH ,KXA"})
    assert not s.markets.all
    assert s.markets.tickers == {"KXBTC-25DEC31-T100000", "KXA"}
    assert s.markets.series == {"KXETH"}
    assert s.markets.matches("KXETH-1", "KXETH")
    assert s.markets.matches("KXA", None)
    assert not s.markets.matches("KXB", "KXB")


def test_secrets_never_print():
    s = load_settings({"KTAPE_STRIPE_API_KEY": "sk_test_123", "KTAPE_STRIPE_WEBHOOK_SECRET": "whsec_1",
                       "KTAPE_BILLING_DSN": "postgresql://u:pw@h/db"})
    assert isinstance(s.stripe_api_key, Secret)
    assert "sk_test_123" not in repr(s)
    assert "whsec_1" not in repr(s)
    assert s.stripe_api_key.reveal() == "sk_test_123"
    shown = s.effective()
    assert shown["KTAPE_STRIPE_API_KEY"] == "***"
    assert shown["KTAPE_BILLING_DSN"] == "***"
    assert shown["KTAPE_HTTP_PORT"] == "8080"


def test_cli_reports_bad_variable(monkeypatch, capsys):
    from ktape.cli import main

    monkeypatch.setenv("KTAPE_HTTP_PORT", "nope")
    assert main(["status"]) == 2
    assert "KTAPE_HTTP_PORT" in capsys.readouterr().err


def test_datasets_defaults_to_a_directory_in_the_data_dir(tmp_path):
    s = load_settings({"KTAPE_DATA_DIR": str(tmp_path)})
    assert s.datasets == DatasetsLocation(local_dir=tmp_path / "datasets")
    assert str(s.datasets) == f"file://{tmp_path}/datasets"
    assert s.datasetd_addr == HostPort("127.0.0.1", 9105)
    assert s.s3_endpoint_url is None and s.datasets_signing_key is None
    assert s.datasets_signing_key_path == tmp_path / "datasets-signing.key"
    assert s.effective()["KTAPE_DATASETS_URL"] == f"file://{tmp_path}/datasets"


@pytest.mark.parametrize(("url", "expected"), [
    ("file:///srv/ktape/datasets/", DatasetsLocation(local_dir=Path("/srv/ktape/datasets"))),
    ("s3://ktape-data", DatasetsLocation(bucket="ktape-data")),
    ("s3://ktape-data/", DatasetsLocation(bucket="ktape-data")),
    ("s3://ktape.data/prod/datasets/", DatasetsLocation(bucket="ktape.data", prefix="prod/datasets")),
])
def test_datasets_url_forms(url, expected):
    s = load_settings({"KTAPE_DATASETS_URL": url, "KTAPE_S3_ENDPOINT_URL": "http://127.0.0.1:9000/"})
    assert s.datasets == expected
    assert s.s3_endpoint_url == "http://127.0.0.1:9000"
    assert s.effective()["KTAPE_DATASETS_URL"] == url  # as given, when given


def test_datasets_signing_key_is_a_secret():
    s = load_settings({"KTAPE_DATASETS_SIGNING_KEY": "0123456789abcdef-signing"})
    assert s.datasets_signing_key == Secret("0123456789abcdef-signing")
    assert "0123456789abcdef" not in repr(s)
    assert s.effective()["KTAPE_DATASETS_SIGNING_KEY"] == "***"
    with pytest.raises(ConfigError) as info:
        load_settings({"KTAPE_DATASETS_SIGNING_KEY": "tooshort"})
    assert "tooshort" not in str(info.value)  # even a bad secret is not echoed


def test_storage_lifecycle_defaults_keep_everything_native_and_forever():
    storage = load_settings({}).storage
    assert storage.parquet_after_days == 0
    assert set(storage.retention_days.values()) == {0}


def test_storage_lifecycle_parses_age_and_per_table_retention():
    storage = load_settings({"KTAPE_PARQUET_AFTER_DAYS": "3",
                             "KTAPE_RETENTION_DAYS_TRADES": "90",
                             "KTAPE_RETENTION_DAYS_BOOK_CHANGES": "30",
                             "KTAPE_RETENTION_DAYS_BOOK_CHECKPOINTS": "30"}).storage
    assert storage.parquet_after_days == 3
    assert storage.retention_of("trades") == 90
    assert storage.retention_of("book_changes") == 30
    assert storage.retention_of("gaps") == 0  # forever outlives the changes


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"KTAPE_PARQUET_AFTER_DAYS": "two"}, "KTAPE_PARQUET_AFTER_DAYS"),
        ({"KTAPE_PARQUET_AFTER_DAYS": "-1"}, "KTAPE_PARQUET_AFTER_DAYS"),
        ({"KTAPE_RETENTION_DAYS_TRADES": "7"}, "KTAPE_RETENTION_DAYS_TRADES"),  # < datasets window
        ({"KTAPE_RETENTION_DAYS_TICKERS": "1.5"}, "KTAPE_RETENTION_DAYS_TICKERS"),
        # checkpoints kept longer than the changes after them would rebuild wrong books
        ({"KTAPE_RETENTION_DAYS_BOOK_CHANGES": "30"}, "KTAPE_RETENTION_DAYS_BOOK_CHECKPOINTS"),
        ({"KTAPE_RETENTION_DAYS_BOOK_CHANGES": "30", "KTAPE_RETENTION_DAYS_BOOK_CHECKPOINTS": "60"},
         "KTAPE_RETENTION_DAYS_BOOK_CHECKPOINTS"),
        # gaps dropped before the changes among them would claim continuity across them
        ({"KTAPE_RETENTION_DAYS_GAPS": "30"}, "KTAPE_RETENTION_DAYS_GAPS"),
    ],
)
def test_bad_storage_lifecycle_names_the_variable(env, variable):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.variable == variable
