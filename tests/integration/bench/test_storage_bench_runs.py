"""The storage bench still runs against today's job and queryd (benches are not in
`make test`, so this small run is). Speed is not judged here; the byte counts and the
late-row outcome are facts the bench reports, so they are checked."""

from __future__ import annotations


def test_storage_bench_measures_both_formats_and_late_rows(run_bench) -> None:
    result = run_bench(
        "bench/storage/bytes_per_change.py",
        ["--changes", "20000", "--markets", "20", "--samples", "10", "--sim-secs", "0",
         "--codecs", "LZ4_RAW"],
        "storage_bytes_per_change", timeout=300)
    run = result["by_codec"]["LZ4_RAW"]
    for table in ("book_changes", "book_checkpoints"):
        assert run["native"][table]["rows"] == run["parquet"][table]["rows"] > 0
        assert not run["native"][table]["parquet"] and run["parquet"][table]["parquet"]
        assert run["parquet"][table]["disk_size"] < run["native"][table]["disk_size"]
    late = run["late_rows_into_parquet"]
    assert late["late_row_count"] == late["resent_row_copies"] == 1
    assert late["rows_after"] == late["rows_before"] + 1 and late["still_parquet"]
    assert run["orderbook_native"]["n"] == run["orderbook_parquet"]["n"] == 10
