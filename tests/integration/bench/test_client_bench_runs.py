"""The client bench still runs against today's client and queryd (benches are not in `make
test`, and its stub generation and synthetic rows break silently when either changes).
Speed is not judged here; that both sides saw every row is."""

from __future__ import annotations


def test_client_bench_runs_both_parts(run_bench) -> None:
    result = run_bench(
        "bench/client/client_overhead.py",
        ["--changes", "3000", "--stream-changes", "2000", "--rounds", "1"],
        "client_overhead", timeout=280)
    for part, rows in (("deltas", 3000), ("stream", 2000)):
        runs = result["runs"][part]
        assert runs["raw"][0]["rows"] == runs["client"][0]["rows"] == rows, part
        assert result[part]["client_rows_per_sec"] > 0
