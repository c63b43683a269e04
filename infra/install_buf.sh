#!/usr/bin/env bash
# Install the pinned buf (npm package @bufbuild/buf) into .tools/node and print its path.
# Idempotent: an installed binary of the pinned version is kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=pins.env
. "$root/infra/pins.env"
prefix="$root/.tools/node"
bin="$prefix/node_modules/.bin/buf"
if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "$BUF_VERSION" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$prefix"
npm install --silent --no-audit --no-fund --prefix "$prefix" "@bufbuild/buf@$BUF_VERSION" >&2
"$bin" --version >&2
echo "$bin"
