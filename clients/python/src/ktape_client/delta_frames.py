"""DataFrames of book changes read from column pages, whole columns at a time in C.

`deltas(...).to_df()` is the call a quant makes on a million changes, so what it costs
beside the raw stubs is the client's whole price (issue 17 holds it to ≤ 10%). A page
asked for as columns (`OrderbookDeltaColumns`) arrives as repeated integers, and upb's
repeated containers hand their values to numpy as one copy (`__array__`, ~7 ns a value,
where turning them into Python ints costs 40 to 50): so each page is kept as numpy arrays
and nothing per row is done in Python. At the end, per column:

- times: integer µs (0 = unset) viewed as datetime64[us], NaT where unset;
- prices and sizes: exact fixed-point integers. For pandas, Decimal objects, one built per
  distinct value (a market's prices and sizes repeat) and the rest picked by index
  (`take`); for Arrow, the integers themselves become the decimal128's 128-bit units
  (value and sign) under the column's scale, no Decimal object at all;
- kinds, sides, causes and gap reasons: small integer codes into a vocabulary of names,
  turned into a string column by one `take`.

A gap marker has no price or size (None / null there) and carries its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np

from ktape_client.pages import ARROW_DECIMALS, NAT

# (name, kind) in frame order: the columns DELTA_COLUMNS (pages.py) gives from messages.
FRAME_COLUMNS: list[tuple[str, str]] = [
    ("ts", "time"), ("seq", "int"), ("sid", "int"), ("kind", "str"), ("side", "str"),
    ("price", "price"), ("delta", "size"), ("quantity", "size"), ("cause", "str"),
    ("receive_time", "time"), ("gap_reason", "str"),
]
Convert = Callable[..., Any]  # a column's arrays -> the frame library's column


class DeltaPages:
    """The numpy arrays of each page read so far, and the frames built from all of them.

    `names` maps each enum field (kind, side, cause) to its values' short lower-case
    names by number. `gap_kind` is DELTA_KIND_GAP's number: its entries' Gaps come in
    `gaps`, in entry order."""

    def __init__(self, names: dict[str, dict[int, str]], gap_kind: int) -> None:
        self._names = names
        self._gap_kind = gap_kind
        self._pages: list[dict[str, np.ndarray]] = []
        self._reasons: list[str] = []  # each gap marker's reason, in entry order

    def add(self, columns: Any) -> None:
        """One OrderbookDeltaColumns page, kept as arrays (one copy per column)."""
        rows = len(columns.kinds)
        page = {name: np.asarray(getattr(columns, field), dtype=np.int64)
                for name, field in (("ts", "ts_unix_micros"), ("seq", "seqs"),
                                    ("sid", "sids"), ("kind", "kinds"), ("side", "sides"),
                                    ("price", "prices_e4"), ("delta", "deltas_e2"),
                                    ("quantity", "quantities_e2"),
                                    ("receive_time", "receive_unix_micros"))}
        page["cause"] = (np.asarray(columns.causes, dtype=np.int64) if len(columns.causes)
                         else np.zeros(rows, dtype=np.int64))  # a stream's: unspecified
        self._pages.append(page)
        self._reasons.extend(gap.reason for gap in columns.gaps)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every page's columns end to end, and `gap`: where the gap markers are."""
        if self._pages:
            out = {name: np.concatenate([p[name] for p in self._pages])
                   for name in self._pages[0]}
        else:
            out = {name: np.zeros(0, dtype=np.int64) for name, kind in FRAME_COLUMNS
                   if name != "gap_reason"}
        out["gap"] = out["kind"] == self._gap_kind
        found = int(out["gap"].sum())
        if found != len(self._reasons):  # the server's promise: one Gap per GAP entry
            raise ValueError(f"column pages hold {found} gap markers but {len(self._reasons)}"
                             " gaps")
        return out

    def _vocabulary(self, name: str, codes: np.ndarray) -> list[str]:
        """An enum column's names, indexed by its numbers; a number this client does not
        know (a newer server's) is named by its number rather than refused."""
        known = self._names[name]
        size = max(int(codes.max()) + 1 if len(codes) else 0, max(known) + 1)
        return [known.get(i, str(i)) for i in range(size)]

    def _reason_codes(self, arrays: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
        """gap_reason as names and an index: "" everywhere but at the gap markers."""
        vocabulary = ["", *dict.fromkeys(self._reasons)]
        index = {reason: i for i, reason in enumerate(vocabulary)}
        codes = np.zeros(len(arrays["kind"]), dtype=np.int64)
        codes[arrays["gap"]] = [index[r] for r in self._reasons]
        return vocabulary, codes

    def _strings(self, arrays: dict[str, np.ndarray], name: str) -> tuple[list[str], np.ndarray]:
        if name == "gap_reason":
            return self._reason_codes(arrays)
        return self._vocabulary(name, arrays[name]), arrays[name]

    def _columns(self, time: Convert, exact: Convert, strings: Convert,
                 ints: Convert) -> dict[str, Any]:
        """Every frame column by its kind's conversion: `time(micros)`,
        `exact(units, kind, missing)`, `strings(vocabulary, codes)`,
        `ints(values)`."""
        arrays = self.arrays()
        out: dict[str, Any] = {}
        for name, kind in FRAME_COLUMNS:
            if kind == "time":
                out[name] = time(arrays[name])
            elif kind in ("price", "size"):
                out[name] = exact(arrays[name], kind, arrays["gap"])
            elif kind == "str":
                out[name] = strings(*self._strings(arrays, name))
            else:
                out[name] = ints(arrays[name])
        return out

    def to_pandas(self) -> Any:
        """A pandas DataFrame: Decimal objects (exact) for prices and sizes,
        datetime64[us, UTC] for times, int64 and string columns otherwise."""
        import pandas as pd

        def time(micros: np.ndarray) -> Any:
            unset = np.where(micros == 0, NAT, micros)
            return pd.Series(unset.view("datetime64[us]")).dt.tz_localize("UTC")

        return pd.DataFrame(self._columns(
            time=time,
            exact=lambda units, kind, missing: pd.Series(
                _decimals(pd, units, -ARROW_DECIMALS[kind][1], missing), dtype="object"),
            strings=lambda vocabulary, codes: pd.Series(
                pd.array(vocabulary, dtype="string").take(codes)),
            ints=lambda values: pd.Series(values, dtype="int64")))

    def to_arrow(self) -> Any:
        """A pyarrow Table: decimal128 for prices (scale 4) and sizes (scale 2),
        timestamp[us, UTC] for times, int64 and string columns otherwise."""
        import pyarrow as pa

        return pa.table(self._columns(
            time=lambda micros: pa.array(micros, pa.timestamp("us", tz="UTC"),
                                         mask=micros == 0),
            exact=lambda units, kind, missing: _decimal128(
                pa, units, pa.decimal128(*ARROW_DECIMALS[kind]), missing),
            strings=lambda vocabulary, codes: pa.array(vocabulary, pa.string()).take(
                pa.array(codes)),
            ints=lambda values: pa.array(values, pa.int64())))


def _decimals(pd: Any, units: np.ndarray, exponent: int, missing: np.ndarray) -> np.ndarray:
    """Exact Decimals (`units` times 10^exponent: 5500, -4 is Decimal("0.5500"), as the API's
    decimal strings give it), None where `missing`: one Decimal per distinct value
    (hashed by pandas, not sorted), picked for every row by one `take`."""
    codes, distinct = pd.factorize(units)
    values = np.empty(len(distinct) + 1, dtype=object)
    values[:-1] = [Decimal(int(u)).scaleb(exponent) for u in distinct]
    values[-1] = None
    codes[missing] = len(distinct)
    return values.take(codes)


def _decimal128(pa: Any, units: np.ndarray, exact: Any, missing: np.ndarray) -> Any:
    """A decimal128 array whose 128-bit units are `units` (little-endian: the value, then
    its sign extended), null where `missing`: the exact value at the type's scale,
    without a Decimal object or a float in between."""
    wide = np.empty((len(units), 2), dtype=np.int64)
    wide[:, 0] = units
    wide[:, 1] = units >> 63
    validity = pa.array(~missing).buffers()[1] if missing.any() else None
    return pa.Array.from_buffers(exact, len(units), [validity, pa.py_buffer(wide)])
