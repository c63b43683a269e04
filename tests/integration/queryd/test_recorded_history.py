"""queryd over gRPC against history recorded from the simulator by the real ingestd.

Checks the promises of ListOrderbookDeltas / ListTrades paging (every row exactly once,
in order, tokens bound to the query), ListCandles (agrees exactly with the trades in the
window), GetOrderbook (equals the journal), the error statuses, and change labelling:
every served cause equals queryd.causes.label applied directly to the journal's changes
and prints (exact), agrees with the journal's true cause for >= 99% of deltas (printed,
quoted in docs/analytics.md), and the clock offset between a trade-caused change and its
print is measured (0 ms).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter, defaultdict
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
from queryd.causes import Change, Print, consumed_level, label
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
    # 1 µs: gRPC's timers are coarser than that, so on loopback a fast page can win the
    # race now and then; of 20 such calls, the ones that end must end DEADLINE_EXCEEDED.
    codes = []
    for _ in range(20):
        try:
            await stub.ListOrderbookDeltas(request, timeout=0.000001)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
    assert codes and set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}, codes
    answer = await stub.ListOrderbookDeltas(request, timeout=10)
    assert answer.deltas


async def test_orderbook_at_random_instants_equals_the_journal(recorded):
    """Property: at any instant inside coverage where ktape says CONTINUOUS, the book it
    serves is exactly the exchange's book (the simulator's journal). 300 CONTINUOUS instants
    drawn from a seeded generator over every recorded market (an instant before a
    market's coverage began is drawn again: under load, coverage starts later)."""
    import random

    stub, journal = recorded["stub"], recorded["journal"]
    rng = random.Random(20261124)
    tickers = sorted(journal.tickers())
    lo = int(recorded["start"].timestamp() * 1000)
    hi = int(recorded["end"].timestamp() * 1000)
    compared = draws = 0
    while compared < 300 and draws < 1000:  # instants before coverage do not count
        draws += 1
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
    assert compared == 300, (compared, draws)


# -- change labelling (OrderbookDelta.cause) against the journal's true causes -------

TRUTH = {"new": pb.DELTA_CAUSE_NEW, "cancel": pb.DELTA_CAUSE_CANCEL,
         "trade": pb.DELTA_CAUSE_TRADE}


def ms(t: timestamp_pb2.Timestamp) -> int:
    return t.seconds * 1000 + t.nanos // 1_000_000


def e4(price: str) -> int:
    return int(Decimal(price) * 10_000)


def e2(quantity: str) -> int:
    return int(Decimal(quantity) * 100)


async def _deltas(recorded, ticker: str, page_size: int = 1000) -> list[pb.OrderbookDelta]:
    return await _all_pages(recorded["stub"].ListOrderbookDeltas, pb.ListOrderbookDeltasRequest(
        ticker=ticker, start_time=ts(recorded["start"]), end_time=ts(recorded["end"]),
        page_size=page_size), "deltas")


def _side(delta: pb.OrderbookDelta) -> str:
    return "yes" if delta.side == pb.SIDE_YES else "no"


def _joined(deltas: list[pb.OrderbookDelta], journal, ticker: str
            ) -> tuple[list[tuple[pb.OrderbookDelta, dict]], int]:
    """Recorded DELTA entries paired with the journal's changes by (ts ms, side, price),
    in order within a key; keys whose counts differ are left out (returned as a count)."""
    by_key: dict[tuple, list[pb.OrderbookDelta]] = defaultdict(list)
    for d in deltas:
        if d.kind == pb.DELTA_KIND_DELTA:
            when = d.source_time if d.HasField("source_time") else d.ts
            by_key[(ms(when), _side(d), e4(d.price))].append(d)
    truth: dict[tuple, list[dict]] = defaultdict(list)
    for r in journal.changes(ticker):
        if r["k"] == "chg":
            truth[(r["t"], r["s"], r["p"])].append(r)
    pairs, unjoined = [], 0
    for key, group in by_key.items():
        if len(truth[key]) != len(group):
            unjoined += len(group)
            continue
        for d, r in zip(group, truth[key], strict=True):
            assert e2(d.delta) == r["d"], (key, d, r)
            pairs.append((d, r))
    return pairs, unjoined


async def test_causes_agree_with_the_simulators_truth(recorded):
    journal = recorded["journal"]
    confusion: Counter[tuple[int, int]] = Counter()
    unjoined = served = 0
    for ticker in sorted(journal.tickers()):
        deltas = await _deltas(recorded, ticker)
        served += sum(d.kind == pb.DELTA_KIND_DELTA for d in deltas)
        assert all(d.cause == pb.DELTA_CAUSE_UNSPECIFIED for d in deltas
                   if d.kind != pb.DELTA_KIND_DELTA)
        pairs, missed = _joined(deltas, journal, ticker)
        unjoined += missed
        confusion.update((TRUTH[r["c"]], d.cause) for d, r in pairs)
    joined = sum(confusion.values())
    agreed = sum(n for (truth, served_cause), n in confusion.items() if truth == served_cause)
    rate = agreed / joined
    names = pb.DeltaCause.Name
    print(f"\nchange labelling: {agreed}/{joined} joined deltas agree with the journal "
          f"({rate:.4%}); {unjoined} of {served} served deltas not joined; confusion "
          + ", ".join(f"{names(t)}->{names(s)}: {n}" for (t, s), n in sorted(confusion.items())))
    assert joined >= 0.98 * served and joined > 1000
    assert confusion[(pb.DELTA_CAUSE_TRADE, pb.DELTA_CAUSE_TRADE)] > 100
    assert rate >= 0.99


async def test_causes_equal_the_rule_applied_to_the_journal(recorded):
    """Exact: what queryd serves is the labelling rule over the journal's own changes and
    prints, for every joined delta of every market, read in small pages too (a page edge
    may cut one millisecond's changes in two)."""
    journal = recorded["journal"]
    compared = 0
    for ticker in sorted(journal.tickers()):
        changes = [r for r in journal.changes(ticker) if r["k"] == "chg"]
        direct = label([Change(r["t"] * 1000, r["s"], r["p"], r["d"]) for r in changes],
                       [Print(t["t"] * 1000, t["p"], t["c"], t["side"])
                        for t in journal.trades(ticker)])
        by_record = {id(r): cause for r, cause in zip(changes, direct, strict=True)}
        deltas = await _deltas(recorded, ticker)
        for d, r in _joined(deltas, journal, ticker)[0]:
            assert d.cause == by_record[id(r)], (ticker, d, r)
            compared += 1
        small = await _deltas(recorded, ticker, page_size=7)
        assert [d.cause for d in small] == [d.cause for d in deltas]
    assert compared > 1000


async def test_trade_caused_changes_carry_their_prints_millisecond(recorded):
    """The measured clock offset between a trade-caused change (journal truth) and the
    recorded print that caused it: the labeller matches on the same millisecond."""
    journal = recorded["journal"]
    offsets: Counter[int] = Counter()
    for ticker in sorted(journal.tickers()):
        trades = await _all_pages(recorded["stub"].ListTrades, pb.ListTradesRequest(
            ticker=ticker, start_time=ts(recorded["start"]), end_time=ts(recorded["end"]),
            page_size=1000), "trades")
        prints: dict[tuple, list[int]] = defaultdict(list)
        for t in trades:
            taker = "yes" if t.taker_side == pb.TAKER_SIDE_YES else "no"
            level = consumed_level(Print(ms(t.ts) * 1000, e4(t.yes_price), e2(t.count), taker,
                                         t.is_block_trade))
            if level is not None:
                prints[(level[1], level[2], e2(t.count))].append(level[0])
        for d, r in _joined(await _deltas(recorded, ticker), journal, ticker)[0]:
            if r["c"] == "trade":
                at = ms(d.source_time if d.HasField("source_time") else d.ts)
                candidates = prints[(_side(d), e4(d.price), -e2(d.delta))]
                if candidates:
                    offsets[min((c - at for c in candidates), key=abs)] += 1
    print(f"\ntrade-caused change minus its print, ms: {dict(sorted(offsets.items()))}")
    assert sum(offsets.values()) > 100
    assert set(offsets) == {0}
