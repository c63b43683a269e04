"""The one road every record takes out of ingestd: the ILP writer, then the live fan-out.

Why one road: queryd joins history (QuestDB) to live (`/live`) by the order rows were
written, so the two must see the same rows in the same order. Every stage that emits a
record (book recorder, Kalshi adapter, metadata rows) is given this sink at construction
and writes nothing anywhere else; the writer does not know the fan-out exists.
"""

from __future__ import annotations

from typing import Any

from ingestd.book_change_lines import TABLE as BOOK_CHANGES
from ingestd.book_change_lines import BookChangeLines
from ingestd.live import LIVE_TABLES, LiveFanout
from ingestd.writer import IlpWriter, TimestampMicros


class RowSink:
    def __init__(self, writer: IlpWriter, live: LiveFanout | None = None) -> None:
        self.writer = writer  # also the reader's flow control (wants_flush/backpressure)
        self.live = live

    def row(self, table: str, *, symbols: dict[str, str], columns: dict[str, Any],
            at_us: int, exchange_ms: int | None = None) -> None:
        """One row of any table."""
        self.writer.row(table, symbols=symbols, columns=columns, at_us=at_us,
                        exchange_ms=exchange_ms)
        if self.live is not None and table in LIVE_TABLES:
            self.live.publish(table, symbols, columns, at_us)

    def book_change(self, lines: BookChangeLines, price: int, after: int, delta: int,
                    seq: int, sid: int, recv_us: int, at_us: int, best_yes: int, best_no: int,
                    exchange_ms: int | None, source_us: int | None = None) -> None:
        """One book_changes row from the market's prebuilt text (the hot path: no dict).
        `best_yes`/`best_no`: the book's top once this row's message is applied (QuestDB
        only; the fan-out's readers keep their own books). `source_us`: the row's own
        clock reading when `at_us` had to be later than it."""
        if source_us is None:
            self.writer.add_line(BOOK_CHANGES, lines.ilp(price, after, delta, seq, sid,
                                                         recv_us, at_us, best_yes, best_no),
                                 exchange_ms)
            if self.live is not None:
                self.live.publish_book_change(lines, price, after, delta, seq, sid, recv_us,
                                              at_us)
            return
        self.writer.add_line(BOOK_CHANGES, lines.ilp_moved(price, after, delta, seq, sid,
                                                           recv_us, at_us, best_yes, best_no,
                                                           source_us), exchange_ms)
        if self.live is not None:  # rare: the generic record, which carries source_ts too
            self.live.publish(BOOK_CHANGES, dict(lines.symbols), {
                "price_e4": price, "qty_after_e2": after, "delta_e2": delta, "seq": seq,
                "sid": sid, "recv_ts": recv_us, "source_ts": source_us}, at_us)


__all__ = ["RowSink", "TimestampMicros"]
