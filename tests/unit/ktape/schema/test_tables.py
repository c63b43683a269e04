"""Migration 6's ticker indexes and the queries that must not go through them.

With an index on `ticker`, QuestDB 9.3.4 answered `LATEST ON ... WHERE ticker = <bound
value>` with another market's row on a reused connection (docs/performance.md, "Ticker
indexes adopted"); so no query of a service may take the latest row of an indexed table
for a bound ticker. A new query that does fails here, before it serves a wrong answer.
"""

from __future__ import annotations

import importlib
import re

import pytest

from ktape.schema.tables import INDEXED_TICKERS, V0006_TICKER_INDEXES

MODULES = ("queryd.sql", "queryd.analytics", "queryd.audit", "queryd.data_status",
           "datasetd.build", "datasetd.facts", "ingestd.app", "ingestd.metadata.stored")
FROM = re.compile(r"\bFROM\s+(\w+)", re.I)


def _queries() -> list[tuple[str, str]]:
    out = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            texts = value.values() if isinstance(value, dict) else [value]
            out += [(f"{name}.{attr}", t) for t in texts if isinstance(t, str) and "SELECT" in t]
    return out


def test_the_migration_indexes_exactly_the_listed_tables() -> None:
    expected = [f"ALTER TABLE {t} ALTER COLUMN ticker ADD INDEX" for t in INDEXED_TICKERS]
    assert expected == V0006_TICKER_INDEXES
    assert "tickers" not in INDEXED_TICKERS and "book_checkpoints" not in INDEXED_TICKERS


@pytest.mark.parametrize("where, text", _queries())
def test_no_latest_on_of_an_indexed_table_for_a_bound_ticker(where: str, text: str) -> None:
    if "LATEST ON" not in text.upper():
        return
    bound = re.search(r"ticker\s*(=|IN)\s*(%\(|\{)", text, re.I) is not None
    assert not (bound and set(FROM.findall(text)) & set(INDEXED_TICKERS)), where


def test_the_check_sees_such_a_query() -> None:
    """The check above is not vacuous: it finds the LATEST ON queries there are."""
    assert sum("LATEST ON" in text for _, text in _queries()) >= 5
