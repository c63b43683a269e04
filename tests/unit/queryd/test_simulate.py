"""SimulateOrder's arithmetic: Kalshi's matching on a two-sided bid book, exact."""

from __future__ import annotations

from decimal import Decimal

from ktape.book.ladder import Book
from queryd import simulate

BOOK = Book(yes={4000: 1000, 3900: 500}, no={5500: 300, 5000: 10_000})


def test_each_side_and_action_takes_the_right_ladder_best_first():
    assert simulate.levels_taken(BOOK, "yes", "buy") == [(4500, 300), (5000, 10_000)]
    assert simulate.levels_taken(BOOK, "yes", "sell") == [(4000, 1000), (3900, 500)]
    assert simulate.levels_taken(BOOK, "no", "buy") == [(6000, 1000), (6100, 500)]
    assert simulate.levels_taken(BOOK, "no", "sell") == [(5500, 300), (5000, 10_000)]


def test_a_quantity_fills_level_by_level_and_reports_what_is_left():
    walked = simulate.walk(BOOK, "yes", "sell", quantity_e2=1200)
    assert walked.fills == [simulate.Fill(4000, 1000), simulate.Fill(3900, 200)]
    assert (walked.filled_e2, walked.wanted_left_e2, walked.cost_e6) == (1200, 0, 4_780_000)
    thin = simulate.walk(BOOK, "yes", "sell", quantity_e2=2000)
    assert (thin.filled_e2, thin.wanted_left_e2) == (1500, 500)
    assert simulate.average_e6(walked) == Decimal("0.398333")


def test_a_budget_buys_whole_hundredths_of_a_contract():
    walked = simulate.walk(BOOK, "yes", "buy", max_cost_e6=2_000_000)  # $2.00
    # 3 contracts at 0.45 = $1.35, then $0.65 buys 1.30 contracts at 0.50
    assert walked.fills == [simulate.Fill(4500, 300), simulate.Fill(5000, 130)]
    assert walked.cost_e6 == 2_000_000 and walked.budget_left_e6 == 0
    assert not walked.partial


def test_partial_means_the_book_ran_out():
    assert simulate.walk(BOOK, "yes", "sell", quantity_e2=2000).partial
    assert not simulate.walk(BOOK, "yes", "sell", quantity_e2=1500).partial
    # $60 buys all 103 contracts (3 at 0.45, 100 at 0.50 = $51.35) with money left
    assert simulate.walk(BOOK, "yes", "buy", max_cost_e6=60_000_000).partial
    # $50.6025 reaches the last level but not its end: a quarter cent is left, less than
    # one 0.01 contract costs there: the money ran out, not the book
    thin_budget = simulate.walk(BOOK, "yes", "buy", max_cost_e6=50_602_500)
    assert not thin_budget.exhausted and thin_budget.budget_left_e6 == 2_500
    assert not thin_budget.partial


def test_fee_schedule_prefers_the_event_override_and_never_goes_through_float():
    series = '{"fee_type": "quadratic", "fee_multiplier": 0.07}'
    assert simulate.fee_schedule(series, None) == ("quadratic", Decimal("0.07"))
    event = '{"fee_type_override": "quadratic", "fee_multiplier_override": 0.035}'
    assert simulate.fee_schedule(series, event) == ("quadratic", Decimal("0.035"))
    assert simulate.fee_schedule(None, None) is None
    assert simulate.fee_schedule("not json", None) is None


def test_the_quadratic_fee_rounds_up_to_the_cent():
    fee, note = simulate.taker_fee([simulate.Fill(4500, 300)], ("quadratic", Decimal("0.07")))
    assert fee == Decimal("0.06")  # 0.07 * 3 * 0.45 * 0.55 = 0.051975 -> 0.06
    assert "multiplier 0.07" in note
    assert simulate.taker_fee([], None)[0] is None
    assert simulate.taker_fee([simulate.Fill(4500, 1)], ("flat", Decimal(1)))[0] is None
