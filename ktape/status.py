"""`ktape status`: probe every component directly and report health and ingest details.

Why probe rather than ask the supervisor: status must work whether the stack runs under
`ktape up`, under systemd, or split across machines; each component's own health
endpoint is the truth. Every queryd replica and ingest shard is probed at its own address
(ktape/sharding.py). What the supervisor adds, when `ktape up` runs on this data dir, is
read from its state file (`<data dir>/stack.json`): each child's pid and restarts, and the
replica and shard counts it was started with (used when KTAPE_QUERYD_REPLICAS /
KTAPE_INGEST_SHARDS are not set here).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ktape.config import Settings
from ktape.probes import ProbeResult, grpc_health_probe, http_probe
from ktape.sharding import ingestd_addrs, instance_name, queryd_addrs

STATE_FILE = "stack.json"


def write_stack_state(path: Path, settings: Settings, children: list[dict[str, Any]]) -> None:
    """What `ktape up` runs, for `ktape status` (written whole, then renamed)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "queryd_replicas": settings.queryd_replicas,
                               "ingest_shards": settings.ingest_shards,
                               "children": children}))
    tmp.replace(path)


def read_stack_state(data_dir: Path) -> dict[str, Any] | None:
    """The running `ktape up`'s state, or None (none, or its supervisor is gone)."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if isinstance(state, dict) else None


def _scaled(settings: Settings, state: dict[str, Any] | None) -> Settings:
    """The settings with the running stack's counts where the environment names none."""
    if state is None:
        return settings
    counts = {}
    if "KTAPE_QUERYD_REPLICAS" not in settings.raw:
        counts["queryd_replicas"] = int(state.get("queryd_replicas", 1))
    if "KTAPE_INGEST_SHARDS" not in settings.raw:
        counts["ingest_shards"] = int(state.get("ingest_shards", 1))
    return replace(settings, **counts)


async def collect_status(settings: Settings) -> dict[str, Any]:
    state = read_stack_state(settings.data_dir)
    settings = _scaled(settings, state)
    checks: dict[str, tuple[str, Any]] = {
        "questdb": (str(settings.questdb_http),
                    http_probe(f"http://{settings.questdb_http}/exec?query=SELECT%201")),
    }
    for i, addr in enumerate(ingestd_addrs(settings)):
        checks[instance_name("ingestd", i, settings.ingest_shards)] = (
            str(addr), http_probe(f"http://{addr}/healthz"))
    for i, addr in enumerate(queryd_addrs(settings)):
        checks[instance_name("queryd", i, settings.queryd_replicas)] = (
            str(addr), grpc_health_probe(str(addr)))
    checks |= {
        "billingd": (str(settings.billingd_addr), grpc_health_probe(str(settings.billingd_addr))),
        "consoled": (str(settings.console_addr),
                     http_probe(f"http://{settings.console_addr}/livez")),
        "datasetd": (str(settings.datasetd_addr),
                     http_probe(f"http://{settings.datasetd_addr}/livez")),
        "envoy": (f"127.0.0.1:{settings.http_port}",
                  http_probe(f"http://127.0.0.1:{settings.http_port}/healthz")),
    }
    results: list[ProbeResult] = await asyncio.gather(*(c for _, c in checks.values()))
    supervised = {c.get("name"): c for c in (state or {}).get("children", [])}
    components = []
    for (name, (address, _)), result in zip(checks.items(), results, strict=True):
        data = result.data
        if name == "questdb":
            data = None  # the SQL answer itself is not interesting
        child = supervised.get(name, {})
        components.append(
            {"name": name, "address": address, "healthy": result.healthy,
             "detail": result.detail, "data": data, "pid": child.get("pid"),
             "restarts": child.get("restarts")}
        )
    return {"components": components, "config": settings.effective(),
            "scale": {"queryd_replicas": settings.queryd_replicas,
                      "ingest_shards": settings.ingest_shards}}
