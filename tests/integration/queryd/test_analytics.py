"""AnalyticsService against a recorded simulator, each answer checked against
GetOrderbook at the same instants (computed independently here from its books)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from decimal import ROUND_CEILING, Decimal

import grpc
import pytest
from google.protobuf import timestamp_pb2
from psycopg_pool import AsyncConnectionPool

from ktape.marketdata.v1 import analytics_pb2 as apb
from ktape.marketdata.v1 import analytics_pb2_grpc as agrpc
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.paging import PageTokens
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import FaultConfig, SimConfig
from queryd.analytics import AnalyticsService
from tests.fixtures.recording import recorded_simulator


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def when(t: timestamp_pb2.Timestamp) -> dt.datetime:
    return t.ToDatetime(dt.UTC)


@pytest.fixture
async def recorded(edge, clean_questdb, tmp_path):
    config = SimConfig(markets=3, rate=200, seed=21, faults=FaultConfig(drop=0.004))
    async with recorded_simulator(clean_questdb, tmp_path, config):
        await asyncio.sleep(5)
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        # the market with the most recorded changes (one recorded from early on: a market
        # of an event listed mid-run may have only its last half second)
        busiest = str(conn.execute("SELECT ticker, count() FROM book_changes "
                                   "ORDER BY 2 DESC LIMIT 1").fetchone()[0])
    channel = grpc.aio.insecure_channel(edge.queryd_addr)
    yield (busiest, pb_grpc.MarketDataServiceStub(channel), agrpc.AnalyticsServiceStub(channel),
           edge.grpc_metadata)
    await channel.close()


async def _deltas(md, meta, ticker, start, end) -> list[pb.OrderbookDelta]:
    out, token = [], ""
    while True:
        page = await md.ListOrderbookDeltas(pb.ListOrderbookDeltasRequest(
            ticker=ticker, start_time=ts(start), end_time=ts(end), page_size=1000,
            page_token=token), metadata=meta)
        out += page.deltas
        token = page.next_page_token
        if not token:
            return out


def _top(book: pb.GetOrderbookResponse) -> tuple:
    yes = (book.yes[0].price, book.yes[0].quantity) if book.yes else None
    no = (book.no[0].price, book.no[0].quantity) if book.no else None
    return yes, no, book.continuity.status


def _quote_top(q: apb.Quote) -> tuple:
    yes = (q.best_yes_bid.price, q.best_yes_bid.quantity) if q.HasField("best_yes_bid") else None
    no = (q.best_no_bid.price, q.best_no_bid.quantity) if q.HasField("best_no_bid") else None
    return yes, no, q.continuity


async def test_quotes_are_every_change_of_the_top_and_page_exactly(recorded):
    ticker, md, an, meta = recorded
    first = await md.ListOrderbookDeltas(pb.ListOrderbookDeltasRequest(
        ticker=ticker, start_time=ts(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)),
        page_size=1), metadata=meta)
    start = when(first.deltas[0].ts)
    end = dt.datetime.now(dt.UTC)
    # the expected quotes: the top of GetOrderbook at start and at every change instant,
    # kept where its prices or sizes differ from the one before (a gap starting or ending
    # alone is not a quote; each quote carries the continuity at its instant)
    changes = await _deltas(md, meta, ticker, start, end)
    instants = [start, *sorted({when(d.ts) for d in changes if when(d.ts) > start})]
    expected, last = [], None
    for at in instants:
        top = _top(await md.GetOrderbook(pb.GetOrderbookRequest(ticker=ticker, at=ts(at), depth=1),
                                         metadata=meta))
        if top[:2] != last:
            expected.append((at, top))
            last = top[:2]
    for size in (7, 1000):
        got, token = [], ""
        while True:
            page = await an.ListQuotes(apb.ListQuotesRequest(
                ticker=ticker, start_time=ts(start), end_time=ts(end), page_size=size,
                page_token=token), metadata=meta)
            got += [(when(q.ts), _quote_top(q)) for q in page.quotes]
            token = page.next_page_token
            if not token:
                break
        assert got == expected, size
    assert len(expected) > 5


async def test_snapshots_equal_getorderbook_at_each_boundary(recorded):
    ticker, md, an, meta = recorded
    end = dt.datetime.now(dt.UTC)
    first = await md.ListOrderbookDeltas(pb.ListOrderbookDeltasRequest(
        ticker=ticker, start_time=ts(end - dt.timedelta(minutes=5)), page_size=1), metadata=meta)
    start = when(first.deltas[0].ts) - dt.timedelta(seconds=1.5)  # from before the recording
    snaps, token = [], ""
    while True:
        page = await an.ListOrderbookSnapshots(apb.ListOrderbookSnapshotsRequest(
            ticker=ticker, start_time=ts(start), end_time=ts(end), interval="1s", depth=3,
            page_size=3, page_token=token), metadata=meta)
        snaps += page.snapshots
        token = page.next_page_token
        if not token:
            break
    stamps = [when(s.ts) for s in snaps]
    assert stamps == sorted(set(stamps)) and all(s.microsecond == 0 for s in stamps)
    assert snaps  # each is checked against GetOrderbook below
    for snap in snaps:
        book = await md.GetOrderbook(pb.GetOrderbookRequest(ticker=ticker, at=snap.ts, depth=3),
                                     metadata=meta)
        assert ([(lv.price, lv.quantity) for lv in snap.yes],
                [(lv.price, lv.quantity) for lv in snap.no], snap.seq, snap.continuity) == (
            [(lv.price, lv.quantity) for lv in book.yes],
            [(lv.price, lv.quantity) for lv in book.no], book.seq, book.continuity.status)


async def test_event_books_are_each_markets_book_at_the_same_instant(recorded, clean_questdb):
    ticker, md, an, meta = recorded
    with clean_questdb.connect() as conn:
        event = conn.execute("SELECT event_ticker FROM markets WHERE ticker = %s LIMIT 1",
                             (ticker,)).fetchone()[0]
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    got = await an.GetEventOrderbook(apb.GetEventOrderbookRequest(event_ticker=event, at=ts(at)),
                                     metadata=meta)
    assert got.markets and ticker in [m.ticker for m in got.markets]
    bids = asks = Decimal(0)
    for market in got.markets:
        book = await md.GetOrderbook(pb.GetOrderbookRequest(ticker=market.ticker, at=ts(at)),
                                     metadata=meta)
        assert list(market.yes) == list(book.yes) and list(market.no) == list(book.no)
        assert market.continuity.status == book.continuity.status and market.seq == book.seq
        bids += Decimal(book.yes[0].price) if book.yes else 0
        asks += (1 - Decimal(book.no[0].price)) if book.no else 1
    assert (Decimal(got.sum_best_yes_bids), Decimal(got.sum_best_yes_asks)) == (bids, asks)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await an.GetEventOrderbook(apb.GetEventOrderbookRequest(event_ticker="NOPE-EVENT"),
                                   metadata=meta)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def _old_event(clean_questdb) -> dt.datetime:
    """Four markets of event KXOLD-EV: KXOLD-A last checkpointed three days before the
    instant returned (beyond the bounded lookup), KXOLD-B an hour before, KXOLD-C never,
    KXOLD-D half an hour before; two changes after each checkpoint, and for D one before
    its checkpoint but after B's (read with the event's changes, which start at the
    oldest of their checkpoints; the replay must leave it out)."""
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    old, recent = at - dt.timedelta(days=3), at - dt.timedelta(hours=1)
    with clean_questdb.connect() as conn:
        for ticker in ("KXOLD-A", "KXOLD-B", "KXOLD-C", "KXOLD-D"):
            conn.execute("INSERT INTO markets (ts, ticker, event_ticker, series_ticker, status) "
                         "VALUES (%s, %s, 'KXOLD-EV', 'KXOLD', 'active')", (old, ticker))
        conn.execute("INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, "
                     "delta_e2, kind, seq, sid, recv_ts) VALUES (%s, 'KXOLD-D', 'yes', 2500, "
                     "700, 700, 'delta', 1, 6, %s)", (recent + dt.timedelta(minutes=10),) * 2)
        for ticker, when_, levels in (("KXOLD-A", old, "4000:500,4100:200"),
                                      ("KXOLD-B", recent, "3000:100"),
                                      ("KXOLD-D", recent + dt.timedelta(minutes=30), "2000:100")):
            conn.execute("INSERT INTO book_checkpoints (ts, ticker, reason, seq, sid, recv_ts, "
                         "yes_levels, no_levels, continuous_since) VALUES "
                         "(%s, %s, 'snapshot', 1, 7, %s, %s, '5500:300', %s)",
                         (when_, ticker, when_, levels, when_))
            for seq, (side, price, qty) in enumerate((("yes", 4100, 0), ("no", 5600, 900)), 2):
                conn.execute("INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, "
                             "delta_e2, kind, seq, sid, recv_ts) VALUES "
                             "(%s, %s, %s, %s, %s, 0, 'delta', %s, 7, %s)",
                             (when_ + dt.timedelta(seconds=seq), ticker, side, price, qty, seq,
                              when_ + dt.timedelta(seconds=seq)))
        wait_for_wal(conn)
    return at


async def test_event_books_reach_past_the_lookback_and_name_markets_never_recorded(
        edge, clean_questdb):
    """Each of _old_event's markets as GetOrderbook says."""
    at = _old_event(clean_questdb)
    channel = grpc.aio.insecure_channel(edge.queryd_addr)
    md, an = pb_grpc.MarketDataServiceStub(channel), agrpc.AnalyticsServiceStub(channel)
    try:
        got = await an.GetEventOrderbook(apb.GetEventOrderbookRequest(
            event_ticker="KXOLD-EV", at=ts(at)), metadata=edge.grpc_metadata)
        assert [m.ticker for m in got.markets] == ["KXOLD-A", "KXOLD-B", "KXOLD-C", "KXOLD-D"]
        for market in got.markets:
            book = await md.GetOrderbook(pb.GetOrderbookRequest(ticker=market.ticker, at=ts(at)),
                                         metadata=edge.grpc_metadata)
            assert (list(market.yes), list(market.no), market.seq) == (
                list(book.yes), list(book.no), book.seq)
            assert market.continuity.status == book.continuity.status
        a, b, c, d = got.markets
        assert [(lv.price, lv.quantity) for lv in a.yes] == [("0.4000", "5.00")]  # 4100 gone
        assert [(lv.price, lv.quantity) for lv in a.no] == [("0.5600", "9.00"), ("0.5500", "3.00")]
        assert a.seq == b.seq == d.seq == 3
        assert [(lv.price, lv.quantity) for lv in d.yes] == [("0.2000", "1.00")]  # no 0.2500
        assert c.continuity.status == pb.CONTINUITY_STATUS_NOT_RECORDED and not c.yes
        assert got.markets_not_continuous == 1
    finally:
        await channel.close()


async def test_event_calls_share_a_connection_rather_than_starve_a_small_pool(clean_questdb):
    """Eight calls at once on a pool of two: a call that finds no spare connection runs
    its two query chains on the one it holds instead of waiting while holding it (eight
    calls each holding one and waiting for a second would never finish)."""
    at = _old_event(clean_questdb)
    request = apb.GetEventOrderbookRequest(event_ticker="KXOLD-EV", at=ts(at))
    async with AsyncConnectionPool(clean_questdb.conninfo, min_size=2, max_size=2,
                                   kwargs={"autocommit": True}, timeout=5.0) as pool:
        service = AnalyticsService(pool, PageTokens(b"k" * 32))
        alone = await service.GetEventOrderbook(request, None)
        together = await asyncio.wait_for(asyncio.gather(
            *(service.GetEventOrderbook(request, None) for _ in range(8))), timeout=30)
    assert [m.ticker for m in alone.markets] == ["KXOLD-A", "KXOLD-B", "KXOLD-C", "KXOLD-D"]
    assert all(answer == alone for answer in together)


def _expected_fill(book: pb.GetOrderbookResponse, side: str, action: str, quantity: Decimal):
    """Kalshi's matching, computed here from the ladders alone."""
    if (side, action) in (("yes", "buy"), ("no", "sell")):
        levels = [(Decimal(lv.price), Decimal(lv.quantity)) for lv in book.no]
    else:
        levels = [(Decimal(lv.price), Decimal(lv.quantity)) for lv in book.yes]
    if action == "buy":
        levels = [(1 - p, q) for p, q in levels]
    fills, left = [], quantity
    for price, size in levels:
        if left <= 0:
            break
        take = min(size, left)
        fills.append((price, take))
        left -= take
    return fills, left


async def test_simulated_orders_walk_the_book_as_kalshi_matches(recorded):
    ticker, md, an, meta = recorded
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    book = await md.GetOrderbook(pb.GetOrderbookRequest(ticker=ticker, at=ts(at)), metadata=meta)
    rng = random.Random(4)
    for side, action in (("yes", "buy"), ("yes", "sell"), ("no", "buy"), ("no", "sell")):
        for quantity in (Decimal("1"), Decimal(rng.randrange(1, 90_000)) / 100,
                         Decimal("100000000")):
            got = await an.SimulateOrder(apb.SimulateOrderRequest(
                ticker=ticker, at=ts(at), side=side, action=action, quantity=str(quantity)),
                metadata=meta)
            fills, left = _expected_fill(book, side, action, quantity)
            assert [(Decimal(f.price), Decimal(f.quantity)) for f in got.fills] == fills
            filled = sum((q for _, q in fills), Decimal(0))
            cost = sum((p * q for p, q in fills), Decimal(0))
            assert Decimal(got.filled_quantity) == filled and got.partial == (left > 0)
            assert Decimal(got.total_cost) == cost
            if fills:
                avg = (cost / filled).quantize(Decimal("0.000001"))
                assert Decimal(got.average_price) == avg
                best = fills[0][0]
                assert Decimal(got.slippage) == (avg - best if action == "buy" else best - avg)
            assert got.continuity == book.continuity
            assert got.fee == "" or Decimal(got.fee) == sum(
                (Decimal("0.07") * q * p * (1 - p) for p, q in fills), Decimal(0)).quantize(
                Decimal("0.01"), rounding=ROUND_CEILING) or "multiplier" in got.fee_note
    budget = await an.SimulateOrder(apb.SimulateOrderRequest(
        ticker=ticker, at=ts(at), side="yes", action="buy", max_cost="5.00"), metadata=meta)
    assert Decimal(budget.total_cost) <= Decimal("5.00")


@pytest.mark.parametrize(("fields", "field"), [
    ({"side": "maybe", "action": "buy", "quantity": "1"}, "side"),
    ({"side": "yes", "action": "hold", "quantity": "1"}, "action"),
    ({"side": "yes", "action": "buy"}, "quantity"),
    ({"side": "yes", "action": "buy", "quantity": "1", "max_cost": "2"}, "quantity"),
    ({"side": "yes", "action": "buy", "quantity": "0"}, "quantity"),
    ({"side": "yes", "action": "buy", "quantity": "1.234"}, "quantity"),
    ({"side": "yes", "action": "sell", "max_cost": "2"}, "max_cost"),
])
async def test_bad_orders_are_refused_naming_the_field(edge, fields, field):
    async with grpc.aio.insecure_channel(edge.queryd_addr) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agrpc.AnalyticsServiceStub(channel).SimulateOrder(
                apb.SimulateOrderRequest(ticker="ANY-1", **fields), metadata=edge.grpc_metadata)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.value.details()
