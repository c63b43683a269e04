"""Pure book logic of queryd: ladder parsing/formatting and checkpoint + changes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ktape.book.ladder import (
    Book,
    LadderFormatError,
    _parse_items,
    format_price,
    format_quantity,
    parse_ladder,
)
from ktape.book.reconstruct import Change, Checkpoint, apply_changes


def test_parse_ladder_round_trip_and_errors():
    assert parse_ladder("") == {}
    assert parse_ladder(None) == {}
    assert parse_ladder("4200:15000,4300:100") == {4200: 15000, 4300: 100}
    for bad in ("4200", "a:1", "4200:0", "0:5", "10000:5", "4200:1,4200:2"):
        with pytest.raises(LadderFormatError):
            parse_ladder(bad)


_ITEM = st.one_of(
    st.tuples(st.integers(-5, 10_005), st.integers(-5, 10**9)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.text(alphabet="0123456789:, -+_x", max_size=12))


@given(st.lists(_ITEM, max_size=40).map(",".join))
def test_the_fast_path_reads_every_ladder_as_the_item_by_item_reader_does(text):
    """Same levels for every ladder, the same refusal for every bad one (the fast path
    falls back to the item-by-item reader, which names the item at fault)."""
    try:
        expected = _parse_items(text) if text else {}
    except LadderFormatError as error:
        with pytest.raises(LadderFormatError, match=re.escape(str(error))):
            parse_ladder(text)
    else:
        assert parse_ladder(text) == expected


@pytest.mark.parametrize(("e4", "text"), [(4200, "0.4200"), (1, "0.0001"), (10000, "1.0000"),
                                           (-50, "-0.0050")])
def test_format_price(e4, text):
    assert format_price(e4) == text


@pytest.mark.parametrize(("e2", "text"), [(15000, "150.00"), (-5, "-0.05"), (0, "0.00"),
                                           (3154, "31.54")])
def test_format_quantity(e2, text):
    assert format_quantity(e2) == text


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_format_quantity_is_exact(e2):
    from decimal import Decimal

    assert Decimal(format_quantity(e2)) * 100 == e2


def test_best_prices_and_depth():
    book = Book({4200: 1, 4400: 2, 4300: 3}, {})
    assert book.best_prices("yes") == [4400, 4300, 4200]
    assert book.best_prices("yes", 2) == [4400, 4300]
    assert book.best_prices("yes", 0) == [4400, 4300, 4200]  # 0: the whole side


def _cp(ts=100, sid=1, seq=10, yes="4200:100", no="5000:200"):
    return Checkpoint(ts, sid, seq, "snapshot", yes, no, ts)


def _ch(ts, side, price, qty, seq, kind="delta", sid=1):
    return Change(ts, side, price, qty, None, kind, seq, sid)


def test_changes_apply_after_checkpoint_only():
    rebuilt = apply_changes(
        _cp(),
        [
            _ch(100, "yes", 4200, 999, 9),   # at checkpoint ts, earlier seq: already in
            _ch(100, "yes", 4300, 50, 11),   # at checkpoint ts, later seq: apply
            _ch(150, "no", 5000, 0, 12),     # removes the level
            _ch(160, "yes", 4200, 80, 13),
        ],
    )
    assert rebuilt.book.yes == {4200: 80, 4300: 50}
    assert rebuilt.book.no == {}
    assert (rebuilt.seq, rebuilt.last_change_us, rebuilt.applied) == (13, 160, 3)


def test_snapshot_rows_replace_the_book_and_replays_are_idempotent():
    changes = [
        _ch(200, "yes", 4100, 10, 1, kind="snapshot", sid=2),
        _ch(200, "no", 5500, 20, 1, kind="snapshot", sid=2),
        _ch(210, "yes", 4100, 15, 2, sid=2),
    ]
    rebuilt = apply_changes(_cp(), changes + changes[2:])  # the last delta replayed
    assert rebuilt.book.yes == {4100: 15}
    assert rebuilt.book.no == {5500: 20}
    assert rebuilt.sid == 2
