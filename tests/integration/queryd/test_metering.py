"""The metering interceptor end to end: real billingd and queryd over gRPC sockets.

Every error path the interceptor owns (missing / malformed / revoked key, suspended
account, rate limit, no credits, sandbox quota), usage booked exactly once, revocation
within 5 s (streams included), and a billingd outage that neither loses usage nor
blocks reads within the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from billingd.server import Billingd
from billingd.server import build_server as build_billingd
from billingd.store import BillingStore, UsageIn
from ktape.billing.v1 import metering_pb2_grpc
from ktape.config import load_settings
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.pricing import MARKETDATA, PRICES, SANDBOX_CALLS_PER_DAY
from ktape.schema.wal import wait_for_wal
from queryd.metering.interceptor import MeteringInterceptor
from queryd.metering.ratelimit import RateLimiter
from queryd.metering.usage import UsageRecorder
from queryd.metering.verifier import KeyVerifier
from queryd.server import build_server as build_queryd


@dataclass
class Metered:
    billingd: Billingd
    store: BillingStore
    interceptor: MeteringInterceptor
    stub: pb_grpc.MarketDataServiceStub
    channel: grpc.aio.Channel
    queryd_port: int
    billing_channel: grpc.aio.Channel
    settings_env: dict[str, str]

    def key(self, name: str, *, credits: int = 0, plan: str = "free", env: str = "prod") -> str:
        account = self.store.create_account(name, plan=plan)
        if credits:
            self.store.append(account.account_id, credits, kind="grant", reason="test",
                              idempotency_key=f"grant-{name}")
        return self.store.create_key(account.account_id, env=env).full


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@contextlib.asynccontextmanager
async def metered_stack(questdb, data_dir: Path, *, ttl: float = 4.0, grace: float = 120.0,
                        billingd_port: int = 0) -> AsyncIterator[Metered]:
    env = {**questdb.env(), "KTAPE_DATA_DIR": str(data_dir),
           "KTAPE_PAGE_TOKEN_SECRET": "metering-tests"}
    settings = load_settings(env)
    billingd = await build_billingd(settings, addr=f"127.0.0.1:{billingd_port}")
    billing_channel = grpc.aio.insecure_channel(f"127.0.0.1:{billingd.running.port}")
    stub = metering_pb2_grpc.MeteringServiceStub(billing_channel)
    interceptor = MeteringInterceptor(
        KeyVerifier(stub, ttl=ttl, grace=grace),
        UsageRecorder(stub, data_dir / "usage-spool", interval=0.2))
    running, pool, _service = await build_queryd(settings, addr="127.0.0.1:0",
                                                 interceptors=[interceptor])
    recorder_task = asyncio.create_task(interceptor.recorder.run())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Metered(billingd, billingd.store.sync, interceptor,
                      pb_grpc.MarketDataServiceStub(channel), channel, running.port,
                      billing_channel, env)
    finally:
        recorder_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder_task
        await channel.close()
        await running.stop(0)
        await pool.close()
        await billing_channel.close()
        await billingd.running.stop(0)
        billingd.store.close()


@pytest_asyncio.fixture
async def metered(questdb, tmp_path) -> AsyncIterator[Metered]:
    async with metered_stack(questdb, tmp_path, ttl=0.5) as stack:
        yield stack


def _reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def _detail(err: grpc.aio.AioRpcError, kind):
    for detail in rpc_status.from_call(err).details:
        if detail.Is(kind.DESCRIPTOR):
            out = kind()
            detail.Unpack(out)
            return out
    return None


async def _fails(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value
    return info.value


def test_every_market_data_method_has_a_price():
    methods = pb.DESCRIPTOR.services_by_name["MarketDataService"].methods
    from ktape.pricing import price_of
    assert all(price_of(MARKETDATA + m.name) is not None for m in methods)


async def test_keys_are_required_and_checked(metered: Metered):
    stub = metered.stub
    err = await _fails(stub.ListSeries(pb.ListSeriesRequest()), grpc.StatusCode.UNAUTHENTICATED)
    assert _reason(err) == "API_KEY_MISSING"
    err = await _fails(stub.ListSeries(pb.ListSeriesRequest(), metadata=auth("kt_prod_nope")),
                       grpc.StatusCode.UNAUTHENTICATED)
    assert _reason(err) == "API_KEY_MALFORMED"
    forged = "kt_prod_000000000000_" + "0" * 64
    err = await _fails(stub.ListSeries(pb.ListSeriesRequest(), metadata=auth(forged)),
                       grpc.StatusCode.UNAUTHENTICATED)
    assert _reason(err) == "API_KEY_INVALID"
    # Health needs no key.
    health = health_pb2_grpc.HealthStub(metered.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_usage_is_booked_once_at_the_listed_price(metered: Metered):
    key = metered.key("acme", credits=100)
    for _ in range(3):
        await metered.stub.ListSeries(pb.ListSeriesRequest(), metadata=auth(key))
    await _fails(metered.stub.GetOrderbook(pb.GetOrderbookRequest(ticker="KX-NOPE"),
                                           metadata=auth(key)), grpc.StatusCode.NOT_FOUND)
    assert await metered.interceptor.recorder.flush()
    account, _ = metered.store.authenticate(key)
    now = dt.datetime.now(dt.UTC)
    rows = metered.store.usage(account_id=account.account_id, start=now - dt.timedelta(hours=1),
                               end=now + dt.timedelta(hours=1))
    assert [(r.method, r.calls, r.credits) for r in rows] == [
        (MARKETDATA + "ListSeries", 3, 3 * PRICES[MARKETDATA + "ListSeries"])]  # failures free
    assert metered.store.standing(account.account_id).balance == 1100 - 3


async def test_out_of_credits_is_resource_exhausted_with_quota_failure(metered: Metered):
    key = metered.key("broke")
    account, api_key = metered.store.authenticate(key)
    metered.store.record_usage([UsageIn("seed", api_key.key_id, "seed", 1000,
                                        dt.datetime.now(dt.UTC))])  # the allowance is spent
    err = await _fails(metered.stub.ListTrades(pb.ListTradesRequest(ticker="KX-A",
                                                                    page_token="resume-me"),
                                               metadata=auth(key)),
                       grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert _reason(err) == "INSUFFICIENT_CREDITS"
    quota = _detail(err, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject == f"account:{account.account_id}"
    info = _detail(err, error_details_pb2.ErrorInfo)
    assert info.metadata["resume_page_token"] == "resume-me"
    # Top up 4 credits: after the cache window, exactly two GetOrderbook-priced calls fit,
    # counted locally before billingd has booked them.
    metered.store.append(account.account_id, 4, kind="grant", reason="t", idempotency_key="top")
    await asyncio.sleep(0.6)
    price = PRICES[MARKETDATA + "GetMarket"]
    assert await _served_of(metered, key, 6, "INSUFFICIENT_CREDITS") == 4 // price
    assert await metered.interceptor.recorder.flush()
    assert metered.store.balance(account.account_id) == 0


async def test_dev_keys_hit_the_sandbox_quota(metered: Metered):
    key = metered.key("sandbox", env="dev")
    _, api_key = metered.store.authenticate(key)
    now = dt.datetime.now(dt.UTC)
    metered.store.record_usage([UsageIn(f"d{i}", api_key.key_id, "seed", 1, now)
                                for i in range(SANDBOX_CALLS_PER_DAY)])
    err = await _fails(metered.stub.ListSeries(pb.ListSeriesRequest(), metadata=auth(key)),
                       grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert _reason(err) == "SANDBOX_QUOTA_EXCEEDED"
    retry = _detail(err, error_details_pb2.RetryInfo)
    assert 0 < retry.retry_delay.seconds <= 86_400


async def test_rate_limit_answers_retry_info(metered: Metered):
    key = metered.key("hasty", credits=10_000)
    metered.interceptor.limiter = RateLimiter()
    limit = 120  # the free plan's
    results = await asyncio.gather(*[
        metered.stub.ListSeries(pb.ListSeriesRequest(), metadata=auth(key))
        for _ in range(limit + 5)], return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    # 5 over the burst; the bucket refills 2 tokens/s, so a slow machine may let 1-2 more in
    assert 1 <= len(refused) <= 5, len(refused)
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    assert _reason(refused[0]) == "RATE_LIMITED"
    retry = _detail(refused[0], error_details_pb2.RetryInfo)
    assert 0 < retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9 <= 1.0


async def _served_of(metered: Metered, key: str, calls: int, refusal: str) -> int:
    """How many of `calls` ListSeries calls were served; the rest must be refused as
    RESOURCE_EXHAUSTED with ErrorInfo reason `refusal`."""
    served = 0
    for _ in range(calls):
        try:
            await metered.stub.ListSeries(pb.ListSeriesRequest(), metadata=auth(key))
            served += 1
        except grpc.aio.AioRpcError as exc:
            assert (exc.code(), _reason(exc)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
    return served


async def _refused_within_5s(metered: Metered, key: str, code: grpc.StatusCode,
                             reason: str) -> None:
    """Calls with `key` keep being tried until refused with `code`/`reason`; that must
    happen within 5 s of the change in billingd."""
    began = time.monotonic()
    while True:
        try:
            await metered.stub.ListSeries(pb.ListSeriesRequest(), metadata=auth(key))
        except grpc.aio.AioRpcError as exc:
            assert (exc.code(), _reason(exc)) == (code, reason)
            return
        assert time.monotonic() - began < 5.0
        await asyncio.sleep(0.1)


async def test_revoked_key_and_suspended_account_fail_within_5s(questdb, tmp_path):
    async with metered_stack(questdb, tmp_path) as metered:  # the production cache window
        key = metered.key("leaver", credits=100)
        account, api_key = metered.store.authenticate(key)
        with questdb.connect() as conn:
            conn.execute("INSERT INTO markets (ts, ticker, status) VALUES (now(), 'KX-METER', "
                         "'active')")
            wait_for_wal(conn)
        await metered.stub.ListSeries(pb.ListSeriesRequest(), metadata=auth(key))
        stream = metered.stub.StreamOrderbook(pb.StreamOrderbookRequest(ticker="KX-METER"),
                                              metadata=auth(key))
        first = await stream.read()  # open and paid for before the key is revoked
        assert first.HasField("snapshot"), first
        metered.store.revoke_key(account.account_id, api_key.key_id)
        await _refused_within_5s(metered, key, grpc.StatusCode.UNAUTHENTICATED,
                                 "API_KEY_REVOKED")
        # The open stream ends too (its heartbeats re-check the key).
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async with asyncio.timeout(15):
                while await stream.read() is not grpc.aio.EOF:
                    pass
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

        other = metered.key("suspended", credits=100)
        await metered.stub.ListSeries(pb.ListSeriesRequest(), metadata=auth(other))
        metered.store.set_state(metered.store.authenticate(other)[0].account_id, "suspended")
        await _refused_within_5s(metered, other, grpc.StatusCode.PERMISSION_DENIED,
                                 "ACCOUNT_SUSPENDED")


async def test_billing_outage_loses_no_usage_and_reads_go_on(questdb, tmp_path):
    async with metered_stack(questdb, tmp_path, ttl=0.3, grace=30) as metered:
        key = metered.key("steady", credits=100)
        account_id = metered.store.authenticate(key)[0].account_id
        await metered.stub.ListSeries(pb.ListSeriesRequest(), metadata=auth(key))
        assert await metered.interceptor.recorder.flush()
        await metered.billingd.running.stop(0)  # billingd goes away
        for _ in range(5):  # reads continue on the cached verdict within the grace
            await metered.stub.ListSeries(pb.ListSeriesRequest(), metadata=auth(key))
            await asyncio.sleep(0.1)
        stranger = "kt_prod_abcdefabcdef_" + "1" * 64  # never verified: refused
        err = await _fails(metered.stub.ListSeries(pb.ListSeriesRequest(), metadata=auth(stranger)),
                           grpc.StatusCode.UNAVAILABLE)
        assert _reason(err) == "BILLING_UNAVAILABLE"
        assert not await metered.interceptor.recorder.flush()
        await metered.interceptor.recorder.close()  # queryd stops: usage goes to the spool
        spooled = list((tmp_path / "usage-spool").glob("usage-*.pb"))
        assert len(spooled) == 1
    # billingd and queryd come back on the same data dir: the spool is replayed once.
    async with metered_stack(questdb, tmp_path) as metered:
        assert await metered.interceptor.recorder.replay_spool()
        assert await metered.interceptor.recorder.replay_spool()  # nothing left, no repeat
        now = dt.datetime.now(dt.UTC)
        rows = metered.store.usage(account_id=account_id, start=now - dt.timedelta(hours=1),
                                   end=now + dt.timedelta(hours=1))
        assert sum(r.calls for r in rows) == 6
        assert not list((tmp_path / "usage-spool").glob("usage-*.pb"))


async def test_spending_cap_stops_a_postpaid_account(metered: Metered):
    key = metered.key("capped", plan="payg")
    account, api_key = metered.store.authenticate(key)
    metered.store.set_spending_cap(account.account_id, 3)
    metered.store.record_usage([UsageIn("seed-cap", api_key.key_id, "seed", 1000,
                                        dt.datetime.now(dt.UTC))])  # the allowance is spent
    price = PRICES[MARKETDATA + "ListSeries"]
    assert await _served_of(metered, key, 6, "SPENDING_CAP_REACHED") == 3 // price
    assert await metered.interceptor.recorder.flush()
    # Postpaid: what the balance did not cover is metered for Stripe, not refused.
    assert sum(r.credits for r in metered.store.unreported_meter_usage()) == 3


async def test_metering_service_needs_the_internal_token_when_one_is_set(questdb, tmp_path):
    from ktape.billing.v1 import metering_pb2
    from ktape.internal_auth import InternalTokenClient

    settings = load_settings({**questdb.env(), "KTAPE_DATA_DIR": str(tmp_path),
                              "KTAPE_INTERNAL_TOKEN": "s3cret-internal"})
    billingd = await build_billingd(settings, addr="127.0.0.1:0")
    addr = f"127.0.0.1:{billingd.running.port}"
    try:
        async with grpc.aio.insecure_channel(addr) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await metering_pb2_grpc.MeteringServiceStub(plain).RecordUsage(
                    metering_pb2.RecordUsageRequest())
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert _reason(info.value) == "INTERNAL_TOKEN_INVALID"
        async with grpc.aio.insecure_channel(
                addr, interceptors=[InternalTokenClient("s3cret-internal")]) as authed:
            reply = await metering_pb2_grpc.MeteringServiceStub(authed).RecordUsage(
                metering_pb2.RecordUsageRequest())
            assert reply.applied == 0
    finally:
        await billingd.running.stop(0)
        billingd.store.close()


async def test_a_gap_recorded_after_a_call_refunds_it(metered: Metered, questdb):
    from billingd.server import questdb_gaps

    key = metered.key("late-gap-buyer", credits=10)
    account, _ = metered.store.authenticate(key)
    ticker = f"KX-LATEGAP-{time.time_ns()}"
    now = dt.datetime.now(dt.UTC)
    with questdb.connect() as conn:
        conn.execute("INSERT INTO book_checkpoints (ts, ticker, reason, seq, sid, recv_ts, "
                     "ts_source, yes_levels, no_levels, continuous_since) VALUES (%s, %s, "
                     "'snapshot', 1, 1, %s, 'receive', '4200:100', '', %s)",
                     (now - dt.timedelta(minutes=5), ticker, now, now - dt.timedelta(minutes=5)))
        wait_for_wal(conn)
    at = now - dt.timedelta(minutes=1)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    book = await metered.stub.GetOrderbook(pb.GetOrderbookRequest(ticker=ticker, at=stamp),
                                           metadata=auth(key))
    assert book.continuity.status == pb.CONTINUITY_STATUS_CONTINUOUS  # no gap known yet
    assert await metered.interceptor.recorder.flush()
    balance = metered.store.balance(account.account_id)
    with questdb.connect() as conn:  # ingestd finds out later that it missed changes then
        conn.execute("INSERT INTO gaps (ts, ticker, reason, start_ts, end_ts, sid) VALUES "
                     "(%s, %s, 'reconnect', %s, %s, 1)",
                     (dt.datetime.now(dt.UTC), ticker, at - dt.timedelta(seconds=30),
                      at + dt.timedelta(seconds=30)))
        wait_for_wal(conn)
    window = (now - dt.timedelta(hours=1), dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
    refunded = metered.store.refund_gap_calls(*window, gaps=questdb_gaps(questdb.conninfo))
    assert refunded == (1, PRICES[MARKETDATA + "GetOrderbook"])
    assert metered.store.balance(account.account_id) == balance + refunded[1]
