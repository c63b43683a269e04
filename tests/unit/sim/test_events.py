"""The simulator's Kalshi events: how markets are grouped, named and priced from one
latent value (ktape/sim/events.py)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from ktape.sim.events import (
    SERIES,
    UNIT_E4,
    bucket_fairs,
    largest_remainder,
    new_event,
    outcome_fairs,
    plan_events,
    strike_text,
    threshold_fairs,
)


def _spec(ticker: str):
    return next(s for s in SERIES if s.ticker == ticker)


def test_largest_remainder_sums_exactly_and_breaks_ties_by_index():
    assert largest_remainder([1.0, 1.0, 1.0]) == [3334, 3333, 3333]
    assert largest_remainder([0.0, 2.0, 1e-12]) == [0, 10_000, 0]
    rng = random.Random(1)
    for _ in range(500):
        weights = [rng.random() ** 4 for _ in range(rng.randint(1, 15))]
        assert sum(largest_remainder(weights)) == UNIT_E4
    with pytest.raises(ValueError):
        largest_remainder([0.0, 0.0])


def test_bucket_prices_are_a_distribution_summing_to_one_dollar():
    rng = random.Random(2)
    for _ in range(500):
        edges = sorted(rng.uniform(-10, 10) for _ in range(rng.randint(2, 10)))
        mu, sigma = rng.uniform(-15, 15), rng.uniform(0.05, 5)
        fairs = bucket_fairs(edges, mu, sigma)
        assert len(fairs) == len(edges) + 1 and sum(fairs) == UNIT_E4
        assert all(f >= 0 for f in fairs)
    # 1586.55 / 6826.89 / 1586.55: the two missing units go to the largest remainders,
    # the middle bucket's first, then the tie to the lower tail
    assert bucket_fairs([-1.0, 1.0], 0.0, 1.0) == [1587, 6827, 1586]


def test_threshold_prices_fall_with_the_strike():
    rng = random.Random(3)
    for _ in range(500):
        strikes = sorted(rng.uniform(0, 100) for _ in range(rng.randint(1, 12)))
        fairs = threshold_fairs(strikes, rng.uniform(-10, 110), rng.uniform(0.1, 20))
        assert fairs == sorted(fairs, reverse=True)
        assert all(0 <= f <= UNIT_E4 for f in fairs)
    assert threshold_fairs([0.0], 0.0, 1.0) == [5000]


def test_outcome_prices_sum_to_one_dollar_in_strength_order():
    fairs = outcome_fairs([0.0, 1.0, -1.0])
    assert sum(fairs) == UNIT_E4 and fairs[1] > fairs[0] > fairs[2]


def test_strike_text_is_what_a_ticker_shows():
    assert [strike_text(Decimal(v)) for v in ("45.50", "4.00", "94749.99", "100", "0.3")] == \
        ["45.5", "4", "94749.99", "100", "0.3"]


def test_a_range_event_is_tails_and_buckets_that_tile_the_line():
    event = new_event(random.Random(4), _spec("KXHIGHNY"), 6, 0)
    assert event.event_ticker == "KXHIGHNY-26NOV24" and event.mutually_exclusive
    low, *middle, high = event.markets
    assert (low.suffix[0], low.strike_type, low.floor_strike) == ("T", "less", None)
    assert (high.suffix[0], high.strike_type, high.cap_strike) == ("T", "greater", None)
    assert [m.strike_type for m in middle] == ["between"] * 4
    # each bucket starts where the one before ends: no hole, no overlap
    edges = [low.cap_strike] + [m.cap_strike for m in middle]
    assert [m.floor_strike for m in middle] + [high.floor_strike] == edges
    assert all(m.suffix == f"B{strike_text((m.floor_strike + m.cap_strike) / 2)}"
               for m in middle)
    assert len({m.suffix for m in event.markets}) == 6
    assert sum(event.fair_prices()) == UNIT_E4


def test_a_threshold_event_is_a_ladder_of_above_markets():
    event = new_event(random.Random(5), _spec("KXBTCD"), 8, 3)
    assert event.event_ticker == "KXBTCD-26NOV27" and not event.mutually_exclusive
    strikes = [m.floor_strike for m in event.markets]
    assert strikes == sorted(strikes) and len(set(strikes)) == 8
    assert all(m.strike_type == "greater" and m.suffix == f"T{strike_text(m.floor_strike)}"
               and str(m.floor_strike).endswith(".99") for m in event.markets)
    assert event.fair_prices() == sorted(event.fair_prices(), reverse=True)


def test_an_outcome_event_names_its_outcomes():
    event = new_event(random.Random(6), _spec("KXNBAGAME"), 2, 0)
    teams = [m.suffix for m in event.markets]
    assert event.event_ticker == f"KXNBAGAME-26NOV24{''.join(teams)}"
    assert event.mutually_exclusive and all(m.strike_type == "" for m in event.markets)
    with pytest.raises(ValueError, match="at least 3"):
        new_event(random.Random(6), _spec("KXHIGHNY"), 2, 0)


def test_results_are_coherent_with_the_layout():
    rng = random.Random(7)
    for spec in SERIES:
        for number in range(20):
            event = new_event(rng, spec, max(spec.min_markets, spec.sizes[0]), number)
            results = event.draw_results(rng)
            assert len(results) == len(event.markets)
            if event.mutually_exclusive:
                assert results.count(True) == 1, spec.ticker
            else:  # YES for every strike below the outcome, NO above it
                assert results == sorted(results, reverse=True), spec.ticker


def test_the_latent_value_moves_but_stays_near_its_ladder():
    rng = random.Random(8)
    event = new_event(rng, _spec("KXCPI"), 5, 0)
    seen = set()
    for _ in range(5000):
        event.move(rng)
        seen.add(round(event.mu, 3))
        assert float(event.bounds[0]) - event.sigma <= event.mu <= float(event.bounds[-1]) + event.sigma
    assert len(seen) > 100


@pytest.mark.parametrize("markets", [1, 2, 3, 7, 50, 200, 10_000])
def test_events_are_planned_to_hold_exactly_the_markets_asked_for(markets):
    plan = plan_events(random.Random(markets), markets)
    assert sum(size for _, size in plan) == markets
    assert all(size >= spec.min_markets for spec, size in plan)
    if markets >= 50:
        kinds = {spec.kind for spec, _ in plan}
        assert kinds == {"range", "threshold", "outcome"}
        assert sum(size for _, size in plan) / len(plan) > 3  # many markets per event
