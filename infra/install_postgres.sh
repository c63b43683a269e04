#!/usr/bin/env bash
# Make sure a PostgreSQL server (Debian's packages) is installed for the billing store's
# tests and for KTAPE_BILLING_DSN deployments; print its bin directory. The tests start
# their own private server from these binaries (initdb into a temp dir, loopback port),
# so no system cluster is used or started here. Idempotent.
set -euo pipefail
find_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
bin=$(find_bin || true)
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo -n); fi
  echo "installing PostgreSQL from Debian's packages" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 || {
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
  }
  # The package starts a system cluster on 5432; the tests never use it.
  bin=$(find_bin)
fi
echo "$bin"
