"""Build one UTC day's files: per series, one export of its changes and trades, split
into each market's files and walked once for the derived views; then the manifest.

Order of work within a day, and why:
1. plan (datasetd/facts.py): the markets, their conditions and fingerprints;
2. per series whose fingerprint differs from the manifest's: write every file of the
   series and of its markets to scratch files, publish each (atomic), then write the
   manifest naming them — so a crash leaves either the old entry or the new one, and a
   rerun rebuilds exactly the series it did not finish;
3. a republished file whose bytes did not change keeps its `last_modified_us`.
Row order: `book_changes` and `trades` in exchange-time order (series files interleave
their markets by time); `quotes`, `book_top10_1s` and `candles_1m` series files hold
each market's rows in time order, market after market (by ticker).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datasetd.columns import TS, parquet_schema
from datasetd.derive import Continuity, MarketWalk
from datasetd.facts import DayPlan, MarketDay, plan_day, series_fingerprint, worst
from datasetd.source import QuestSource, tickers_literal, ts_literal
from datasetd.writers import FileWriter, WriterSet, Written
from ktape.book.ladder import Book
from ktape.book.reconstruct import Change, Checkpoint, Rebuilt, apply_changes
from ktape.clock import datetime_us, now_us, us_datetime
from ktape.datasets.manifest import DayManifest, FileEntry
from ktape.datasets.names import DATA_TYPES, FORMATS, FileName, manifest_name
from ktape.datasets.storage import Storage
from ktape.log import get_logger
from ktape.open_interest import at_closes
from ktape.sql_lists import with_tickers

log = get_logger(__name__)

CHANGES_EXPORT = """SELECT ts, recv_ts, ticker, kind, side, price_e4, qty_after_e2 AS quantity_e2,
delta_e2, seq, sid FROM book_changes
WHERE ticker IN ({tickers}) AND ts >= {a} AND ts < {b} ORDER BY ts, ticker, sid, seq"""
TRADES_EXPORT = """SELECT ts, recv_ts, ticker, trade_id, yes_price_e4, no_price_e4, count_e2,
taker_side, is_block AS is_block_trade, seq, sid FROM trades
WHERE ticker IN ({tickers}) AND ts >= {a} AND ts < {b}
ORDER BY ts, ticker, seq, trade_id"""
CHECKPOINTS_BEFORE = """SELECT ticker, ts, sid, seq, reason, yes_levels, no_levels, continuous_since
FROM book_checkpoints WHERE ticker IN ({tickers}) AND ts < %(a)s
LATEST ON ts PARTITION BY ticker"""
CHANGES_BEFORE = """SELECT ts, side, price_e4, qty_after_e2, delta_e2, kind, seq, sid
FROM book_changes WHERE ticker = %(ticker)s AND ts >= %(from)s AND ts < %(a)s
ORDER BY ts, sid, seq"""
# The same buckets and order as queryd's ListCandles (queryd/sql.py _CANDLES, 1m).
CANDLES = """SELECT ts, ticker, first(yes_price_e4), max(yes_price_e4), min(yes_price_e4),
       last(yes_price_e4), sum(count_e2), count()
FROM (SELECT ts, ticker, coalesce(seq, -1) AS seq_order, trade_id, yes_price_e4, count_e2
      FROM trades WHERE ticker IN ({tickers}) AND ts >= %(a)s AND ts < %(b)s
      ORDER BY ts, seq_order, trade_id) timestamp(ts)
SAMPLE BY 1m ALIGN TO CALENDAR"""
OPEN_INTEREST = """SELECT ts, ticker, last(open_interest_e2) FROM tickers
WHERE ticker IN ({tickers}) AND ts >= %(a)s AND ts < %(b)s SAMPLE BY 1m ALIGN TO CALENDAR"""
OPEN_INTEREST_BEFORE = """SELECT ticker, open_interest_e2 FROM tickers
WHERE ticker IN ({tickers}) AND ts < %(a)s LATEST ON ts PARTITION BY ticker"""

DERIVED = ("quotes", "book_top10_1s")
Progress = Callable[[str, int, int], None]  # (series, done, total)


def _ints(values: pa.ChunkedArray | pa.Array) -> list:
    """Integers (timestamps as µs) for the walk; None where a value is null."""
    if pa.types.is_timestamp(values.type):
        values = values.cast(pa.int64())
    if values.null_count:
        return values.to_pylist()
    return values.to_numpy().tolist()


@dataclass
class BuildReport:
    day: dt.date
    closed: bool
    end_us: int  # the files hold rows before this instant (the day's end, or the build's now)
    series_built: list[str] = field(default_factory=list)
    series_fresh: list[str] = field(default_factory=list)
    files: int = 0
    rows: int = 0
    bytes: int = 0


class DayBuilder:
    """Builds and rebuilds days from one QuestDB into one storage."""

    def __init__(self, source: QuestSource, storage: Storage, *,
                 formats: tuple[str, ...] = FORMATS, data_types: tuple[str, ...] = DATA_TYPES,
                 clock: Callable[[], int] = now_us) -> None:
        self.source = source
        self.storage = storage
        self.formats = formats
        self.data_types = data_types  # fewer than all: benchmarks and tests of one kind
        self.walking = any(t in data_types for t in (*DERIVED, "candles_1m"))
        self.clock = clock

    def manifest(self, day: dt.date) -> DayManifest:
        data = self.storage.read_bytes(manifest_name(day))
        return DayManifest.from_bytes(data) if data else DayManifest(day)

    def build(self, day: dt.date, *, force: bool = False,
              progress: Progress | None = None) -> BuildReport:
        plan = plan_day(self.source, day, self.clock())
        manifest = self.manifest(day)
        report = BuildReport(day, plan.closed, plan.end_us)
        groups = plan.series()
        # A series' files depend only on its own manifest entries, so which series are
        # stale is known up front; the next one's export then runs while this one is
        # written (QuestSource.prefetch).
        fingerprints = {s: series_fingerprint(markets) for s, markets in groups.items()}
        stale = [s for s, markets in groups.items() if force or not self._fresh(
            manifest, day, s, markets, fingerprints[s])]
        following = dict(pairwise(stale))
        to_build = set(stale)
        try:
            if stale:
                self._prefetch(plan, stale[0], groups[stale[0]])
            for done, (series, markets) in enumerate(groups.items(), start=1):
                fingerprint = fingerprints[series]
                if series not in to_build:
                    report.series_fresh.append(series)
                else:
                    if series in following:
                        self._prefetch(plan, following[series], groups[following[series]])
                    for entry in self._build_series(plan, series, markets, fingerprint,
                                                    manifest):
                        manifest.put(entry)
                        report.files += 1
                        report.rows += entry.rows
                        report.bytes += entry.bytes
                    manifest.closed = plan.closed
                    self.storage.write_bytes(manifest_name(day), manifest.to_bytes())
                    report.series_built.append(series)
                    log.info("dataset.series_built", date=day.isoformat(), series=series,
                             markets=len(markets), closed=plan.closed)
                if progress is not None:
                    progress(series, done, len(groups))
        finally:
            self.source.drop_ahead()  # after a failure: no export left running or on disk
        if manifest.closed != plan.closed or not groups:
            manifest.closed = plan.closed
            self.storage.write_bytes(manifest_name(day), manifest.to_bytes())
        return report

    def _exports(self, plan: DayPlan, series: str, tickers: list[str]
                 ) -> list[tuple[str, str]]:
        """(query, scratch name) of each bulk export a series' build reads, in order."""
        window = {"a": ts_literal(plan.start_us), "b": ts_literal(plan.end_us)}
        listed = tickers_literal(tickers)
        out = [(CHANGES_EXPORT.format(tickers=listed, **window), f"changes-{plan.day}-{series}")]
        if "trades" in self.data_types:
            out.append((TRADES_EXPORT.format(tickers=listed, **window),
                        f"trades-{plan.day}-{series}"))
        return out

    def _prefetch(self, plan: DayPlan, series: str, markets: list[MarketDay]) -> None:
        for query, name in self._exports(plan, series, [m.ticker for m in markets]):
            self.source.prefetch(query, name)

    def _names(self, day: dt.date, series: str, markets: list[MarketDay], fingerprint: str
               ) -> Iterator[tuple[FileName, str]]:
        """Every file of a series and its markets, with the fingerprint it is built from
        (`fingerprint`: the series')."""
        for data_type in self.data_types:
            for fmt in self.formats:
                yield FileName(data_type, day, "", series, fmt), fingerprint
                for market in markets:
                    yield FileName(data_type, day, market.ticker, "", fmt), market.fingerprint

    def _fresh(self, manifest: DayManifest, day: dt.date, series: str,
               markets: list[MarketDay], fingerprint: str) -> bool:
        for name, source in self._names(day, series, markets, fingerprint):
            entry = manifest.files.get(str(name))
            if entry is None or entry.source != source:
                return False
        return True

    # -- one series ---------------------------------------------------------------------

    def _build_series(self, plan: DayPlan, series: str, markets: list[MarketDay],
                      fingerprint: str, manifest: DayManifest) -> list[FileEntry]:
        scratch = self.storage.scratch_dir()
        writers = WriterSet(scratch, self.formats)
        derived: list[Written] = []
        try:
            by_ticker = {m.ticker: m for m in markets}
            walks = self._walks(plan, markets, writers)
            self._book_changes(plan, series, by_ticker, walks, writers)
            if self.walking:  # else the walks were never fed: finishing them would
                for ticker, walk in walks.items():  # only compute views thrown away
                    self._add_derived(plan.day, ticker, walk.finish(), writers)
            if "trades" in self.data_types:
                self._trades(plan, series, list(by_ticker), writers)
            if "candles_1m" in self.data_types:
                self._candles(plan, series, walks, writers)
            for data_type in self.data_types:
                for market in markets:
                    writers.ensure(FileName(data_type, plan.day, market.ticker))
                if data_type not in DERIVED:
                    writers.ensure(FileName(data_type, plan.day, "", series))
            written = writers.close()
            derived = self._derived_series(plan.day, series, list(by_ticker), written)
        except BaseException:
            writers.abandon()
            for w in derived:
                w.path.unlink(missing_ok=True)
            raise
        entries = []
        when = self.clock()
        pending = written + derived
        try:
            for w in pending:
                entries.append(self._publish(w, by_ticker, markets, series, fingerprint,
                                             manifest, when, plan.day))
        finally:  # a failed publish leaves no scratch file behind
            for w in pending:
                w.path.unlink(missing_ok=True)
        return entries

    def _publish(self, w: Written, by_ticker: dict[str, MarketDay], markets: list[MarketDay],
                 series: str, fingerprint: str, manifest: DayManifest, when: int,
                 day: dt.date) -> FileEntry:
        """Move one finished file into place; its manifest entry (written by the caller
        once the whole series is in place)."""
        market = by_ticker.get(w.name.ticker)
        condition = market.condition if market else worst([m.condition for m in markets])
        source = market.fingerprint if market else fingerprint
        old = manifest.files.get(str(w.name))
        modified = old.last_modified_us if old and old.sha256 == w.sha256 else when
        self.storage.publish(w.path, str(w.name))
        return FileEntry(
            name=str(w.name), data_type=w.name.data_type, date=day.isoformat(),
            ticker=w.name.ticker, series_ticker=series, format=w.name.format,
            bytes=w.bytes, rows=w.rows, sha256=w.sha256, first_ts_us=w.first_ts_us,
            last_ts_us=w.last_ts_us, condition=condition, last_modified_us=modified,
            source=source)

    def _walks(self, plan: DayPlan, markets: list[MarketDay], writers: WriterSet
               ) -> dict[str, MarketWalk]:
        """Each market's walk, from its book just before the day; the `initial` rows."""
        initial = self._initial_books([m.ticker for m in markets], plan.start_us)
        walks: dict[str, MarketWalk] = {}
        series_rows = []
        for market in markets:
            rebuilt = initial.get(market.ticker)
            book = rebuilt.book if rebuilt else None
            walks[market.ticker] = MarketWalk(
                market.ticker, book.copy() if book else Book(),
                rebuilt.seq if rebuilt else 0, rebuilt.sid if rebuilt else 0,
                plan.start_us, plan.end_us,
                Continuity(market.coverage_us, [(g.start_us, g.end_us) for g in market.gaps]))
            if rebuilt is not None:
                rows = _initial_rows(market.ticker, plan.start_us, rebuilt)
                writers.add(FileName("book_changes", plan.day, market.ticker), rows)
                series_rows.append(rows)
        if series_rows:
            writers.add(FileName("book_changes", plan.day, "", markets[0].series_ticker),
                        pa.concat_tables(series_rows))
        return walks

    def _initial_books(self, tickers: list[str], start_us: int) -> dict[str, Rebuilt]:
        at = us_datetime(start_us)
        out: dict[str, Rebuilt] = {}
        for t, ts, sid, seq, reason, yes, no, since in self.source.rows(
                with_tickers(CHECKPOINTS_BEFORE, tickers), {"a": at}):  # type: ignore[arg-type]
            checkpoint = Checkpoint(datetime_us(ts), int(sid), int(seq), str(reason), yes, no,
                                    None if since is None else datetime_us(since))
            changes = [Change(datetime_us(c_ts), side, int(p), int(q),
                              None if d is None else int(d), str(kind), int(c_seq), int(c_sid))
                       for c_ts, side, p, q, d, kind, c_seq, c_sid in self.source.rows(
                           CHANGES_BEFORE, {"ticker": str(t), "from": ts, "a": at})]
            out[str(t)] = apply_changes(checkpoint, changes)
        return out

    def _book_changes(self, plan: DayPlan, series: str, markets: dict[str, MarketDay],
                      walks: dict[str, MarketWalk], writers: WriterSet) -> None:
        markers = _gap_markers(plan, list(markets.values()))
        query, name = self._exports(plan, series, list(markets))[0]
        schema = parquet_schema("book_changes")
        for batch in self.source.batches(query, name):
            table = _conform(pa.Table.from_batches([batch]), schema)
            last = table.column("ts")[-1].value
            due, markers = _split_markers(markers, last)
            if due is not None:
                table = _merge_in_time(due, table)
            rendered = writers.csv_form(table, "book_changes")
            with writers.beside(FileName("book_changes", plan.day, "", series), table, rendered):
                for ticker, part, shown in _by_ticker(table, rendered):
                    writers.add(FileName("book_changes", plan.day, ticker), part, shown)
                    if not self.walking:
                        continue
                    changes = part.filter(pc.not_equal(part.column("kind"), "gap"))
                    if changes.num_rows:
                        self._add_derived(plan.day, ticker, walks[ticker].feed(
                            _ints(changes.column("ts")), _ints(changes.column("recv_ts")),
                            changes.column("kind").to_pylist(),
                            changes.column("side").to_pylist(),
                            _ints(changes.column("price_e4")),
                            _ints(changes.column("quantity_e2")),
                            _ints(changes.column("seq")), _ints(changes.column("sid"))), writers)
        if markers is not None and markers.num_rows:
            writers.add(FileName("book_changes", plan.day, "", series), markers)
            for ticker, part, _ in _by_ticker(markers):
                writers.add(FileName("book_changes", plan.day, ticker), part)

    def _add_derived(self, day: dt.date, ticker: str, tables: tuple[pa.Table, pa.Table],
                     writers: WriterSet) -> None:
        for data_type, table in zip(DERIVED, tables, strict=True):
            if data_type in self.data_types:
                writers.add(FileName(data_type, day, ticker), table)

    def _trades(self, plan: DayPlan, series: str, tickers: list[str], writers: WriterSet) -> None:
        query, name = self._exports(plan, series, tickers)[1]
        schema = parquet_schema("trades")
        for batch in self.source.batches(query, name):
            table = _conform(pa.Table.from_batches([batch]), schema)
            rendered = writers.csv_form(table, "trades")
            with writers.beside(FileName("trades", plan.day, "", series), table, rendered):
                for ticker, part, shown in _by_ticker(table, rendered):
                    writers.add(FileName("trades", plan.day, ticker), part, shown)

    def _candles(self, plan: DayPlan, series: str, walks: dict[str, MarketWalk],
                 writers: WriterSet) -> None:
        tickers = list(walks)
        window = {"a": us_datetime(plan.start_us), "b": us_datetime(plan.end_us)}
        carried = {str(t): None if oi is None else int(oi) for t, oi in self.source.rows(
            with_tickers(OPEN_INTEREST_BEFORE, tickers), window)}  # type: ignore[arg-type]
        reports: dict[str, dict[int, int | None]] = {}
        for ts, t, oi in self.source.rows(with_tickers(OPEN_INTEREST, tickers), window):  # type: ignore[arg-type]
            reports.setdefault(str(t), {})[datetime_us(ts)] = None if oi is None else int(oi)
        candles: dict[str, list[tuple]] = {}
        for ts, t, o, h, lo, c, vol, n in self.source.rows(with_tickers(CANDLES, tickers), window):  # type: ignore[arg-type]
            candles.setdefault(str(t), []).append(
                (datetime_us(ts), int(o), int(h), int(lo), int(c), int(vol), int(n)))
        for ticker in tickers:
            rows = sorted(candles.get(ticker, []))
            if not rows:
                continue
            closes = {start: (bid, ask) for start, bid, ask in walks[ticker].closes}
            interest = at_closes([r[0] for r in rows], reports.get(ticker, {}),
                                 carried.get(ticker))
            columns = list(zip(*rows, strict=True))
            table = pa.Table.from_arrays([
                pa.array(columns[0], TS), pa.array([ticker] * len(rows), pa.string()),
                *(pa.array(col, pa.int64()) for col in columns[1:7]),
                pa.array([closes.get(r[0], (None, None))[0] for r in rows], pa.int64()),
                pa.array([closes.get(r[0], (None, None))[1] for r in rows], pa.int64()),
                pa.array(interest, pa.int64())], schema=parquet_schema("candles_1m"))
            writers.add(FileName("candles_1m", plan.day, ticker), table)
            writers.add(FileName("candles_1m", plan.day, "", series), table)

    def _derived_series(self, day: dt.date, series: str, tickers: list[str],
                        written: list[Written]) -> list[Written]:
        """The series files of the derived views: its markets' files, one after another."""
        parquet = {w.name: w for w in written if w.name.format == "parquet"}
        out = []
        for data_type in (t for t in DERIVED if t in self.data_types):
            name = FileName(data_type, day, "", series)
            writers = [FileWriter(name.with_format(f), self.storage.scratch_dir())
                       for f in self.formats]
            for ticker in tickers:
                source = parquet.get(FileName(data_type, day, ticker))
                if source is None:
                    continue
                for batch in pq.ParquetFile(source.path).iter_batches():
                    for w in writers:
                        w.add(pa.Table.from_batches([batch]))
            out += [w.close() for w in writers]
        return out


def _initial_rows(ticker: str, start_us: int, rebuilt: Rebuilt) -> pa.Table:
    levels = [(side, p, q) for side, ladder in (("yes", rebuilt.book.yes), ("no", rebuilt.book.no))
              for p, q in sorted(ladder.items())]
    n = len(levels)
    return pa.Table.from_arrays([
        pa.array([start_us] * n, TS), pa.nulls(n, TS), pa.array([ticker] * n, pa.string()),
        pa.array(["initial"] * n, pa.string()), pa.array([s for s, _, _ in levels], pa.string()),
        pa.array([p for _, p, _ in levels], pa.int64()),
        pa.array([q for _, _, q in levels], pa.int64()), pa.nulls(n, pa.int64()),
        pa.array([rebuilt.seq] * n, pa.int64()), pa.array([rebuilt.sid] * n, pa.int64()),
        pa.nulls(n, TS), pa.nulls(n, TS), pa.nulls(n, pa.string())],
        schema=parquet_schema("book_changes"))


def _gap_markers(plan: DayPlan, markets: list[MarketDay]) -> pa.Table | None:
    rows = [(max(g.start_us, plan.start_us), m.ticker, g) for m in markets for g in m.gaps
            if g.start_us < plan.end_us]
    if not rows:
        return None
    rows.sort(key=lambda r: (r[0], r[1]))
    n = len(rows)
    return pa.Table.from_arrays([
        pa.array([r[0] for r in rows], TS), pa.nulls(n, TS),
        pa.array([r[1] for r in rows], pa.string()), pa.array(["gap"] * n, pa.string()),
        pa.nulls(n, pa.string()), pa.nulls(n, pa.int64()), pa.nulls(n, pa.int64()),
        pa.nulls(n, pa.int64()), pa.array([r[2].got_seq for r in rows], pa.int64()),
        pa.array([r[2].sid for r in rows], pa.int64()),
        pa.array([r[2].start_us for r in rows], TS), pa.array([r[2].end_us for r in rows], TS),
        pa.array([r[2].reason for r in rows], pa.string())], schema=parquet_schema("book_changes"))


def _split_markers(markers: pa.Table | None, upto_us: int
                   ) -> tuple[pa.Table | None, pa.Table | None]:
    """(markers at or before `upto_us`, the rest)."""
    if markers is None or markers.num_rows == 0:
        return None, markers
    ts = markers.column("ts").cast(pa.int64()).to_numpy()
    cut = int(np.searchsorted(ts, upto_us, side="right"))
    if cut == 0:
        return None, markers
    return markers.slice(0, cut), markers.slice(cut)


def _merge_in_time(markers: pa.Table, table: pa.Table) -> pa.Table:
    """Gap markers among the changes by time (a marker before changes at its instant)."""
    both = pa.concat_tables([markers, table])
    ts = both.column("ts").cast(pa.int64()).to_numpy()
    return both.take(pa.array(np.argsort(ts, kind="stable")))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """An export's columns in the schema's order and types; missing columns as nulls."""
    n = table.num_rows
    arrays = [table.column(f.name).cast(f.type) if f.name in table.column_names
              else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _by_ticker(table: pa.Table, rendered: pa.Table | None = None
               ) -> Iterator[tuple[str, pa.Table, pa.Table | None]]:
    """The table's rows per ticker, each in the table's order (a stable grouping), with
    the same rows of `rendered` (the table's CSV form) when given. Why both: rendering a
    batch's decimal strings and times once and slicing them costs ~0.7 µs a row less
    than rendering the series file's batch and every market's slice apart."""
    encoded = pc.dictionary_encode(table.column("ticker")).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    take = pa.array(order)
    grouped = table.take(take)
    sorted_codes = codes[order]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(sorted_codes)]))
    shown = rendered.take(take) if rendered is not None else None
    names = encoded.dictionary.to_pylist()
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if e > s:
            yield (names[int(sorted_codes[s])], grouped.slice(s, e - s),
                   shown.slice(s, e - s) if shown is not None else None)
