"""Change labelling on a simulator recording (sim → ingestd → QuestDB → queryd), checked
against the simulator's journal, which knows why every level changed.

- exactness: every served cause equals queryd.causes.label computed directly from the
  journal's own changes and prints (the SQL, the paging and the page-edge reads lose
  nothing and add nothing);
- agreement: the served causes agree with the journal's true causes for >= 99% of deltas
  (the number is printed, and quoted in docs/analytics.md);
- the clock offset between a trade-caused change and its print, measured: 0 ms.
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

from ktape.config import load_settings
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig
from queryd.causes import Change, Print, consumed_level, label
from queryd.server import build_server
from tests.fixtures.recording import recorded_simulator

TRUTH = {"new": pb.DELTA_CAUSE_NEW, "cancel": pb.DELTA_CAUSE_CANCEL,
         "trade": pb.DELTA_CAUSE_TRADE}


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def ms(t: timestamp_pb2.Timestamp) -> int:
    return t.seconds * 1000 + t.nanos // 1_000_000


def e4(price: str) -> int:
    return int(Decimal(price) * 10_000)


def e2(quantity: str) -> int:
    return int(Decimal(quantity) * 100)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def recording(questdb, tmp_path_factory) -> AsyncIterator[dict]:
    questdb.reset()
    data_dir = tmp_path_factory.mktemp("causes")
    began = dt.datetime.now(dt.UTC)
    async with recorded_simulator(questdb, data_dir, SimConfig(markets=4, rate=400, seed=18)) \
            as (_recorder, sim):
        await asyncio.sleep(8)
        sim.config.rate = 0
        await asyncio.sleep(1)
        journal = sim.journal
    with questdb.connect() as conn:
        wait_for_wal(conn)
    settings = load_settings({**questdb.env(), "KTAPE_DATA_DIR": str(data_dir)})
    running, pool, _service = await build_server(settings, addr="127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield {"stub": pb_grpc.MarketDataServiceStub(channel), "journal": journal,
               "start": began - dt.timedelta(seconds=5),
               "end": dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)}
    finally:
        await channel.close()
        await running.stop(0)
        await pool.close()


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _pages(call, request, field: str) -> list:
    items: list = []
    while True:
        page = await call(request)
        items += getattr(page, field)
        if not page.next_page_token:
            return items
        request.page_token = page.next_page_token


async def _deltas(recording, ticker: str, page_size: int = 1000) -> list[pb.OrderbookDelta]:
    return await _pages(recording["stub"].ListOrderbookDeltas, pb.ListOrderbookDeltasRequest(
        ticker=ticker, start_time=ts(recording["start"]), end_time=ts(recording["end"]),
        page_size=page_size), "deltas")


def _side(delta: pb.OrderbookDelta) -> str:
    return "yes" if delta.side == pb.SIDE_YES else "no"


def _joined(deltas: list[pb.OrderbookDelta], journal, ticker: str
            ) -> tuple[list[tuple[pb.OrderbookDelta, dict]], int]:
    """Recorded DELTA entries paired with the journal's changes by (ts ms, side, price),
    in order within a key; keys whose counts differ are left out (returned as a count)."""
    recorded: dict[tuple, list[pb.OrderbookDelta]] = defaultdict(list)
    for d in deltas:
        if d.kind == pb.DELTA_KIND_DELTA:
            when = d.source_time if d.HasField("source_time") else d.ts
            recorded[(ms(when), _side(d), e4(d.price))].append(d)
    truth: dict[tuple, list[dict]] = defaultdict(list)
    for r in journal.changes(ticker):
        if r["k"] == "chg":
            truth[(r["t"], r["s"], r["p"])].append(r)
    pairs, unjoined = [], 0
    for key, group in recorded.items():
        if len(truth[key]) != len(group):
            unjoined += len(group)
            continue
        for d, r in zip(group, truth[key], strict=True):
            assert e2(d.delta) == r["d"], (key, d, r)
            pairs.append((d, r))
    return pairs, unjoined


async def test_causes_agree_with_the_simulators_truth(recording):
    journal = recording["journal"]
    confusion: Counter[tuple[int, int]] = Counter()
    unjoined = served = 0
    for ticker in sorted(journal.tickers()):
        deltas = await _deltas(recording, ticker)
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


async def test_causes_equal_the_rule_applied_to_the_journal(recording):
    """Exact: what queryd serves is the labelling rule over the journal's own changes and
    prints, for every joined delta of every market, read in small pages too (a page edge
    may cut one millisecond's changes in two)."""
    journal = recording["journal"]
    compared = 0
    for ticker in sorted(journal.tickers()):
        changes = [r for r in journal.changes(ticker) if r["k"] == "chg"]
        direct = label([Change(r["t"] * 1000, r["s"], r["p"], r["d"]) for r in changes],
                       [Print(t["t"] * 1000, t["p"], t["c"], t["side"])
                        for t in journal.trades(ticker)])
        by_record = {id(r): cause for r, cause in zip(changes, direct, strict=True)}
        deltas = await _deltas(recording, ticker)
        for d, r in _joined(deltas, journal, ticker)[0]:
            assert d.cause == by_record[id(r)], (ticker, d, r)
            compared += 1
        small = await _deltas(recording, ticker, page_size=7)
        assert [d.cause for d in small] == [d.cause for d in deltas]
    assert compared > 1000


async def test_trade_caused_changes_carry_their_prints_millisecond(recording):
    """The measured clock offset between a trade-caused change (journal truth) and the
    recorded print that caused it: the labeller matches on the same millisecond."""
    journal = recording["journal"]
    offsets: Counter[int] = Counter()
    for ticker in sorted(journal.tickers()):
        trades = await _pages(recording["stub"].ListTrades, pb.ListTradesRequest(
            ticker=ticker, start_time=ts(recording["start"]), end_time=ts(recording["end"]),
            page_size=1000), "trades")
        prints: dict[tuple, list[int]] = defaultdict(list)
        for t in trades:
            taker = "yes" if t.taker_side == pb.TAKER_SIDE_YES else "no"
            level = consumed_level(Print(ms(t.ts) * 1000, e4(t.yes_price), e2(t.count), taker,
                                         t.is_block_trade))
            if level is not None:
                prints[(level[1], level[2], e2(t.count))].append(level[0])
        for d, r in _joined(await _deltas(recording, ticker), journal, ticker)[0]:
            if r["c"] == "trade":
                at = ms(d.source_time if d.HasField("source_time") else d.ts)
                candidates = prints[(_side(d), e4(d.price), -e2(d.delta))]
                if candidates:
                    offsets[min((c - at for c in candidates), key=abs)] += 1
    print(f"\ntrade-caused change minus its print, ms: {dict(sorted(offsets.items()))}")
    assert sum(offsets.values()) > 100
    assert set(offsets) == {0}
