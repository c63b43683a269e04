"""The shared walk at any step and depth, and a walk that goes on from an earlier page."""

from __future__ import annotations

import pytest

from ktape.book.ladder import Book
from ktape.book.walk import NULL, BookWalk

S = 1_000_000
T0 = 1_796_083_200_000_000


def test_minute_samples_to_depth_two_on_calendar_boundaries():
    walk = BookWalk(Book({4000: 1, 3900: 2, 3800: 3}, {}), 5, 1, T0 + 30 * S, T0 + 150 * S,
                    T0, step_us=60 * S, depth=2)
    _q, runs = walk.feed([T0 + 61 * S], [None], ["delta"], ["yes"], [4100], [7], [6], [1])
    _q2, rest = walk.finish()
    assert [(first - T0) // S for first, _last, _state in runs + rest] == [60, 120]
    assert (runs + rest)[0][2] == (5, 4000, 1, 3900, 2, NULL, NULL, NULL, NULL)
    assert (runs + rest)[1][2][:3] == (6, 4100, 7)


def test_a_walk_that_goes_on_from_a_page_does_not_repeat_its_last_quote():
    walk = BookWalk(Book({4000: 1}, {}), 5, 1, T0, T0 + 10 * S, T0 - S, initial_quote=False)
    quotes, _ = walk.feed([T0 + S, T0 + 2 * S], [None, None], ["delta", "delta"],
                          ["yes", "yes"], [3000, 4000], [9, 2], [6, 7], [1, 1])
    quotes += walk.finish()[0]
    # the first change does not move the top; the second changes its size
    assert [(q[0] - T0) // S for q in quotes] == [2]


@pytest.mark.parametrize(("depth", "low", "high"), [(3, 20, 60), (5, 40, 46), (1, 30, 70)])
def test_samples_equal_a_full_sort_of_the_book_whatever_the_changes_touch(depth, low, high):
    """The walk keeps each side's top levels until a change can move them; at every
    boundary they must equal the book sorted afresh (changes above, at and below the
    cut-off, removals, sides thinner than the depth, exchange snapshots); few prices
    keep the sides thin, many keep them full."""
    import bisect
    import random

    rng = random.Random(11)
    book = Book({4000: 1, 3900: 2, 3800: 3, 3000: 4}, {5000: 5})
    walk = BookWalk(book.copy(), 1, 1, T0, T0 + 400 * S, T0, step_us=S, depth=depth,
                    quotes=False)
    truth, times, tops, runs = book.copy(), [], [], []
    for n in range(2, 2000):
        t = T0 + n * S // 5  # five changes a second, one of them on the boundary
        kind = "snapshot" if n % 500 == 0 else "delta"
        side = rng.choice(["yes", "no"])
        price, qty = 100 * rng.randrange(low, high), rng.choice([0, 0, 1, 2, 5])
        if kind == "snapshot":
            truth.clear()
        ladder = truth.yes if side == "yes" else truth.no
        ladder.pop(price, None)
        if qty:
            ladder[price] = qty
        times.append(t)
        tops.append(_top(truth, depth))
        runs += walk.feed([t], [None], [kind], [side], [price], [qty], [n], [1])[1]
    runs += walk.finish()[1]
    boundaries = 0
    for first, last, state in runs:
        for boundary in range(first, last + 1, S):
            i = bisect.bisect_right(times, boundary)  # the book at T counts changes at T
            assert state[1:] == (tops[i - 1] if i else _top(book, depth)), (boundary - T0) // S
            boundaries += 1
    assert boundaries == 400


def _top(book: Book, depth: int) -> tuple[int, ...]:
    out: list[int] = []
    for side in (book.yes, book.no):
        best = sorted(side.items(), reverse=True)[:depth]
        for price, qty in best:
            out += (price, qty)
        out += (NULL, NULL) * (depth - len(best))
    return tuple(out)
