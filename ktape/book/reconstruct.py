"""Rebuild the book at an instant from a checkpoint plus the changes after it.

The rule (shared with ingestd's writer, see ktape/schema/tables.py and docs/ingestd.md,
"Order and time"):
- a market's rows carry a book time (`ts`) that never goes backwards in seq order, and a
  snapshot's is strictly later than every earlier row, so `(ts, sid, seq)` order is the
  order the rows were applied in, and the book at T is every row with `ts` <= T;
- a checkpoint row holds the full book as of its (ts, sid, seq);
- `book_changes` rows carry the *resulting* level size (`qty_after_e2`), so applying a
  row is idempotent and a replayed row cannot corrupt the book;
- rows with `kind = 'snapshot'` that share (ts, sid, seq) form one exchange snapshot,
  which replaces the whole book (ingestd also writes a checkpoint for each snapshot, so
  normally the checkpoint already is that snapshot);
- changes at the checkpoint's own timestamp are applied only if they come after it in
  (sid, seq) order — they might be in the checkpoint already.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ktape.book.ladder import Book, parse_ladder


@dataclass(frozen=True)
class Checkpoint:
    ts_us: int
    sid: int
    seq: int
    reason: str
    yes_levels: str | None
    no_levels: str | None
    continuous_since_us: int | None

    def book(self) -> Book:
        return Book(parse_ladder(self.yes_levels), parse_ladder(self.no_levels))


@dataclass(frozen=True)
class Change:
    ts_us: int
    side: str
    price_e4: int
    qty_after_e2: int
    delta_e2: int | None
    kind: str
    seq: int
    sid: int


@dataclass
class Rebuilt:
    book: Book
    seq: int
    sid: int
    last_change_us: int
    applied: int


def apply_changes(checkpoint: Checkpoint, changes: Iterable[Change]) -> Rebuilt:
    """Apply `changes` (ordered by ts, sid, seq: seq order) on top of `checkpoint`."""
    return apply_rows(checkpoint, ((c.ts_us, c.side, c.price_e4, c.qty_after_e2, c.kind,
                                    c.seq, c.sid) for c in changes))


# A Change's fields in order, less its delta (a replay sets each level to qty_after).
ChangeRow = tuple[int, str, int, int, str, int, int]


def apply_rows(checkpoint: Checkpoint, rows: Iterable[ChangeRow],
               book: Book | None = None) -> Rebuilt:
    """`apply_changes` for rows as the queries give them (a Change's fields, in order):
    GetOrderbook and GetEventOrderbook replay thousands of rows a call, and making a
    Change of each then applying it through the Book's methods was most of their time.
    `book` is `checkpoint.book()` when the caller parsed it already (GetEventOrderbook
    parses its checkpoints while QuestDB scans the changes); it is updated in place."""
    book = checkpoint.book() if book is None else book
    yes, no = book.yes, book.no
    cp_ts, cp_sid, cp_seq = checkpoint.ts_us, checkpoint.sid, checkpoint.seq
    seq, sid, last_ts = cp_seq, cp_sid, cp_ts
    applied = 0
    snapshot_key: tuple[int, int, int] | None = None
    for ts_us, side, price, qty, kind, c_seq, c_sid in rows:
        if ts_us < cp_ts or (ts_us == cp_ts and c_sid == cp_sid and c_seq <= cp_seq):
            continue  # before the checkpoint, or in it already
        if kind == "snapshot":
            if snapshot_key != (ts_us, c_sid, c_seq):
                yes.clear()
                no.clear()
                snapshot_key = (ts_us, c_sid, c_seq)
        else:
            snapshot_key = None
        if side == "yes":
            ladder = yes
        elif side == "no":
            ladder = no
        else:
            raise ValueError(f"unknown side {side!r}")
        if qty > 0:
            ladder[price] = qty
        else:
            ladder.pop(price, None)
        seq, sid, last_ts = c_seq, c_sid, ts_us
        applied += 1
    return Rebuilt(book, seq, sid, last_ts, applied)
