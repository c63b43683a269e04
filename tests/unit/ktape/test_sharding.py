"""Which shard records a market and where each replica and shard listens (ktape/sharding.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from ktape.config import HostPort, MarketFilter, parse_markets
from ktape.runtime.pins import REPO_ROOT
from ktape.sharding import (
    ShardFilter,
    connection_of,
    instance_addr,
    instance_addrs,
    instance_name,
    shard_of,
)

TICKERS = [f"KXSIM{e}-26DEC01-T{strike}" for e in range(40) for strike in range(25)]


def test_a_market_has_the_same_shard_in_every_process():
    """Not Python's salted hash(): another interpreter with another hash seed agrees."""
    script = ("import sys; from ktape.sharding import shard_of; "
              "print([shard_of(t, 3) for t in sys.argv[1:]])")
    sample = TICKERS[:50]
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script, *sample], capture_output=True, text=True, check=True,
            cwd=REPO_ROOT, env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)})
        assert out.stdout.strip() == str([shard_of(t, 3) for t in sample])


def test_shards_split_the_markets_evenly_and_one_shard_takes_all():
    counts = Counter(shard_of(t, 4) for t in TICKERS)
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > len(TICKERS) / 4 * 0.8
    assert {shard_of(t, 1) for t in TICKERS} == {0}


def test_connections_split_each_shard_independently():
    """With 2 shards and 2 connections, shard 0's markets use both connections (the same
    remainder for both splits would put all of them on connection 0)."""
    mine = [t for t in TICKERS if shard_of(t, 2) == 0]
    counts = Counter(connection_of(t, 2, 2) for t in mine)
    assert set(counts) == {0, 1} and min(counts.values()) > len(mine) / 2 * 0.8
    # One shard: exactly the split ingestd made before shards existed.
    assert [connection_of(t, 1, 3) for t in TICKERS] == [
        shard_of(t, 3) for t in TICKERS]


@pytest.mark.parametrize("markets", ["all", "KXSIM1-26DEC01-T3,KXSIM2-26DEC01-T4,series:KXSIM7"])
def test_every_matched_market_belongs_to_exactly_one_shard(markets):
    base = parse_markets("KTAPE_MARKETS", markets)
    filters = [ShardFilter.of(base, i, 3) for i in range(3)]
    for ticker in TICKERS:
        series = ticker.split("-")[0]
        owners = [i for i, f in enumerate(filters) if f.matches(ticker, series)]
        assert len(owners) == int(base.matches(ticker, series))
        if owners:
            assert owners == [shard_of(ticker, 3)]
        assert sum(f.in_shard(ticker) for f in filters) == 1
    assert all(f.all == base.all for f in filters)


def test_one_shard_keeps_the_filter_as_it_was():
    base = MarketFilter(all=True)
    assert ShardFilter.of(base, 0, 1) is base
    assert base.in_shard("ANY")


def test_each_instance_listens_a_stride_above_the_base():
    base = HostPort("127.0.0.1", 50051)
    assert instance_addrs(base, 3) == [HostPort("127.0.0.1", 50051),
                                       HostPort("127.0.0.1", 50151),
                                       HostPort("127.0.0.1", 50251)]
    with pytest.raises(ValueError, match="past the last TCP port"):
        instance_addr(HostPort("127.0.0.1", 65500), 1)


def test_one_instance_keeps_its_plain_name():
    assert instance_name("queryd", 0, 1) == "queryd"
    assert [instance_name("ingestd", i, 2) for i in range(2)] == ["ingestd-0", "ingestd-1"]
