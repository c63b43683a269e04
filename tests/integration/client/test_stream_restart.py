"""A stream survives queryd restarts mid-stream (issue 17 item 7): the client, from its
clean venv, follows a market live while queryd is killed (SIGKILL: the connection just
drops) and later stopped (SIGTERM: the stream ends UNAVAILABLE) and restarted on the same
port; what it received must be exactly the stored changes, none lost, none repeated.

queryd here is the test's own (the edge's env, its own port), so killing it leaves the
session's edge alone; the client talks gRPC to it directly, or through an Envoy of the
test's own (as a client of `ktape up --queryd-replicas N` does). Through Envoy a killed
queryd's stream ends with an HTTP/2 RST_STREAM (gRPC INTERNAL), which the client must
take for a cut connection too."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from ktape.envoy import envoy_binary, render_envoy_config
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.runtime.pins import REPO_ROOT
from ktape.runtime.ports import free_port
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig
from tests.fixtures.recording import recorded_simulator


class OwnQueryd:
    """`python -m queryd` with the edge's environment on a port of its own, restartable
    on that port (KTAPE_QUERYD_ADDR takes no port 0, so a free one is picked; the log's
    server.started line confirms the port it bound)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = {**env, "KTAPE_QUERYD_METRICS_ADDR": f"127.0.0.1:{free_port()}"}
        self.log_dir = log_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"queryd-{self.starts}.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "queryd"], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self.env, "KTAPE_QUERYD_ADDR": f"127.0.0.1:{self.port}"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()[-3000:]
            for line in log.read_text().splitlines():
                if '"server.started"' in line:
                    assert json.loads(line)["port"] == self.port
                    return
            time.sleep(0.1)
        raise TimeoutError(f"queryd did not start: {log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _lines(stream: asyncio.StreamReader, out: list[dict], until: int, secs: float) -> None:
    """Read JSON lines into `out` until it holds `until` of them (or `secs` pass)."""
    try:
        async with asyncio.timeout(secs):
            while len(out) < until:
                line = await stream.readline()
                if not line:
                    return
                out.append(json.loads(line))
    except TimeoutError:
        pass


def _stored(addr: str, key: str, ticker: str, start: dt.datetime, end: dt.datetime) -> list:
    """Every stored change in (start, end), by the raw stubs through the edge."""
    begin, finish = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    begin.FromDatetime(start)
    finish.FromDatetime(end)
    rows, token = [], ""
    with grpc.insecure_channel(addr) as channel:
        stub = pb_grpc.MarketDataServiceStub(channel)
        while True:
            page = stub.ListOrderbookDeltas(pb.ListOrderbookDeltasRequest(
                ticker=ticker, start_time=begin, end_time=finish, page_size=1000,
                page_token=token), metadata=(("authorization", f"Bearer {key}"),), timeout=30)
            rows += [d for d in page.deltas if d.kind != pb.DELTA_KIND_GAP
                     and d.ts.ToDatetime(dt.UTC) > start]
            token = page.next_page_token
            if not token:
                return rows


@contextlib.contextmanager
def own_envoy(edge, queryd: OwnQueryd, work: Path) -> Iterator[str]:
    """An Envoy in front of `queryd` (and the edge's billingd); yields its address."""
    port = free_port()
    config = work / "envoy.yaml"
    config.write_text(render_envoy_config(
        http_port=port, admin_port=free_port(), queryd_addr=f"127.0.0.1:{queryd.port}",
        billingd_addr=edge.billingd_addr, descriptor_path=REPO_ROOT / "build" / "api.pb",
        access_log_path=str(work / "access.log")))
    proc = subprocess.Popen([str(envoy_binary()), "-c", str(config), "--disable-hot-restart",
                             "--log-level", "error"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("via_envoy", [False, True], ids=["direct", "via_envoy"])
async def test_stream_survives_queryd_restarts(client_python, client_env, edge, questdb,
                                               tmp_path, via_envoy):
    queryd = OwnQueryd(edge.env, tmp_path)
    edge_of_test = own_envoy(edge, queryd, tmp_path) if via_envoy else contextlib.nullcontext(
        f"127.0.0.1:{queryd.port}")
    config = SimConfig(markets=3, rate=300, seed=71)
    received: list[dict] = []
    try:
        async with recorded_simulator(questdb, tmp_path, config) as (recorder, sim), \
                contextlib.AsyncExitStack() as stack:
            target = stack.enter_context(edge_of_test)
            sim.model.lifecycle_rate = 0  # the market stays open throughout
            await asyncio.sleep(3)
            ticker = max(recorder.feed.books, key=lambda t: recorder.feed.books[t].last_seq)
            await asyncio.to_thread(queryd.start)
            now = dt.datetime.now(dt.UTC)
            start, stop_at = now - dt.timedelta(seconds=2), now + dt.timedelta(seconds=16)
            proc = await asyncio.create_subprocess_exec(
                str(client_python), str(Path(__file__).with_name("stream_checks.py")),
                target, ticker, start.isoformat(), stop_at.isoformat(),
                cwd="/", env=client_env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            assert proc.stdout is not None
            try:
                await _lines(proc.stdout, received, 100, 30)
                queryd.stop(signal.SIGKILL)  # mid-stream, no goodbye
                killed_at = len(received)
                await asyncio.sleep(1.0)
                await asyncio.to_thread(queryd.start)
                await _lines(proc.stdout, received, killed_at + 100, 30)
                queryd.stop(signal.SIGTERM)  # the stream ends UNAVAILABLE
                stopped_at = len(received)
                await asyncio.to_thread(queryd.start)
                await _lines(proc.stdout, received, 10**9, 60)
                _, err = await asyncio.wait_for(proc.communicate(), 30)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await asyncio.sleep(max(0.0, (stop_at - dt.datetime.now(dt.UTC)).total_seconds()))
    finally:
        await asyncio.to_thread(queryd.stop)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert received[-1] == {"done": True} and "book" in received[0]
    changes = [r for r in received[1:-1] if r.get("kind") != "gap"]
    assert killed_at < stopped_at < len(received) - 1  # items came between and after
    assert queryd.starts == 3
    with questdb.connect() as conn:
        wait_for_wal(conn)
    stored = await asyncio.to_thread(_stored, edge.grpc_addr, edge.api_key, ticker, start, stop_at)
    want = [(d.ts.ToDatetime(dt.UTC).isoformat(), d.sid, d.seq,
             pb.DeltaKind.Name(d.kind).removeprefix("DELTA_KIND_").lower(),
             pb.Side.Name(d.side).removeprefix("SIDE_").lower(), d.price, d.quantity)
            for d in stored]
    got = [(c["ts"], c["sid"], c["seq"], c["kind"], c["side"], c["price"], c["quantity"])
           for c in changes]
    assert len(got) == len(set(got)), "a change was given twice"
    assert got == want, (len(got), len(want), sorted(set(want) - set(got))[:5],
                         sorted(set(got) - set(want))[:5])
    assert len(want) > killed_at + 150
