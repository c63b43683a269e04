"""Change labelling: decreases matched to the prints that consumed them, each print once."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from ktape.marketdata.v1 import marketdata_pb2 as pb
from queryd.causes import Change, Print, consumed_level, label

T = 1_764_007_199_812_000  # an exchange instant, µs (a whole millisecond)
NEW, CANCEL, TRADE = pb.DELTA_CAUSE_NEW, pb.DELTA_CAUSE_CANCEL, pb.DELTA_CAUSE_TRADE
UNSET = pb.DELTA_CAUSE_UNSPECIFIED


def test_without_trades_increases_are_new_and_decreases_cancels():
    changes = [Change(T, "yes", 4200, 500), Change(T, "yes", 4200, -200),
               Change(T + 5, "no", 5000, -100), Change(T, "yes", 4100, 300, is_delta=False),
               Change(T, "no", 5100, 0)]
    assert label(changes, []) == [NEW, CANCEL, CANCEL, UNSET, UNSET]


def test_the_taker_side_names_the_ladder_at_the_complement_price():
    """PROTOCOL.md §5.8's print: YES at $0.27, taker NO, 5.54 contracts, takes YES bids
    at $0.27; a YES taker at $0.27 takes NO bids at $0.73."""
    changes = [Change(T, "yes", 2700, -554), Change(T, "no", 7300, -554),
               Change(T, "no", 2700, -554)]
    assert label(changes, [Print(T, 2700, 554, "no")]) == [TRADE, CANCEL, CANCEL]
    assert label(changes, [Print(T, 2700, 554, "yes")]) == [CANCEL, TRADE, CANCEL]
    assert consumed_level(Print(T, 2700, 554, "yes")) == (T // 1000, "no", 7300)


def test_a_walk_through_the_book_matches_each_level_to_its_own_print():
    # a YES taker sweeping NO bids 0.60, 0.59, 0.58: one print per level, one millisecond
    walk = [Print(T, 4000, 300, "yes"), Print(T, 4100, 200, "yes"), Print(T, 4200, 50, "yes")]
    changes = [Change(T, "no", 6000, -300), Change(T, "no", 5900, -200),
               Change(T, "no", 5800, -50), Change(T, "no", 5700, -10)]
    assert label(changes, walk) == [TRADE, TRADE, TRADE, CANCEL]


def test_a_partial_fill_and_a_fill_reported_in_pieces_are_trades_up_to_the_count():
    assert label([Change(T, "yes", 4200, -30)], [Print(T, 4200, 30, "no")]) == [TRADE]
    pieces = [Change(T, "yes", 4200, -10), Change(T, "yes", 4200, -20),
              Change(T, "yes", 4200, -5)]
    assert label(pieces, [Print(T, 4200, 30, "no")]) == [TRADE, TRADE, CANCEL]
    # two prints at one level reported as one change
    assert label([Change(T, "yes", 4200, -50)],
                 [Print(T, 4200, 30, "no"), Print(T, 4200, 20, "no")]) == [TRADE]


def test_a_cancel_and_a_fill_of_one_level_in_one_millisecond_are_told_apart_by_size():
    print_ = [Print(T, 4200, 30, "no")]
    assert label([Change(T, "yes", 4200, -20), Change(T, "yes", 4200, -30)],
                 print_) == [CANCEL, TRADE]
    assert label([Change(T, "yes", 4200, -30), Change(T, "yes", 4200, -20)],
                 print_) == [TRADE, CANCEL]


def test_each_print_is_matched_once():
    twice = [Change(T, "yes", 4200, -30), Change(T, "yes", 4200, -30)]
    assert label(twice, [Print(T, 4200, 30, "no")]) == [TRADE, CANCEL]
    assert label(twice, [Print(T, 4200, 30, "no")] * 2) == [TRADE, TRADE]


def test_block_trades_other_instants_and_unknown_takers_match_nothing():
    fall = [Change(T, "yes", 4200, -30)]
    assert label(fall, [Print(T, 4200, 30, "no", is_block=True)]) == [CANCEL]
    assert label(fall, [Print(T + 1000, 4200, 30, "no")]) == [CANCEL]  # next millisecond
    assert label(fall, [Print(T + 999, 4200, 30, "no")]) == [TRADE]  # same millisecond
    assert label(fall, [Print(T, 4200, 30, "")]) == [CANCEL]


changes_strategy = st.lists(st.builds(
    Change, instant_us=st.integers(0, 3).map(lambda ms: T + ms * 1000),
    side=st.sampled_from(["yes", "no"]), price_e4=st.sampled_from([4000, 6000]),
    delta_e2=st.integers(-60, 60), is_delta=st.just(True)), max_size=30)
prints_strategy = st.lists(st.builds(
    Print, instant_us=st.integers(0, 3).map(lambda ms: T + ms * 1000),
    yes_price_e4=st.sampled_from([4000, 6000]), count_e2=st.integers(1, 60),
    taker_side=st.sampled_from(["yes", "no"]), is_block=st.booleans()), max_size=10)


@given(changes_strategy, prints_strategy)
def test_trades_never_explain_more_than_the_prints_at_their_level(changes, prints):
    causes = label(changes, prints)
    traded: dict[tuple, int] = defaultdict(int)
    printed: dict[tuple, int] = defaultdict(int)
    for change, cause in zip(changes, causes, strict=True):
        assert (cause == NEW) == (change.delta_e2 > 0)
        assert (cause in (TRADE, CANCEL)) == (change.delta_e2 < 0)
        if cause == TRADE:
            traded[(change.instant_us // 1000, change.side, change.price_e4)] -= change.delta_e2
    for p in prints:
        key = consumed_level(p)
        if key is not None:
            printed[key] += p.count_e2
    assert all(size <= printed[key] for key, size in traded.items())
    # a fall of exactly one unused print's count at its level is always a trade
    for change, cause in zip(changes, causes, strict=True):
        key = (change.instant_us // 1000, change.side, change.price_e4)
        same = [p.count_e2 for p in prints if consumed_level(p) == key]
        falls = [-c.delta_e2 for c in changes
                 if (c.instant_us // 1000, c.side, c.price_e4) == key and c.delta_e2 < 0]
        if same and falls == [-change.delta_e2] and -change.delta_e2 in same:
            assert cause == TRADE
