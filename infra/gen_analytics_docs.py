"""Real output and figures for docs/analytics.md: a simulator recorded by a real ingestd
into a private QuestDB, read back through an in-process queryd over gRPC.

Run: .venv/bin/python infra/gen_analytics_docs.py  (writes docs/analytics/*.json|*.png;
docs/analytics.md includes the JSON by hand-picked excerpts and links the pictures;
`deltas.json` holds a print and the labelled changes around it, "Change labelling").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import grpc
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from google.protobuf import json_format, timestamp_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestd.config import IngestSettings
from ktape.config import load_settings
from ktape.marketdata.v1 import analytics_pb2 as apb
from ktape.marketdata.v1 import analytics_pb2_grpc as agrpc
from ktape.marketdata.v1 import marketdata_pb2 as pb
from ktape.marketdata.v1 import marketdata_pb2_grpc as pb_grpc
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import FaultConfig, SimConfig
from queryd.server import build_server
from tests.fixtures.questdb import QuestDBInstance, start_questdb
from tests.fixtures.recording import recorded_simulator

OUT = Path(__file__).resolve().parents[1] / "docs" / "analytics"
# The audit section: REST books sampled 5 a second; the simulator serves some stale (the
# book of 400 ms before) and a few wrong (one level changed), as Kalshi's edge might.
AUDIT_FAULTS = FaultConfig(stale_book=0.2, wrong_book=0.03)
AUDIT_INGEST = IngestSettings(flush_interval_ms=100, audit_markets_per_minute=300)


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def as_json(message) -> dict:
    return json.loads(json_format.MessageToJson(message, preserving_proto_field_name=True))


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ktape-analytics-docs-"))
    qdb = start_questdb(root / "qdb")
    assert qdb.proc is not None
    q = QuestDBInstance(qdb.http, qdb.pg, root / "qdb", qdb.proc.pid)
    try:
        q.reset()
        async with recorded_simulator(q, root / "data", SimConfig(markets=24, rate=300, seed=5,
                                                                  faults=AUDIT_FAULTS),
                                      AUDIT_INGEST):
            await asyncio.sleep(20)
        with q.connect() as conn:
            wait_for_wal(conn)
            events = conn.execute(
                "SELECT event_ticker, count() FROM (SELECT ticker, event_ticker FROM markets "
                "LATEST ON ts PARTITION BY ticker) GROUP BY event_ticker ORDER BY 2 DESC").fetchall()
        settings = load_settings({**q.env(), "KTAPE_DATA_DIR": str(root / "data"),
                                  "KTAPE_PAGE_TOKEN_SECRET": "docs"})
        running, pool, _ = await build_server(settings, addr="127.0.0.1:0")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                await figures(pb_grpc.MarketDataServiceStub(channel),
                              agrpc.AnalyticsServiceStub(channel), events)
                await audit_figures(agrpc.AnalyticsServiceStub(channel))
        finally:
            await running.stop(0)
            await pool.close()
    finally:
        qdb.stop()


async def figures(md, an, events) -> None:
    at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3)
    exclusive = None
    for event, _n in events:
        got = await an.GetEventOrderbook(apb.GetEventOrderbookRequest(
            event_ticker=str(event), at=ts(at), depth=3))
        if got.mutually_exclusive and len(got.markets) >= 4:
            exclusive = got
            break
    assert exclusive is not None, events
    (OUT / "event_orderbook.json").write_text(json.dumps(as_json(exclusive), indent=1))
    names = [m.ticker.rsplit("-", 1)[-1] for m in exclusive.markets]
    bids = [Decimal(m.best_yes_bid or 0) for m in exclusive.markets]
    asks = [Decimal(m.best_yes_ask or 1) for m in exclusive.markets]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [float(b) for b in bids], width=0.4, label="best YES bid")
    ax.bar([i + 0.2 for i in x], [float(a) for a in asks], width=0.4, label="best YES ask")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("dollars")
    ax.set_title(f"{exclusive.event_ticker}: bids sum {exclusive.sum_best_yes_bids}, "
                 f"asks sum {exclusive.sum_best_yes_asks}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "event_orderbook.png", dpi=110)
    plt.close(fig)

    busiest = max(exclusive.markets, key=lambda m: len(m.yes) + len(m.no)).ticker
    book = await md.GetOrderbook(pb.GetOrderbookRequest(ticker=busiest, at=ts(at)))
    size = sum(Decimal(lv.quantity) for lv in book.no[:3]) or Decimal(10)
    order = await an.SimulateOrder(apb.SimulateOrderRequest(
        ticker=busiest, at=ts(at), side="yes", action="buy", quantity=str(size)))
    (OUT / "simulate_order.json").write_text(json.dumps(as_json(order), indent=1))
    asks_ladder = [(1 - Decimal(lv.price), Decimal(lv.quantity)) for lv in book.no]
    taken = {Decimal(f.price): Decimal(f.quantity) for f in order.fills}
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.barh([float(p) for p, _ in asks_ladder], [float(q) for _, q in asks_ladder],
            height=0.004, color="#bbb", label="YES asks (1 - NO bids)")
    ax.barh([float(p) for p in taken], [float(q) for q in taken.values()], height=0.004,
            color="#d62728", label=f"taken by a buy of {size} YES")
    ax.set_xlabel("contracts")
    ax.set_ylabel("YES price")
    ax.set_title(f"{busiest}: average {order.average_price}, slippage {order.slippage}, "
                 f"fee {order.fee}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "simulate_order.png", dpi=110)
    plt.close(fig)

    start = at - dt.timedelta(seconds=15)
    quotes = await an.ListQuotes(apb.ListQuotesRequest(ticker=busiest, start_time=ts(start),
                                                       end_time=ts(at), page_size=1000))
    (OUT / "quotes.json").write_text(json.dumps(as_json(quotes)["quotes"][:4], indent=1))
    times = [q.ts.ToDatetime() for q in quotes.quotes]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.step(times, [float(q.best_yes_bid.price or "nan") for q in quotes.quotes], where="post",
            label="best YES bid")
    ax.step(times, [1 - float(q.best_no_bid.price) if q.best_no_bid.price else float("nan")
                    for q in quotes.quotes], where="post", label="best YES ask")
    ax.set_title(f"{busiest}: {len(quotes.quotes)} quotes in 15 s (ListQuotes)")
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(OUT / "quotes.png", dpi=110)
    plt.close(fig)

    snaps = await an.ListOrderbookSnapshots(apb.ListOrderbookSnapshotsRequest(
        ticker=busiest, start_time=ts(start), end_time=ts(at), interval="1s", depth=10,
        page_size=20))
    (OUT / "snapshots.json").write_text(json.dumps(as_json(snaps)["snapshots"][:1], indent=1))
    last = snaps.snapshots[-1]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    cum = Decimal(0)
    xs, ys = [], []
    for lv in last.yes:
        cum += Decimal(lv.quantity)
        xs.append(float(lv.price))
        ys.append(float(cum))
    ax.step(xs, ys, where="post", label="YES bids (cumulative)")
    cum, xs, ys = Decimal(0), [], []
    for lv in last.no:
        cum += Decimal(lv.quantity)
        xs.append(1 - float(lv.price))
        ys.append(float(cum))
    ax.step(xs, ys, where="post", label="YES asks (cumulative)")
    ax.set_xlabel("YES price")
    ax.set_ylabel("contracts")
    ax.set_title(f"{busiest}: depth at {last.ts.ToDatetime():%H:%M:%S} UTC (ListOrderbookSnapshots)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "depth.png", dpi=110)
    plt.close(fig)

    await labelled_deltas(md, busiest, start, at)
    print("wrote", sorted(p.name for p in OUT.iterdir()))


async def labelled_deltas(md, ticker: str, start: dt.datetime, end: dt.datetime) -> None:
    """ListOrderbookDeltas around the last on-book print of the stretch: the change it
    caused (TRADE) and the nearest NEW and CANCEL, as Envoy prints them (every field)."""
    trades = await md.ListTrades(pb.ListTradesRequest(ticker=ticker, start_time=ts(start),
                                                      end_time=ts(end), page_size=1000))
    last = [t for t in trades.trades if not t.is_block_trade][-1]
    at = last.ts.ToDatetime(dt.UTC)
    page = await md.ListOrderbookDeltas(pb.ListOrderbookDeltasRequest(
        ticker=ticker, start_time=ts(at - dt.timedelta(seconds=2)),
        end_time=ts(at + dt.timedelta(milliseconds=1)), page_size=1000))
    changes = [d for d in page.deltas if d.kind == pb.DELTA_KIND_DELTA]
    picked = []
    for cause in (pb.DELTA_CAUSE_NEW, pb.DELTA_CAUSE_CANCEL, pb.DELTA_CAUSE_TRADE):
        picked.append([d for d in changes if d.cause == cause][-1])
    picked.sort(key=lambda d: (d.ts.ToDatetime(), d.seq))
    (OUT / "deltas.json").write_text(json.dumps({
        "ticker": ticker, "trade": as_json(last),
        "deltas": [json.loads(json_format.MessageToJson(
            d, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))
            for d in picked]}, indent=1))

async def audit_figures(an) -> None:
    """GetAuditReport of today: the per-series rows and one disagreement, as JSON."""
    day = dt.datetime.now(dt.UTC).date().isoformat()
    report = as_json(await an.GetAuditReport(apb.GetAuditReportRequest(date=day)))
    (OUT / "audit_series.json").write_text(json.dumps(report["series"][:2], indent=1))
    wrong = report.get("disagreements", [])[:1]
    for sample in wrong:  # the top three levels of each ladder are enough to show
        for book in ("rest_book", "recorded_book"):
            sample[book] = {side: levels[:3] for side, levels in sample[book].items()}
    (OUT / "audit_disagreement.json").write_text(json.dumps(wrong, indent=1))
    print("audit:", [(s["series_ticker"], s["samples"], s["agreement_rate"])
                     for s in report["series"]], "disagreements",
          len(report.get("disagreements", [])), "unverified", len(report.get("unverified", [])))


if __name__ == "__main__":
    asyncio.run(main())
