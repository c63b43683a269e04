"""Metering for queryd: every market-data call authenticated, rate limited, paid for.

`interceptor.MeteringInterceptor` composes a key verifier with a short cache
(`verifier`), a per-key token bucket (`ratelimit`) and a batching usage recorder with an
on-disk spool (`usage`). billingd's internal MeteringService is the source of truth.
"""
