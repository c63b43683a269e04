"""Ingest lag against a live feed: exchange time -> committed in QuestDB, p50/p99.

Intent: "how fast", the issue's p99 < 1 s. Starts `ktape sim` as its own process (a feed
at `--rate` events/s over `--markets` markets) and a private QuestDB, records with the
real Ingestd in this process for `--secs`, and reads ingestd's own lag histogram
(`ingestd_ingest_lag_seconds`, observed once per committed batch for its oldest row).
Percentiles are bucket upper bounds. With a `--rate` above what the simulator can send
(~60,000 messages/s, docs/performance.md) it also gives the sustained rate against the
simulator (`rows_per_sec`, every table's rows, snapshots included); the simulator is then
the limit, which is why bench/ingest/pipeline.py measures ingestd's own ceiling with a
replayed feed. Saves bench/results/ingest_live_lag.json.

Run: .venv/bin/python bench/ingest/live_lag.py [--rate 5000] [--secs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import save
from ingestd import metrics
from ingestd.app import Ingestd
from ingestd.config import IngestSettings
from ktape.config import HostPort, load_settings
from ktape.runtime.ports import free_port
from ktape.runtime.questdb import QuestDBProcess


def histogram_percentiles(histogram, quantiles=(0.5, 0.9, 0.99)) -> dict[str, float | str]:
    samples = histogram.collect()[0].samples
    buckets = [(float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")]
    total = buckets[-1][1] if buckets else 0
    out: dict[str, float | str] = {"batches": total}
    for q in quantiles:
        bound = next((le for le, count in buckets if total and count >= q * total), "n/a")
        out[f"p{int(q * 100)}_secs_at_most"] = bound
    return out


async def record(settings, secs: float) -> dict:
    recorder = Ingestd(settings, IngestSettings())
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    await asyncio.sleep(secs)
    stop.set()
    await asyncio.wait_for(task, 60)
    return {"rows_committed": recorder.writer.committed_rows,
            "rows_per_sec": round(recorder.writer.committed_rows / secs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--markets", type=int, default=500)
    parser.add_argument("--secs", type=float, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ktape-bench-lag-"))
    sim = subprocess.Popen([sys.executable, "-m", "ktape", "sim", "--port", "0", "--markets",
                            str(args.markets), "--rate", str(args.rate)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert sim.stdout is not None
        port = json.loads(next(line for line in sim.stdout if '"sim.ready"' in line))["port"]
        with QuestDBProcess(root / "qdb", HostPort("127.0.0.1", free_port()),
                            HostPort("127.0.0.1", free_port()), heap_mb=2048) as qdb:
            import psycopg

            from ktape.schema import apply_migrations

            with psycopg.connect(f"host=127.0.0.1 port={qdb.pg.port} user=admin "
                                 "password=quest dbname=qdb", autocommit=True) as conn:
                apply_migrations(conn)
            settings = load_settings({
                "KTAPE_QUESTDB_HTTP": str(qdb.http), "KTAPE_QUESTDB_PG": str(qdb.pg),
                "KTAPE_DATA_DIR": str(root / "data"),
                "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{port}/trade-api/ws/v2",
                "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{port}/trade-api/v2"})
            result = asyncio.run(record(settings, args.secs))
    finally:
        sim.terminate()
        sim.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    save("ingest_live_lag", {"rate": args.rate, "markets": args.markets, "secs": args.secs,
                             **result, **histogram_percentiles(metrics.LAG_SECONDS)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
