#!/usr/bin/env bash
# buf lint / buf breaking, offline.
#   infra/buf.sh lint       STANDARD lint of proto/
#   infra/buf.sh breaking   compare proto/ with the `main` branch (skips if main has none)
# googleapis imports resolve from build/proto-deps (copied from the installed wheel by
# infra/gen_protos.py), because the Buf Schema Registry is not reachable.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
buf=$(bash infra/install_buf.sh)
[ -d build/proto-deps/google/api ] || .venv/bin/python infra/gen_protos.py >/dev/null
case "${1:-}" in
  lint)
    "$buf" lint
    echo "buf lint: clean"
    ;;
  breaking)
    against_ref=${BUF_AGAINST_REF:-main}
    if ! git rev-parse --verify --quiet "$against_ref" >/dev/null; then
      echo "buf breaking: no '$against_ref' branch; skipped"
      exit 0
    fi
    if [ -z "$(git ls-tree -r --name-only "$against_ref" -- proto | grep '\.proto$' || true)" ]; then
      echo "buf breaking: '$against_ref' has no protos yet; skipped"
      exit 0
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    git archive "$against_ref" proto buf.yaml | tar -x -C "$tmp"
    mkdir -p "$tmp/build"
    cp -r build/proto-deps "$tmp/build/proto-deps"
    # Both sides are the same two-module workspace (proto + proto-deps).
    "$buf" breaking --against "$tmp"
    echo "buf breaking: no breaking change against $against_ref"
    ;;
  *)
    echo "usage: infra/buf.sh lint|breaking" >&2
    exit 2
    ;;
esac
