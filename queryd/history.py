"""ListOrderbookDeltas and ListTrades: ordered, keyset-paged history with inline gaps.

Keyset pagination (position = the sort key of the last entry served) makes every page
cost the same. Deltas and gap markers come from two tables; both are ordered by the same
key, gap markers sorting before changes at the same instant (sid = seq = -1), and merged.
Each change of a ListOrderbookDeltas page carries its inferred cause (queryd/causes.py),
from two more queries per page whatever its size: the prints of the page's span, and the
falls of its edge milliseconds that lie beyond the page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection

from ktape.book.ladder import format_price, format_quantity
from ktape.marketdata.v1 import marketdata_pb2 as pb
from queryd import sql
from queryd.causes import Change, Print, label
from queryd.columns import page_columns
from queryd.convert import SIDES, TAKER_SIDES, set_us, timestamp
from queryd.timeutil import as_utc, from_us, to_us

BOUNDED_PAGE_MIN = 100  # pages at least this big first find a bound (sql.CHANGES_BOUND)

# Sort keys: (ts_us, sid, seq, side, price_e4) for deltas; gap markers use sid = seq = -1.
DeltaKey = tuple[int, int, int, str, int]
TradeKey = tuple[int, int, str]


@dataclass(frozen=True)
class Page:
    items: Sequence[Any]
    last_key: list[Any] | None  # None when this is the last page
    keys: list[Any] = field(default_factory=list)  # each item's sort key (deltas pages)
    # Deltas pages: the response the items were built into (`items` is its `deltas`), so
    # the service answers with it instead of copying every message into a new one.
    response: pb.ListOrderbookDeltasResponse | None = None


async def deltas_page(conn: AsyncConnection, ticker: str, start: dt.datetime, end: dt.datetime,
                      after: list[Any] | None, limit: int, *, include_gaps: bool = True,
                      with_causes: bool = True, layout: int = pb.BATCH_LAYOUT_UNSPECIFIED
                      ) -> Page:
    """One page of changes and gap markers after the keyset position `after`: messages,
    or with BATCH_LAYOUT_COLUMNS one OrderbookDeltaColumns holding the page. With
    `with_causes`, each change carries its inferred cause."""
    after_key: DeltaKey = (
        tuple(after) if after is not None else (to_us(start) - 1, 2**62, 2**62, "~", 2**62)
    )  # type: ignore[assignment]
    rows = await change_rows(conn, ticker, start, end, after_key, limit + 1)
    labels = await causes(conn, ticker, rows) if with_causes and rows else None
    # (sort key, index of the row | gap marker)
    entries: list[tuple[DeltaKey, Any]] = [(row[:5], i) for i, row in enumerate(rows)]

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
    last = list(page[-1][0]) if more and page else None
    keys = [k for k, _ in page]
    if layout == pb.BATCH_LAYOUT_COLUMNS:
        columns = page_columns(rows, labels, [e for _, e in page])
        return Page([columns], last, keys, pb.ListOrderbookDeltasResponse(columns=columns))
    # Built inside the response: each message made on its own, then copied in, cost
    # twice as much (upb gives every top-level message its own arena).
    response = pb.ListOrderbookDeltasResponse()
    deltas = response.deltas
    for _, pick in page:
        if isinstance(pick, int):
            entry = change_entry(*rows[pick], make=deltas.add)
            if labels is not None:
                entry.cause = labels[pick]  # type: ignore[assignment]
        else:
            deltas.append(pick)
    return Page(deltas, last, keys, response)


async def change_rows(conn: AsyncConnection, ticker: str, start: dt.datetime,
                      end: dt.datetime, after: DeltaKey, limit: int) -> list[tuple[Any, ...]]:
    """Up to `limit` `book_changes` rows (sql.CHANGES_PAGE's columns) of [start, end)
    after the keyset position `after`, in ListOrderbookDeltas' order. In binary: its
    columns are integers and two symbols, which psycopg takes ~20% faster as binary than
    as text for a 1,000-row page."""
    a_ts, a_sid, a_seq, a_side, a_price = after
    params = {"ticker": ticker, "start": start, "end": end, "after_ts": from_us(a_ts),
              "after_sid": a_sid, "after_seq": a_seq, "after_side": a_side,
              "after_price": a_price, "limit": limit}
    if limit > BOUNDED_PAGE_MIN:
        # Sort only up to the row 2 pages in (the rows at the position's instant already
        # served are among them); if that leaves too few, the unbounded query answers.
        skip = 2 * limit
        bound = await (await conn.execute(sql.CHANGES_BOUND, {
            "ticker": ticker, "after_ts": params["after_ts"], "end": end, "skip": skip,
            "skip_end": skip + 1})).fetchone()
        if bound is not None:
            rows = await (await conn.execute(sql.CHANGES_PAGE, {
                **params, "end": bound[0] + dt.timedelta(microseconds=1)},
                binary=True)).fetchall()
            if len(rows) >= limit:
                return rows
    return await (await conn.execute(sql.CHANGES_PAGE, params, binary=True)).fetchall()


def _change(ts_us: int, side: str, price: int, delta: int | None, is_delta: bool,
            source_us: int | None) -> Change:
    """A `book_changes` row as the labeller sees it: at its own exchange instant (its
    clock reading `source_ts` where its book time `ts` had to be later)."""
    return Change(ts_us if source_us is None else source_us, side, price,
                  0 if delta is None else delta, is_delta)


async def causes(conn: AsyncConnection, ticker: str, rows: list[tuple[Any, ...]]) -> list[int]:
    """The cause of each CHANGES_PAGE row (in page order, which is application order).

    A label depends on every fall at its millisecond and level, so the falls of the
    page's first and last milliseconds that the page cut off are read too, and on every
    print of its millisecond: the prints of the whole span in one query."""
    changes = [_change(ts_us, side, price, delta, kind == "delta", source_us)
               for ts_us, _sid, _seq, side, price, _qty, delta, kind, _recv, source_us in rows]
    if not any(c.is_delta and c.delta_e2 < 0 for c in changes):
        return label(changes, [])  # nothing to match: no queries
    first_ms, last_ms = rows[0][0] // 1000, rows[-1][0] // 1000
    edges = await (await conn.execute(
        sql.FALLS_AT_EDGE if first_ms == last_ms else sql.FALLS_AT_EDGES, {
            "ticker": ticker, "first": from_us(first_ms * 1000),
            "first_end": from_us((first_ms + 1) * 1000), "last": from_us(last_ms * 1000),
            "last_end": from_us((last_ms + 1) * 1000)})).fetchall()
    page_keys = {row[:5] for row in rows} if edges else set()
    beyond = [((ts_us, sid, seq, side, price),
               _change(ts_us, side, price, delta, True, source_us))
              for ts_us, sid, seq, side, price, delta, source_us in edges
              if (ts_us, sid, seq, side, price) not in page_keys]
    ordered = changes
    if beyond:  # the page's rows come sorted; the cut-off falls merge in by key
        keyed = [(row[:5], i) for i, row in enumerate(rows)]
        keyed += [(key, -1 - j) for j, (key, _) in enumerate(beyond)]
        keyed.sort(key=lambda k: k[0])
        ordered = [changes[i] if i >= 0 else beyond[-1 - i][1] for _, i in keyed]
    falls = [c.instant_us for c in ordered if c.is_delta and c.delta_e2 < 0]
    trade_rows = await (await conn.execute(sql.PRINTS_BETWEEN, {
        "ticker": ticker, "start": from_us(min(falls) // 1000 * 1000),
        "end": from_us((max(falls) // 1000 + 1) * 1000)})).fetchall()
    prints = [Print(to_us(ts), int(yes_p), int(count), str(taker or ""), bool(block))
              for ts, yes_p, count, taker, block in trade_rows]
    labels = label(ordered, prints)
    if not beyond:
        return labels
    out = [0] * len(rows)
    for n, (_, i) in enumerate(keyed):
        if i >= 0:
            out[i] = labels[n]
    return out


def change_entry(ts_us: int, sid: int, seq: int, side: str, price: int, qty: int,
                 delta: int | None, kind: str, recv_us: int | None,
                 source_us: int | None = None, *,
                 make: Callable[..., pb.OrderbookDelta] = pb.OrderbookDelta
                 ) -> pb.OrderbookDelta:
    """One `book_changes` row (from QuestDB or from ingestd's live fan-out) as a delta,
    its times as microseconds since the epoch (both sources have them so: no datetime
    is built, which at stream rates was most of a change's cost). The Timestamps are
    filled in place: building a Timestamp and handing it to the constructor copies it,
    three times the cost. `source_us`: the row's own clock reading where its book time
    `ts` had to be later. `make`: the message class, or a repeated field's `add` to build
    the entry in place."""
    entry = make(
        kind=pb.DELTA_KIND_SNAPSHOT if kind == "snapshot" else pb.DELTA_KIND_DELTA,
        seq=seq, sid=sid, side=SIDES.get(side, 0), price=format_price(price),
        delta=format_quantity(delta if delta is not None else qty),
        quantity=format_quantity(qty))
    set_us(entry.ts, ts_us)
    if recv_us is not None:
        set_us(entry.receive_time, recv_us)
    if source_us is not None:
        set_us(entry.source_time, source_us)
    return entry


def gap_marker(row: tuple[Any, ...], marker_us: int) -> pb.OrderbookDelta:
    """A GAP entry from a `gaps` row (ts, reason, gap_start, end_ts, expected, got, sid)."""
    g_ts, reason, g_start, g_end, expected, got, _sid = row
    gap = pb.Gap(reason=str(reason), expected_seq=int(expected or 0), got_seq=int(got or 0))
    gap.start_time.CopyFrom(timestamp(g_start))
    if g_end is not None:
        gap.end_time.CopyFrom(timestamp(g_end))
    entry = pb.OrderbookDelta(kind=pb.DELTA_KIND_GAP, gap=gap)
    set_us(entry.ts, marker_us)
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
