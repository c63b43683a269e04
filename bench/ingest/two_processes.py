"""Does a second ingestd process add throughput on this machine?

Intent: "how fast", issue 5's scale-out question. One ingestd process is one Python
thread, so its rate is bounded by its CPU per row; markets can be split over processes
(docs/ingestd.md), which lifts that bound but not the machine's: every process and
QuestDB share the same cores. This runs pipeline.py's WebSocket stage (`over_websocket`:
an exchange process, `Feed.run`, the writer, the live fan-out followed by a reader) once
with all markets in one process and once split over two worker processes with disjoint
markets, started together against one QuestDB, and reports the messages/s of each.
Saves bench/results/ingest_two_processes.json.

Run: .venv/bin/python bench/ingest/two_processes.py [--messages 300000] [--markets 500]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.ingest.pipeline import (
    HOUR_MS,
    WEBSOCKET_T0,
    ingest_bench_main,
    over_websocket,
    questdb_pid,
)
from bench.query.synthetic import bench_questdb


async def worker(questdb_http: str, pid: int, spill: Path, messages: int, markets: int,
                 prefix: str, t0_ms: int) -> None:
    """One process's share: says `ready`, starts on `go` (stdin), prints its result."""
    loop = asyncio.get_running_loop()
    began: list[float] = []

    async def start() -> None:
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        began.append(time.time())

    rate, cpu = await over_websocket(questdb_http, pid, spill, messages, markets,
                                     prefix=prefix, t0_ms=t0_ms, start=start)
    rows = 1 + markets + messages
    print("result " + json.dumps({"rate": rate, "cpu": cpu, "began": began[0],
                                  "ended": began[0] + rows / rate}), flush=True)


async def split_run(questdb_http: str, pid: int, root: Path, messages: int, markets: int,
                    t0_ms: int) -> dict:
    """Two worker processes with half the markets and messages each, started together."""
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--worker", questdb_http, str(pid), str(root / f"w{i}.spill"),
        str(messages // 2), str(markets // 2), f"KXTWO{i}", str(t0_ms),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE) for i in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            while (await proc.stdout.readline()).strip() != b"ready":
                pass
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        results = []
        for proc in procs:  # log lines may come first
            assert proc.stdout is not None
            line = b""
            while not line.startswith(b"result "):
                line = await proc.stdout.readline()
                assert line, "worker ended without a result"
            results.append(json.loads(line[len(b"result "):]))
        # from the first start to the last commit, as each worker measured it (its CPU
        # accounting afterwards waits for QuestDB to go idle, which is not ingest time)
        elapsed = max(r["ended"] for r in results) - min(r["began"] for r in results)
        total = 2 * (1 + markets // 2 + messages // 2)
        return {"msgs_per_sec": round(total / elapsed),
                "per_process_msgs_per_sec": [round(r["rate"]) for r in results],
                "cpu_us_per_row": [r["cpu"] for r in results]}
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()


async def run(messages: int, markets: int) -> dict:
    with bench_questdb("ktape-bench-two-", []) as (qdb, _conn, root):
        pid = questdb_pid(qdb)
        one_rate, one_cpu = await over_websocket(str(qdb.http), pid, root / "one.spill",
                                                 messages, markets, prefix="KXONE",
                                                 t0_ms=WEBSOCKET_T0)
        two = await split_run(str(qdb.http), pid, root, messages, markets,
                              WEBSOCKET_T0 + HOUR_MS)
    return {"messages": messages, "markets": markets,
            "one_process_msgs_per_sec": round(one_rate), "one_process_cpu_us_per_row": one_cpu,
            "two_processes": two}


def main() -> int:
    if sys.argv[1:2] == ["--worker"]:
        http, pid, spill, messages, markets, prefix, t0_ms = sys.argv[2:9]
        asyncio.run(worker(http, int(pid), Path(spill), int(messages), int(markets), prefix,
                           int(t0_ms)))
        return 0
    return ingest_bench_main("ingest_two_processes", __doc__, run)

if __name__ == "__main__":
    sys.exit(main())
