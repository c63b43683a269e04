#!/usr/bin/env bash
# Install the pinned protoc-gen-openapiv2 (grpc-gateway) into .tools/go/bin; print its path.
# It follows the same google.api.http rules as Envoy's transcoder, so /openapi.json
# describes exactly the REST routes Envoy serves. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=pins.env
. "$root/infra/pins.env"
exec bash "$root/infra/go_install.sh" protoc-gen-openapiv2 \
  "github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$OPENAPIV2_VERSION"
