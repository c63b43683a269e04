"""Queries over a list of tickers at once (`... WHERE ticker IN ({tickers})`).

Why one helper: queryd's status and analytics reads and the datasets job all group many
markets into one query; psycopg quotes each ticker as a literal, so a ticker never
becomes SQL text however it is spelled.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql


def with_tickers(query: str, tickers: Iterable[str]) -> sql.Composed:
    """`query` with its `{tickers}` placeholder filled by the quoted tickers."""
    return sql.SQL(query).format(tickers=sql.SQL(", ").join(sql.Literal(t) for t in tickers))
