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
    book = checkpoint.book()
    seq, sid, last_ts = checkpoint.seq, checkpoint.sid, checkpoint.ts_us
    applied = 0
    snapshot_key: tuple[int, int, int] | None = None
    for change in changes:
        if change.ts_us < checkpoint.ts_us:
            continue
        if change.ts_us == checkpoint.ts_us and change.sid == checkpoint.sid and (
            change.seq <= checkpoint.seq
        ):
            continue
        if change.kind == "snapshot":
            key = (change.ts_us, change.sid, change.seq)
            if key != snapshot_key:
                book.clear()
                snapshot_key = key
        else:
            snapshot_key = None
        book.set_level(change.side, change.price_e4, change.qty_after_e2)
        seq, sid, last_ts = change.seq, change.sid, change.ts_us
        applied += 1
    return Rebuilt(book, seq, sid, last_ts, applied)
