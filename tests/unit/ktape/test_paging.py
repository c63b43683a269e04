"""Page tokens: opaque, tamper-evident, bound to the query."""

import secrets

import pytest

from ktape.paging import PageTokenError, PageTokens, page_size, query_digest


def test_round_trip_and_binding():
    tokens = PageTokens(secrets.token_bytes(32))
    digest = query_digest("ListTrades", {"ticker": "KX", "start": 1, "end": 2})
    token = tokens.seal(digest, [1_700_000_000_000_000, 3, 17])
    assert "1700000000000000" not in token  # opaque
    assert tokens.open(token, digest) == [1_700_000_000_000_000, 3, 17]
    other = query_digest("ListTrades", {"ticker": "KX", "start": 1, "end": 3})
    with pytest.raises(PageTokenError, match="different query"):
        tokens.open(token, other)


def test_forged_or_foreign_tokens_are_rejected():
    a, b = PageTokens(secrets.token_bytes(32)), PageTokens(secrets.token_bytes(32))
    digest = query_digest("m", {})
    token = a.seal(digest, [1])
    for bad in (b.seal(digest, [1]), token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1],
                "", "not-a-token", "!!!!"):
        with pytest.raises(PageTokenError):
            a.open(bad, digest)


def test_page_size_rules():
    assert page_size(0) == 100
    assert page_size(5000) == 1000
    assert page_size(7) == 7
    with pytest.raises(ValueError):
        page_size(-1)
