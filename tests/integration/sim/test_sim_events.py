"""Kalshi-like events over the simulator's real sockets (issue 18 item 0): REST serves
each event's markets, its `mutually_exclusive` flag and every market's strike fields as
PROTOCOL.md §6 describes, and the WebSocket books of an event's markets move coherently.
Read with a plain HTTP / websockets client and exact decimals, as a Kalshi client would."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from decimal import Decimal

import httpx
import websockets

from ktape.sim.server import SimConfig, SimServer


def _e4(text: str) -> int:
    return int(Decimal(text) * 10_000)


async def _get(client: httpx.AsyncClient, url: str, **params: object) -> dict:
    resp = await client.get(url, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def _all_events(client: httpx.AsyncClient, base: str, **params: object) -> list[dict]:
    events, cursor = [], ""
    while True:
        page = await _get(client, f"{base}/events", limit=7, cursor=cursor, **params)
        events += page["events"]
        cursor = page["cursor"]
        if not cursor:
            return events


async def test_rest_serves_each_events_markets_strikes_and_mutual_exclusion():
    async with SimServer(SimConfig(markets=60, rate=100, seed=4)) as sim, \
            httpx.AsyncClient(timeout=10) as client:
        sim.model.lifecycle_rate = 0
        base = f"http://127.0.0.1:{sim.port}/trade-api/v2"
        await asyncio.sleep(0.5)
        sim.config.rate = 0  # quiesce: the REST reads below see one state
        await asyncio.sleep(0.1)
        events = await _all_events(client, base, with_nested_markets="true")
        assert len(events) == len({e["event_ticker"] for e in events}) == len(sim.model.events)
        assert {e["mutually_exclusive"] for e in events} == {True, False}
        assert sum(len(e["markets"]) for e in events) == 60
        assert max(len(e["markets"]) for e in events) >= 5
        for event in events:
            name = event["event_ticker"]
            nested = event["markets"]
            listed = (await _get(client, f"{base}/markets", event_ticker=name))["markets"]
            single = await _get(client, f"{base}/events/{name}")
            assert sorted(m["ticker"] for m in nested) == [m["ticker"] for m in listed]
            assert [m["ticker"] for m in single["markets"]] == [m["ticker"] for m in nested]
            assert "markets" not in single["event"]
            assert single["event"]["mutually_exclusive"] is event["mutually_exclusive"]
            assert event["collateral_return_type"] == (
                "MECNET" if event["mutually_exclusive"] else "DIRECNET")
            assert all(m["event_ticker"] == name and m["ticker"].startswith(f"{name}-")
                       for m in nested)
            bids = [_e4(m["yes_bid_dollars"]) for m in nested]
            asks = [_e4(m["yes_ask_dollars"]) for m in nested]
            types = [m.get("strike_type") for m in nested]
            if event["mutually_exclusive"]:
                # one of them resolves YES: buying every YES costs at least $1, selling
                # every YES (at the bids) brings at most $1
                assert sum(bids) <= 10_000 <= sum(asks), (name, bids, asks)
                if types[0] is not None:  # a range: tails and buckets tile the line
                    assert types[0] == "less" and types[-1] == "greater"
                    assert set(types[1:-1]) <= {"between"}
                    edges = [nested[0]["cap_strike"]] + [m["cap_strike"] for m in nested[1:-1]]
                    assert [m["floor_strike"] for m in nested[1:]] == edges
                    assert edges == sorted(edges)
                else:  # named outcomes: no strikes at all
                    assert not any("floor_strike" in m or "cap_strike" in m for m in nested)
            else:  # a ladder of "above" strikes
                assert set(types) == {"greater"}
                ladder = sorted(nested, key=lambda m: m["floor_strike"])
                assert ladder == nested
                assert all(_e4(high["yes_bid_dollars"]) < _e4(low["yes_ask_dollars"])
                           for low, high in itertools.pairwise(ladder))
                assert all(Decimal(m["ticker"].rsplit("-T", 1)[1]) == Decimal(str(m["floor_strike"]))
                           for m in ladder)  # the ticker names its strike
        # without the flag, events come bare; the filters of §6.2 work
        bare = await _all_events(client, base)
        assert [e["event_ticker"] for e in bare] == [e["event_ticker"] for e in events]
        assert not any("markets" in e for e in bare)
        some = [e["event_ticker"] for e in events[:3]]
        assert [e["event_ticker"] for e in (await _get(
            client, f"{base}/events", tickers=",".join(some)))["events"]] == sorted(some)
        series = events[0]["series_ticker"]
        assert {e["series_ticker"] for e in await _all_events(
            client, base, series_ticker=series)} == {series}
        assert len(await _all_events(client, base, status="open")) == len(events)
        assert await _all_events(client, base, status="settled") == []
        assert (await client.get(f"{base}/events", params={"status": "paused"})).status_code == 400
        assert (await client.get(f"{base}/events", params={"limit": 201})).status_code == 400
        listed_series = (await _get(client, f"{base}/series"))["series"]
        assert {s["ticker"] for s in listed_series} == {e["series_ticker"] for e in events}
        for item in listed_series:  # every field §6.4 requires
            assert {"ticker", "frequency", "title", "category", "categories", "tags",
                    "settlement_sources", "contract_url", "contract_terms_url", "fee_type",
                    "fee_multiplier", "additional_prohibitions"} <= set(item)
        assert (await client.get(f"{base}/events/KXNOPE-26NOV24")).status_code == 404


def _apply(book: dict[str, dict[int, int]], message: dict) -> None:
    msg = message["msg"]
    if message["type"] == "orderbook_snapshot":
        for side in ("yes", "no"):
            book[side] = {_e4(p): _e4(q) for p, q in msg.get(f"{side}_dollars_fp", [])}
    else:
        ladder = book[msg["side"]]
        price = _e4(msg["price_dollars"])
        ladder[price] = ladder.get(price, 0) + _e4(msg["delta_fp"])
        if ladder[price] == 0:
            del ladder[price]


async def test_websocket_books_of_an_event_stay_coherent_after_every_message():
    """Subscribe to every market of the largest mutually exclusive event and of the
    largest threshold ladder; after each snapshot or delta, the rebuilt books hold: the
    exclusive event's best YES bids sum to at most $1 and its implied YES asks (1 - best
    NO bid) to at least $1; no strike's best bid reaches the ask of a lower strike."""
    async with SimServer(SimConfig(markets=12, rate=4000, seed=5)) as sim, \
            httpx.AsyncClient(timeout=10) as client:
        sim.model.lifecycle_rate = 0  # the two events stay open throughout
        base = f"http://127.0.0.1:{sim.port}/trade-api/v2"
        events = (await _get(client, f"{base}/events", with_nested_markets="true"))["events"]
        exclusive = max((e for e in events if e["mutually_exclusive"]),
                        key=lambda e: len(e["markets"]))
        ladder = max((e for e in events if not e["mutually_exclusive"]),
                     key=lambda e: len(e["markets"]))
        groups = {e["event_ticker"]: [m["ticker"] for m in sorted(
            e["markets"], key=lambda m: m.get("floor_strike") or 0)] for e in (exclusive, ladder)}
        assert len(groups[exclusive["event_ticker"]]) >= 3 and len(groups[ladder["event_ticker"]]) >= 3
        of = {t: name for name, tickers in groups.items() for t in tickers}
        books: dict[str, dict[str, dict[int, int]]] = {}
        checked = dict.fromkeys(groups, 0)
        # enough changes for stale quotes to show: without the cancels that follow a move
        # of the latent value, the exclusive event's sums break within ~2,500 messages
        wanted = {exclusive["event_ticker"]: 4000, ladder["event_ticker"]: 1000}
        deltas: dict[str, int] = {}
        async with websockets.connect(f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2") as ws:
            await ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": {
                "channels": ["orderbook_delta"], "market_tickers": sorted(of),
                "use_yes_price": False}}))
            deadline = time.monotonic() + 90  # a shared machine can be slow; done sooner
            while any(checked[n] < wanted[n] for n in groups) and time.monotonic() < deadline:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if message["type"] not in ("orderbook_snapshot", "orderbook_delta"):
                    continue
                ticker = message["msg"]["market_ticker"]
                _apply(books.setdefault(ticker, {"yes": {}, "no": {}}), message)
                if message["type"] == "orderbook_delta":
                    deltas[ticker] = deltas.get(ticker, 0) + 1
                name = of[ticker]
                if not all(t in books for t in groups[name]):
                    continue  # not every snapshot in yet
                bids = [max(books[t]["yes"], default=0) for t in groups[name]]
                asks = [10_000 - max(books[t]["no"], default=0) for t in groups[name]]
                if name == exclusive["event_ticker"]:
                    assert sum(bids) <= 10_000 <= sum(asks), (message, bids, asks)
                else:
                    assert all(b < a for b, a in zip(bids[1:], asks, strict=False)), (bids, asks)
                checked[name] += 1
        assert all(checked[n] >= wanted[n] for n in groups), checked
        assert all(deltas.get(t, 0) > 0 for t in of), deltas  # every market moved


async def test_an_event_closes_whole_and_a_new_one_is_announced_once():
    """Closing one market closes its event: each market gets `close_date_updated`, a new
    event of the same size is `created` market by market (strike fields in
    `additional_metadata`) with one `event_lifecycle`; REST then serves the new event with
    all its markets, and `determined` gives one YES to a mutually exclusive event."""
    async with SimServer(SimConfig(markets=20, rate=50, seed=6)) as sim, \
            httpx.AsyncClient(timeout=10) as client:
        sim.model.lifecycle_rate = 0
        base = f"http://127.0.0.1:{sim.port}/trade-api/v2"
        events = (await _get(client, f"{base}/events", with_nested_markets="true"))["events"]
        old = max((e for e in events if e["mutually_exclusive"]), key=lambda e: len(e["markets"]))
        old_tickers = [m["ticker"] for m in old["markets"]]
        async with websockets.connect(f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2") as ws:
            await ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": {
                "channels": ["market_lifecycle_v2"]}}))
            while json.loads(await ws.recv())["type"] != "subscribed":
                pass
            closed = await _get(client, f"http://127.0.0.1:{sim.port}/_sim/control",
                                action="close", ticker=old_tickers[-1])
            assert closed["events"].count("created") == len(old_tickers)
            seen: list[dict] = []
            while sum(m["msg"].get("event_type") == "created" for m in seen) < len(old_tickers):
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            with_type = [(m["type"], m["msg"].get("event_type")) for m in seen]
            assert [m["msg"]["market_ticker"] for m in seen
                    if m["msg"].get("event_type") == "close_date_updated"] == old_tickers
            created = [m["msg"] for m in seen if m["msg"].get("event_type") == "created"]
            announced = [m["msg"] for m in seen if m["type"] == "event_lifecycle"]
            assert with_type.count(("event_lifecycle", None)) == 1
            new_name = announced[0]["event_ticker"]
            assert announced[0]["series_ticker"] == old["series_ticker"]
            assert announced[0]["collateral_return_type"] == "MECNET"
            assert {c["additional_metadata"]["event_ticker"] for c in created} == {new_name}
            # the same series and size, so the same layout: strike types market by market
            assert [c["additional_metadata"].get("strike_type") for c in created] == \
                [m.get("strike_type") for m in old["markets"]]
            new = await _get(client, f"{base}/events/{new_name}")
            assert [m["ticker"] for m in new["markets"]] == [c["market_ticker"] for c in created]
            assert new["event"]["mutually_exclusive"] is True
            determined = await _get(client, f"http://127.0.0.1:{sim.port}/_sim/control",
                                    action="determine", ticker=old_tickers[0])
            assert determined["events"] == ["determined"] * len(old_tickers)
        results = [m["result"] for m in (await _get(
            client, f"{base}/markets", event_ticker=old["event_ticker"]))["markets"]]
        assert sorted(results) == ["no"] * (len(old_tickers) - 1) + ["yes"]
        assert {e["event_ticker"] for e in (await _get(
            client, f"{base}/events", status="closed"))["events"]} == {old["event_ticker"]}
