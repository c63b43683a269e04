"""The shared walk at any step and depth, and a walk that goes on from an earlier page."""

from __future__ import annotations

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
