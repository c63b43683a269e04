"""ktape_client.delta_frames: frames of column pages equal, value for value, what the
API's decimal strings and messages say (the integration test compares a recording's
frame with its message pages; this one covers what a recording seldom has: gap markers
mid-page, negative sizes, unset receive times, an enum value the client does not know,
no rows at all)."""

from __future__ import annotations

import datetime as dt
import importlib
import random
from decimal import Decimal

import pytest

from bench.client.client_overhead import load_client
from ktape.marketdata.v1 import marketdata_pb2 as pb

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """ktape_client.delta_frames from the client's source tree, with the stubs generated
    as its build generates them (the bench's loader: the package needs them to import)."""
    load_client(tmp_path_factory.mktemp("client"))
    return importlib.import_module("ktape_client.delta_frames")


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
NAMES = {
    "kind": {0: "unspecified", 1: "delta", 2: "snapshot", 3: "gap"},
    "side": {0: "unspecified", 1: "yes", 2: "no"},
    "cause": {0: "unspecified", 1: "new", 2: "cancel", 3: "trade"},
}


def _text(units: int, places: int) -> str:
    """The API's decimal string of a fixed-point integer, written out independently."""
    sign, units = ("-" if units < 0 else ""), abs(units)
    whole, part = divmod(units, 10**places)
    return f"{sign}{whole}.{part:0{places}d}"


def _pages(seed: int, pages: int, rows: int) -> tuple[list, list[tuple]]:
    """Random column pages and the rows they stand for, as the messages would say them:
    (ts µs, seq, sid, kind, side, price, delta, quantity, cause, receive µs or None,
    gap reason)."""
    rng = random.Random(seed)
    out, expected = [], []
    seq = 0
    for _ in range(pages):
        columns = pb.OrderbookDeltaColumns()
        for _ in range(rows):
            seq += 1
            kind = rng.choice([1, 1, 1, 2, 3] + ([7] if rng.random() < 0.02 else []))
            ts = 1_793_491_200_000_000 + seq * 997
            receive = 0 if rng.random() < 0.1 else ts + rng.randrange(1, 5000)
            if kind == 3:
                side = price = delta = quantity = 0
                reason = rng.choice(["seq_gap", "reconnect", "questdb_outage"])
                columns.gaps.add(reason=reason, expected_seq=seq)
            else:
                side, reason = rng.choice([1, 2]), ""
                price = rng.randrange(100, 9900, 100) + rng.choice([0, 50])
                delta = rng.randrange(-500_000, 500_000)
                quantity = rng.randrange(0, 10**12)
            cause = rng.choice([0, 1, 2, 3])
            columns.kinds.append(kind)
            columns.ts_unix_micros.append(ts)
            columns.seqs.append(seq)
            columns.sids.append(4)
            columns.sides.append(side)
            columns.prices_e4.append(price)
            columns.deltas_e2.append(delta)
            columns.quantities_e2.append(quantity)
            columns.receive_unix_micros.append(receive)
            columns.source_unix_micros.append(0)
            columns.causes.append(cause)
            gap = kind == 3
            expected.append((
                ts, seq, 4, NAMES["kind"].get(kind, str(kind)), NAMES["side"][side],
                None if gap else _text(price, 4), None if gap else _text(delta, 2),
                None if gap else _text(quantity, 2), NAMES["cause"][cause],
                receive or None, reason))
        out.append(columns)
    return out, expected


def _read(frames, pages: list):
    found = frames.DeltaPages(NAMES, gap_kind=3)
    for columns in pages:
        found.add(columns)
    return found


def _micros(value) -> int | None:
    return None if pd.isna(value) else int(value.value // 1000)


def _since_epoch(value: dt.datetime | None) -> int | None:
    """An Arrow timestamp's µs since the epoch, by integer arithmetic."""
    return None if value is None else (value - EPOCH) // dt.timedelta(microseconds=1)


def _text_of(value) -> str | None:
    return None if value is None else str(value)


def test_pandas_frame_equals_the_rows_value_for_value(frames):
    pages, expected = _pages(seed=5, pages=6, rows=400)
    frame = _read(frames, pages).to_pandas()
    assert [c for c, _ in frames.FRAME_COLUMNS] == list(frame.columns)
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    assert frame["seq"].dtype == "int64" and frame["price"].dtype == object
    assert all(str(frame[c].dtype) == "string" for c in ("kind", "side", "cause", "gap_reason"))
    got = [(_micros(r.ts), r.seq, r.sid, r.kind, r.side, _text_of(r.price), _text_of(r.delta),
            _text_of(r.quantity), r.cause, _micros(r.receive_time), r.gap_reason)
           for r in frame.itertuples()]
    assert got == expected
    assert all(isinstance(v, Decimal) for v in frame["price"].dropna())


def test_arrow_table_equals_the_pandas_frame(frames):
    pages, expected = _pages(seed=11, pages=3, rows=700)
    table = _read(frames, pages).to_arrow()
    assert table.schema.field("price").type == pa.decimal128(10, 4)
    assert table.schema.field("quantity").type == pa.decimal128(18, 2)
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    rows = table.to_pylist()
    got = [(_since_epoch(r["ts"]), r["seq"], r["sid"], r["kind"], r["side"],
            _text_of(r["price"]), _text_of(r["delta"]), _text_of(r["quantity"]), r["cause"],
            _since_epoch(r["receive_time"]), r["gap_reason"])
           for r in rows]
    assert got == expected
    # Nulls exactly at the gap markers, nowhere else.
    assert table["price"].null_count == sum(1 for e in expected if e[3] == "gap")


def test_no_rows_gives_an_empty_frame_with_the_same_columns(frames):
    frame = frames.DeltaPages(NAMES, gap_kind=3).to_pandas()
    assert len(frame) == 0 and [c for c, _ in frames.FRAME_COLUMNS] == list(frame.columns)
    assert len(frames.DeltaPages(NAMES, gap_kind=3).to_arrow()) == 0


def test_a_gap_marker_without_its_gap_is_refused(frames):
    columns = pb.OrderbookDeltaColumns(kinds=[3], ts_unix_micros=[1], seqs=[1], sids=[1],
                                       sides=[0], prices_e4=[0], deltas_e2=[0],
                                       quantities_e2=[0], receive_unix_micros=[0])
    with pytest.raises(ValueError, match="1 gap markers but 0 gaps"):
        _read(frames, [columns]).to_pandas()
