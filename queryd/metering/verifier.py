"""API-key verification with a short cache, single-flight, and a bounded outage grace.

Why cache: asking billingd on every call would double every call's latency and make
billingd a per-call dependency. Verdicts (good and bad) are kept for `ttl` seconds
(default 4 s), so a revoked key or a suspended account fails everywhere within 5 s.
Concurrent calls with one key share a single in-flight verification. When billingd is
unreachable, a key verified before keeps working for `grace` seconds past its last
verification (reads are not blocked by a short billing outage); unknown keys, and all
keys after the grace, get UNAVAILABLE with RetryInfo.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ktape.billing.v1 import billing_pb2, metering_pb2
from ktape.billing.v1 import metering_pb2_grpc as metering_grpc
from ktape.errors import KtapeError, Unavailable
from ktape.log import get_logger

log = get_logger(__name__)

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
DEFINITIVE_CODES = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


@dataclass(frozen=True)
class Grant:
    """What billingd said about a key, and when (monotonic seconds)."""

    account_id: str
    key_id: str
    env: str  # "dev" | "prod"
    plan: str
    admin: bool
    available: int  # credits (prod) or sandbox calls (dev) at `fetched`
    postpaid: bool
    rate_limit_per_minute: int
    fetched: float
    csrf_sha256: str = ""  # a console session's CSRF token, hashed; "" for a key


class RelayedError(KtapeError):
    """billingd's own rich status, passed on to the caller unchanged."""

    def __init__(self, status: status_pb2.Status) -> None:
        reason = ""
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
        super().__init__(status.message, reason=reason or None)
        self.grpc_code = _STATUS_CODES.get(status.code, grpc.StatusCode.UNKNOWN)
        self.status = status

    def to_status(self) -> status_pb2.Status:
        return self.status


@dataclass
class _Entry:
    grant: Grant | None
    error: status_pb2.Status | None
    fetched: float  # last answer from billingd
    checked: float  # last attempt to ask (an outage re-serves the stale answer until ttl)


SESSION_PREFIX = "session:"  # a credential that is a console session cookie, not a key


class KeyVerifier:
    def __init__(self, stub: metering_grpc.MeteringServiceStub, *, ttl: float = 4.0,
                 grace: float = 120.0, timeout: float = 2.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stub = stub
        self.ttl = ttl
        self.grace = grace
        self._timeout = timeout
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Future[_Entry]] = {}
        self.remote_calls = 0

    async def verify(self, api_key: str) -> Grant:
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        entry = self._cache.get(digest)
        if entry is None or self._clock() - entry.checked >= self.ttl:
            entry = await self._refresh(digest, api_key, entry)
        if entry.error is not None:
            raise RelayedError(entry.error)
        assert entry.grant is not None
        return entry.grant

    async def _refresh(self, digest: str, api_key: str, stale: _Entry | None) -> _Entry:
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            entry = await self._fetch(api_key, stale)
            self._store(digest, entry)
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[digest]

    async def _fetch(self, api_key: str, stale: _Entry | None) -> _Entry:
        self.remote_calls += 1
        try:
            request = (metering_pb2.VerifyApiKeyRequest(
                session_token=api_key.removeprefix(SESSION_PREFIX))
                if api_key.startswith(SESSION_PREFIX)
                else metering_pb2.VerifyApiKeyRequest(api_key=api_key))
            reply = await self._stub.VerifyApiKey(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            now = self._clock()
            if exc.code() in DEFINITIVE_CODES:
                status = rpc_status.from_call(exc) or status_pb2.Status(
                    code=exc.code().value[0], message=exc.details() or "")
                return _Entry(None, status, now, now)
            age = now - stale.fetched if stale else None
            if stale is not None and stale.grant is not None and age is not None \
                    and age < self.ttl + self.grace:
                log.warning("metering.verify_stale", key_id=stale.grant.key_id,
                            age_secs=round(age, 1), error=exc.code().name)
                return _Entry(stale.grant, None, stale.fetched, now)
            log.error("metering.verify_failed", error=exc.code().name, details=exc.details())
            raise Unavailable("billing is unavailable; retry shortly",
                              reason="BILLING_UNAVAILABLE", retry_after_secs=2.0) from None
        env = "dev" if reply.env == billing_pb2.KEY_ENV_DEV else "prod"
        grant = Grant(reply.account_id, reply.key_id, env, reply.plan, reply.admin,
                      reply.available_credits, reply.postpaid, reply.rate_limit_per_minute,
                      self._clock(), reply.csrf_token_sha256)
        return _Entry(grant, None, grant.fetched, grant.fetched)

    def _store(self, digest: str, entry: _Entry) -> None:
        self._cache.pop(digest, None)
        self._cache[digest] = entry
        while len(self._cache) > self._max_entries:
            self._cache.pop(next(iter(self._cache)))
