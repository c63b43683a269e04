"""The book recorder: venue-neutral book messages in; book changes, checkpoints and gaps
out (to the row sink); explicit actions back to the connection.

This is where a gap is decided. Rules (docs/ingestd.md "Gaps", "Order and time"):
- a market whose changes can no longer be trusted (a seq jump on its subscription, a
  reconnect, the subscription ended, a negative level, a restart) gets a `gaps` row at
  once (end null: still open) and awaits a snapshot; deltas for it are not applied;
- the snapshot that heals it writes the same row again (same dedup key) with its end;
- a snapshot that disagrees with the book held is a `snapshot_mismatch` gap, except the
  empty book at a market's close or after its reactivation (short gaps of their own);
- book time never goes backwards in seq order: a change stamped before the market's last
  row is stored at that row's time, its own stamp kept, the span a `clock_order` gap;
- a crossed or locked book (best YES bid + best NO bid >= $1.00: Kalshi would have
  matched them, so an update was lost) is a `crossed_book` gap from the row that crossed
  it to the row (or snapshot) that uncrosses it, and a snapshot is asked for; the book
  keeps applying changes meanwhile, and is never served as CONTINUOUS.
It knows no wire format and no socket: the adapter gives it BookSnapshot / BookDelta and
carries out the RequestSnapshots / Reconnect it answers.
"""

from __future__ import annotations

from typing import Any

from ingestd import metrics
from ingestd.book import MarketBook, NegativeLevel, ladder_text
from ingestd.gaps import Gap
from ingestd.messages import Action, BookDelta, BookSnapshot, Reconnect, RequestSnapshots
from ingestd.sink import RowSink, TimestampMicros
from ktape.clock import now_us
from ktape.log import get_logger

log = get_logger(__name__)

SNAPSHOT_TIMEOUT_SECS = 15.0


class BookRecorder:
    def __init__(self, sink: RowSink, *, checkpoint_every_changes: int = 200,
                 checkpoint_interval_secs: float = 60.0) -> None:
        self.sink = sink
        self.checkpoint_every = checkpoint_every_changes
        self.checkpoint_interval_us = int(checkpoint_interval_secs * 1_000_000)
        self.books: dict[str, MarketBook] = {}
        self.close_us: dict[str, int] = {}  # known close time per market
        self.reactivated_us: dict[str, int] = {}  # reactivated, its wipe snapshot pending

    # -- what the venue said about markets --------------------------------------------------

    def track(self, ticker: str) -> None:
        """A market to record: it has no book until its first snapshot."""
        self.books.setdefault(ticker, MarketBook(ticker))

    def forget(self, ticker: str) -> None:
        self.books.pop(ticker, None)

    def closes_at(self, ticker: str, close_us: int) -> None:
        self.close_us[ticker] = close_us

    def reactivated(self, ticker: str, at_us: int) -> None:
        """Reactivation cancels every resting order (PROTOCOL.md §7): the next snapshot
        is expected to be empty."""
        self.reactivated_us[ticker] = at_us

    @property
    def recorded(self) -> int:
        """Markets with a live book (not in a gap)."""
        return sum(1 for b in self.books.values() if not b.awaiting_snapshot)

    # -- book messages ----------------------------------------------------------------------

    def snapshot(self, s: BookSnapshot) -> None:
        book = self.books.get(s.ticker)
        if book is None:
            book = self.books[s.ticker] = MarketBook(s.ticker)
        yes, no = s.yes, s.no
        ts_us = book.snapshot_time(s.clock_us)
        first = book.last_book_us is None
        covered_from: int | None = 0 if first else None
        if not book.awaiting_snapshot and book.open_gap is None and not first:
            covered_from = self._unexpected_snapshot(book, s, ts_us)
        if book.open_gap is not None:
            # heal: same dedup key as the detection row, now with its end bound
            self.write_gap(book.open_gap.healed(ts_us, s.sid))
            covered_from = book.open_gap.start_us if book.open_gap.start_us is not None else 0
            book.open_gap = None
        book.replace(dict(yes), dict(no))
        book.awaiting_snapshot = False
        book.snapshot_requested_us = None
        book.last_seq, book.last_sid = s.seq, s.sid
        book.last_book_us = book.snapshot_us = ts_us
        book.covered_from_us = covered_from
        book.continuous_since_us = ts_us
        moved = s.clock_us if ts_us != s.clock_us else None
        best_yes, best_no = book.best_yes_e4, book.best_no_e4  # after the whole snapshot
        for side, ladder in (("yes", yes), ("no", no)):
            if ladder:
                lines = book.change_lines(side, "snapshot", s.source)
                for price, qty in ladder.items():
                    self.sink.book_change(lines, price, qty, qty, s.seq, s.sid, s.recv_us,
                                          ts_us, best_yes, best_no, None, moved)
        if not yes and not no:
            # An empty book still replaces the book: one row at price 0 (no Kalshi price)
            # and size 0 says so to everyone who reads changes rather than checkpoints
            # (deltas pages, streams, candles' book closes).
            self.sink.book_change(book.change_lines("yes", "snapshot", s.source), 0, 0, 0,
                                  s.seq, s.sid, s.recv_us, ts_us, 0, 0, None, moved)
        self._checkpoint(book, ts_us, s.recv_us, "snapshot", s.source)
        if book.crossed is not None and not book.crosses():
            self._uncrossed(book, ts_us, s.sid)
        elif book.crossed is None and book.crosses():  # the venue's own snapshot crosses
            self._crossed(book, ts_us, s.seq, s.sid)
        metrics.MARKETS.set(self.recorded)

    def _unexpected_snapshot(self, book: MarketBook, s: BookSnapshot, ts_us: int) -> int | None:
        """A snapshot for a book believed current (a close, a reactivation, or the venue's
        own refresh): any difference is a short gap. Returns where coverage is known from."""
        empty = not s.yes and not s.no
        reactivated = self.reactivated_us.pop(s.ticker, None)
        close = self.close_us.get(s.ticker)
        if reactivated is not None and empty and (book.yes or book.no):
            # When exactly the book emptied between `activated` and this snapshot is
            # unknown: a short gap, not a claim of continuity.
            reason, start = "market_reactivated", max(book.last_book_us or 0, reactivated)
        elif empty and close is not None and ts_us + 1_000_000 >= close:
            # The empty book sent at close (resting orders cancelled) is expected, but
            # when between the close time (whole seconds: 1 s of slack) and now it
            # emptied is unknown.
            reason, start = "market_close", max(book.last_book_us or 0, close)
        elif (s.yes, s.no) != (book.yes, book.no):
            reason, start = "snapshot_mismatch", book.last_book_us
        else:
            return None
        self.write_gap(Gap(s.ticker, reason, s.recv_us, start, ts_us, got_seq=s.seq,
                           sid=s.sid))
        return start

    def delta(self, d: BookDelta) -> Action | None:
        book = self.books.get(d.ticker)
        if book is None:
            metrics.BAD_INPUT.labels(reason="unknown_market").inc()
            log.warning("feed.delta_unknown_market", ticker=d.ticker, sid=d.sid, seq=d.seq)
            return None
        if book.awaiting_snapshot:
            metrics.BAD_INPUT.labels(reason="delta_before_snapshot").inc()
            return None  # inside a recorded gap; the snapshot will replace the book
        try:
            after = book.apply_delta(d.side, d.price_e4, d.delta_e2)
        except NegativeLevel as exc:
            metrics.BAD_INPUT.labels(reason="negative_level").inc()
            log.warning("book.negative_level", ticker=d.ticker, sid=d.sid, seq=d.seq,
                        error=str(exc))
            self.open_gap(book, "negative_level", got=d.seq, sid=d.sid)
            return RequestSnapshots((d.ticker,))
        ts_us = d.clock_us
        last = book.last_book_us
        if last is None or ts_us >= last:
            at_us, moved_from = ts_us, None
        else:  # stamped before a row already written: keep seq order, record the span
            at_us, moved_from = self._moved_up(book, ts_us, d.seq, d.sid), ts_us
        self.sink.book_change(book.change_lines(d.side, "delta", d.source), d.price_e4, after,
                              d.delta_e2, d.seq, d.sid, d.recv_us, at_us, book.best_yes_e4,
                              book.best_no_e4, ts_us // 1000 if d.source == "exchange" else None, moved_from)
        book.last_seq, book.last_sid, book.last_book_us = d.seq, d.sid, at_us
        book.changes_since_checkpoint += 1
        if (book.changes_since_checkpoint >= self.checkpoint_every
                or at_us - book.last_checkpoint_us >= self.checkpoint_interval_us):
            self._checkpoint(book, at_us, d.recv_us, "periodic", d.source)
        if book.crossed is None:
            if after > 0 and book.crosses(d.side, d.price_e4):
                return self._crossed(book, at_us, d.seq, d.sid)
        elif not book.crosses():
            self._uncrossed(book, at_us, d.sid)
        return None

    def _crossed(self, book: MarketBook, at_us: int, seq: int, sid: int) -> RequestSnapshots:
        """The book crossed at `at_us`: an anomaly from then on, and a fresh snapshot."""
        metrics.CROSSED_BOOKS.inc()
        book.crossed = Gap(book.ticker, "crossed_book", now_us(), at_us, got_seq=seq, sid=sid)
        self.write_gap(book.crossed)
        log.warning("book.crossed", ticker=book.ticker, sid=sid, seq=seq,
                    best_yes_e4=book.best_yes_e4, best_no_e4=book.best_no_e4)
        return RequestSnapshots((book.ticker,))

    def _uncrossed(self, book: MarketBook, at_us: int, sid: int) -> None:
        assert book.crossed is not None
        self.write_gap(book.crossed.healed(at_us, sid))
        log.info("book.uncrossed", ticker=book.ticker, sid=sid,
                 crossed_us=at_us - (book.crossed.start_us or at_us))
        book.crossed = None

    def _moved_up(self, book: MarketBook, clock_us: int, seq: int, sid: int) -> int:
        """A change stamped `clock_us`, earlier than the book time already written: it is
        stored at that book time (seq order is time order), and the instants from its own
        stamp up to there — where the exchange had it and the stored book does not — are
        a `clock_order` gap, unless they already lie in a recorded gap (the usual case: a
        snapshot healing a gap, stamped by sending/receive time, then deltas delivered
        late behind their `ts_ms`). Returns the book time to store."""
        at = book.last_book_us
        assert at is not None
        metrics.MOVED_CHANGES.inc()
        if at == book.snapshot_us and book.covered_from_us is not None \
                and clock_us >= book.covered_from_us:
            return at
        gap = book.clock_gap
        if gap is not None and gap.end_us == at:
            if gap.start_us is not None and gap.start_us <= clock_us:
                return at
            detected = gap.detected_us  # widen the same row (same dedup key)
        else:
            detected = now_us()
            log.warning("book.gap_detected", ticker=book.ticker, reason="clock_order", sid=sid,
                        got_seq=seq, exchange_us=clock_us, book_us=at)
            metrics.GAPS.labels(reason="clock_order").inc()
        book.clock_gap = Gap(book.ticker, "clock_order", detected, clock_us, at, got_seq=seq,
                             sid=sid)
        self.write_gap(book.clock_gap)
        return at

    # -- losing track -----------------------------------------------------------------------

    def subscription_gap(self, sid: int, expected: int, got: int) -> Action:
        """Messages of the book subscription were lost: every current book of it is in a
        gap. A second loss while the first one's snapshots are still coming answers
        Reconnect: more get_snapshot requests are how recorders stormed (§5.11)."""
        recovering = any(b.awaiting_snapshot and b.snapshot_requested_us is not None
                         for b in self.books.values())
        tickers = self.lose_all("seq_jump", sid, expected=expected, got=got)
        if recovering:
            log.warning("feed.gap_during_recovery", sid=sid, expected_seq=expected,
                        got_seq=got)
            return Reconnect("gap_during_recovery")
        return RequestSnapshots(tuple(tickers))

    def lose_all(self, reason: str, sid: int | None, *, expected: int | None = None,
                 got: int | None = None) -> list[str]:
        """Every current book is in a gap from its last row (`reason`); returns them."""
        tickers = sorted(t for t, b in self.books.items() if not b.awaiting_snapshot)
        for ticker in tickers:
            book = self.books[ticker]
            self.open_gap(book, reason, expected=expected, got=got,
                          sid=book.last_sid if sid is None else sid)
        return tickers

    def note_restart(self, last_recorded_us: dict[str, int]) -> None:
        """Markets recorded before this process started: their downtime is a gap from
        the last recorded change, written now and closed by the market's next snapshot.
        A market that closed while nobody recorded never gets that snapshot, so its gap
        stays open: nothing is known about it after the last recorded change."""
        detected = now_us()
        for ticker, last_us in sorted(last_recorded_us.items()):
            book = self.books.setdefault(ticker, MarketBook(ticker))
            book.last_book_us = last_us
            self.open_gap(book, "ingest_restart", sid=None, detected_us=detected)

    def open_gap(self, book: MarketBook, reason: str, *, sid: int | None,
                 expected: int | None = None, got: int | None = None,
                 detected_us: int | None = None) -> None:
        """The book's changes can no longer be trusted from its last row on: a gap row
        now, the book awaits the snapshot that heals it."""
        detected = detected_us or now_us()
        if book.open_gap is not None and book.open_gap.detected_us >= detected:
            detected = book.open_gap.detected_us + 1  # a distinct row key
        book.awaiting_snapshot = True
        book.open_gap = Gap(book.ticker, reason, detected, book.last_book_us,
                            expected_seq=expected, got_seq=got, sid=sid)
        self.write_gap(book.open_gap)

    def write_gap(self, gap: Gap) -> None:
        """One `gaps` row; an open one is also logged and counted."""
        if gap.end_us is None:
            metrics.GAPS.labels(reason=gap.reason).inc()
            log.warning("book.gap_detected", ticker=gap.ticker, reason=gap.reason,
                        sid=gap.sid, expected_seq=gap.expected_seq, got_seq=gap.got_seq)
        columns: dict[str, Any] = {"expected_seq": gap.expected_seq, "got_seq": gap.got_seq,
                                   "sid": gap.sid}
        if gap.start_us is not None:
            columns["start_ts"] = TimestampMicros(gap.start_us)
        if gap.end_us is not None:
            columns["end_ts"] = TimestampMicros(gap.end_us)
        self.sink.row("gaps", symbols={"ticker": gap.ticker, "reason": gap.reason},
                      columns={k: v for k, v in columns.items() if v is not None},
                      at_us=gap.detected_us)

    # -- snapshots asked for ----------------------------------------------------------------

    def snapshots_requested(self, tickers: list[str] | tuple[str, ...], at_us: int) -> None:
        for ticker in tickers:
            if ticker in self.books:
                self.books[ticker].snapshot_requested_us = at_us

    def overdue_snapshots(self, now: int) -> list[str]:
        """Markets whose requested snapshot has not come within SNAPSHOT_TIMEOUT_SECS."""
        limit = int(SNAPSHOT_TIMEOUT_SECS * 1_000_000)
        return sorted(t for t, b in self.books.items()
                      if b.awaiting_snapshot and b.snapshot_requested_us is not None
                      and now - b.snapshot_requested_us > limit)

    def _checkpoint(self, book: MarketBook, ts_us: int, recv_us: int, reason: str,
                    source: str) -> None:
        self.sink.row("book_checkpoints", symbols={
            "ticker": book.ticker, "reason": reason, "ts_source": source},
            columns={"seq": book.last_seq, "sid": book.last_sid,
                     "recv_ts": TimestampMicros(recv_us), "yes_levels": ladder_text(book.yes),
                     "no_levels": ladder_text(book.no),
                     **({"continuous_since": TimestampMicros(book.continuous_since_us)}
                        if book.continuous_since_us is not None else {})},
            at_us=ts_us)
        book.changes_since_checkpoint = 0
        book.last_checkpoint_us = ts_us
