"""The venue-neutral book recorder: messages in, rows and actions out (no wire format)."""

from __future__ import annotations

from typing import Any

from ingestd.messages import BookDelta, BookSnapshot, Reconnect, RequestSnapshots
from ingestd.recorder import BookRecorder

T0 = 1_700_000_000_000_000


class Rows:
    """A row sink that keeps what it was given."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any], dict[str, Any], int]] = []

    def row(self, table, *, symbols, columns, at_us, exchange_ms=None):
        self.rows.append((table, symbols, columns, at_us))

    def book_change(self, lines, price, after, delta, seq, sid, recv_us, at_us, best_yes,
                    best_no, exchange_ms, source_us=None):
        self.rows.append(("book_changes", dict(lines.symbols), {
            "price_e4": price, "qty_after_e2": after, "delta_e2": delta, "seq": seq,
            "source_ts": source_us, "best_yes_bid_e4": best_yes, "best_no_bid_e4": best_no},
            at_us))

    def table(self, name: str) -> list[tuple[str, dict[str, Any], dict[str, Any], int]]:
        return [r for r in self.rows if r[0] == name]


def _recorder(**kw: Any) -> tuple[BookRecorder, Rows]:
    rows = Rows()
    return BookRecorder(rows, **kw), rows  # type: ignore[arg-type]


def snap(seq: int, yes: dict[int, int] | None = None, ticker: str = "KX-A",
         at: int = T0) -> BookSnapshot:
    return BookSnapshot(ticker, {4200: 100} if yes is None else yes, {}, 3, seq, at,
                        "sending", at)


def delta(seq: int, d: int = -10, at: int = T0 + 1000, ticker: str = "KX-A") -> BookDelta:
    return BookDelta(ticker, "yes", 4200, d, 3, seq, at, "exchange", at)


def test_snapshot_and_deltas_become_rows_and_checkpoints():
    recorder, rows = _recorder(checkpoint_every_changes=2)
    recorder.snapshot(snap(1))
    assert recorder.delta(delta(2)) is None
    assert recorder.delta(delta(3, at=T0 + 2000)) is None
    assert [(r[2]["qty_after_e2"], r[3]) for r in rows.table("book_changes")] == [
        (100, T0), (90, T0 + 1000), (80, T0 + 2000)]
    assert [(r[1]["reason"], r[2]["yes_levels"]) for r in rows.table("book_checkpoints")] == [
        ("snapshot", "4200:100"), ("periodic", "4200:80")]
    assert recorder.recorded == 1


def test_a_lost_message_is_a_gap_healed_by_the_next_snapshot():
    recorder, rows = _recorder()
    recorder.snapshot(snap(1))
    recorder.snapshot(snap(2, ticker="KX-B"))
    action = recorder.subscription_gap(3, expected=3, got=5)
    assert action == RequestSnapshots(("KX-A", "KX-B"))
    assert recorder.delta(delta(6)) is None  # awaiting its snapshot: not applied
    assert len(rows.table("book_changes")) == 2
    recorder.snapshot(snap(7, yes={4300: 5}, at=T0 + 9000))
    gaps = rows.table("gaps")
    assert [(g[1]["ticker"], "end_ts" in g[2]) for g in gaps] == [
        ("KX-A", False), ("KX-B", False), ("KX-A", True)]
    assert gaps[0][3] == gaps[2][3]  # the same row key: the end bound is an upsert


def test_a_second_loss_during_recovery_answers_reconnect():
    recorder, _ = _recorder()
    recorder.snapshot(snap(1))
    recorder.snapshot(snap(2, ticker="KX-B"))
    first = recorder.subscription_gap(3, expected=3, got=5)
    recorder.snapshots_requested(first.tickers, T0)  # type: ignore[union-attr]
    recorder.snapshot(snap(6))
    assert recorder.subscription_gap(3, expected=7, got=9) == Reconnect("gap_during_recovery")


def test_a_negative_level_asks_for_that_market_only():
    recorder, rows = _recorder()
    recorder.snapshot(snap(1))
    recorder.snapshot(snap(2, ticker="KX-B"))
    assert recorder.delta(delta(3, d=-1000)) == RequestSnapshots(("KX-A",))
    assert [g[1]["reason"] for g in rows.table("gaps")] == ["negative_level"]
    assert not recorder.books["KX-B"].awaiting_snapshot


def test_disagreeing_snapshot_is_a_mismatch_and_an_empty_one_at_close_is_short():
    recorder, rows = _recorder()
    recorder.closes_at("KX-B", T0 + 5_000_000)
    recorder.snapshot(snap(1))
    recorder.snapshot(snap(2, ticker="KX-B"))
    recorder.snapshot(snap(3, yes={4200: 99}, at=T0 + 1))
    recorder.snapshot(snap(4, yes={}, ticker="KX-B", at=T0 + 5_000_000))
    gaps = [(g[1]["ticker"], g[1]["reason"], g[2]["start_ts"].value, g[2]["end_ts"].value)
            for g in rows.table("gaps")]
    assert gaps == [("KX-A", "snapshot_mismatch", T0, T0 + 1),
                    ("KX-B", "market_close", T0 + 5_000_000, T0 + 5_000_000)]


def test_a_change_stamped_before_the_last_row_keeps_seq_order():
    recorder, rows = _recorder()
    recorder.snapshot(snap(1))
    recorder.delta(delta(2, at=T0 + 50))
    recorder.delta(delta(3, at=T0 + 40))  # the exchange's stamps went back
    last = rows.table("book_changes")[-1]
    assert (last[3], last[2]["source_ts"]) == (T0 + 50, T0 + 40)
    clock = [g for g in rows.table("gaps") if g[1]["reason"] == "clock_order"]
    assert [(g[2]["start_ts"].value, g[2]["end_ts"].value) for g in clock] == [
        (T0 + 40, T0 + 50)]


def test_lose_all_and_restart_open_gaps_that_stay_open_until_snapshots():
    recorder, rows = _recorder()
    recorder.note_restart({"KX-A": T0 - 5})
    assert recorder.books["KX-A"].awaiting_snapshot
    recorder.snapshot(snap(1))
    assert recorder.lose_all("reconnect", None) == ["KX-A"]
    assert recorder.lose_all("reconnect", None) == []  # already in a gap: no second row
    reasons = [(g[1]["reason"], g[2].get("start_ts")) for g in rows.table("gaps")]
    assert [r for r, _ in reasons] == ["ingest_restart", "ingest_restart", "reconnect"]
    assert reasons[0][1].value == T0 - 5  # from the last recorded change


def test_overdue_snapshots():
    recorder, _ = _recorder()
    recorder.snapshot(snap(1))
    recorder.lose_all("unsubscribed", 3)
    recorder.snapshots_requested(["KX-A"], T0)
    assert recorder.overdue_snapshots(T0 + 1_000_000) == []
    assert recorder.overdue_snapshots(T0 + 16_000_000) == ["KX-A"]


def test_a_crossed_book_is_an_anomaly_until_it_uncrosses_and_a_snapshot_is_asked_for():
    recorder, rows = _recorder()
    recorder.snapshot(BookSnapshot("KX-A", {4200: 100}, {5500: 50}, 3, 1, T0, "sending", T0))
    # a NO bid at 0.58 against the YES bid at 0.42 sums to exactly $1.00: locked
    locks = BookDelta("KX-A", "no", 5800, 20, 3, 2, T0 + 1000, "exchange", T0 + 1000)
    assert recorder.delta(locks) == RequestSnapshots(("KX-A",))
    opened = [r for r in rows.table("gaps") if r[1]["reason"] == "crossed_book"]
    assert len(opened) == 1 and opened[0][2]["start_ts"].value == T0 + 1000
    assert "end_ts" not in opened[0][2]
    # more changes still apply while it is crossed; removing the level uncrosses it
    assert recorder.delta(BookDelta("KX-A", "yes", 4100, 5, 3, 3, T0 + 2000, "exchange",
                                    T0 + 2000)) is None
    assert recorder.delta(BookDelta("KX-A", "no", 5800, -20, 3, 4, T0 + 3000, "exchange",
                                    T0 + 3000)) is None
    healed = [r for r in rows.table("gaps") if r[1]["reason"] == "crossed_book"]
    assert len(healed) == 2 and healed[1][2]["end_ts"].value == T0 + 3000
    assert healed[1][3] == opened[0][3]  # the same row (dedup key), now with its end
    # a level below the best that does not reach $1 is no anomaly
    assert recorder.delta(BookDelta("KX-A", "no", 5700, 5, 3, 5, T0 + 4000, "exchange",
                                    T0 + 4000)) is None
    assert len([r for r in rows.table("gaps") if r[1]["reason"] == "crossed_book"]) == 2


def test_a_snapshot_heals_a_crossed_book():
    recorder, rows = _recorder()
    recorder.snapshot(BookSnapshot("KX-A", {4200: 100}, {5500: 50}, 3, 1, T0, "sending", T0))
    recorder.delta(BookDelta("KX-A", "yes", 4600, 10, 3, 2, T0 + 1000, "exchange", T0 + 1000))
    recorder.snapshot(BookSnapshot("KX-A", {4200: 100}, {5500: 50}, 3, 3, T0 + 5000,
                                   "sending", T0 + 5000))
    crossed = [r for r in rows.table("gaps") if r[1]["reason"] == "crossed_book"]
    assert [("end_ts" in r[2]) for r in crossed] == [False, True]
    assert crossed[1][2]["end_ts"].value == T0 + 5000


def test_each_change_row_carries_the_top_after_its_message():
    """Every row of a snapshot carries the top after the whole snapshot (not after the
    rows before it), each delta the top after itself; 0 is an empty side."""
    recorder, rows = _recorder()
    recorder.snapshot(BookSnapshot("KX-A", {4200: 100, 4100: 5}, {5000: 7}, 3, 1, T0,
                                   "sending", T0))
    recorder.delta(BookDelta("KX-A", "yes", 4200, -100, 3, 2, T0 + 10, "exchange", T0 + 10))
    recorder.delta(BookDelta("KX-A", "no", 5000, -7, 3, 3, T0 + 20, "exchange", T0 + 20))
    recorder.delta(BookDelta("KX-A", "yes", 4500, 9, 3, 4, T0 + 30, "exchange", T0 + 30))
    recorder.snapshot(BookSnapshot("KX-A", {}, {}, 3, 5, T0 + 40, "sending", T0 + 40))
    tops = [(r[2]["best_yes_bid_e4"], r[2]["best_no_bid_e4"])
            for r in rows.table("book_changes")]
    assert tops == [(4200, 5000)] * 3 + [(4100, 5000), (4100, 0), (4500, 0), (0, 0)]
