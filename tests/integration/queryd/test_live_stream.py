"""StreamOrderbook over ingestd's live fan-out: replay, seamless join, live, re-join.

The simulator feeds a real ingestd (Ingestd with its HTTP server, so `/live` is real),
queryd follows the fan-out, and streams are compared with what QuestDB stored: every
change exactly once, across the history/live seam and across a fan-out reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time

import grpc
import pytest
from google.protobuf import timestamp_pb2

from ingestd.app import Ingestd
from ingestd.config import IngestSettings
from ingestd.http import start_http
from ktape.config import load_settings
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.runtime.ports import free_port
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig, SimServer
from queryd.live import LiveShards
from queryd.server import build_server


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def _key(delta: pb.OrderbookDelta) -> tuple:
    if delta.kind == pb.DELTA_KIND_GAP:
        return ("gap", delta.gap.start_time.ToMicroseconds(), delta.receive_time.ToMicroseconds())
    return (delta.ts.ToMicroseconds(), delta.sid, delta.seq, delta.side, delta.price)


def _stored_keys(conn, ticker: str, began: dt.datetime, op: str) -> set[tuple]:
    """The keys (as _key makes them) of the changes QuestDB stored after `began`."""
    assert op in (">", ">=")
    rows = conn.execute("SELECT ts, sid, seq, side, price_e4 FROM book_changes WHERE "
                        f"ticker = %s AND ts {op} %s", (ticker, began)).fetchall()
    return {(int(ts.replace(tzinfo=dt.UTC).timestamp() * 1_000_000), sid, seq,
             pb.SIDE_YES if side == "yes" else pb.SIDE_NO, f"{price // 10000}.{price % 10000:04d}")
            for ts, sid, seq, side, price in rows}


async def _quiesce_and_close(sim, streams: list, readers: list) -> None:
    """Stop the simulator's changes, let the last ones through, end the streams."""
    sim.config.rate = 0
    await asyncio.sleep(1.5)
    for stream in streams:
        stream.cancel()
    for reader in readers:
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _collect(stream, into: list, received_at: list) -> None:
    async for message in stream:
        into.append(message)
        received_at.append(time.time())


async def stop_queryd(channel, running, pool, live_task: asyncio.Task) -> None:
    """Close the client channel, then the in-process queryd, its pool and its fan-out
    followers."""
    await channel.close()
    await running.stop(0)
    await pool.close()
    live_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await live_task


@contextlib.asynccontextmanager
async def recording(questdb, tmp_path, rate: int = 400):
    questdb.reset()
    async with SimServer(SimConfig(markets=4, rate=rate, seed=91)) as sim:
        http_port = free_port()
        settings = load_settings({
            **questdb.env(), "KTAPE_DATA_DIR": str(tmp_path),
            "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2",
            "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{sim.port}/trade-api/v2",
            "KTAPE_INGESTD_METRICS_ADDR": f"127.0.0.1:{http_port}",
            "KTAPE_PAGE_TOKEN_SECRET": "live-stream-tests"})
        recorder = Ingestd(settings, IngestSettings(flush_interval_ms=200))
        server = await start_http(recorder, "127.0.0.1", http_port)
        stop = asyncio.Event()
        task = asyncio.create_task(recorder.run(stop))
        live = LiveShards([f"http://127.0.0.1:{http_port}/live"])
        tail = live.tails[0]
        running, pool, _service = await build_server(settings, addr="127.0.0.1:0", live=live)
        tail_task = asyncio.create_task(live.run())
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        try:
            await asyncio.wait_for(tail.connected.wait(), 10)
            yield sim, recorder, tail, pb_grpc.MarketDataServiceStub(channel), stop
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            await stop_queryd(channel, running, pool, tail_task)
            await server.cleanup()


async def test_stream_replays_then_joins_live_without_loss_or_repeat(questdb, tmp_path):
    began = dt.datetime.now(dt.UTC)
    async with recording(questdb, tmp_path) as (sim, recorder, tail, stub, _stop):
        await asyncio.sleep(3)  # history to replay
        ticker = max(recorder.feed.books, key=lambda t: recorder.feed.books[t].last_seq or 0)
        replay: list = []
        replay_at: list = []
        live_only: list = []
        live_at: list = []
        batched: list = []
        as_columns: list = []
        streams = [
            stub.StreamOrderbook(pb.StreamOrderbookRequest(ticker=ticker, start_time=_ts(began))),
            stub.StreamOrderbook(pb.StreamOrderbookRequest(ticker=ticker)),
            stub.StreamOrderbook(pb.StreamOrderbookRequest(ticker=ticker, start_time=_ts(began),
                                                           batch_size=50)),
            stub.StreamOrderbook(pb.StreamOrderbookRequest(
                ticker=ticker, start_time=_ts(began), batch_size=50,
                batch_layout=pb.BATCH_LAYOUT_COLUMNS)),
        ]
        readers = [asyncio.create_task(_collect(streams[0], replay, replay_at)),
                   asyncio.create_task(_collect(streams[1], live_only, live_at)),
                   asyncio.create_task(_collect(streams[2], batched, [])),
                   asyncio.create_task(_collect(streams[3], as_columns, []))]
        await asyncio.sleep(4)
        assert tail.subscriptions == 4  # all joined the fan-out
        await _quiesce_and_close(sim, streams, readers)
    with questdb.connect() as conn:
        wait_for_wal(conn)
        stored_keys = _stored_keys(conn, ticker, began, ">=")
    assert replay[0].HasField("snapshot")
    deltas = [m.delta for m in replay[1:] if m.HasField("delta")]
    keys = [_key(d) for d in deltas if d.kind != pb.DELTA_KIND_GAP]
    assert len(keys) == len(set(keys)), "a change was sent twice"
    assert set(keys) == stored_keys, (len(set(keys)), len(stored_keys),
                                      sorted(stored_keys - set(keys))[:3],
                                      sorted(set(keys) - stored_keys)[:3])
    # The batched replay: the same changes in the same order, several to a message.
    assert batched[0].HasField("snapshot") and not any(m.HasField("delta") for m in batched)
    batches = [m.deltas.deltas for m in batched if m.HasField("deltas")]
    assert max(map(len, batches)) == 50 and all(0 < len(b) <= 50 for b in batches)
    batched_keys = [_key(d) for b in batches for d in b if d.kind != pb.DELTA_KIND_GAP]
    assert set(batched_keys) == stored_keys and len(batched_keys) == len(set(batched_keys))
    # As columns: the same changes in the same order as the message batches, history and
    # live alike (gap markers, if any, on their own).
    assert as_columns[0].HasField("snapshot")
    assert not any(m.HasField("deltas") for m in as_columns)
    column_keys = [
        (c.ts_unix_micros[i], c.sids[i], c.seqs[i], c.sides[i],
         f"{c.prices_e4[i] // 10000}.{c.prices_e4[i] % 10000:04d}")
        for c in (m.columns for m in as_columns if m.HasField("columns"))
        for i in range(len(c.kinds))]
    assert column_keys == batched_keys
    # The live-only stream: every change after its snapshot, once, and fast.
    live_deltas = [(m.delta, at) for m, at in zip(live_only, live_at, strict=True)
                   if m.HasField("delta") and m.delta.kind != pb.DELTA_KIND_GAP]
    live_keys = [_key(d) for d, _ in live_deltas]
    assert len(live_keys) == len(set(live_keys)) and set(live_keys) <= stored_keys
    lags = sorted(at - d.receive_time.ToMicroseconds() / 1e6 for d, at in live_deltas[-100:])
    assert lags and lags[len(lags) // 2] < 0.5, lags[-5:]  # ingestd receipt -> client


@pytest.mark.timeout(120)
async def test_stream_rejoins_after_the_fanout_drops(questdb, tmp_path):
    async with recording(questdb, tmp_path, rate=300) as (sim, recorder, tail, stub, _stop):
        await asyncio.sleep(1.5)
        ticker = max(recorder.feed.books, key=lambda t: recorder.feed.books[t].last_seq or 0)
        began = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        messages: list = []
        stream = stub.StreamOrderbook(pb.StreamOrderbookRequest(ticker=ticker,
                                                                start_time=_ts(began)))
        reader = asyncio.create_task(_collect(stream, messages, []))
        await asyncio.sleep(2)
        resets = tail.resets
        reset_at = time.time()
        tail._reset_all("test: simulated fan-out loss")  # as if the connection dropped
        assert tail.resets == resets + 1
        await asyncio.sleep(3)
        await _quiesce_and_close(sim, [stream], [reader])
    with questdb.connect() as conn:
        wait_for_wal(conn)
        stored_keys = _stored_keys(conn, ticker, began, ">")
    keys = [_key(m.delta) for m in messages[1:]
            if m.HasField("delta") and m.delta.kind != pb.DELTA_KIND_GAP]
    assert len(keys) == len(set(keys)), "a change was sent twice"
    assert set(keys) == stored_keys, (sorted(stored_keys - set(keys))[:30],
                                      sorted(set(keys) - stored_keys)[:3], reset_at)
