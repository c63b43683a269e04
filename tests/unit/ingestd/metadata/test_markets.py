"""MarketRows: a market's status follows lifecycle events and the clock, each change a
whole new row strictly later than the last."""

from __future__ import annotations

from typing import Any

from ingestd.metadata import MarketRow, MarketRows

S = 1_000_000  # µs per second
T0 = 1_800_000_000 * S


class Rows:
    """A writer that keeps `markets` rows."""

    def __init__(self) -> None:
        self.rows: list[tuple[dict[str, Any], dict[str, Any], int]] = []
        self.live = None

    def row(self, table, *, symbols, columns, at_us, exchange_ms=None):
        assert table == "markets"
        self.rows.append((symbols, columns, at_us))

    def statuses(self) -> list[str]:
        return [symbols["status"] for symbols, _, _ in self.rows]


def _market(status: str = "active", open_s: int = 1_799_999_000,
            close_s: int = 1_800_000_100) -> dict[str, Any]:
    return {"ticker": "KX-A", "event_ticker": "KX", "title": "A?", "status": status,
            "open_ts": open_s, "close_ts": close_s}


def _rows() -> tuple[MarketRows, Rows]:
    writer = Rows()
    return MarketRows(writer), writer  # type: ignore[arg-type]


def test_close_determined_settled_each_write_a_whole_later_row() -> None:
    rows, writer = _rows()
    rows.record(MarketRow.from_market(_market(), "KX"), "rest", T0)
    rows.on_lifecycle("KX-A", "close_date_updated", {"close_ts": 1_800_000_000}, T0)
    rows.on_lifecycle("KX-A", "determined", {"result": "yes", "settlement_value": "1.0000",
                                             "determination_ts": 1_800_000_005}, T0 + 5 * S)
    rows.on_lifecycle("KX-A", "settled", {"settled_ts": 1_800_000_009}, T0 + 9 * S)
    rows.on_lifecycle("KX-A", "settled", {"settled_ts": 1_800_000_009}, T0 + 10 * S)  # again
    assert writer.statuses() == ["active", "active", "closed", "determined", "finalized"]
    stamps = [at for _, _, at in writer.rows]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # same-µs bumped
    symbols, columns, _ = writer.rows[-1]
    assert symbols["result"] == "yes" and columns["title"] == "A?"
    assert columns["settlement_value_e4"] == 10_000
    assert columns["determination_time"].value == 1_800_000_005 * S
    assert columns["settlement_time"].value == 1_800_000_009 * S
    assert rows.known("KX-A") and "KX-A" not in rows.rows  # terminal: ticker only


def test_the_clock_opens_and_closes_markets_no_event_announces() -> None:
    rows, writer = _rows()
    rows.record(MarketRow.from_market(_market("initialized", open_s=1_800_000_010,
                                              close_s=1_800_000_020), "KX"), "rest", T0)
    rows.tick(T0 + 9 * S)
    assert writer.statuses() == ["initialized"]
    rows.tick(T0 + 10 * S)
    assert writer.statuses() == ["initialized", "active"]
    rows.on_lifecycle("KX-A", "close_date_updated", {"close_ts": 1_800_000_030}, T0 + 11 * S)
    rows.tick(T0 + 25 * S)  # the old close time: the market was extended
    assert writer.statuses()[-1] == "active"
    rows.tick(T0 + 30 * S)
    assert writer.statuses()[-1] == "closed"
    assert [symbols["source"] for symbols, _, _ in writer.rows] == [
        "rest", "clock", "lifecycle", "clock"]


def test_pause_and_reactivation() -> None:
    rows, writer = _rows()
    rows.record(MarketRow.from_market(_market(), "KX"), "rest", T0)
    rows.on_lifecycle("KX-A", "deactivated", {"is_deactivated": True}, T0 + S)
    rows.on_lifecycle("KX-A", "activated", {"is_deactivated": False}, T0 + 2 * S)
    assert writer.statuses() == ["active", "inactive", "active"]


def test_an_event_for_a_market_never_seen_still_writes_what_it_says() -> None:
    rows, writer = _rows()
    rows.on_lifecycle("KX-NEW", "determined", {"result": "no", "settlement_value": "0.0000"},
                      T0)
    symbols, columns, _ = writer.rows[0]
    assert (symbols["ticker"], symbols["status"], symbols["result"]) == (
        "KX-NEW", "determined", "no")
    assert columns["settlement_value_e4"] == 0


def test_rest_catch_up_only_moves_a_market_forward() -> None:
    rows, writer = _rows()
    stored = MarketRow.from_market(_market("determined"), "KX")
    rows.load([stored], {"KX-A": T0})
    assert not rows.catch_up(MarketRow.from_market(_market("closed"), "KX"), T0 + S)  # lags
    assert rows.catch_up(MarketRow.from_market(
        {**_market("finalized"), "settlement_ts": "2027-01-15T08:00:09Z"}, "KX"), T0 + S)
    symbols, columns, at = writer.rows[-1]
    assert symbols["status"] == "finalized" and at == T0 + S
    assert columns["settlement_time"].value == 1_800_000_009 * S
