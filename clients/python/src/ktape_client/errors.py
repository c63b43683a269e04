"""One exception tree for every error the server sends (AIP-193), keyed by the
`ErrorInfo.reason` first and the gRPC code second."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2


class KtapeError(Exception):
    """Any error from ktape: `code` (gRPC), `reason` (ErrorInfo), `metadata`."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None,
                 reason: str = "", metadata: dict[str, str] | None = None,
                 retry_after: float | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.metadata = metadata or {}
        self.retry_after = retry_after  # seconds, from RetryInfo
        self.field = field  # the request field a BadRequest named

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgumentError(KtapeError):
    """The request is wrong; `field` names the field when the server said which."""


class NotFoundError(KtapeError):
    pass


class AuthenticationError(KtapeError):
    """No key, a malformed, unknown or revoked key (UNAUTHENTICATED)."""


class PermissionDeniedError(KtapeError):
    """A suspended account, an admin-only call, a missing CSRF token."""


class InsufficientCreditsError(KtapeError):
    pass


class RateLimitedError(KtapeError):
    """Too many calls; wait `retry_after` seconds."""


class UnavailableError(KtapeError):
    """The service or its store is down for a moment (retried automatically)."""


class DeadlineExceededError(KtapeError):
    pass


BY_REASON: dict[str, type[KtapeError]] = {
    "INSUFFICIENT_CREDITS": InsufficientCreditsError,
    "RATE_LIMITED": RateLimitedError,
    "UNKNOWN_TICKER": NotFoundError,
    "MARKET_NOT_YET_KNOWN": NotFoundError,
}
BY_CODE: dict[grpc.StatusCode, type[KtapeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def from_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> KtapeError:
    """The KtapeError for a failed call, with the details the server attached."""
    code: grpc.StatusCode = error.code()  # type: ignore[union-attr]
    message = error.details() or code.name  # type: ignore[union-attr]
    reason, metadata, retry_after, field = "", {}, None, None
    for key, value in (error.trailing_metadata() or ()):  # type: ignore[union-attr]
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                reason, metadata, retry_after, field = _detail(
                    detail, reason, metadata, retry_after, field)
    cls = BY_REASON.get(reason) or BY_CODE.get(code, KtapeError)
    return cls(message, code=code, reason=reason, metadata=metadata,
               retry_after=retry_after, field=field)


def _detail(detail: Any, reason: str, metadata: dict[str, str], retry_after: float | None,
            field: str | None) -> tuple[str, dict[str, str], float | None, str | None]:
    info = error_details_pb2.ErrorInfo()
    retry = error_details_pb2.RetryInfo()
    bad = error_details_pb2.BadRequest()
    if detail.Unpack(info):
        return info.reason, dict(info.metadata), retry_after, field
    if detail.Unpack(retry):
        delay = retry.retry_delay
        return reason, metadata, delay.seconds + delay.nanos / 1e9, field
    if detail.Unpack(bad) and bad.field_violations:
        return reason, metadata, retry_after, bad.field_violations[0].field
    return reason, metadata, retry_after, field
