"""`ktape datasets build --date D|today|yesterday [--force]`: build one day's files now.

The supervised job (datasetd/job.py) builds each day after it closes; this is the same
build on demand, with a progress bar, for an operator or for today's files so far (they
are PENDING until the day closes, and rebuilt then).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence

from tqdm import tqdm

from datasetd.build import DayBuilder
from datasetd.source import QuestSource
from ktape.datasets.storage import open_storage
from ktape.entrypoint import settings_or_report
from ktape.log import configure_logging


def parse_day(text: str) -> dt.date:
    today = dt.datetime.now(dt.UTC).date()
    if text == "today":
        return today
    if text == "yesterday":
        return today - dt.timedelta(days=1)
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not YYYY-MM-DD, today or yesterday") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktape datasets", description="Daily dataset files.")
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="build (or bring up to date) one UTC day's files")
    build.add_argument("--date", type=parse_day, required=True,
                       help="YYYY-MM-DD, today or yesterday (UTC)")
    build.add_argument("--force", action="store_true",
                       help="rebuild every file, even those whose rows did not change")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_or_report("ktape datasets")
    if settings is None:
        return 2
    # the progress bar says how far it is; log lines only for warnings unless asked
    configure_logging(component="datasets", level=os.environ.get("KTAPE_LOG_LEVEL", "WARNING"))
    storage = open_storage(settings)
    source = QuestSource(settings.questdb_http, settings.questdb_pg_conninfo,
                         storage.scratch_dir())
    bar = tqdm(total=0, unit="series", desc=f"datasets {args.date}", file=sys.stderr)

    def progress(series: str, done: int, total: int) -> None:
        bar.total = total
        bar.set_postfix_str(series)
        bar.update(done - bar.n)

    try:
        report = DayBuilder(source, storage).build(args.date, force=args.force, progress=progress)
    finally:
        bar.close()
        source.close()
    state = "closed" if report.closed else "PENDING (day not closed)"
    print(f"{args.date}: {len(report.series_built)} series built, "
          f"{len(report.series_fresh)} already up to date; {report.files} files, "
          f"{report.rows} rows, {report.bytes} bytes; {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
