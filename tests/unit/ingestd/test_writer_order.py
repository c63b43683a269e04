"""A batch holds its rows in the order they were written, whether they came through the
ILP client's Buffer or as ready lines: queryd's live join relies on QuestDB committing
rows in the order the fan-out published them."""

from __future__ import annotations

from pathlib import Path

from ingestd.book_change_lines import BookChangeLines
from ingestd.spill import SpillFile
from ingestd.writer import IlpWriter, TimestampMicros


async def test_rows_and_lines_keep_write_order(tmp_path: Path) -> None:
    writer = IlpWriter("127.0.0.1:1", SpillFile(tmp_path / "ilp.spill", 1 << 20))
    lines = BookChangeLines("KX-A", "yes", "delta", "exchange")
    expected = []
    for i in range(12):
        if i % 4 == 0:  # a Buffer row (say, a gap) between runs of ready lines
            writer.row("gaps", symbols={"ticker": "KX-A", "reason": "seq_jump"},
                       columns={"got_seq": i, "recv_ts": TimestampMicros(5)}, at_us=1_000 + i)
            expected.append(f"gaps,ticker=KX-A,reason=seq_jump got_seq={i}i,recv_ts=5t "
                            f"{(1_000 + i) * 1000}")
        else:
            writer.add_line("book_changes", lines.ilp(4000, i, 1, i, 3, 5, 1_000 + i, 4000, 0), 1)
            expected.append(lines.ilp(4000, i, 1, i, 3, 5, 1_000 + i, 4000, 0).rstrip("\n"))
    assert writer.rows == 12
    assert writer.table_rows == {"gaps": 3, "book_changes": 9}
    assert writer._payload().decode().splitlines() == expected
    await writer.client.aclose()
