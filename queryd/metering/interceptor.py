"""The metering interceptor: authenticate, rate limit, check credits, record usage.

Order per call (before the handler runs): bearer key from metadata `authorization` (or
the console's session cookie, metered to the person's "console playground" key)
-> cached verification (UNAUTHENTICATED / PERMISSION_DENIED relayed from billingd with
their details) -> per-key token bucket (RESOURCE_EXHAUSTED + RetryInfo + QuotaFailure)
-> credits or sandbox calls available, counting usage this process has served but
billingd has not yet booked (RESOURCE_EXHAUSTED + QuotaFailure; a paging request gets
its page_token back in ErrorInfo metadata `resume_page_token`). After the handler
succeeds, one usage event is queued; a failed call costs nothing. Streams pay per
started minute and are re-checked as they run: a key revoked or out of credits ends
its open streams too. Health and reflection are free and need no key.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message as pb_message
from google.protobuf import timestamp_pb2

from ktape.billing.v1 import metering_pb2
from ktape.errors import (
    InsufficientCredits,
    KtapeError,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    abort_with,
)
from ktape.log import get_logger
from ktape.marketdata.v1 import marketdata_pb2
from ktape.pricing import SESSION_WRITES, STREAM_PRICES_PER_MINUTE, is_free, price_of
from ktape.sessions import session_cookie
from queryd.metering.ratelimit import RateLimiter, replica_share
from queryd.metering.usage import UsageRecorder
from queryd.metering.verifier import SESSION_PREFIX, Grant, KeyVerifier

# The admitted caller of the call being served, for handlers that charge by what they
# serve (dataset downloads): set by the interceptor around the handler, per call.
CALLER: contextvars.ContextVar[Grant | None] = contextvars.ContextVar("ktape_caller",
                                                                      default=None)
log = get_logger(__name__)

STREAM_MINUTE_SECS = 60.0
STREAM_RECHECK_SECS = 1.0  # an open stream's key is re-checked at most this often


def bearer_key(metadata: Any) -> str:
    """The caller's credential: the bearer key, else the console's session cookie (as
    `session:<value>`, which the verifier sends to billingd as a session)."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    else:
        session = session_cookie(metadata)
        if session is not None:
            return SESSION_PREFIX + session
    raise Unauthenticated("missing API key: send 'Authorization: Bearer kt_...'",
                          reason="API_KEY_MISSING")


def check_csrf(grant: Grant, metadata: Any) -> None:
    """A cookie-authenticated write must carry the session's CSRF token (CONTRACT.md):
    compared by hash, so queryd never holds the token itself."""
    given = next((str(v) for k, v in metadata or () if k == "x-csrf-token"), "")
    digest = hashlib.sha256(given.encode()).hexdigest()
    if not given or not grant.csrf_sha256 or not hmac.compare_digest(digest, grant.csrf_sha256):
        raise PermissionDenied("a cookie-authenticated write needs the X-CSRF-Token header "
                               "(GET /v1/auth/session gives it)", reason="CSRF_TOKEN_MISSING")


def answer_in_gap(response: pb_message.Message) -> bool:
    """Whether an answer fell inside a recorded gap (then its credits are refundable)."""
    fields = response.DESCRIPTOR.fields_by_name
    if fields.get("continuity") is not None:
        return response.continuity.status == marketdata_pb2.CONTINUITY_STATUS_GAP  # type: ignore[attr-defined]
    if fields.get("deltas") is not None:
        if any(d.kind == marketdata_pb2.DELTA_KIND_GAP for d in response.deltas):  # type: ignore[attr-defined]
            return True
        # a page laid out as columns holds its gap markers as GAP entries
        return fields.get("columns") is not None and \
            marketdata_pb2.DELTA_KIND_GAP in response.columns.kinds  # type: ignore[attr-defined]
    return False


def end_message(message_type: type[pb_message.Message], error: KtapeError) -> Any:
    """The stream's explicit last message for an error (streams end with `end`, never
    a silent close: NDJSON and SSE clients cannot see gRPC trailers)."""
    out = message_type()
    out.end.code = error.grpc_code.name  # type: ignore[attr-defined]
    out.end.message = error.message  # type: ignore[attr-defined]
    out.end.reason = error.reason  # type: ignore[attr-defined]
    return out


def answer_span(request: Any, now: timestamp_pb2.Timestamp,
                event: metering_pb2.UsageEvent) -> None:
    """The market time a request asked about: its `at` (default now) or its
    [start_time, end_time) (end default now), for refunds of gaps recorded later."""
    fields = request.DESCRIPTOR.fields_by_name
    if "at" in fields:
        at = request.at if request.HasField("at") else now
        event.answer_start_time.CopyFrom(at)
        event.answer_end_time.CopyFrom(at)
    elif "start_time" in fields and request.HasField("start_time"):
        event.answer_start_time.CopyFrom(request.start_time)
        event.answer_end_time.CopyFrom(
            request.end_time if "end_time" in fields and request.HasField("end_time") else now)


def _now_timestamp() -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(dt.datetime.now(dt.UTC))
    return out


def _seconds_to_utc_midnight() -> float:
    now = dt.datetime.now(dt.UTC)
    tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


class MeteringInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, verifier: KeyVerifier, recorder: UsageRecorder,
                 limiter: RateLimiter | None = None,
                 clock: Callable[[], float] = time.monotonic, replicas: int = 1) -> None:
        self.verifier = verifier
        self.replicas = replicas  # queryd replicas sharing each key's rate limit
        self.recorder = recorder
        self.limiter = limiter or RateLimiter()
        self._clock = clock
        # (account, env) -> (snapshot time it belongs to, units spent here since then)
        self._spent: dict[tuple[str, str], tuple[float, int]] = {}

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or is_free(method):
            return handler
        metadata = handler_call_details.invocation_metadata
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, metadata, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, metadata, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # no client-streaming RPCs exist; never reached

    # -- admission -------------------------------------------------------------------

    def _available(self, grant: Grant) -> int:
        owner = (grant.account_id, grant.env)
        snapshot, spent = self._spent.get(owner, (-1.0, 0))
        if snapshot != grant.fetched:
            # A newer snapshot from billingd: it already counts what billingd booked, so
            # only what is still queued here comes off it.
            spent = self.recorder.pending(owner)
            self._spent[owner] = (grant.fetched, spent)
        return grant.available - spent

    def _charge(self, grant: Grant, method: str, credits: int, *, ticker: str = "",
                in_gap: bool = False, continuation: bool = False, request: Any = None) -> None:
        owner = (grant.account_id, grant.env)
        units = 1 if grant.env == "dev" else credits
        snapshot, spent = self._spent.get(owner, (grant.fetched, 0))
        self._spent[owner] = (snapshot, spent + units)
        now = _now_timestamp()
        event = metering_pb2.UsageEvent(
            event_id=uuid.uuid4().hex, key_id=grant.key_id, method=method, credits=credits,
            time=now, ticker=ticker, in_gap=in_gap, continuation=continuation)
        if ticker and request is not None:
            answer_span(request, now, event)
        self.recorder.add(event, owner, units)

    def _check_funds(self, grant: Grant, credits: int, request: Any) -> None:
        need = 1 if grant.env == "dev" else credits
        available = self._available(grant)
        if available >= need:
            return
        metadata = {"account_id": grant.account_id, "needed": str(need),
                    "available": str(max(0, available))}
        token = getattr(request, "page_token", "")
        if token:
            metadata["resume_page_token"] = token
        if grant.env == "dev":
            raise InsufficientCredits(
                "sandbox quota of this dev key's account is used up for today",
                reason="SANDBOX_QUOTA_EXCEEDED", subject=f"account:{grant.account_id}",
                retry_after_secs=_seconds_to_utc_midnight(), metadata=metadata)
        if grant.postpaid:
            raise InsufficientCredits("monthly spending cap reached", reason="SPENDING_CAP_REACHED",
                                      subject=f"account:{grant.account_id}", metadata=metadata)
        raise InsufficientCredits(f"{need} credits needed, {max(0, available)} available; "
                                  "buy credits or wait for next month's allowance",
                                  subject=f"account:{grant.account_id}", metadata=metadata)

    async def _admit(self, method: str, metadata: Any, request: Any) -> tuple[Grant, int]:
        credits = price_of(method)
        if credits is None:
            raise KtapeError(f"method {method} has no price; refusing to serve it unmetered",
                             reason="METHOD_NOT_PRICED", metadata={"method": method})
        credential = bearer_key(metadata)
        grant = await self.verifier.verify(credential)
        if method in SESSION_WRITES and credential.startswith(SESSION_PREFIX):
            check_csrf(grant, metadata)
        wait = self.limiter.take(grant.key_id,
                                 replica_share(grant.rate_limit_per_minute, self.replicas))
        if wait > 0:
            raise RateLimited(f"rate limit of {grant.rate_limit_per_minute} calls per minute "
                              "exceeded", subject=f"key:{grant.key_id}",
                              retry_after_secs=wait,
                              metadata={"key_id": grant.key_id,
                                        "limit_per_minute": str(grant.rate_limit_per_minute)})
        self._check_funds(grant, credits, request)
        return grant, credits

    # -- wrappers --------------------------------------------------------------------

    def _unary(self, method: str, metadata: Any, inner: Callable[..., Awaitable[Any]]
               ) -> Callable[..., Awaitable[Any]]:
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                grant, credits = await self._admit(method, metadata, request)
            except KtapeError as error:
                await abort_with(context, error)
            token = CALLER.set(grant)
            try:
                response = await inner(request, context)
            finally:
                CALLER.reset(token)
            self._charge(grant, method, credits, ticker=getattr(request, "ticker", ""),
                         in_gap=answer_in_gap(response), request=request)
            return response

        return behavior

    def _stream(self, method: str, metadata: Any, inner: Callable[..., AsyncIterator[Any]]
                ) -> Callable[..., AsyncIterator[Any]]:
        per_minute = STREAM_PRICES_PER_MINUTE.get(method)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            key = ""
            try:
                grant, credits = await self._admit(method, metadata, request)
                key = bearer_key(metadata)
            except KtapeError as error:
                await abort_with(context, error)
            ticker = getattr(request, "ticker", "")
            opened = self._clock()
            minutes = 0  # charged when the first message goes out: a refused stream is free
            checked = self._clock()
            async for item in inner(request, context):
                try:
                    if minutes == 0:
                        self._charge(grant, method, credits, ticker=ticker)
                        minutes = 1
                    if self._clock() - checked >= STREAM_RECHECK_SECS:
                        # revocation and suspension end open streams too (cached verdict)
                        grant = await self.verifier.verify(key)
                        checked = self._clock()
                    if per_minute and self._clock() - opened >= minutes * STREAM_MINUTE_SECS:
                        self._check_funds(grant, per_minute, request)
                        self._charge(grant, method, per_minute, ticker=ticker, continuation=True)
                        minutes += 1
                except KtapeError as error:
                    log.info("metering.stream_ended", key_id=grant.key_id, reason=error.reason,
                             minutes=minutes)
                    yield end_message(type(item), error)  # REST clients see why, in band
                    await abort_with(context, error)
                yield item

        return behavior
