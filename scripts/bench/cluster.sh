#!/usr/bin/env bash
# One node against a three-node cluster, on this one machine, same scenario:
# `pairs` (closed loop, window 1) at 16 and 256 senders, RUNS times each
# (default 3), every run on fresh servers and fresh storage:
#
#   single     one node, embedded store (what scripts/bench/run.sh starts)
#   single-pg  one node on PostgreSQL, no Redis (the SQL store's own cost)
#   three-pg   three nodes on one PostgreSQL database + Redis (own key
#              prefix per run); the bench spreads clients round-robin and
#              puts every receiver on another node than its sender, so each
#              message crosses the Redis bus
#
# Every JSON result goes to OUT (default docs/bench/cluster.jsonl) with the
# label cluster-CONFIG-pP, and the medians are printed (send->send_ack and
# send->receive p50/p99, server CPU summed over the nodes, the CPU of the
# database and Redis apart from the rest of the machine) and written to MD
# (default docs/bench/cluster.md).
#
#   scripts/bench/cluster.sh
#   CL_CONFIGS="single three-pg" CL_PAIRS="16" RUNS=1 scripts/bench/cluster.sh
#
# Env: RUNS, CL_CONFIGS (default "single single-pg three-pg"), CL_PAIRS
# (default "16 256"), CL_SECS (seconds of sending per run, default 5),
# CL_STORE (postgres or mysql, default postgres), PG_URL (default
# postgres://postgres@127.0.0.1:5432), MYSQL_URL (default
# mysql://root@127.0.0.1:3306), REDIS_URL (default redis://127.0.0.1:6379),
# CL_BASE_PORT (default 28421: nodes on BASE..BASE+2), CL_POOL (database
# pool per node, default 16), OUT, MD, TOKENIM (binary), NO_BUILD=1.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}
CL_CONFIGS=${CL_CONFIGS:-"single single-pg three-pg"}
CL_PAIRS=${CL_PAIRS:-"16 256"}
CL_SECS=${CL_SECS:-5}
CL_STORE=${CL_STORE:-postgres}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
MYSQL_URL=${MYSQL_URL:-mysql://root@127.0.0.1:3306}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
CL_BASE_PORT=${CL_BASE_PORT:-28421}
CL_POOL=${CL_POOL:-16}
OUT=${OUT:-$ROOT/docs/bench/cluster.jsonl}
MD=${MD:-$ROOT/docs/bench/cluster.md}
DB=tokenim_bench_cluster
mkdir -p "$(dirname "$OUT")"

# The SQL store and cluster mode must be in the binary.
sql_ready() {
    ! grep -q "not built yet" "$ROOT/crates/tokenim-store/src/sql/mod.rs" 2>/dev/null
}
cluster_ready() {
    [ -d "$ROOT/crates/tokenim-server/src/cluster" ] || [ -f "$ROOT/crates/tokenim-server/src/cluster.rs" ]
}
for c in $CL_CONFIGS; do
    case $c in
    single) ;;
    single-pg) sql_ready || { echo "cluster.sh: the SQL store is not built yet; drop single-pg from CL_CONFIGS" >&2; exit 1; } ;;
    three-pg)
        sql_ready && cluster_ready || { echo "cluster.sh: the SQL store or cluster mode is not built yet; drop three-pg from CL_CONFIGS" >&2; exit 1; }
        ;;
    *) echo "cluster.sh: unknown config $c" >&2; exit 1 ;;
    esac
done

[ -n "${NO_BUILD:-}" ] || build_tokenim >&2

# --- storage ---------------------------------------------------------------------
db_url() {
    case $CL_STORE in
    postgres) echo "$PG_URL/$DB" ;;
    mysql) echo "$MYSQL_URL/$DB" ;;
    esac
}
fresh_db() {
    case $CL_STORE in
    postgres)
        local u=${PG_URL#postgres://}
        local user=${u%%@*} hostport=${u#*@}
        PGPASSWORD=${PGPASSWORD:-} psql -q -h "${hostport%:*}" -p "${hostport##*:}" -U "$user" -d postgres \
            -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
        ;;
    mysql)
        local u=${MYSQL_URL#mysql://}
        local user=${u%%@*} hostport=${u#*@}
        mysql -h "${hostport%:*}" -P "${hostport##*:}" -u "$user" \
            -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB" >/dev/null
        ;;
    *) echo "cluster.sh: CL_STORE is postgres or mysql" >&2; exit 1 ;;
    esac
}
redis_cli() {
    local hp=${REDIS_URL#redis://}
    hp=${hp%%/*}
    redis-cli -h "${hp%:*}" -p "${hp##*:}" "$@"
}
# Deletes the keys of one run's prefix.
redis_clean() {
    redis_cli --scan --pattern "$1*" | while read -r k; do redis_cli del "$k" >/dev/null; done
}

# --- nodes -------------------------------------------------------------------------
NODE_PIDS=()
NODE_URLS=()
PREFIX=
# start_nodes N [serve flags...]: N nodes on CL_BASE_PORT.., each on its own
# data dir (unused with --database-url); waits until every one is ready.
start_nodes() {
    local n=$1 i port
    shift
    NODE_PIDS=()
    NODE_URLS=()
    rm -rf "$BENCH_DATA"
    mkdir -p "$BENCH_DATA"
    for i in $(seq 0 $((n - 1))); do
        port=$((CL_BASE_PORT + i))
        "$TOKENIM" serve --listen "127.0.0.1:$port" --data-dir "$BENCH_DATA/node$i" \
            --admin-token "$BENCH_ADMIN" --argon2-memory-kib 8 --argon2-iterations 1 \
            --limit send_rate_per_sec=1000000 --limit send_burst=1000000 \
            --limit login_rate_per_min=10000000 --limit login_burst=10000000 \
            "$@" >"$BENCH_DATA/node$i.log" 2>&1 &
        NODE_PIDS+=($!)
        NODE_URLS+=("http://127.0.0.1:$port")
        if [ "$i" = 0 ] && [ "$n" -gt 1 ]; then
            # the first node applies the schema migrations; let it finish
            wait_ready 0
        fi
    done
    for i in $(seq 0 $((n - 1))); do
        wait_ready "$i"
    done
}
wait_ready() {
    local i=$1 _
    for _ in $(seq 300); do
        curl -fsS "${NODE_URLS[$i]}/readyz" >/dev/null 2>&1 && return 0
        kill -0 "${NODE_PIDS[$i]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "node $i did not start; its log:" >&2
    cat "$BENCH_DATA/node$i.log" >&2
    return 1
}
stop_nodes() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${NODE_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    NODE_PIDS=()
    if [ -n "$PREFIX" ]; then
        redis_clean "$PREFIX"
        PREFIX=
    fi
}
trap stop_nodes EXIT

tmp=$(mktemp)
for p in $CL_PAIRS; do
    for i in $(seq "$RUNS"); do
        for c in $CL_CONFIGS; do
            label=cluster-$c-p$p
            case $c in
            single) start_nodes 1 ;;
            single-pg)
                fresh_db
                start_nodes 1 --database-url "$(db_url)" --database-pool "$CL_POOL"
                ;;
            three-pg)
                fresh_db
                PREFIX=benchcl$$r$i
                redis_clean "$PREFIX"
                start_nodes 3 --database-url "$(db_url)" --database-pool "$CL_POOL" \
                    --redis-url "$REDIS_URL" --redis-prefix "$PREFIX"
                ;;
            esac
            urls=$(IFS=,; echo "${NODE_URLS[*]}")
            pids=$(IFS=,; echo "${NODE_PIDS[*]}")
            echo "== $label run $i/$RUNS: pairs --pairs $p on $urls" >&2
            "$TOKENIM" bench pairs --url "$urls" --admin-token "$BENCH_ADMIN" \
                --server-pid "$pids" --aux-procs postgres,mariadbd,mysqld,redis-server \
                --label "$label" --pairs "$p" --window 1 \
                --messages 10000000 --duration "$CL_SECS" | tee "$tmp.out" >&2
            tail -n 1 "$tmp.out" >>"$tmp"
            stop_nodes
        done
    done
done
cat "$tmp" >>"$OUT"
{
    echo "<!-- written by scripts/bench/cluster.sh on $(date -u +%Y-%m-%dT%H:%MZ); medians of $RUNS runs; store $CL_STORE -->"
    python3 "$(dirname "$0")/table.py" --cluster "$tmp"
} >"$MD"
cat "$MD"
rm -f "$tmp" "$tmp.out"
