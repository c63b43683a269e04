#!/usr/bin/env bash
# Install the pinned protoc-gen-openapiv2 (grpc-gateway) into .tools/go/bin; print its path.
# It follows the same google.api.http rules as Envoy's transcoder, so /openapi.json
# describes exactly the REST routes Envoy serves. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=pins.env
. "$root/infra/pins.env"
bin_dir="$root/.tools/go/bin"
bin="$bin_dir/protoc-gen-openapiv2"
stamp="$bin_dir/.openapiv2-$OPENAPIV2_VERSION"
if [ -x "$bin" ] && [ -f "$stamp" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to build protoc-gen-openapiv2" >&2; exit 1; }
mkdir -p "$bin_dir"
GOBIN="$bin_dir" GOFLAGS=-mod=mod go install \
  "github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$OPENAPIV2_VERSION" >&2
touch "$stamp"
echo "$bin"
