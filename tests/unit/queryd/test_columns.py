"""Rows as columns hold exactly what the messages do; a ListOrderbookDeltas page as
columns keeps its gap markers in place (kind GAP, their Gap in `gaps`) and its causes."""

from __future__ import annotations

from ktape.book.ladder import format_price, format_quantity
from ktape.marketdata.v1 import marketdata_pb2 as pb
from queryd.columns import columns, page_columns
from queryd.history import change_entry

ROWS = [  # sql.CHANGES_PAGE's columns: ts, sid, seq, side, price, qty, delta, kind, recv, source
    (1_793_491_200_000_001, 3, 10, "no", 0, 0, None, "snapshot", 1_793_491_200_000_900, None),
    (1_793_491_200_000_001, 3, 10, "yes", 5500, 123456, None, "snapshot", None, None),
    (1_793_491_200_250_000, 3, 11, "yes", 5500, 100000, -23456, "delta",
     1_793_491_200_251_000, 1_793_491_200_249_000),
    (1_793_491_201_000_000, 4, 1, "no", 1, 99999999, 1, "delta", 1_793_491_201_000_100, None),
]


def from_columns(cols: pb.OrderbookDeltaColumns, i: int) -> pb.OrderbookDelta:
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
        assert from_columns(cols, i) == change_entry(*row), i
    assert list(cols.deltas_e2[:2]) == [0, 123456]  # a snapshot level's delta is its size



def test_a_page_keeps_its_gap_markers_and_causes_in_place() -> None:
    gap = pb.OrderbookDelta(kind=pb.DELTA_KIND_GAP, gap=pb.Gap(reason="seq_gap", got_seq=9))
    gap.ts.FromMicroseconds(1_793_491_200_100_000)
    gap.receive_time.FromMicroseconds(1_793_491_205_000_000)
    causes = [0, 0, pb.DELTA_CAUSE_TRADE, pb.DELTA_CAUSE_NEW]
    cols = page_columns(ROWS, causes, [0, 1, gap, 2, 3])
    assert list(cols.kinds) == [pb.DELTA_KIND_SNAPSHOT] * 2 + [pb.DELTA_KIND_GAP] + \
        [pb.DELTA_KIND_DELTA] * 2
    assert list(cols.causes) == [0, 0, 0, pb.DELTA_CAUSE_TRADE, pb.DELTA_CAUSE_NEW]
    assert list(cols.gaps) == [gap.gap]
    assert (cols.ts_unix_micros[2], cols.receive_unix_micros[2]) == (
        1_793_491_200_100_000, 1_793_491_205_000_000)
    assert (cols.sides[2], cols.prices_e4[2], cols.quantities_e2[2], cols.seqs[2]) == (0, 0, 0, 0)
    assert [from_columns(cols, i) for i in (0, 1, 3, 4)] == [change_entry(*r) for r in ROWS]
    assert not page_columns(ROWS, None, [2]).causes[0]  # unlabelled: unspecified
