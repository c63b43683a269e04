"""An asyncio process supervisor: start in dependency order, restart on crash, stop cleanly.

Why our own (≈300 lines) rather than supervisord/circus: `ktape up` must run in the
foreground as one process tree, start children only once their dependencies answer a
readiness probe (QuestDB before ingestd, services before Envoy), forward Ctrl-C/SIGTERM,
and stop everything in reverse order within a hard budget (15 s) — supervisord daemonises
and knows nothing of readiness; circus pulls in ZeroMQ. Nothing here is ktape-specific:
`ktape/stack.py` says *what* to run.

Restart policy: a child that exits while the stack is running is restarted after a
capped, jittered exponential backoff (STYLE.md §4); the backoff resets once a child has
stayed up for `stable_after_secs`. Every exit is logged with its return code and the last
lines it printed, so the *why* is in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ktape.aio import Backoff, cancel_and_wait
from ktape.log import get_logger

log = get_logger(__name__)

ReadinessProbe = Callable[[], Awaitable[bool]]
OutputSink = Callable[[str, str], None]


@dataclass(frozen=True)
class ChildSpec:
    """What to run and how to know it is ready."""

    name: str
    argv: Sequence[str]
    ready: ReadinessProbe
    env: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[str] = ()
    ready_timeout_secs: float = 60.0
    stop_timeout_secs: float = 8.0
    cwd: str | None = None


class ChildState:
    """Runtime state of one supervised child (exposed for status and tests)."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.ready = False
        self.started_at: float | None = None
        self.tail: deque[str] = deque(maxlen=20)
        self.pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "pid": self.pid,
            "ready": self.ready,
            "restarts": self.restarts,
            "uptime_secs": round(time.monotonic() - self.started_at, 1)
            if self.started_at and self.process and self.process.returncode is None
            else None,
        }


def default_sink(name: str, line: str) -> None:
    """Forward a child's output line to our stdout.

    Children log JSON already (with their own `component`); anything else is wrapped so
    the merged stream stays one JSON object per line.
    """
    if line.startswith("{") and line.endswith("}"):
        print(line, flush=True)
    else:
        log.info("child.output", component=name, line=line)


class Supervisor:
    """Run `specs` as one stack. Use `await sup.run(stop_event)` or start()/stop()."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        backoff: Backoff | None = None,
        stable_after_secs: float = 30.0,
        stop_budget_secs: float = 15.0,
        sink: OutputSink = default_sink,
        on_change: Callable[[Supervisor], None] | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate child names: {names}")
        self.order = _dependency_order(specs)
        self.children = {s.name: ChildState(s) for s in self.order}
        self.backoff = backoff or Backoff()
        self.stable_after_secs = stable_after_secs
        self.stop_budget_secs = stop_budget_secs
        self.sink = sink
        self.on_change = on_change
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start every child in dependency order, each only after it answers ready."""
        for spec in self.order:
            if self._stopping:
                return
            child = self.children[spec.name]
            await self._spawn(child)
            await self._wait_ready(child)
            self._watchers.append(
                asyncio.create_task(self._watch(child), name=f"watch-{spec.name}")
            )
        log.info("supervisor.ready", children=[s.name for s in self.order])

    async def run(self, stop: asyncio.Event) -> None:
        """Start, then block until `stop` is set, then stop everything."""
        try:
            start = asyncio.create_task(self.start(), name="supervisor-start")
            stop_wait = asyncio.create_task(stop.wait(), name="supervisor-stop-wait")
            done, _ = await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if start in done:
                start.result()  # raise start-up failures
                await stop_wait
            else:
                start.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await start
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Stop in reverse dependency order within `stop_budget_secs` in total."""
        self._stopping = True
        await cancel_and_wait(self._watchers)
        self._watchers.clear()
        deadline = time.monotonic() + self.stop_budget_secs
        for spec in reversed(self.order):
            child = self.children[spec.name]
            remaining = max(0.5, deadline - time.monotonic())
            await self._terminate(child, min(spec.stop_timeout_secs, remaining))
        log.info("supervisor.stopped")

    # -- internals -------------------------------------------------------------------

    async def _spawn(self, child: ChildState) -> None:
        spec = child.spec
        env = {**os.environ, **spec.env}
        child.process = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=spec.cwd,
            start_new_session=True,  # our signals reach children only through us
            limit=1 << 20,
        )
        child.ready = False
        child.started_at = time.monotonic()
        child.tail.clear()
        child.pump = asyncio.create_task(self._pump(child), name=f"pump-{spec.name}")
        log.info("child.started", component=spec.name, pid=child.process.pid)
        self._changed()

    async def _pump(self, child: ChildState) -> None:
        assert child.process is not None and child.process.stdout is not None
        stream = child.process.stdout
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the limit: skip what's buffered
                raw = await stream.read(1 << 20)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\n")
            child.tail.append(line)
            self.sink(child.spec.name, line)

    async def _wait_ready(self, child: ChildState) -> None:
        spec = child.spec
        deadline = time.monotonic() + spec.ready_timeout_secs
        assert child.process is not None
        while time.monotonic() < deadline:
            if child.process.returncode is not None:
                raise ChildFailed(spec.name, child.process.returncode, list(child.tail))
            try:
                if await spec.ready():
                    child.ready = True
                    log.info("child.ready", component=spec.name, pid=child.process.pid)
                    self._changed()
                    return
            except Exception as exc:  # a probe must never kill the supervisor
                log.debug("child.probe_failed", component=spec.name, error=repr(exc))
            await asyncio.sleep(0.2)
        raise ChildFailed(spec.name, None, list(child.tail), reason="not ready in time")

    async def _watch(self, child: ChildState) -> None:
        """Restart `child` whenever it exits while the stack is up."""
        attempt = 0
        while not self._stopping:
            assert child.process is not None
            returncode = await child.process.wait()
            if child.pump:
                with contextlib.suppress(asyncio.CancelledError):
                    await child.pump
            if self._stopping:
                return
            child.ready = False
            uptime = time.monotonic() - (child.started_at or time.monotonic())
            if uptime >= self.stable_after_secs:
                attempt = 0
            delay = self.backoff.delay(attempt)
            attempt += 1
            log.error(
                "child.exited",
                component=child.spec.name,
                pid=child.process.pid,
                returncode=returncode,
                uptime_secs=round(uptime, 2),
                restart_in_secs=round(delay, 2),
                last_output=list(child.tail)[-5:],
            )
            self._changed()
            await asyncio.sleep(delay)
            if self._stopping:
                return
            child.restarts += 1
            try:
                await self._spawn(child)
                await self._wait_ready(child)
            except ChildFailed as exc:
                log.error("child.restart_failed", component=child.spec.name, error=str(exc))
                if child.process and child.process.returncode is None:
                    await self._terminate(child, child.spec.stop_timeout_secs)

    async def _terminate(self, child: ChildState, timeout_secs: float) -> None:
        proc = child.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout_secs)
            log.info("child.stopped", component=child.spec.name, pid=proc.pid,
                     returncode=proc.returncode)
        except TimeoutError:
            log.warning("child.killed", component=child.spec.name, pid=proc.pid,
                        after_secs=round(timeout_secs, 2))
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if child.pump:
            with contextlib.suppress(asyncio.CancelledError):
                await child.pump
        child.ready = False
        self._changed()

    def _changed(self) -> None:
        if self.on_change:
            self.on_change(self)

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.children[s.name].snapshot() for s in self.order]


class ChildFailed(RuntimeError):
    """A child died or never became ready during start-up."""

    def __init__(
        self, name: str, returncode: int | None, tail: list[str], reason: str = "exited"
    ) -> None:
        self.name = name
        self.returncode = returncode
        self.tail = tail
        super().__init__(
            f"{name} {reason} (returncode={returncode}); last output: {tail[-5:]}"
        )


def _dependency_order(specs: Sequence[ChildSpec]) -> list[ChildSpec]:
    """Topological order, stable with respect to the given order."""
    by_name = {s.name: s for s in specs}
    for spec in specs:
        for dep in spec.depends_on:
            if dep not in by_name:
                raise ValueError(f"{spec.name} depends on unknown child {dep!r}")
    ordered: list[ChildSpec] = []
    state: dict[str, str] = {}

    def visit(spec: ChildSpec) -> None:
        mark = state.get(spec.name)
        if mark == "done":
            return
        if mark == "visiting":
            raise ValueError(f"dependency cycle through {spec.name!r}")
        state[spec.name] = "visiting"
        for dep in spec.depends_on:
            visit(by_name[dep])
        state[spec.name] = "done"
        ordered.append(spec)

    for spec in specs:
        visit(spec)
    return ordered
