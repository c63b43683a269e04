#!/usr/bin/env bash
# Install the pinned helm into .tools/go/bin; print its path. infra/check_deploy.py lints
# and renders deploy/helm/ktape with it. Idempotent (stamped per version); the first build
# takes minutes (helm brings the Kubernetes client libraries), later runs none.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=pins.env
. "$root/infra/pins.env"
exec bash "$root/infra/go_install.sh" helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
