"""Where a gap is decided: the sequence of each Kalshi subscription.

`seq` belongs to the subscription (sid), shared by every market and message type in it
(PROTOCOL.md §5.5): one counter per sid, starting again with every new subscription —
also under a reused sid number (§5.11). A `Sequencer` answers, for each sequenced frame,
whether to apply it, drop it as a duplicate, ignore it (a sid not held), or apply it
after a gap of `expected`..`got - 1`. It only decides: what a gap means for the books
(gap rows, snapshots, a reconnect) is the recorder's.

The common case — the next seq of a held sid — is one dict lookup and a comparison, as
it runs for nearly every frame; the recorder does that inline (`last`) and calls `check`
for everything else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Gap:
    """A span in which a market's stored book may not be the exchange's: one `gaps` row.

    Written when detected (`end_us` None: still open; the row's key is detected_us,
    ticker, reason) and, for a book gap, written again with its end when a snapshot heals
    it — the same key, so QuestDB upserts the end bound. `start_us` None: from detection.
    Ticker `*` is a sid-wide gap of a channel without books (trades, lifecycle).
    """

    ticker: str
    reason: str
    detected_us: int
    start_us: int | None
    end_us: int | None = None
    expected_seq: int | None = None
    got_seq: int | None = None
    sid: int | None = None

    def healed(self, end_us: int, sid: int) -> Gap:
        return replace(self, end_us=end_us, sid=sid)


class Verdict(enum.Enum):
    APPLY = "apply"
    DUPLICATE = "duplicate"  # seq <= last: a repeat or reordering (not expected over TCP)
    UNKNOWN_SID = "unknown_sid"  # data for a sid not held: an ended subscription's tail
    GAP = "gap"  # seq > last + 1: messages of the sid were lost; apply this one after


@dataclass(frozen=True)
class SeqGap:
    """Messages `expected`..`got - 1` of subscription `sid` were lost."""

    sid: int
    channel: str
    expected: int
    got: int


class Sequencer:
    """The subscriptions held on one connection and the last seq of each."""

    def __init__(self) -> None:
        self.channels: dict[int, str] = {}  # sid -> channel, for the sids held
        # sid -> last seq applied; only held sids have one. A caller may apply the next
        # seq of a held sid itself (seq == last + 1: always APPLY) and advance it here.
        self.last: dict[int, int] = {}

    def subscribed(self, sid: int, channel: str) -> None:
        """A new subscription: its seq counter starts afresh (even for a reused sid)."""
        self.channels[sid] = channel
        self.last.pop(sid, None)

    def ended(self, sid: int) -> str | None:
        """The venue ended `sid`; returns its channel (None if it was not held)."""
        self.last.pop(sid, None)
        return self.channels.pop(sid, None)

    def clear(self) -> None:
        """A new connection holds nothing yet."""
        self.channels.clear()
        self.last.clear()

    def check(self, sid: int, seq: int, data: bool) -> tuple[Verdict, SeqGap | None]:
        """The verdict on one sequenced frame; `data` is False for command replies, which
        may name a sid that just ended. A frame that is applied moves the counter."""
        last = self.last.get(sid)
        if last is None:
            # Only a held sid gets a seq on record, so this runs once per subscription.
            if sid not in self.channels:  # a reply naming a sid that ended: not counted
                return (Verdict.UNKNOWN_SID if data else Verdict.APPLY), None
        elif seq <= last:
            return Verdict.DUPLICATE, None
        self.last[sid] = seq
        if last is not None and seq > last + 1:
            return Verdict.GAP, SeqGap(sid, self.channels.get(sid, "unknown"), last + 1, seq)
        return Verdict.APPLY, None

    def last_seq(self, sid: int) -> int | None:
        return self.last.get(sid)
