"""The supervisor with real child processes: order, readiness, restart, clean stop."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from pathlib import Path

from ktape.aio import Backoff
from ktape.supervisor import ChildSpec, Supervisor

CHILD = """
import os, signal, sys, time
name, events, ignore_term = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
def log(what):
    with open(events, "a") as f:
        f.write(f"{name} {what} {os.getpid()}\\n")
def on_term(*_):
    if ignore_term:
        log("ignored-term")
        return
    log("term")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
log("start")
print(f"hello from {name}", flush=True)
open(events + "." + name + ".ready", "w").close()
while True:
    time.sleep(0.05)
"""


def _spec(tmp: Path, name: str, deps=(), ignore_term=False, stop_timeout=3.0) -> ChildSpec:
    script = tmp / "child.py"
    script.write_text(CHILD)
    events = tmp / "events.log"
    ready_file = Path(f"{events}.{name}.ready")

    async def ready() -> bool:
        return ready_file.exists()

    return ChildSpec(
        name, [sys.executable, str(script), name, str(events), "1" if ignore_term else "0"],
        ready, depends_on=deps, stop_timeout_secs=stop_timeout, ready_timeout_secs=20,
    )


def _events(tmp: Path) -> list[tuple[str, str, int]]:
    path = tmp / "events.log"
    if not path.exists():
        return []
    return [(a, b, int(c)) for a, b, c in (line.split() for line in path.read_text().splitlines())]


async def _until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_starts_in_dependency_order_and_stops_in_reverse(tmp_path):
    specs = [
        _spec(tmp_path, "envoy", deps=["queryd"]),
        _spec(tmp_path, "queryd", deps=["questdb"]),
        _spec(tmp_path, "questdb"),
    ]
    lines: list[tuple[str, str]] = []
    sup = Supervisor(specs, sink=lambda n, line: lines.append((n, line)))
    await sup.start()
    starts = [n for n, what, _ in _events(tmp_path) if what == "start"]
    assert starts == ["questdb", "queryd", "envoy"]
    assert all(c.ready for c in sup.children.values())
    assert ("queryd", "hello from queryd") in lines
    await sup.stop()
    terms = [n for n, what, _ in _events(tmp_path) if what == "term"]
    assert terms == ["envoy", "queryd", "questdb"]
    assert all(c.process.returncode is not None for c in sup.children.values())


async def test_crashed_child_is_restarted_with_backoff(tmp_path):
    sup = Supervisor(
        [_spec(tmp_path, "queryd")],
        backoff=Backoff(initial_secs=0.2, max_secs=0.4, rng=random.Random(1)),
        sink=lambda n, line: None,
    )
    await sup.start()
    child = sup.children["queryd"]
    first_pid = child.pid
    Path(f"{tmp_path}/events.log.queryd.ready").unlink()
    os.kill(first_pid, signal.SIGKILL)
    await _until(lambda: child.pid != first_pid and child.ready)
    assert child.restarts == 1
    starts = [pid for n, what, pid in _events(tmp_path) if what == "start"]
    assert starts == [first_pid, child.pid]
    await sup.stop()


async def test_child_ignoring_sigterm_is_killed_within_budget(tmp_path):
    sup = Supervisor(
        [_spec(tmp_path, "stubborn", ignore_term=True, stop_timeout=1.0),
         _spec(tmp_path, "polite")],
        stop_budget_secs=15, sink=lambda n, line: None,
    )
    await sup.start()
    stubborn = sup.children["stubborn"]
    began = time.monotonic()
    await sup.stop()
    elapsed = time.monotonic() - began
    assert elapsed < 5
    assert stubborn.process.returncode == -signal.SIGKILL
    assert ("stubborn", "ignored-term") in [(n, w) for n, w, _ in _events(tmp_path)]


async def test_run_stops_everything_when_the_stop_event_fires(tmp_path):
    sup = Supervisor([_spec(tmp_path, "a"), _spec(tmp_path, "b", deps=["a"])],
                     sink=lambda n, line: None)
    stop = asyncio.Event()
    runner = asyncio.create_task(sup.run(stop))
    await _until(lambda: all(c.ready for c in sup.children.values()))
    stop.set()
    await asyncio.wait_for(runner, 15)
    assert [n for n, w, _ in _events(tmp_path) if w == "term"] == ["b", "a"]


async def test_child_that_dies_during_start_fails_start_with_its_output(tmp_path):
    import pytest

    from ktape.supervisor import ChildFailed

    async def never() -> bool:
        return False

    bad = ChildSpec("bad", [sys.executable, "-c", "print('boom: missing config'); raise SystemExit(3)"],
                    never, ready_timeout_secs=10)
    sup = Supervisor([bad], sink=lambda n, line: None)
    with pytest.raises(ChildFailed) as info:
        await sup.start()
    assert info.value.returncode == 3
    assert "boom: missing config" in info.value.tail
    await sup.stop()
