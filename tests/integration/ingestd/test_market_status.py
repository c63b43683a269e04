"""Market status follows the lifecycle: close → determined → settled, as GetMarket and the
ListMarkets status filters report it, within 5 s of each event — for a market known from
discovery, for one created mid-run, and across an ingestd restart (issue 13, defect 2).

The simulator drives one event at a time (`/_sim/control?action=close|determine|settle` on
one of its markets moves every market of its event, as Kalshi closes and settles an event's
markets together); random lifecycle is off so nothing else moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import httpx
import psycopg
import pytest
import pytest_asyncio
from google.protobuf import timestamp_pb2

from ingestd.app import Ingestd
from ingestd.config import IngestSettings
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.sim.server import SimConfig, SimServer
from queryd.server import build_server
from tests.integration.ingestd.test_record_against_journal import recorder_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

WITHIN_SECS = 5.0


async def drive(port: int, action: str, ticker: str) -> list[str]:
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"http://127.0.0.1:{port}/_sim/control",
                                params={"action": action, "ticker": ticker})
    assert resp.status_code == 200, resp.text
    return resp.json()["events"]


async def within(check: Callable[[], Awaitable[str | None]], what: str) -> float:
    """Poll `check` (None = holds, else what is wrong) until it holds; seconds taken."""
    began = time.monotonic()
    problem: str | None = "never checked"
    while time.monotonic() - began < WITHIN_SECS:
        problem = await check()
        if problem is None:
            return time.monotonic() - began
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not within {WITHIN_SECS}s: {problem}")


@contextlib.asynccontextmanager
async def running_recorder(settings) -> AsyncIterator[Ingestd]:  # type: ignore[no-untyped-def]
    recorder = Ingestd(settings, IngestSettings(flush_interval_ms=100))
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    try:
        for _ in range(200):  # lifecycle is followed from here on
            if "market_lifecycle_v2" in recorder.feed.subscriptions.sids.values():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the recorder never subscribed to market_lifecycle_v2")
        yield recorder
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(questdb, tmp_path_factory) -> AsyncIterator[dict]:
    questdb.reset()
    async with SimServer(SimConfig(markets=5, rate=100, seed=8)) as sim:
        sim.model.lifecycle_rate = 0  # only what the test drives happens
        settings = recorder_settings(questdb, tmp_path_factory.mktemp("status"), sim,
                                     KTAPE_PAGE_TOKEN_SECRET="market-status-tests")
        running, pool, _service = await build_server(settings, addr="127.0.0.1:0")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        try:
            yield {"sim": sim, "settings": settings, "conninfo": questdb.conninfo,
                   "stub": pb_grpc.MarketDataServiceStub(channel)}
        finally:
            await channel.close()
            await running.stop(0)
            await pool.close()


def status_check(stub, ticker: str, status: str, *, absent_from: tuple[str, ...] = (),
                 also: Callable[[pb.Market], str | None] | None = None
                 ) -> Callable[[], Awaitable[str | None]]:
    """GetMarket says `status`, ListMarkets(status=…) lists the market, and lists of the
    statuses in `absent_from` do not."""
    async def check() -> str | None:
        try:
            market = (await stub.GetMarket(pb.GetMarketRequest(ticker=ticker))).market
        except grpc.aio.AioRpcError as err:
            return f"GetMarket: {err.code()}"
        if market.status != status:
            return f"GetMarket status {market.status!r}"
        if also is not None and (problem := also(market)) is not None:
            return problem
        listed = await stub.ListMarkets(pb.ListMarketsRequest(status=status, page_size=1000))
        if ticker not in {m.ticker for m in listed.markets}:
            return f"not in ListMarkets(status={status})"
        for other in absent_from:
            page = await stub.ListMarkets(pb.ListMarketsRequest(status=other, page_size=1000))
            if ticker in {m.ticker for m in page.markets}:
                return f"still in ListMarkets(status={other})"
        return None
    return check


async def test_close_determine_settle_across_a_restart(stack) -> None:
    sim, stub = stack["sim"], stack["stub"]
    first = sorted(sim.model.active_tickers())[0]
    async with running_recorder(stack["settings"]):
        await within(status_check(stub, first, "active"), "discovered market active")

        events = await drive(sim.port, "close", first)
        size = len(sim.model.events[sim.model.markets[first].event_ticker].tickers)
        # every market of the event closes; a new event of as many markets replaces it
        assert events == ["close_date_updated", "BookCleared"] * size + ["created"] * size
        created = next(t for t in sim.model.active_tickers()
                       if sim.model.markets[t].created_ms > sim.model.start_ms)
        closed_at = time.time()
        await within(status_check(
            stub, first, "closed", absent_from=("active",),
            also=lambda m: None if abs(m.close_time.seconds - closed_at) < 3
            else f"close_time {m.close_time.seconds}"), "closed")
        # the market created mid-run is there, active, with its metadata
        await within(status_check(
            stub, created, "active",
            also=lambda m: None if m.title else "no title"), "created market active")

        await drive(sim.port, "determine", first)
        result = sim.model.markets[first].result
        value = "1.0000" if result == "yes" else "0.0000"
        await within(status_check(
            stub, first, "determined", absent_from=("closed", "active"),
            also=lambda m: None if (m.result, m.settlement_value) == (result, value)
            and m.HasField("determination_time") else f"result {m.result!r} "
            f"value {m.settlement_value!r}"), "determined")

        await drive(sim.port, "close", created)
        await within(status_check(stub, created, "closed", absent_from=("active",)),
                     "created market closed")

    # ingestd is down while `first` settles: the event is lost, REST tells on restart
    await drive(sim.port, "settle", first)
    async with running_recorder(stack["settings"]):
        await within(status_check(
            stub, first, "finalized", absent_from=("determined",),
            also=lambda m: None if m.HasField("settlement_time") and m.result == result
            else "no settlement_time or result lost"), "settled while ingestd was down")
        settled = await stub.ListMarkets(pb.ListMarketsRequest(status="settled"))
        assert first in {m.ticker for m in settled.markets}  # Kalshi's filter word works too

        await drive(sim.port, "determine", created)
        await within(status_check(stub, created, "determined", absent_from=("closed",)),
                     "created market determined after a restart")
        await drive(sim.port, "settle", created)
        await within(status_check(stub, created, "finalized"), "created market settled")
        # metadata survived every version
        market = (await stub.GetMarket(pb.GetMarketRequest(ticker=created))).market
        assert market.title and market.event_ticker and market.HasField("close_time")


async def test_an_unknown_status_filter_is_an_error(stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack["stub"].ListMarkets(pb.ListMarketsRequest(status="open"))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "finalized" in (err.value.details() or "")


async def test_get_market_at_an_instant_returns_the_version_then(stack) -> None:
    """Issue 14, item 3: every change is a version, and GetMarket(at) is the market as
    it was at that instant (status, result, times), NOT_FOUND before the first one."""
    stub, sim = stack["stub"], stack["sim"]
    async with running_recorder(stack["settings"]):
        ticker = sorted(sim.model.active_tickers())[-1]
        await within(status_check(stub, ticker, "active"), "active")
        for action, status in (("close", "closed"), ("determine", "determined"),
                               ("settle", "finalized")):
            await drive(sim.port, action, ticker)
            await within(status_check(stub, ticker, status), status)
    versions = await _versions(stack, ticker)
    assert versions[0][1] == "active"
    assert {"closed", "determined", "finalized"} <= {status for _, status in versions}
    for (when, status), later in zip(versions, [*versions[1:], (None, None)], strict=True):
        probe = when + dt.timedelta(microseconds=1)
        if later[0] is not None and probe >= later[0]:
            continue
        got = await stub.GetMarket(pb.GetMarketRequest(ticker=ticker, at=_ts(probe)))
        assert got.market.status == status, (probe, status)
        assert got.market.update_time.ToDatetime(tzinfo=dt.UTC) == when
    earliest = versions[0][0] - dt.timedelta(seconds=1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetMarket(pb.GetMarketRequest(ticker=ticker, at=_ts(earliest)))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    assert "first known" in (err.value.details() or "")


async def _versions(stack: dict, ticker: str) -> list[tuple[dt.datetime, str]]:
    """Every recorded version of a market: (its time, its status), oldest first."""
    conninfo = stack["conninfo"]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT ts, status FROM markets WHERE ticker = %s ORDER BY ts",
                            (ticker,)).fetchall()
    return [(ts.replace(tzinfo=dt.UTC), str(status)) for ts, status in rows]


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out
