"""The simulator's market model and number formats: determinism, exactness, no crossing."""

from ktape.sim.fixed import contracts, dollars
from ktape.sim.journal import Journal
from ktape.sim.model import BookChange, BookCleared, MarketModel, on_grid


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
    from ktape.sim.model import LifecycleEvent, TradeEvent

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


def test_a_seeded_model_holds_events_of_every_kind_filling_the_markets_asked_for():
    """Issue 18 item 0: Kalshi-like events of many markets, as many markets as asked."""
    model = MarketModel(seed=42, markets=200, start_ms=0)
    assert len(model.markets) == len(model.active_tickers()) == 200
    events = list(model.events.values())
    assert {e.kind for e in events} == {"range", "threshold", "outcome"}
    assert {e.mutually_exclusive for e in events} == {True, False}
    sizes = [len(e.tickers) for e in events]
    assert sum(sizes) == 200 and max(sizes) >= 8 and sum(sizes) / len(sizes) > 3
    for event in events:
        for ticker in event.tickers:
            market = model.markets[ticker]
            assert ticker.startswith(f"{event.event_ticker}-")
            assert market.event_ticker == event.event_ticker
            assert market.series_ticker == event.series.ticker
        strike_types = {model.markets[t].strike_type for t in event.tickers}
        assert strike_types == {"range": {"less", "between", "greater"}, "threshold": {"greater"},
                                "outcome": {""}}[event.kind] or (
            event.kind == "range" and len(event.tickers) == 3)
    again = MarketModel(seed=42, markets=200, start_ms=0)
    assert list(again.markets) == list(model.markets)
    assert [m.fair_e4 for m in again.markets.values()] == [m.fair_e4 for m in model.markets.values()]
    assert list(MarketModel(seed=43, markets=200, start_ms=0).markets) != list(model.markets)


def _best_bids_and_asks(books: dict[str, tuple[dict[int, int], dict[int, int]]],
                        tickers: list[str]) -> tuple[list[int], list[int]]:
    """Best YES bid (0 when none) and implied YES ask (1 - best NO bid; $1 when none); a
    market not announced yet (its event's `created` still coming) has an empty book."""
    empty: tuple[dict[int, int], dict[int, int]] = ({}, {})
    bids = [max(books.get(t, empty)[0], default=0) for t in tickers]
    asks = [10_000 - max(books.get(t, empty)[1], default=0) for t in tickers]
    return bids, asks


def test_an_events_prices_and_books_stay_coherent_after_every_single_change():
    """One latent value prices an event: a mutually exclusive event's fair YES prices sum
    to exactly $1 after every step, its best YES bids to at most $1 and its implied YES
    asks to at least $1 after every single book change (rebuilt from the change stream,
    as a subscriber sees it); a threshold ladder's fair prices fall with the strike and
    no strike's bid reaches the ask of a lower strike."""
    model = MarketModel(seed=13, markets=120, start_ms=0, lifecycle_rate=0.01)
    books = {t: (dict(m.yes), dict(m.no)) for t, m in model.markets.items()}
    checked = {"mutually_exclusive": 0, "threshold": 0}
    repriced_together = 0
    for i in range(1, 30_000):
        step = model.step(i)
        for event in step:
            if isinstance(event, BookChange):
                ladder = books[event.ticker][0 if event.side == "yes" else 1]
                if event.qty_after_e2:
                    ladder[event.price_e4] = event.qty_after_e2
                else:
                    ladder.pop(event.price_e4)
            elif isinstance(event, BookCleared) or getattr(event, "event_type", "") == "created":
                books[event.ticker] = ({}, {})
            else:
                continue
            sim_event = model.events[model.markets[event.ticker].event_ticker]
            bids, asks = _best_bids_and_asks(books, sim_event.tickers)
            if sim_event.mutually_exclusive:
                assert sum(bids) <= 10_000 <= sum(asks), (i, sim_event.event_ticker, bids, asks)
                checked["mutually_exclusive"] += 1
            else:
                assert all(b < a for b, a in zip(bids[1:], asks, strict=False)), (i, bids, asks)
                checked["threshold"] += 1
        moved = {model.markets[e.ticker].event_ticker for e in step if isinstance(e, BookChange)}
        touched = {e.ticker for e in step if isinstance(e, BookChange)}
        repriced_together += any(
            len(touched & set(model.events[name].tickers)) > 1 for name in moved)
        if i % 10:
            continue
        for sim_event in model.events.values():
            if model.markets[sim_event.tickers[0]].status != "active":
                continue
            fairs = [model.markets[t].fair_e4 for t in sim_event.tickers]
            if sim_event.mutually_exclusive:
                assert sum(fairs) == 10_000, (i, sim_event.event_ticker, fairs)
            else:
                assert fairs == sorted(fairs, reverse=True), (i, sim_event.event_ticker, fairs)
            for ticker, fair in zip(sim_event.tickers, fairs, strict=True):
                yes, no = books[ticker]
                assert (yes, no) == (model.markets[ticker].yes, model.markets[ticker].no)
                assert all(p < fair for p in yes) and all(p < 10_000 - fair for p in no)
    assert checked["mutually_exclusive"] > 10_000 and checked["threshold"] > 10_000
    assert repriced_together > 50  # moves of the latent value touched several markets at once


def test_an_events_markets_pause_close_determine_and_settle_together():
    from ktape.sim.model import LifecycleEvent

    model = MarketModel(seed=21, markets=40, start_ms=0, lifecycle_rate=0)
    ladder = next(e for e in model.events.values() if e.kind == "threshold" and len(e.tickers) > 3)
    buckets = next(e for e in model.events.values() if e.kind == "range")
    for event in (ladder, buckets):
        first = model.markets[event.tickers[0]]
        paused = model.deactivate(first, 5)
        assert [e.ticker for e in paused] == event.tickers and event.paused
        assert not set(event.tickers) & set(model.active_tickers())
        resumed = model.activate(first, 6)
        assert [e.ticker for e in resumed if isinstance(e, LifecycleEvent)] == event.tickers
        assert all(not model.markets[t].yes and not model.markets[t].no for t in event.tickers)

        out = model.close(first, 10)
        kinds = [(getattr(e, "event_type", type(e).__name__), e.ticker) for e in out]
        closed = [t for k, t in kinds if k == "close_date_updated"]
        created = [t for k, t in kinds if k == "created"]
        assert closed == event.tickers == [t for k, t in kinds if k == "BookCleared"]
        assert len(created) == len(event.tickers)
        (new_event,) = {model.markets[t].event_ticker for t in created}
        assert model.events[new_event].series is event.series
        assert model.events[new_event].tickers == created
        assert len(model.active_tickers()) == 40  # the new event took the old one's place

        model.determine(first, 20)
        results = [model.markets[t].result for t in event.tickers]
        if event.mutually_exclusive:
            assert results.count("yes") == 1
        else:
            assert results == sorted(results, reverse=True)  # yes… then no…
        assert {model.markets[t].status for t in event.tickers} == {"determined"}
        settled = model.settle(first, 30)
        assert {e.ticker for e in settled} == set(event.tickers)
        assert {model.markets[t].status for t in event.tickers} == {"finalized"}


def test_every_book_change_carries_its_true_cause():
    """The oracle of change labelling: a print's maker level falls with cause `trade` at
    the print's instant (a YES taker takes NO bids at $1 - yes_price, a NO taker YES
    bids at yes_price), additions are `new`, every other fall is `cancel`."""
    from ktape.sim.model import CAUSES, TradeEvent

    model = MarketModel(seed=11, markets=20, start_ms=0)
    causes: set[str] = set()
    for i in range(20_000):
        step = model.step(i)
        for n, event in enumerate(step):
            if not isinstance(event, BookChange):
                continue
            assert event.cause in CAUSES
            causes.add(event.cause)
            assert (event.cause == "new") == (event.delta_e2 > 0), event
            if event.cause == "trade":
                trade = step[n + 1]
                assert isinstance(trade, TradeEvent) and not trade.is_block
                assert trade.ts_ms == event.ts_ms and trade.count_e2 == -event.delta_e2
                side, price = ("no", 10_000 - trade.yes_price_e4) \
                    if trade.taker_side == "yes" else ("yes", trade.yes_price_e4)
                assert (event.side, event.price_e4) == (side, price)
    assert causes == set(CAUSES)


def test_journal_records_the_cause_and_loads_a_journal_without_it(tmp_path):
    path = tmp_path / "journal.ndjson"
    journal = Journal(path)
    journal.event(BookChange(5, "KX-A", "yes", 4200, -300, 0, "trade"))
    journal.close()
    old = tmp_path / "old.ndjson"
    old.write_text('{"k":"chg","t":5,"m":"KX-A","s":"yes","p":4200,"d":100,"q":100}\n')
    assert Journal.load(path).changes("KX-A")[0]["c"] == "trade"
    loaded = Journal.load(old)
    assert "c" not in loaded.changes("KX-A")[0]
    assert loaded.book_at("KX-A", 5) == ({4200: 100}, {})
