#!/usr/bin/env bash
# Debian's Chromium for the console's browser tests (Playwright drives this executable;
# Playwright's own browser download is never used: there is no network for it).
# Prints the executable's path.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; }
fi
command -v chromium
