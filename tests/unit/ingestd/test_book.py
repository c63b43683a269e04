"""MarketBook keeps each side's best bid as the ladders change; every book_changes row
and the crossed-book check read it, so it must always be what max() of the ladder says."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestd.book import MarketBook, NegativeLevel

PRICES = st.integers(min_value=1, max_value=20).map(lambda c: c * 100)
STEPS = st.lists(st.one_of(
    st.tuples(st.just("delta"), st.sampled_from(["yes", "no"]), PRICES,
              st.integers(min_value=-300, max_value=300)),
    st.tuples(st.just("replace"), st.dictionaries(PRICES, st.integers(1, 500), max_size=6),
              st.dictionaries(PRICES, st.integers(1, 500), max_size=6))),
    max_size=80)


def best(ladder: dict[int, int]) -> int:
    return max(ladder) if ladder else 0


@settings(max_examples=300, deadline=None)
@given(steps=STEPS)
def test_best_bids_follow_every_delta_and_replacement(steps: list[tuple]) -> None:
    book = MarketBook("KX-A")
    for step in steps:
        if step[0] == "replace":
            book.replace(dict(step[1]), dict(step[2]))
        else:
            _, side, price, change = step
            try:
                book.apply_delta(side, price, change)
            except NegativeLevel:
                pass  # the ladder is left as it was
        assert (book.best_yes_e4, book.best_no_e4) == (best(book.yes), best(book.no))
        assert book.crosses() == (bool(book.yes) and bool(book.no)
                                  and best(book.yes) + best(book.no) >= 10_000)


def test_a_book_built_with_ladders_knows_its_best_bids() -> None:
    book = MarketBook("KX-A", yes={4200: 1, 4300: 2}, no={5000: 3})
    assert (book.best_yes_e4, book.best_no_e4) == (4300, 5000)
    assert book.crosses("yes", 5000) and not book.crosses("yes", 4999)
