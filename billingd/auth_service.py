"""AuthService (console sign-in) and the session side of every self-service call.

The session travels as the cookie `ktape_session`: Envoy passes the browser's `Cookie`
header to billingd as gRPC metadata and billingd's initial metadata `set-cookie` back as
a response header, so no part of Envoy's config knows about sessions. `SessionAuth` is
what BillingService asks when a call carries no API key: the cookie's session, and for a
write the `X-CSRF-Token` header matching it (SameSite=Lax alone still lets a top-level
cross-site form POST through).
"""

from __future__ import annotations

import datetime as dt
import hmac

import grpc
from google.protobuf import timestamp_pb2

from billingd.people import SESSION_TTL, AsyncPeople, Session
from ktape.billing.v1 import auth_pb2 as pb
from ktape.billing.v1 import auth_pb2_grpc as pb_grpc
from ktape.errors import PermissionDenied, Unauthenticated, rpc_handler
from ktape.log import get_logger
from ktape.sessions import COOKIE, SIGNED_IN_COOKIE, session_cookie

log = get_logger(__name__)
_rpc = rpc_handler(log)


def _header(context: grpc.aio.ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return str(value)
    return None


def session_token(context: grpc.aio.ServicerContext) -> str | None:
    """The `ktape_session` cookie of the request, if any."""
    return session_cookie(context.invocation_metadata())


def _cookies(context: grpc.aio.ServicerContext, value: str,
             max_age: int) -> tuple[tuple[str, str], ...]:
    """The session cookie, and beside it `ktape_signed_in=1`: readable by the page (no
    secret in it), so a signed-out page does not ask for a session it does not have."""
    secure = "; Secure" if _header(context, "x-forwarded-proto") == "https" else ""
    flag = "1" if value else ""
    return (("set-cookie", f"{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; "
                           f"SameSite=Lax{secure}"),
            ("set-cookie", f"{SIGNED_IN_COOKIE}={flag}; Max-Age={max_age}; Path=/; "
                           f"SameSite=Lax{secure}"))


def _timestamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when)
    return out


def _session_message(session: Session) -> pb.Session:
    return pb.Session(account_id=session.account_id, email=session.email,
                      csrf_token=session.csrf_token, expire_time=_timestamp(session.expires_at))


class SessionAuth:
    """Who a cookie-authenticated call is, for BillingService (and its CSRF rule)."""

    def __init__(self, people: AsyncPeople) -> None:
        self.people = people

    async def account_id(self, context: grpc.aio.ServicerContext, *, write: bool) -> str | None:
        """The session's account; None when the call has no session cookie."""
        token = session_token(context)
        if token is None:
            return None
        session = await self.people.session(token)
        if write and not hmac.compare_digest(_header(context, "x-csrf-token") or "",
                                             session.csrf_token):
            raise PermissionDenied("a cookie-authenticated write needs the X-CSRF-Token header "
                                   "(GET /v1/auth/session gives it)", reason="CSRF_TOKEN_MISSING")
        return session.account_id


class AuthService(pb_grpc.AuthServiceServicer):
    def __init__(self, people: AsyncPeople) -> None:
        self.people = people

    async def _signed_in(self, context: grpc.aio.ServicerContext, session: Session) -> None:
        """Rotation: whatever session the browser held ends; the new one is its cookie."""
        old = session_token(context)
        if old is not None:
            await self.people.sign_out(old)
        await context.send_initial_metadata(
            _cookies(context, session.token, int(SESSION_TTL.total_seconds())))

    @_rpc
    async def SignUp(self, request: pb.SignUpRequest,
                     context: grpc.aio.ServicerContext) -> pb.SignUpResponse:
        session = await self.people.sign_up(request.email, request.password)
        await self._signed_in(context, session)
        return pb.SignUpResponse(session=_session_message(session))

    @_rpc
    async def SignIn(self, request: pb.SignInRequest,
                     context: grpc.aio.ServicerContext) -> pb.SignInResponse:
        session = await self.people.sign_in(request.email, request.password)
        await self._signed_in(context, session)
        return pb.SignInResponse(session=_session_message(session))

    @_rpc
    async def SignOut(self, request: pb.SignOutRequest,
                      context: grpc.aio.ServicerContext) -> pb.SignOutResponse:
        token = session_token(context)
        if token is not None:
            await self.people.sign_out(token)
        await context.send_initial_metadata(_cookies(context, "", 0))
        return pb.SignOutResponse()

    @_rpc
    async def GetSession(self, request: pb.GetSessionRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetSessionResponse:
        token = session_token(context)
        if token is None:
            raise Unauthenticated("not signed in", reason="SESSION_MISSING")
        session = await self.people.session(token)
        return pb.GetSessionResponse(account_id=session.account_id, email=session.email,
                                     csrf_token=session.csrf_token,
                                     expire_time=_timestamp(session.expires_at))

    @_rpc
    async def RequestPasswordReset(self, request: pb.RequestPasswordResetRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> pb.RequestPasswordResetResponse:
        token = await self.people.request_reset(request.email)
        if token is not None:
            # No mail server is configured on this deployment: the link goes to the log,
            # where the operator finds it (CONTRACT.md).
            log.warning("auth.password_reset_link", email=request.email.strip().lower(),
                        path=reset_path(token))
        return pb.RequestPasswordResetResponse()

    @_rpc
    async def ConfirmPasswordReset(self, request: pb.ConfirmPasswordResetRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> pb.ConfirmPasswordResetResponse:
        await self.people.confirm_reset(request.token, request.password)
        return pb.ConfirmPasswordResetResponse()


def reset_path(token: str) -> str:
    """The console page that sets a password with `token`."""
    return f"/reset?token={token}"
