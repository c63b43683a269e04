"""`ktape up --queryd-replicas 2 --ingest-shards 2 --simulator` end to end: `ktape status`
lists every replica and shard with its pid; a client hammering unary GETs through Envoy
while one queryd replica is killed (SIGKILL, by the pid the supervisor reports) sees no
failed call (Envoy retries it on the other replica); the streams the killed replica
served end with UNAVAILABLE (so a client resumes with start_time) while the others go
on; the supervisor restarts the replica.

What "ends" means through Envoy: a replica killed mid-stream leaves Envoy nothing to end
the stream with but an HTTP/2 RST_STREAM (the upstream connection is gone after the
response started; Envoy cannot send trailers then), which gRPC reports as INTERNAL
"Received RST_STREAM". The ktape client resumes on it (ktape_client.aio._stream_cut);
here a fresh stream from the last change received shows the resume works.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest

from billingd.store import BillingStore
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from tests.fixtures.stack import stack_env

pytestmark = pytest.mark.integration

# Least-request picks the less busy of two random replicas (both picks may be the same
# one): with 8 streams opened in turn, all 8 on one replica has odds of about 1 in 16,000.
STREAMS = 8


def _status(env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "ktape", "status", "--json"], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    return json.loads(proc.stdout)


def _api_key(data_dir: Path) -> str:
    """A prod key of a pro account with ample credits, straight into the billing store."""
    store = BillingStore.from_dsn(f"sqlite:///{(data_dir / 'billing.sqlite3').resolve()}")
    try:
        account = store.create_account("replica-tests", plan="pro")
        store.append(account.account_id, 10_000_000, kind="grant", reason="replica test",
                     idempotency_key="replica-tests")
        return store.create_key(account.account_id, env="prod", name="replicas").full
    finally:
        store.close()


async def _hammer(base: str, auth: dict[str, str], ticker: str, stop: asyncio.Event,
                  statuses: list[tuple[int, str]]) -> None:
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    paths = ["/v1/markets?page_size=5", f"/v1/markets/{ticker}/orderbook",
             f"/v1/markets/{ticker}/deltas?page_size=20&start_time={since}",
             f"/v1/markets/{ticker}"]
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as client:
        i = 0
        while not stop.is_set():
            path = paths[i % len(paths)]
            i += 1
            try:
                resp = await client.get(path)
                statuses.append((resp.status_code, path if resp.status_code == 200
                                 else f"{path}: {resp.text[:200]}"))
            except httpx.HTTPError as exc:
                statuses.append((0, f"{path}: {exc!r}"))
            await asyncio.sleep(0.02)


async def _follow(stub, ticker: str, metadata, outcome: dict, start=None) -> None:
    outcome["messages"] = 0
    try:
        async for message in stub.StreamOrderbook(
                pb.StreamOrderbookRequest(ticker=ticker, start_time=start), metadata=metadata):
            outcome["messages"] += 1
            outcome["last_at"] = time.monotonic()
            if message.HasField("delta") and message.delta.kind != pb.DELTA_KIND_GAP:
                outcome["last_change"] = message.delta.ts
            if message.HasField("end"):
                outcome["end"] = message.end.code
                return
    except grpc.aio.AioRpcError as exc:
        outcome["code"] = exc.code()
        outcome["details"] = exc.details()
        outcome["ended_at"] = time.monotonic()


@pytest.mark.timeout(300)
async def test_a_killed_replica_loses_no_retried_call_and_ends_its_streams(tmp_path):
    data_dir = tmp_path / "data"
    env = stack_env(data_dir, instances=2)
    data_dir.mkdir(parents=True)
    api_key = _api_key(data_dir)
    auth = {"Authorization": f"Bearer {api_key}"}
    base = f"http://127.0.0.1:{env['KTAPE_HTTP_PORT']}"
    log_path = tmp_path / "stack.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ktape", "up", "--simulator", "--sim-markets", "12",
             "--sim-rate", "100", "--queryd-replicas", "2", "--ingest-shards", "2"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        report: dict = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()[-4000:]
            report = await asyncio.to_thread(_status, env)
            if all(c["healthy"] for c in report["components"]):
                break
            await asyncio.sleep(1)
        else:
            pytest.fail(f"stack not healthy: {report}\n{log_path.read_text()[-4000:]}")
        by_name = {c["name"]: c for c in report["components"]}
        assert {"queryd-0", "queryd-1", "ingestd-0", "ingestd-1"} <= set(by_name)
        assert report["scale"] == {"queryd_replicas": 2, "ingest_shards": 2}
        victim = by_name["queryd-1"]["pid"]
        assert victim and by_name["queryd-0"]["pid"] and victim != by_name["queryd-0"]["pid"]
        shards = [by_name[f"ingestd-{i}"]["data"] for i in range(2)]
        assert [s["shard"] for s in shards] == [0, 1] and all(s["markets_wanted"] for s in shards)

        async with httpx.AsyncClient(headers=auth, timeout=10) as client:
            markets = await client.get(f"{base}/v1/markets?page_size=50")
        assert markets.status_code == 200, markets.text
        ticker = markets.json()["markets"][0]["ticker"]

        channel = grpc.aio.insecure_channel(f"127.0.0.1:{env['KTAPE_HTTP_PORT']}")
        stub = pb_grpc.MarketDataServiceStub(channel)
        metadata = (("authorization", f"Bearer {api_key}"),)
        outcomes: list[dict] = [{} for _ in range(STREAMS)]
        followers = []
        for outcome in outcomes:  # one at a time: least-request sees the ones already open
            followers.append(asyncio.create_task(_follow(stub, ticker, metadata, outcome)))
            async with asyncio.timeout(30):
                while not outcome.get("messages"):
                    await asyncio.sleep(0.05)
        stop = asyncio.Event()
        statuses: list[tuple[int, str]] = []
        hammers = [asyncio.create_task(_hammer(base, auth, ticker, stop, statuses))
                   for _ in range(4)]
        async with asyncio.timeout(30):  # every stream open and flowing
            while not all(o.get("last_change") for o in outcomes):
                await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        before = len(statuses)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        await asyncio.sleep(8)
        stop.set()
        await asyncio.gather(*hammers)

        failed = [s for s in statuses if s[0] != 200]
        assert not failed, failed[:5]
        assert len(statuses) - before > 50  # calls kept being served after the kill
        async with httpx.AsyncClient(timeout=10) as client:
            stats = (await client.get(
                f"http://127.0.0.1:{env['KTAPE_ENVOY_ADMIN_PORT']}/stats?filter=^cluster\\."
                "queryd\\.(upstream_rq_retry|upstream_cx_connect_fail|health_check\\.failure|"
                "outlier_detection\\.ejections_enforced_total)$")).text
        noticed = {line.split(":")[0]: int(line.split(":")[1]) for line in stats.splitlines()
                   if ":" in line}
        # Envoy saw the dead replica: calls sent to it were retried, or its health check
        # failed or it was ejected before one was (which of these comes first is timing:
        # a CI run saw no retry at all, the health check having been faster).
        assert any(noticed.values()), stats
        ended = [o for o in outcomes if "code" in o or "end" in o]
        alive = [o for o in outcomes if o not in ended]
        assert ended, outcomes  # least-request spread the streams over both replicas
        for outcome in ended:  # ended soon after the kill, as a cut the client resumes
            assert (outcome.get("code") == grpc.StatusCode.INTERNAL
                    and "RST_STREAM" in outcome["details"]) \
                or outcome.get("code") == grpc.StatusCode.UNAVAILABLE \
                or outcome.get("end") == "UNAVAILABLE", outcome
            assert outcome.get("ended_at", killed_at) - killed_at < 5
        assert alive and all(o["last_at"] > killed_at for o in alive), outcomes
        # Resuming from the last change received: a snapshot, then changes again.
        resumed: dict = {}
        again = asyncio.create_task(_follow(stub, ticker, metadata, resumed,
                                            start=ended[0]["last_change"]))
        async with asyncio.timeout(30):
            while not resumed.get("last_change") and not again.done():
                await asyncio.sleep(0.2)
        assert resumed.get("last_change") and "code" not in resumed, resumed
        again.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await again
        for follower in followers:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        await channel.close()

        # The supervisor brings the replica back (a new pid), and status shows it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            by_name = {c["name"]: c for c in (await asyncio.to_thread(_status, env))["components"]}
            if by_name["queryd-1"]["healthy"] and by_name["queryd-1"]["restarts"] == 1:
                break
            await asyncio.sleep(1)
        else:
            pytest.fail(f"queryd-1 not restarted: {by_name['queryd-1']}")
        assert by_name["queryd-1"]["pid"] != victim

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert not (data_dir / "stack.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in _started_children(log_path):  # children run in their own sessions
            with contextlib.suppress(ProcessLookupError):
                os.kill(child["pid"], signal.SIGKILL)


def _started_children(log_path: Path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines()
            if line.startswith("{") and '"child.started"' in line]
