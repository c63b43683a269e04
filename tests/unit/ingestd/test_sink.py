"""One road out: every row reaches the writer, and live tables the fan-out, in order."""

from __future__ import annotations

from typing import Any

from ingestd.book_change_lines import BookChangeLines
from ingestd.live import LiveFanout
from ingestd.sink import RowSink


class Writer:
    def __init__(self) -> None:
        self.lines: list[tuple[str, Any]] = []

    def row(self, table, *, symbols, columns, at_us, exchange_ms=None):
        self.lines.append((table, at_us))

    def add_line(self, table, line, exchange_ms):
        self.lines.append((table, line))


def test_rows_go_to_the_writer_and_live_tables_to_the_fanout_in_the_same_order():
    writer, live = Writer(), LiveFanout()
    sink = RowSink(writer, live)  # type: ignore[arg-type]
    lines = BookChangeLines("KX-A", "yes", "delta", "exchange")
    sink.book_change(lines, 4200, 100, 100, 1, 3, 10, 20, 4200, 0, 0)
    sink.row("gaps", symbols={"ticker": "KX-A", "reason": "seq_jump"},
             columns={"expected_seq": 2}, at_us=30)
    sink.row("trades", symbols={"ticker": "KX-A"}, columns={"trade_id": "t"}, at_us=40)
    sink.book_change(lines, 4200, 90, -10, 2, 3, 11, 15, 4200, 0, 0, source_us=12)  # moved up
    assert [t for t, _ in writer.lines] == ["book_changes", "gaps", "trades", "book_changes"]
    assert "source_ts=12t" in writer.lines[-1][1]
    assert "best_yes_bid_e4=4200i,best_no_bid_e4=0i" in writer.lines[0][1]
    assert live.live_seq == 3  # book change, gap, moved book change; never the trade
    assert live.last_by_table["book_changes"]["source_ts"] == 12


def test_without_a_fanout_rows_still_reach_the_writer():
    writer = Writer()
    sink = RowSink(writer)  # type: ignore[arg-type]
    sink.row("gaps", symbols={}, columns={}, at_us=1)
    sink.book_change(BookChangeLines("KX-A", "no", "snapshot", "sending"), 1, 1, 1, 1, 1, 1,
                     1, 1, 0, None)
    assert len(writer.lines) == 2
