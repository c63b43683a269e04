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
