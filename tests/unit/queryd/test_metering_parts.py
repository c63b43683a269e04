"""Pure parts of the metering interceptor: token buckets, the verdict cache, gap flags."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from ktape.billing.v1 import billing_pb2, metering_pb2
from ktape.errors import Unavailable
from ktape.marketdata.v1 import marketdata_pb2 as md
from queryd.metering.interceptor import answer_in_gap, bearer_key
from queryd.metering.ratelimit import RateLimiter, replica_share
from queryd.metering.verifier import KeyVerifier, RelayedError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_limit_then_says_how_long_to_wait():
    clock = Clock()
    limiter = RateLimiter(clock)
    assert all(limiter.take("k", 60) == 0.0 for _ in range(60))
    assert limiter.take("k", 60) == pytest.approx(1.0)
    clock.now += 0.5
    assert limiter.take("k", 60) == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("k", 60) == 0.0
    assert limiter.take("other", 60) == 0.0  # buckets are per key


def test_replicas_share_a_keys_limit_instead_of_multiplying_it():
    assert replica_share(1200, 1) == 1200
    assert replica_share(1200, 2) == 600
    assert replica_share(120, 7) == 18  # rounded up: together at least the limit
    assert replica_share(1, 3) == 1
    for replicas in range(1, 9):
        assert 120 <= replica_share(120, replicas) * replicas < 120 + replicas


def test_full_buckets_are_evicted_when_the_table_is_full():
    clock = Clock()
    limiter = RateLimiter(clock, max_keys=2)
    limiter.take("a", 60)
    limiter.take("b", 60)
    clock.now += 120  # both refilled
    limiter.take("c", 60)
    assert set(limiter._buckets) == {"c"}


class FakeStub:
    """The MeteringService stub's VerifyApiKey, answering from a script."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail: grpc.StatusCode | None = None
        self.delay = 0.0

    async def VerifyApiKey(self, request, timeout=None):
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise grpc.aio.AioRpcError(self.fail, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details="scripted")
        return metering_pb2.VerifyApiKeyResponse(
            account_id="acct", key_id="key", env=billing_pb2.KEY_ENV_PROD, plan="free",
            available_credits=10, rate_limit_per_minute=120)


async def test_verdicts_are_cached_and_fetched_once_for_concurrent_callers():
    stub, clock = FakeStub(), Clock()
    verifier = KeyVerifier(stub, ttl=4.0, grace=60.0, clock=clock)
    stub.delay = 0.05
    grants = await asyncio.gather(*[verifier.verify("kt_x") for _ in range(20)])
    assert stub.calls == 1 and {g.account_id for g in grants} == {"acct"}
    clock.now += 3.9
    await verifier.verify("kt_x")
    assert stub.calls == 1
    clock.now += 0.2
    await verifier.verify("kt_x")
    assert stub.calls == 2


async def test_definitive_refusals_are_relayed_and_cached():
    stub, clock = FakeStub(), Clock()
    verifier = KeyVerifier(stub, ttl=4.0, clock=clock)
    stub.fail = grpc.StatusCode.UNAUTHENTICATED
    for _ in range(3):
        with pytest.raises(RelayedError) as info:
            await verifier.verify("kt_bad")
    assert info.value.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert stub.calls == 1


async def test_outage_serves_known_keys_within_the_grace_only():
    stub, clock = FakeStub(), Clock()
    verifier = KeyVerifier(stub, ttl=4.0, grace=60.0, clock=clock)
    await verifier.verify("kt_known")
    stub.fail = grpc.StatusCode.UNAVAILABLE
    clock.now += 30
    assert (await verifier.verify("kt_known")).account_id == "acct"  # stale but in grace
    calls = stub.calls
    await verifier.verify("kt_known")  # re-served from cache: no call per request
    assert stub.calls == calls
    with pytest.raises(Unavailable):
        await verifier.verify("kt_never_seen")
    clock.now += 40  # 70 s since billingd last answered: beyond ttl + grace
    with pytest.raises(Unavailable):
        await verifier.verify("kt_known")


def test_bearer_key_parsing():
    assert bearer_key((("authorization", "Bearer kt_a"),)) == "kt_a"
    assert bearer_key((("authorization", "bearer   kt_b "),)) == "kt_b"
    for bad in [(), (("authorization", "Basic abc"),), (("authorization", "Bearer "),)]:
        with pytest.raises(Exception, match="missing API key"):
            bearer_key(bad)


def test_gap_answers_are_flagged():
    book = md.GetOrderbookResponse()
    assert not answer_in_gap(book)
    book.continuity.status = md.CONTINUITY_STATUS_GAP
    assert answer_in_gap(book)
    page = md.ListOrderbookDeltasResponse(deltas=[md.OrderbookDelta(kind=md.DELTA_KIND_DELTA)])
    assert not answer_in_gap(page)
    page.deltas.add(kind=md.DELTA_KIND_GAP)
    assert answer_in_gap(page)
    columns = md.ListOrderbookDeltasResponse(columns=md.OrderbookDeltaColumns(
        kinds=[md.DELTA_KIND_DELTA]))
    assert not answer_in_gap(columns)
    columns.columns.kinds.append(md.DELTA_KIND_GAP)
    assert answer_in_gap(columns)  # the same page as columns: refundable as well
    assert not answer_in_gap(md.ListSeriesResponse())
