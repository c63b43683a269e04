"""`ktape backfill`: fill series, events and markets (every status) from Kalshi REST, and
with `--candles` Kalshi's candlesticks of markets never recorded live.

Idempotent and resumable by construction: every row is keyed by (ts, ticker) and the
latest version per ticker wins, so an interrupted run is simply run again. REST calls go
through the same rate-limited, 429-aware client as live recording.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

import psycopg

from ingestd.candles_backfill import backfill_candles
from ingestd.kalshi.auth import KalshiSigner
from ingestd.kalshi.rest import KalshiRest, RestError
from ingestd.metadata import MarketRow, MarketRows, record_reference_data, series_of
from ingestd.sink import RowSink
from ingestd.spill import SpillFile
from ingestd.writer import IlpWriter
from ktape.clock import now_us
from ktape.config import load_settings
from ktape.entrypoint import settings_or_report
from ktape.log import configure_logging, get_logger
from ktape.schema import apply_migrations

log = get_logger(__name__)

STATUSES = ("unopened", "open", "paused", "closed", "settled")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ktape backfill",
        description="Fill series, events and markets (and their settlements' metadata) from "
                    "Kalshi REST into QuestDB. Safe to re-run; honours KTAPE_MARKETS.")
    parser.add_argument("--status", action="append", choices=STATUSES,
                        help="market statuses to fetch (repeatable; default: all)")
    parser.add_argument("--candles", action="store_true",
                        help="also backfill Kalshi's candlesticks of markets never recorded live")
    parser.add_argument("--period", type=int, choices=(1, 60, 1440), default=60,
                        help="candle period in minutes (default 60)")
    parser.add_argument("--since-days", type=int, default=30,
                        help="how far back to fetch candles (default 30 days)")
    return parser


async def _run(statuses: Sequence[str], *, candles: bool = False, period: int = 60,
               since_days: int = 30) -> int:
    settings = load_settings()
    with psycopg.connect(settings.questdb_pg_conninfo, autocommit=True, connect_timeout=10) as c:
        apply_migrations(c)
    signer = (KalshiSigner.from_pem_file(settings.kalshi_key_id, settings.kalshi_private_key_path)
              if settings.kalshi_key_id and settings.kalshi_private_key_path else None)
    rest = KalshiRest(settings.kalshi_rest_url, signer)
    writer = IlpWriter(str(settings.questdb_http),
                       SpillFile(settings.spill_dir / "backfill.spill", 1 << 30))
    sink = RowSink(writer)  # no live fan-out: nobody follows a backfill
    market_rows = MarketRows(sink)
    try:
        counts = await record_reference_data(rest, sink, now_us(), source="backfill")
        total = 0
        wanted: list[dict] = []
        for status in statuses:
            markets = await rest.markets(status=status)
            matching = [m for m in markets if isinstance(m.get("ticker"), str)
                        and settings.markets.matches(m["ticker"], series_of(m))]
            for market in matching:
                market_rows.record(MarketRow.from_market(market, series_of(market)), "rest",
                                   now_us())
            total += len(markets)
            wanted += matching
            await writer.flush()
            log.info("backfill.markets", status=status, markets=len(markets))
        if candles:
            now = now_us() // 1_000_000
            counts.update(await backfill_candles(
                rest, writer, settings.questdb_pg_conninfo, wanted, period=period,
                since_ts=now - since_days * 86_400, now_ts=now))
    except RestError as exc:
        log.error("backfill.failed", error=str(exc))
        return 1
    finally:
        await writer.close()
        await rest.close()
    if writer.spill.size:
        log.error("backfill.incomplete", spill_bytes=writer.spill.size,
                  hint="QuestDB was unreachable; rows are in the spill file, run again")
        return 1
    log.info("backfill.done", markets=total, **counts)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if settings_or_report("ktape backfill") is None:
        return 2
    configure_logging(component="backfill")
    return asyncio.run(_run(args.status or STATUSES, candles=args.candles, period=args.period,
                            since_days=args.since_days))


if __name__ == "__main__":  # `ktape backfill` runs this module as its own process
    raise SystemExit(main())
