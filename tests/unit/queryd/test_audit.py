"""The audit's window comparison: a REST book agrees when the recorded book equals it at
some instant of the window (the start, or after all rows of one instant), and a
disagreement names the closest instant with the book then."""

from __future__ import annotations

import datetime as dt
import random

from ktape.book.ladder import Book
from queryd.audit import (
    Sample,
    Verdict,
    agreement_rate,
    check_window,
    differing_levels,
    mismatch_incidents,
    report_message,
    sample_of,
)


def delta(ts, side, price, qty, seq, sid=1):
    return (ts, "delta", side, price, qty, seq, sid)


START = Book({4200: 100, 4100: 50}, {5000: 10})


def test_the_book_at_the_window_start_can_agree():
    agrees, at, diff, book, seq = check_window(START, 7, 1_000, [delta(1_500, "yes", 4200, 90, 8)],
                                               START.copy())
    assert (agrees, at, diff, seq) == (True, 1_000, 0, 7) and book == START


def test_a_stale_book_agrees_at_the_instant_it_was_true_inside_the_window():
    rows = [delta(1_100, "yes", 4200, 90, 8), delta(1_200, "no", 5000, 0, 9),
            delta(1_300, "yes", 4300, 5, 10)]
    rest = Book({4200: 90, 4100: 50}, {})  # the book after seq 9 only
    agrees, at, diff, book, seq = check_window(START, 7, 1_000, rows, rest)
    assert (agrees, at, diff, seq) == (True, 1_200, 0, 9) and book == rest


def test_an_instant_is_the_book_after_all_its_rows_not_between_them():
    # at ts 1_100 two rows: the book between them (4200 gone, 4300 not yet) never existed
    rows = [delta(1_100, "yes", 4200, 0, 8), delta(1_100, "yes", 4300, 100, 9)]
    between = Book({4100: 50}, {5000: 10})
    agrees, at, diff, book, _seq = check_window(START, 7, 1_000, rows, between)
    # both instants differ by one level (4200 at the start, 4300 after): the latest wins
    assert not agrees and diff == 1 and at == 1_100 and book.yes == {4100: 50, 4300: 100}


def test_a_wrong_book_disagrees_with_the_closest_instant_and_its_book():
    rows = [delta(1_100, "yes", 4200, 90, 8), delta(1_200, "yes", 4100, 0, 9),
            delta(1_300, "no", 5000, 20, 10)]
    rest = Book({4200: 90, 4100: 50}, {5000: 99})  # after seq 8, but NO 5000 is wrong
    agrees, at, diff, book, seq = check_window(START, 7, 1_000, rows, rest)
    assert (agrees, at, diff, seq) == (False, 1_100, 1, 8)
    assert book == Book({4200: 90, 4100: 50}, {5000: 10})


def test_ties_take_the_latest_instant():
    rows = [delta(1_100, "no", 5100, 1, 8), delta(1_200, "no", 5100, 0, 9)]
    rest = Book({4200: 100, 4100: 50}, {5000: 11})
    agrees, at, diff, _book, seq = check_window(START, 7, 1_000, rows, rest)
    assert (agrees, at, diff, seq) == (False, 1_200, 1, 9)


def test_an_exchange_snapshot_replaces_the_book_inside_the_window():
    rows = [(1_100, "snapshot", "yes", 3000, 10, 8, 2), (1_100, "snapshot", "no", 6000, 20, 8, 2)]
    rest = Book({3000: 10}, {6000: 20})
    agrees, at, _diff, book, seq = check_window(START, 7, 1_000, rows, rest)
    assert (agrees, at, seq) == (True, 1_100, 8) and book == rest
    empty = [(1_100, "snapshot", "yes", 0, 0, 8, 2)]  # an empty book's one row
    assert check_window(START, 7, 1_000, empty, Book())[0]


def test_the_running_count_matches_a_full_comparison_at_every_instant():
    rng = random.Random(4)
    for _ in range(200):
        rows, book, books = [], START.copy(), []
        for i in range(rng.randrange(1, 12)):
            ts = 1_000 + 10 * (i // 2 + 1)
            side, price = rng.choice(("yes", "no")), rng.choice((4100, 4200, 5000, 5100))
            qty = rng.choice((0, 10, 50))
            rows.append(delta(ts, side, price, qty, 8 + i))
            book.set_level(side, price, qty)
            if i % 2 == 1:
                books.append((ts, book.copy()))
        rest = rng.choice([b for _t, b in books] or [START]).copy()
        if rng.random() < 0.5:
            rest.yes[4000] = 1  # never in any book
        agrees, at, diff, got, _seq = check_window(START, 7, 1_000, rows, rest)
        instants = [(1_000, START)] + [(t, b) for t, b in _instants(rows)]
        best = min(differing_levels(b, rest) for _t, b in instants)
        assert diff == best and agrees == (best == 0)
        assert differing_levels(got, rest) == diff and dict(instants)[at] == got


def _instants(rows):
    """The book after all rows of each instant, by brute force."""
    book, out = START.copy(), []
    for i, (ts, _k, side, price, qty, _s, _sid) in enumerate(rows):
        book.set_level(side, price, qty)
        if i + 1 == len(rows) or rows[i + 1][0] != ts:
            out.append((ts, book.copy()))
    return out


def test_a_stored_row_becomes_a_sample_with_its_window():
    t = dt.datetime(2026, 12, 1, 12, 0, 0)
    sample = sample_of((t, "KX-A", t + dt.timedelta(milliseconds=30), 1000, "4200:100", ""))
    assert sample.window_start_us == sample.request_us - 1_000_000
    assert sample.response_us - sample.request_us == 30_000
    assert sample.rest == Book({4200: 100}, {})


def _verdict(ticker, request_us, outcome, allowance_us=1_000):
    sample = Sample(ticker, request_us, request_us + 50, allowance_us, Book({4200: 1}, {}))
    return Verdict(sample, outcome, request_us, Book(), 3, 1)


def test_the_rate_is_cut_never_rounded_up_and_empty_when_nothing_was_verified():
    assert agreement_rate(19_999, 1) == "0.9999"
    assert agreement_rate(2, 1) == "0.6666"
    assert (agreement_rate(5, 0), agreement_rate(0, 3), agreement_rate(0, 0)) == (
        "1.0000", "0.0000", "")


def test_the_report_counts_per_series_and_lists_disagreements_and_unverified_samples():
    verdicts = [_verdict("KXA-1", 10, "agrees"), _verdict("KXA-2", 20, "disagrees"),
                _verdict("KXB-1", 30, "unverified"), _verdict("KXA-1", 40, "agrees")]
    out, more = report_message(dt.date(2026, 12, 1), verdicts,
                               {"KXA-1": "KXA", "KXA-2": "KXA", "KXB-1": "KXB"})
    assert not more
    rows = {s.series_ticker: (s.samples, s.agreements, s.disagreements, s.unverified,
                              s.agreement_rate) for s in out.series}
    assert rows == {"KXA": (3, 2, 1, 0, "0.6666"), "KXB": (1, 0, 0, 1, "")}
    (wrong,) = out.disagreements
    assert (wrong.ticker, wrong.series_ticker, wrong.levels_differing) == ("KXA-2", "KXA", 1)
    assert [lv.price for lv in wrong.rest_book.yes] == ["0.4200"]
    assert wrong.window_start_time.ToMicroseconds() == 20 - 1_000
    assert [u.ticker for u in out.unverified] == ["KXB-1"]
    first, more = report_message(dt.date(2026, 12, 1), verdicts, {}, "", 0, 1)
    second, last = report_message(dt.date(2026, 12, 1), verdicts, {}, "", 1, 1)
    assert more and not last  # every page carries the whole day's counts
    assert [(s.series_ticker, s.samples) for s in first.series] == [("", 4)] == [
        (s.series_ticker, s.samples) for s in second.series]
    assert ([d.ticker for d in first.disagreements], list(first.unverified)) == (["KXA-2"], [])
    assert (list(second.disagreements), [u.ticker for u in second.unverified]) == ([], ["KXB-1"])
    only, _more = report_message(dt.date(2026, 12, 1), [], {}, "KXC")
    assert [(s.series_ticker, s.samples, s.agreement_rate) for s in only.series] == [("KXC", 0, "")]


def test_disagreements_open_incidents_and_close_ones_join():
    minute = 60_000_000
    verdicts = [_verdict("KXA-1", 0, "disagrees"), _verdict("KXA-2", 2 * minute, "disagrees"),
                _verdict("KXA-3", 3 * minute, "agrees"),
                _verdict("KXA-1", 20 * minute, "disagrees")]
    later, first = mismatch_incidents(verdicts)
    assert (first.reason, sorted(first.tickers)) == ("audit_mismatch", ["KXA-1", "KXA-2"])
    assert (first.detect_us, first.start_us, first.end_us) == (50, -1_000, 2 * minute + 50)
    assert (sorted(later.tickers), later.start_us) == (["KXA-1"], 20 * minute - 1_000)
    assert mismatch_incidents([_verdict("KXA-1", 0, "unverified")]) == []


def test_only_settled_verdicts_are_kept_and_an_agreement_without_its_book():
    from queryd.audit import AuditChecker

    checker = AuditChecker(None, settled_us=1_000, cache_size=2)  # type: ignore[arg-type]
    fresh, agreed, wrong, third = (_verdict("KXA-1", 10_000, "agrees"),
                                   _verdict("KXA-2", 10, "agrees"),
                                   _verdict("KXA-3", 20, "disagrees"),
                                   _verdict("KXA-4", 30, "disagrees"))
    for verdict in (fresh, agreed, wrong):
        checker._keep(verdict, now=10_100)
    assert checker._cached(fresh.sample) is None  # its window ended 50 µs ago
    kept = checker._cached(agreed.sample)
    assert kept is not None and kept.outcome == "agrees" and kept.book == Book()
    assert checker._cached(wrong.sample) is wrong
    checker._keep(third, now=10_100)  # the least recently used (the agreement) goes
    assert checker._cached(agreed.sample) is None and checker._cached(third.sample) is third
