"""One exception tree for every error the server sends (AIP-193), keyed by the
`ErrorInfo.reason` first and the gRPC code second. The file route of a dataset download
answers HTTP, with the same JSON body as every other error; it maps to the same classes.

    KtapeError                     code, reason, metadata, retry_after, field
    ├── InvalidArgumentError       the request is wrong (`field` names it)
    ├── NotFoundError              no such market, file, ...
    ├── AuthenticationError        no key, or a bad one
    ├── PermissionDeniedError      suspended account, expired or forged download URL, ...
    ├── InsufficientCreditsError   top up, then call again
    ├── RateLimitedError           wait `retry_after` seconds (retried automatically)
    ├── SlowConsumerError          a stream fell too far behind: page history instead
    ├── UnavailableError           a moment's outage (retried automatically)
    ├── DeadlineExceededError      the call outlasted its deadline
    └── DownloadError              a dataset file could not be fetched (`name`)
        └── ChecksumMismatchError  the bytes received are not the file bought
"""

from __future__ import annotations

import json
import random
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
    """No such market (UNKNOWN_TICKER), dataset file (FILE_NOT_FOUND), key, ..."""


class AuthenticationError(KtapeError):
    """No key, a malformed, unknown or revoked key (UNAUTHENTICATED)."""


class PermissionDeniedError(KtapeError):
    """A suspended account, an admin-only call, a missing CSRF token."""


class InsufficientCreditsError(KtapeError):
    """The balance (or spending cap) does not cover the call: nothing was charged.
    Top up (the console, or POST /v1/billing/checkout) and call again."""


class RateLimitedError(KtapeError):
    """Too many calls; wait `retry_after` seconds."""


class SlowConsumerError(KtapeError):
    """A stream's consumer fell behind: its live queue overflowed, or its replay fell
    more than 10 minutes further behind live than where it began. Streams replay at most
    the last 2 hours; read older history with `deltas` / `replay` (paged, no such limit)
    and stream from where they end."""


class UnavailableError(KtapeError):
    """The service or its store is down for a moment (retried automatically)."""


class DeadlineExceededError(KtapeError):
    """The call outlasted its deadline (`timeout`, 30 s by default), retries included."""


class DownloadError(KtapeError):
    """A dataset file could not be fetched whole; `name` says which. What was received is
    kept as `<dest>/.<file>.part`, so the next download resumes from there."""

    def __init__(self, message: str, *, name: str, **details: Any) -> None:
        super().__init__(f"{name}: {message}", **details)
        self.name = name


class ChecksumMismatchError(DownloadError):
    """The SHA-256 of the bytes received is not the one the download promised (or the
    server's Repr-Digest disagrees with it). The partial file is deleted: the next
    download starts that file afresh."""

    def __init__(self, message: str, *, name: str, expected: str, got: str) -> None:
        super().__init__(message, name=name, reason="CHECKSUM_MISMATCH")
        self.expected = expected
        self.got = got


BY_REASON: dict[str, type[KtapeError]] = {
    "INSUFFICIENT_CREDITS": InsufficientCreditsError,
    "RATE_LIMITED": RateLimitedError,
    "SLOW_CONSUMER": SlowConsumerError,
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
    return error_for(message, code, reason, metadata, retry_after, field)


def error_for(message: str, code: grpc.StatusCode | None, reason: str = "",
              metadata: dict[str, str] | None = None, retry_after: float | None = None,
              field: str | None = None) -> KtapeError:
    """The class for a reason (first) or a code (second), whatever carried them."""
    cls = BY_REASON.get(reason) or (BY_CODE.get(code, KtapeError) if code else KtapeError)
    return cls(message, code=code, reason=reason, metadata=metadata or {},
               retry_after=retry_after, field=field)


CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
CODES_BY_NAME = {code.name: code for code in grpc.StatusCode}


def from_http_error(status: int, body: bytes, retry_after: str | None = None) -> KtapeError:
    """The KtapeError for an HTTP error answer of the API's shape (`code`, `message`,
    `details` with an ErrorInfo), as the file route and Envoy send them. A body of
    another shape (a proxy's page) still gives an error naming the HTTP status."""
    try:
        found = json.loads(body)
        code = CODES_BY_NUMBER.get(int(found.get("code", -1)))
        message = str(found.get("message") or f"HTTP {status}")
        reason, metadata, field = "", {}, None
        for detail in found.get("details") or ():
            if str(detail.get("@type", "")).endswith("ErrorInfo"):
                reason, metadata = detail.get("reason", ""), detail.get("metadata") or {}
                field = metadata.get("field")
    except (ValueError, AttributeError, TypeError):
        code, message, reason, metadata, field = None, f"HTTP {status}", "", {}, None
    if code is None:
        code = HTTP_CODES.get(status, grpc.StatusCode.UNKNOWN)
    delay = float(retry_after) if retry_after and retry_after.isdigit() else None
    return error_for(message, code, reason, metadata, delay, field)


HTTP_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
              403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
              416: grpc.StatusCode.OUT_OF_RANGE, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
              502: grpc.StatusCode.UNAVAILABLE, 503: grpc.StatusCode.UNAVAILABLE,
              504: grpc.StatusCode.DEADLINE_EXCEEDED}


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


def backoff_seconds(attempt: int, max_backoff: float, retry_after: float | None = None) -> float:
    """How long to wait before retry `attempt` (0-based): capped exponential backoff with
    jitter (so many clients cut at once do not come back at once), at least the server's
    own hint (RetryInfo, Retry-After)."""
    backoff = min(max_backoff, 0.25 * 2 ** attempt) * random.uniform(0.5, 1.0)
    return max(backoff, retry_after or 0.0)
