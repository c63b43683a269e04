"""Kalshi's subscription replies (PROTOCOL.md §5.11): merged subscribes, tickers left out,
errors 26/27/10, the venue's own `unsubscribed` — with a connection that records."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from ingestd.kalshi import schemas
from ingestd.kalshi.subscriptions import Subscriptions
from ingestd.messages import BookSnapshot
from ingestd.recorder import BookRecorder
from ktape.aio import Backoff
from tests.unit.ingestd.test_recorder import Rows


class Connection:
    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[int, str, dict[str, Any] | None, int]] = []
        self.backoff = Backoff(0.0, 0.0)
        self.reconnects: list[str] = []

    async def send(self, cmd: str, params: dict[str, Any] | None = None,
                   attempt: int = 0) -> int:
        self.sent.append((len(self.sent) + 1, cmd, params, attempt))
        return len(self.sent)

    def answered(self, cmd_id: int | None) -> tuple[str, dict[str, Any] | None, int] | None:
        for sent in self.sent:
            if sent[0] == cmd_id:
                return sent[1], sent[2], sent[3]
        return None

    async def resend(self, sent: tuple[str, dict[str, Any] | None, int]) -> int:
        return await self.send(sent[0], sent[1], sent[2] + 1)

    def reconnect(self, reason: str) -> None:
        self.reconnects.append(reason)


def _subs(wanted: set[str]) -> tuple[Subscriptions, Connection, BookRecorder, Rows]:
    connection, rows = Connection(), Rows()
    recorder = BookRecorder(rows)  # type: ignore[arg-type]
    subs = Subscriptions(connection, recorder, market_wide=("trade",),  # type: ignore[arg-type]
                         every_market=False, listed=lambda: wanted)
    subs.wanted |= wanted
    return subs, connection, recorder, rows


def _frame(body: dict[str, Any]) -> Any:
    frame = schemas.decode(orjson.dumps(body))
    assert not isinstance(frame, schemas.BadFrame), frame
    return frame


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_subscribe_all_lists_markets_for_market_wide_channels_then_books():
    subs, connection, _, _ = _subs({"KX-B", "KX-A"})
    await subs.subscribe_all()
    assert [(c[1], c[2]) for c in connection.sent] == [
        ("subscribe", {"channels": ["trade"], "market_tickers": ["KX-A", "KX-B"]}),
        ("subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KX-A", "KX-B"],
                       "use_yes_price": False})]


async def test_tickers_left_out_of_a_reply_are_retried_until_held():
    subs, connection, _, _ = _subs({"KX-A", "KX-B", "KX-C"})
    await subs.subscribe_books(["KX-A", "KX-B", "KX-C"])
    subs.on_subscribed(_frame({"id": 1, "type": "subscribed", "msg": {
        "channel": "orderbook_delta", "sid": 3, "market_tickers": ["KX-A"]}}))
    assert subs.book_sid == 3
    assert subs.left_out == {"KX-B": 1, "KX-C": 1}
    await _settle()
    retry = connection.sent[-1]
    assert retry[1:3] == ("update_subscription", {"sids": [3], "action": "add_markets",
                                                  "market_tickers": ["KX-B", "KX-C"]})
    subs.on_ok(_frame({"id": retry[0], "type": "ok", "sid": 3, "seq": 2, "msg": {
        "market_tickers": ["KX-A", "KX-B", "KX-C"]}}))  # merged: the full list
    assert subs.left_out == {}


async def test_error_27_is_sent_again_and_26_leaves_the_markets_out():
    subs, connection, _, _ = _subs({"KX-A"})
    await subs.subscribe_books(["KX-A"])
    subs.on_error(_frame({"id": 1, "type": "error", "msg": {"code": 27, "msg": "slow down"}}))
    await _settle()
    assert connection.sent[-1][1:] == (*connection.sent[0][1:3], 1)  # same command, again
    subs.on_error(_frame({"id": 2, "type": "error", "msg": {"code": 26, "msg": "cap"}}))
    assert subs.left_out == {"KX-A": 1}


async def test_error_10_on_the_book_subscription_reconnects_with_gaps():
    subs, connection, recorder, rows = _subs({"KX-A"})
    subs.on_subscribed(_frame({"id": 1, "type": "subscribed", "msg": {
        "channel": "orderbook_delta", "sid": 3}}))
    recorder.snapshot(BookSnapshot("KX-A", {4200: 1}, {}, 3, 1, 5, "receive", 5))
    subs.on_error(_frame({"id": 9, "type": "error", "sid": 3, "msg": {"code": 10}}))
    assert connection.reconnects == ["error_10"]
    assert [g[1]["reason"] for g in rows.table("gaps")] == ["error_10"]


async def test_the_venue_ending_a_subscription_puts_its_books_in_a_gap_and_resubscribes():
    subs, connection, recorder, rows = _subs({"KX-A"})
    subs.on_subscribed(_frame({"id": 1, "type": "subscribed", "msg": {
        "channel": "orderbook_delta", "sid": 3}}))
    subs.on_subscribed(_frame({"id": 2, "type": "subscribed", "msg": {
        "channel": "trade", "sid": 4}}))
    recorder.snapshot(BookSnapshot("KX-A", {4200: 1}, {}, 3, 1, 5, "receive", 5))
    subs.on_unsubscribed(_frame({"type": "unsubscribed", "sid": 3, "seq": 2}))
    subs.on_unsubscribed(_frame({"type": "unsubscribed", "sid": 4, "seq": 7}))
    subs.on_unsubscribed(_frame({"type": "unsubscribed", "sid": 99}))  # not held: logged
    await _settle()
    assert subs.book_sid is None and subs.sids == {}
    assert [(g[1]["ticker"], g[1]["reason"]) for g in rows.table("gaps")] == [
        ("KX-A", "unsubscribed"), ("*", "unsubscribed_trade")]
    assert recorder.books["KX-A"].snapshot_requested_us is not None
    assert sorted(c[2]["channels"][0] for c in connection.sent) == ["orderbook_delta", "trade"]
