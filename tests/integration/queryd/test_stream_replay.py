"""StreamOrderbook replays more than a page of older history as columns, whole and in
order, without being taken for a slow consumer; a start beyond the replay window is
refused up front, naming `start_time`."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import timestamp_pb2

from bench.client.client_overhead import write_recent
from ktape.config import load_settings
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from queryd.server import build_server
from queryd.stream import PAGE

TICKER = "KXREPLAY-A"
CHANGES = 2 * PAGE + 5_000  # three history pages


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


@pytest.mark.timeout(180)
async def test_an_older_replay_arrives_whole_as_columns(questdb, tmp_path):
    questdb.reset()
    begin = write_recent(questdb.conninfo, TICKER, CHANGES, span_minutes=90)
    settings = load_settings({**questdb.env(), "KTAPE_DATA_DIR": str(tmp_path),
                              "KTAPE_PAGE_TOKEN_SECRET": "replay-tests"})
    running, pool, _ = await build_server(settings, addr="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.MarketDataServiceStub(channel)
            seqs: list[int] = []
            kinds: list[str] = []
            call = stub.StreamOrderbook(pb.StreamOrderbookRequest(
                ticker=TICKER, start_time=_ts(begin), batch_size=1000,
                batch_layout=pb.BATCH_LAYOUT_COLUMNS))
            async for message in call:
                kind = message.WhichOneof("payload")
                kinds.append(kind)
                assert kind != "end", message.end  # not ended as a slow consumer
                if kind == "columns":
                    assert len(message.columns.kinds) <= 1000
                    seqs.extend(message.columns.seqs)
                if len(seqs) >= CHANGES:
                    call.cancel()
                    break
            assert kinds[0] == "snapshot"
            assert seqs == list(range(1, CHANGES + 1))  # every change once, in order

            too_old = stub.StreamOrderbook(pb.StreamOrderbookRequest(
                ticker=TICKER, start_time=_ts(dt.datetime.now(dt.UTC) - dt.timedelta(hours=3))))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in too_old:
                    pass
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "start_time" in (refused.value.details() or "")
    finally:
        await running.stop(0)
        await pool.close()
