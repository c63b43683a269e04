"""Day conditions and incidents from facts (no store)."""

from __future__ import annotations

import datetime as dt

from ktape.conditions import (
    DAY_US,
    DayFacts,
    GapSpan,
    Span,
    day_condition,
    day_start_us,
    incidents,
)

DAY = dt.date(2026, 11, 24)
D0 = day_start_us(DAY)
H = 3_600_000_000
LATER = D0 + 10 * DAY_US  # "now": the day has closed


def cond(**kw):
    args = {"now_us": LATER, "coverage_start_us": D0 - H, "open_us": D0 - DAY_US,
            "close_us": None, "gaps": [], "facts": DayFacts(10, D0 + H, D0 + 2 * H)}
    args.update(kw)
    return day_condition("KX-A", DAY, **args)


def test_a_fully_recorded_day_is_available_even_when_quiet():
    assert cond().condition == "AVAILABLE"
    assert cond(facts=None).condition == "AVAILABLE"  # no change all day, no gap: proven


def test_gaps_are_clipped_to_the_day_merged_and_summed():
    found = cond(gaps=[GapSpan(D0 - H, D0 + H, "reconnect"),  # starts the day before
                       GapSpan(D0 + 30 * 60_000_000, D0 + 2 * H, "seq_jump"),  # overlaps
                       GapSpan(D0 + 5 * H, D0 + 5 * H + 1_000_000, "seq_jump")])
    assert found.condition == "DEGRADED"
    assert found.spans == (Span(D0, D0 + 2 * H, "reconnect"),
                           Span(D0 + 5 * H, D0 + 5 * H + 1_000_000, "seq_jump"))
    assert found.total_gap_us == 2 * H + 1_000_000


def test_recording_that_began_mid_day_is_a_not_recorded_span():
    found = cond(coverage_start_us=D0 + 6 * H)
    assert found.spans == (Span(D0, D0 + 6 * H, "not_recorded"),)
    assert found.condition == "DEGRADED"


def test_open_but_never_recorded_is_missing_and_a_day_inside_one_gap_too():
    assert cond(coverage_start_us=None, facts=None).condition == "MISSING"
    assert cond(gaps=[GapSpan(D0 - H, None, "ingest_restart")], facts=None).condition == \
        "MISSING"  # an open gap runs to now


def test_only_the_markets_open_part_of_the_day_counts():
    found = cond(close_us=D0 + 12 * H, gaps=[GapSpan(D0 + 13 * H, D0 + 14 * H, "reconnect")])
    assert found.condition == "AVAILABLE"  # the gap is after the close
    assert cond(open_us=D0 + DAY_US + 1, facts=None) is None  # not yet listed that day
    assert cond(close_us=D0 - 1, facts=None) is None  # closed before it


def test_a_day_not_closed_is_pending_with_its_gaps_so_far():
    found = cond(now_us=D0 + 3 * H, gaps=[GapSpan(D0 + H, None, "reconnect")])
    assert found.condition == "PENDING"
    assert found.spans == (Span(D0 + H, D0 + 3 * H, "reconnect", open=True),)


def test_a_gap_from_where_recording_began_is_not_merged_into_before_recording():
    began = D0 + 6 * H  # a quiet market: its first gap starts at its first snapshot
    found = cond(coverage_start_us=began, gaps=[GapSpan(began, began + H, "seq_jump")])
    assert found.spans == (Span(D0, began, "not_recorded"), Span(began, began + H, "seq_jump"))
    assert found.total_gap_us == 7 * H
    # a gap detected before recording began (no start known) overlaps it: one span
    early = cond(coverage_start_us=began, gaps=[GapSpan(began - H, began + H, "reconnect")])
    assert early.spans == (Span(D0, began + H, "not_recorded"),)


def test_a_span_is_open_while_a_gap_of_it_has_no_end():
    now = D0 + 6 * H
    found = cond(now_us=now, gaps=[GapSpan(D0 + H, D0 + 2 * H, "seq_jump"),  # healed
                                   GapSpan(D0 + 3 * H, D0 + 4 * H, "reconnect"),  # healed...
                                   GapSpan(D0 + 4 * H, None, "seq_jump")])  # ...then open
    assert found.spans == (Span(D0 + H, D0 + 2 * H, "seq_jump"),
                           Span(D0 + 3 * H, now, "reconnect", open=True))
    # the day before, an open gap runs to the day's end and is open there too
    assert cond(now_us=now + DAY_US, gaps=[GapSpan(D0 + 5 * H, None, "reconnect")]
                ).spans == (Span(D0 + 5 * H, D0 + DAY_US, "reconnect", open=True),)
    never = cond(now_us=now, coverage_start_us=None, facts=None)  # nothing recorded yet
    assert never.spans == (Span(D0, now, "not_recorded"),)


def test_incidents_group_connection_wide_bursts_and_ignore_single_market_losses():
    rows = [(D0 + 1_000_000, "KX-A", "reconnect", D0, D0 + 5_000_000),
            (D0 + 1_000_100, "KX-B", "reconnect", D0 + 10, D0 + 7_000_000),
            (D0 + 1_500_000, "KX-C", "reconnect", D0 + 20, None),
            (D0 + 2 * H, "KX-A", "snapshot_mismatch", D0 + 2 * H, D0 + 2 * H + 5),
            (D0 + 3 * H, "KX-A", "seq_jump", D0 + 3 * H, D0 + 3 * H + 9),  # one market only
            (D0 + 4 * H, "*", "seq_jump_trade", None, None)]
    found = incidents(rows)
    assert [(i.reason, sorted(i.tickers), i.subscription_wide) for i in found] == [
        ("seq_jump_trade", [], True), ("reconnect", ["KX-A", "KX-B", "KX-C"], False)]
    reconnect = found[1]
    assert (reconnect.start_us, reconnect.end_us) == (D0, None)  # KX-C is still open
    # the same reason after the window is another incident
    later = [*rows[:2], (D0 + 60_000_000, "KX-A", "reconnect", D0 + 59_000_000, D0 + 61_000_000),
             (D0 + 60_000_001, "KX-B", "reconnect", D0 + 59_000_000, D0 + 62_000_000)]
    assert [len(i.tickers) for i in incidents(later)] == [2, 2]
