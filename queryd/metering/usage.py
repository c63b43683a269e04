"""Usage events batched to billingd, never lost: memory queue, retries, disk spool.

Why batches: one RecordUsage per call would make billing a per-call dependency. Events
are sent every `interval` seconds or as soon as `batch_size` are waiting. A failed send
keeps the events queued and retries with capped backoff; billingd applies each event id
once, so a batch that timed out after being applied is harmless to resend. When the
queue grows past `max_queue` (a long billingd outage) or queryd stops with events
unsent, they are written to the spool directory and sent from there later — by this
process or the next one to start with the same data dir. Several queryd replicas share
one spool directory: any of them may send a file (event ids make a double send
harmless), and a file another one already sent and deleted is skipped.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import defaultdict
from pathlib import Path

import grpc

from ktape.billing.v1 import metering_pb2
from ktape.billing.v1 import metering_pb2_grpc as metering_grpc
from ktape.log import get_logger

log = get_logger(__name__)

Owner = tuple[str, str]  # (account_id, env): whose local spend an event counts against


def _mtime(path: Path) -> float:
    """A spool file's age, for oldest-first replay; one another replica just deleted
    sorts first and is then skipped."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


class UsageRecorder:
    def __init__(self, stub: metering_grpc.MeteringServiceStub, spool_dir: Path, *,
                 batch_size: int = 500, interval: float = 1.0, max_queue: int = 200_000,
                 timeout: float = 5.0) -> None:
        self._stub = stub
        self.spool_dir = spool_dir
        self.batch_size = batch_size
        self.interval = interval
        self.max_queue = max_queue
        self._timeout = timeout
        self._queue: list[tuple[metering_pb2.UsageEvent, Owner, int]] = []
        self._pending: dict[Owner, int] = defaultdict(int)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.sent = 0
        self.failures = 0

    # -- the hot path ----------------------------------------------------------------

    def add(self, event: metering_pb2.UsageEvent, owner: Owner, units: int) -> None:
        """Queue one event; `units` is what it takes off the owner's local availability."""
        self._queue.append((event, owner, units))
        self._pending[owner] += units
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def pending(self, owner: Owner) -> int:
        """Units queued or in flight for `owner`, not yet acknowledged by billingd."""
        return self._pending.get(owner, 0)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- sending ---------------------------------------------------------------------

    async def flush(self) -> bool:
        """Send everything queued when called; False if billingd did not take it all."""
        async with self._lock:
            # Only what is queued now: events added while a batch is in flight wait for the
            # next flush instead of being chased in a stream of tiny batches.
            remaining = len(self._queue)
            while remaining > 0:
                batch = self._queue[: min(self.batch_size, remaining)]
                remaining -= len(batch)
                request = metering_pb2.RecordUsageRequest(events=[e for e, _, _ in batch])
                try:
                    await self._stub.RecordUsage(request, timeout=self._timeout)
                except grpc.aio.AioRpcError as exc:
                    self.failures += 1
                    log.warning("usage.flush_failed", events=len(batch), queued=len(self._queue),
                                error=exc.code().name, details=exc.details())
                    if len(self._queue) > self.max_queue:
                        self._spool_queue("queue over limit during billing outage")
                    return False
                del self._queue[: len(batch)]
                for _event, owner, units in batch:
                    self._settle(owner, units)
                self.sent += len(batch)
            return True

    def _settle(self, owner: Owner, units: int) -> None:
        left = self._pending.get(owner, 0) - units
        if left > 0:
            self._pending[owner] = left
        else:
            self._pending.pop(owner, None)

    async def run(self) -> None:
        """Flush every `interval` (sooner when a batch fills); back off while failing."""
        backoff = self.interval
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except TimeoutError:
                pass
            self._wake.clear()
            ok = await self.flush() and await self.replay_spool()
            backoff = self.interval if ok else min(backoff * 2, 30.0)

    async def close(self) -> None:
        """Last flush at shutdown; whatever billingd does not take is spooled to disk."""
        while self._queue and await self.flush():
            pass
        async with self._lock:
            self._spool_queue("billing unreachable at shutdown")  # no-op when all were sent

    # -- the spool -------------------------------------------------------------------

    def _spool_queue(self, why: str) -> None:
        if not self._queue:
            return
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        request = metering_pb2.RecordUsageRequest(events=[e for e, _, _ in self._queue])
        path = self.spool_dir / f"usage-{uuid.uuid4().hex}.pb"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(request.SerializeToString())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        tmp.rename(path)
        log.warning("usage.spooled", events=len(self._queue), path=str(path), why=why)
        for _event, owner, units in self._queue:
            self._settle(owner, units)
        self._queue.clear()

    async def replay_spool(self) -> bool:
        """Send spooled batches (oldest first), deleting each file once billingd took it."""
        if not self.spool_dir.exists():
            return True
        for path in sorted(self.spool_dir.glob("usage-*.pb"), key=_mtime):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue  # another replica (same data dir) replayed it meanwhile
            request = metering_pb2.RecordUsageRequest.FromString(data)
            for start in range(0, len(request.events), self.batch_size):
                chunk = metering_pb2.RecordUsageRequest(
                    events=request.events[start:start + self.batch_size])
                try:
                    await self._stub.RecordUsage(chunk, timeout=self._timeout)
                except grpc.aio.AioRpcError as exc:
                    log.warning("usage.replay_failed", path=str(path), error=exc.code().name)
                    return False
            path.unlink(missing_ok=True)  # two replicas may both send it: applied once
            self.sent += len(request.events)
            log.info("usage.replayed", path=str(path), events=len(request.events))
        return True
