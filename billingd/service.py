"""BillingService and BillingAdminService over the billing store.

Every RPC but the Stripe webhook authenticates the bearer key from gRPC metadata
`authorization` (Envoy passes the HTTP header through). Store errors are domain errors
(ktape.errors), turned into AIP-193 statuses in one place (`_rpc`). Admin RPCs need an
admin account's key and leave an audit event naming the admin, the action and the
request. The store is reached through its async facade (billingd/store/aio.py): the
drivers block, so every call runs on the store's bounded thread pool.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2

from billingd.auth_service import SessionAuth, reset_path
from billingd.people import AsyncPeople
from billingd.store import Account, ApiKeyRow, AuditEvent, LedgerEntry, UsageRow
from billingd.store.aio import AsyncBillingStore
from billingd.stripe_gateway import StripeGateway
from ktape.billing.v1 import billing_pb2 as pb
from ktape.billing.v1 import billing_pb2_grpc as pb_grpc
from ktape.errors import (
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    rpc_handler,
)
from ktape.log import get_logger
from ktape.paging import PageTokens, checked_page_size, position_of, query_digest
from ktape.pricing import CREDIT_PACKS

log = get_logger(__name__)
ENVS = {pb.KEY_ENV_DEV: "dev", pb.KEY_ENV_PROD: "prod", pb.KEY_ENV_UNSPECIFIED: "prod"}
ENV_ENUM = {"dev": pb.KEY_ENV_DEV, "prod": pb.KEY_ENV_PROD}
MAX_USAGE_DAYS = 366


def _ts(text: str | None) -> timestamp_pb2.Timestamp | None:
    if not text:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(dt.datetime.fromisoformat(text))
    return out


async def account_message(store: AsyncBillingStore, account: Account) -> pb.Account:
    standing = await store.standing(account.account_id)
    message = pb.Account(
        account_id=account.account_id, name=account.name,
        state=pb.ACCOUNT_STATE_ACTIVE if account.state == "active" else pb.ACCOUNT_STATE_SUSPENDED,
        plan=account.plan, balance_credits=standing.balance,
        free_allowance_remaining=standing.allowance_remaining,
        spending_cap_credits=account.spending_cap_credits,
        spent_this_month_credits=standing.spent_this_month, admin=account.admin)
    message.create_time.CopyFrom(_ts(account.created_at))
    return message


def key_message(row: ApiKeyRow) -> pb.ApiKey:
    message = pb.ApiKey(key_id=row.key_id, prefix=f"kt_{row.env}_{row.key_id}", name=row.name,
                        env=ENV_ENUM[row.env])
    for name, value in (("create_time", row.created_at), ("last_used_time", row.last_used_at),
                        ("revoke_time", row.revoked_at)):
        stamp = _ts(value)
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    return message


def entry_message(entry: LedgerEntry) -> pb.LedgerEntry:
    message = pb.LedgerEntry(entry_id=entry.entry_id, account_id=entry.account_id,
                             credits=entry.credits, kind=entry.kind, reason=entry.reason,
                             idempotency_key=entry.idempotency_key,
                             balance_after=entry.balance_after)
    message.create_time.CopyFrom(_ts(entry.created_at))
    return message


def usage_message(row: UsageRow, *, with_account: bool) -> pb.UsageRow:
    return pb.UsageRow(account_id=row.account_id if with_account else "", day=row.day,
                       method=row.method, calls=row.calls, credits=row.credits)


def audit_message(event: AuditEvent) -> pb.AuditEvent:
    message = pb.AuditEvent(event_id=event.event_id, actor_account_id=event.actor_account_id,
                            action=event.action, target_account_id=event.target_account_id,
                            detail_json=event.detail_json)
    message.create_time.CopyFrom(_ts(event.created_at))
    return message


_rpc = rpc_handler(log)


def has_bearer(context: grpc.aio.ServicerContext) -> bool:
    return any(key == "authorization" for key, _ in context.invocation_metadata() or ())


def bearer(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    raise Unauthenticated("missing API key: send 'Authorization: Bearer kt_...'",
                          reason="API_KEY_MISSING")


async def caller(store: AsyncBillingStore, sessions: SessionAuth | None,
                 context: grpc.aio.ServicerContext, *, write: bool) -> Account:
    """The API key's account; without a key, the console session's (a write then needs
    the session's CSRF token too)."""
    if sessions is not None and not has_bearer(context):
        account_id = await sessions.account_id(context, write=write)
        if account_id is not None:
            return await store.usable_account(account_id)
    account, _key = await store.authenticate(bearer(context))
    return account


def time_range(start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp, *,
               default_start: dt.datetime, required: bool = False) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) from optional Timestamps; at most MAX_USAGE_DAYS long."""
    now = dt.datetime.now(dt.UTC)
    if required and not start.ByteSize():
        raise InvalidArgument.field("start_time", "is required")
    if required and not end.ByteSize():
        raise InvalidArgument.field("end_time", "is required")
    lo = start.ToDatetime(dt.UTC) if start.ByteSize() else default_start
    hi = end.ToDatetime(dt.UTC) if end.ByteSize() else now
    if hi <= lo:
        raise InvalidArgument.field("end_time", "must be after start_time")
    if hi - lo > dt.timedelta(days=MAX_USAGE_DAYS):
        raise InvalidArgument.field("end_time", f"range longer than {MAX_USAGE_DAYS} days")
    return lo, hi


def month_start(now: dt.datetime | None = None) -> dt.datetime:
    now = now or dt.datetime.now(dt.UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class _Pager:
    """AIP-158 paging over keyset positions, with tokens bound to the query."""

    def __init__(self, tokens: PageTokens) -> None:
        self.tokens = tokens

    def open(self, method: str, args: dict[str, Any], request: Any) -> tuple[int, list[Any] | None]:
        return (checked_page_size(request.page_size),
                position_of(self.tokens, request.page_token, query_digest(method, args)))

    def next_token(self, method: str, args: dict[str, Any], position: list[Any]) -> str:
        return self.tokens.seal(query_digest(method, args), position)


class BillingService(pb_grpc.BillingServiceServicer):
    def __init__(self, store: AsyncBillingStore, tokens: PageTokens,
                 stripe: StripeGateway | None = None,
                 sessions: SessionAuth | None = None) -> None:
        self.store = store
        self.pager = _Pager(tokens)
        self.stripe = stripe
        self.sessions = sessions  # console sign-in (billingd/auth_service.py)

    async def _caller(self, context: grpc.aio.ServicerContext, *,
                      write: bool = False) -> Account:
        return await caller(self.store, self.sessions, context, write=write)

    def _stripe(self, setting: str) -> StripeGateway:
        if self.stripe is None:
            raise Unavailable(f"Stripe is not configured on this deployment ({setting})",
                              reason="STRIPE_NOT_CONFIGURED")
        return self.stripe

    @_rpc
    async def GetAccount(self, request: pb.GetAccountRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetAccountResponse:
        account = await self._caller(context)
        message = await account_message(self.store, account)
        return pb.GetAccountResponse(account=message)

    @_rpc
    async def GetAccountUsage(self, request: pb.GetAccountUsageRequest,
                              context: grpc.aio.ServicerContext) -> pb.GetAccountUsageResponse:
        account = await self._caller(context)
        start, end = time_range(request.start_time, request.end_time, default_start=month_start())
        rows = await self.store.usage(account_id=account.account_id, start=start, end=end)
        return pb.GetAccountUsageResponse(usage=[usage_message(r, with_account=False)
                                                 for r in rows])

    @_rpc
    async def CreateApiKey(self, request: pb.CreateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.CreateApiKeyResponse:
        account = await self._caller(context, write=True)
        if len(request.name) > 100:
            raise InvalidArgument.field("name", "at most 100 characters")
        if request.env not in ENVS:
            raise InvalidArgument.field("env", "must be KEY_ENV_DEV or KEY_ENV_PROD")
        key = await self.store.create_key(account.account_id, env=ENVS[request.env],
                                          name=request.name)
        row = await self.store.key(account.account_id, key.key_id)
        return pb.CreateApiKeyResponse(key=key_message(row), secret=key.full)

    @_rpc
    async def ListApiKeys(self, request: pb.ListApiKeysRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListApiKeysResponse:
        account = await self._caller(context)
        args = {"account": account.account_id}
        size, position = self.pager.open("ListApiKeys", args, request)
        before = (str(position[0]), str(position[1])) if position else None
        rows = await self.store.keys(account.account_id, before=before, limit=size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = self.pager.next_token("ListApiKeys", args,
                                          [rows[-1].created_at, rows[-1].key_id])
        return pb.ListApiKeysResponse(keys=[key_message(r) for r in rows], next_page_token=token)

    @_rpc
    async def UpdateSpendingCap(self, request: pb.UpdateSpendingCapRequest,
                                context: grpc.aio.ServicerContext) -> pb.UpdateSpendingCapResponse:
        account = await self._caller(context, write=True)
        account = await self.store.set_spending_cap(account.account_id,
                                                    request.spending_cap_credits)
        message = await account_message(self.store, account)
        return pb.UpdateSpendingCapResponse(account=message)

    @_rpc
    async def ListRecentCalls(self, request: pb.ListRecentCallsRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListRecentCallsResponse:
        account = await self._caller(context)
        if request.page_size < 0:
            raise InvalidArgument.field("page_size", "must not be negative")
        rows = await self.store.recent_calls(account.account_id,
                                             limit=min(request.page_size or 20, 100))
        return pb.ListRecentCallsResponse(calls=[
            pb.RecentCall(serve_time=_ts(served), method=method, ticker=ticker, key_id=key_id,
                          credits=credits, in_gap=in_gap)
            for served, method, ticker, key_id, _calls, credits, in_gap in rows])

    @_rpc
    async def ListLedgerEntries(self, request: pb.ListLedgerEntriesRequest,
                                context: grpc.aio.ServicerContext
                                ) -> pb.ListLedgerEntriesResponse:
        account = await self._caller(context)
        args = {"account": account.account_id}
        size, position = self.pager.open("ListLedgerEntries", args, request)
        rows = await self.store.ledger_page(account.account_id,
                                            before_seq=int(position[0]) if position else None,
                                            limit=size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = self.pager.next_token("ListLedgerEntries", args, [rows[-1][0]])
        return pb.ListLedgerEntriesResponse(entries=[entry_message(e) for _, e in rows],
                                            next_page_token=token)

    @_rpc
    async def ListCreditPacks(self, request: pb.ListCreditPacksRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListCreditPacksResponse:
        packs = sorted(CREDIT_PACKS.values(), key=lambda p: p.price_cents)
        return pb.ListCreditPacksResponse(packs=[
            pb.CreditPack(pack_id=p.pack_id, credits=p.credits, price_cents=p.price_cents)
            for p in packs])

    @_rpc
    async def DeleteApiKey(self, request: pb.DeleteApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.DeleteApiKeyResponse:
        account = await self._caller(context, write=True)
        if not request.key_id:
            raise InvalidArgument.field("key_id", "is required")
        row = await self.store.revoke_key(account.account_id, request.key_id)
        return pb.DeleteApiKeyResponse(key=key_message(row))

    @_rpc
    async def CreateCheckoutSession(self, request: pb.CreateCheckoutSessionRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> pb.CreateCheckoutSessionResponse:
        account = await self._caller(context, write=True)
        session_id, url = await self._stripe("KTAPE_STRIPE_API_KEY").create_checkout(
            account.account_id, request.pack, success_url=request.success_url,
            cancel_url=request.cancel_url)
        return pb.CreateCheckoutSessionResponse(session_id=session_id, url=url)

    @_rpc
    async def CreateBillingPortalSession(self, request: pb.CreateBillingPortalSessionRequest,
                                         context: grpc.aio.ServicerContext
                                         ) -> pb.CreateBillingPortalSessionResponse:
        account = await self._caller(context, write=True)
        url = await self._stripe("KTAPE_STRIPE_API_KEY").create_portal(
            account.account_id, return_url=request.return_url)
        return pb.CreateBillingPortalSessionResponse(url=url)

    @_rpc
    async def HandleStripeWebhook(self, request: pb.HandleStripeWebhookRequest,
                                  context: grpc.aio.ServicerContext
                                  ) -> pb.HandleStripeWebhookResponse:
        stripe = self._stripe("KTAPE_STRIPE_WEBHOOK_SECRET")
        signature = ""
        for key, value in context.invocation_metadata() or ():
            if key == "stripe-signature":
                signature = str(value)
        event_id, applied = await stripe.handle_webhook(request.body.data, signature)
        return pb.HandleStripeWebhookResponse(event_id=event_id, applied=applied)


# Admin RPCs that change nothing: a console session needs no CSRF token for them.
READ_ACTIONS = frozenset({"ListAccounts", "LookupAccount", "GetUsage", "ListAuditEvents"})


class BillingAdminService(pb_grpc.BillingAdminServiceServicer):
    def __init__(self, store: AsyncBillingStore, tokens: PageTokens,
                 people: AsyncPeople | None = None) -> None:
        self.store = store
        self.pager = _Pager(tokens)
        self.people = people or AsyncPeople(store)
        self.sessions = SessionAuth(self.people)

    @_rpc
    async def CreateAccountLogin(self, request: pb.CreateAccountLoginRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> pb.CreateAccountLoginResponse:
        await self._admin(context, "CreateAccountLogin", request, request.account_id)
        token = await self.people.give_login(request.account_id, request.email)
        path = reset_path(token)
        log.warning("auth.login_created", account_id=request.account_id,
                    email=request.email.strip().lower(), path=path)
        return pb.CreateAccountLoginResponse(reset_path=path)

    async def _admin(self, context: grpc.aio.ServicerContext, action: str, request: Any,
                     target: str = "") -> Account:
        """Authenticate an admin and audit the action (before it runs: an attempt that
        fails half-way is still on record)."""
        account = await caller(self.store, self.sessions, context,
                               write=action not in READ_ACTIONS)
        if not account.admin:
            raise PermissionDenied("admin key required", reason="ADMIN_REQUIRED",
                                   metadata={"account_id": account.account_id})
        detail = json_format.MessageToDict(request, preserving_proto_field_name=True)
        await self.store.audit(account.account_id, action, target, detail)
        return account

    async def _account_message(self, account: Account) -> pb.Account:
        return await account_message(self.store, account)

    @staticmethod
    def _need(value: str, name: str) -> None:
        if not value:
            raise InvalidArgument.field(name, "is required")

    @_rpc
    async def CreateAccount(self, request: pb.CreateAccountRequest,
                            context: grpc.aio.ServicerContext) -> pb.CreateAccountResponse:
        await self._admin(context, "CreateAccount", request)
        self._need(request.name, "name")
        account = await self.store.create_account(request.name, plan=request.plan or "free",
                                                  admin=request.admin)
        return pb.CreateAccountResponse(account=await self._account_message(account))

    @_rpc
    async def ListAccounts(self, request: pb.ListAccountsRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListAccountsResponse:
        await self._admin(context, "ListAccounts", request)
        args = {"suspended_only": request.suspended_only}
        size, position = self.pager.open("ListAccounts", args, request)
        rows = await self.store.list_accounts(suspended_only=request.suspended_only,
                                              after_id=str(position[0]) if position else "",
                                              limit=size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = self.pager.next_token("ListAccounts", args, [rows[-1].account_id])
        return pb.ListAccountsResponse(
            accounts=[await self._account_message(a) for a in rows], next_page_token=token)

    @_rpc
    async def LookupAccount(self, request: pb.LookupAccountRequest,
                            context: grpc.aio.ServicerContext) -> pb.LookupAccountResponse:
        await self._admin(context, "LookupAccount", request, request.account_id)
        self._need(request.account_id, "account_id")
        account = await self.store.account(request.account_id)
        return pb.LookupAccountResponse(account=await self._account_message(account))

    @_rpc
    async def SuspendAccount(self, request: pb.SuspendAccountRequest,
                             context: grpc.aio.ServicerContext) -> pb.SuspendAccountResponse:
        await self._admin(context, "SuspendAccount", request, request.account_id)
        self._need(request.account_id, "account_id")
        account = await self.store.set_state(request.account_id, "suspended")
        return pb.SuspendAccountResponse(account=await self._account_message(account))

    @_rpc
    async def ResumeAccount(self, request: pb.ResumeAccountRequest,
                            context: grpc.aio.ServicerContext) -> pb.ResumeAccountResponse:
        await self._admin(context, "ResumeAccount", request, request.account_id)
        self._need(request.account_id, "account_id")
        account = await self.store.set_state(request.account_id, "active")
        return pb.ResumeAccountResponse(account=await self._account_message(account))

    async def _ledger_change(self, request: Any, context: grpc.aio.ServicerContext,
                             action: str, kind: str) -> pb.LedgerEntry:
        admin = await self._admin(context, action, request, request.account_id)
        self._need(request.account_id, "account_id")
        if request.credits <= 0:
            raise InvalidArgument.field("credits", "must be positive")
        self._need(request.reason, "reason")
        self._need(request.idempotency_key, "idempotency_key")
        entry = await self.store.append(request.account_id, request.credits, kind=kind,
                                        reason=f"{request.reason} (by {admin.account_id})",
                                        idempotency_key=f"{kind}:{request.idempotency_key}")
        return entry_message(entry)

    @_rpc
    async def GrantCredits(self, request: pb.GrantCreditsRequest,
                           context: grpc.aio.ServicerContext) -> pb.GrantCreditsResponse:
        entry = await self._ledger_change(request, context, "GrantCredits", "grant")
        return pb.GrantCreditsResponse(entry=entry)

    @_rpc
    async def RefundCredits(self, request: pb.RefundCreditsRequest,
                            context: grpc.aio.ServicerContext) -> pb.RefundCreditsResponse:
        entry = await self._ledger_change(request, context, "RefundCredits", "refund")
        return pb.RefundCreditsResponse(entry=entry)

    @_rpc
    async def SetPlan(self, request: pb.SetPlanRequest,
                      context: grpc.aio.ServicerContext) -> pb.SetPlanResponse:
        await self._admin(context, "SetPlan", request, request.account_id)
        self._need(request.account_id, "account_id")
        self._need(request.plan, "plan")
        account = await self.store.set_plan(request.account_id, request.plan)
        return pb.SetPlanResponse(account=await self._account_message(account))

    @_rpc
    async def SetSpendingCap(self, request: pb.SetSpendingCapRequest,
                             context: grpc.aio.ServicerContext) -> pb.SetSpendingCapResponse:
        await self._admin(context, "SetSpendingCap", request, request.account_id)
        self._need(request.account_id, "account_id")
        account = await self.store.set_spending_cap(request.account_id,
                                                    request.spending_cap_credits)
        return pb.SetSpendingCapResponse(account=await self._account_message(account))

    @_rpc
    async def GetUsage(self, request: pb.GetUsageRequest,
                       context: grpc.aio.ServicerContext) -> pb.GetUsageResponse:
        await self._admin(context, "GetUsage", request, request.account_id)
        start, end = time_range(request.start_time, request.end_time, default_start=month_start())
        rows = await self.store.usage(account_id=request.account_id,
                                      start=start, end=end, method=request.method)
        return pb.GetUsageResponse(usage=[usage_message(r, with_account=True) for r in rows])

    @_rpc
    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListAuditEventsResponse:
        await self._admin(context, "ListAuditEvents", request, request.target_account_id)
        args = {"target": request.target_account_id}
        size, position = self.pager.open("ListAuditEvents", args, request)
        rows = await self.store.audit_events(target_account_id=request.target_account_id,
                                             before_seq=int(position[0]) if position else None,
                                             limit=size + 1)
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = self.pager.next_token("ListAuditEvents", args, [rows[-1].seq])
        return pb.ListAuditEventsResponse(events=[audit_message(e) for e in rows],
                                          next_page_token=token)

    @_rpc
    async def RefundGapCalls(self, request: pb.RefundGapCallsRequest,
                             context: grpc.aio.ServicerContext) -> pb.RefundGapCallsResponse:
        await self._admin(context, "RefundGapCalls", request)
        start, end = time_range(request.start_time, request.end_time,
                                default_start=month_start(), required=True)
        calls, credits = await self.store.refund_gap_calls(start, end)
        return pb.RefundGapCallsResponse(refunded_calls=calls, refunded_credits=credits)
