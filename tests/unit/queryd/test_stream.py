"""The stream's batch layouts carry the same entries: a gap marker splits column batches
in stream order, and the message layouts are as before."""

from __future__ import annotations

from ktape.marketdata.v1 import marketdata_pb2 as pb
from queryd.history import change_entry
from queryd.stream import _messages
from tests.unit.queryd.test_columns import ROWS, from_columns


def test_a_gap_marker_splits_column_batches_in_order() -> None:
    gap = pb.OrderbookDelta(kind=pb.DELTA_KIND_GAP, gap=pb.Gap(reason="seq_gap"))
    entries = [ROWS[0], ROWS[1], ROWS[2], gap, ROWS[3]]
    out = list(_messages(entries, 2, pb.BATCH_LAYOUT_COLUMNS))
    assert [m.WhichOneof("payload") for m in out] == ["columns", "columns", "delta", "columns"]
    assert [len(m.columns.kinds) for m in out if m.HasField("columns")] == [2, 1, 1]
    assert out[2].delta == gap
    decoded = [from_columns(m.columns, i) for m in out if m.HasField("columns")
               for i in range(len(m.columns.kinds))]
    assert decoded == [change_entry(*row) for row in ROWS]


def test_the_message_layouts_are_unchanged() -> None:
    gap = pb.OrderbookDelta(kind=pb.DELTA_KIND_GAP)
    entries = [ROWS[0], gap, ROWS[1]]
    single = list(_messages(entries, 0, pb.BATCH_LAYOUT_COLUMNS))  # no batch: no columns
    assert [m.delta for m in single] == [change_entry(*ROWS[0]), gap, change_entry(*ROWS[1])]
    batched = list(_messages(entries, 2, pb.BATCH_LAYOUT_UNSPECIFIED))
    assert [list(m.deltas.deltas) for m in batched] == [
        [change_entry(*ROWS[0]), gap], [change_entry(*ROWS[1])]]
