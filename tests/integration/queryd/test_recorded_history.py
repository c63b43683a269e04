"""queryd over gRPC against history recorded from the simulator by the real ingestd.

Checks the promises of ListOrderbookDeltas / ListTrades paging (every row exactly once,
in order, tokens bound to the query), ListCandles (agrees exactly with the trades in the
window), GetOrderbook (equals the journal), and the error statuses.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
import pytest_asyncio
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ingestd.app import Ingestd
from ingestd.config import IngestSettings
from ktape.config import load_settings
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig, SimServer
from queryd.server import build_server


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def recorded(questdb, tmp_path_factory) -> AsyncIterator[dict]:
    questdb.reset()
    data_dir = tmp_path_factory.mktemp("recorded")
    async with SimServer(SimConfig(markets=6, rate=500, seed=77)) as sim:
        settings = load_settings({
            **questdb.env(), "KTAPE_DATA_DIR": str(data_dir),
            "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2",
            "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{sim.port}/trade-api/v2",
            "KTAPE_PAGE_TOKEN_SECRET": "recorded-history-tests",
        })
        began = dt.datetime.now(dt.UTC)
        recorder = Ingestd(settings, IngestSettings(checkpoint_every_changes=40,
                                                     flush_interval_ms=100))
        stop = asyncio.Event()
        task = asyncio.create_task(recorder.run(stop))
        await asyncio.sleep(5)
        sim.config.rate = 0
        await asyncio.sleep(1)
        stop.set()
        await asyncio.wait_for(task, 20)
        journal = sim.journal
    with questdb.connect() as conn:
        wait_for_wal(conn)
    running, pool, _service = await build_server(settings, addr="127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield {"stub": pb_grpc.MarketDataServiceStub(channel), "journal": journal,
               "start": began - dt.timedelta(seconds=5),
               "end": dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)}
    finally:
        await channel.close()
        await running.stop(0)
        await pool.close()


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _all_pages(call, request, field: str) -> list:
    """Follow next_page_token to the end, collecting `field` of every page."""
    items: list = []
    while True:
        page = await call(request)
        items += getattr(page, field)
        if not page.next_page_token:
            return items
        request.page_token = page.next_page_token


def _busiest(journal) -> str:
    counts: dict[str, int] = defaultdict(int)
    for record in journal.records:
        if record["k"] == "trd":
            counts[record["m"]] += 1
    return max(counts, key=counts.__getitem__)


async def test_trade_pages_return_every_trade_once_in_order(recorded):
    stub, journal = recorded["stub"], recorded["journal"]
    ticker = _busiest(journal)
    request = pb.ListTradesRequest(ticker=ticker, start_time=ts(recorded["start"]),
                                   end_time=ts(recorded["end"]), page_size=7)
    seen: list[pb.Trade] = await _all_pages(stub.ListTrades, request, "trades")
    journal_trades = journal.trades(ticker)
    # Trades printed before ingestd's trade subscription existed were never sent to it:
    # compare from the first recorded print on.
    t0 = min(int(t.ts.ToDatetime(tzinfo=dt.UTC).timestamp() * 1000) for t in seen)
    expected = [t["id"] for t in journal_trades if t["t"] > t0]
    recorded = [t.trade_id for t in seen
                if int(t.ts.ToDatetime(tzinfo=dt.UTC).timestamp() * 1000) > t0]
    assert len(seen) > 7
    assert recorded == expected  # every print once, in (ts, seq) order
    at_t0 = {t.trade_id for t in seen} - set(recorded)
    assert at_t0 <= {t["id"] for t in journal_trades if t["t"] == t0}


async def test_delta_pages_are_exactly_the_unpaged_list(recorded):
    stub, journal = recorded["stub"], recorded["journal"]
    ticker = _busiest(journal)
    base = dict(ticker=ticker, start_time=ts(recorded["start"]), end_time=ts(recorded["end"]))
    whole = await stub.ListOrderbookDeltas(pb.ListOrderbookDeltasRequest(**base, page_size=1000))
    assert not whole.next_page_token
    paged = await _all_pages(stub.ListOrderbookDeltas,
                             pb.ListOrderbookDeltasRequest(**base, page_size=13), "deltas")
    assert [d.SerializeToString() for d in paged] == [d.SerializeToString() for d in whole.deltas]
    assert sum(d.kind == pb.DELTA_KIND_SNAPSHOT for d in paged) >= 1


async def test_page_token_is_bound_to_its_query(recorded):
    stub, journal = recorded["stub"], recorded["journal"]
    ticker = _busiest(journal)
    first = await stub.ListTrades(pb.ListTradesRequest(
        ticker=ticker, start_time=ts(recorded["start"]), end_time=ts(recorded["end"]),
        page_size=2))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListTrades(pb.ListTradesRequest(
            ticker=ticker, start_time=ts(recorded["start"] + dt.timedelta(seconds=1)),
            end_time=ts(recorded["end"]), page_size=2, page_token=first.next_page_token))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_candles_agree_with_the_trades(recorded):
    """Candles equal a direct computation from the trades of the same window."""
    stub, journal = recorded["stub"], recorded["journal"]
    ticker = _busiest(journal)
    window = dict(ticker=ticker, start_time=ts(recorded["start"]), end_time=ts(recorded["end"]))
    trades = await _all_pages(stub.ListTrades, pb.ListTradesRequest(**window, page_size=1000),
                              "trades")
    response = await stub.ListCandles(pb.ListCandlesRequest(**window, interval="1m"))
    buckets: dict[int, list[pb.Trade]] = defaultdict(list)
    for trade in trades:  # already in (ts, seq, trade_id) order
        ms = int(trade.ts.ToDatetime(tzinfo=dt.UTC).timestamp() * 1000)
        buckets[ms // 60_000 * 60_000].append(trade)
    assert len(response.candles) == len(buckets) >= 1
    for candle in response.candles:
        minute = int(candle.start_time.ToDatetime(tzinfo=dt.UTC).timestamp() * 1000)
        group = buckets[minute]
        prices = [Decimal(t.yes_price) for t in group]
        assert Decimal(candle.open) == prices[0] and Decimal(candle.close) == prices[-1]
        assert Decimal(candle.high) == max(prices) and Decimal(candle.low) == min(prices)
        assert Decimal(candle.volume) == sum(Decimal(t.count) for t in group)
        assert candle.trade_count == len(group)


async def test_orderbook_now_equals_the_journal(recorded):
    stub, journal = recorded["stub"], recorded["journal"]
    for ticker in sorted(journal.tickers())[:6]:
        book = await stub.GetOrderbook(pb.GetOrderbookRequest(ticker=ticker))
        if book.continuity.status != pb.CONTINUITY_STATUS_CONTINUOUS:
            continue
        yes, no = journal.book_at(ticker, 2**62)
        assert [(lvl.price, lvl.quantity) for lvl in book.yes] == [
            (f"0.{p:04d}", f"{q // 100}.{q % 100:02d}") for p, q in sorted(yes.items(), reverse=True)]
        assert len(book.no) == len(no)


async def test_errors_are_rich_statuses(recorded):
    stub = recorded["stub"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetOrderbook(pb.GetOrderbookRequest(ticker="KX-NEVER-SEEN"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListCandles(pb.ListCandlesRequest(ticker="KX-NEVER-SEEN", interval="5m",
                                                     start_time=ts(recorded["start"]),
                                                     end_time=ts(recorded["end"])))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(info.value)
    details = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    bad = error_details_pb2.BadRequest()
    details[0].Unpack(bad)
    assert bad.field_violations[0].field == "interval"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListTrades(pb.ListTradesRequest(ticker="KX-A", start_time=ts(recorded["end"]),
                                                   end_time=ts(recorded["start"])))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_deadlines_are_honoured(recorded):
    """A call past its deadline ends DEADLINE_EXCEEDED (the server drops the work) and
    the server keeps serving."""
    stub = recorded["stub"]
    request = pb.ListOrderbookDeltasRequest(ticker=_busiest(recorded["journal"]),
                                            start_time=ts(recorded["start"]),
                                            end_time=ts(recorded["end"]), page_size=1000)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListOrderbookDeltas(request, timeout=0.0005)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    answer = await stub.ListOrderbookDeltas(request, timeout=10)
    assert answer.deltas


async def test_orderbook_at_random_instants_equals_the_journal(recorded):
    """Property: at any instant inside coverage where ktape says CONTINUOUS, the book it
    serves is exactly the exchange's book (the simulator's journal). 300 instants drawn
    from a seeded generator over every recorded market."""
    import random

    stub, journal = recorded["stub"], recorded["journal"]
    rng = random.Random(20261124)
    tickers = sorted(journal.tickers())
    lo = int(recorded["start"].timestamp() * 1000)
    hi = int(recorded["end"].timestamp() * 1000)
    compared = 0
    for _ in range(300):
        ticker = rng.choice(tickers)
        at_ms = rng.randrange(lo, hi)
        at = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC) + dt.timedelta(microseconds=999)
        book = await stub.GetOrderbook(pb.GetOrderbookRequest(ticker=ticker, at=ts(at)))
        if book.continuity.status != pb.CONTINUITY_STATUS_CONTINUOUS:
            continue  # outside coverage or inside a recorded gap: not claimed exact
        yes, no = journal.book_at(ticker, at_ms)
        for served, truth in ((book.yes, yes), (book.no, no)):
            assert [(lvl.price, lvl.quantity) for lvl in served] == [
                (f"0.{p:04d}", f"{q // 100}.{q % 100:02d}")
                for p, q in sorted(truth.items(), reverse=True) if q > 0], (ticker, at)
        compared += 1
    assert compared >= 150, compared
