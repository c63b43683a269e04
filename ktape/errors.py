"""Domain errors and their one mapping to gRPC statuses (AIP-193).

Tree:

    KtapeError                      base: grpc code + UPPER_SNAKE reason + metadata
    ├── InvalidArgument             INVALID_ARGUMENT, with BadRequest field violations
    │   └── PageTokenMismatch       a page token from another query
    ├── NotFound                    NOT_FOUND (unknown ticker / event / series / key)
    ├── AlreadyExists               ALREADY_EXISTS
    ├── Unauthenticated             UNAUTHENTICATED (missing / unknown / revoked key)
    ├── PermissionDenied            PERMISSION_DENIED (suspended account, not admin)
    ├── ResourceExhausted           RESOURCE_EXHAUSTED, with QuotaFailure and RetryInfo
    │   ├── InsufficientCredits
    │   └── RateLimited
    ├── FailedPrecondition          FAILED_PRECONDITION
    ├── OutOfRange                  OUT_OF_RANGE (a byte range past the end of a file)
    ├── Unimplemented               UNIMPLEMENTED (a method a route does not have)
    └── Unavailable                 UNAVAILABLE (store down; retry), with RetryInfo

Handlers raise these; exactly one place (`abort_with`) turns them into a
`google.rpc.Status` with an ErrorInfo (domain "ktape.dev", metadata holding every
variable of the message) plus the typed details, sent with `abort_with_status`.
Plain HTTP routes (datasetd's file downloads) answer the same status as JSON
(`to_json`), the body Envoy's transcoder gives a gRPC error, so every error of the API
has one shape.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "ktape.dev"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class KtapeError(Exception):
    """Base of every error a ktape RPC returns on purpose."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}

    def details(self) -> list[any_pb2.Any]:
        """Typed details beyond ErrorInfo (subclasses add BadRequest, QuotaFailure, ...)."""
        return []

    def to_status(self) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
        )
        packed = [_pack(info), *self.details()]
        return status_pb2.Status(
            code=_CODE_NUMBERS[self.grpc_code], message=self.message, details=packed
        )

    def to_json(self) -> dict[str, Any]:
        """`{"code", "message", "details": [{"@type": ...ErrorInfo, ...}]}`, as transcoded."""
        return json_format.MessageToDict(self.to_status(), preserving_proto_field_name=True)


class InvalidArgument(KtapeError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, message: str, *, violations: Sequence[FieldViolation] = (),
                 reason: str | None = None, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations)

    @classmethod
    def field(cls, field: str, description: str, **metadata: str) -> InvalidArgument:
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)],
                   metadata={"field": field, **metadata})

    def details(self) -> list[any_pb2.Any]:
        if not self.violations:
            return []
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in self.violations
        ])
        return [_pack(bad)]


class PageTokenMismatch(InvalidArgument):
    reason = "PAGE_TOKEN_INVALID"


class NotFound(KtapeError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class UnknownTicker(NotFound):
    reason = "UNKNOWN_TICKER"

    def __init__(self, ticker: str) -> None:
        super().__init__(f"unknown ticker {ticker!r}", metadata={"ticker": ticker})


class MarketNotYetKnown(NotFound):
    """A market asked for as of an instant before ktape's first version of it."""

    reason = "MARKET_NOT_YET_KNOWN"

    def __init__(self, ticker: str, at: dt.datetime, first: dt.datetime) -> None:
        super().__init__(f"{ticker} is first known at {first.isoformat()}, after "
                         f"{at.isoformat()}", metadata={"ticker": ticker,
                                                        "first_known_time": first.isoformat()})


class AlreadyExists(KtapeError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class Unauthenticated(KtapeError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    reason = "API_KEY_INVALID"


class PermissionDenied(KtapeError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class FailedPrecondition(KtapeError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class OutOfRange(KtapeError):
    grpc_code = grpc.StatusCode.OUT_OF_RANGE
    reason = "OUT_OF_RANGE"


class Unimplemented(KtapeError):
    grpc_code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class ResourceExhausted(KtapeError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, subject: str = "", quota_description: str = "",
                 retry_after_secs: float | None = None, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.subject = subject
        self.quota_description = quota_description or message
        self.retry_after_secs = retry_after_secs

    def details(self) -> list[any_pb2.Any]:
        out = [_pack(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(
                subject=self.subject, description=self.quota_description)
        ]))]
        if self.retry_after_secs is not None:
            out.append(_pack(_retry_info(self.retry_after_secs)))
        return out


class InsufficientCredits(ResourceExhausted):
    reason = "INSUFFICIENT_CREDITS"


class RateLimited(ResourceExhausted):
    reason = "RATE_LIMITED"


class Unavailable(KtapeError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_secs: float = 1.0,
                 reason: str | None = None, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_secs = retry_after_secs

    def details(self) -> list[any_pb2.Any]:
        return [_pack(_retry_info(self.retry_after_secs))]


def _retry_info(secs: float) -> error_details_pb2.RetryInfo:
    whole = int(secs)
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=whole, nanos=int((secs - whole) * 1e9))
    )


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE: code_pb2.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED: code_pb2.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
}


async def abort_with(context: grpc.aio.ServicerContext, error: KtapeError) -> None:
    """Abort the RPC with `error` as a rich google.rpc.Status (never returns)."""
    await context.abort_with_status(rpc_status.to_status(error.to_status()))


def rpc_handler(log: Any, *,
                translate: Callable[[Exception, str], KtapeError | None] | None = None,
                log_context: Callable[[Any], dict[str, Any]] = lambda request: {},
                ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Decorate a unary servicer method so every failure leaves as an AIP-193 status:
    domain errors as themselves, errors `translate` knows (e.g. a store outage) as what
    it returns, anything else — a bug — logged whole and answered INTERNAL without
    internals."""

    def decorate(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await method(self, request, context)
            except KtapeError as error:
                await abort_with(context, error)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                mapped = translate(exc, method.__name__) if translate is not None else None
                if mapped is None:
                    log.exception("rpc.failed", method=method.__name__, **log_context(request))
                    mapped = KtapeError(f"internal error in {method.__name__}",
                                        reason="INTERNAL")
                await abort_with(context, mapped)
            raise AssertionError("unreachable")  # abort_with raises

        return wrapper

    return decorate
