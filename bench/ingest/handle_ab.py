"""The frame handler of two checkouts side by side: did a change to the hot path cost CPU?

Intent: "old vs new in one run". Stage 2 of pipeline.py (JSON frames through
`Feed.handle`: parse, exact normalisation, sequence check, book update, ILP row, no
network) for each tree in turn, interleaved `--rounds` times, best of 5 per round.
A tree is a checkout whose generated stubs exist (copy ktape/marketdata and
ktape/billing from a built tree into a `git worktree`).

Run: .venv/bin/python bench/ingest/handle_ab.py OLD_TREE NEW_TREE [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

# Stage 2's loop, written out here rather than imported from pipeline.py: the old tree's
# pipeline.py has no such function, and both trees must run exactly this code.
ONE_TREE = r"""
import sys, tempfile, time
from pathlib import Path
tree = sys.argv[1]
sys.path.insert(0, tree)
from bench.ingest.pipeline import END_TO_END_T0, frames
from ingestd.spill import SpillFile
from ingestd.writer import IlpWriter
from ktape.config import MarketFilter
try:  # the pipeline of issue 14: a Kalshi adapter writing to a row sink
    import ingestd.kalshi.feed as module
    from ingestd.sink import RowSink
    def make(writer):
        return module.KalshiFeed("ws://x/trade-api/ws/v2", RowSink(writer), MarketFilter(all=True))
except ImportError:  # before it: one Feed class given the writer
    import ingestd.feed as module
    def make(writer):
        return module.Feed("ws://x/trade-api/ws/v2", writer, MarketFilter(all=True))
assert module.__file__.startswith(tree), module.__file__
data = frames(300_000, 500)


async def rate():  # in a loop: a crossed book's snapshot request spawns a task
    best = 0.0
    for _ in range(5):
        sink = IlpWriter("127.0.0.1:9", SpillFile(Path(tempfile.mkdtemp()) / "a.spill", 1 << 34),
                         flush_rows=10**12)
        feed = make(sink)
        began = time.perf_counter()
        for i, frame in enumerate(data):
            feed.handle(frame, END_TO_END_T0 * 1000 + i)
            if i % 50_000 == 0:
                sink._reset()
        best = max(best, len(data) / (time.perf_counter() - began))
    return best


import asyncio
best = asyncio.run(rate())
print(round(best))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[int]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for name in ("old", "new"):
            tree = str(getattr(args, name).resolve())
            out = subprocess.run([sys.executable, "-c", ONE_TREE, tree], check=True,
                                 capture_output=True, text=True, cwd="/")
            results[name].append(int(out.stdout.split()[-1]))
    for name, rates in results.items():
        print(f"{name}: handle_msgs_per_sec best of 5 per round = "
              f"{', '.join(f'{r:,}' for r in rates)}")


if __name__ == "__main__":
    main()
