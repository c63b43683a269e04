#!/usr/bin/env bash
# Build the console (console/ → build/console) from the committed lockfile: `npm ci`
# when package-lock.json changed since the last install, `vite build` when any source
# is newer than the last build. Nothing here is fetched at run time.
set -euo pipefail
cd "$(dirname "$0")/../console"
if [ ! -f node_modules/.ktape-lock ] || ! cmp -s package-lock.json node_modules/.ktape-lock; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.ktape-lock
fi
stamp=../build/console/.built
if [ ! -f "$stamp" ] || [ -n "$(find src index.html vite.config.ts tsconfig.json package-lock.json ../docs/api.md -newer "$stamp" -print -quit)" ]; then
  npm run --silent build >/dev/null
  touch "$stamp"
fi
