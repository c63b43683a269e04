"""Run by the clean-venv test (tests/integration/client/test_client.py) with only
ktape-client (and pandas) installed: exercises the client against a live edge and prints
one JSON object of findings. Arguments: TARGET TICKER."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from decimal import Decimal

import ktape_client
from ktape_client import AsyncClient, AuthenticationError, Client, InvalidArgumentError, NotFoundError

target, ticker = sys.argv[1], sys.argv[2]


def _name(message, field: str) -> str:
    """An enum field's value name (the raw messages `deltas` iterates carry numbers)."""
    enum = message.DESCRIPTOR.fields_by_name[field].enum_type
    return enum.values_by_number[getattr(message, field)].name


out: dict = {"module": ktape_client.__file__}
key = os.environ["KTAPE_API_KEY"]
start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
end = dt.datetime.now(dt.UTC).isoformat()  # fixed: the feed keeps recording meanwhile

with Client(target=target) as client:
    out["repr_hides_key"] = key not in repr(client) and key[12:] not in repr(client)
    book = client.orderbook(ticker, depth=5)
    out["book"] = {"continuity": book.continuity.status,
                   "decimal": all(isinstance(lv.price, Decimal) and isinstance(lv.quantity, Decimal)
                                  for lv in (*book.yes, *book.no)),
                   "implied_ask_ok": book.best_yes_ask == Decimal(1) - book.best_no_bid
                   if book.no else True, "levels": len(book.yes) + len(book.no),
                   "spread": str(book.spread)}
    small = list(client.deltas(ticker, start=start, end=end, page_size=7))
    big = list(client.deltas(ticker, start=start, end=end, page_size=1000))
    keys = [(d.ts.seconds, d.ts.nanos, d.sid, d.seq, d.side, d.price) for d in small]
    open_end = list(client.deltas(ticker, start=start, page_size=7))  # end: now, kept by paging
    open_keys = {(d.ts.seconds, d.ts.nanos, d.sid, d.seq, d.side, d.price) for d in open_end}
    out["paging"] = {"small": len(small), "big": len(big), "unique": len(set(keys)),
                     "same": [k for k in keys] == [(d.ts.seconds, d.ts.nanos, d.sid, d.seq,
                                                    d.side, d.price) for d in big],
                     "open_end": len(open_end), "open_unique": len(open_keys)}
    frame = client.deltas(ticker, start=start).to_df()
    out["frame"] = {"rows": len(frame), "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
                    "price_type": type(frame["price"].dropna().iloc[0]).__name__
                    if frame["price"].notna().any() else None,
                    "causes": sorted(set(frame["cause"])),
                    "delta_causes": sorted({_name(d, "cause") for d in small
                                            if _name(d, "kind") == "DELTA_KIND_DELTA"})}
    # The frame is read as columns, the iteration as messages: the same rows, exactly.
    same = client.deltas(ticker, start=start, end=end).to_df()

    def _text(value) -> str:
        return "" if value is None else str(value)

    from_frame = [
        (int(r.ts.value // 1000), r.seq, r.sid, r.kind, r.side, _text(r.price), _text(r.delta),
         _text(r.quantity), r.cause, -1 if r.receive_time is None or str(r.receive_time) == "NaT"
         else int(r.receive_time.value // 1000), r.gap_reason)
        for r in same.itertuples()]
    from_messages = [
        (d.ts.ToMicroseconds(), d.seq, d.sid, _name(d, "kind").removeprefix("DELTA_KIND_").lower(),
         _name(d, "side").removeprefix("SIDE_").lower(), d.price, d.delta, d.quantity,
         _name(d, "cause").removeprefix("DELTA_CAUSE_").lower(),
         d.receive_time.ToMicroseconds() if d.HasField("receive_time") else -1,
         d.gap.reason if d.HasField("gap") else "")
        for d in big]
    out["frame"]["equals_messages"] = from_frame == from_messages
    out["frame"]["first_difference"] = next(  # or the lengths differ
        (str((a, b)) for a, b in zip(from_frame, from_messages, strict=False) if a != b),
        f"{len(from_frame)} rows against {len(from_messages)}")
    steps = list(client.replay(ticker, start=start, end=end))
    final = steps[-1][1] if steps else None
    just_before_end = dt.datetime.fromisoformat(end) - dt.timedelta(microseconds=1)
    stored = client.orderbook(ticker, at=just_before_end, depth=1000)
    out["replay"] = {"steps": len(steps), "equals_book": final is not None and
                     (final.yes, final.no) == (stored.yes, stored.no),
                     "continuity": final.continuity.status if final else None}
    out["markets"] = len(list(client.markets()))
    out["trades_df_cols"] = list(client.trades(ticker, start=start).to_df().columns)
    errors = {}
    try:
        client.orderbook("KXNOPE-1")
    except NotFoundError as exc:
        errors["not_found"] = exc.reason
    try:
        list(client.candles(ticker, start=start, interval="5m"))
    except InvalidArgumentError as exc:
        errors["invalid_field"] = exc.field
    out["errors"] = errors
    stream_items = []
    for item in client.stream(ticker):
        stream_items.append(type(item).__name__)
        if len(stream_items) >= 3:
            break
    out["stream"] = stream_items
    # billing self-service
    account_id = client.account().account_id
    usage = client.usage().to_df()
    created = client.create_key(name="client-checks", env="dev")
    with Client(api_key=created.secret, target=target) as second:
        same_account = second.account().account_id == account_id
    listed = client.keys().to_df()
    revoked = client.delete_key(created.key_id)
    packs = client.credit_packs()
    out["billing"] = {
        "usage_columns": list(usage.columns), "usage_calls_dtype": str(usage["calls"].dtype),
        "secret_hidden": created.secret not in repr(created),
        "secret_env": created.secret.split("_")[1], "new_key_works": same_account,
        "listed": created.key_id in set(listed["key_id"]),
        "listed_env": listed.set_index("key_id").loc[created.key_id, "env"],
        "revoked": revoked.HasField("revoke_time"), "packs": len(packs),
        "checkout_url": client.checkout(packs[0].pack_id).startswith("http")}

with Client(api_key="", target=target) as anonymous:
    os.environ.pop("KTAPE_API_KEY")
    try:
        Client(api_key=None, target=target).orderbook(ticker)
    except AuthenticationError as exc:
        out["no_key"] = exc.reason


async def main() -> None:
    async with AsyncClient(key, target) as client:
        book = await client.orderbook(ticker)
        out["async_book_levels"] = len(book.yes) + len(book.no)
        out["async_deltas"] = len([d async for d in client.deltas(ticker, start=start)])


asyncio.run(main())
print(json.dumps(out))
