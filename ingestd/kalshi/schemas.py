"""Kalshi's WebSocket v2 frames (PROTOCOL.md §5), decoded once into frozen typed messages.

Why msgspec: one pass from bytes to validated Structs, tagged by the frame's `type`. What
the old dict-walking code checked by hand (a `true` where an int belongs, a seq that is a
string, a missing `market_ticker`, a side that is neither `yes` nor `no`) is refused at
decode, with the path of the bad field in the error. Unknown keys are ignored (Kalshi adds
fields without notice, §5.11); an unknown `type` is its own bad-input reason.

Time has one rule for every type (`exchange_time`), PROTOCOL.md §3.2: the message's own
exchange stamp (`ts_ms`; else the deprecated `ts`, seconds or RFC 3339) → "exchange";
else Kalshi's `sending_ts_ms` (when the frame was queued, never earlier than what it
describes) → "sending"; else our receive time → "receive".
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import orjson

from ktape.clock import rfc3339_us

Side = Literal["yes", "no"]


def exchange_time(ts_ms: int | None, ts: int | str | None, sending_ts_ms: int | None,
                  recv_us: int) -> tuple[int, str]:
    """(µs, source) of a message: the one exchange-time rule (module docstring)."""
    if ts_ms is not None:
        return ts_ms * 1000, "exchange"
    if type(ts) is int:
        return ts * 1_000_000, "exchange"
    if type(ts) is str:
        return rfc3339_us(ts), "exchange"
    if sending_ts_ms is not None:
        return sending_ts_ms * 1000, "sending"
    return recv_us, "receive"


class _Frame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    sending_ts_ms: int | None = None


# -- subscription data ---------------------------------------------------------------------

class SnapshotBody(msgspec.Struct, frozen=True, gc=False):
    market_ticker: str
    yes_dollars_fp: list[tuple[str, str]] = []  # absent when that side is empty
    no_dollars_fp: list[tuple[str, str]] = []


class Snapshot(_Frame, frozen=True, kw_only=True, tag="orderbook_snapshot"):
    sid: int
    seq: int
    msg: SnapshotBody


class DeltaBody(msgspec.Struct, frozen=True, gc=False):
    market_ticker: str
    price_dollars: str
    delta_fp: str
    side: Side
    ts_ms: int | None = None
    ts: str | int | None = None


class Delta(_Frame, frozen=True, kw_only=True, tag="orderbook_delta"):
    sid: int
    seq: int
    msg: DeltaBody


class TradeBody(msgspec.Struct, frozen=True, gc=False):
    trade_id: str
    market_ticker: str
    yes_price_dollars: str
    count_fp: str
    no_price_dollars: str | None = None
    taker_outcome_side: str | None = None
    taker_side: str | None = None  # deprecated, still sent
    is_block_trade: bool = False
    ts_ms: int | None = None
    ts: int | str | None = None


class Trade(_Frame, frozen=True, kw_only=True, tag="trade"):
    sid: int
    seq: int | None = None
    msg: TradeBody


class TickerBody(msgspec.Struct, frozen=True, gc=False):
    """PROTOCOL.md §5.7; prices may be "" when nothing has traded (older captures)."""

    market_ticker: str
    price_dollars: str | None = None
    yes_bid_dollars: str | None = None
    yes_ask_dollars: str | None = None
    yes_bid_size_fp: str | None = None
    yes_ask_size_fp: str | None = None
    last_trade_size_fp: str | None = None
    volume_fp: str | None = None
    open_interest_fp: str | None = None
    dollar_volume: int | None = None
    dollar_open_interest: int | None = None
    ts_ms: int | None = None
    ts: int | str | None = None


class Ticker(_Frame, frozen=True, kw_only=True, tag="ticker"):
    sid: int | None = None
    seq: int | None = None
    msg: TickerBody


class _LifecycleFrame(_Frame, frozen=True, kw_only=True):
    """Lifecycle bodies stay a mapping: every key Kalshi sent is stored whole
    (lifecycle.payload) and its event types carry different, growing key sets (§5.9)."""

    sid: int
    seq: int | None = None
    msg: dict[str, Any]

    @property
    def ticker(self) -> str:
        return str(self.msg.get("market_ticker") or self.msg.get("event_ticker") or "")

    @property
    def event_type(self) -> str:
        return str(self.msg.get("event_type") or type(self).__struct_config__.tag)


class MarketLifecycle(_LifecycleFrame, frozen=True, kw_only=True, tag="market_lifecycle_v2"):
    pass


class EventLifecycle(_LifecycleFrame, frozen=True, kw_only=True, tag="event_lifecycle"):
    pass


class EventFeeUpdate(_LifecycleFrame, frozen=True, kw_only=True, tag="event_fee_update"):
    pass


# -- replies to our commands ----------------------------------------------------------------

class SubscribedBody(msgspec.Struct, frozen=True, gc=False):
    channel: str
    sid: int
    market_tickers: list[str] | None = None


class Subscribed(_Frame, frozen=True, kw_only=True, tag="subscribed"):
    id: int | None = None
    msg: SubscribedBody


class OkTickers(msgspec.Struct, frozen=True, gc=False):
    market_tickers: list[str] | None = None


class Ok(_Frame, frozen=True, kw_only=True, tag="ok"):
    """`msg` lists a subscription's complete ticker set (after add/delete, or a merged
    subscribe, §5.11), or, for list_subscriptions, the subscriptions held."""

    id: int | None = None
    sid: int | None = None
    seq: int | None = None
    msg: OkTickers | list[SubscribedBody] | None = None

    @property
    def tickers(self) -> list[str] | None:
        return self.msg.market_tickers if isinstance(self.msg, OkTickers) else None


class ErrorBody(msgspec.Struct, frozen=True, gc=False):
    code: int | None = None
    msg: str | None = None


class Error(_Frame, frozen=True, kw_only=True, tag="error"):
    id: int | None = None
    sid: int | None = None
    seq: int | None = None
    msg: ErrorBody = ErrorBody()


class Unsubscribed(_Frame, frozen=True, kw_only=True, tag="unsubscribed"):
    id: int | None = None  # none when the venue ended the subscription itself (§5.11)
    sid: int
    seq: int | None = None


Frame = (Snapshot | Delta | Trade | Ticker | MarketLifecycle | EventLifecycle | EventFeeUpdate
         | Subscribed | Ok | Error | Unsubscribed)
FRAME_TYPES: tuple[type[_Frame], ...] = (
    Snapshot, Delta, Trade, Ticker, MarketLifecycle, EventLifecycle, EventFeeUpdate,
    Subscribed, Ok, Error, Unsubscribed)
TAGS: dict[type[_Frame], str] = {cls: str(cls.__struct_config__.tag) for cls in FRAME_TYPES}
# Subscription data (as opposed to command replies): only valid on a sid we hold.
DATA_TYPES = (Snapshot, Delta, Trade, MarketLifecycle, EventLifecycle, EventFeeUpdate)


class BadFrame(msgspec.Struct, frozen=True, gc=False):
    """A frame that is not one of Kalshi's: why (a bad-input reason), what we could read."""

    reason: Literal["malformed_json", "not_an_object", "unknown_type", "invalid_field"]
    error: str
    type: str | None = None
    sid: Any = None
    seq: Any = None


_decoder = msgspec.json.Decoder(Frame)


def decode(raw: bytes | str) -> Frame | BadFrame:
    """One frame, typed; a BadFrame (never an exception) for anything else."""
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return _classify(raw, str(exc))
    except msgspec.DecodeError as exc:
        return BadFrame("malformed_json", str(exc))


def _classify(raw: bytes | str, error: str) -> BadFrame:
    """Why a frame that is JSON did not decode (the slow path: bad input only)."""
    value = orjson.loads(raw)
    if not isinstance(value, dict):
        return BadFrame("not_an_object", error)
    kind = value.get("type")
    kind = kind if isinstance(kind, str) else None
    reason = "invalid_field" if kind in TAGS.values() else "unknown_type"
    return BadFrame(reason, error, kind, value.get("sid"), value.get("seq"))
