"""StreamOrderbook on a two-shard recorder: queryd follows both shards' `/live`, and a
stream that starts in the past joins history to live without a seam for a market of
either shard — every stored change exactly once, and the book the stream builds ends
equal to the simulator's journal.

Two real Ingestd processes' worth of recorders (each with its own HTTP server, so each
`/live` is real) run in this event loop against one simulator, as `ktape up
--ingest-shards 2` would run them in two processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest

from ingestd.app import Ingestd
from ingestd.config import IngestSettings
from ingestd.http import start_http
from ktape.config import load_settings
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.runtime.ports import free_port
from ktape.schema.wal import wait_for_wal
from ktape.sharding import shard_of
from ktape.sim.server import SimConfig, SimServer
from queryd.live import LiveShards
from queryd.server import build_server
from tests.integration.queryd.test_live_stream import (
    _collect,
    _key,
    _quiesce_and_close,
    _stored_keys,
    _ts,
    stop_queryd,
)


def _book(messages: list[pb.StreamOrderbookResponse]) -> tuple[dict[int, int], dict[int, int]]:
    """The book a client builds: the snapshot, then each change's resulting size."""
    sides: dict[int, dict[int, int]] = {pb.SIDE_YES: {}, pb.SIDE_NO: {}}
    snapshot = messages[0].snapshot
    for side, levels in ((pb.SIDE_YES, snapshot.yes), (pb.SIDE_NO, snapshot.no)):
        for level in levels:
            sides[side][int(level.price.replace(".", ""))] = int(level.quantity.replace(".", ""))
    for message in messages[1:]:
        delta = message.delta
        if not message.HasField("delta") or delta.kind == pb.DELTA_KIND_GAP:
            continue
        price, qty = int(delta.price.replace(".", "")), int(delta.quantity.replace(".", ""))
        if qty:
            sides[delta.side][price] = qty
        else:
            sides[delta.side].pop(price, None)
    return sides[pb.SIDE_YES], sides[pb.SIDE_NO]


@pytest.mark.timeout(150)
async def test_streams_join_history_to_live_on_either_shard(questdb, tmp_path):
    questdb.reset()
    async with SimServer(SimConfig(markets=8, rate=300, seed=57)) as sim:
        ports = [free_port(), free_port()]
        recorders, servers, stops, tasks = [], [], [], []
        for i, port in enumerate(ports):
            settings = load_settings({
                **questdb.env(), "KTAPE_DATA_DIR": str(tmp_path),
                "KTAPE_KALSHI_WS_URL": f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2",
                "KTAPE_KALSHI_REST_URL": f"http://127.0.0.1:{sim.port}/trade-api/v2",
                "KTAPE_INGEST_SHARDS": "2", "KTAPE_INGEST_SHARD": str(i),
                "KTAPE_PAGE_TOKEN_SECRET": "sharded-live-tests"})
            recorders.append(Ingestd(settings, IngestSettings(flush_interval_ms=200)))
            servers.append(await start_http(recorders[i], "127.0.0.1", port))
            stops.append(asyncio.Event())
            tasks.append(asyncio.create_task(recorders[i].run(stops[i])))
        live = LiveShards([f"http://127.0.0.1:{port}/live" for port in ports])
        running, pool, _service = await build_server(settings, addr="127.0.0.1:0", live=live)
        live_task = asyncio.create_task(live.run())
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        stub = pb_grpc.MarketDataServiceStub(channel)
        try:
            await asyncio.wait_for(asyncio.gather(*(t.connected.wait() for t in live.tails)), 10)
            began = dt.datetime.now(dt.UTC)
            await asyncio.sleep(3)  # history to replay
            # The busiest market of each shard.
            tickers = [max(r.feed.books, key=lambda t, r=r: r.feed.books[t].last_seq or 0)
                       for r in recorders]
            assert [shard_of(t, 2) for t in tickers] == [0, 1]
            received: list[list] = [[], []]
            streams = [stub.StreamOrderbook(pb.StreamOrderbookRequest(
                ticker=t, start_time=_ts(began))) for t in tickers]
            readers = [asyncio.create_task(_collect(s, received[i], []))
                       for i, s in enumerate(streams)]
            await asyncio.sleep(4)
            # Each stream joined its own shard's fan-out, not the other's.
            assert [t.subscriptions for t in live.tails] == [1, 1]
            await _quiesce_and_close(sim, streams, readers)
            journal = sim.journal
        finally:
            for stop in stops:
                stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 20)
            await stop_queryd(channel, running, pool, live_task)
            for server in servers:
                await server.cleanup()

    with questdb.connect() as conn:
        wait_for_wal(conn)
        stored = [_stored_keys(conn, t, began, ">=") for t in tickers]
    for i, ticker in enumerate(tickers):
        messages = received[i]
        assert messages[0].HasField("snapshot")
        keys = [_key(m.delta) for m in messages[1:]
                if m.HasField("delta") and m.delta.kind != pb.DELTA_KIND_GAP]
        assert len(keys) == len(set(keys)), f"{ticker}: a change was sent twice"
        assert set(keys) == stored[i], (ticker, len(set(keys)), len(stored[i]))
        assert not [m for m in messages if m.HasField("delta")
                    and m.delta.kind == pb.DELTA_KIND_GAP], f"{ticker}: a gap in a clean run"
        last_ms = max(r["t"] for r in journal.changes(ticker))
        assert _book(messages) == journal.book_at(ticker, last_ms), ticker
