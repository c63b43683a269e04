"""Which partitions the lifecycle job converts, at which age, and which TTLs it sets."""

from __future__ import annotations

import datetime as dt

from datasetd.partitions import (
    Partition,
    PartitionJob,
    last_convertible_day,
    plan,
    ttl_in_days,
)
from ktape.config import RETENTION_TABLES, StorageSettings

MIDNIGHT = 1_796_083_200_000_000  # 2026-12-01T00:00:00Z
GRACE_US = 120_000_000


def day(n: int) -> dt.date:
    return dt.date(2026, 11, n)


def native(table: str, d: dt.date, *, active: bool = False) -> Partition:
    return Partition(table, d, rows=10, bytes=1000, parquet=False, active=active)


NO_TTLS = {table: (0, "HOUR") for table in RETENTION_TABLES}


def test_a_day_is_old_enough_after_its_grace_and_the_configured_whole_days():
    # 2026-12-01 00:01: 11-30 has not closed yet (grace 2 min), so 11-29 is the last
    # closed day and with 2 days of age 11-27 is the newest to convert
    assert last_convertible_day(MIDNIGHT + 60_000_000, grace_us=GRACE_US,
                                after_days=2) == day(27)
    assert last_convertible_day(MIDNIGHT + 180_000_000, grace_us=GRACE_US,
                                after_days=2) == day(28)
    assert last_convertible_day(MIDNIGHT + 180_000_000, grace_us=GRACE_US,
                                after_days=1) == day(29)
    assert last_convertible_day(MIDNIGHT, grace_us=GRACE_US, after_days=0) is None


def test_only_old_native_inactive_partitions_of_the_big_tables_are_converted():
    partitions = [
        native("book_changes", day(20)),
        native("book_changes", day(27)),
        native("book_changes", day(28)),  # too young
        Partition("book_checkpoints", day(20), 5, 300, parquet=True, active=False),  # done
        native("trades", day(25)),
        native("tickers", day(26), active=True),  # the newest partition: never
        native("gaps", day(20)),  # small table: never converted
        native("markets", day(20)),
    ]
    work = plan(partitions, NO_TTLS, StorageSettings(parquet_after_days=2),
                last_convertible=day(27))
    assert [(p.table, p.day) for p in work.conversions] == [
        ("book_changes", day(20)), ("trades", day(25)), ("book_changes", day(27))]
    assert work.ttl_days == {}


def test_conversion_off_converts_nothing():
    work = plan([native("book_changes", day(1))], NO_TTLS, StorageSettings(),
                last_convertible=None)
    assert work.conversions == []


def test_ttl_is_set_where_it_differs_from_the_configuration_and_cleared_by_zero():
    storage = StorageSettings(retention_days={**dict.fromkeys(RETENTION_TABLES, 0),
                                              "trades": 14, "tickers": 30})
    ttls = {**NO_TTLS,
            "trades": (2, "WEEK"),  # QuestDB shows SET TTL 14 DAYS as 2 WEEK: already right
            "tickers": (10, "DAY"),  # configured 30: set
            "gaps": (8, "DAY"),  # configured forever: cleared
            "markets": (3, "DAY")}  # not a retention table: left alone
    del ttls["book_checkpoints"]  # a table not there yet (no migration): left alone
    work = plan([], ttls, storage, last_convertible=None)
    assert work.ttl_days == {"tickers": 30, "gaps": 0}


def test_ttl_units_read_back_in_days():
    assert ttl_in_days(2, "WEEK") == 14
    assert ttl_in_days(48, "HOUR") == 2
    assert ttl_in_days(0, "HOUR") == 0
    assert ttl_in_days(1, "MONTH") is None  # calendar unit: never equal to a day count


def test_a_pass_that_cannot_reach_questdb_is_logged_and_does_not_raise():
    job = PartitionJob("host=127.0.0.1 port=1 user=admin password=quest dbname=qdb "
                       "connect_timeout=2", StorageSettings(parquet_after_days=2))
    report = job.run_once()
    assert report.converted == [] and len(report.failed) == 1
    assert report.failed[0][0] == "*" and "OperationalError" in report.failed[0][2]
