"""LagMonitor: window floors, and a trend only when every floor rises."""

from __future__ import annotations

from ingestd.lag import LagMonitor

S = 1_000_000


def _feed(monitor: LagMonitor, lags_by_window: list[list[float]]) -> None:
    now = 0
    for window in lags_by_window:
        for lag in window:
            monitor.observe(int(lag * S), now)
            now += S // 10
        now += S  # next window


def test_a_backlog_that_grows_window_after_window_is_a_trend() -> None:
    monitor = LagMonitor(window_us=S, windows=4, growth_us=3 * S)
    _feed(monitor, [[8, 9, 12], [10, 11, 30], [12, 13], [15, 16], [18, 19], [0]])
    assert list(monitor.floors)[-4:] == seconds(10, 12, 15, 18)
    assert monitor.growing()
    assert monitor.floor_us() == 18 * S


def test_bursts_on_a_steady_floor_and_small_growth_are_not() -> None:
    steady = LagMonitor(window_us=S, windows=4, growth_us=3 * S)
    _feed(steady, [[4, 30], [4.2, 25], [4.1, 40], [4.3, 9], [4.4, 50], [0]])
    assert not steady.growing()  # one floor fell
    slow = LagMonitor(window_us=S, windows=4, growth_us=3 * S)
    _feed(slow, [[4], [4.5], [5], [5.5], [6], [0]])
    assert not slow.growing()  # rising, but by 1.5 s
    slow.reset()
    assert slow.floor_us() is None and not slow.growing()


def seconds(*seconds: float) -> list[int]:
    return [int(s * S) for s in seconds]
