"""Which days the job builds, and that one failing day does not stop the others."""

from __future__ import annotations

import datetime as dt

from datasetd.build import BuildReport
from datasetd.job import DatasetJob

MIDNIGHT = 1_796_083_200_000_000  # 2026-12-01T00:00:00Z


class Builder:
    def __init__(self, failing: set[dt.date]) -> None:
        self.failing = failing
        self.built: list[dt.date] = []

    def build(self, day: dt.date) -> BuildReport:
        if day in self.failing:
            raise RuntimeError("QuestDB went away")
        self.built.append(day)
        return BuildReport(day, True, 0, series_built=["S"], files=2, rows=10, bytes=100)


def test_a_day_is_due_only_after_its_grace_and_the_recent_days_are_rechecked():
    builder = Builder(set())
    just_after = DatasetJob(builder, lookback_days=3, grace_secs=120,  # type: ignore[arg-type]
                            clock=lambda: MIDNIGHT + 60_000_000)
    assert just_after.due_days() == [dt.date(2026, 11, 27), dt.date(2026, 11, 28),
                                     dt.date(2026, 11, 29)]
    later = DatasetJob(builder, lookback_days=3, grace_secs=120,  # type: ignore[arg-type]
                       clock=lambda: MIDNIGHT + 180_000_000)
    assert later.due_days()[-1] == dt.date(2026, 11, 30)


def test_one_failing_day_is_logged_and_the_others_are_built():
    builder = Builder({dt.date(2026, 11, 29)})
    job = DatasetJob(builder, lookback_days=3, grace_secs=0,  # type: ignore[arg-type]
                     clock=lambda: MIDNIGHT + 1)
    reports = job.run_once()
    assert builder.built == [dt.date(2026, 11, 28), dt.date(2026, 11, 30)]
    assert [r.day for r in reports] == builder.built
