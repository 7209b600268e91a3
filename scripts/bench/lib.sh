# Shared by the benchmark scripts: start and stop a fresh tokenim server
# configured for load tests (cheap Argon2 so that logging in thousands of
# bench users is quick, rate limits out of the way), on loopback only.
# Source it; it sets TOKENIM, TOKENIM_URL, TOKENIM_PID, BENCH_ADMIN.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOKENIM=${TOKENIM:-$ROOT/target/release/tokenim}
BENCH_ADMIN=${BENCH_ADMIN:-bench-admin-secret}
BENCH_PORT=${BENCH_PORT:-28417}
BENCH_DATA=${BENCH_DATA:-/tmp/tokenim-bench-data}

build_tokenim() {
    (cd "$ROOT" && cargo build --release -p tokenim)
}

# start_tokenim: a server on a fresh data directory; waits until it answers.
start_tokenim() {
    rm -rf "$BENCH_DATA"
    mkdir -p "$BENCH_DATA"
    "$TOKENIM" serve --listen "127.0.0.1:$BENCH_PORT" --data-dir "$BENCH_DATA/db" \
        --admin-token "$BENCH_ADMIN" --argon2-memory-kib 8 --argon2-iterations 1 \
        --limit send_rate_per_sec=1000000 --limit send_burst=1000000 \
        --limit login_rate_per_min=10000000 --limit login_burst=10000000 \
        >"$BENCH_DATA/server.log" 2>&1 &
    TOKENIM_PID=$!
    TOKENIM_URL="http://127.0.0.1:$BENCH_PORT"
    for _ in $(seq 100); do
        curl -fsS "$TOKENIM_URL/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$TOKENIM_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "tokenim did not start; its log:" >&2
    cat "$BENCH_DATA/server.log" >&2
    return 1
}

stop_tokenim() {
    if [ -n "${TOKENIM_PID:-}" ]; then
        kill "$TOKENIM_PID" 2>/dev/null || true
        wait "$TOKENIM_PID" 2>/dev/null || true
        TOKENIM_PID=
    fi
}
