"""deltas_page against real QuestDB where the bounded page query (sql.CHANGES_BOUND) and its
fallback both matter: a big snapshot whose levels share one instant (so the rows already
served at the position's instant crowd the bound) and ties between changes. Every page
size, bounded or not, must give exactly the rows of one ordered SELECT, each once."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from ktape.schema.wal import wait_for_wal
from queryd import history

T0_US = 1_796_000_000_000_000  # 2026-12-01T..., a fixed day
TICKER = "KXPAGE-1"
_START = dt.datetime.fromtimestamp(T0_US // 1_000_000 - 1, dt.UTC)
_END = _START + dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def stored(questdb):
    questdb.reset()
    with questdb.connect() as conn:
        # 350 snapshot levels at one instant, then 1,500 deltas, three to each instant.
        conn.execute(f"""
            INSERT INTO book_changes
            SELECT cast({T0_US} AS TIMESTAMP), cast('{TICKER}' AS SYMBOL),
                   CASE WHEN x % 2 = 0 THEN 'yes' ELSE 'no' END, x * 10, 100, 100,
                   cast('snapshot' AS SYMBOL), 1L, 1L, cast({T0_US} AS TIMESTAMP),
                   cast('exchange' AS SYMBOL), cast(NULL AS TIMESTAMP), cast(NULL AS INT),
                   cast(NULL AS INT)
            FROM long_sequence(350)""")
        conn.execute(f"""
            INSERT INTO book_changes
            SELECT cast({T0_US + 1000} + (x / 3) * 1000 AS TIMESTAMP),
                   cast('{TICKER}' AS SYMBOL), 'yes', 100 * (1 + x % 90), x, 1,
                   cast('delta' AS SYMBOL), 1L + x, 1L, cast({T0_US + 1000} AS TIMESTAMP),
                   cast('exchange' AS SYMBOL), cast(NULL AS TIMESTAMP), cast(NULL AS INT),
                   cast(NULL AS INT)
            FROM long_sequence(1500)""")
        wait_for_wal(conn, ["book_changes"])
        expected = [tuple(r) for r in conn.execute(
            "SELECT cast(ts AS LONG), sid, seq, side, price_e4 FROM book_changes "
            "WHERE ticker = %s ORDER BY ts, sid, seq, side, price_e4", (TICKER,)).fetchall()]
    assert len(expected) == 1850
    return questdb.conninfo, expected


async def _all_keys(conninfo: str, limit: int) -> list[tuple]:
    start, end = _START, _END
    keys: list[tuple] = []
    after = None
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        while True:
            page = await history.deltas_page(conn, TICKER, start, end, after, limit,
                                             include_gaps=False, with_causes=False)
            assert len(page.items) <= limit and len(page.keys) == len(page.items)
            keys += [tuple(k) for k in page.keys]
            if page.last_key is None:
                return keys
            after = page.last_key


@pytest.mark.parametrize("limit", [7, 100, 150, 349, 350, 1000, 5000])
async def test_every_page_size_gives_the_ordered_rows_once(stored, limit):
    conninfo, expected = stored
    assert await _all_keys(conninfo, limit) == expected


async def test_the_bounded_query_is_what_runs_for_big_pages(stored, monkeypatch):
    """Pages of 150 mostly take the bounded query; its fallback answers where the rows
    already served at the snapshot's instant crowd the bound (both paths taken)."""
    conninfo, expected = stored
    calls: list[str] = []
    real = psycopg.AsyncConnection.execute

    async def spy(self, query, params=None, **kwargs):
        if query is history.sql.CHANGES_PAGE:  # bounded: its end is the bound, not _END
            calls.append("plain" if params["end"] == _END else "bounded")
        return await real(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", spy)
    assert await _all_keys(conninfo, 150) == expected
    assert "bounded" in calls and "plain" in calls, calls
