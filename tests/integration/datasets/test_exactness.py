"""The files equal the API: a simulator recorded by a real ingestd (with dropped frames,
so there are gaps), one day built by the real builder, and every data type checked
against queryd's answers over gRPC — the book rebuilt from `book_changes` at hundreds of
instants, `book_top10_1s` and `quotes` at their timestamps, `trades` and `candles_1m`
row for row — and CSV.gz against Parquet value by value."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import gzip
import random
from decimal import Decimal
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest

from datasetd.build import DayBuilder
from datasetd.columns import COLUMNS
from datasetd.source import QuestSource
from ktape.clock import datetime_us, now_us, us_datetime
from ktape.datasets.names import DATA_TYPES, FileName
from ktape.datasets.storage import LocalStorage
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import FaultConfig, SimConfig
from tests.fixtures.recording import recorded_simulator

STATUS = {pb.CONTINUITY_STATUS_CONTINUOUS: "CONTINUOUS", pb.CONTINUITY_STATUS_GAP: "GAP",
          pb.CONTINUITY_STATUS_NOT_RECORDED: "NOT_RECORDED"}


def _p(e4: int) -> str:
    return f"{Decimal(e4) / 10_000:.4f}"


def _q(e2: int) -> str:
    return f"{Decimal(e2) / 100:.2f}"


def _ts(us: int):
    from google.protobuf import timestamp_pb2

    out = timestamp_pb2.Timestamp()
    out.FromDatetime(us_datetime(us))
    return out


def book_from_file(rows: list[dict], at_us: int) -> tuple[dict, dict, str]:
    """The book at `at_us` from a day file's rows alone, by the documented rule."""
    yes: dict[int, int] = {}
    no: dict[int, int] = {}
    snapshot = None
    first = None
    status = "CONTINUOUS"
    for row in rows:
        ts = datetime_us(row["ts"])
        if row["kind"] == "gap":
            start, end = datetime_us(row["gap_start_ts"]), row["gap_end_ts"]
            if start <= at_us and (end is None or at_us < datetime_us(end)):
                status = "GAP"
            continue
        if ts > at_us:
            continue
        first = ts if first is None else first
        if row["kind"] == "snapshot":
            key = (ts, row["sid"], row["seq"])
            if key != snapshot:
                yes.clear()
                no.clear()
                snapshot = key
        else:
            snapshot = None
        side = yes if row["side"] == "yes" else no
        if row["quantity_e2"] > 0:
            side[row["price_e4"]] = row["quantity_e2"]
        else:
            side.pop(row["price_e4"], None)
    if first is None:
        status = "NOT_RECORDED"
    return yes, no, status


def levels(side: dict[int, int]) -> list[tuple[str, str]]:
    return [(_p(p), _q(q)) for p, q in sorted(side.items(), reverse=True)]


def opt(value: int | None, fmt) -> str:
    return "" if value is None else fmt(value)


def api_levels(response: pb.GetOrderbookResponse) -> tuple[list, list, str]:
    return ([(lv.price, lv.quantity) for lv in response.yes],
            [(lv.price, lv.quantity) for lv in response.no], STATUS[response.continuity.status])


@pytest.fixture
async def built(edge, clean_questdb, tmp_path):
    config = SimConfig(markets=4, rate=250, seed=11, faults=FaultConfig(drop=0.004))
    async with recorded_simulator(clean_questdb, tmp_path / "rec", config):
        await asyncio.sleep(8)
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
    storage = LocalStorage(tmp_path / "datasets")
    source = QuestSource(clean_questdb.http, clean_questdb.conninfo, storage.scratch_dir())
    builder = DayBuilder(source, storage)
    day = dt.datetime.now(dt.UTC).date()
    report = await asyncio.to_thread(builder.build, day)
    yield builder, storage, report, source
    source.close()


async def test_every_file_equals_the_api(edge, built):
    builder, storage, report, _source = built
    manifest = builder.manifest(report.day)
    assert report.series_built and not report.closed
    assert {e.condition for e in manifest.files.values()} == {"PENDING"}
    markets = sorted({e.ticker for e in manifest.files.values() if e.ticker})
    assert len(markets) >= 4
    by_rows = sorted(markets, key=lambda t: -manifest.files[
        f"book_changes/{report.day}/{t}.parquet"].rows)
    rng = random.Random(5)
    channel = grpc.aio.insecure_channel(edge.queryd_addr)
    stub = pb_grpc.MarketDataServiceStub(channel)
    meta = edge.grpc_metadata
    day_start = datetime_us(dt.datetime.combine(report.day, dt.time(), dt.UTC))
    try:
        for ticker in by_rows[:2]:
            def read(data_type: str, ticker: str = ticker) -> list[dict]:
                name = str(FileName(data_type, report.day, ticker))
                return pq.read_table(storage.root / name).to_pylist()

            changes = read("book_changes")
            assert any(r["kind"] == "snapshot" for r in changes)
            stamps = [datetime_us(r["ts"]) for r in changes if r["kind"] != "gap"]
            lo, hi = stamps[0] - 1_000_000, stamps[-1] + 1_000_000
            instants = rng.sample(stamps, min(100, len(stamps))) + [
                rng.randrange(lo, hi) for _ in range(100)]
            for at in instants:
                yes, no, status = book_from_file(changes, at)
                got = await stub.GetOrderbook(pb.GetOrderbookRequest(ticker=ticker, at=_ts(at)),
                                              metadata=meta)
                assert api_levels(got) == (levels(yes), levels(no), status), (ticker, at)

            top10 = read("book_top10_1s")
            assert top10 and all(datetime_us(r["ts"]) % 1_000_000 == 0 for r in top10)
            for row in rng.sample(top10, min(40, len(top10))):
                got = await stub.GetOrderbook(pb.GetOrderbookRequest(
                    ticker=ticker, at=_ts(datetime_us(row["ts"])), depth=10),
                    metadata=meta)
                want = tuple([(_p(row[f"{s}_{i}_price_e4"]), _q(row[f"{s}_{i}_quantity_e2"]))
                              for i in range(1, 11) if row[f"{s}_{i}_price_e4"] is not None]
                             for s in ("yes", "no"))
                assert api_levels(got) == (*want, row["continuity"]), row["ts"]

            quotes = read("quotes")
            assert len(quotes) > 5
            for row in rng.sample(quotes, min(40, len(quotes))):
                got = await stub.GetOrderbook(pb.GetOrderbookRequest(
                    ticker=ticker, at=_ts(datetime_us(row["ts"])), depth=1), metadata=meta)
                yes, no, status = api_levels(got)
                assert (yes[:1], no[:1], status) == (
                    [(_p(row["yes_bid_price_e4"]), _q(row["yes_bid_quantity_e2"]))]
                    if row["yes_bid_price_e4"] is not None else [],
                    [(_p(row["no_bid_price_e4"]), _q(row["no_bid_quantity_e2"]))]
                    if row["no_bid_price_e4"] is not None else [], row["continuity"])

            api_trades, token = [], ""
            while True:
                page = await stub.ListTrades(pb.ListTradesRequest(
                    ticker=ticker, start_time=_ts(day_start), end_time=_ts(report.end_us),
                    page_size=1000, page_token=token), metadata=meta)
                api_trades += [(t.trade_id, t.yes_price, t.no_price, t.count, t.seq)
                               for t in page.trades]
                token = page.next_page_token
                if not token:
                    break
            file_trades = [(r["trade_id"], _p(r["yes_price_e4"]), _p(r["no_price_e4"]),
                            _q(r["count_e2"]), r["seq"]) for r in read("trades")]
            assert file_trades == api_trades and file_trades

            candles = await stub.ListCandles(pb.ListCandlesRequest(
                ticker=ticker, start_time=_ts(day_start), end_time=_ts(report.end_us),
                interval="1m"), metadata=meta)
            api_candles = [(datetime_us(c.start_time.ToDatetime(dt.UTC)), c.open, c.high, c.low,
                            c.close, c.volume, c.trade_count, c.yes_bid_close, c.yes_ask_close,
                            c.open_interest) for c in candles.candles]
            file_candles = [(datetime_us(r["ts"]), _p(r["open_e4"]), _p(r["high_e4"]),
                             _p(r["low_e4"]), _p(r["close_e4"]), _q(r["volume_e2"]),
                             r["trade_count"], opt(r["yes_bid_close_e4"], _p),
                             opt(r["yes_ask_close_e4"], _p), opt(r["open_interest_e2"], _q))
                            for r in read("candles_1m")]
            assert file_candles == api_candles and file_candles
    finally:
        await channel.close()


def test_csv_and_parquet_hold_the_same_rows(built):
    builder, storage, report, _source = built
    manifest = builder.manifest(report.day)
    series = sorted({e.series_ticker for e in manifest.files.values()})[0]
    for data_type in DATA_TYPES:
        name = FileName(data_type, report.day, "", series)
        parquet = pq.read_table(storage.root / str(name)).to_pylist()
        with gzip.open(storage.root / str(name.with_format("csv.gz")), "rt", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(parquet) == manifest.files[str(name)].rows
        for want, got in zip(parquet, rows, strict=True):
            for column in COLUMNS[data_type]:
                value, text = want[column.name], got[column.csv_name]
                if value is None:
                    assert text == "", (column.name, text)
                elif column.scale is not None:
                    assert Decimal(text) == Decimal(value).scaleb(-column.scale), column.name
                    assert len(text.split(".")[1]) == column.scale
                elif isinstance(value, dt.datetime):
                    assert text == value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                elif isinstance(value, bool):
                    assert text == str(value).lower()
                else:
                    assert text == str(value), column.name


def test_a_closed_day_with_gaps_is_degraded_with_exactly_its_gap_rows(built, clean_questdb):
    _builder, storage, report, source = built
    end_of_day = datetime_us(dt.datetime.combine(report.day + dt.timedelta(days=1), dt.time(),
                                                 dt.UTC))
    started = now_us()
    closed = DayBuilder(source, storage,  # an hour after the day's end, and time moves on
                        clock=lambda: end_of_day + 3_600_000_000 + now_us() - started)
    again = closed.build(report.day)
    assert again.closed and again.series_built  # PENDING files are rebuilt once closed
    manifest = closed.manifest(report.day)
    with clean_questdb.connect() as conn:
        gaps = conn.execute("SELECT ticker, coalesce(start_ts, ts), end_ts, reason FROM gaps "
                            "WHERE ticker != '*'").fetchall()
    assert gaps, "the dropped frames made no gap"
    for ticker in {g[0] for g in gaps}:
        entry = manifest.files[f"book_changes/{report.day}/{ticker}.parquet"]
        assert entry.condition == "DEGRADED"
        markers = [r for r in pq.read_table(storage.root / entry.name).to_pylist()
                   if r["kind"] == "gap"]
        assert sorted((datetime_us(r["gap_start_ts"]),
                       None if r["gap_end_ts"] is None else datetime_us(r["gap_end_ts"]),
                       r["gap_reason"]) for r in markers) == sorted(
            (datetime_us(s), None if e is None else datetime_us(e), str(why))
            for t, s, e, why in gaps if t == ticker)
    quiet = [e for e in manifest.files.values() if e.ticker and e.ticker not in {g[0] for g in gaps}]
    assert all(e.condition == "AVAILABLE" for e in quiet)
    # unchanged rows: nothing rebuilt, nothing republished
    before = {n: (e.sha256, e.last_modified_us) for n, e in manifest.files.items()}
    third = closed.build(report.day)
    assert not third.series_built and third.series_fresh
    assert {n: (e.sha256, e.last_modified_us) for n, e in closed.manifest(report.day).files.items()} == before
    assert list(Path(storage.scratch_dir()).iterdir()) == []

    # a crash while publishing: no scratch file left, the manifest still the old one, and
    # the next build finishes the job
    publish, calls = storage.publish, []

    def failing(local, name):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full")
        publish(local, name)

    storage.publish = failing
    with pytest.raises(OSError):
        closed.build(report.day, force=True)
    storage.publish = publish
    assert list(Path(storage.scratch_dir()).iterdir()) == []
    assert {n: e.sha256 for n, e in closed.manifest(report.day).files.items()} == {
        n: sha for n, (sha, _) in before.items()}

    # a late row in one market rebuilds exactly its series and bumps its files' time
    entry = next(e for e in manifest.files.values()
                 if e.ticker and e.data_type == "book_changes" and e.last_ts_us)
    late_us = entry.last_ts_us + 1_000
    with clean_questdb.connect() as conn:
        conn.execute("INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, "
                     "delta_e2, kind, seq, sid, recv_ts) VALUES (%s, %s, 'yes', 100, 500, 500, "
                     "'delta', 999999, 99, %s)", (us_datetime(late_us), entry.ticker,
                                                  us_datetime(late_us)))
        wait_for_wal(conn)
    healed = closed.build(report.day)
    assert healed.series_built == [entry.series_ticker]
    after = closed.manifest(report.day).files
    changed = {n for n in after if after[n].sha256 != before[n][0]}
    assert str(FileName("book_changes", report.day, entry.ticker)) in changed
    assert all(after[n].series_ticker == entry.series_ticker for n in changed)
    assert all(after[n].last_modified_us > before[n][1] for n in changed)
    assert all(after[n].last_modified_us == before[n][1] for n in after if n not in changed)
