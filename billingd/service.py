"""BillingService and BillingAdminService over the billing store.

Every RPC authenticates the bearer key from gRPC metadata `authorization` (Envoy passes
the HTTP header through). Store errors are domain errors (ktape.errors), turned into
AIP-193 statuses in one place. RPCs of issue 8 not built yet (usage reporting, Stripe)
keep the generated UNIMPLEMENTED answer rather than a fake one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from billingd.store import Account, ApiKeyRow, SqliteStore
from ktape.billing.v1 import billing_pb2 as pb
from ktape.billing.v1 import billing_pb2_grpc as pb_grpc
from ktape.errors import InvalidArgument, KtapeError, PermissionDenied, Unauthenticated, abort_with

R = TypeVar("R")
ENVS = {pb.KEY_ENV_DEV: "dev", pb.KEY_ENV_PROD: "prod", pb.KEY_ENV_UNSPECIFIED: "prod"}
ENV_ENUM = {"dev": pb.KEY_ENV_DEV, "prod": pb.KEY_ENV_PROD}


def _ts(text: str | None) -> timestamp_pb2.Timestamp | None:
    if not text:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(dt.datetime.fromisoformat(text))
    return out


def account_message(store: SqliteStore, account: Account) -> pb.Account:
    message = pb.Account(
        account_id=account.account_id, name=account.name,
        state=pb.ACCOUNT_STATE_ACTIVE if account.state == "active" else pb.ACCOUNT_STATE_SUSPENDED,
        plan=account.plan, balance_credits=store.balance(account.account_id),
        spending_cap_credits=account.spending_cap_credits, admin=account.admin)
    message.create_time.CopyFrom(_ts(account.created_at))
    return message


def key_message(row: ApiKeyRow) -> pb.ApiKey:
    message = pb.ApiKey(key_id=row.key_id, prefix=f"kt_{row.env}_{row.key_id}", name=row.name,
                        env=ENV_ENUM[row.env])
    for field, value in (("create_time", row.created_at), ("last_used_time", row.last_used_at),
                         ("revoke_time", row.revoked_at)):
        stamp = _ts(value)
        if stamp is not None:
            getattr(message, field).CopyFrom(stamp)
    return message


def _rpc(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except KtapeError as error:
            await abort_with(context, error)
        raise AssertionError("unreachable")

    return wrapper


def bearer(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    raise Unauthenticated("missing API key: send 'Authorization: Bearer kt_...'",
                          reason="API_KEY_MISSING")


class BillingService(pb_grpc.BillingServiceServicer):
    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    async def _caller(self, context: grpc.aio.ServicerContext) -> Account:
        account, _key = await asyncio.to_thread(self.store.authenticate, bearer(context))
        return account

    @_rpc
    async def GetAccount(self, request: pb.GetAccountRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetAccountResponse:
        account = await self._caller(context)
        return pb.GetAccountResponse(account=account_message(self.store, account))

    @_rpc
    async def CreateApiKey(self, request: pb.CreateApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.CreateApiKeyResponse:
        account = await self._caller(context)
        if len(request.name) > 100:
            raise InvalidArgument.field("name", "at most 100 characters")
        key = await asyncio.to_thread(self.store.create_key, account.account_id,
                                      env=ENVS[request.env], name=request.name)
        row = next(k for k in self.store.keys(account.account_id) if k.key_id == key.key_id)
        return pb.CreateApiKeyResponse(key=key_message(row), secret=key.full)

    @_rpc
    async def ListApiKeys(self, request: pb.ListApiKeysRequest,
                          context: grpc.aio.ServicerContext) -> pb.ListApiKeysResponse:
        account = await self._caller(context)
        if request.page_size < 0:
            raise InvalidArgument.field("page_size", "must not be negative")
        if request.page_token:
            raise InvalidArgument.field("page_token", "no further pages were issued")
        rows = self.store.keys(account.account_id)[: request.page_size or 1000]
        return pb.ListApiKeysResponse(keys=[key_message(r) for r in rows])

    @_rpc
    async def DeleteApiKey(self, request: pb.DeleteApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.DeleteApiKeyResponse:
        account = await self._caller(context)
        row = await asyncio.to_thread(self.store.revoke_key, account.account_id, request.key_id)
        return pb.DeleteApiKeyResponse(key=key_message(row))


class BillingAdminService(pb_grpc.BillingAdminServiceServicer):
    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    async def _admin(self, context: grpc.aio.ServicerContext) -> Account:
        account, _key = await asyncio.to_thread(self.store.authenticate, bearer(context))
        if not account.admin:
            raise PermissionDenied("admin key required", reason="ADMIN_REQUIRED",
                                   metadata={"account_id": account.account_id})
        return account

    @_rpc
    async def CreateAccount(self, request: pb.CreateAccountRequest,
                            context: grpc.aio.ServicerContext) -> pb.CreateAccountResponse:
        await self._admin(context)
        if not request.name:
            raise InvalidArgument.field("name", "is required")
        account = await asyncio.to_thread(self.store.create_account, request.name,
                                          plan=request.plan or "free", admin=request.admin)
        return pb.CreateAccountResponse(account=account_message(self.store, account))

    @_rpc
    async def LookupAccount(self, request: pb.LookupAccountRequest,
                            context: grpc.aio.ServicerContext) -> pb.LookupAccountResponse:
        await self._admin(context)
        account = self.store.account(request.account_id)
        return pb.LookupAccountResponse(account=account_message(self.store, account))

    @_rpc
    async def GrantCredits(self, request: pb.GrantCreditsRequest,
                           context: grpc.aio.ServicerContext) -> pb.GrantCreditsResponse:
        admin = await self._admin(context)
        if request.credits <= 0:
            raise InvalidArgument.field("credits", "must be positive")
        if not request.reason:
            raise InvalidArgument.field("reason", "is required")
        if not request.idempotency_key:
            raise InvalidArgument.field("idempotency_key", "is required")
        entry = await asyncio.to_thread(
            self.store.append, request.account_id, request.credits, kind="grant",
            reason=f"{request.reason} (by {admin.account_id})",
            idempotency_key=request.idempotency_key)
        message = pb.LedgerEntry(entry_id=entry.entry_id, account_id=entry.account_id,
                                 credits=entry.credits, kind=entry.kind, reason=entry.reason,
                                 idempotency_key=entry.idempotency_key,
                                 balance_after=entry.balance_after)
        message.create_time.CopyFrom(_ts(entry.created_at))
        return pb.GrantCreditsResponse(entry=message)
