"""A seeded, deterministic model of Kalshi markets: series, events, markets and books.

All randomness comes from one `random.Random(seed)`; time comes from the caller (exchange
milliseconds), so the same seed and the same sequence of `step()` times give the same
events — the basis of the determinism tests and of the journal oracle.

Books are Kalshi's two bid ladders (YES bids, NO bids at NO prices) as
price_e4 -> qty_e2. They never cross (best YES + best NO < $1). Trades consume the best
opposite level. Markets close (book emptied), are determined with a result and settle;
new markets are created mid-run.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

GRIDS: dict[str, list[tuple[int, int, int]]] = {
    # label -> [(start_e4, end_e4, step_e4)], as in Kalshi's `price_ranges`
    "linear_cent": [(0, 10_000, 100)],
    "deci_cent": [(0, 10_000, 10)],
    "tapered_deci_cent": [(0, 1_000, 10), (1_000, 9_000, 100), (9_000, 10_000, 10)],
    "center_deci_edge_centi_cent": [(0, 100, 1), (100, 9_900, 10), (9_900, 10_000, 1)],
}
BLOCK_TRADE_SHARE = 0.02  # of trades: off-book block trades (no book change)
GRID_WEIGHTS = [("linear_cent", 70), ("tapered_deci_cent", 15), ("deci_cent", 10),
                ("center_deci_edge_centi_cent", 5)]
SERIES_NAMES = ["KXHIGHNY", "KXBTCD", "KXETHD", "KXCPI", "KXFED", "KXNBAGAME", "KXRAIN",
                "KXGDP", "KXSNOW", "KXPRES"]


def grid_step_at(grid: list[tuple[int, int, int]], price_e4: int) -> int:
    for start, end, step in grid:
        if start <= price_e4 < end:
            return step
    return grid[-1][2]


def on_grid(grid: list[tuple[int, int, int]], price_e4: int) -> bool:
    if not 0 < price_e4 < 10_000:
        return False
    return any(start <= price_e4 <= end and (price_e4 - start) % step == 0
               for start, end, step in grid)


@dataclass
class Market:
    ticker: str
    event_ticker: str
    series_ticker: str
    market_id: str
    title: str
    grid_label: str
    open_ms: int
    close_ms: int
    fair_e4: int
    status: str = "active"  # initialized, active, inactive, closed, determined, finalized
    result: str = ""
    settlement_value_e4: int | None = None
    yes: dict[int, int] = field(default_factory=dict)
    no: dict[int, int] = field(default_factory=dict)
    volume_e2: int = 0
    open_interest_e2: int = 0  # contracts outstanding (changes only with trades)
    last_price_e4: int | None = None
    created_ms: int = 0
    settled_ms: int | None = None
    metadata_rev: int = 0  # bumped by each metadata_updated
    determined_ms: int | None = None

    @property
    def grid(self) -> list[tuple[int, int, int]]:
        return GRIDS[self.grid_label]

    def side(self, name: str) -> dict[int, int]:
        return self.yes if name == "yes" else self.no

    def best(self, name: str) -> int | None:
        ladder = self.side(name)
        return max(ladder) if ladder else None

    def price_ranges(self) -> list[dict[str, str]]:
        from ktape.sim.fixed import dollars

        return [{"start": dollars(s), "end": dollars(e), "step": dollars(st)}
                for s, e, st in self.grid]


@dataclass(frozen=True)
class BookChange:
    ts_ms: int
    ticker: str
    side: str
    price_e4: int
    delta_e2: int
    qty_after_e2: int


@dataclass(frozen=True)
class TradeEvent:
    ts_ms: int
    ticker: str
    trade_id: str
    yes_price_e4: int
    count_e2: int
    taker_side: str
    is_block: bool = False
    open_interest_e2: int = 0  # the market's open interest after this trade


@dataclass(frozen=True)
class LifecycleEvent:
    ts_ms: int
    ticker: str
    event_type: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class BookCleared:
    """A market's book emptied at close (Kalshi sends an empty snapshot)."""

    ts_ms: int
    ticker: str


Event = BookChange | TradeEvent | LifecycleEvent | BookCleared


class MarketModel:
    """The exchange state plus a seeded generator of what happens next."""

    def __init__(self, *, seed: int, markets: int, start_ms: int,
                 lifecycle_rate: float = 0.002) -> None:
        self.rng = random.Random(seed)
        self.start_ms = start_ms
        self.lifecycle_rate = lifecycle_rate
        self.markets: dict[str, Market] = {}
        self.series: dict[str, dict[str, str]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self._counter = 0
        for _ in range(markets):
            self._seed_book(self._new_market(start_ms, status="active"))
        self._active = [t for t, m in self.markets.items() if m.status == "active"]

    # -- construction ------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _new_market(self, now_ms: int, status: str) -> Market:
        self._counter += 1
        series = SERIES_NAMES[self._counter % len(SERIES_NAMES)]
        event_no = self._counter // 5
        event_ticker = f"{series}-26NOV{24 + event_no % 5:02d}E{event_no}"
        strike = 40 + (self._counter % 5) + self.rng.choice([0, 0.5])
        ticker = f"{event_ticker}-B{strike}"
        while ticker in self.markets:
            ticker += "X"
        self.series.setdefault(series, {"ticker": series, "title": f"{series} series",
                                        "category": "Simulated", "frequency": "daily"})
        self.events.setdefault(event_ticker, {
            "event_ticker": event_ticker, "series_ticker": series,
            "title": f"Simulated event {event_no}", "sub_title": f"#{event_no}",
            "mutually_exclusive": True, "category": "Simulated",
        })
        label = self.rng.choices([g for g, _ in GRID_WEIGHTS], [w for _, w in GRID_WEIGHTS])[0]
        market = Market(
            ticker=ticker, event_ticker=event_ticker, series_ticker=series,
            market_id=self._uuid(), title=f"Will {series} be above {strike}?",
            grid_label=label, open_ms=now_ms, close_ms=now_ms + 86_400_000,
            fair_e4=self.rng.randrange(1_500, 8_500), status=status, created_ms=now_ms,
        )
        self.markets[ticker] = market
        return market

    def _seed_book(self, market: Market) -> None:
        for _ in range(self.rng.randrange(3, 12)):
            side = self.rng.choice(("yes", "no"))
            price = self._pick_price(market, side)
            if price is not None:
                ladder = market.side(side)
                ladder[price] = ladder.get(price, 0) + self._size()

    def _size(self) -> int:
        # fractional sizes: mostly whole contracts, sometimes cents of a contract
        whole = self.rng.randrange(1, 500) * 100
        return whole + (self.rng.randrange(1, 100) if self.rng.random() < 0.3 else 0)

    def _pick_price(self, market: Market, side: str) -> int | None:
        """A grid price on `side` strictly below the side's crossing limit."""
        fair = market.fair_e4 if side == "yes" else 10_000 - market.fair_e4
        other_best = market.best("no" if side == "yes" else "yes")
        limit = 10_000 - other_best if other_best is not None else 10_000
        top = min(fair, limit) - 1
        for _ in range(8):
            step = grid_step_at(market.grid, max(1, top))
            offset = self.rng.randrange(0, 15) * step
            price = top - (top % step) - offset
            if 0 < price < limit and on_grid(market.grid, price):
                return price
        return None

    # -- evolution ---------------------------------------------------------------------

    def step(self, now_ms: int) -> list[Event]:
        """What happens at `now_ms`: usually one book change, sometimes a trade or a
        lifecycle transition."""
        if not self._active:
            return self._lifecycle(now_ms)
        roll = self.rng.random()
        if roll < self.lifecycle_rate:
            return self._lifecycle(now_ms)
        market = self.markets[self._active[self.rng.randrange(len(self._active))]]
        if roll < 0.2:
            return self._trade(market, now_ms)
        if roll < 0.25:
            market.fair_e4 = min(9_500, max(500, market.fair_e4 + self.rng.randrange(-200, 201)))
        return self._level_change(market, now_ms)

    def _level_change(self, market: Market, now_ms: int) -> list[Event]:
        side = self.rng.choice(("yes", "no"))
        ladder = market.side(side)
        if ladder and self.rng.random() < 0.45:
            price = self.rng.choice(sorted(ladder))
            current = ladder[price]
            delta = -current if self.rng.random() < 0.4 else -self.rng.randrange(1, current + 1)
            if delta == 0:
                delta = -current
        else:
            price = self._pick_price(market, side)
            if price is None:
                return []
            delta = self._size()
        return [self._apply(market, side, price, delta, now_ms)]

    def _apply(self, market: Market, side: str, price: int, delta: int, now_ms: int) -> BookChange:
        ladder = market.side(side)
        after = ladder.get(price, 0) + delta
        if after < 0:
            raise AssertionError(f"negative level {market.ticker} {side} {price}")
        if after == 0:
            ladder.pop(price, None)
        else:
            ladder[price] = after
        return BookChange(now_ms, market.ticker, side, price, delta, after)

    def _trade(self, market: Market, now_ms: int) -> list[Event]:
        # The taker buys YES (hitting the best NO bid) or buys NO (hitting the best YES bid).
        taker = self.rng.choice(("yes", "no"))
        if self.rng.random() < BLOCK_TRADE_SHARE:
            # A block trade is negotiated off the book: a print, no book change.
            yes_price = market.fair_e4 - market.fair_e4 % 100 or 100
            count = self.rng.randrange(50, 500) * 100
            market.volume_e2 += count
            market.last_price_e4 = yes_price
            _open_or_close(market, count, taker)
            return [TradeEvent(now_ms, market.ticker, self._uuid(), yes_price, count, taker,
                               is_block=True, open_interest_e2=market.open_interest_e2)]
        maker_side = "no" if taker == "yes" else "yes"
        best = market.best(maker_side)
        if best is None:
            return self._level_change(market, now_ms)
        available = market.side(maker_side)[best]
        count = min(available, self.rng.randrange(1, 20) * 100)
        yes_price = 10_000 - best if maker_side == "no" else best
        market.volume_e2 += count
        market.last_price_e4 = yes_price
        _open_or_close(market, count, taker)
        trade = TradeEvent(now_ms, market.ticker, self._uuid(), yes_price, count, taker,
                           open_interest_e2=market.open_interest_e2)
        change = self._apply(market, maker_side, best, -count, now_ms)
        return [change, trade]

    def _lifecycle(self, now_ms: int) -> list[Event]:
        closed = [m for m in self.markets.values() if m.status == "closed"]
        determined = [m for m in self.markets.values() if m.status == "determined"]
        roll = self.rng.random()
        if determined and roll < 0.3:
            return self.settle(self.rng.choice(determined), now_ms)
        if closed and roll < 0.6:
            return self.determine(self.rng.choice(closed), now_ms)
        inactive = [m for m in self.markets.values() if m.status == "inactive"]
        if inactive and 0.9 <= roll < 0.95:
            # Reactivation cancels every resting order (PROTOCOL.md §7): the book empties.
            market = self.rng.choice(inactive)
            market.status = "active"
            self._active.append(market.ticker)
            market.yes.clear()
            market.no.clear()
            return [LifecycleEvent(now_ms, market.ticker, "activated", {"is_deactivated": False}),
                    BookCleared(now_ms, market.ticker)]
        if len(self._active) > 1 and 0.95 <= roll < 0.97:
            market = self.markets[self.rng.choice(self._active)]
            market.status = "inactive"  # paused by the exchange: no trading until activated
            self._active.remove(market.ticker)
            return [LifecycleEvent(now_ms, market.ticker, "deactivated", {"is_deactivated": True})]
        if self._active and roll >= 0.97:
            market = self.markets[self.rng.choice(self._active)]
            market.metadata_rev += 1
            return [LifecycleEvent(now_ms, market.ticker, "metadata_updated", {
                "yes_sub_title": f"{market.title} (revision {market.metadata_rev})"})]
        coarse = [t for t in self._active if self.markets[t].grid_label == "linear_cent"]
        if coarse and 0.8 <= roll < 0.9:
            # A grid change mid-life, always to a finer grid so resting levels stay valid.
            market = self.markets[self.rng.choice(coarse)]
            market.grid_label = "deci_cent"
            return [LifecycleEvent(now_ms, market.ticker, "price_level_structure_updated", {})]
        if self._active and roll < 0.8:
            return self.close(self.markets[self.rng.choice(self._active)], now_ms)
        return []

    # -- lifecycle transitions (random above, or on demand: SimServer.drive) ------------

    def close(self, market: Market, now_ms: int) -> list[Event]:
        """An early close of an active market; a new market takes its place."""
        market.status = "closed"
        market.close_ms = now_ms
        self._active.remove(market.ticker)
        market.yes.clear()
        market.no.clear()
        # A new market takes its place (created now, trading at once).
        new = self._new_market(now_ms, status="active")
        self._active.append(new.ticker)
        # Kalshi announces an early close with close_date_updated, then the book
        # empties (resting orders cancelled) with an empty snapshot.
        return [LifecycleEvent(now_ms, market.ticker, "close_date_updated",
                               {"close_ts": now_ms // 1000}),
                BookCleared(now_ms, market.ticker),
                LifecycleEvent(now_ms, new.ticker, "created", {
                    "open_ts": new.open_ms // 1000, "close_ts": new.close_ms // 1000})]

    def determine(self, market: Market, now_ms: int) -> list[Event]:
        """A closed market's result becomes known."""
        market.status = "determined"
        market.result = self.rng.choice(("yes", "no"))
        market.settlement_value_e4 = 10_000 if market.result == "yes" else 0
        market.determined_ms = now_ms
        return [LifecycleEvent(now_ms, market.ticker, "determined", {
            "result": market.result, "settlement_value_e4": market.settlement_value_e4,
            "determination_ts": now_ms // 1000})]

    def settle(self, market: Market, now_ms: int) -> list[Event]:
        """A determined market is paid out (finalized)."""
        market.status = "finalized"
        market.settled_ms = now_ms
        settled = LifecycleEvent(now_ms, market.ticker, "settled",
                                 {"settled_ts": now_ms // 1000})
        # Kalshi has been seen repeating `settled` for one market (PROTOCOL.md §5.9).
        return [settled, settled] if self.rng.random() < 0.5 else [settled]

    # -- views -------------------------------------------------------------------------

    def active_tickers(self) -> list[str]:
        return list(self._active)


def _open_or_close(market: Market, count_e2: int, taker: str) -> None:
    """Open interest after a trade, without a draw of the seeded generator (so adding it
    moved no other event): a YES taker opens new contracts, a NO taker closes half of its
    count (never below zero)."""
    if taker == "yes":
        market.open_interest_e2 += count_e2
    else:
        market.open_interest_e2 = max(0, market.open_interest_e2 - count_e2 // 2)
