"""The analytics bench still runs against today's queryd and Envoy (benches are not in
`make test`, so this small run is). Speed is not judged here; that every measure was
taken, over gRPC and over REST, is."""

from __future__ import annotations


def test_analytics_bench_measures_grpc_and_rest(run_bench) -> None:
    result = run_bench(
        "bench/query/analytics.py",
        ["--changes", "40000", "--samples", "5", "--stretch-s", "120"],
        "query_analytics", timeout=300)
    for key in ("get_orderbook", "get_event_orderbook", "get_orderbook_depth10",
                "get_event_orderbook_depth10"):
        assert result[key]["n"] == 5
    assert result["rest"]["get_orderbook"]["n"] == result["rest"]["get_event_orderbook"]["n"] == 5
    assert result["snapshots"]["boundaries"] == 120
