"""ingestd's hand-built book_changes lines must be byte for byte what the ILP client's
Buffer writes for the same row (QuestDB then stores exactly the same values), and the
live line must be the record the fan-out's generic path sends."""

from __future__ import annotations

import warnings

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestd.book_change_lines import BookChangeLines, escape_symbol
from ingestd.live import LiveFanout

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from questdb.ingress import Buffer, TimestampMicros

# Kalshi tickers are upper-case letters, digits, '-' and '.', but a line must stay valid
# for anything: include every character ILP escapes, and non-ASCII.
SYMBOL_TEXT = st.text(alphabet=st.sampled_from(list("AZaz09-._ ,=\\\n\r\"'é€")),
                      min_size=1, max_size=24)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
MICROS = st.integers(min_value=0, max_value=4_102_444_800_000_000)  # up to 2100


def client_line(ticker: str, side: str, source: str, price: int, after: int, delta: int,
                seq: int, sid: int, recv_us: int, at_us: int, best_yes: int, best_no: int,
                source_us: int | None = None) -> bytes:
    buffer = Buffer(protocol_version=1)
    columns = {"price_e4": price, "qty_after_e2": after, "delta_e2": delta,
               "seq": seq, "sid": sid, "recv_ts": TimestampMicros(recv_us),
               "best_yes_bid_e4": best_yes, "best_no_bid_e4": best_no}
    if source_us is not None:
        columns["source_ts"] = TimestampMicros(source_us)
    buffer.row("book_changes",
               symbols={"ticker": ticker, "side": side, "kind": "delta", "ts_source": source},
               columns=columns, at=TimestampMicros(at_us))
    return bytes(buffer)


@settings(max_examples=500, deadline=None)
@given(ticker=SYMBOL_TEXT, side=st.sampled_from(["yes", "no"]),
       source=st.sampled_from(["exchange", "receive"]), price=INT64, after=INT64,
       delta=INT64, seq=INT64, sid=INT64, recv_us=MICROS, at_us=MICROS,
       best_yes=st.integers(0, 10_000), best_no=st.integers(0, 10_000),
       source_us=st.none() | MICROS)
def test_line_equals_client_buffer(ticker: str, side: str, source: str, price: int,
                                   after: int, delta: int, seq: int, sid: int, recv_us: int,
                                   at_us: int, best_yes: int, best_no: int,
                                   source_us: int | None) -> None:
    lines = BookChangeLines(ticker, side, "delta", source)
    ours = (lines.ilp(price, after, delta, seq, sid, recv_us, at_us, best_yes, best_no)
            if source_us is None else
            lines.ilp_moved(price, after, delta, seq, sid, recv_us, at_us, best_yes, best_no,
                            source_us)).encode()
    assert ours == client_line(ticker, side, source, price, after, delta, seq, sid, recv_us,
                               at_us, best_yes, best_no, source_us)

    generic, fast = LiveFanout(), LiveFanout()
    generic.publish("book_changes", dict(lines.symbols),
                    {"price_e4": price, "qty_after_e2": after, "delta_e2": delta, "seq": seq,
                     "sid": sid, "recv_ts": TimestampMicros(recv_us)}, at_us)
    fast.publish_book_change(lines, price, after, delta, seq, sid, recv_us, at_us)
    assert fast.last_by_table == generic.last_by_table
    line = lines.live_json(7, price, after, delta, seq, sid, recv_us, at_us)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert orjson.loads(line) == {**generic.last_by_table["book_changes"], "n": 7}


def test_escaping_of_each_special_character() -> None:
    assert escape_symbol("A B,C=D\\E") == "A\\ B\\,C\\=D\\\\E"
    assert escape_symbol("a\nb\rc") == "a\\\nb\\\rc"
    assert escape_symbol("KXBTC-26NOV25-T99.5") == "KXBTC-26NOV25-T99.5"
