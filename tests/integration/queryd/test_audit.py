"""The audit end to end: a simulator serving stale and wrong REST books, recorded by a real
ingestd whose sampler is on, checked by queryd behind the real Envoy.

The simulator's journal is the oracle: a stale book (the true book of 300 ms before, inside
the 1 s allowance) must agree, a wrong one (a level no true book had) must be listed as a
disagreement with both books and show up in ListIncidents, an untouched one must agree.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import httpx
import pytest
from google.protobuf import timestamp_pb2

from ingestd.config import IngestSettings
from ktape.book.ladder import format_price, format_quantity
from ktape.marketdata.v1 import analytics_pb2 as apb
from ktape.marketdata.v1 import analytics_pb2_grpc as agrpc
from ktape.marketdata.v1 import data_status_pb2 as dpb
from ktape.marketdata.v1 import data_status_pb2_grpc as dgrpc
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import WRONG_BOOK_EXTRA_E2, FaultConfig, SimConfig
from tests.fixtures.recording import recorded_simulator

STALE_MS = 300


def _us(t: timestamp_pb2.Timestamp) -> int:
    return t.ToMicroseconds()


@pytest.fixture
async def audited(edge, clean_questdb, tmp_path):
    config = SimConfig(markets=3, rate=150, seed=33, faults=FaultConfig(
        stale_book=0.3, wrong_book=0.3, stale_book_ms=STALE_MS))
    ingest = IngestSettings(flush_interval_ms=100, audit_markets_per_minute=600,
                            audit_staleness_allowance_ms=1000)
    async with recorded_simulator(clean_questdb, tmp_path, config, ingest) as (_rec, sim):
        await asyncio.sleep(8)  # samples of the first second are unverified: their
        # window starts before the recording did
    with clean_questdb.connect() as conn:
        wait_for_wal(conn)
        rows = conn.execute("SELECT ts, ticker, response_ts FROM audit_books ORDER BY ts").fetchall()
    channel = grpc.aio.insecure_channel(edge.queryd_addr)
    yield sim.journal, rows, channel
    await channel.close()


def _fault_of(faults, ticker: str, request_us: int, response_us: int) -> str | None:
    """The REST fault the simulator applied to this sample (ms stamps: a ms of slack)."""
    for fault in faults:
        if (fault.get("ticker") == ticker and fault["what"] in ("stale_book", "wrong_book")
                and request_us - 1000 <= fault["t"] * 1000 <= response_us):
            return fault["what"]
    return None


async def test_stale_books_agree_wrong_ones_are_disagreements_and_incidents(audited, edge):
    journal, rows, channel = audited
    assert len(rows) >= 20, "the sampler ran at 10 a second"
    day = rows[0][0].date()
    faults = journal.faults()
    report = await agrpc.AnalyticsServiceStub(channel).GetAuditReport(
        apb.GetAuditReportRequest(date=day.isoformat()))  # public: no key
    listed = [*report.disagreements, *report.unverified]
    by_key = {(s.ticker, _us(s.request_time)): s for s in listed}
    outcomes = {"stale_book": [], "wrong_book": [], None: []}
    for ts, ticker, response_ts in rows:
        if ts.date() != day:
            continue
        request_us = _us(_ts(ts))
        sample = by_key.get((str(ticker), request_us))
        kind = "agrees" if sample is None else (
            "disagrees" if sample in report.disagreements else "unverified")
        outcomes[_fault_of(faults, str(ticker), request_us, _us(_ts(response_ts)))].append(kind)
    # Assert: the journal's faults decide every verified outcome
    assert outcomes["wrong_book"] and outcomes["stale_book"] and outcomes[None]
    assert set(outcomes["wrong_book"]) <= {"disagrees", "unverified"}
    assert "disagrees" in outcomes["wrong_book"]
    assert set(outcomes["stale_book"]) <= {"agrees", "unverified"}
    assert set(outcomes[None]) <= {"agrees", "unverified"}
    assert outcomes[None].count("agrees") > len(outcomes[None]) // 2
    total = sum(len(v) for v in outcomes.values())
    agreements = outcomes["stale_book"].count("agrees") + outcomes[None].count("agrees")
    assert sum(s.samples for s in report.series) == total
    assert sum(s.agreements for s in report.series) == agreements
    assert sum(s.disagreements for s in report.series) == outcomes["wrong_book"].count("disagrees")
    assert all(s.series_ticker for s in report.series)
    # both books of a disagreement: the REST one holds the phantom size, the recorded not
    wrong = report.disagreements[0]
    assert wrong.levels_differing == 1 and wrong.continuity.status == 1  # CONTINUOUS
    rest = {(side, lv.price): lv.quantity for side in ("yes", "no")
            for lv in getattr(wrong.rest_book, side)}
    recorded = {(side, lv.price): lv.quantity for side in ("yes", "no")
                for lv in getattr(wrong.recorded_book, side)}
    (changed,) = [k for k in rest.keys() | recorded.keys() if rest.get(k) != recorded.get(k)]
    # The REST side is what the simulator served: its level with the phantom size. (The
    # recorded side is the closest recorded book of the window; when that level moved
    # inside the window, the two differ by the phantom plus that move, so the phantom is
    # checked against the served book, not as a difference.)
    (served,) = [f for f in faults if f["what"] == "wrong_book" and f.get("ticker") == wrong.ticker
                 and _us(wrong.request_time) - 1000 <= f["t"] * 1000 <= _us(wrong.response_time)]
    assert changed == (served["side"], format_price(served["price_e4"])), (changed, served)
    assert rest[changed] == format_quantity(served["qty_e2"]), (rest[changed], served)
    assert served["qty_e2"] >= WRONG_BOOK_EXTRA_E2
    assert recorded.get(changed) != rest[changed]
    assert _us(wrong.window_start_time) == _us(wrong.request_time) - 1_000_000
    assert _us(wrong.window_start_time) <= _us(wrong.recorded_time) <= _us(wrong.response_time)
    # paged: one listed sample a page, the same samples in the same order
    paged, token = [], ""
    while True:
        page = await agrpc.AnalyticsServiceStub(channel).GetAuditReport(
            apb.GetAuditReportRequest(date=day.isoformat(), page_size=1, page_token=token))
        assert len(page.disagreements) + len(page.unverified) <= 1
        assert list(page.series) == list(report.series)
        paged += [*page.disagreements, *page.unverified]
        token = page.next_page_token
        if not token:
            break
    assert paged == listed
    # each disagreement is in an incident
    start = timestamp_pb2.Timestamp()
    start.FromDatetime(dt.datetime.combine(day, dt.time(), dt.UTC))
    found = await dgrpc.DataStatusServiceStub(channel).ListIncidents(
        dpb.ListIncidentsRequest(start_time=start))
    mismatch = [i for i in found.incidents if i.reason == "audit_mismatch"]
    assert {d.ticker for d in report.disagreements} <= {t for i in mismatch for t in i.tickers}
    # REST through Envoy, no key: the same report; a bad date names the field
    async with httpx.AsyncClient(timeout=30) as client:
        got = (await client.get(f"{edge.http_url}/v1/audit", params={"date": day.isoformat()}))
        bad = await client.get(f"{edge.http_url}/v1/audit", params={"date": "2026-13-01"})
        missing = await client.get(f"{edge.http_url}/v1/audit")
    assert got.status_code == 200, got.text
    body = got.json()
    assert [(s["series_ticker"], s["samples"], s["agreement_rate"]) for s in body["series"]] == [
        (s.series_ticker, str(s.samples), s.agreement_rate) for s in report.series]
    assert len(body["disagreements"]) == len(report.disagreements)
    for response in (bad, missing):
        assert response.status_code == 400
        (info,) = [d for d in response.json()["details"] if "reason" in d]
        assert info["reason"] == "INVALID_ARGUMENT" and info["metadata"]["field"] == "date"


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.replace(tzinfo=dt.UTC))
    return out
