"""DayCondition → the wire message: each span keeps its bounds, reason and open-ness (the
status page tells an open gap from a healed one by it)."""

from __future__ import annotations

import datetime as dt

from ktape.conditions import DayCondition, DayFacts, Span, day_start_us
from queryd.data_status import _condition_message
from queryd.timeutil import from_us

DAY = dt.date(2026, 11, 24)
D0 = day_start_us(DAY)
H = 3_600_000_000


def test_spans_carry_their_reason_and_whether_they_are_open():
    found = DayCondition("KX-A", DAY, "PENDING",
                         (Span(D0 + H, D0 + 2 * H, "seq_jump"),
                          Span(D0 + 3 * H, D0 + 4 * H, "reconnect", open=True)),
                         2 * H, DayFacts(5, D0, D0 + 4 * H))
    message = _condition_message(found)
    assert [(g.start_time.ToDatetime(dt.UTC), g.end_time.ToDatetime(dt.UTC), g.reason, g.open)
            for g in message.gaps] == [
        (from_us(D0 + H), from_us(D0 + 2 * H), "seq_jump", False),
        (from_us(D0 + 3 * H), from_us(D0 + 4 * H), "reconnect", True)]
    assert message.total_gap_duration.ToTimedelta() == dt.timedelta(hours=2)
