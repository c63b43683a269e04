"""Exchange→receive lag of one connection, and whether it is steadily growing.

Why: production Kalshi was measured delivering `orderbook_delta` frames a median 4.2 s
after their `ts_ms`, the lag growing from 8 s to 21 s within one connection (PROTOCOL.md
§5.11). A lag that only grows is a backlog — a slow reader or a degraded connection —
and the cure is a new connection (recorded as a gap), not waiting.

The measure is each window's *floor* (the smallest lag seen in it): bursts and clock
jitter lift single frames, a backlog lifts every frame, so a floor that rises window
after window is a backlog. `observe` is on the per-frame path: two comparisons, no clock
read (the caller passes the receive time it already has).
"""

from __future__ import annotations

from collections import deque
from itertools import pairwise

NO_LAG = 2**62


class LagMonitor:
    """Per-window lag floors of one connection (µs)."""

    def __init__(self, window_us: int = 10_000_000, windows: int = 4,
                 growth_us: int = 10_000_000) -> None:
        self.window_us = window_us
        self.windows = windows  # consecutive rising floors that make a trend
        self.growth_us = growth_us  # ... rising by at least this much in all
        self.floors: deque[int] = deque(maxlen=max(windows, 6))
        self.floor = NO_LAG  # of the window under way
        self.window_end = 0

    def observe(self, lag_us: int, now_us: int) -> None:
        if now_us >= self.window_end:
            self._roll(now_us)
        if lag_us < self.floor:
            self.floor = lag_us

    def _roll(self, now_us: int) -> None:
        if self.floor != NO_LAG:
            self.floors.append(self.floor)
        self.floor = NO_LAG
        self.window_end = now_us + self.window_us

    def growing(self) -> bool:
        """True when the last `windows` floors each rose, by `growth_us` in all."""
        if len(self.floors) < self.windows:
            return False
        recent = list(self.floors)[-self.windows:]
        rising = all(later > earlier for earlier, later in pairwise(recent))
        return rising and recent[-1] - recent[0] >= self.growth_us

    def floor_us(self) -> int | None:
        """The latest complete window's floor (the connection's lag now)."""
        return self.floors[-1] if self.floors else None

    def reset(self) -> None:
        """A new connection starts a new history."""
        self.floors.clear()
        self.floor = NO_LAG
        self.window_end = 0
