"""How long does a day's audit report take, per sample?

Intent ("how fast"): GetAuditReport and ListIncidents (which checks the same samples) over
one UTC day of synthetic history (bench/query/synthetic.py: 20 markets, 1M changes, a
checkpoint every 200 changes) with `--samples` REST books spread over the day, through an
in-process queryd over loopback gRPC: the first report (every sample checked) and later
ones (settled verdicts kept in queryd's memory), and ListIncidents. The synthetic books
are not consistent, so every sample disagrees: the slow path (the closest instant is
rebuilt for each). Numbers belong to one machine, shared with other work when they were
taken (see the saved JSON). Saves bench/results/query_audit.json.

Run: .venv/bin/python bench/query/audit.py [--changes 1000000] [--samples 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import percentiles, save
from bench.query.synthetic import (
    LEVELS,
    START,
    START_US,
    bench_questdb,
    generate,
    insert_bench_markets,
    queryd_channel,
    queryd_env,
)

DAY_US = 86_400 * 1_000_000


async def run(env: dict, rounds: int) -> dict:
    from google.protobuf import timestamp_pb2

    from ktape.marketdata.v1 import analytics_pb2 as apb
    from ktape.marketdata.v1 import analytics_pb2_grpc as agrpc
    from ktape.marketdata.v1 import data_status_pb2 as dpb
    from ktape.marketdata.v1 import data_status_pb2_grpc as dgrpc

    start = timestamp_pb2.Timestamp()
    start.FromDatetime(START)
    end = timestamp_pb2.Timestamp(seconds=start.seconds + 86_400)
    out: dict = {}
    async with queryd_channel(env) as channel:
        an, ds = agrpc.AnalyticsServiceStub(channel), dgrpc.DataStatusServiceStub(channel)
        report_ms, incidents_ms = [], []
        for _ in range(rounds):
            began = time.perf_counter()
            report = await an.GetAuditReport(apb.GetAuditReportRequest(
                date=START.date().isoformat()), timeout=600)
            mid = time.perf_counter()
            found = await ds.ListIncidents(dpb.ListIncidentsRequest(
                start_time=start, end_time=end), timeout=600)
            report_ms.append((mid - began) * 1000)
            incidents_ms.append((time.perf_counter() - mid) * 1000)
        samples = sum(s.samples for s in report.series)
        out["samples"] = samples
        out["disagreements"] = len(report.disagreements)
        out["audit_incidents"] = sum(1 for i in found.incidents if i.reason == "audit_mismatch")
        # the first report checks every sample; later calls find them settled and kept
        out["get_audit_report_cold_ms"] = round(report_ms[0], 1)
        out["report_cold_ms_per_sample"] = round(report_ms[0] / max(1, samples), 3)
        out["get_audit_report_warm"] = percentiles(report_ms[1:])
        out["list_incidents_warm"] = percentiles(incidents_ms)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with bench_questdb("ktape-bench-audit-", []) as (qdb, conn, root):
        info = generate(conn, changes=args.changes, markets=args.markets, span_days=1,
                        checkpoint_every=200)
        step = DAY_US // (args.samples + 1)
        conn.execute(f"""INSERT INTO audit_books
            SELECT timestamp_sequence({START_US + step}, {step}) AS ts,
                   cast(concat('KXBENCH-', x % {args.markets}) AS SYMBOL) AS ticker,
                   timestamp_sequence({START_US + step + 50_000}, {step}) AS response_ts,
                   1000L AS allowance_ms, '{LEVELS}' AS yes_levels, '' AS no_levels
            FROM long_sequence({args.samples})""")
        insert_bench_markets(conn, args.markets)
        from ktape.schema.wal import wait_for_wal

        wait_for_wal(conn, ["audit_books", "markets"])
        result = asyncio.run(run(queryd_env(qdb, root), args.rounds))
    result.update(changes=info["changes"], checkpoints=info["checkpoints"],
                  markets=args.markets, note="machine shared with ~6 people working at once")
    print(result)
    save("query_audit", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
