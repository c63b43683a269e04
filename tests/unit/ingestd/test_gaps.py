"""Sequencer: per-sid counters, gaps, duplicates, sids not held, reused sids."""

from __future__ import annotations

from ingestd.gaps import Gap, SeqGap, Sequencer, Verdict


def test_next_seq_applies_a_jump_is_a_gap_and_a_repeat_a_duplicate() -> None:
    seq = Sequencer()
    seq.subscribed(3, "orderbook_delta")
    assert seq.check(3, 1, data=True) == (Verdict.APPLY, None)
    assert seq.check(3, 2, data=True) == (Verdict.APPLY, None)
    assert seq.check(3, 5, data=True) == (Verdict.GAP, SeqGap(3, "orderbook_delta", 3, 5))
    assert seq.check(3, 5, data=True) == (Verdict.DUPLICATE, None)
    assert seq.check(3, 4, data=True) == (Verdict.DUPLICATE, None)  # late: still dropped
    assert seq.check(3, 6, data=True) == (Verdict.APPLY, None)
    assert seq.last_seq(3) == 6


def test_counters_are_per_subscription() -> None:
    seq = Sequencer()
    seq.subscribed(1, "trade")
    seq.subscribed(2, "orderbook_delta")
    assert seq.check(1, 1, data=True)[0] is Verdict.APPLY
    assert seq.check(2, 1, data=True)[0] is Verdict.APPLY
    assert seq.check(1, 3, data=True)[0] is Verdict.GAP
    assert seq.check(2, 2, data=True)[0] is Verdict.APPLY


def test_a_sid_not_held_is_ignored_for_data_not_for_replies() -> None:
    seq = Sequencer()
    assert seq.check(9, 1, data=True) == (Verdict.UNKNOWN_SID, None)
    assert seq.check(9, 1, data=False) == (Verdict.APPLY, None)  # e.g. an error reply
    assert seq.check(9, 2, data=True) == (Verdict.UNKNOWN_SID, None)  # and it counts nothing


def test_an_ended_sid_then_reused_starts_a_new_counter() -> None:
    seq = Sequencer()
    seq.subscribed(3, "orderbook_delta")
    for n in (1, 2, 3):
        seq.check(3, n, data=True)
    assert seq.ended(3) == "orderbook_delta"
    assert seq.check(3, 4, data=True) == (Verdict.UNKNOWN_SID, None)  # the ended one's tail
    seq.subscribed(3, "orderbook_delta")  # the venue reuses the number (§5.11)
    assert seq.check(3, 1, data=True) == (Verdict.APPLY, None)
    assert seq.ended(42) is None
    seq.clear()
    assert seq.channels == {} and seq.last_seq(3) is None


def test_a_healed_gap_keeps_its_row_key_and_gains_its_end() -> None:
    gap = Gap("KX-A", "seq_jump", 1_000, 900, expected_seq=3, got_seq=5, sid=2)
    healed = gap.healed(1_500, sid=7)
    assert (healed.detected_us, healed.ticker, healed.reason) == (1_000, "KX-A", "seq_jump")
    assert (healed.start_us, healed.end_us, healed.sid) == (900, 1_500, 7)
    assert (healed.expected_seq, healed.got_seq) == (3, 5) and gap.end_us is None
