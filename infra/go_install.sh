#!/usr/bin/env bash
# Install a pinned Go tool into .tools/go/bin and print its path; idempotent (a stamp per
# version). Usage: infra/go_install.sh BINARY MODULE@VERSION
# Used for protoc-gen-openapiv2 (OpenAPI from the protos) and stripe-mock (tests).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=$1
module=$2
bin_dir="$root/.tools/go/bin"
bin="$bin_dir/$name"
stamp="$bin_dir/.$name-${module##*@}"
if [ -x "$bin" ] && [ -f "$stamp" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to build $name" >&2; exit 1; }
mkdir -p "$bin_dir"
GOBIN="$bin_dir" GOFLAGS=-mod=mod go install "$module" >&2
touch "$stamp"
echo "$bin"
