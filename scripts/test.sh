#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine with a Rust toolchain:
# installs what the tests need, then formatting and lint checks, every Rust
# test (unit, property, integration over real sockets, crash, TLS), and the
# browser tests of the web client in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

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

echo "==> cargo test"
cargo build --workspace --quiet
cargo test --workspace --quiet 2>&1 | tee target/test-output.txt
grep -q "test result" target/test-output.txt

if [ -x tests/web/run.sh ]; then
  echo "==> browser tests"
  TOKENIM_BIN="$PWD/target/debug/tokenim" tests/web/run.sh
fi
echo "==> all tests passed"
