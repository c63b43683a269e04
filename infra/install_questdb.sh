#!/usr/bin/env bash
# Install the pinned QuestDB server jar into .tools/questdb/ and verify its SHA-256.
#
# Why a jar: QuestDB is not packaged for PyPI/npm/Debian; Maven Central serves one
# self-contained jar (native libraries inside) that runs on the machine's Java.
# Idempotent: a present jar with the right checksum is kept; a wrong one is replaced.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=pins.env
. "$root/infra/pins.env"
repo=${KTAPE_MAVEN_REPO:-https://repo1.maven.org/maven2}
dest="$root/.tools/questdb"
jar="$dest/questdb-$QUESTDB_VERSION.jar"
mkdir -p "$dest"
if [ -f "$jar" ] && echo "$QUESTDB_SHA256  $jar" | sha256sum -c --status; then
  echo "questdb $QUESTDB_VERSION already installed: $jar"
  exit 0
fi
url="$repo/org/questdb/questdb/$QUESTDB_VERSION/questdb-$QUESTDB_VERSION.jar"
echo "downloading questdb $QUESTDB_VERSION"
tmp="$jar.part"
for attempt in 1 2 3; do
  if curl -fsSL --retry 3 --connect-timeout 20 -m 600 -o "$tmp" "$url"; then break; fi
  echo "download attempt $attempt failed" >&2
  [ "$attempt" = 3 ] && exit 1
  sleep $((attempt * 5))
done
if ! echo "$QUESTDB_SHA256  $tmp" | sha256sum -c --status; then
  echo "checksum mismatch for questdb-$QUESTDB_VERSION.jar (expected $QUESTDB_SHA256)" >&2
  rm -f "$tmp"
  exit 1
fi
mv "$tmp" "$jar"
echo "questdb $QUESTDB_VERSION installed: $jar"
