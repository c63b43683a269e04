"""ListOrderbookDeltas and ListTrades: ordered, keyset-paged history with inline gaps.

Keyset pagination (position = the sort key of the last entry served) makes every page
cost the same. Deltas and gap markers come from two tables; both are ordered by the same
key, gap markers sorting before changes at the same instant (sid = seq = -1), and merged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection

from ktape.book.ladder import format_price, format_quantity
from ktape.marketdata.v1 import marketdata_pb2 as pb
from queryd import sql
from queryd.convert import SIDES, TAKER_SIDES, timestamp, timestamp_us
from queryd.timeutil import as_utc, from_us, to_us

# Sort keys: (ts_us, sid, seq, side, price_e4) for deltas; gap markers use sid = seq = -1.
DeltaKey = tuple[int, int, int, str, int]
TradeKey = tuple[int, int, str]


@dataclass(frozen=True)
class Page:
    items: list[Any]
    last_key: list[Any] | None  # None when this is the last page
    keys: list[Any] = field(default_factory=list)  # each item's sort key (deltas pages)


async def deltas_page(conn: AsyncConnection, ticker: str, start: dt.datetime, end: dt.datetime,
                      after: list[Any] | None, limit: int, *, include_gaps: bool = True) -> Page:
    after_key: DeltaKey = (
        tuple(after) if after is not None else (to_us(start) - 1, 2**62, 2**62, "~", 2**62)
    )  # type: ignore[assignment]
    a_ts, a_sid, a_seq, a_side, a_price = after_key
    rows = await (await conn.execute(sql.CHANGES_PAGE, {
        "ticker": ticker, "start": start, "end": end, "after_ts": from_us(a_ts),
        "after_sid": a_sid, "after_seq": a_seq, "after_side": a_side,
        "after_price": a_price, "limit": limit + 1,
    })).fetchall()
    entries: list[tuple[DeltaKey, pb.OrderbookDelta]] = [
        ((ts_us, sid, seq, side, price),
         change_entry(ts_us, sid, seq, side, price, qty, delta, kind, recv_us, source_us))
        for ts_us, sid, seq, side, price, qty, delta, kind, recv_us, source_us in rows]

    gap_rows = await (await conn.execute(
        sql.GAPS_OVERLAPPING, {"ticker": ticker, "start": start, "end": end})).fetchall() \
        if include_gaps else []
    start_us = to_us(start)
    for row in gap_rows:
        marker_us = max(to_us(row[2]), start_us)
        key = (marker_us, -1, -1, "", -1)
        if key <= after_key:
            continue
        entries.append((key, gap_marker(row, marker_us)))

    if gap_rows:
        entries.sort(key=lambda e: e[0])  # the changes come sorted; markers merge in
    more = len(entries) > limit
    page = entries[:limit]
    return Page([e for _, e in page], list(page[-1][0]) if more and page else None,
                [k for k, _ in page])


def change_entry(ts_us: int, sid: int, seq: int, side: str, price: int, qty: int,
                 delta: int | None, kind: str, recv_us: int | None,
                 source_us: int | None = None) -> pb.OrderbookDelta:
    """One `book_changes` row (from QuestDB or from ingestd's live fan-out) as a delta,
    its times as microseconds since the epoch (both sources have them so: no datetime
    is built, which at stream rates was most of a change's cost). `source_us`: the
    row's own clock reading where its book time `ts` had to be later."""
    return pb.OrderbookDelta(
        kind=pb.DELTA_KIND_SNAPSHOT if kind == "snapshot" else pb.DELTA_KIND_DELTA,
        ts=timestamp_us(ts_us), seq=seq, sid=sid, side=SIDES.get(side, 0),
        price=format_price(price),
        delta=format_quantity(delta if delta is not None else qty),
        quantity=format_quantity(qty),
        receive_time=timestamp_us(recv_us) if recv_us is not None else None,
        source_time=timestamp_us(source_us) if source_us is not None else None,
    )


def gap_marker(row: tuple[Any, ...], marker_us: int) -> pb.OrderbookDelta:
    """A GAP entry from a `gaps` row (ts, reason, gap_start, end_ts, expected, got, sid)."""
    g_ts, reason, g_start, g_end, expected, got, _sid = row
    gap = pb.Gap(reason=str(reason), expected_seq=int(expected or 0), got_seq=int(got or 0))
    gap.start_time.CopyFrom(timestamp(g_start))
    if g_end is not None:
        gap.end_time.CopyFrom(timestamp(g_end))
    entry = pb.OrderbookDelta(kind=pb.DELTA_KIND_GAP, ts=timestamp_us(marker_us), gap=gap)
    entry.receive_time.CopyFrom(timestamp(g_ts))
    return entry


async def trades_page(conn: AsyncConnection, ticker: str, start: dt.datetime, end: dt.datetime,
                      after: list[Any] | None, limit: int) -> Page:
    a_ts, a_seq, a_id = (
        tuple(after) if after is not None else (to_us(start) - 1, 2**62, "")
    )
    rows = await (await conn.execute(sql.TRADES_PAGE, {
        "ticker": ticker, "start": start, "end": end, "after_ts": from_us(a_ts),
        "after_seq": a_seq, "after_id": a_id, "limit": limit + 1,
    })).fetchall()
    trades: list[pb.Trade] = []
    keys: list[TradeKey] = []
    for ts, seq_order, trade_id, yes_p, no_p, count, taker, is_block, _recv in rows[:limit]:
        trades.append(pb.Trade(
            trade_id=str(trade_id), ts=timestamp(as_utc(ts)), yes_price=format_price(int(yes_p)),
            no_price=format_price(int(no_p)) if no_p is not None else "",
            count=format_quantity(int(count)), taker_side=TAKER_SIDES.get(taker, 0),
            is_block_trade=bool(is_block), seq=max(0, int(seq_order)),
        ))
        keys.append((to_us(ts), int(seq_order), str(trade_id)))
    more = len(rows) > limit
    return Page(trades, list(keys[-1]) if more and keys else None)
