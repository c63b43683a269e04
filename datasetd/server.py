"""The datasetd process: the file server on KTAPE_DATASETD_ADDR plus its background tasks.

Why one process for serving and (soon) building: both need the same store and settings,
and the build job is the only writer of what the server reads. Background tasks are
declared in BACKGROUND_TASKS, the one place to add one: `serve` starts each in the
process's root TaskGroup under its name with a TaskContext (settings, storage, the stop
event), after the HTTP server is listening and before anything waits. A task returns
when `stop` is set; a task that raises ends the process (the supervisor restarts it), so
a broken job is loud rather than silently absent.

Shutdown (SIGTERM/SIGINT): stop is set → background tasks see it and return → the HTTP
server stops accepting, lets in-flight downloads run for SHUTDOWN_GRACE_SECS, and closes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from datasetd.files import FileMetrics, make_app
from ktape.config import HostPort, Settings
from ktape.datasets.signing import signing_key
from ktape.datasets.storage import Storage, open_storage
from ktape.entrypoint import run_service
from ktape.log import get_logger

log = get_logger(__name__)

SHUTDOWN_GRACE_SECS = 10.0


@dataclass(frozen=True)
class TaskContext:
    """What a background task gets: the process's settings and store, and the event that
    tells it to finish."""

    settings: Settings
    storage: Storage
    stop: asyncio.Event


@dataclass(frozen=True)
class BackgroundTask:
    """A long-lived task of the datasetd process, named for the logs and the task list."""

    name: str
    run: Callable[[TaskContext], Awaitable[None]]


def _build_job(ctx: TaskContext) -> Awaitable[None]:
    from datasetd.job import run_build_job  # the job imports this module's TaskContext

    return run_build_job(ctx)


def _partition_job(ctx: TaskContext) -> Awaitable[None]:
    from datasetd.partitions import run_partition_job  # imports this module's TaskContext

    return run_partition_job(ctx)


# The daily build (datasetd/job.py): each closed day's files, recent days re-checked; and
# the storage lifecycle (datasetd/partitions.py): old days to Parquet, retention as TTL.
BACKGROUND_TASKS: tuple[BackgroundTask, ...] = (
    BackgroundTask("datasets.build", _build_job),
    BackgroundTask("partitions.lifecycle", _partition_job),
)


def build_app(storage: Storage, key: bytes, metrics: FileMetrics | None = None) -> web.Application:
    """The file routes plus `/livez` (the supervisor's probe: this process answers) and
    `/metrics` (Prometheus text of the file server and the background jobs; Envoy serves
    it as /metrics/datasetd)."""
    metrics = metrics or FileMetrics()
    app = make_app(storage, key, metrics=metrics)

    async def livez(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def prometheus(request: web.Request) -> web.Response:
        # The background jobs' metrics (datasetd/job.py, datasetd/partitions.py) live in
        # the process's default registry, the file server's in its own.
        body = generate_latest(metrics.registry)
        if metrics.registry is not REGISTRY:
            body += generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", prometheus)
    return app


async def serve(settings: Settings, *, tasks: Sequence[BackgroundTask] = BACKGROUND_TASKS,
                addr: HostPort | None = None, stop: asyncio.Event | None = None,
                on_listening: Callable[[int], None] | None = None) -> int:
    """Run until `stop` is set (SIGTERM/SIGINT set it when `stop` is not given).

    `addr` overrides KTAPE_DATASETD_ADDR (port 0 binds a free port); `on_listening` gets
    the bound port once the server accepts connections.
    """
    storage = open_storage(settings)
    key = signing_key(settings)
    addr = addr or settings.datasetd_addr
    runner = web.AppRunner(build_app(storage, key), access_log=None,
                           shutdown_timeout=SHUTDOWN_GRACE_SECS)
    await runner.setup()
    try:
        await web.TCPSite(runner, addr.host, addr.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    try:
        port = runner.addresses[0][1]
        log.info("datasetd.started", addr=f"{addr.host}:{port}", storage=str(settings.datasets),
                 tasks=[task.name for task in tasks])
        if on_listening is not None:
            on_listening(port)
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        context = TaskContext(settings, storage, stop)
        async with asyncio.TaskGroup() as group:
            for task in tasks:
                group.create_task(_run_task(task, context), name=task.name)
            await stop.wait()
    finally:
        await runner.cleanup()
        log.info("datasetd.stopped")
    return 0


async def _run_task(task: BackgroundTask, context: TaskContext) -> None:
    try:
        await task.run(context)
    except Exception:
        log.exception("task.failed", task=task.name)
        raise
    if not context.stop.is_set():
        log.warning("task.returned_early", task=task.name)


def main() -> int:
    return run_service("datasetd", serve)
