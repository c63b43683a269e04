"""Feed message handling with a recording writer: sequencing, gaps, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from structlog.testing import capture_logs

from ingestd.kalshi.feed import KalshiFeed
from ingestd.sink import RowSink
from ktape.config import MarketFilter


class RecordingWriter:
    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any], dict[str, Any], int]] = []
        self.wants_flush = False
        self.live = None

    def row(self, table, *, symbols, columns, at_us, exchange_ms=None):
        self.rows.append((table, symbols, columns, at_us))

    def add_line(self, table, line, exchange_ms):
        """Parse the ready ILP line back (tickers here need no escaping)."""
        head, fields, at_ns = line.rstrip("\n").split(" ")
        name, *pairs = head.split(",")
        assert name == table
        symbols = dict(pair.split("=") for pair in pairs)
        columns = {key: int(value[:-1]) for key, value in
                   (field.split("=") for field in fields.split(","))}
        self.row(table, symbols=symbols, columns=columns, at_us=int(at_ns) // 1000)

    def table(self, name):
        return [r for r in self.rows if r[0] == name]


def _feed() -> tuple[KalshiFeed, RecordingWriter]:
    writer = RecordingWriter()
    feed = KalshiFeed("ws://127.0.0.1:1/trade-api/ws/v2", RowSink(writer),  # type: ignore[arg-type]
                      MarketFilter(all=True))
    feed.handle(orjson.dumps({"id": 1, "type": "subscribed",
                              "msg": {"channel": "orderbook_delta", "sid": 3}}), 1)
    return feed, writer


def _snap(seq, ticker="KX-A", yes=(("0.4200", "150.00"),), no=(("0.5700", "20.00"),), sid=3):
    msg = {"market_ticker": ticker, "market_id": "x"}
    if yes:
        msg["yes_dollars_fp"] = [list(level) for level in yes]
    if no:
        msg["no_dollars_fp"] = [list(level) for level in no]
    return orjson.dumps({"type": "orderbook_snapshot", "sid": sid, "seq": seq, "msg": msg,
                         "sending_ts_ms": 1_700_000_000_000 + seq})


def _delta(seq, price="0.4200", delta="-50.00", side="yes", ticker="KX-A", sid=3):
    return orjson.dumps({"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": {
        "market_ticker": ticker, "market_id": "x", "price_dollars": price, "delta_fp": delta,
        "side": side, "ts_ms": 1_700_000_000_000 + seq}})


async def test_snapshot_then_deltas_write_resulting_sizes():
    feed, writer = _feed()
    feed.handle(_snap(1), 10)
    feed.handle(_delta(2), 11)
    feed.handle(_delta(3, price="0.4300", delta="5.25"), 12)
    changes = writer.table("book_changes")
    kinds = [(c[1]["kind"], c[2]["price_e4"], c[2]["qty_after_e2"]) for c in changes]
    assert kinds == [("snapshot", 4200, 15000), ("snapshot", 5700, 2000),
                     ("delta", 4200, 10000), ("delta", 4300, 525)]
    assert feed.books["KX-A"].yes == {4200: 10000, 4300: 525}
    assert writer.table("book_checkpoints")[0][2]["yes_levels"] == "4200:15000"
    assert changes[2][3] == (1_700_000_000_000 + 2) * 1000  # exchange time, µs


async def test_seq_jump_records_gap_drops_deltas_until_snapshot_heals():
    feed, writer = _feed()
    feed.handle(_snap(1), 10)
    with capture_logs() as logs:
        feed.handle(_delta(5), 11)  # 2..4 lost
    assert any(e["event"] == "feed.seq_gap" for e in logs)
    gaps = writer.table("gaps")
    assert len(gaps) == 1
    assert gaps[0][1] == {"ticker": "KX-A", "reason": "seq_jump"}
    assert gaps[0][2]["expected_seq"] == 2 and gaps[0][2]["got_seq"] == 5
    assert "end_ts" not in gaps[0][2]
    assert feed.books["KX-A"].awaiting_snapshot
    assert feed.books["KX-A"].yes == {4200: 15000}  # the delta after the jump not applied
    feed.handle(_snap(6, yes=(("0.4000", "1.00"),), no=()), 12)
    healed = writer.table("gaps")[-1]
    assert healed[3] == gaps[0][3]  # same dedup key -> upsert of the end bound
    assert healed[2]["end_ts"] is not None
    assert feed.books["KX-A"].yes == {4000: 100} and feed.books["KX-A"].no == {}


async def test_duplicates_malformed_unknown_and_negative_are_survived():
    feed, writer = _feed()
    feed.handle(_snap(1), 10)
    feed.handle(_delta(2), 11)
    with capture_logs() as logs:
        feed.handle(_delta(2), 12)  # duplicate
        feed.handle(b'{"type": "orderbook_delta", "sid": 3', 13)  # malformed
        feed.handle(orjson.dumps({"type": "mystery", "msg": {}}), 14)
        feed.handle(_delta(3, ticker="KX-NOPE"), 15)  # unknown market
        feed.handle(_delta(4, delta="-999.00"), 16)  # would go negative
        feed.handle(_delta(5, price="0.42000001"), 17)  # not exact (book already in a gap)
    events = [e["event"] for e in logs]
    for expected in ("feed.duplicate_seq", "feed.malformed_json", "feed.unknown_type",
                     "feed.delta_unknown_market", "book.negative_level",
                     "feed.invalid_message"):
        assert expected in events, expected
    assert feed.books["KX-A"].yes == {4200: 10000}
    assert [g[1]["reason"] for g in writer.table("gaps")] == ["negative_level"]


async def test_a_change_that_cannot_be_applied_puts_its_market_in_a_gap():
    """A delta whose seq was counted but whose price is off the $0.0001 grid: the book
    after it is unknown, so it is a gap (never CONTINUOUS) until a snapshot, not a change
    silently skipped."""
    feed, writer = _feed()
    feed.handle(_snap(1), 10)
    feed.handle(_snap(2, ticker="KX-B"), 10)
    with capture_logs() as logs:
        feed.handle(_delta(3, price="0.42000001"), 11)
    assert "feed.invalid_message" in [e["event"] for e in logs]
    assert [(g[1]["ticker"], g[1]["reason"]) for g in writer.table("gaps")] == [
        ("KX-A", "invalid_message")]
    assert feed.books["KX-A"].awaiting_snapshot and not feed.books["KX-B"].awaiting_snapshot
    await asyncio.sleep(0)  # the snapshot request goes out in the background
    feed.handle(_delta(4, ticker="KX-B", price="0.5700", delta="1.00", side="no"), 12)
    assert writer.table("gaps")[-1][1]["ticker"] == "KX-A"  # seq 4 follows: no new gap


async def test_a_delta_whose_sid_or_seq_is_not_an_integer_is_rejected_not_written():
    """A JSON `true` is a Python int: written as-is it would make QuestDB reject the whole
    batch it sits in."""
    feed, writer = _feed()
    feed.handle(_snap(1), 10)
    with capture_logs() as logs:
        for sid, seq in ((3, True), ("3", 2), (3, 2.0), (None, 2)):
            frame = orjson.loads(_delta(2))
            frame["sid"], frame["seq"] = sid, seq
            feed.handle(orjson.dumps(frame), 11)
    assert [e["event"] for e in logs] == ["feed.invalid_message"] * 4
    feed.handle(_delta(2), 12)  # the feed goes on, with no gap
    assert [c[2]["seq"] for c in writer.table("book_changes")] == [1, 1, 2]
    assert writer.table("gaps") == []
    assert feed.books["KX-A"].yes == {4200: 10000}


async def test_snapshot_that_disagrees_records_a_mismatch_gap():
    feed, writer = _feed()
    feed.handle(_snap(1), 10)
    feed.handle(_snap(2, yes=(("0.4200", "149.00"),)), 11)
    assert [g[1]["reason"] for g in writer.table("gaps")] == ["snapshot_mismatch"]
    feed.handle(_snap(3, yes=(("0.4200", "149.00"),)), 12)
    assert len(writer.table("gaps")) == 1  # identical snapshot: no gap


async def test_empty_snapshot_at_close_is_not_a_gap_but_before_close_is():
    feed, writer = _feed()
    feed.markets.add([{"ticker": "KX-A", "event_ticker": "KX", "close_time":
                       "2023-11-14T22:13:20Z"}])  # 1_700_000_000 s: closes at seq 0's time
    feed.markets.add([{"ticker": "KX-B", "event_ticker": "KX", "close_time":
                       "2030-01-01T00:00:00Z"}])
    feed.handle(_snap(1), 10)
    feed.handle(_snap(2, ticker="KX-B"), 11)
    feed.handle(_snap(3, yes=(), no=()), 12)  # KX-A closed: expected empty book
    feed.handle(_snap(4, ticker="KX-B", yes=(), no=()), 13)  # KX-B still open: a loss
    gaps = [(g[1]["ticker"], g[1]["reason"]) for g in writer.table("gaps")]
    assert gaps == [("KX-A", "market_close"), ("KX-B", "snapshot_mismatch")]
    close_gap = writer.table("gaps")[0][2]
    assert close_gap["end_ts"].value - close_gap["start_ts"].value < 10_000  # a short span
    assert feed.books["KX-A"].yes == {} and feed.books["KX-A"].no == {}
    # an empty snapshot is still a row, so readers of changes see the book replaced
    empty = [c for c in writer.table("book_changes") if c[2]["seq"] == 3]
    assert [(c[1]["kind"], c[2]["price_e4"], c[2]["qty_after_e2"]) for c in empty] == [
        ("snapshot", 0, 0)]


async def test_a_requested_snapshot_that_never_comes_is_overdue():
    from ingestd.recorder import SNAPSHOT_TIMEOUT_SECS

    feed, _writer = _feed()
    feed.handle(_snap(1), 10)
    feed.handle(_snap(2, ticker="KX-B"), 11)
    feed.handle(_delta(9), 12)  # seq jump: both markets await a snapshot
    await feed.subscriptions.request_snapshots(["KX-A", "KX-B"])
    asked = feed.books["KX-A"].snapshot_requested_us
    assert asked is not None
    assert feed.recorder.overdue_snapshots(asked + 1_000_000) == []
    late = asked + int(SNAPSHOT_TIMEOUT_SECS * 1_000_000) + 1
    assert feed.recorder.overdue_snapshots(late) == ["KX-A", "KX-B"]
    feed.handle(_snap(10), 13)  # KX-A healed
    assert feed.recorder.overdue_snapshots(late) == ["KX-B"]


def _raw_snap(seq, ticker="KX-A", sid=3):
    """A snapshot without sending_ts_ms: ingestd stamps it with its receive time."""
    return orjson.dumps({"type": "orderbook_snapshot", "sid": sid, "seq": seq, "msg": {
        "market_ticker": ticker, "market_id": "x", "yes_dollars_fp": [["0.4200", "150.00"]]}})


def _delta_at(seq, ts_ms, price="0.4200", delta="-50.00"):
    return orjson.dumps({"type": "orderbook_delta", "sid": 3, "seq": seq, "msg": {
        "market_ticker": "KX-A", "market_id": "x", "price_dollars": price, "delta_fp": delta,
        "side": "yes", "ts_ms": ts_ms}})


async def test_a_late_stamped_delta_after_a_receive_stamped_snapshot_keeps_seq_order():
    """Issue 13: delta seq 2 stamped 1 ms before the snapshot's receive time is stored at
    the snapshot's time (after it), with its own stamp kept in source_ts."""
    feed, writer = _feed()
    recv_us = 1_700_000_000_500_000
    feed.handle(_raw_snap(1), recv_us)
    feed.handle(_delta_at(2, 1_700_000_000_499), recv_us + 10)  # 1 ms before the snapshot
    feed.handle(_delta_at(3, 1_700_000_000_501, price="0.4300", delta="1.00"), recv_us + 20)
    changes = writer.table("book_changes")
    assert [(c[1]["kind"], c[3], c[2].get("source_ts")) for c in changes] == [
        ("snapshot", recv_us, None),
        ("delta", recv_us, 1_700_000_000_499_000),  # moved up to the snapshot, not before it
        ("delta", 1_700_000_000_501_000, None)]
    assert writer.table("book_checkpoints")[0][3] == recv_us
    # the instants before the first snapshot are NOT_RECORDED: no gap row is needed
    assert not [g for g in writer.table("gaps") if g[1]["reason"] == "clock_order"]


async def test_a_change_moved_up_where_no_gap_covers_it_is_a_clock_order_gap():
    feed, writer = _feed()
    feed.handle(_snap(1), 10)  # sending time 1_700_000_000_001 ms
    feed.handle(_delta_at(2, 1_700_000_000_050), 11)
    with capture_logs() as logs:
        feed.handle(_delta_at(3, 1_700_000_000_040, delta="-1.00"), 12)  # stamps went back
        feed.handle(_delta_at(4, 1_700_000_000_045, delta="-1.00"), 13)  # inside that span
        feed.handle(_delta_at(5, 1_700_000_000_030, delta="-1.00"), 14)  # widens it
    gaps = [g for g in writer.table("gaps") if g[1]["reason"] == "clock_order"]
    spans = [(g[3], g[2]["start_ts"].value, g[2]["end_ts"].value) for g in gaps]
    detected = spans[0][0]
    book_us = 1_700_000_000_050_000
    assert spans == [(detected, 1_700_000_000_040_000, book_us),
                     (detected, 1_700_000_000_030_000, book_us)]  # same row, upserted wider
    assert [e["event"] for e in logs].count("book.gap_detected") == 1
    assert [c[3] for c in writer.table("book_changes")[-3:]] == [book_us] * 3


async def test_a_snapshot_is_stamped_after_every_row_already_written():
    """A new subscription (sid reused, seq from 1) never shares a timestamp with the
    rows of the one before it."""
    feed, writer = _feed()
    feed.handle(_snap(1), 10)
    feed.handle(_delta_at(2, 1_700_000_000_009), 11)
    feed.handle(orjson.dumps({"id": 2, "type": "subscribed",
                              "msg": {"channel": "orderbook_delta", "sid": 3}}), 12)
    feed.handle(_snap(1), 13)  # sending time 1_700_000_000_001 ms: before the delta
    last_snapshot = writer.table("book_checkpoints")[-1]
    assert last_snapshot[3] == 1_700_000_000_009_000 + 1


async def test_a_server_unsubscribe_is_a_gap_until_a_new_subscription_snapshots():
    """PROTOCOL.md §5.11: the venue ends a subscription on its own, and may hand the same
    sid number to the next one, whose seq starts again at 1."""
    feed, writer = _feed()
    feed.handle(_snap(1), 10)
    feed.handle(_delta(2), 11)
    with capture_logs() as logs:
        feed.handle(orjson.dumps({"type": "unsubscribed", "sid": 3, "seq": 3}), 12)
    assert any(e["event"] == "feed.unsubscribed_by_server" for e in logs)
    gaps = writer.table("gaps")
    assert [(g[1]["reason"], "end_ts" in g[2]) for g in gaps] == [("unsubscribed", False)]
    assert feed.books["KX-A"].awaiting_snapshot and feed.subscriptions.book_sid is None
    with capture_logs() as logs:  # a late frame of the ended subscription
        feed.handle(_delta(4), 13)
    assert [e["event"] for e in logs] == ["feed.frame_for_unknown_sid"]
    feed.handle(orjson.dumps({"id": 9, "type": "subscribed",
                              "msg": {"channel": "orderbook_delta", "sid": 3}}), 14)
    feed.handle(_snap(1), 15)  # seq 1 again: a new counter, not a duplicate
    healed = writer.table("gaps")[-1]
    assert healed[1]["reason"] == "unsubscribed" and "end_ts" in healed[2]
    assert not feed.books["KX-A"].awaiting_snapshot


async def test_a_second_gap_while_snapshots_are_coming_reconnects_instead_of_asking_again():
    feed, _ = _feed()
    feed.handle(_snap(1), 10)
    feed.handle(_snap(2, ticker="KX-B"), 11)
    with capture_logs() as logs:
        feed.handle(_delta(5), 12)  # 3..4 lost: both books re-snapshot
    await asyncio.sleep(0)
    assert all(b.awaiting_snapshot and b.snapshot_requested_us for b in feed.books.values())
    assert not any(e["event"] == "feed.gap_during_recovery" for e in logs)
    feed.handle(_snap(6), 13)  # KX-A healed, KX-B's snapshot still coming
    with capture_logs() as logs:
        feed.handle(_delta(9), 14)  # another jump during recovery
    assert [e["event"] for e in logs if e["event"].startswith("feed.")] == [
        "feed.seq_gap", "feed.gap_during_recovery"]
