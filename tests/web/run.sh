#!/usr/bin/env bash
# End-to-end tests of the web client: headless Chromium (playwright-core)
# against `tokenim serve` processes that the tests start themselves.
#
#   tests/web/run.sh                 # builds target/debug/tokenim if needed
#   TOKENIM_BIN=/path/to/tokenim tests/web/run.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$HERE"

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  $SUDO apt-get install -y chromium
fi

echo "== npm dependencies"
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

if [ -z "${TOKENIM_BIN:-}" ]; then
  echo "== building the server (cargo build -p tokenim)"
  (cd "$ROOT" && cargo build -p tokenim)
  TOKENIM_BIN="$ROOT/target/debug/tokenim"
fi
export TOKENIM_BIN
if [ ! -x "$TOKENIM_BIN" ]; then
  echo "server binary not found: $TOKENIM_BIN" >&2
  exit 1
fi

# The tests write the pid of every server they start here; whatever happens,
# none outlives this script.
PIDFILE="$(mktemp)"
export TOKENIM_TEST_PIDFILE="$PIDFILE"
cleanup() {
  while read -r pid; do
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done < "$PIDFILE"
  rm -f "$PIDFILE"
}
trap cleanup EXIT

echo "== running tests with $TOKENIM_BIN"
node --test --test-reporter=spec web.test.js
