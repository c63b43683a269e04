"""The datasetd process body: it listens, answers /livez and /metrics, runs each background
task with the process's settings and store until stop, and a task that fails ends the
process instead of vanishing."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from datasetd.job import BUILDS
from datasetd.partitions import CONVERSIONS
from datasetd.server import BackgroundTask, TaskContext, serve
from ktape.config import HostPort, load_settings
from ktape.datasets.storage import LocalStorage


async def _start(settings, tasks, stop) -> tuple[asyncio.Task[int], int]:
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(settings, tasks=tasks, addr=HostPort("127.0.0.1", 0),
                                       stop=stop, on_listening=bound.set_result))
    done, _ = await asyncio.wait([server, bound], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if server in done:
        server.result()  # raises what went wrong
    return server, await bound


async def _answers(port: int) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(f"http://127.0.0.1:{port}/livez")
    except httpx.ConnectError:
        return False
    return True


async def test_serves_livez_metrics_and_runs_background_tasks(tmp_path):
    settings = load_settings({"KTAPE_DATA_DIR": str(tmp_path)})
    stop = asyncio.Event()
    seen: list[TaskContext] = []
    finished = asyncio.Event()

    async def job(context: TaskContext) -> None:
        seen.append(context)
        await context.stop.wait()
        finished.set()

    server, port = await _start(settings, [BackgroundTask("datasets.test_job", job)], stop)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            assert (await client.get("/livez")).json() == {"ok": True}
            refused = await client.get("/v1/files/trades/2026-12-01/KXA.parquet")
            assert refused.status_code == 403
            metrics = (await client.get("/metrics")).text
        assert 'datasetd_file_requests_total{method="GET",status="403"} 1.0' in metrics
        assert 'datasetd_file_refusals_total{reason="missing_signature"} 1.0' in metrics
        # the background jobs' module-level metrics are served too
        assert f"# TYPE {BUILDS.describe()[0].name}_total counter" in metrics
        assert f"# TYPE {CONVERSIONS.describe()[0].name}_total counter" in metrics
        assert [t.get_name() for t in asyncio.all_tasks()].count("datasets.test_job") == 1
        assert len(seen) == 1 and seen[0].settings is settings and seen[0].stop is stop
        assert isinstance(seen[0].storage, LocalStorage)
        assert seen[0].storage.root == (tmp_path / "datasets").resolve()
    finally:
        stop.set()
    assert await asyncio.wait_for(server, 15) == 0
    assert finished.is_set()  # the task saw stop and returned before serve did
    assert not await _answers(port)  # and the port is closed
    assert settings.datasets_signing_key_path.exists()  # the key was made for the server


async def test_a_failing_background_task_ends_the_process(tmp_path):
    settings = load_settings({"KTAPE_DATA_DIR": str(tmp_path)})

    async def broken(context: TaskContext) -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("build failed")

    server, port = await _start(settings, [BackgroundTask("datasets.broken", broken)],
                                asyncio.Event())
    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(server, 15)
    assert info.group_contains(RuntimeError, match="build failed")
    assert not await _answers(port)
