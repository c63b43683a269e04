"""billingd: accounts, API keys, credits, plans and Stripe (ktape.billing.v1)."""
