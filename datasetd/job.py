"""The supervised build job: each UTC day's files once the day has closed, and again
whenever a heal or a late row changes a recent day.

Why a loop over the last days rather than a trigger: a gap is healed, and a spilled
batch replayed, minutes or hours after the rows it concerns; re-planning the recent days
(a few grouped queries per day) and rebuilding only series whose fingerprint moved
finds every such change without ingestd knowing that files exist. Today is never built
here (it is PENDING and would be rebuilt every pass); `ktape datasets build --date
today` does it on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from datasetd.build import BuildReport, DayBuilder
from datasetd.source import QuestSource
from ktape.clock import now_us
from ktape.log import get_logger

if TYPE_CHECKING:
    from datasetd.server import TaskContext

log = get_logger(__name__)
DAY_US = 86_400_000_000

BUILDS = Counter("ktape_dataset_builds_total", "day builds by outcome", ["outcome"])
FILES = Counter("ktape_dataset_files_written_total", "dataset files published")
BYTES = Counter("ktape_dataset_bytes_written_total", "bytes of dataset files published")
LAST_PASS = Gauge("ktape_dataset_last_pass_timestamp_seconds", "end of the last full pass")


class DatasetJob:
    def __init__(self, builder: DayBuilder, *, lookback_days: int = 7,
                 interval_secs: float = 300.0, grace_secs: float = 120.0,
                 clock: Callable[[], int] = now_us) -> None:
        self.builder = builder
        self.lookback_days = lookback_days
        self.interval_secs = interval_secs
        self.grace_us = int(grace_secs * 1_000_000)
        self.clock = clock

    def due_days(self) -> list[dt.date]:
        """The closed days to bring up to date, oldest first (a day closes `grace`
        after midnight UTC, so rows still in flight at midnight are in its files)."""
        now = self.clock()
        last_closed = dt.date(1970, 1, 1) + dt.timedelta(days=(now - self.grace_us) // DAY_US - 1)
        return [last_closed - dt.timedelta(days=n) for n in range(self.lookback_days - 1, -1, -1)]

    def run_once(self) -> list[BuildReport]:
        """One pass; a day that fails is logged and retried next pass, the rest go on."""
        reports = []
        for day in self.due_days():
            try:
                report = self.builder.build(day)
            except Exception as exc:  # one bad day must not stop the others; logged
                BUILDS.labels("failed").inc()
                log.error("dataset.build_failed", date=day.isoformat(), error=repr(exc))
                continue
            BUILDS.labels("built" if report.series_built else "fresh").inc()
            FILES.inc(report.files)
            BYTES.inc(report.bytes)
            if report.series_built:
                log.info("dataset.day_built", date=day.isoformat(),
                         series=len(report.series_built), files=report.files,
                         rows=report.rows, bytes=report.bytes)
            reports.append(report)
        LAST_PASS.set(self.clock() / 1_000_000)
        return reports

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: a pass (in a worker thread: it is CPU and disk work), a pause."""
        while not stop.is_set():
            await asyncio.to_thread(self.run_once)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_secs)


async def run_build_job(ctx: TaskContext) -> None:
    """datasetd's background task: the job over this deployment's QuestDB and store."""
    settings = ctx.settings
    source = QuestSource(settings.questdb_http, settings.questdb_pg_conninfo,
                         ctx.storage.scratch_dir())
    try:
        await DatasetJob(DayBuilder(source, ctx.storage)).run(ctx.stop)
    finally:
        source.close()
