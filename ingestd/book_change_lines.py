"""`book_changes` rows as ready text: the ILP line for QuestDB and the NDJSON line for the
live fan-out, without the ILP client's `Buffer.row` or a dict per row.

Why: book changes are nearly every row ingestd writes. `Buffer.row` wants two keyword
dicts and a `TimestampMicros` per row, and the fan-out built a dict and ran `orjson.dumps`
per row: together about two fifths of the per-message CPU at full feed speed
(docs/performance.md). A change's symbols (ticker, side, kind, time source) are fixed per
market and side, so that part of both lines is encoded once (`BookChangeLines`) and
reused; the rest is integers, which need no escaping. The ILP escaping follows the
client's own (backslash before `\\`, space, comma, `=`, newline, carriage return) and the
JSON part is orjson's; unit tests check the lines byte for byte against `Buffer.row` and
the fan-out's generic record for the same row. Other tables (rare rows, with strings and
nulls) still go through the client's Buffer.
"""

from __future__ import annotations

import orjson

TABLE = "book_changes"
_ESCAPED = ("\\", " ", ",", "=", "\n", "\r")


def escape_symbol(text: str) -> str:
    """A table name, symbol name or symbol value as ILP writes it."""
    if any(ch in text for ch in _ESCAPED):
        for ch in _ESCAPED:  # backslash first: later escapes add backslashes
            text = text.replace(ch, "\\" + ch)
    return text


def symbols_prefix(table: str, symbols: dict[str, str]) -> str:
    """`table,name=value,...` — the leading part of an ILP line, in the dict's order."""
    return ",".join([escape_symbol(table), *(f"{escape_symbol(name)}={escape_symbol(value)}"
                                             for name, value in symbols.items())])


class BookChangeLines:
    """Both lines of one market's changes of one side, kind and time source."""

    __slots__ = ("_ilp_prefix", "_json_symbols", "symbols")

    def __init__(self, ticker: str, side: str, kind: str, ts_source: str) -> None:
        self.symbols = {"ticker": ticker, "side": side, "kind": kind, "ts_source": ts_source}
        self._ilp_prefix = symbols_prefix(TABLE, self.symbols)
        # '"tb":"book_changes","ticker":...,"ts_source":...' (no braces)
        self._json_symbols = orjson.dumps({"tb": TABLE, **self.symbols})[1:-1].decode()

    def ilp(self, price_e4: int, qty_after_e2: int, delta_e2: int, seq: int, sid: int,
            recv_us: int, at_us: int, best_yes_e4: int, best_no_e4: int) -> str:
        """The ILP line; times in microseconds (the designated timestamp is written in
        nanoseconds, as the client does)."""
        return (f"{self._ilp_prefix} price_e4={price_e4}i,qty_after_e2={qty_after_e2}i,"
                f"delta_e2={delta_e2}i,seq={seq}i,sid={sid}i,recv_ts={recv_us}t,"
                f"best_yes_bid_e4={best_yes_e4}i,best_no_bid_e4={best_no_e4}i "
                f"{at_us * 1000}\n")

    def ilp_moved(self, price_e4: int, qty_after_e2: int, delta_e2: int, seq: int, sid: int,
                  recv_us: int, at_us: int, best_yes_e4: int, best_no_e4: int,
                  source_us: int) -> str:
        """The line of a row whose book time `at_us` had to be later than its own clock's
        reading `source_us` (the `source_ts` column). Rare, so `ilp` stays as it was."""
        return (f"{self._ilp_prefix} price_e4={price_e4}i,qty_after_e2={qty_after_e2}i,"
                f"delta_e2={delta_e2}i,seq={seq}i,sid={sid}i,recv_ts={recv_us}t,"
                f"best_yes_bid_e4={best_yes_e4}i,best_no_bid_e4={best_no_e4}i,"
                f"source_ts={source_us}t {at_us * 1000}\n")

    def live_json(self, live_seq: int, price_e4: int, qty_after_e2: int, delta_e2: int,
                  seq: int, sid: int, recv_us: int, at_us: int) -> bytes:
        """The fan-out's NDJSON line (ingestd/live.py: `n`, `tb`, `ts`, symbols, columns)."""
        return (f'{{"n":{live_seq},{self._json_symbols},"ts":{at_us},"price_e4":{price_e4},'
                f'"qty_after_e2":{qty_after_e2},"delta_e2":{delta_e2},"seq":{seq},'
                f'"sid":{sid},"recv_ts":{recv_us}}}\n').encode()
