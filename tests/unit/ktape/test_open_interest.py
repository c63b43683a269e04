"""Open interest at candle closes: the bucket's last report, else carried."""

from ktape.open_interest import at_closes


def test_a_bucket_without_a_report_carries_the_last_one():
    # reports at buckets 60 and 180 (one of them null: no value reported), none at 0/120
    assert at_closes([0, 60, 120, 180, 240], {60: 5, 180: None, 300: 9}, before=3) == [
        3, 5, 5, 5, 5]
    assert at_closes([0], {}, before=None) == [None]
