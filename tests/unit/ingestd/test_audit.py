"""The audit sampler: REST books parsed exactly, markets taken in turn, one row per
sample with its request window, failures counted and never fatal, a prompt stop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ingestd.audit import AuditSampler, BookFormatError, parse_book
from ingestd.kalshi.normalize import NormalizeError
from ingestd.kalshi.rest import RestError, Timed
from ingestd.metrics import AUDIT_SAMPLES


class Sink:
    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, str], dict[str, Any], int]] = []

    def row(self, table, *, symbols, columns, at_us, exchange_ms=None):
        self.rows.append((table, symbols, columns, at_us))


class Rest:
    """Answers each ticker's book from `books` (an exception instance is raised)."""

    def __init__(self, books: dict[str, Any], hang_after: int | None = None) -> None:
        self.books = books
        self.hang_after = hang_after  # reads after this many never answer
        self.asked: list[str] = []

    async def orderbook(self, ticker: str) -> Timed:
        self.asked.append(ticker)
        if self.hang_after is not None and len(self.asked) > self.hang_after:
            await asyncio.Event().wait()
        answer = self.books[ticker]
        if isinstance(answer, Exception):
            raise answer
        return Timed(1_000, 1_250, answer)


def _sampler(rest: Rest, sink: Sink, tickers: list[str], per_minute: int = 60) -> AuditSampler:
    return AuditSampler(rest, sink, lambda: tickers, per_minute=per_minute,  # type: ignore[arg-type]
                        allowance_ms=700)


def _failed() -> float:
    return AUDIT_SAMPLES.labels("failed")._value.get()


def test_a_rest_book_parses_to_exact_ladders_whatever_the_level_order():
    yes, no = parse_book({"orderbook_fp": {
        "yes_dollars": [["0.4300", "1.50"], ["0.42", "150.00"]], "no_dollars": None}})
    assert yes == {4300: 150, 4200: 15000} and no == {}


@pytest.mark.parametrize("book, error", [
    ({}, BookFormatError),
    ({"orderbook_fp": {"yes_dollars": [["0.42", "1.00"], ["0.4200", "2.00"]]}}, BookFormatError),
    ({"orderbook_fp": {"yes_dollars": [["0.42", "0.00"]]}}, BookFormatError),
    ({"orderbook_fp": {"no_dollars": [["1.0000", "1.00"]]}}, BookFormatError),
    ({"orderbook_fp": {"no_dollars": [["0.42"]]}}, BookFormatError),
    ({"orderbook_fp": {"yes_dollars": [["0.42001", "1.00"]]}}, NormalizeError),
    ({"orderbook_fp": {"yes_dollars": [["0.42", "1.001"]]}}, NormalizeError),
])
def test_a_malformed_rest_book_is_an_error_never_a_guess(book, error):
    with pytest.raises(error):
        parse_book(book)


def test_markets_are_taken_in_ticker_order_after_the_last_one_whatever_the_set_does():
    tickers = ["KX-B", "KX-A", "KX-C"]
    sampler = _sampler(Rest({}), Sink(), tickers)
    assert [sampler.next_ticker() for _ in range(4)] == ["KX-A", "KX-B", "KX-C", "KX-A"]
    tickers[:] = ["KX-AA", "KX-C"]  # KX-A left, KX-AA joined after it
    assert sampler.next_ticker() == "KX-AA"
    tickers.clear()
    assert sampler.next_ticker() is None


async def test_a_sample_is_one_row_with_its_request_window_and_allowance():
    sink = Sink()
    rest = Rest({"KX-A": {"orderbook_fp": {"yes_dollars": [["0.42", "1.00"], ["0.41", "2.00"]],
                                           "no_dollars": [["0.50", "3.25"]]}}})
    assert await _sampler(rest, sink, ["KX-A"]).sample("KX-A")
    (table, symbols, columns, at_us), = sink.rows
    assert (table, symbols, at_us) == ("audit_books", {"ticker": "KX-A"}, 1_000)
    assert columns["response_ts"].value == 1_250 and columns["allowance_ms"] == 700
    assert (columns["yes_levels"], columns["no_levels"]) == ("4100:200,4200:100", "5000:325")


@pytest.mark.parametrize("answer", [RestError("GET: HTTP 404"),
                                    {"orderbook_fp": {"yes_dollars": [["zero", "1"]]}},
                                    {"orderbook_fp": "gone"}])
async def test_a_failed_sample_is_counted_and_writes_nothing(answer):
    sink, before = Sink(), _failed()
    assert not await _sampler(Rest({"KX-A": answer}), sink, ["KX-A"]).sample("KX-A")
    assert sink.rows == [] and _failed() == before + 1


async def test_run_samples_in_turn_and_a_hung_read_does_not_hold_up_the_stop():
    rest = Rest({"KX-A": {"orderbook_fp": {}}, "KX-B": {"orderbook_fp": {}}}, hang_after=3)
    sink, stop = Sink(), asyncio.Event()
    task = asyncio.create_task(_sampler(rest, sink, ["KX-A", "KX-B"], per_minute=600).run(stop))
    for _ in range(100):  # every 0.1 s; the fourth read hangs
        if len(rest.asked) == 4:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert rest.asked == ["KX-A", "KX-B", "KX-A", "KX-B"]
    assert [symbols["ticker"] for _t, symbols, _c, _a in sink.rows] == ["KX-A", "KX-B", "KX-A"]


def test_the_sampler_is_not_built_when_off():
    with pytest.raises(ValueError, match="per_minute"):
        _sampler(Rest({}), Sink(), [], per_minute=0)
