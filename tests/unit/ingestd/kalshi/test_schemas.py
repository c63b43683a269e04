"""Kalshi frames decoded once into typed messages; one time rule; bad input classified."""

from __future__ import annotations

import orjson
import pytest

from ingestd.kalshi import schemas
from ktape.clock import rfc3339_us


def _decode(frame: dict) -> object:
    return schemas.decode(orjson.dumps(frame))


def test_every_documented_frame_decodes_to_its_type():
    """The examples of PROTOCOL.md §5 (one per type)."""
    cases = [
        ({"type": "orderbook_snapshot", "sid": 3, "seq": 1, "msg": {
            "market_ticker": "KX-A", "market_id": "x", "yes_dollars_fp": [["0.11", "9.5"]]}},
         schemas.Snapshot),
        ({"type": "orderbook_delta", "sid": 3, "seq": 2, "msg": {
            "market_ticker": "KX-A", "market_id": "x", "price_dollars": "0.27",
            "delta_fp": "-5.54", "side": "no", "ts_ms": 1}}, schemas.Delta),
        ({"type": "trade", "sid": 4, "seq": 9, "msg": {
            "trade_id": "t", "market_ticker": "KX-A", "yes_price_dollars": "0.27",
            "no_price_dollars": "0.73", "count_fp": "5.54", "taker_outcome_side": "no",
            "ts": 1764007199, "ts_ms": 1764007199812}}, schemas.Trade),
        ({"type": "ticker", "sid": 5, "msg": {"market_ticker": "KX-A", "price_dollars": "",
                                             "ts_ms": 5}}, schemas.Ticker),
        ({"type": "market_lifecycle_v2", "sid": 1, "seq": 4, "msg": {
            "market_ticker": "KX-A", "event_type": "determined", "result": "yes",
            "future_key": {"kept": True}}}, schemas.MarketLifecycle),
        ({"type": "event_lifecycle", "sid": 1, "msg": {"event_ticker": "KX"}},
         schemas.EventLifecycle),
        ({"id": 1, "type": "subscribed", "msg": {"channel": "trade", "sid": 4}},
         schemas.Subscribed),
        ({"id": 7, "type": "ok", "sid": 3, "seq": 58, "msg": {"market_tickers": ["KX-A"]}},
         schemas.Ok),
        ({"id": 10, "type": "ok", "msg": [{"channel": "orderbook_delta", "sid": 3}]},
         schemas.Ok),
        ({"id": 7, "type": "error", "msg": {"code": 12, "msg": "Exactly one"}}, schemas.Error),
        ({"type": "unsubscribed", "sid": 3, "seq": 91}, schemas.Unsubscribed),
    ]
    for frame, cls in cases:
        decoded = _decode(frame)
        assert type(decoded) is cls, (frame, decoded)
    assert _decode(cases[7][0]).tickers == ["KX-A"]  # type: ignore[attr-defined]
    assert _decode(cases[8][0]).tickers is None  # type: ignore[attr-defined]
    lifecycle = _decode(cases[4][0])
    assert lifecycle.msg["future_key"] == {"kept": True}  # type: ignore[attr-defined]
    assert lifecycle.event_type == "determined"  # type: ignore[attr-defined]
    snapshot = _decode(cases[0][0])
    assert snapshot.msg.no_dollars_fp == []  # type: ignore[attr-defined]  # absent = empty


def test_frames_are_frozen():
    frame = _decode({"type": "unsubscribed", "sid": 3})
    with pytest.raises(AttributeError):
        frame.sid = 4  # type: ignore[attr-defined,misc]


def test_one_time_rule_for_every_type():
    rule = schemas.exchange_time
    assert rule(1_700_000_000_123, 1_700_000_000, 9, 5) == (1_700_000_000_123_000, "exchange")
    assert rule(None, 1_700_000_000, 9, 5) == (1_700_000_000_000_000, "exchange")
    assert rule(None, "2026-05-06T00:51:22.875661Z", 9, 5) == (1_778_028_682_875_661,
                                                                "exchange")
    assert rule(None, None, 9, 5) == (9_000, "sending")
    assert rule(None, None, None, 5) == (5, "receive")
    with pytest.raises(ValueError):
        rule(None, "yesterday", None, 5)
    with pytest.raises(ValueError):
        rule(None, "2026-05-06T00:51:22", None, 5)  # no zone: ambiguous


def test_rfc3339_is_exact_to_the_microsecond():
    """No float on the way: 2**53 µs is far below today's Unix µs, a float would drift."""
    for micros in ("000001", "999999", "500000"):
        us = rfc3339_us(f"2026-11-24T17:59:59.{micros}Z")
        assert us % 1_000_000 == int(micros)


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"type": "orderbook_delta", "sid": 3', "malformed_json"),
    (b"[1, 2]", "not_an_object"),
    (b'{"type": "mystery", "msg": {}}', "unknown_type"),
    (b'{"msg": {}}', "unknown_type"),
    (b'{"type": "orderbook_delta", "sid": 3, "seq": true, "msg": {}}', "invalid_field"),
    (b'{"type": "orderbook_delta", "sid": "3", "seq": 2, "msg": {}}', "invalid_field"),
    (b'{"type": "orderbook_delta", "sid": 3, "seq": 2.0, "msg": {}}', "invalid_field"),
    (b'{"type": "orderbook_delta", "sid": 3, "seq": 2, "msg": {"market_ticker": "A",'
     b' "price_dollars": "0.1", "delta_fp": "1", "side": "maybe"}}', "invalid_field"),
    (b'{"type": "orderbook_snapshot", "sid": 3, "seq": 1, "msg": {}}', "invalid_field"),
])
def test_bad_frames_are_classified_never_raised(raw: bytes, reason: str):
    bad = schemas.decode(raw)
    assert isinstance(bad, schemas.BadFrame)
    assert bad.reason == reason
    assert bad.error
