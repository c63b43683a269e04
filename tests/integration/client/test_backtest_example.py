"""examples/backtest.py, run as a user runs it (the clean client venv, a recorded stretch of
the simulator behind the live edge): its output must add up exactly, in Decimals, and its
replay must have seen every stored change and ended on the stored book."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from decimal import Decimal

import httpx

from ktape.runtime.pins import REPO_ROOT
from ktape.schema.wal import wait_for_wal
from ktape.sim.server import SimConfig
from tests.fixtures.recording import recorded_simulator

TRADE = re.compile(r"^(\S+)  (BUY|SELL) +(\d+\.\d\d) @ (0\.\d{4})  \(spread (-?\d\.\d{4})\)$")


async def test_the_backtest_example_adds_up(client_python, client_env, edge, questdb, tmp_path):
    start = dt.datetime.now(dt.UTC)
    async with recorded_simulator(questdb, tmp_path, SimConfig(markets=3, rate=300, seed=23)
                                  ) as (recorder, sim):
        sim.model.lifecycle_rate = 0
        await asyncio.sleep(6)
        ticker = max(recorder.feed.books, key=lambda t: recorder.feed.books[t].last_seq)
    end = dt.datetime.now(dt.UTC)
    with questdb.connect() as conn:
        wait_for_wal(conn)
    proc = await asyncio.create_subprocess_exec(
        str(client_python), str(REPO_ROOT / "examples" / "backtest.py"), ticker,
        "--start", start.isoformat(), "--end", end.isoformat(), "--target", edge.grpc_addr,
        "--enter-below", "0.03", "--exit-above", "0.05", "--size", "25",
        cwd="/", env=client_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-3000:]
    lines = out.decode().splitlines()
    print("backtest.py", ticker, start.isoformat(), end.isoformat(), out.decode(), sep="\n")
    trades = [TRADE.match(line) for line in lines if " BUY " in line or " SELL " in line]
    assert trades and all(trades), lines
    summary = {line.split(" P&L")[0]: line for line in lines if " P&L " in line}
    position, cash = Decimal(0), Decimal(0)
    for i, match in enumerate(trades):
        side, quantity, price = match[2], Decimal(match[3]), Decimal(match[4])
        # it buys only when flat and sells only what it holds (an exit may take several
        # sells when the best bid is smaller than the position)
        assert position == 0 if side == "BUY" else position > 0, (i, side, position)
        position += quantity if side == "BUY" else -quantity
        cash += quantity * price if side == "SELL" else -quantity * price
    assert re.search(rf"position {position} YES", out.decode())
    mid = Decimal(summary["unrealized"].rsplit("mid ", 1)[1].rstrip(")"))
    total = Decimal(summary["total"].split()[-1])
    realized = Decimal(summary["realized"].split()[-1])
    unrealized = Decimal(summary["unrealized"].split()[2])
    assert total == realized + unrealized == cash + position * mid  # exact, to the last digit

    # it saw every stored change and ended on the stored book
    api = httpx.AsyncClient(base_url=edge.http_url, headers=edge.auth, timeout=30)
    stored, token = 0, ""
    while True:
        page = (await api.get(f"/v1/markets/{ticker}/deltas", params={
            "start_time": start.isoformat(), "end_time": end.isoformat(), "page_size": 1000,
            "page_token": token})).json()
        stored += len(page["deltas"])
        token = page["next_page_token"]
        if not token:
            break
    assert f"changes replayed {stored} " in out.decode()
    book = (await api.get(f"/v1/markets/{ticker}/orderbook", params={
        "at": (end - dt.timedelta(microseconds=1)).isoformat()})).json()
    await api.aclose()
    ask = Decimal(1) - Decimal(book["no"][0]["price"])
    assert mid == (ask + Decimal(book["yes"][0]["price"])) / 2
