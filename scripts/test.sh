#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine with a Rust toolchain:
# starts the local services the tests use (scripts/services.sh), installs
# what the tests need, then formatting and lint checks, every Rust test
# (unit, property, integration over real sockets, crash, TLS) on the
# embedded store, the browser tests of the web client in headless Chromium,
# the nginx deployment check against a three-node cluster, and finally the storage-parameterised suites again on PostgreSQL and on
# MySQL (TOKENIM_TEST_DATABASE; each test server gets a database of its own,
# dropped afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

echo "==> services"
scripts/services.sh

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "==> cargo test (backend: embedded)"
t=$SECONDS
cargo build --workspace --quiet
TOKENIM_TEST_DATABASE=embedded cargo test --workspace --quiet 2>&1 | tee target/test-output.txt
grep -q "test result" target/test-output.txt
timings="embedded (whole workspace): $((SECONDS - t))s"

if [ -x tests/web/run.sh ]; then
  echo "==> browser tests"
  t=$SECONDS
  TOKENIM_BIN="$PWD/target/debug/tokenim" tests/web/run.sh
  timings="$timings; browser: $((SECONDS - t))s"
fi

# The deployment example of docs/operations.md, for real: nginx from
# Debian's packages in front of three nodes sharing one PostgreSQL database
# and Redis (a database and key prefix of this run's own).
echo "==> nginx in front of a three-node cluster (scripts/nginx-check.sh)"
t=$SECONDS
check_db="tokenim_nginx_check_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $check_db"
cleanup_check() {
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $check_db WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli --scan --pattern "nginxcheck$$:*" | xargs -r redis-cli del >/dev/null 2>&1 || true
}
trap cleanup_check EXIT
TOKENIM_BIN="$PWD/target/debug/tokenim" \
  TOKENIM_NODE_ARGS="--database-url postgres://postgres@127.0.0.1/$check_db --redis-url redis://127.0.0.1:6379 --redis-prefix nginxcheck$$" \
  scripts/nginx-check.sh
timings="$timings; nginx: $((SECONDS - t))s"

# The suites that run over any storage backend, again on each SQL one (one
# parameterised suite: the same tests, TOKENIM_TEST_DATABASE picks the
# store): the store's own tests, the protocol and conversation-feature
# suites of the testkit, the crash test of the real binary, and the client
# and CLI tests that run against a test server.
for backend in postgres mysql; do
  echo
  echo "================================================================"
  echo "==> backend: $backend (TOKENIM_TEST_DATABASE=$backend)"
  echo "================================================================"
  t=$SECONDS
  out="target/test-output-$backend.txt"
  : >"$out"
  export TOKENIM_TEST_DATABASE=$backend
  for suite in "-p tokenim-store --tests" \
    "-p tokenim-testkit --tests" \
    "-p tokenim --test crash --test cli" \
    "-p tokenim-client --test reliability"; do
    echo "==> [$backend] cargo test $suite"
    # shellcheck disable=SC2086 # $suite is a list of arguments
    cargo test --quiet $suite 2>&1 | tee -a "$out"
  done
  unset TOKENIM_TEST_DATABASE
  timings="$timings; $backend: $((SECONDS - t))s"
done

echo "==> timings: $timings; total $((SECONDS - started))s"
echo "==> all tests passed"
