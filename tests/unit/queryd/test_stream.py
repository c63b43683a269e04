"""The stream's batch layouts carry the same entries: columns decode to the messages
change_entry builds, and a gap marker splits column batches in stream order."""

from __future__ import annotations

from ktape.book.ladder import format_price, format_quantity
from ktape.marketdata.v1 import marketdata_pb2 as pb
from queryd.history import change_entry
from queryd.stream import _messages, columns

ROWS = [  # sql.CHANGES_PAGE's columns: ts, sid, seq, side, price, qty, delta, kind, recv, source
    (1_793_491_200_000_001, 3, 10, "no", 0, 0, None, "snapshot", 1_793_491_200_000_900, None),
    (1_793_491_200_000_001, 3, 10, "yes", 5500, 123456, None, "snapshot", None, None),
    (1_793_491_200_250_000, 3, 11, "yes", 5500, 100000, -23456, "delta",
     1_793_491_200_251_000, 1_793_491_200_249_000),
    (1_793_491_201_000_000, 4, 1, "no", 1, 99999999, 1, "delta", 1_793_491_201_000_100, None),
]


def _from_columns(cols: pb.OrderbookDeltaColumns, i: int) -> pb.OrderbookDelta:
    """Entry i of a columns batch as the OrderbookDelta it stands for."""
    entry = pb.OrderbookDelta(kind=cols.kinds[i], seq=cols.seqs[i], sid=cols.sids[i],
                              side=cols.sides[i], price=format_price(cols.prices_e4[i]),
                              delta=format_quantity(cols.deltas_e2[i]),
                              quantity=format_quantity(cols.quantities_e2[i]))
    entry.ts.FromMicroseconds(cols.ts_unix_micros[i])
    if cols.receive_unix_micros[i]:
        entry.receive_time.FromMicroseconds(cols.receive_unix_micros[i])
    if cols.source_unix_micros[i]:
        entry.source_time.FromMicroseconds(cols.source_unix_micros[i])
    return entry


def test_columns_hold_exactly_what_the_messages_do() -> None:
    cols = columns(ROWS)
    assert len(cols.kinds) == len(ROWS)
    for i, row in enumerate(ROWS):
        assert _from_columns(cols, i) == change_entry(*row), i
    assert list(cols.deltas_e2[:2]) == [0, 123456]  # a snapshot level's delta is its size


def test_a_gap_marker_splits_column_batches_in_order() -> None:
    gap = pb.OrderbookDelta(kind=pb.DELTA_KIND_GAP, gap=pb.Gap(reason="seq_gap"))
    entries = [ROWS[0], ROWS[1], ROWS[2], gap, ROWS[3]]
    out = list(_messages(entries, 2, pb.BATCH_LAYOUT_COLUMNS))
    assert [m.WhichOneof("payload") for m in out] == ["columns", "columns", "delta", "columns"]
    assert [len(m.columns.kinds) for m in out if m.HasField("columns")] == [2, 1, 1]
    assert out[2].delta == gap
    decoded = [_from_columns(m.columns, i) for m in out if m.HasField("columns")
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
