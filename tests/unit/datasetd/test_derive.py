"""The derived views' walk: GetOrderbook's instant rule, ListCandles' close rule,
snapshots replacing the book, quotes only on a change of a best bid."""

from __future__ import annotations

from datasetd.derive import Continuity, MarketWalk
from ktape.book.ladder import Book

S = 1_000_000
DAY0 = 1_796_083_200_000_000  # 2026-12-01T00:00:00Z


def walk(end_s: int = 10, coverage: int | None = DAY0, spans=()) -> MarketWalk:
    return MarketWalk("T", Book({4000: 100}, {5000: 200}), 1, 1, DAY0, DAY0 + end_s * S,
                      Continuity(coverage, list(spans)))


def feed(w: MarketWalk, rows: list[tuple]):
    """rows: (t_us offset, kind, side, price, qty, seq)."""
    return w.feed([DAY0 + r[0] for r in rows], [DAY0 + r[0] + 5 for r in rows],
                  [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
                  [r[4] for r in rows], [r[5] for r in rows], [1] * len(rows))


def test_a_change_stamped_on_a_whole_second_counts_at_that_second():
    w = walk(end_s=4)
    _q1, t1 = feed(w, [(2 * S, "delta", "yes", 4100, 50, 2)])
    _q2, t2 = w.finish()
    top = (t1.to_pylist() + t2.to_pylist())
    assert [r["ts"].second for r in top] == [0, 1, 2, 3]
    assert [r["yes_1_price_e4"] for r in top] == [4000, 4000, 4100, 4100]
    assert [r["seq"] for r in top] == [1, 1, 2, 2]
    assert top[0]["yes_2_price_e4"] is None and top[2]["yes_2_price_e4"] == 4000


def test_quotes_start_with_the_book_of_the_day_and_follow_best_bid_changes_only():
    w = walk()
    quotes, _ = feed(w, [(S + 7, "delta", "yes", 3000, 10, 2),  # below the best: no quote
                         (S + 9, "delta", "yes", 4000, 60, 3),  # best size changes
                         (S + 9, "delta", "no", 5100, 1, 4)])  # same instant: one quote
    rest, _ = w.finish()
    rows = quotes.to_pylist() + rest.to_pylist()
    assert [(r["yes_bid_price_e4"], r["yes_bid_quantity_e2"], r["no_bid_price_e4"]) for r in rows] \
        == [(4000, 100, 5000), (4000, 60, 5100)]
    assert rows[0]["recv_ts"] is None and rows[1]["seq"] == 4


def test_an_exchange_snapshot_replaces_the_book():
    w = walk(end_s=3)
    feed(w, [(S, "snapshot", "yes", 4500, 10, 7), (S, "snapshot", "no", 4400, 20, 7),
             (S + 1, "delta", "no", 4400, 0, 8)])
    _q, top = w.finish()
    last = top.to_pylist()[-1]
    assert (last["yes_1_price_e4"], last["yes_2_price_e4"], last["no_1_price_e4"]) == (4500, None, None)


def test_candle_closes_are_the_book_just_before_each_minute_end():
    w = MarketWalk("T", Book({4000: 100}, {5000: 200}), 1, 1, DAY0, DAY0 + 180 * S,
                   Continuity(DAY0, []))
    feed(w, [(60 * S, "delta", "yes", 4200, 5, 2), (61 * S, "delta", "no", 5500, 5, 3)])
    w.finish()
    closes = w.closes[:3]
    # minute 0 closes before the change stamped exactly 60 s; minute 1 sees both
    assert closes == [(DAY0, 4000, 5000), (DAY0 + 60 * S, 4200, 4500), (DAY0 + 120 * S, 4200, 4500)]


def test_continuity_of_each_row_follows_coverage_and_gaps():
    w = walk(end_s=6, coverage=DAY0 + 2 * S, spans=[(DAY0 + 3 * S, DAY0 + 4 * S),
                                                   (DAY0 + 5 * S, None)])
    _q, top = w.finish()
    assert [(r["ts"].second, r["continuity"]) for r in top.to_pylist()] == [
        (2, "CONTINUOUS"), (3, "GAP"), (4, "CONTINUOUS"), (5, "GAP")]


def test_nothing_is_emitted_for_a_market_never_recorded():
    w = walk(coverage=None)
    quotes, top = w.finish()
    assert quotes.num_rows == 0 and top.num_rows == 0
