"""Seq order is time order: books after mid-feed snapshots under lagged delivery.

Production Kalshi delivers frames seconds behind their `ts_ms` (PROTOCOL.md §5.11) and a
snapshot carries no exchange time, so a snapshot stamped by its receive time is followed
by deltas with higher seq but *earlier* exchange stamps. The simulator reproduces it
(`delivery_lag_ms`, snapshots without `sending_ts_ms`); mid-feed snapshots come from a
dropped frame (get_snapshot), a disconnect, a channel error and an ingestd restart.

At hundreds of random instants around those snapshots, `GetOrderbook`, a client-side
replay of `StreamOrderbook` and a rebuild from `ListOrderbookDeltas` must each equal the
exchange's book (the journal) or say GAP — never a wrong CONTINUOUS book.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import grpc
import psycopg
import pytest
import pytest_asyncio
from google.protobuf import timestamp_pb2

from ingestd.app import Ingestd
from ingestd.config import IngestSettings
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig, SimServer
from queryd.server import build_server
from tests.integration.ingestd.test_record_against_journal import _control, recorder_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

LAG_MS = 600
BEFORE_US, AFTER_US = 300_000, 2_000_000  # sampled window around each snapshot


def ts(us: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromMicroseconds(us)
    return out


def us_of(value: timestamp_pb2.Timestamp) -> int:
    return value.ToMicroseconds()


def e4(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 10_000 + int(frac.ljust(4, "0"))


def e2(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("-").partition(".")
    return sign * (int(whole) * 100 + int(frac.ljust(2, "0")))


def ladder(levels: Iterable[pb.PriceLevel]) -> dict[int, int]:
    return {e4(level.price): e2(level.quantity) for level in levels}


@dataclass
class ClientBook:
    """What an API client rebuilds from delta entries, applied in the order served."""

    yes: dict[int, int] = field(default_factory=dict)
    no: dict[int, int] = field(default_factory=dict)
    states: list[tuple[int, dict[int, int], dict[int, int]]] = field(default_factory=list)
    gaps: list[tuple[int, int | None]] = field(default_factory=list)
    _snapshot: tuple[int, int, int] | None = None

    def apply(self, entry: pb.OrderbookDelta) -> None:
        at = us_of(entry.ts)
        if entry.kind == pb.DELTA_KIND_GAP:
            end = us_of(entry.gap.end_time) if entry.gap.HasField("end_time") else None
            self.gaps.append((us_of(entry.gap.start_time), end))
            return
        if entry.kind == pb.DELTA_KIND_SNAPSHOT:
            key = (at, entry.sid, entry.seq)
            if key != self._snapshot:  # the first row of a snapshot replaces the book
                self.yes, self.no, self._snapshot = {}, {}, key
        else:
            self._snapshot = None
        ladder_ = self.yes if entry.side == pb.SIDE_YES else self.no
        qty = e2(entry.quantity)
        if qty:
            ladder_[e4(entry.price)] = qty
        else:
            ladder_.pop(e4(entry.price), None)
        if self.states and self.states[-1][0] > at:
            raise AssertionError(f"entries out of time order: {at} after {self.states[-1][0]}")
        self.states.append((at, dict(self.yes), dict(self.no)))

    def at(self, t_us: int) -> tuple[dict[int, int], dict[int, int]] | None:
        """The book after every entry stamped <= t_us; None inside a gap marker's span
        or before the first entry."""
        if any(start <= t_us and (end is None or t_us < end) for start, end in self.gaps):
            return None
        state = None
        for stamp, yes, no in self.states:
            if stamp > t_us:
                break
            state = (yes, no)
        return state


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def lagged(questdb, tmp_path_factory) -> AsyncIterator[dict]:
    questdb.reset()
    data_dir = tmp_path_factory.mktemp("lagged")
    config = SimConfig(markets=8, rate=400, seed=13, delivery_lag_ms=LAG_MS,
                       sending_ts="no_snapshots")
    async with SimServer(config) as sim:
        settings = recorder_settings(questdb, data_dir, sim,
                                     KTAPE_PAGE_TOKEN_SECRET="book-order-tests")
        ingest = IngestSettings(checkpoint_every_changes=30, flush_interval_ms=100)

        async def run_recorder(body) -> None:  # type: ignore[no-untyped-def]
            stop = asyncio.Event()
            task = asyncio.create_task(Ingestd(settings, ingest).run(stop))
            try:
                await body()
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)

        async def first_run() -> None:
            await asyncio.sleep(3.0)
            await _control(sim.port, "drop")  # seq jump -> get_snapshot, delivered late
            await asyncio.sleep(3.0)
            await _control(sim.port, "disconnect")  # new subscription, new snapshots
            await asyncio.sleep(3.5)

        async def second_run() -> None:  # after a restart: fresh snapshots mid-feed
            await asyncio.sleep(3.0)
            await _control(sim.port, "error_10")
            await asyncio.sleep(3.5)
            sim.config.rate = 0
            await asyncio.sleep(LAG_MS / 1000 + 1.0)

        await run_recorder(first_run)
        with questdb.connect() as conn:
            wait_for_wal(conn)  # the restart lookup sees what the first run wrote
        await run_recorder(second_run)
        journal = sim.journal
    with questdb.connect() as conn:
        wait_for_wal(conn)
        snapshots = conn.execute(
            "SELECT ticker, ts, sid, seq FROM book_checkpoints WHERE reason = 'snapshot' "
            "ORDER BY ts").fetchall()
        try:  # deltas whose exchange stamp is earlier than the book time they were given
            moved = conn.execute("SELECT count() FROM book_changes WHERE source_ts IS NOT NULL "
                                 "AND kind = 'delta'").fetchone()[0]
        except psycopg.Error:  # a schema without source_ts (before the fix)
            moved = None
    running, pool, _service = await build_server(settings, addr="127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield {"stub": pb_grpc.MarketDataServiceStub(channel), "journal": journal,
               "snapshots": [(str(t), int(s.replace(tzinfo=dt.UTC).timestamp() * 1_000_000))
                             for t, s, _sid, _seq in snapshots],
               "moved": moved, "conninfo": questdb.conninfo}
    finally:
        await channel.close()
        await running.stop(0)
        await pool.close()


def instants(snapshots: list[tuple[str, int]], per_snapshot: int, seed: int
             ) -> list[tuple[str, int, int]]:
    """(ticker, snapshot_us, instant_us): random µs instants around each snapshot."""
    rng = random.Random(seed)
    return [(ticker, snap_us, snap_us + rng.randrange(-BEFORE_US, AFTER_US))
            for ticker, snap_us in snapshots for _ in range(per_snapshot)]


def exchange_book(journal, ticker: str, t_us: int) -> tuple[dict[int, int], dict[int, int]]:
    """The exchange's book at a µs instant: every change stamped (in ms) at or before it."""
    return journal.book_at(ticker, t_us // 1000)


def matches_at_random_instants(book: ClientBook, journal, ticker: str, rng: random.Random,
                               start_us: int, end_us: int, count: int = 25) -> int:
    """How many of `count` random instants in [start, end) the client's book answered
    (outside gaps); each answer must be the exchange's book."""
    checked = 0
    for t_us in (rng.randrange(start_us, end_us) for _ in range(count)):
        state = book.at(t_us)
        if state is None:
            continue
        assert state == exchange_book(journal, ticker, t_us), (ticker, t_us)
        checked += 1
    return checked


async def test_the_scenario_happened(lagged) -> None:  # async: the module's asyncio mark
    mid_feed = len(lagged["snapshots"]) - len({t for t, _ in lagged["snapshots"]})
    assert mid_feed >= 16, lagged["snapshots"]  # snapshots after the first of each market
    # deltas stamped before their snapshot's time did arrive
    assert lagged["moved"] is not None and lagged["moved"] > 0


async def test_get_orderbook_is_the_exchange_book_or_gap(lagged) -> None:
    stub, journal = lagged["stub"], lagged["journal"]
    checked = gaps = 0
    for ticker, _snap, t_us in instants(lagged["snapshots"], 12, seed=1):
        got = await stub.GetOrderbook(pb.GetOrderbookRequest(ticker=ticker, at=ts(t_us)))
        status = got.continuity.status
        if status != pb.CONTINUITY_STATUS_CONTINUOUS:
            gaps += 1
            continue
        assert (ladder(got.yes), ladder(got.no)) == exchange_book(journal, ticker, t_us), (
            ticker, t_us, got.seq)
        checked += 1
    print(f"GetOrderbook: {checked} instants equal the exchange, {gaps} GAP/NOT_RECORDED")
    assert checked >= 300, (checked, gaps)


async def test_stream_replay_is_the_exchange_book_or_gap(lagged) -> None:
    stub, journal = lagged["stub"], lagged["journal"]
    rng = random.Random(2)
    checked = 0
    for ticker, snap_us in rng.sample(lagged["snapshots"], 12):
        start_us, end_us = snap_us - BEFORE_US, snap_us + AFTER_US
        call = stub.StreamOrderbook(pb.StreamOrderbookRequest(ticker=ticker,
                                                              start_time=ts(start_us)))
        book = ClientBook()
        try:
            async with asyncio.timeout(30):
                async for message in call:
                    which = message.WhichOneof("payload")
                    if which == "snapshot":
                        snap = message.snapshot
                        book.yes, book.no = ladder(snap.yes), ladder(snap.no)
                        if snap.continuity.status == pb.CONTINUITY_STATUS_CONTINUOUS:
                            book.states.append((start_us, dict(book.yes), dict(book.no)))
                        else:
                            book.gaps.append((start_us, start_us + 1))
                    elif which == "delta":
                        # gap markers of gaps detected later come first: not the end
                        if message.delta.kind != pb.DELTA_KIND_GAP and \
                                us_of(message.delta.ts) > end_us:
                            break
                        book.apply(message.delta)
                    else:  # a heartbeat: history is exhausted
                        break
        finally:
            call.cancel()
        checked += matches_at_random_instants(book, journal, ticker, rng, start_us, end_us)
    print(f"StreamOrderbook replay: {checked} instants equal the exchange")
    assert checked >= 150, checked


async def test_deltas_pages_rebuild_the_exchange_book_or_gap(lagged) -> None:
    stub, journal = lagged["stub"], lagged["journal"]
    rng = random.Random(3)
    checked = with_source_time = 0
    # windows that begin at a snapshot, so the page's first rows are a whole book
    for ticker, snap_us in rng.sample(lagged["snapshots"], 16):
        end_us = snap_us + AFTER_US
        book, token = ClientBook(), ""
        while True:
            page = await stub.ListOrderbookDeltas(pb.ListOrderbookDeltasRequest(
                ticker=ticker, start_time=ts(snap_us), end_time=ts(end_us), page_size=37,
                page_token=token))
            for entry in page.deltas:
                book.apply(entry)
                if entry.HasField("source_time"):  # moved up: its own ts_ms is kept
                    assert us_of(entry.source_time) < us_of(entry.ts)
                    with_source_time += 1
            token = page.next_page_token
            if not token:
                break
        if not book.states or book.states[0][0] != snap_us:
            continue  # the window must start with the snapshot's rows
        checked += matches_at_random_instants(book, journal, ticker, rng, snap_us, end_us)
    print(f"ListOrderbookDeltas rebuild: {checked} instants equal the exchange, "
          f"{with_source_time} entries moved up")
    assert checked >= 150, checked
    assert with_source_time > 0


def best_bid_and_ask(book: tuple[dict[int, int], dict[int, int]]) -> tuple[str, str]:
    """Best YES bid and ask (1 - best NO bid) as ListCandles prints them."""
    yes, no = book
    def dollars(e4_: int) -> str:
        return f"{e4_ // 10_000}.{e4_ % 10_000:04d}"
    return (dollars(max(yes)) if yes else "", dollars(10_000 - max(no)) if no else "")


async def test_candle_book_closes_are_the_exchange_book_or_gap(lagged) -> None:
    """Each candle's yes bid/ask close is the book just before its end (a replay of the
    stored changes in their order), checked where GetOrderbook says CONTINUOUS."""
    stub, journal = lagged["stub"], lagged["journal"]
    rng = random.Random(4)
    checked = 0
    for ticker, snap_us in rng.sample(lagged["snapshots"], 24):
        end_us = snap_us + rng.randrange(0, AFTER_US)
        got = await stub.ListCandles(pb.ListCandlesRequest(
            ticker=ticker, start_time=ts(end_us - 30_000_000), end_time=ts(end_us),
            interval="1m"))
        for candle in got.candles:
            close_us = min(us_of(candle.start_time) + 60_000_000, end_us) - 1
            book = await stub.GetOrderbook(pb.GetOrderbookRequest(ticker=ticker,
                                                                  at=ts(close_us)))
            if book.continuity.status != pb.CONTINUITY_STATUS_CONTINUOUS:
                continue
            assert (candle.yes_bid_close, candle.yes_ask_close) == best_bid_and_ask(
                exchange_book(journal, ticker, close_us)), (ticker, close_us)
            checked += 1
    print(f"ListCandles: {checked} book closes equal the exchange")
    assert checked >= 10, checked


async def test_each_change_row_carries_the_replayed_books_top(lagged) -> None:
    """The top ingestd writes on every change (migration 7; candles' closes read it) is
    the top of the book a replay of the stored rows gives after that row's message:
    across this recording's dropped frame, reconnect, channel error and restart, with
    deltas moved up behind lagged snapshots."""
    with psycopg.connect(lagged["conninfo"], autocommit=True) as conn:
        rows = conn.execute(
            "SELECT ticker, cast(ts AS LONG), sid, seq, kind, side, price_e4, qty_after_e2, "
            "best_yes_bid_e4, best_no_bid_e4 FROM book_changes "
            "ORDER BY ticker, ts, sid, seq").fetchall()
    books: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
    snapshot_of: dict[str, tuple] = {}
    messages: list[tuple[str, tuple, list[tuple]]] = []
    for row in rows:  # grouped into messages: (ticker, book time, sid, seq)
        key = (row[1], row[2], row[3])
        if messages and messages[-1][0] == row[0] and messages[-1][1] == key:
            messages[-1][2].append(row)
        else:
            messages.append((row[0], key, [row]))
    checked = 0
    for ticker, key, group in messages:
        yes, no = books.setdefault(ticker, ({}, {}))
        if group[0][4] == "snapshot" and snapshot_of.get(ticker) != key:
            yes.clear()
            no.clear()
            snapshot_of[ticker] = key
        for row in group:
            ladder = yes if row[5] == "yes" else no
            if row[7] > 0:
                ladder[row[6]] = row[7]
            else:
                ladder.pop(row[6], None)
        top = (max(yes) if yes else 0, max(no) if no else 0)
        for row in group:
            assert (row[8], row[9]) == top, (ticker, key, row)
            checked += 1
    print(f"book tops: {checked} rows of {len(messages)} messages equal the replay")
    assert checked == len(rows) > 1000
