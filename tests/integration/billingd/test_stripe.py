"""Stripe: Checkout, signed webhooks applied exactly once, Billing Meter events.

billingd talks to stripe-mock (Stripe's own API fake, which validates every request
against Stripe's published API) through a recording proxy; webhooks are real signed
payloads (`stripe.WebhookSignature`), verified by billingd over the exact bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
import stripe
from google.api import httpbody_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from billingd.server import Billingd, build_server
from billingd.store import UsageIn
from ktape.billing.v1 import billing_pb2 as pb
from ktape.billing.v1 import billing_pb2_grpc as pb_grpc
from ktape.config import load_settings
from tests.fixtures.recording_proxy import RecordingProxy

WEBHOOK_SECRET = "whsec_ktape_tests"


@pytest_asyncio.fixture
async def billing(tmp_path, stripe_mock, billing_dsn
                  ) -> AsyncIterator[tuple[Billingd, pb_grpc.BillingServiceStub, RecordingProxy]]:
    """billingd on each store backend, Stripe behind a recording proxy."""
    proxy = RecordingProxy(stripe_mock).start()
    settings = load_settings({"KTAPE_DATA_DIR": str(tmp_path), "KTAPE_BILLING_DSN": billing_dsn,
                              "KTAPE_STRIPE_API_KEY": "sk_test_123",
                              "KTAPE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                              "KTAPE_STRIPE_API_BASE": proxy.url})
    billingd = await build_server(settings, addr="127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{billingd.running.port}")
    try:
        yield billingd, pb_grpc.BillingServiceStub(channel), proxy
    finally:
        await channel.close()
        await billingd.running.stop(0)
        billingd.store.close()
        proxy.stop()


def _signed(event: dict, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
            ) -> tuple[bytes, str]:
    payload = json.dumps(event)
    return payload.encode(), stripe.WebhookSignature.generate_signature_header(
        payload, secret, timestamp=timestamp)


def _session_event(event_id: str, session_id: str, event_type: str, *, paid: bool = True,
                   account_id: str = "", pack: str = "credits_10k") -> dict:
    return {"id": event_id, "object": "event", "type": event_type, "created": int(time.time()),
            "api_version": "2025-01-27.acacia", "livemode": False, "data": {"object": {
                "id": session_id, "object": "checkout.session",
                "payment_status": "paid" if paid else "unpaid",
                "metadata": {"ktape_account_id": account_id, "ktape_pack": pack}}}}


async def _deliver(stub, body: bytes, signature: str) -> pb.HandleStripeWebhookResponse:
    return await stub.HandleStripeWebhook(
        pb.HandleStripeWebhookRequest(body=httpbody_pb2.HttpBody(content_type="application/json",
                                                                 data=body)),
        metadata=(("stripe-signature", signature),))


def _reason(err: grpc.aio.AioRpcError) -> str:
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


async def test_checkout_then_webhook_grants_the_pack_once(billing):
    billingd, stub, proxy = billing
    account = await billingd.store.create_account("buyer")
    key = (await billingd.store.create_key(account.account_id, env="prod")).full
    auth = (("authorization", f"Bearer {key}"),)
    session = await stub.CreateCheckoutSession(pb.CreateCheckoutSessionRequest(pack="credits_10k"),
                                               metadata=auth)
    assert session.session_id.startswith("cs_") and session.url
    (created,) = proxy.posts("/v1/checkout/sessions")
    assert created.form["mode"] == ["payment"]
    assert created.form["metadata[ktape_account_id]"] == [account.account_id]
    assert created.form["line_items[0][price_data][unit_amount]"] == ["1000"]
    assert len(proxy.posts("/v1/customers")) == 1

    before = await billingd.store.balance(account.account_id)
    completed = _session_event("evt_1", session.session_id, "checkout.session.completed")
    reply = await _deliver(stub, *_signed(completed))
    assert (reply.event_id, reply.applied) == ("evt_1", True)
    assert await billingd.store.balance(account.account_id) == before + 10_000
    replay = await _deliver(stub, *_signed(completed))  # Stripe retries the same event
    assert replay.applied is False
    late = _session_event("evt_2", session.session_id, "checkout.session.async_payment_succeeded")
    assert (await _deliver(stub, *_signed(late))).applied is True  # a new event, same payment
    assert await billingd.store.balance(account.account_id) == before + 10_000

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateCheckoutSession(pb.CreateCheckoutSessionRequest(pack="credits_7"),
                                         metadata=auth)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_out_of_order_async_payment_grants_once(billing):
    billingd, stub, _proxy = billing
    account = await billingd.store.create_account("async-buyer")
    pending = _session_event("evt_a", "cs_test_async", "checkout.session.completed", paid=False,
                             account_id=account.account_id)
    succeeded = _session_event("evt_b", "cs_test_async", "checkout.session.async_payment_succeeded",
                               account_id=account.account_id)
    assert (await _deliver(stub, *_signed(succeeded))).applied  # arrives first
    assert (await _deliver(stub, *_signed(pending))).applied  # unpaid: grants nothing
    paid_again = _session_event("evt_c", "cs_test_async", "checkout.session.completed",
                                account_id=account.account_id)
    assert (await _deliver(stub, *_signed(paid_again))).applied
    purchases = [e for e in await billingd.store.entries(account.account_id) if e.kind == "purchase"]
    assert [e.credits for e in purchases] == [10_000]


@pytest.mark.parametrize("tamper", ["wrong_secret", "stale", "edited_body", "missing"])
async def test_bad_signatures_are_rejected(billing, tamper):
    billingd, stub, _proxy = billing
    account = await billingd.store.create_account(f"victim-{tamper}")
    body, signature = _signed(_session_event("evt_x", "cs_x", "checkout.session.completed",
                                             account_id=account.account_id))
    if tamper == "wrong_secret":
        body, signature = _signed(json.loads(body), secret="whsec_attacker")
    elif tamper == "stale":
        body, signature = _signed(json.loads(body), timestamp=int(time.time()) - 3600)
    elif tamper == "edited_body":
        body = body.replace(b"credits_10k", b"credits_1m")
    elif tamper == "missing":
        signature = ""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _deliver(stub, body, signature)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(info.value).startswith("STRIPE_SIGNATURE_")
    assert await billingd.store.balance(account.account_id) == 0


async def test_postpaid_overage_is_reported_once_as_meter_events(billing):
    billingd, _stub, proxy = billing
    account = await billingd.store.create_account("payg", plan="payg")
    key = await billingd.store.create_key(account.account_id, env="prod")
    now = dt.datetime.now(dt.UTC)
    await billingd.store.record_usage([UsageIn("u-1", key.key_id, "m", 1_000, now),
                                       UsageIn("u-2", key.key_id, "m", 7, now),
                                       UsageIn("u-3", key.key_id, "m", 5, now)])
    assert await billingd.stripe.report_meter_usage() == 2
    assert await billingd.stripe.report_meter_usage() == 0  # nothing is reported twice
    await billingd.store.record_usage([UsageIn("u-4", key.key_id, "m", 3, now)])
    proxy.fail_next = 1  # Stripe fails the next attempt; the client retries the same event
    assert await billingd.stripe.report_meter_usage() == 1
    events = proxy.posts("/v1/billing/meter_events")
    assert [e.form["identifier"] for e in events] == [["u-2"], ["u-3"], ["u-4"], ["u-4"]]
    assert events[2].headers["idempotency-key"] == events[3].headers["idempotency-key"]
    assert [e.form["payload[value]"] for e in events] == [["7"], ["5"], ["3"], ["3"]]
    customer = await billingd.store.stripe_customer(account.account_id)
    assert all(e.form["payload[stripe_customer_id]"] == [customer] for e in events)
    assert len(proxy.posts("/v1/customers")) == 1
