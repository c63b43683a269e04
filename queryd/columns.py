"""`book_changes` rows as OrderbookDeltaColumns: the column layout of a stream batch and
of a ListOrderbookDeltas page.

Why columns: building one OrderbookDelta per change (and reading one back) was most of
what a replay or a DataFrame of history cost, in queryd and in the client. Columns hand
whole result columns to packed repeated fields at once (`zip(*rows)`, one `extend` per
column) and are read back the same way.
"""

from __future__ import annotations

from typing import Any

from ktape.marketdata.v1 import marketdata_pb2 as pb
from queryd.convert import SIDES

KINDS = {"snapshot": pb.DELTA_KIND_SNAPSHOT, "delta": pb.DELTA_KIND_DELTA, "gap": pb.DELTA_KIND_GAP}


def columns(rows: list[tuple[Any, ...]]) -> pb.OrderbookDeltaColumns:
    """Rows in sql.CHANGES_PAGE's columns (ts_us, sid, seq, side, price_e4, qty_e2,
    delta_e2, kind, recv_us, source_us) as one OrderbookDeltaColumns. A snapshot level's
    delta is its size (as OrderbookDelta.delta); unknown times are 0."""
    if not rows:
        return pb.OrderbookDeltaColumns()
    ts, sid, seq, side, price, qty, delta, kind, recv, source = zip(*rows, strict=True)
    return pb.OrderbookDeltaColumns(
        kinds=[KINDS[k] for k in kind], ts_unix_micros=ts, seqs=seq, sids=sid,
        sides=[SIDES.get(s, 0) for s in side], prices_e4=price, quantities_e2=qty,
        deltas_e2=[q if d is None else d for d, q in zip(delta, qty, strict=True)],
        receive_unix_micros=[r or 0 for r in recv], source_unix_micros=[r or 0 for r in source])


def gap_row(marker: pb.OrderbookDelta) -> tuple[Any, ...]:
    """A gap marker as a row of kind "gap": its time and detection time, zeros elsewhere."""
    return (marker.ts.ToMicroseconds(), 0, 0, "", 0, 0, 0, "gap",
            marker.receive_time.ToMicroseconds(), None)


def page_columns(rows: list[tuple[Any, ...]], causes: list[int] | None,
                 picks: list[int | pb.OrderbookDelta]) -> pb.OrderbookDeltaColumns:
    """A ListOrderbookDeltas page as columns: `picks` in page order, each an index into
    `rows` (with its cause, if labelled) or a gap marker (kind GAP, its Gap in `gaps`)."""
    chosen: list[tuple[Any, ...]] = []
    labels: list[int] = []
    gaps: list[pb.Gap] = []
    for pick in picks:
        if isinstance(pick, int):
            chosen.append(rows[pick])
            labels.append(causes[pick] if causes is not None else 0)
        else:
            chosen.append(gap_row(pick))
            labels.append(0)
            gaps.append(pick.gap)
    out = columns(chosen)
    out.causes.extend(labels)
    out.gaps.extend(gaps)
    return out
