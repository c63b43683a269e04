"""The load bench still runs against today's stack (benches are not in `make test`): a
short run with two queryd replicas serves every call of the mix with a 200 and reports
each call type. Speed is not judged here."""

from __future__ import annotations


def test_load_bench_serves_the_whole_mix(run_bench) -> None:
    [run] = run_bench(
        "bench/load/rest_mix.py",
        ["--duration", "3", "--warmup", "3", "--clients", "3", "--keys", "4", "--markets", "10",
         "--replicas", "2"],
        "load_rest_mix", timeout=280)["runs"]
    assert run["queryd_replicas"] == 2 and run["calls"] > 0
    assert run["statuses"] == {"200": run["calls"]}, run["first_errors"]
    assert all(run["by_call"][kind]["n"] > 0 for kind in ("book_at", "deltas_page",
                                                           "candles_day", "markets"))
    assert {"queryd-0", "queryd-1"} <= set(run["cpu_secs_during_load"])
