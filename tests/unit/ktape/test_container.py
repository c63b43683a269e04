"""`python -m ktape.container questdb|envoy`: the config each pod's server starts from,
written by the same code as `ktape up`, with pod addresses from the KTAPE_* variables."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from ktape.config import load_settings
from ktape.container import component_argv
from ktape.runtime.pins import pins

SERVICE_ADDRS = {
    "KTAPE_QUERYD_ADDR": "ktape-queryd:50051",
    "KTAPE_BILLINGD_ADDR": "ktape-billingd:50052",
    "KTAPE_INGESTD_METRICS_ADDR": "ktape-ingestd-0:9101",
    "KTAPE_QUERYD_METRICS_ADDR": "ktape-queryd:9102",
    "KTAPE_BILLINGD_METRICS_ADDR": "ktape-billingd:9103",
    "KTAPE_CONSOLE_ADDR": "ktape-consoled:9104",
    "KTAPE_DATASETD_ADDR": "ktape-datasetd:9105",
}


def _upstreams(config: dict) -> dict[str, dict]:
    out = {}
    for cluster in config["static_resources"]["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        out[cluster["name"]] = endpoint["address"]["socket_address"]
    return out


def test_envoy_listens_on_the_pod_and_forwards_to_the_services(tmp_path):
    settings = load_settings({"KTAPE_DATA_DIR": str(tmp_path), "KTAPE_HTTP_PORT": "8080",
                              **SERVICE_ADDRS})
    argv = component_argv("envoy", settings)
    config_path = tmp_path / "envoy" / "envoy.yaml"
    assert argv[1:3] == ["-c", str(config_path)]
    config = yaml.safe_load(config_path.read_text())
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener == {"address": "0.0.0.0", "port_value": 8080}
    # the admin interface stays on the pod's loopback
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    upstreams = _upstreams(config)
    assert upstreams["queryd"] == {"address": "ktape-queryd", "port_value": 50051}
    assert upstreams["billingd"] == {"address": "ktape-billingd", "port_value": 50052}
    assert upstreams["datasetd"] == {"address": "ktape-datasetd", "port_value": 9105}
    assert upstreams["console"] == {"address": "ktape-consoled", "port_value": 9104}


def test_questdb_binds_the_configured_addresses_under_the_data_dir(tmp_path):
    settings = load_settings({"KTAPE_DATA_DIR": str(tmp_path),
                              "KTAPE_QUESTDB_HTTP": "0.0.0.0:9000", "KTAPE_QUESTDB_PG": "0.0.0.0:8812"})
    argv = component_argv("questdb", settings)
    conf = (tmp_path / "questdb" / "conf" / "server.conf").read_text().splitlines()
    assert "http.net.bind.to=0.0.0.0:9000" in conf
    assert "pg.net.bind.to=0.0.0.0:8812" in conf
    assert argv[-2:] == ["-d", str(tmp_path / "questdb")]
    assert any(arg.endswith(f"questdb-{pins()['QUESTDB_VERSION']}.jar") for arg in argv)


def test_unknown_component_is_refused():
    with pytest.raises(ValueError, match="unknown component 'queryd'"):
        component_argv("queryd", load_settings({}))
    proc = subprocess.run([sys.executable, "-m", "ktape.container", "queryd"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "usage: python -m ktape.container {questdb|envoy}" in proc.stderr


def test_bad_configuration_is_one_clear_line():
    proc = subprocess.run([sys.executable, "-m", "ktape.container", "envoy"],
                          env={"KTAPE_QUERYD_ADDR": "nowhere", "PATH": ""},
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "container envoy: configuration error: KTAPE_QUERYD_ADDR=" in proc.stderr
