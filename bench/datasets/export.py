"""How fast does the build job write a day of `book_changes`, beside QuestDB's own export?

Intent (issue 16, item 6): export rows/s of a 10M-change day as our Parquet and CSV.gz
day files, measured in one run beside QuestDB's own export of the same rows (`/exp` as
CSV and as Parquet, the very SELECTs the builder sends), with the builder's peak memory
and the bytes per change of every form (ours, QuestDB's exports, QuestDB's own storage
of the day). Target: our rate ≥ 0.9 of QuestDB's own. Download throughput through Envoy
is a separate benchmark.

Why a child process per build: peak RSS (VmHWM) is per process, so each build runs
alone in a fresh interpreter and reports its own high-water mark; numbers of different
builds never mix, and the parent's memory (the generator, the /exp downloads) is not in
them. The child times only `DayBuilder.build`, not interpreter start-up.

Why round-robin repeats: this 2-core machine is shared and its load moves; each repeat
runs every variant once, in the same order, so a noisy minute hurts all variants alike.
Saves bench/results/datasets_export.json.

Run: .venv/bin/python bench/datasets/export.py [--changes 10000000] [--markets 100]
     [--series 5] [--repeats 2] [--baseline GIT_REF] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow.parquet as pq

if str(Path(__file__).resolve().parents[2]) not in sys.path:  # keeps a --baseline first
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import cpu_secs, save
from bench.query.synthetic import LEVELS, bench_questdb, conninfo_of
from datasetd.build import CHANGES_EXPORT
from datasetd.source import tickers_literal, ts_literal
from ktape.conditions import DAY_US, day_start_us
from ktape.schema.wal import wait_for_wal

DAY = dt.date(2026, 11, 2)
DAY_START_US = day_start_us(DAY)
DAY_END_US = DAY_START_US + DAY_US
SNAPSHOT_LEVELS = 20  # per side, in each market's snapshot at the start of the day
CHECKPOINT_EVERY = 200  # changes per market between checkpoints (ingestd's default)
VARIANTS = (("parquet",), ("csv.gz",), ("parquet", "csv.gz"))
EXP_FORMATS = ("csv", "parquet")


# -- the day ---------------------------------------------------------------------------

def ticker_sql(index: str, markets: int, series: int) -> str:
    """`KXBENCH<s>-M<m>` for market m = `index` % markets, in series s = m % series."""
    return (f"concat('KXBENCH', ({index}) % {markets} % {series}, '-M', "
            f"({index}) % {markets})")


def generate_day(conn: psycopg.Connection, *, changes: int, markets: int, series: int) -> dict:
    """One UTC day of `changes` book changes, generated inside QuestDB.

    Per market: a checkpoint the day before (so the builder starts the day from a book, as
    on any day of a running recorder), a snapshot of SNAPSHOT_LEVELS levels per side at the
    start of the day, then deltas spread evenly over the day with markets interleaved; a
    checkpoint about every CHECKPOINT_EVERY of a market's changes; and a `markets` row
    naming its series. The values are random, not a consistent book: the build of
    `book_changes` copies rows, it does not replay them.
    """
    snapshot_rows = markets * 2 * SNAPSHOT_LEVELS
    deltas = changes - snapshot_rows
    if deltas < markets:
        raise ValueError(f"--changes must exceed the snapshots ({snapshot_rows} rows)")
    first_delta_us = DAY_START_US + 1_000_000
    step_us = (DAY_END_US - 1_000_000 - first_delta_us) // deltas
    conn.execute(f"""
        INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, delta_e2, kind,
                                  seq, sid, recv_ts, ts_source)
        SELECT cast({DAY_START_US + 1000} + (x - 1) % {markets} AS TIMESTAMP) AS ts,
               cast({ticker_sql('x - 1', markets, series)} AS SYMBOL) AS ticker,
               cast(CASE WHEN (x - 1) / {markets} < {SNAPSHOT_LEVELS} THEN 'yes' ELSE 'no' END
                    AS SYMBOL) AS side,
               100 * (10 + 2 * (((x - 1) / {markets}) % {SNAPSHOT_LEVELS})) AS price_e4,
               rnd_long(1, 500000, 0) AS qty_after_e2,
               rnd_long(1, 500000, 0) AS delta_e2,
               cast('snapshot' AS SYMBOL) AS kind,
               1L AS seq, 1L AS sid,
               cast({DAY_START_US + 3000} + (x - 1) % {markets} AS TIMESTAMP) AS recv_ts,
               cast('receive' AS SYMBOL) AS ts_source
        FROM long_sequence({snapshot_rows})""")
    conn.execute(f"""
        INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, delta_e2, kind,
                                  seq, sid, recv_ts, ts_source)
        SELECT ts,
               cast({ticker_sql('x - 1', markets, series)} AS SYMBOL) AS ticker,
               rnd_symbol('yes', 'no') AS side,
               100 * (1 + rnd_long(1, 98, 0)) AS price_e4,
               rnd_long(0, 500000, 0) AS qty_after_e2,
               rnd_long(-5000, 5000, 0) AS delta_e2,
               cast('delta' AS SYMBOL) AS kind,
               2 + (x - 1) / {markets} AS seq,
               1L AS sid,
               dateadd('u', rnd_int(200, 20000, 0), ts) AS recv_ts,
               cast('exchange' AS SYMBOL) AS ts_source
        FROM (SELECT x, timestamp_sequence({first_delta_us}, {step_us}) AS ts
              FROM long_sequence({deltas}))""")
    periodic = max(markets, deltas // CHECKPOINT_EVERY)
    checkpoint_step = (DAY_END_US - DAY_START_US - 2_000_000) // periodic
    for first_us, count, step in ((DAY_START_US - 3_600_000_000, markets, 1),
                                  (DAY_START_US + 2_000_000, periodic, checkpoint_step)):
        conn.execute(f"""
            INSERT INTO book_checkpoints
            SELECT timestamp_sequence({first_us}, {step}) AS ts,
                   cast({ticker_sql('x - 1', markets, series)} AS SYMBOL) AS ticker,
                   cast('periodic' AS SYMBOL) AS reason,
                   x AS seq, 1L AS sid,
                   timestamp_sequence({first_us}, {step}) AS recv_ts,
                   cast('exchange' AS SYMBOL) AS ts_source,
                   '{LEVELS}' AS yes_levels, '{LEVELS}' AS no_levels,
                   cast({DAY_START_US - 7 * DAY_US} AS TIMESTAMP) AS continuous_since
            FROM long_sequence({count})""")
    conn.execute(f"""
        INSERT INTO markets (ts, ticker, event_ticker, series_ticker, status, market_type,
                             title, open_time, close_time, source)
        SELECT cast({DAY_START_US - DAY_US} + x AS TIMESTAMP) AS ts,
               cast({ticker_sql('x - 1', markets, series)} AS SYMBOL) AS ticker,
               cast(concat('KXBENCH', (x - 1) % {markets} % {series}, '-E') AS SYMBOL),
               cast(concat('KXBENCH', (x - 1) % {markets} % {series}) AS SYMBOL),
               cast('active' AS SYMBOL), cast('binary' AS SYMBOL), 'bench market',
               cast({DAY_START_US - 7 * DAY_US} AS TIMESTAMP),
               cast({DAY_END_US + 7 * DAY_US} AS TIMESTAMP),
               cast('rest' AS SYMBOL)
        FROM long_sequence({markets})""")
    # One change the next day, outside the day built: QuestDB keeps its newest partition
    # open with its column files preallocated; the day is measured closed, as it is once
    # the recorder has moved on to the next day.
    conn.execute(f"""
        INSERT INTO book_changes (ts, ticker, side, price_e4, qty_after_e2, delta_e2, kind,
                                  seq, sid, recv_ts, ts_source)
        VALUES (cast({DAY_END_US + 3_600_000_000} AS TIMESTAMP), 'KXBENCH0-M0', 'yes', 100,
                100, 100, 'delta', {deltas + 2}, 1, cast({DAY_END_US + 3_600_000_000} AS
                TIMESTAMP), 'exchange')""")
    wait_for_wal(conn, ["book_changes", "book_checkpoints", "markets"], timeout_secs=900)
    (stored,) = conn.execute(
        "SELECT count() FROM book_changes WHERE ts >= %(a)s AND ts < %(b)s",
        {"a": dt.datetime.combine(DAY, dt.time(), dt.UTC),
         "b": dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(), dt.UTC)}).fetchone()
    if stored != changes:
        raise RuntimeError(f"generated {stored} book changes on {DAY}, wanted {changes}")
    return {"changes": int(stored), "markets": markets, "series": series,
            "snapshot_rows": snapshot_rows, "deltas": deltas,
            "checkpoints": markets + periodic}


def series_queries(conn: psycopg.Connection) -> dict[str, str]:
    """The builder's export SELECT for each series of the day (CHANGES_EXPORT)."""
    found: dict[str, list[str]] = {}
    for ticker, series in conn.execute(
            "SELECT ticker, series_ticker FROM markets LATEST ON ts PARTITION BY ticker"
            ).fetchall():
        found.setdefault(str(series), []).append(str(ticker))
    return {s: CHANGES_EXPORT.format(tickers=tickers_literal(sorted(t)),
                                     a=ts_literal(DAY_START_US), b=ts_literal(DAY_END_US))
            for s, t in sorted(found.items())}


def questdb_storage(conn: psycopg.Connection, root: Path) -> dict[str, Any]:
    """QuestDB's own bytes for the day of `book_changes`: its partition directory on disk
    (du) and what `table_partitions` says."""
    rows = conn.execute(
        "SELECT name, numRows, diskSize FROM table_partitions('book_changes')").fetchall()
    partitions = [{"name": str(n), "rows": int(r), "disk_size": int(s)} for n, r, s in rows]
    dirs = sorted((root / "db").glob(f"book_changes~*/{DAY.isoformat()}*"))
    du = sum(p.stat().st_size for d in dirs for p in d.rglob("*") if p.is_file())
    blocks = sum(p.stat().st_blocks * 512 for d in dirs for p in d.rglob("*") if p.is_file())
    return {"partitions": partitions, "dirs": [d.name for d in dirs],
            "apparent_bytes": du, "allocated_bytes": blocks}


# -- QuestDB's own export --------------------------------------------------------------

def exp_once(http: str, queries: dict[str, str], fmt: str, dest: Path,
             qdb_pid: int) -> dict[str, Any]:
    """Every series' SELECT through `/exp` in `fmt`, one after another, each streamed to
    a file as the builder's source does: wall time, bytes, and both processes' CPU."""
    params_extra = {"fmt": "parquet"} if fmt == "parquet" else {}
    total_bytes = 0
    rows = 0
    began, cpu0, qcpu0 = time.perf_counter(), cpu_secs(), cpu_secs(qdb_pid)
    for i, query in enumerate(queries.values()):
        path = dest / f"exp-{i}.{fmt}"
        with httpx.stream("GET", f"http://{http}/exp", params={"query": query, **params_extra},
                          timeout=httpx.Timeout(30.0, read=600.0)) as resp:
            resp.raise_for_status()
            with open(path, "wb") as out:
                for chunk in resp.iter_bytes(1 << 20):
                    out.write(chunk)
        total_bytes += path.stat().st_size
    secs = time.perf_counter() - began
    cpu, qcpu = cpu_secs() - cpu0, cpu_secs(qdb_pid) - qcpu0
    for i in range(len(queries)):
        path = dest / f"exp-{i}.{fmt}"
        if fmt == "parquet":
            rows += pq.ParquetFile(path).metadata.num_rows
        else:
            with open(path, "rb") as src:
                rows += sum(chunk.count(b"\n") for chunk in iter(lambda: src.read(1 << 24), b""))
                rows -= 1  # the header line
        path.unlink()
    return {"secs": round(secs, 3), "rows": rows, "bytes": total_bytes,
            "client_cpu_secs": round(cpu, 2), "questdb_cpu_secs": round(qcpu, 2)}


# -- our build, in a child process -----------------------------------------------------

def child_build(args: argparse.Namespace) -> int:
    """The build of one day in this (fresh) process; prints one JSON line for the parent."""
    from datasetd.build import DayBuilder
    from datasetd.source import QuestSource
    from ktape.config import HostPort
    from ktape.datasets.storage import LocalStorage

    host, port = args.http.rsplit(":", 1)
    storage = LocalStorage(Path(args.store))
    source = QuestSource(HostPort(host, int(port)), args.conninfo, storage.scratch_dir())
    builder = DayBuilder(source, storage, formats=tuple(args.formats.split(",")),
                         data_types=("book_changes",), clock=lambda: DAY_END_US + 3_600_000_000)
    profile = cProfile.Profile() if args.profile_out else None
    began, cpu0 = time.perf_counter(), cpu_secs()
    if profile is not None:
        profile.enable()
    report = builder.build(DAY)
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile_out)
    secs, cpu = time.perf_counter() - began, cpu_secs() - cpu0
    source.close()
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(line.split()[1] for line in status.splitlines()
                      if line.startswith("VmHWM:")))
    sizes: dict[str, int] = {}
    for name in storage.list("book_changes"):
        kind = "series" if "/series/" in name else "market"
        fmt = "parquet" if name.endswith(".parquet") else "csv.gz"
        key = f"{fmt}_{kind}"
        sizes[key] = sizes.get(key, 0) + (storage.stat(name).size if storage.stat(name) else 0)
    print(json.dumps({"secs": secs, "cpu_secs": cpu, "peak_rss_mb": hwm_kb / 1024,
                      "files": report.files, "rows": report.rows, "bytes": report.bytes,
                      "series": len(report.series_built), "sizes": sizes}))
    return 0


def baseline_code(ref: str, dest: Path) -> Path:
    """`datasetd/` as of git `ref`, extracted under `dest`: put first on the child's
    path, it builds with that commit's code and today's everything else (a before/after
    of a datasetd change in one run, on one QuestDB)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "datasetd"], capture_output=True,
                             check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def build_once(formats: tuple[str, ...], http: str, conninfo: str, qdb_pid: int,
               work: Path, profile_out: Path | None = None,
               code: Path | None = None) -> dict[str, Any]:
    """One build in a child process, into a fresh store that is removed afterwards
    (with the datasetd of `code` when given, see baseline_code)."""
    store = Path(tempfile.mkdtemp(prefix="store-", dir=work))
    command = [sys.executable, __file__, "--child-build", "--http", http, "--conninfo",
               conninfo, "--store", str(store), "--formats", ",".join(formats)]
    if profile_out is not None:
        command += ["--profile-out", str(profile_out)]
    path = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": f"{code}:{path}" if code else path,
           "KTAPE_LOG_LEVEL": "WARNING"}
    try:
        qcpu0 = cpu_secs(qdb_pid)
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        qcpu = cpu_secs(qdb_pid) - qcpu0
        if done.returncode != 0:
            raise RuntimeError(f"build {formats} failed:\n{done.stderr[-4000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(store, ignore_errors=True)
    result["questdb_cpu_secs"] = round(qcpu, 2)
    return result


# -- the run ---------------------------------------------------------------------------

def summarise(runs: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    """Median and every run of rows/s, wall time, peak memory."""
    rates = [rows / r["secs"] for r in runs]
    out: dict[str, Any] = {
        "rows_per_sec_median": round(statistics.median(rates)),
        "rows_per_sec_runs": [round(r) for r in rates],
        "secs_runs": [round(r["secs"], 2) for r in runs],
    }
    if "peak_rss_mb" in runs[0]:
        out["peak_rss_mb_runs"] = [round(r["peak_rss_mb"], 1) for r in runs]
        out["peak_rss_mb_max"] = round(max(r["peak_rss_mb"] for r in runs), 1)
        out["cpu_secs_runs"] = [round(r["cpu_secs"], 2) for r in runs]
    else:
        out["client_cpu_secs_runs"] = [r["client_cpu_secs"] for r in runs]
    out["questdb_cpu_secs_runs"] = [r["questdb_cpu_secs"] for r in runs]
    # CPU per row moves much less with this shared machine's load than wall time does
    ours = [r.get("cpu_secs", r.get("client_cpu_secs", 0.0)) for r in runs]
    out["cpu_us_per_row_median"] = {
        "client": round(statistics.median(ours) / rows * 1e6, 3),
        "questdb": round(statistics.median(r["questdb_cpu_secs"] for r in runs) / rows * 1e6, 3),
        "total": round(statistics.median(
            c + r["questdb_cpu_secs"] for c, r in zip(ours, runs, strict=True)) / rows * 1e6, 3)}
    return out


def top_functions(profile: Path, limit: int = 15) -> list[str]:
    """The heaviest functions of a cProfile dump by own time (the build's main thread
    only: cProfile does not follow the export and series-file threads)."""
    text = io.StringIO()
    stats = pstats.Stats(str(profile), stream=text)
    stats.sort_stats("tottime").print_stats(limit)
    lines = text.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "function calls" in line)
    return [line.rstrip() for line in lines[start:] if line.strip()
            and not line.lstrip().startswith(("Ordered by", "List reduced"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=10_000_000)
    parser.add_argument("--markets", type=int, default=100)
    parser.add_argument("--series", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds of every variant (2: ~10 min at 10M on an idle machine)")
    parser.add_argument("--variants", default="parquet;csv.gz;parquet,csv.gz",
                        help="builds to measure: formats, ';' between builds")
    parser.add_argument("--baseline", metavar="GIT_REF",
                        help="also build each variant with datasetd/ as of GIT_REF "
                             "(a before/after in the same run)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one build of each variant (cProfile, printed)")
    parser.add_argument("--no-save", action="store_true")
    # The child's side (internal): one build, one JSON line.
    parser.add_argument("--child-build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--http", help=argparse.SUPPRESS)
    parser.add_argument("--conninfo", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--formats", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_build:
        return child_build(args)
    variants = [tuple(v.split(",")) for v in args.variants.split(";")]
    load_start = [round(x, 2) for x in os.getloadavg()]  # other sessions share this machine
    with bench_questdb("ktape-bench-ds-", []) as (qdb, conn, root):
        assert qdb.proc is not None
        began = time.monotonic()
        info = generate_day(conn, changes=args.changes, markets=args.markets,
                            series=args.series)
        print(f"generated {info} in {time.monotonic() - began:.1f}s", flush=True)
        http, conninfo, pid = str(qdb.http), conninfo_of(qdb), qdb.proc.pid
        queries = series_queries(conn)
        storage = questdb_storage(conn, root)
        work = root / "work"
        work.mkdir()
        exp: dict[str, list[dict]] = {f: [] for f in EXP_FORMATS}
        codes: dict[str, Path | None] = {"": None}
        if args.baseline:
            codes[f"{args.baseline}:"] = baseline_code(args.baseline, root / "baseline")
        builds: dict[str, list[dict]] = {p + "+".join(v): [] for v in variants for p in codes}
        for repeat in range(args.repeats):
            for fmt in EXP_FORMATS:
                run = exp_once(http, queries, fmt, work, pid)
                if run["rows"] != info["changes"]:
                    raise RuntimeError(f"/exp {fmt} gave {run['rows']} rows")
                exp[fmt].append(run)
                print(f"[{repeat}] /exp {fmt}: {run}", flush=True)
            for formats in variants:
                for prefix, code in codes.items():
                    run = build_once(formats, http, conninfo, pid, work, code=code)
                    builds[prefix + "+".join(formats)].append(run)
                    print(f"[{repeat}] build {prefix}{formats}: {run}", flush=True)
        profiles: dict[str, list[str]] = {}
        if args.profile:
            for formats in variants:
                out = work / f"profile-{'+'.join(formats)}.pstats"
                build_once(formats, http, conninfo, pid, work, profile_out=out)
                profiles["+".join(formats)] = top_functions(out)
                print(f"== profile of build {formats}", *profiles["+".join(formats)],
                      sep="\n", flush=True)
    rows = info["changes"]
    result: dict[str, Any] = {"day": DAY.isoformat(), "generated": info, "repeats": args.repeats,
                              "exp": {f: {**summarise(r, rows), "runs": r}
                                      for f, r in exp.items()},
                              "build": {k: {**summarise(r, rows), "runs": r}
                                        for k, r in builds.items()}}
    exp_rate = {f: result["exp"][f]["rows_per_sec_median"] for f in EXP_FORMATS}
    result["ratio_vs_exp"] = {k: {f"vs_exp_{f}": round(v["rows_per_sec_median"] / exp_rate[f], 3)
                                  for f in EXP_FORMATS}
                              for k, v in result["build"].items()}
    # The same ratio in CPU: QuestDB's export CPU per row over ours plus QuestDB's (the
    # rate ratio a machine whose cores are the limit would see, whatever else runs here)
    exp_cpu = {f: result["exp"][f]["cpu_us_per_row_median"]["total"] for f in EXP_FORMATS}
    result["cpu_ratio_vs_exp"] = {
        k: {f"vs_exp_{f}": round(exp_cpu[f] / v["cpu_us_per_row_median"]["total"], 3)
            for f in EXP_FORMATS} for k, v in result["build"].items()}
    result["load_average"] = {"start": load_start,
                              "end": [round(x, 2) for x in os.getloadavg()]}
    per_change: dict[str, float] = {}
    for key, runs in builds.items():
        prefix = key.rpartition(":")[0]
        for name, size in runs[-1]["sizes"].items():
            per_change[f"{prefix}:ours_{name}" if prefix else f"ours_{name}"] = round(
                size / rows, 2)
    per_change["questdb_partition_du"] = round(storage["apparent_bytes"] / rows, 2)
    per_change["questdb_partition_allocated"] = round(storage["allocated_bytes"] / rows, 2)
    day_parts = [p for p in storage["partitions"] if p["name"].startswith(DAY.isoformat())]
    if day_parts:
        per_change["questdb_table_partitions_disk_size"] = round(
            sum(p["disk_size"] for p in day_parts) / rows, 2)
    for f in EXP_FORMATS:
        per_change[f"questdb_exp_{f}"] = round(exp[f][-1]["bytes"] / rows, 2)
    result["bytes_per_change"] = per_change
    result["questdb_storage"] = storage
    if profiles:
        result["profiles"] = profiles
    if not args.no_save:  # a before/after run does not replace the plain one
        save("datasets_export_before_after" if args.baseline else "datasets_export", result)
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
