"""ingestd: records every Kalshi order-book change exactly into QuestDB, detects and heals
gaps, and loses nothing when QuestDB is down (spill + replay + dedup)."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from ingestd.app import main as app_main

    return app_main(argv)
