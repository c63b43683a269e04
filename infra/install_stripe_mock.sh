#!/usr/bin/env bash
# Install the pinned stripe-mock (Stripe's own API fake, built from Stripe's OpenAPI
# spec) into .tools/go/bin; print its path. Tests point the stripe client at it with
# KTAPE_STRIPE_API_BASE so every request billingd makes is validated against Stripe's
# published schema. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=pins.env
. "$root/infra/pins.env"
bin_dir="$root/.tools/go/bin"
bin="$bin_dir/stripe-mock"
stamp="$bin_dir/.stripe-mock-$STRIPE_MOCK_VERSION"
if [ -x "$bin" ] && [ -f "$stamp" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to build stripe-mock" >&2; exit 1; }
mkdir -p "$bin_dir"
GOBIN="$bin_dir" GOFLAGS=-mod=mod go install "github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION" >&2
touch "$stamp"
echo "$bin"
