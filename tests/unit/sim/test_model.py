"""The simulator's market model and number formats: determinism, exactness, no crossing."""

from ktape.sim.fixed import contracts, dollars
from ktape.sim.journal import Journal
from ktape.sim.model import BookChange, MarketModel, on_grid


def _run(seed: int, steps: int = 5000) -> list:
    model = MarketModel(seed=seed, markets=30, start_ms=1_700_000_000_000)
    return [e for i in range(steps) for e in model.step(1_700_000_000_000 + i)]


def test_same_seed_same_stream_different_seed_different_stream():
    assert _run(7) == _run(7)
    assert _run(7) != _run(8)


def test_books_never_cross_and_stay_on_grid():
    model = MarketModel(seed=3, markets=40, start_ms=0)
    for i in range(20_000):
        for event in model.step(i):
            if isinstance(event, BookChange):
                market = model.markets[event.ticker]
                assert on_grid(market.grid, event.price_e4), (market.grid_label, event)
                assert event.qty_after_e2 >= 0
        for market in model.markets.values():
            by, bn = market.best("yes"), market.best("no")
            assert by is None or bn is None or by + bn < 10_000


def test_lifecycle_happens_and_new_markets_appear():
    from collections import Counter

    model = MarketModel(seed=5, markets=10, start_ms=0, lifecycle_rate=0.05)
    kinds = set()
    settled: Counter[str] = Counter()
    for i in range(5000):
        for event in model.step(i):
            kind = getattr(event, "event_type", type(event).__name__)
            kinds.add(kind)
            if kind == "settled":
                settled[event.ticker] += 1
    assert max(settled.values()) == 2  # duplicated `settled`, as Kalshi does
    assert {"created", "determined", "settled", "BookCleared", "close_date_updated",
            "price_level_structure_updated"} <= kinds
    assert len(model.markets) > 10


def test_journal_replays_to_the_model_book():
    model = MarketModel(seed=11, markets=20, start_ms=0)
    journal = Journal()
    for market in model.markets.values():
        journal.initial_book(0, market)
    for i in range(1, 3000):
        for event in model.step(i):
            journal.event(event)
    for ticker, market in model.markets.items():
        yes, no = journal.book_at(ticker, 10**9)
        assert (yes, no) == (market.yes, market.no), ticker


def test_fixed_point_strings():
    assert dollars(4200) == "0.4200" and dollars(1) == "0.0001" and dollars(4200, 2) == "0.42"
    assert dollars(4201, 2) == "0.4201"  # never rounded
    assert contracts(15000) == "150.00" and contracts(-5) == "-0.05"


def test_pause_reactivation_metadata_and_block_trades():
    """The model pauses markets (no trading while inactive), reactivates them with their
    resting orders cancelled, updates metadata, and prints off-book block trades."""
    from ktape.sim.model import BookCleared, LifecycleEvent, TradeEvent

    model = MarketModel(seed=3, markets=40, start_ms=1_000, lifecycle_rate=0.05)
    inactive: set[str] = set()
    seen: set[str] = set()
    blocks = 0
    for i in range(40_000):
        events = model.step(1_000 + i)
        for event in events:
            if isinstance(event, LifecycleEvent):
                seen.add(event.event_type)
                if event.event_type == "deactivated":
                    inactive.add(event.ticker)
                elif event.event_type == "activated":
                    inactive.discard(event.ticker)
                    market = model.markets[event.ticker]
                    assert not market.yes and not market.no  # orders wiped
                    assert any(isinstance(e, BookCleared) for e in events)
            elif isinstance(event, (BookChange, TradeEvent)):
                assert event.ticker not in inactive, "trading while paused"
                if isinstance(event, TradeEvent) and event.is_block:
                    blocks += 1
                    assert len(events) == 1  # off-book: no book change with it
    assert {"deactivated", "activated", "metadata_updated"} <= seen
    assert blocks > 0
