"""MeteringService: the internal RPCs queryd's metering interceptor calls.

VerifyApiKey answers with everything the interceptor needs to admit calls on its own for
a few seconds (account, plan, rate limit, credits available now); RecordUsage takes the
served calls in batches and applies each once (event_id is the idempotency key), so a
batch retried after a timeout never double-charges.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import grpc

from billingd.people import AsyncPeople
from billingd.service import ENV_ENUM, _rpc
from billingd.store import UsageIn
from billingd.store.aio import AsyncBillingStore
from ktape.billing.v1 import metering_pb2 as pb
from ktape.billing.v1 import metering_pb2_grpc as pb_grpc
from ktape.errors import InvalidArgument
from ktape.log import get_logger
from ktape.pricing import DEFAULT_PLAN, PLANS

log = get_logger(__name__)

MAX_BATCH = 10_000


class MeteringService(pb_grpc.MeteringServiceServicer):
    def __init__(self, store: AsyncBillingStore, people: AsyncPeople | None = None) -> None:
        self.store = store
        self.people = people or AsyncPeople(store)

    @_rpc
    async def VerifyApiKey(self, request: pb.VerifyApiKeyRequest,
                           context: grpc.aio.ServicerContext) -> pb.VerifyApiKeyResponse:
        csrf = ""
        if request.session_token and not request.api_key:
            session = await self.people.session(request.session_token)  # read (and slid) once
            account, key = await self.people.playground_key(session)
            csrf = hashlib.sha256(session.csrf_token.encode()).hexdigest()
        else:
            account, key = await self.store.authenticate(request.api_key)
        standing = await self.store.standing(account.account_id)
        plan = PLANS.get(account.plan, PLANS[DEFAULT_PLAN])
        return pb.VerifyApiKeyResponse(
            csrf_token_sha256=csrf,
            account_id=account.account_id, key_id=key.key_id, env=ENV_ENUM[key.env],
            plan=account.plan, admin=account.admin,
            available_credits=standing.available(account, key.env),
            postpaid=plan.postpaid and key.env == "prod",
            rate_limit_per_minute=plan.rate_limit_per_minute)

    @_rpc
    async def RecordUsage(self, request: pb.RecordUsageRequest,
                          context: grpc.aio.ServicerContext) -> pb.RecordUsageResponse:
        if len(request.events) > MAX_BATCH:
            raise InvalidArgument.field("events", f"at most {MAX_BATCH} per batch")
        events = []
        for index, event in enumerate(request.events):
            if not event.event_id or not event.key_id or event.credits < 0:
                raise InvalidArgument.field(f"events[{index}]",
                                            "needs event_id, key_id and credits >= 0")
            events.append(UsageIn(
                event_id=event.event_id, key_id=event.key_id, method=event.method,
                credits=event.credits, served_at=event.time.ToDatetime(tzinfo=dt.UTC),
                ticker=event.ticker, in_gap=event.in_gap, continuation=event.continuation,
                answer_start=(event.answer_start_time.ToDatetime(tzinfo=dt.UTC)
                              if event.HasField("answer_start_time") else None),
                answer_end=(event.answer_end_time.ToDatetime(tzinfo=dt.UTC)
                            if event.HasField("answer_end_time") else None)))
        result = await self.store.record_usage(events)
        log.info("usage.recorded", events=len(events), applied=result.applied,
                 duplicates=result.duplicates, unknown_keys=len(result.unknown_keys))
        return pb.RecordUsageResponse(applied=result.applied, duplicates=result.duplicates)


    @_rpc
    async def ChargeCredits(self, request: pb.ChargeCreditsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ChargeCreditsResponse:
        if not request.key_id or not request.method:
            raise InvalidArgument.field("key_id", "key_id and method are required")
        if not request.items or len(request.items) > MAX_BATCH:
            raise InvalidArgument.field("items", f"1 to {MAX_BATCH} items")
        for index, item in enumerate(request.items):
            if not item.item_id or item.credits < 0:
                raise InvalidArgument.field(f"items[{index}]", "needs item_id and credits >= 0")
        charged, already = await self.store.charge_purchase(
            request.key_id, request.method,
            [(i.item_id, i.credits, i.description) for i in request.items])
        return pb.ChargeCreditsResponse(charged_credits=charged, already_charged=already)
