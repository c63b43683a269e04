"""StreamOrderbook through Envoy as NDJSON: replay from start_time, then live, gaps inline."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import httpx

from ktape.schema import apply_migrations
from ktape.schema.wal import wait_for_wal

CP = ("INSERT INTO book_checkpoints (ts, ticker, reason, seq, sid, recv_ts, ts_source,"
      " yes_levels, no_levels, continuous_since) VALUES (%s,%s,'snapshot',1,1,%s,'receive',"
      "'4200:15000','5700:2000',%s)")
CH = ("INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, delta_e2, kind,"
      " seq, sid, recv_ts, ts_source) VALUES (%s,%s,'yes',%s,%s,%s,'delta',%s,1,%s,'exchange')")


def test_stream_replays_then_goes_live_with_gap_markers(edge, questdb):
    ticker = f"KX-STREAM-{int(time.time())}"
    now = dt.datetime.now(dt.UTC)
    with questdb.connect() as conn:
        apply_migrations(conn)
        t0 = now - dt.timedelta(seconds=90)
        conn.execute(CP, (t0, ticker, t0, t0))
        for i, (secs, price, qty) in enumerate([(50, 4300, 100), (40, 4200, 0)], start=2):
            ts = now - dt.timedelta(seconds=secs)
            conn.execute(CH, (ts, ticker, price, qty, qty, i, ts))
        wait_for_wal(conn)

    lines: list[dict] = []
    start = (now - dt.timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def read() -> None:
        with httpx.stream("GET", f"{edge.http_url}/v1/markets/{ticker}/orderbook:stream", headers=edge.auth,
                          params={"start_time": start}, timeout=30) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.strip():
                    lines.append(json.loads(line))
                if len(lines) >= 5:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 15
    while len(lines) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    # live: a new change and a gap arrive after the stream caught up
    with questdb.connect() as conn:
        live_ts = dt.datetime.now(dt.UTC)
        conn.execute(CH, (live_ts, ticker, 4400, 700, 700, 9, live_ts))
        conn.execute("INSERT INTO gaps (ts, ticker, reason, start_ts, expected_seq, got_seq, sid)"
                     " VALUES (%s, %s, 'seq_jump', %s, 10, 12, 1)",
                     (live_ts + dt.timedelta(milliseconds=5), ticker, live_ts))
        wait_for_wal(conn)
    reader.join(20)
    assert len(lines) >= 5, lines
    snapshot = lines[0]["snapshot"]
    assert snapshot["yes"] == [{"price": "0.4200", "quantity": "150.00"}]
    assert snapshot["continuity"]["status"] == "CONTINUITY_STATUS_CONTINUOUS"
    replayed = [entry["delta"] for entry in lines[1:3]]
    assert [(d["price"], d["quantity"]) for d in replayed] == [("0.4300", "1.00"),
                                                               ("0.4200", "0.00")]
    rest = [entry["delta"] for entry in lines[3:5]]
    kinds = {d["kind"] for d in rest}
    assert kinds == {"DELTA_KIND_DELTA", "DELTA_KIND_GAP"}
    live = next(d for d in rest if d["kind"] == "DELTA_KIND_DELTA")
    assert (live["price"], live["quantity"], live["seq"]) == ("0.4400", "7.00", "9")
    gap = next(d for d in rest if d["kind"] == "DELTA_KIND_GAP")["gap"]
    assert (gap["reason"], gap["expected_seq"], gap["got_seq"]) == ("seq_jump", "10", "12")


def test_stream_of_unknown_ticker_is_a_json_404(edge):
    resp = httpx.get(f"{edge.http_url}/v1/markets/KX-NOPE-STREAM/orderbook:stream",
                     headers=edge.auth, timeout=10)
    assert resp.status_code == 404
    assert "KX-NOPE-STREAM" in resp.text


def test_stream_as_server_sent_events_for_browsers(edge, questdb):
    ticker = f"KX-SSE-{int(time.time())}"
    now = dt.datetime.now(dt.UTC)
    with questdb.connect() as conn:
        apply_migrations(conn)
        t0 = now - dt.timedelta(seconds=30)
        conn.execute(CP, (t0, ticker, t0, t0))
        ts = now - dt.timedelta(seconds=20)
        conn.execute(CH, (ts, ticker, 4300, 100, 100, 2, ts))
        wait_for_wal(conn)
    start = (now - dt.timedelta(seconds=25)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    events: list[dict] = []
    with httpx.stream("GET", f"{edge.http_url}/v1/markets/{ticker}/orderbook:stream",
                      headers={**edge.auth, "Accept": "text/event-stream"},
                      params={"start_time": start}, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
            if len(events) >= 2:
                break
    assert events[0]["snapshot"]["yes"] == [{"price": "0.4200", "quantity": "150.00"}]
    assert events[1]["delta"]["price"] == "0.4300"


def test_revoked_key_ends_a_rest_stream_with_an_error_object(edge, questdb):
    from billingd.keys_cli import create_key

    ticker = f"KX-REVOKE-{int(time.time())}"
    now = dt.datetime.now(dt.UTC)
    with questdb.connect() as conn:
        apply_migrations(conn)
        conn.execute(CP, (now, ticker, now, now))
        wait_for_wal(conn)
    _, key = create_key(edge.billing_dsn, f"streamer-{ticker}", env="prod", credits=100,
                        name="")
    auth = {"Authorization": f"Bearer {key}"}
    key_id = key.split("_")[2]
    lines: list[dict] = []
    began = time.monotonic()
    with httpx.stream("GET", f"{edge.http_url}/v1/markets/{ticker}/orderbook:stream",
                      headers=auth, timeout=30) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if not line.strip():
                continue
            lines.append(json.loads(line))
            if len(lines) == 1:
                revoked = httpx.delete(f"{edge.http_url}/v1/account/keys/{key_id}", headers=auth,
                                       timeout=5)
                assert revoked.status_code == 200
    assert time.monotonic() - began < 20
    assert "snapshot" in lines[0]
    end = lines[-1]["end"]
    assert (end["code"], end["reason"]) == ("UNAUTHENTICATED", "API_KEY_REVOKED"), lines[-3:]
