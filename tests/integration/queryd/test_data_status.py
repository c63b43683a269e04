"""DataStatusService over gRPC and real QuestDB rows: per-day conditions with the exact gap
intervals, incidents grouped from a reconnect, bad input named, no key needed."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import timestamp_pb2
from psycopg_pool import AsyncConnectionPool

from ktape.grpc_server import start_server
from ktape.marketdata.v1 import data_status_pb2 as pb
from ktape.marketdata.v1 import data_status_pb2_grpc as pb_grpc
from ktape.paging import PageTokens
from ktape.schema.wal import wait_for_wal
from queryd.data_status import DataStatusService

DAY = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)


def at(hours: float) -> dt.datetime:
    return DAY + dt.timedelta(hours=hours)


def _seed(conn) -> None:
    market = ("INSERT INTO markets (ts, ticker, event_ticker, series_ticker, status, open_time,"
              " close_time) VALUES (%s, %s, 'KXT-E', 'KXT', 'active', %s, %s)")
    conn.execute(market, (at(-48), "KXT-A", at(-48), at(72)))
    conn.execute(market, (at(-48), "KXT-B", at(-48), at(72)))
    conn.execute(market, (at(-48), "KXT-C", at(-48), at(72)))  # never recorded
    cp = ("INSERT INTO book_checkpoints (ts, ticker, reason, seq, sid, recv_ts, ts_source,"
          " yes_levels, no_levels) VALUES (%s, %s, 'snapshot', 1, 1, %s, 'receive', '4200:100', '')")
    ch = ("INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, delta_e2, kind,"
          " seq, sid, recv_ts, ts_source) VALUES (%s, %s, 'yes', 4200, 100, 100, 'delta', %s, 1,"
          " %s, 'exchange')")
    for ticker in ("KXT-A", "KXT-B"):
        conn.execute(cp, (at(-24), ticker, at(-24)))
        for i in range(5):
            conn.execute(ch, (at(1 + i), ticker, i + 2, at(1 + i)))
    # a reconnect that hit both markets at 10:00 for 30 and 45 minutes
    gap = ("INSERT INTO gaps (ts, ticker, reason, start_ts, end_ts, sid) VALUES "
           "(%s, %s, 'reconnect', %s, %s, 1)")
    conn.execute(gap, (at(10) + dt.timedelta(seconds=1), "KXT-A", at(10), at(10.5)))
    conn.execute(gap, (at(10) + dt.timedelta(seconds=1.2), "KXT-B", at(10), at(10.75)))
    wait_for_wal(conn)


@pytest.fixture
async def status(clean_questdb, tmp_path):
    with clean_questdb.connect() as conn:
        _seed(conn)
    pool = AsyncConnectionPool(clean_questdb.conninfo, min_size=1, max_size=4, open=False,
                               kwargs={"autocommit": True})
    await pool.open(wait=True, timeout=30)
    service = DataStatusService(pool, PageTokens(b"k" * 32))
    running = await start_server(
        "127.0.0.1:0", [lambda s: pb_grpc.add_DataStatusServiceServicer_to_server(service, s)],
        ["ktape.marketdata.v1.DataStatusService"])
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield pb_grpc.DataStatusServiceStub(channel)
    finally:
        await channel.close()
        await running.server.stop(None)
        await pool.close()


async def test_a_series_day_lists_each_market_with_its_exact_gap_intervals(status):
    reply = await status.ListDataConditions(pb.ListDataConditionsRequest(
        series_ticker="KXT", start_date="2026-11-24"))
    by_ticker = {c.ticker: c for c in reply.conditions}
    assert sorted(by_ticker) == ["KXT-A", "KXT-B", "KXT-C"]
    a, b, c = by_ticker["KXT-A"], by_ticker["KXT-B"], by_ticker["KXT-C"]
    assert a.condition == pb.DATA_CONDITION_DEGRADED and a.date == "2026-11-24"
    assert [(g.start_time.ToDatetime(dt.UTC), g.end_time.ToDatetime(dt.UTC), g.reason)
            for g in a.gaps] == [(at(10), at(10.5), "reconnect")]
    assert a.total_gap_duration.ToTimedelta() == dt.timedelta(minutes=30)
    assert b.total_gap_duration.ToTimedelta() == dt.timedelta(minutes=45)
    assert a.change_count == 5 and a.first_change_time.ToDatetime(dt.UTC) == at(1)
    assert c.condition == pb.DATA_CONDITION_MISSING  # open all day, nothing recorded


async def test_a_day_without_gaps_is_available_and_paging_walks_every_row(status):
    reply = await status.ListDataConditions(pb.ListDataConditionsRequest(
        ticker="KXT-A", start_date="2026-11-22", end_date="2026-11-25"))
    assert [(c.date, pb.DataCondition.Name(c.condition)) for c in reply.conditions] == [
        ("2026-11-22", "DATA_CONDITION_MISSING"),  # open, recording began on the 23rd
        ("2026-11-23", "DATA_CONDITION_AVAILABLE"),  # a quiet day: proven by no gap
        ("2026-11-24", "DATA_CONDITION_DEGRADED"),
        ("2026-11-25", "DATA_CONDITION_AVAILABLE")]
    first = await status.ListDataConditions(pb.ListDataConditionsRequest(
        series_ticker="KXT", start_date="2026-11-24", page_size=2))
    rest = await status.ListDataConditions(pb.ListDataConditionsRequest(
        series_ticker="KXT", start_date="2026-11-24", page_size=2,
        page_token=first.next_page_token))
    assert [c.ticker for c in [*first.conditions, *rest.conditions]] == ["KXT-A", "KXT-B", "KXT-C"]
    assert rest.next_page_token == ""


async def test_a_reconnect_of_many_markets_is_one_incident(status):
    start = timestamp_pb2.Timestamp()
    start.FromDatetime(at(0))
    end = timestamp_pb2.Timestamp()
    end.FromDatetime(at(24))
    reply = await status.ListIncidents(pb.ListIncidentsRequest(start_time=start, end_time=end))
    [incident] = reply.incidents
    assert (incident.reason, incident.market_count, list(incident.tickers)) == (
        "reconnect", 2, ["KXT-A", "KXT-B"])
    assert incident.start_time.ToDatetime(dt.UTC) == at(10)
    assert incident.end_time.ToDatetime(dt.UTC) == at(10.75)


@pytest.mark.parametrize(("request_", "field"), [
    (pb.ListDataConditionsRequest(), "ticker"),
    (pb.ListDataConditionsRequest(ticker="KXT-A", series_ticker="KXT"), "ticker"),
    (pb.ListDataConditionsRequest(ticker="KXT-A", start_date="24/11/2026"), "start_date"),
    (pb.ListDataConditionsRequest(ticker="KXT-A", start_date="2026-11-01",
                                  end_date="2026-12-15"), "end_date"),
])
async def test_bad_input_names_the_field(status, request_, field):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await status.ListDataConditions(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details()


async def test_an_unknown_ticker_is_not_found(status):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await status.ListDataConditions(pb.ListDataConditionsRequest(ticker="KXNOPE-1"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
