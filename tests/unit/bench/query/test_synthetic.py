"""The synthetic history's checkpoint spacing follows ingestd's two rules, checked against
the recorder itself: the benches' claim that their checkpoints are "what ingestd writes"
is only as good as this."""

from __future__ import annotations

import pytest

from bench.query.synthetic import checkpoint_spacing
from ingestd.messages import BookDelta, BookSnapshot
from ingestd.recorder import BookRecorder


class _Rows:
    """A RowSink that keeps only the checkpoint rows' count."""

    def __init__(self) -> None:
        self.checkpoints = 0

    def book_change(self, *_: object, **__: object) -> None:
        """Changes are not what this counts."""

    def row(self, table: str, **_: object) -> None:
        self.checkpoints += table == "book_checkpoints"


@pytest.mark.parametrize(("changes", "markets", "every", "interval_s", "expected"), [
    (2_000_000, 20, 200, None, 200),   # the count rule alone
    (2_000_000, 20, 200, 60.0, 35),    # a change every 1.728 s: 60 s is 35 changes
    (100_000_000, 10_000, 200, 60.0, 4),  # 100M in 2 days over 10,000 markets: 17.28 s apart
    (1_000, 10, 200, 60.0, 1),         # slower than the interval: every change
    (2_000_000, 20, 20, 60.0, 20),     # the count rule first
])
def test_spacing(changes: int, markets: int, every: int, interval_s: float | None,
                 expected: int) -> None:
    step_us = 2 * 86_400 * 1_000_000 // changes  # two days, as generate() spaces rows
    assert checkpoint_spacing(step_us=step_us, markets=markets, every=every,
                              interval_s=interval_s) == expected


def test_spacing_is_the_recorders() -> None:
    """One market changing every 1.728 s, fed to ingestd's own recorder: it checkpoints
    every 35th change, as checkpoint_spacing says for the analytics bench's shape."""
    sink = _Rows()
    recorder = BookRecorder(sink, checkpoint_every_changes=200,  # type: ignore[arg-type]
                            checkpoint_interval_secs=60.0)
    recorder.track("M")
    start = 1_800_000_000_000_000
    recorder.snapshot(BookSnapshot("M", {500: 100}, {400: 100}, 1, 1, start, "exchange", start))
    after_snapshot = sink.checkpoints
    for k in range(1, 35 * 20 + 1):
        at = start + k * 1_728_000
        recorder.delta(BookDelta("M", "yes", 500, 100, 1, 1 + k, at, "exchange", at))
    spacing = checkpoint_spacing(step_us=86_400, markets=20, every=200, interval_s=60.0)
    assert (sink.checkpoints - after_snapshot) * spacing == 35 * 20
