"""What `ktape up` runs: every component (plus the simulator) as supervisor specs.

Dependency order: QuestDB → (simulator) → ingestd, queryd, billingd, consoled, datasetd
→ Envoy. Each child
gets the same KTAPE_* environment, so every process agrees on ports and paths; with
`--simulator` the two Kalshi URLs point at the local `ktape sim`.

Scale (KTAPE_QUERYD_REPLICAS, KTAPE_INGEST_SHARDS; `ktape up --queryd-replicas N
--ingest-shards M`): N queryd children and M ingestd children, each told its index
(KTAPE_QUERYD_REPLICA / KTAPE_INGEST_SHARD) and listening at its base port + 100 x index
(ktape/sharding.py); with one of each the children are named `queryd` and `ingestd` as
before, with more `queryd-0`, `queryd-1`...
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from ktape.config import Settings
from ktape.probes import grpc_health_probe, http_probe
from ktape.runtime.questdb import server_command, write_server_conf
from ktape.sharding import ingestd_addrs, instance_name, queryd_addrs, queryd_metrics_addrs
from ktape.supervisor import ChildSpec, ReadinessProbe

PYTHON = sys.executable


@dataclass(frozen=True)
class StackOptions:
    simulator: bool = False
    sim_seed: int = 42
    sim_markets: int = 200
    sim_rate: int = 200


def sim_urls(settings: Settings) -> dict[str, str]:
    base = f"127.0.0.1:{settings.sim_port}"
    return {
        "KTAPE_KALSHI_WS_URL": f"ws://{base}/trade-api/ws/v2",
        "KTAPE_KALSHI_REST_URL": f"http://{base}/trade-api/v2",
    }


def build_stack(settings: Settings, options: StackOptions) -> list[ChildSpec]:
    """Specs for every child; writes the QuestDB and Envoy config files as a side effect."""
    data_dir = settings.data_dir.resolve()
    for sub in ("questdb", "spill", "logs", "envoy"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    env = {**settings.raw, "KTAPE_DATA_DIR": str(data_dir)}
    # queryd and billingd share a fresh internal token per run unless one is configured
    env.setdefault("KTAPE_INTERNAL_TOKEN", secrets.token_hex(32))
    if options.simulator:
        env.update(sim_urls(settings))

    qdb_root = data_dir / "questdb"
    (qdb_root / "log").mkdir(parents=True, exist_ok=True)
    write_server_conf(qdb_root, settings.questdb_http, settings.questdb_pg, memory_limited=False)

    async def questdb_ready() -> bool:
        return (await http_probe(f"http://{settings.questdb_http}/exec?query=SELECT%201")).healthy

    specs = [
        ChildSpec(
            "questdb", server_command(qdb_root), questdb_ready, env=env,
            ready_timeout_secs=120, stop_timeout_secs=10,
        )
    ]
    feed_deps: list[str] = ["questdb"]
    if options.simulator:
        async def sim_ready() -> bool:
            url = f"http://127.0.0.1:{settings.sim_port}/trade-api/v2/exchange/status"
            return (await http_probe(url)).healthy

        specs.append(
            ChildSpec(
                "sim",
                [PYTHON, "-m", "ktape", "sim", "--host", "127.0.0.1",
                 "--port", str(settings.sim_port), "--seed", str(options.sim_seed),
                 "--markets", str(options.sim_markets), "--rate", str(options.sim_rate)],
                sim_ready, env=env, ready_timeout_secs=60,
            )
        )
        feed_deps.append("sim")

    def ingestd_ready(addr: str) -> ReadinessProbe:
        async def ready() -> bool:
            return (await http_probe(f"http://{addr}/healthz")).healthy
        return ready

    def queryd_ready(addr: str) -> ReadinessProbe:
        async def ready() -> bool:
            return (await grpc_health_probe(addr)).healthy
        return ready

    async def billingd_ready() -> bool:
        return (await grpc_health_probe(str(settings.billingd_addr))).healthy

    async def console_ready() -> bool:
        return (await http_probe(f"http://{settings.console_addr}/livez")).healthy

    async def datasetd_ready() -> bool:
        return (await http_probe(f"http://{settings.datasetd_addr}/livez")).healthy

    async def envoy_ready() -> bool:
        return (await http_probe(f"http://127.0.0.1:{settings.http_port}/healthz")).healthy

    envoy_config = write_envoy_config(settings, data_dir / "envoy")
    shards = settings.ingest_shards
    for i, addr in enumerate(ingestd_addrs(settings)):
        specs.append(ChildSpec(
            instance_name("ingestd", i, shards), [PYTHON, "-m", "ingestd"],
            ingestd_ready(str(addr)), env={**env, "KTAPE_INGEST_SHARD": str(i)},
            depends_on=feed_deps, ready_timeout_secs=90, stop_timeout_secs=12))
    replicas = settings.queryd_replicas
    queryd_names = [instance_name("queryd", i, replicas) for i in range(replicas)]
    for i, addr in enumerate(queryd_addrs(settings)):
        specs.append(ChildSpec(
            queryd_names[i], [PYTHON, "-m", "queryd"], queryd_ready(str(addr)),
            env={**env, "KTAPE_QUERYD_REPLICA": str(i)}, depends_on=["questdb"]))
    specs += [
        ChildSpec("billingd", [PYTHON, "-m", "billingd"], billingd_ready, env=env),
        ChildSpec("consoled", [PYTHON, "-m", "consoled"], console_ready, env=env),
        ChildSpec("datasetd", [PYTHON, "-m", "datasetd"], datasetd_ready, env=env,
                  depends_on=["questdb"]),
        ChildSpec("envoy", envoy_command(envoy_config), envoy_ready, env=env,
                  depends_on=[*queryd_names, "billingd", "consoled", "datasetd"],
                  ready_timeout_secs=60),
    ]
    return specs


def write_envoy_config(settings: Settings, envoy_dir: Path) -> Path:
    from ktape.envoy import render_envoy_config
    from ktape.runtime.pins import REPO_ROOT

    envoy_dir.mkdir(parents=True, exist_ok=True)
    config = render_envoy_config(
        http_port=settings.http_port,
        admin_port=settings.envoy_admin_port,
        queryd_addr=[str(a) for a in queryd_addrs(settings)],
        billingd_addr=str(settings.billingd_addr),
        descriptor_path=REPO_ROOT / "build" / "api.pb",
        access_log_path=str(envoy_dir / "access.log"),
        ingestd_metrics_addr=str(settings.ingestd_metrics_addr),
        queryd_metrics_addr=str(queryd_metrics_addrs(settings)[0]),
        billingd_metrics_addr=str(settings.billingd_metrics_addr),
        console_addr=str(settings.console_addr),
        datasetd_addr=str(settings.datasetd_addr),
    )
    path = envoy_dir / "envoy.yaml"
    path.write_text(config)
    return path


def envoy_command(config_path: Path) -> list[str]:
    from ktape.envoy import envoy_binary

    log_format = '{"component":"envoy","level":"%l","event":"envoy.log","message":"%j"}'
    return [str(envoy_binary()), "-c", str(config_path), "--disable-hot-restart",
            "--log-level", "warn", "--log-format", log_format]
