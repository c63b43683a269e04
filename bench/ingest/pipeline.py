"""How fast can one ingestd process turn Kalshi frames into committed QuestDB rows?

Intent: "how fast", four stages on one private QuestDB:
1. `raw_ilp_rows_per_sec` — the ceiling: prebuilt book_changes ILP batches POSTed as fast
   as QuestDB takes them (no parsing, no book). `ilp_client_rows_per_sec` — the same rows
   written through the ILP client in the timed loop (row building + sending): what a
   client that already has the values, and no Kalshi frames to parse, achieves.
2. `handle_msgs_per_sec` — ingestd's CPU cost alone: JSON frames through `KalshiFeed.handle`
   (parse, exact normalisation, sequence check, book update, ILP row), no network.
3. `end_to_end_msgs_per_sec` — frames through `KalshiFeed.handle` with the real writer flushing
   to QuestDB (what a feed at full speed would see), and the ratio to the ceiling.
4. `over_websocket_msgs_per_sec` — ingestd as it runs: `KalshiFeed.run` reading the frames over
   a loopback WebSocket from an exchange in its own process (replay_exchange.py), the
   writer on its timer, and the live fan-out followed by one reader in another process
   (as queryd follows it), until every row is committed.
Stages 1, 3 and 4 also record the CPU each side spent per row (`cpu_us_per_row`: this
process, QuestDB): on a machine where both share the cores, end to end / ceiling cannot
exceed QuestDB's share of the CPU per row.
Saves bench/results/ingest_pipeline.json.

Run: .venv/bin/python bench/ingest/pipeline.py [--messages 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import cpu_secs, save
from bench.query.synthetic import bench_questdb
from ingestd.http import start_http
from ingestd.kalshi.feed import KalshiFeed
from ingestd.live import LiveFanout
from ingestd.sink import RowSink
from ingestd.spill import SpillFile
from ingestd.writer import IlpWriter, TimestampMicros
from ktape.config import MarketFilter
from ktape.runtime.ports import free_port
from ktape.runtime.questdb import QuestDBProcess

T0_MS = 1_790_000_000_000
# Each stage that writes gets its own hour, later than the stage before: a feed's rows
# arrive in time order, so a stage must not land among an earlier stage's timestamps
# (QuestDB would merge out of order, a cost ingest never pays).
HOUR_MS = 3_600_000
RAW_T0, CLIENT_T0, END_TO_END_T0, WEBSOCKET_T0 = (T0_MS + k * HOUR_MS for k in range(4))


def frames(messages: int, markets: int, seed: int = 1, prefix: str = "KXBENCH",
           t0_ms: int = END_TO_END_T0) -> list[bytes]:
    rng = random.Random(seed)
    out = [orjson.dumps({"type": "subscribed", "id": 1,
                         "msg": {"channel": "orderbook_delta", "sid": 1}})]
    books: dict[str, dict[tuple[str, int], int]] = {}
    seq = 0
    for m in range(markets):
        seq += 1
        ticker = f"{prefix}-{m}"
        books[ticker] = {("yes", 4000): 10_000, ("no", 5000): 10_000}
        out.append(orjson.dumps({"type": "orderbook_snapshot", "sid": 1, "seq": seq, "msg": {
            "market_ticker": ticker, "market_id": "x", "yes_dollars_fp": [["0.4000", "100.00"]],
            "no_dollars_fp": [["0.5000", "100.00"]]}, "sending_ts_ms": t0_ms}))
    for i in range(messages):
        seq += 1
        ticker = f"{prefix}-{rng.randrange(markets)}"
        side = rng.choice(("yes", "no"))
        price = (rng.randrange(10, 40) if side == "yes" else rng.randrange(50, 90)) * 100
        current = books[ticker].get((side, price), 0)
        delta = -rng.randrange(1, current + 1) if current and rng.random() < 0.4 else \
            rng.randrange(1, 50_000)
        books[ticker][(side, price)] = current + delta
        out.append(orjson.dumps({"type": "orderbook_delta", "sid": 1, "seq": seq, "msg": {
            "market_ticker": ticker, "market_id": "x", "price_dollars": f"0.{price:04d}",
            "delta_fp": f"{'-' if delta < 0 else ''}{abs(delta) // 100}.{abs(delta) % 100:02d}",
            "side": side, "ts_ms": t0_ms + i // 10}}))
    return out


def ilp_batches(writer: IlpWriter, messages: int, markets: int, prefix: str, sid: int,
                t0_ms: int) -> Iterator[bytes]:
    """`messages` book_changes rows as ILP batches of 20,000, built lazily (so a caller
    that sends while iterating times the row building too)."""
    for start in range(0, messages, 20_000):
        for i in range(start, min(messages, start + 20_000)):
            writer.row("book_changes", symbols={"ticker": f"{prefix}-{i % markets}",
                                                "side": "yes", "kind": "delta",
                                                "ts_source": "exchange"},
                       columns={"price_e4": 4000, "qty_after_e2": i, "delta_e2": 1,
                                "seq": i, "sid": sid, "recv_ts": TimestampMicros(i)},
                       at_us=(t0_ms + i // 10) * 1000)
        yield bytes(writer.buffer)
        writer._reset()


async def run(messages: int, markets: int) -> dict:
    with bench_questdb("ktape-bench-ingest-", []) as (qdb, _conn, root):
        data = frames(messages, markets)

        # 2. handle only (writer buffer is discarded, never sent)
        sink = IlpWriter(f"127.0.0.1:{free_port()}", SpillFile(root / "a.spill", 1 << 34),
                         flush_rows=10**12)
        feed = KalshiFeed("ws://x/trade-api/ws/v2", RowSink(sink), MarketFilter(all=True))
        began = time.perf_counter()
        for i, frame in enumerate(data):
            feed.handle(frame, END_TO_END_T0 * 1000 + i)
            if i % 50_000 == 0:
                sink._reset()
        handle_rate = len(data) / (time.perf_counter() - began)

        # 1. raw ILP ceiling: the same number of book_changes rows, prebuilt
        raw = IlpWriter(str(qdb.http), SpillFile(root / "b.spill", 1 << 34))
        batches = list(ilp_batches(raw, messages, markets, "KXRAW", sid=2, t0_ms=RAW_T0))
        cpu = CpuSplit(questdb_pid(qdb), messages)
        began = time.perf_counter()
        for payload in batches:
            assert await raw._send(payload)
        raw_rate = messages / (time.perf_counter() - began)
        raw_cpu = await cpu.settled()

        # 1b. the ILP client writing the same rows: row building + sending, timed
        began = time.perf_counter()
        for payload in ilp_batches(raw, messages, markets, "KXRAW2", sid=3,
                                      t0_ms=CLIENT_T0):
            assert await raw._send(payload)
        client_rate = messages / (time.perf_counter() - began)
        await raw.client.aclose()

        # 3. end to end with the real writer
        writer = IlpWriter(str(qdb.http), SpillFile(root / "c.spill", 1 << 34),
                           flush_rows=20_000)
        feed = KalshiFeed("ws://x/trade-api/ws/v2", RowSink(writer), MarketFilter(all=True))
        cpu = CpuSplit(questdb_pid(qdb), len(data))
        began = time.perf_counter()
        for i, frame in enumerate(data):
            feed.handle(frame, END_TO_END_T0 * 1000 + i)
            if writer.wants_flush:  # as KalshiFeed.run does
                writer.kick()
                await writer.backpressure()
            if i % 500 == 0:
                await asyncio.sleep(0)  # the socket read would yield here
        await writer.close()
        e2e_rate = len(data) / (time.perf_counter() - began)
        e2e_cpu = await cpu.settled()
        assert writer.spill.size == 0

        # 4. ingestd as it runs, over a WebSocket, fan-out followed
        ws_rate, ws_cpu = await over_websocket(str(qdb.http), questdb_pid(qdb),
                                               root / "d.spill", messages, markets)
    return {"messages": len(data), "markets": markets,
            "raw_ilp_rows_per_sec": round(raw_rate),
            "ilp_client_rows_per_sec": round(client_rate),
            "handle_msgs_per_sec": round(handle_rate),
            "end_to_end_msgs_per_sec": round(e2e_rate),
            "end_to_end_vs_raw_ilp": round(e2e_rate / raw_rate, 3),
            "end_to_end_vs_ilp_client": round(e2e_rate / client_rate, 3),
            "over_websocket_msgs_per_sec": round(ws_rate),
            "over_websocket_vs_raw_ilp": round(ws_rate / raw_rate, 3),
            "over_websocket_vs_ilp_client": round(ws_rate / client_rate, 3),
            "cpu_us_per_row": {"raw_ilp": raw_cpu, "end_to_end": e2e_cpu,
                               "over_websocket": ws_cpu}}


class CpuSplit:
    """CPU per row of this process, of QuestDB and of any `others` (pids by name) over one
    stage. QuestDB goes on applying WAL after the last HTTP answer, so its count waits
    until it is idle."""

    def __init__(self, questdb_pid: int, rows: int, others: dict[str, int] | None = None
                 ) -> None:
        self.pid, self.rows = questdb_pid, rows
        self.others = others or {}
        self.ours, self.questdb = cpu_secs(), cpu_secs(self.pid)
        self.others_start = {name: cpu_secs(pid) for name, pid in self.others.items()}

    async def settled(self) -> dict[str, float]:
        ours = cpu_secs() - self.ours
        last = cpu_secs(self.pid)
        while True:
            await asyncio.sleep(0.5)
            now = cpu_secs(self.pid)
            if now - last < 0.05:  # under 10% of a core: done with our rows
                break
            last = now
        split = {"ingest": ours, "questdb": last - self.questdb,
                 **{name: cpu_secs(pid) - self.others_start[name]
                    for name, pid in self.others.items()}}
        return {name: round(secs / self.rows * 1e6, 2) for name, secs in split.items()}


# Reads `GET /live` to the end, as queryd's follower does (but without using what it reads).
DRAIN = """
import socket, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.sendall(b"GET /live HTTP/1.1\\r\\nHost: bench\\r\\n\\r\\n")
while sock.recv(1 << 20):
    pass
"""


def questdb_pid(qdb: QuestDBProcess) -> int:
    assert qdb.proc is not None
    return qdb.proc.pid


async def over_websocket(questdb_http: str, questdb_pid: int, spill: Path, messages: int,
                         markets: int, *, prefix: str = "KXWS", t0_ms: int = WEBSOCKET_T0,
                         start: Callable[[], Awaitable[None]] | None = None
                         ) -> tuple[float, dict[str, float]]:
    """Stage 4 (also run by bench/ingest/two_processes.py, one per process, each with its
    own markets): msgs/s and CPU per row. `start`, when given, is awaited once everything
    is connected, just before the clock starts."""
    exchange_port, live_port = free_port(), free_port()
    exchange = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("replay_exchange.py")), str(exchange_port),
        str(messages), str(markets), prefix, str(t0_ms), stdout=asyncio.subprocess.PIPE)
    follower: asyncio.subprocess.Process | None = None
    try:
        assert exchange.stdout is not None
        assert (await exchange.stdout.readline()).strip() == b"ready"
        writer = IlpWriter(questdb_http, SpillFile(spill, 1 << 34), flush_rows=20_000)
        live = LiveFanout()
        http = await start_http(SimpleNamespace(live=live, health=lambda: (True, {})),
                                "127.0.0.1", live_port)
        follower = await asyncio.create_subprocess_exec(sys.executable, "-c", DRAIN,
                                                        str(live_port))
        while live.followers < 1:
            await asyncio.sleep(0.01)
        feed = KalshiFeed(f"ws://127.0.0.1:{exchange_port}/trade-api/ws/v2",
                          RowSink(writer, live), MarketFilter(all=True))
        feed.markets.add([{"ticker": f"{prefix}-{m}", "series_ticker": prefix}
                          for m in range(markets)])
        if start is not None:
            await start()
        cpu = CpuSplit(questdb_pid, 1 + markets + messages,
                       {"exchange": exchange.pid, "fanout_reader": follower.pid})
        last_seq = markets + messages
        stop = asyncio.Event()
        began = time.perf_counter()
        tasks = [asyncio.create_task(feed.run(stop)), asyncio.create_task(writer.run(stop))]
        while feed.subscriptions.sequencer.last_seq(1) != last_seq:
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.gather(*tasks)
        await writer.close()
        elapsed = time.perf_counter() - began
        split = await cpu.settled()
        assert writer.spill.size == 0 and live.dropped_followers == 0
        follower.terminate()
        await follower.wait()
        while live.followers:  # its serving task ends at the follower's EOF
            await asyncio.sleep(0.01)
        await http.cleanup()
        return (1 + markets + messages) / elapsed, split
    finally:
        for proc in (follower, exchange):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                await proc.wait()


def ingest_bench_main(name: str, doc: str | None,
                      run_bench: Callable[[int, int], Awaitable[dict]]) -> int:
    """The ingest benches' command line: `--messages`, `--markets`, result saved."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--markets", type=int, default=500)
    args = parser.parse_args()
    save(name, asyncio.run(run_bench(args.messages, args.markets)))
    return 0


def main() -> int:
    return ingest_bench_main("ingest_pipeline", __doc__, run)

if __name__ == "__main__":
    sys.exit(main())
