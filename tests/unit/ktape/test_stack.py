"""What `ktape up` starts for datasets: datasetd supervised with its /livez probe, Envoy
after it, and Envoy's config pointing /v1/files/ and /metrics/datasetd at its address."""

from __future__ import annotations

import yaml

from ktape.config import load_settings
from ktape.stack import StackOptions, build_stack


def test_datasetd_is_supervised_before_envoy_and_routed(tmp_path):
    settings = load_settings({"KTAPE_DATA_DIR": str(tmp_path), "KTAPE_DATASETD_ADDR": "127.0.0.1:19105"})
    specs = {spec.name: spec for spec in build_stack(settings, StackOptions())}
    datasetd = specs["datasetd"]
    assert datasetd.argv[1:] == ["-m", "datasetd"]
    assert datasetd.env["KTAPE_DATA_DIR"] == str(tmp_path.resolve())
    assert "datasetd" in specs["envoy"].depends_on

    config = yaml.safe_load((tmp_path / "envoy" / "envoy.yaml").read_text())
    cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == "datasetd")
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "127.0.0.1", "port_value": 19105}
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    matches = [r["match"].get("prefix") or r["match"].get("path") for r in routes]
    files = routes[matches.index("/v1/files/")]
    assert files["route"] == {"cluster": "datasetd", "timeout": "0s", "idle_timeout": "300s"}
    assert files["typed_per_filter_config"]["envoy.filters.http.grpc_json_transcoder"]["disabled"]
    # Before the REST catch-all (queryd) and the console's, which would otherwise take it.
    assert matches.index("/v1/files/") < matches.index("/v1/") < len(matches) - 1
    assert routes[matches.index("/metrics/datasetd")]["route"]["cluster"] == "datasetd"


def _routes(config: dict) -> dict[str, dict]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    return {r["match"].get("path") or r["match"].get("prefix"): r for r in routes
            if "route" in r and not r["match"].get("headers")}


def test_replicas_and_shards_are_children_each_told_its_index(tmp_path):
    settings = load_settings({"KTAPE_DATA_DIR": str(tmp_path), "KTAPE_QUERYD_REPLICAS": "2",
                              "KTAPE_INGEST_SHARDS": "3", "KTAPE_QUERYD_ADDR": "127.0.0.1:40051"})
    specs = {spec.name: spec for spec in build_stack(settings, StackOptions(simulator=True))}
    assert [n for n in specs if n.startswith(("queryd", "ingestd"))] == [
        "ingestd-0", "ingestd-1", "ingestd-2", "queryd-0", "queryd-1"]
    assert [specs[f"ingestd-{i}"].env["KTAPE_INGEST_SHARD"] for i in range(3)] == ["0", "1", "2"]
    assert [specs[f"queryd-{i}"].env["KTAPE_QUERYD_REPLICA"] for i in range(2)] == ["0", "1"]
    assert all(specs[f"ingestd-{i}"].depends_on == ["questdb", "sim"] for i in range(3))
    assert {"queryd-0", "queryd-1"} <= set(specs["envoy"].depends_on)

    config = yaml.safe_load((tmp_path / "envoy" / "envoy.yaml").read_text())
    queryd = next(c for c in config["static_resources"]["clusters"] if c["name"] == "queryd")
    endpoints = [e["endpoint"]["address"]["socket_address"]["port_value"]
                 for e in queryd["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert endpoints == [40051, 40151]
    assert queryd["lb_policy"] == "LEAST_REQUEST"
    assert queryd["outlier_detection"]["consecutive_gateway_failure"] == 2
    assert queryd["health_checks"][0]["grpc_health_check"] == {}
    routes = _routes(config)
    read = routes["/ktape.marketdata.v1.MarketDataService/"]["route"]["retry_policy"]
    assert set(read["retry_on"].split(",")) == {"connect-failure", "refused-stream", "reset",
                                                "unavailable"}
    assert read["num_retries"] == 2
    for service in ("DataStatusService", "DatasetService", "AnalyticsService"):
        assert routes[f"/ktape.marketdata.v1.{service}/"]["route"]["retry_policy"] == read
    # Never retried: the stream, and the purchase that charges credits.
    for path in ("/ktape.marketdata.v1.MarketDataService/StreamOrderbook",
                 "/ktape.marketdata.v1.DatasetService/CreateDatasetDownload"):
        assert "retry_policy" not in routes[path]["route"], path
    assert "retry_policy" not in routes["/ktape.billing.v1.BillingService/"]["route"]


def test_one_of_each_keeps_the_plain_names(tmp_path):
    settings = load_settings({"KTAPE_DATA_DIR": str(tmp_path)})
    names = [spec.name for spec in build_stack(settings, StackOptions())]
    assert "queryd" in names and "ingestd" in names
    assert not [n for n in names if n.startswith(("queryd-", "ingestd-"))]
    config = yaml.safe_load((tmp_path / "envoy" / "envoy.yaml").read_text())
    queryd = next(c for c in config["static_resources"]["clusters"] if c["name"] == "queryd")
    [endpoint] = queryd["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": 50051}
