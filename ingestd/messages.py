"""What flows between ingestd's stages, venue-neutral: book messages in, actions out.

A venue adapter (ingestd/kalshi/) turns its frames into BookSnapshot / BookDelta, exact
integers already (prices in $0.0001, sizes in 0.01 contract) and time decided; the book
recorder (ingestd/recorder.py) answers with what the connection must do next. Nothing here
knows a wire format, and nothing downstream of here parses one.
"""

from __future__ import annotations

import msgspec


class BookSnapshot(msgspec.Struct, frozen=True, gc=False):
    """A market's whole book as of (`sid`, `seq`); `clock_us` is the time it was sent or
    received (never earlier than the instant it describes), `source` which of the two."""

    ticker: str
    yes: dict[int, int]  # price_e4 -> size_e2
    no: dict[int, int]
    sid: int
    seq: int
    clock_us: int
    source: str
    recv_us: int


class BookDelta(msgspec.Struct, frozen=True, gc=False):
    """One level of one side changed by `delta_e2`; `clock_us` is the exchange's stamp
    (`source` "exchange") when the venue gave one."""

    ticker: str
    side: str  # "yes" | "no"
    price_e4: int
    delta_e2: int
    sid: int
    seq: int
    clock_us: int
    source: str
    recv_us: int


class RequestSnapshots(msgspec.Struct, frozen=True, gc=False):
    """Ask the venue for these markets' books (they are in a gap until each arrives)."""

    tickers: tuple[str, ...]


class Reconnect(msgspec.Struct, frozen=True, gc=False):
    """Drop the connection: a new one re-snapshots every book at once (`reason` logged)."""

    reason: str


Action = RequestSnapshots | Reconnect
