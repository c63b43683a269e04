"""The live tail's dispatch: per-ticker fan-out, lost rows detected, slow consumers cut."""

from __future__ import annotations

import pytest

from ktape.marketdata.v1 import marketdata_pb2 as pb
from queryd import live
from queryd.live import LiveTail, live_item


def _change(n: int, ticker: str = "KX-A", seq: int = 1) -> dict:
    return {"n": n, "tb": "book_changes", "ts": 1_795_000_000_000_000 + n, "ticker": ticker,
            "side": "yes", "kind": "delta", "ts_source": "exchange", "price_e4": 4200,
            "qty_after_e2": 1500, "delta_e2": 100, "seq": seq, "sid": 3,
            "recv_ts": 1_795_000_000_000_500 + n}


def _tail() -> LiveTail:
    tail = LiveTail("http://127.0.0.1:1/live")
    tail.connected.set()
    tail.epoch = "e1"
    return tail


def test_rows_go_to_their_ticker_only_as_stream_messages():
    tail = _tail()
    sub_a, sub_b = tail.subscribe("KX-A"), tail.subscribe("KX-B")
    tail._dispatch(_change(1, "KX-A", seq=7))
    assert sub_b.queue.empty()
    item = sub_a.queue.get_nowait()
    delta = item.message.delta
    assert (delta.kind, delta.price, delta.quantity, delta.delta, delta.seq) == (
        pb.DELTA_KIND_DELTA, "0.4200", "15.00", "1.00", 7)
    assert sub_a.n == 0 and sub_a.epoch == "e1"


def test_a_jump_in_the_sequence_is_lost_rows():
    tail = _tail()
    tail._dispatch(_change(1))
    with pytest.raises(ConnectionError, match="rows lost"):
        tail._dispatch(_change(3))
    with pytest.raises(ConnectionError, match="rows lost"):
        tail._dispatch({"hb": 7})


def test_a_slow_subscriber_is_cut_off_alone(monkeypatch):
    monkeypatch.setattr(live, "QUEUE_ROWS", 3)
    tail = _tail()
    slow = tail.subscribe("KX-A")
    slow.queue = live.asyncio.Queue(4)
    fast = tail.subscribe("KX-A")
    for n in range(1, 6):
        tail._dispatch(_change(n))
        if not fast.queue.empty():
            fast.queue.get_nowait()  # this one keeps up
    assert slow.overflowed and slow.reset.is_set()
    assert not fast.overflowed


def test_gap_rows_become_gap_markers():
    ticker, item = live_item({"n": 1, "tb": "gaps", "ts": 2_000_000, "ticker": "KX-A",
                              "reason": "seq_jump", "start_ts": 1_000_000,
                              "expected_seq": 5, "got_seq": 9, "sid": 3})
    assert ticker == "KX-A"
    marker = item.message.delta
    assert marker.kind == pb.DELTA_KIND_GAP and marker.gap.reason == "seq_jump"
    assert (marker.gap.expected_seq, marker.gap.got_seq) == (5, 9)
    assert not marker.gap.HasField("end_time")
    assert live_item({"n": 2, "tb": "lifecycle", "ticker": "KX-A", "ts": 1}) is None
