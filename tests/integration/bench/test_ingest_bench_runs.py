"""The ingest bench still runs against today's ingestd (a refactor broke it unnoticed once:
benches are not in `make test`, so this small run is). Speed is not judged here."""

from __future__ import annotations


def test_pipeline_bench_runs_every_stage(run_bench) -> None:
    result = run_bench(
        "bench/ingest/pipeline.py",
        ["--messages", "4000", "--markets", "20"],
        "ingest_pipeline", timeout=240)
    for key in ("raw_ilp_rows_per_sec", "handle_msgs_per_sec", "end_to_end_msgs_per_sec",
                "over_websocket_msgs_per_sec"):
        assert result[key] > 0, key
