"""Everything billingd says to and hears from Stripe.

- Checkout: a payment-mode Checkout session per credit pack, tagged with the account
  and pack; the credits are granted only by the signed webhook, never by the redirect.
- Webhooks: the raw body is verified against `Stripe-Signature` with the official
  library (`stripe.Webhook.construct_event`, 5-minute tolerance). Each event id is
  applied once; the grant itself is keyed by checkout session, so `completed` and
  `async_payment_succeeded` for one payment, in either order, grant once.
- Pay as you go: usage beyond the balance on postpaid plans is reported as Billing Meter
  events, each with the usage event's id as `identifier` (Stripe drops repeats) and as
  the request's idempotency key; a row is marked reported only after Stripe accepted it.

The official `stripe` library does the HTTP (async over httpx); `KTAPE_STRIPE_API_BASE`
points it at a local double in tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import stripe

from billingd.store.aio import AsyncBillingStore
from ktape.errors import InvalidArgument, Unavailable
from ktape.log import get_logger
from ktape.pricing import CREDIT_PACKS

log = get_logger(__name__)

METER_EVENT_NAME = "ktape_credits"
DEFAULT_SUCCESS_URL = "https://ktape.dev/billing/success?session_id={CHECKOUT_SESSION_ID}"
DEFAULT_CANCEL_URL = "https://ktape.dev/billing/cancelled"
GRANTING_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
SIGNATURE_TOLERANCE_SECS = 300


class StripeGateway:
    def __init__(self, store: AsyncBillingStore, *, api_key: str | None, webhook_secret: str | None,
                 api_base: str | None = None) -> None:
        self.store = store
        self.webhook_secret = webhook_secret
        self.client: stripe.StripeClient | None = None
        if api_key:
            bases = {"api": api_base} if api_base else {}
            self.client = stripe.StripeClient(api_key, base_addresses=bases,  # type: ignore[arg-type]
                                              http_client=stripe.HTTPXClient(), max_network_retries=2)

    def _need_client(self) -> stripe.StripeClient:
        if self.client is None:
            raise Unavailable("Stripe is not configured on this deployment (KTAPE_STRIPE_API_KEY)",
                              reason="STRIPE_NOT_CONFIGURED")
        return self.client

    async def _customer(self, account_id: str) -> str:
        """The account's Stripe customer, created once (idempotency key per account)."""
        known = await self.store.stripe_customer(account_id)
        if known:
            return known
        customer = await self._call(self._need_client().v1.customers.create_async(
            params={"metadata": {"ktape_account_id": account_id}},
            options={"idempotency_key": f"ktape-customer-{account_id}"}))
        return await self.store.set_stripe_customer(account_id, customer.id)

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except stripe.APIConnectionError as exc:
            raise Unavailable(f"Stripe unreachable: {exc.user_message or exc}",
                              reason="STRIPE_UNAVAILABLE", retry_after_secs=5) from None
        except stripe.StripeError as exc:
            log.error("stripe.error", status=exc.http_status, code=exc.code,
                      message=exc.user_message)
            raise Unavailable(f"Stripe refused the request: {exc.user_message or exc}",
                              reason="STRIPE_ERROR", retry_after_secs=5) from None

    async def create_checkout(self, account_id: str, pack_id: str, *, success_url: str,
                              cancel_url: str) -> tuple[str, str]:
        pack = CREDIT_PACKS.get(pack_id)
        if pack is None:
            raise InvalidArgument.field("pack", f"unknown pack (one of {', '.join(CREDIT_PACKS)})",
                                        pack=pack_id)
        client = self._need_client()
        customer = await self._customer(account_id)
        session = await self._call(client.v1.checkout.sessions.create_async(params={
            "mode": "payment",
            "customer": customer,
            "client_reference_id": account_id,
            "success_url": success_url or DEFAULT_SUCCESS_URL,
            "cancel_url": cancel_url or DEFAULT_CANCEL_URL,
            "line_items": [{"quantity": 1, "price_data": {
                "currency": "usd", "unit_amount": pack.price_cents,
                "product_data": {"name": f"{pack.credits:,} ktape credits"}}}],
            "metadata": {"ktape_account_id": account_id, "ktape_pack": pack.pack_id},
        }))
        await self.store.record_checkout(session.id, account_id, pack.pack_id, pack.credits)
        log.info("stripe.checkout_created", account_id=account_id, pack=pack.pack_id,
                 session_id=session.id)
        return session.id, session.url or ""

    async def create_portal(self, account_id: str, *, return_url: str) -> str:
        """A Stripe customer-portal session (cards, invoices, receipts) for the account;
        returns its URL."""
        client = self._need_client()
        customer = await self._customer(account_id)
        session = await self._call(client.v1.billing_portal.sessions.create_async(params={
            "customer": customer, "return_url": return_url or DEFAULT_CANCEL_URL}))
        log.info("stripe.portal_created", account_id=account_id)
        return str(session.url)

    async def handle_webhook(self, payload: bytes, signature: str) -> tuple[str, bool]:
        if not self.webhook_secret:
            raise Unavailable("Stripe webhooks are not configured (KTAPE_STRIPE_WEBHOOK_SECRET)",
                              reason="STRIPE_NOT_CONFIGURED")
        if not signature:
            raise InvalidArgument("missing Stripe-Signature header",
                                  reason="STRIPE_SIGNATURE_MISSING")
        try:
            event = stripe.Webhook.construct_event(payload, signature, self.webhook_secret,
                                                   tolerance=SIGNATURE_TOLERANCE_SECS)
        except stripe.SignatureVerificationError as exc:
            log.warning("stripe.webhook_rejected", error=str(exc))
            raise InvalidArgument(f"Stripe-Signature does not verify: {exc}",
                                  reason="STRIPE_SIGNATURE_INVALID") from None
        except ValueError as exc:
            raise InvalidArgument(f"webhook body is not a Stripe event: {exc}",
                                  reason="STRIPE_EVENT_INVALID") from None
        grant = await self._grant_for(event)
        applied = await self.store.apply_stripe_event(event.id, event.type, int(event.created),
                                                      grant)
        log.info("stripe.webhook", event_id=event.id, type=event.type, applied=applied,
                 granted=grant[1] if grant and applied else 0)
        return event.id, applied

    async def _grant_for(self, event: Any) -> tuple[str, int, str, str] | None:
        if event.type not in GRANTING_EVENTS:
            return None
        session = event.data.object.to_dict()
        if event.type == "checkout.session.completed" and session.get("payment_status") != "paid":
            return None  # async payment pending: async_payment_succeeded will grant
        session_id = session.get("id", "")
        known = await self.store.checkout(session_id)
        if known is not None:
            account_id, pack_id, credits = known
        else:  # the webhook beat our own bookkeeping; the signed metadata is ours
            metadata = session.get("metadata") or {}
            account_id = metadata.get("ktape_account_id", "")
            pack = CREDIT_PACKS.get(metadata.get("ktape_pack", ""))
            if not account_id or pack is None:
                log.error("stripe.unknown_session", event_id=event.id, session_id=session_id)
                return None
            pack_id, credits = pack.pack_id, pack.credits
        return (account_id, credits, f"checkout:{session_id}",
                f"credit pack {pack_id} (Stripe {session_id})")

    async def report_meter_usage(self) -> int:
        """Report unreported postpaid usage as meter events; returns events reported."""
        if self.client is None:
            return 0
        reports = await self.store.unreported_meter_usage()
        done: list[str] = []
        try:
            for report in reports:
                customer = await self._customer(report.account_id)
                served = dt.datetime.fromisoformat(report.served_at)
                await self._call(self.client.v1.billing.meter_events.create_async(
                    params={"event_name": METER_EVENT_NAME, "identifier": report.event_id,
                            "timestamp": int(served.timestamp()),
                            "payload": {"stripe_customer_id": customer,
                                        "value": str(report.credits)}},
                    options={"idempotency_key": f"ktape-meter-{report.event_id}"}))
                done.append(report.event_id)
        finally:
            if done:
                await self.store.mark_meter_reported(done)
        return len(done)

    async def run_meter_reporter(self, interval_secs: float = 5.0) -> None:
        while True:
            try:
                count = await self.report_meter_usage()
                if count:
                    log.info("stripe.meter_reported", events=count)
            except Unavailable as exc:
                log.warning("stripe.meter_report_failed", error=exc.message)
            await asyncio.sleep(interval_secs)
