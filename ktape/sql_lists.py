"""Queries over a list of tickers at once (`... WHERE ticker IN ({tickers})`).

Why one helper: queryd's status and analytics reads and the datasets job all group many
markets into one query; psycopg quotes each ticker as a literal, so a ticker never
becomes SQL text however it is spelled.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql


def ticker_list(tickers: Iterable[str]) -> sql.Composed:
    """The quoted tickers, comma-separated, for an `IN (...)`."""
    return sql.SQL(", ").join(sql.Literal(t) for t in tickers)


def bound_tickers(query: str, tickers: Iterable[str]) -> tuple[sql.Composed, dict[str, str]]:
    """`query` with its `{tickers}` placeholder filled by one bind parameter per ticker,
    and the parameters: the text is then the same for every list of as many tickers, so
    QuestDB compiles it once, not once per event (~1 ms a query). Not for `LATEST ON` of
    a table with a ticker index (tests/unit/ktape/schema/test_tables.py)."""
    params = {f"tk{i}": ticker for i, ticker in enumerate(tickers)}
    return sql.SQL(query).format(
        tickers=sql.SQL(", ").join(sql.Placeholder(name) for name in params)), params


def with_tickers(query: str, tickers: Iterable[str]) -> sql.Composed:
    """`query` with its `{tickers}` placeholder filled by the quoted tickers."""
    return sql.SQL(query).format(tickers=ticker_list(tickers))


def any_of(condition: str, rows: list[tuple]) -> tuple[sql.Composed, dict[str, object]]:
    """`condition` (with `{}` per value) OR-ed once per row, every value a bind parameter,
    and the parameters. Why not literals: the text is then the same for every call with
    as many rows, so QuestDB compiles it once; a literal time made each call's text new,
    and compiling cost as much as running."""
    params: dict[str, object] = {}
    parts = []
    for i, row in enumerate(rows):
        names = [f"any{i}_{j}" for j in range(len(row))]
        params.update(zip(names, row, strict=True))
        parts.append(sql.SQL(condition).format(*(sql.Placeholder(n) for n in names)))
    return sql.SQL(" OR ").join(parts), params
