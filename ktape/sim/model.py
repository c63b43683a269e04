"""A seeded, deterministic model of Kalshi markets: series, events, markets and books.

All randomness comes from one `random.Random(seed)`; time comes from the caller (exchange
milliseconds), so the same seed and the same sequence of `step()` times give the same
events — the basis of the determinism tests and of the journal oracle.

Markets come in Kalshi-like events of several markets (`ktape.sim.events`): strike ladders
of mutually exclusive buckets, "above" thresholds, named outcomes. One latent value per
event sets every market's fair YES price; resting bids stay strictly below it on both
sides (YES bids < fair, NO bids < $1 - fair), and when the latent value moves, the quotes
it leaves on the wrong side are cancelled before anything new is quoted. So every book
never crosses, and for a mutually exclusive event the best YES bids sum below $1 and the
implied YES asks above $1 at every instant, as on Kalshi.

Books are Kalshi's two bid ladders (YES bids, NO bids at NO prices) as
price_e4 -> qty_e2. Trades consume the best opposite level. An event's markets share a
lifecycle: they pause and reactivate together, close together (a new event of the same
series and size takes their place, so the number of open markets stays as configured),
are determined together with coherent results (one YES in a mutually exclusive event)
and settle.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ktape.sim.events import UNIT_E4, SeriesSpec, SimEvent, new_event, plan_events

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
EVENT_LIFETIME_MS = 86_400_000  # an event's markets close a day after they are created


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
    yes_sub_title: str = ""  # what YES means: "45° to 46°", "Above $95,000", "BOS"
    strike_type: str = ""  # PROTOCOL.md §6.3: less, between, greater; "" for outcomes
    floor_strike: Decimal | None = None
    cap_strike: Decimal | None = None

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


# Why a level changed, as the model knows it: the oracle for queryd's inferred labels
# (OrderbookDelta.cause). Kalshi's feed never says; the journal does.
CAUSE_NEW = "new"  # resting size added: a new order, or a level growing
CAUSE_CANCEL = "cancel"  # resting size withdrawn by its owner (incl. stale-quote pulls)
CAUSE_TRADE = "trade"  # resting size consumed by a taker's print
CAUSES = (CAUSE_NEW, CAUSE_CANCEL, CAUSE_TRADE)


@dataclass(frozen=True)
class BookChange:
    ts_ms: int
    ticker: str
    side: str
    price_e4: int
    delta_e2: int
    qty_after_e2: int
    cause: str  # one of CAUSES


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
        """`markets` open markets at `start_ms`, in as many events as it takes to hold
        them (each event's size drawn from its series' range, the last one cut to fit)."""
        self.rng = random.Random(seed)
        self.start_ms = start_ms
        self.lifecycle_rate = lifecycle_rate
        self.markets: dict[str, Market] = {}
        self.series: dict[str, SeriesSpec] = {}
        self.events: dict[str, SimEvent] = {}
        self._event_numbers: dict[str, int] = {}  # events made per series: the next date
        for spec, size in plan_events(self.rng, markets):
            for market in self._new_event(spec, size, start_ms):
                self._seed_book(market)
        self._active = [t for t, m in self.markets.items() if m.status == "active"]

    # -- construction ------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _new_event(self, spec: SeriesSpec, size: int, now_ms: int) -> list[Market]:
        """A new event of `spec` with `size` markets, all trading from `now_ms`, priced
        from the event's latent value; their books start empty."""
        number = self._event_numbers.get(spec.ticker, 0)
        self._event_numbers[spec.ticker] = number + 1
        event = new_event(self.rng, spec, size, number)
        if event.event_ticker in self.events:
            raise AssertionError(f"event ticker {event.event_ticker} made twice")
        self.series.setdefault(spec.ticker, spec)
        self.events[event.event_ticker] = event
        # one grid for the whole event, as a series' markets share theirs on Kalshi
        label = self.rng.choices([g for g, _ in GRID_WEIGHTS], [w for _, w in GRID_WEIGHTS])[0]
        made = []
        for market_spec, fair in zip(event.markets, event.fair_prices(), strict=True):
            ticker = f"{event.event_ticker}-{market_spec.suffix}"
            market = Market(
                ticker=ticker, event_ticker=event.event_ticker, series_ticker=spec.ticker,
                market_id=self._uuid(), title=f"{event.title}: {market_spec.yes_sub_title}",
                grid_label=label, open_ms=now_ms, close_ms=now_ms + EVENT_LIFETIME_MS,
                fair_e4=fair, status="active", created_ms=now_ms,
                yes_sub_title=market_spec.yes_sub_title, strike_type=market_spec.strike_type,
                floor_strike=market_spec.floor_strike, cap_strike=market_spec.cap_strike)
            self.markets[ticker] = market
            event.tickers.append(ticker)
            made.append(market)
        return made

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
        first_start, _, first_step = market.grid[0]
        if top < first_start + first_step:
            return None  # fair is below the grid's lowest price: this side cannot be quoted
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
            # the event's latent value moves: every market of it is repriced at once
            event = self.events[market.event_ticker]
            event.move(self.rng)
            return self._reprice(event, now_ms) + self._level_change(market, now_ms)
        return self._level_change(market, now_ms)

    def _reprice(self, event: SimEvent, now_ms: int) -> list[Event]:
        """Set every market's fair price from the event's latent value and cancel the
        resting bids now on the wrong side of it (YES bids at or above fair, NO bids at
        or above $1 - fair), as market makers pull stale quotes. Only cancels: until the
        last of them, every bid is below its old fair and its new one, so the event's
        books are coherent after each single change, not just after the step."""
        changes: list[Event] = []
        for ticker, fair in zip(event.tickers, event.fair_prices(), strict=True):
            market = self.markets[ticker]
            market.fair_e4 = fair
            for side, limit in (("yes", fair), ("no", UNIT_E4 - fair)):
                ladder = market.side(side)
                for price in sorted(p for p in ladder if p >= limit):
                    changes.append(self._apply(market, side, price, -ladder[price], now_ms,
                                               CAUSE_CANCEL))
        return changes

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
        cause = CAUSE_NEW if delta > 0 else CAUSE_CANCEL
        return [self._apply(market, side, price, delta, now_ms, cause)]

    def _apply(self, market: Market, side: str, price: int, delta: int, now_ms: int,
               cause: str) -> BookChange:
        ladder = market.side(side)
        after = ladder.get(price, 0) + delta
        if after < 0:
            raise AssertionError(f"negative level {market.ticker} {side} {price}")
        if after == 0:
            ladder.pop(price, None)
        else:
            ladder[price] = after
        return BookChange(now_ms, market.ticker, side, price, delta, after, cause)

    def _trade(self, market: Market, now_ms: int) -> list[Event]:
        # The taker buys YES (hitting the best NO bid) or buys NO (hitting the best YES bid).
        taker = self.rng.choice(("yes", "no"))
        if self.rng.random() < BLOCK_TRADE_SHARE:
            # A block trade is negotiated off the book: a print, no book change.
            yes_price = min(9_900, max(100, market.fair_e4 - market.fair_e4 % 100))
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
        change = self._apply(market, maker_side, best, -count, now_ms, CAUSE_TRADE)
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
            return self.activate(self.rng.choice(inactive), now_ms)
        if self._active and 0.95 <= roll < 0.97:
            market = self.markets[self.rng.choice(self._active)]
            size = len(self.events[market.event_ticker].tickers)
            if self._one_in(size) and len(self._active) > size:  # something else trades on
                return self.deactivate(market, now_ms)
            return []
        if self._active and roll >= 0.97:
            market = self.markets[self.rng.choice(self._active)]
            market.metadata_rev += 1
            return [LifecycleEvent(now_ms, market.ticker, "metadata_updated", {
                "yes_sub_title": f"{market.yes_sub_title} (revision {market.metadata_rev})"})]
        coarse = [t for t in self._active if self.markets[t].grid_label == "linear_cent"]
        if coarse and 0.8 <= roll < 0.9:
            # A grid change mid-life, always to a finer grid so resting levels stay valid.
            market = self.markets[self.rng.choice(coarse)]
            market.grid_label = "deci_cent"
            return [LifecycleEvent(now_ms, market.ticker, "price_level_structure_updated", {})]
        if self._active and roll < 0.8:
            market = self.markets[self.rng.choice(self._active)]
            if self._one_in(len(self.events[market.event_ticker].tickers)):
                return self.close(market, now_ms)
        return []

    def _one_in(self, size: int) -> bool:
        """True once in `size` draws. A pause or close takes a whole event of `size`
        markets, so it fires on one roll in `size`: markets stop trading as often as
        they did when each event held one (a subscriber to a few markets keeps a feed
        for as long as it used to)."""
        return self.rng.random() * size < 1

    # -- lifecycle transitions (random above, or on demand: SimServer.drive) ------------

    def _event_markets(self, market: Market) -> list[Market]:
        return [self.markets[t] for t in self.events[market.event_ticker].tickers]

    def deactivate(self, market: Market, now_ms: int) -> list[Event]:
        """The exchange pauses the market's event: no trading, and its latent value
        stands still, so the resting quotes cannot go stale while nobody may cancel."""
        self.events[market.event_ticker].paused = True
        out: list[Event] = []
        for m in self._event_markets(market):
            if m.status == "active":
                m.status = "inactive"
                self._active.remove(m.ticker)
                out.append(LifecycleEvent(now_ms, m.ticker, "deactivated",
                                          {"is_deactivated": True}))
        return out

    def activate(self, market: Market, now_ms: int) -> list[Event]:
        """The paused event trades again. Reactivation cancels every resting order
        (PROTOCOL.md §7): each book empties."""
        self.events[market.event_ticker].paused = False
        out: list[Event] = []
        for m in self._event_markets(market):
            if m.status == "inactive":
                m.status = "active"
                self._active.append(m.ticker)
                m.yes.clear()
                m.no.clear()
                out += [LifecycleEvent(now_ms, m.ticker, "activated", {"is_deactivated": False}),
                        BookCleared(now_ms, m.ticker)]
        return out

    def close(self, market: Market, now_ms: int) -> list[Event]:
        """An early close of the market's whole event (an event's markets close
        together); a new event of the same series and size takes its place, so the
        number of open markets stays what it was."""
        event = self.events[market.event_ticker]
        event.paused = False
        out: list[Event] = []
        for m in self._event_markets(market):
            if m.status not in ("active", "inactive"):
                continue
            if m.status == "active":
                self._active.remove(m.ticker)
            m.status = "closed"
            m.close_ms = now_ms
            m.yes.clear()
            m.no.clear()
            # Kalshi announces an early close with close_date_updated, then the book
            # empties (resting orders cancelled) with an empty snapshot.
            out += [LifecycleEvent(now_ms, m.ticker, "close_date_updated",
                                   {"close_ts": now_ms // 1000}),
                    BookCleared(now_ms, m.ticker)]
        for new in self._new_event(event.series, len(event.tickers), now_ms):
            self._active.append(new.ticker)  # created now, trading at once
            out.append(LifecycleEvent(now_ms, new.ticker, "created", {
                "open_ts": new.open_ms // 1000, "close_ts": new.close_ms // 1000}))
        return out

    def determine(self, market: Market, now_ms: int) -> list[Event]:
        """The closed event's result becomes known, for all its markets at once and
        coherently: one market YES in a mutually exclusive event, the strikes below the
        outcome YES in a threshold ladder."""
        event = self.events[market.event_ticker]
        out: list[Event] = []
        for m, yes in zip(self._event_markets(market), event.draw_results(self.rng),
                          strict=True):
            m.status = "determined"
            m.result = "yes" if yes else "no"
            m.settlement_value_e4 = UNIT_E4 if yes else 0
            m.determined_ms = now_ms
            out.append(LifecycleEvent(now_ms, m.ticker, "determined", {
                "result": m.result, "settlement_value_e4": m.settlement_value_e4,
                "determination_ts": now_ms // 1000}))
        return out

    def settle(self, market: Market, now_ms: int) -> list[Event]:
        """The determined event is paid out (every market finalized)."""
        out: list[Event] = []
        for m in self._event_markets(market):
            m.status = "finalized"
            m.settled_ms = now_ms
            settled = LifecycleEvent(now_ms, m.ticker, "settled", {"settled_ts": now_ms // 1000})
            # Kalshi has been seen repeating `settled` for one market (PROTOCOL.md §5.9).
            out += [settled, settled] if self.rng.random() < 0.5 else [settled]
        return out

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
