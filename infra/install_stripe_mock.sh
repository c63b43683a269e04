#!/usr/bin/env bash
# Install the pinned stripe-mock (Stripe's API fake, built from Stripe's OpenAPI spec) into
# .tools/go/bin; print its path. Tests point the stripe client at it with
# KTAPE_STRIPE_API_BASE so every request billingd makes is validated against Stripe's
# published schema. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=pins.env
. "$root/infra/pins.env"
exec bash "$root/infra/go_install.sh" stripe-mock "github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION"
