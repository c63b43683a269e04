"""Kalshi's `ticker` channel recorded exactly (issue 14, item 4): GetMarket shows the
latest volume and open interest, and each candle the open interest at its close — checked
against the simulator's own market state and journal."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from google.protobuf import timestamp_pb2

from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.schema.wal import wait_for_wal
from ktape.sim.fixed import contracts
from ktape.sim.server import SimConfig, SimServer
from queryd.server import build_server
from tests.integration.ingestd.test_record_against_journal import recorder_settings, recording

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def recorded(questdb, tmp_path_factory) -> AsyncIterator[dict]:
    questdb.reset()
    data_dir = tmp_path_factory.mktemp("tickers")
    async with SimServer(SimConfig(markets=4, rate=300, seed=68)) as sim:
        sim.model.lifecycle_rate = 0
        began = dt.datetime.now(dt.UTC)
        async with recording(questdb, data_dir, sim):
            await asyncio.sleep(4.0)
        settings = recorder_settings(questdb, data_dir, sim,
                                     KTAPE_PAGE_TOKEN_SECRET="ticker-tests")
        markets = {t: (m.volume_e2, m.open_interest_e2) for t, m in sim.model.markets.items()}
        journal = sim.journal
    with questdb.connect() as conn:
        wait_for_wal(conn)
        rows = conn.execute("SELECT count() FROM tickers").fetchone()[0]
    running, pool, _service = await build_server(settings, addr="127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield {"stub": pb_grpc.MarketDataServiceStub(channel), "markets": markets,
               "journal": journal, "rows": rows, "began": began}
    finally:
        await channel.close()
        await running.stop(0)
        await pool.close()


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def test_get_market_shows_the_latest_volume_and_open_interest(recorded) -> None:
    assert recorded["rows"] > 100
    for ticker, (volume, open_interest) in recorded["markets"].items():
        market = (await recorded["stub"].GetMarket(pb.GetMarketRequest(ticker=ticker))).market
        assert (market.volume, market.open_interest) == (contracts(volume),
                                                         contracts(open_interest)), ticker
        assert market.HasField("statistics_time")


async def test_each_candle_has_the_open_interest_at_its_close(recorded) -> None:
    journal, checked = recorded["journal"], 0
    start = recorded["began"].replace(second=0, microsecond=0)
    end = dt.datetime.now(dt.UTC)
    for ticker in recorded["markets"]:
        got = await recorded["stub"].ListCandles(pb.ListCandlesRequest(
            ticker=ticker, start_time=_ts(start), end_time=_ts(end), interval="1m"))
        end_us = int(end.timestamp() * 1_000_000)
        for candle in got.candles:
            close_us = min(candle.start_time.ToMicroseconds() + 60_000_000, end_us)
            trades = [r for r in journal.trades(ticker) if r["t"] * 1000 < close_us]
            assert trades, ticker
            assert candle.open_interest == contracts(trades[-1]["oi"]), (ticker, close_us)
            checked += 1
    assert checked >= 4
