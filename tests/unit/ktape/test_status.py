"""`ktape status` names every replica and shard, with the supervisor's pids when it runs."""

from __future__ import annotations

import os
import subprocess
import sys

from ktape.config import load_settings
from ktape.runtime.ports import free_port
from ktape.status import STATE_FILE, collect_status, read_stack_state, write_stack_state


def _closed_env(tmp_path) -> dict[str, str]:
    """Every component on a port nobody listens on: each probe fails quickly."""
    return {"KTAPE_DATA_DIR": str(tmp_path), "KTAPE_HTTP_PORT": str(free_port()),
            "KTAPE_QUERYD_ADDR": f"127.0.0.1:{free_port()}",
            "KTAPE_BILLINGD_ADDR": f"127.0.0.1:{free_port()}",
            "KTAPE_QUESTDB_HTTP": f"127.0.0.1:{free_port()}",
            "KTAPE_INGESTD_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "KTAPE_CONSOLE_ADDR": f"127.0.0.1:{free_port()}",
            "KTAPE_DATASETD_ADDR": f"127.0.0.1:{free_port()}"}


async def test_every_replica_and_shard_is_probed_at_its_own_address(tmp_path):
    env = _closed_env(tmp_path)
    settings = load_settings({**env, "KTAPE_QUERYD_REPLICAS": "2", "KTAPE_INGEST_SHARDS": "2"})
    report = await collect_status(settings)
    by_name = {c["name"]: c for c in report["components"]}
    assert list(by_name) == ["questdb", "ingestd-0", "ingestd-1", "queryd-0", "queryd-1",
                             "billingd", "consoled", "datasetd", "envoy"]
    base = settings.queryd_addr.port
    assert by_name["queryd-1"]["address"] == f"127.0.0.1:{base + 100}"
    assert not any(c["healthy"] for c in report["components"])
    assert report["scale"] == {"queryd_replicas": 2, "ingest_shards": 2}


async def test_the_running_stacks_counts_and_pids_come_from_its_state_file(tmp_path):
    env = _closed_env(tmp_path)
    started = load_settings({**env, "KTAPE_QUERYD_REPLICAS": "2"})
    write_stack_state(tmp_path / STATE_FILE, started,
                      [{"name": "queryd-1", "pid": 4242, "ready": True, "restarts": 1}])
    report = await collect_status(load_settings(env))  # no KTAPE_QUERYD_REPLICAS here
    by_name = {c["name"]: c for c in report["components"]}
    assert "queryd-1" in by_name and "queryd" not in by_name
    assert (by_name["queryd-1"]["pid"], by_name["queryd-1"]["restarts"]) == (4242, 1)
    # The environment wins over the file.
    report = await collect_status(load_settings({**env, "KTAPE_QUERYD_REPLICAS": "1"}))
    assert "queryd" in {c["name"] for c in report["components"]}


def test_a_state_file_of_a_stopped_supervisor_is_ignored(tmp_path):
    settings = load_settings({"KTAPE_DATA_DIR": str(tmp_path)})
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    write_stack_state(tmp_path / STATE_FILE, settings, [])
    assert read_stack_state(tmp_path)["pid"] == os.getpid()
    text = (tmp_path / STATE_FILE).read_text().replace(str(os.getpid()), gone.stdout.strip())
    (tmp_path / STATE_FILE).write_text(text)
    assert read_stack_state(tmp_path) is None
