#!/usr/bin/env bash
# Checks deploy/nginx/tokenim.conf for real: three tokenim nodes behind a
# throw-away nginx (its own prefix, pid and logs under a temp dir; the
# system nginx and /etc/nginx are not touched), then through the balancer:
#   - HTTP is spread over the three nodes (nginx's access log names them);
#   - `tokenim register`, `tokenim login` and `tokenim send` work;
#   - a WebSocket session upgrades, authenticates, pings, syncs, sends and
#     gets its send_ack, and the other user gets the push
#     (scripts/nginx-check.py, standard-library Python);
#   - without a cluster (the default: three embedded nodes, each on its own
#     data dir, sharing nothing) the checks above run with two nodes
#     stopped, which also shows nginx skipping dead nodes;
#   - with a cluster (TOKENIM_NODE_ARGS has --redis-url and a shared
#     --database-url) all three stay up, the two users' sockets land on
#     different nodes, and the node holding the receiver's socket is sent
#     SIGTERM: the socket closes with 1001, the client reconnects through
#     nginx to another node and syncs what was sent meanwhile.
# Stops everything and removes the temp dir; exits non-zero on any failure.
#
#   scripts/nginx-check.sh
#   TOKENIM_NODE_ARGS="--database-url postgres://postgres@127.0.0.1/tokenim_check \
#     --redis-url redis://127.0.0.1:6379 --redis-prefix nginxcheck$$" scripts/nginx-check.sh
#
# Env: TOKENIM_BIN (default target/debug/tokenim, built if missing),
# TOKENIM_NODE_ARGS (extra `tokenim serve` flags for every node; with
# --redis-url each node gets --node-id nginx-check-N unless given),
# NGINX_PORT (default 18080), NODE_BASE_PORT (default 8081: nodes on
# BASE, BASE+1, BASE+2), KEEP=1 to keep the temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${TOKENIM_BIN:-$ROOT/target/debug/tokenim}
NGINX_PORT=${NGINX_PORT:-18080}
NODE_BASE_PORT=${NODE_BASE_PORT:-8081}
NODE_ARGS=${TOKENIM_NODE_ARGS:-}
CONF=$ROOT/deploy/nginx/tokenim.conf

say() { echo "nginx-check: $*"; }
fail() {
    echo "nginx-check: FAIL: $*" >&2
    exit 1
}

if ! command -v nginx >/dev/null 2>&1; then
    say "installing nginx (Debian package)"
    if ! apt-get install -y nginx >/tmp/nginx-check-apt.log 2>&1; then
        apt-get update >/dev/null 2>&1 || true
        apt-get install -y nginx >/tmp/nginx-check-apt.log 2>&1 ||
            { cat /tmp/nginx-check-apt.log >&2; fail "apt-get install nginx failed"; }
    fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || fail "no nginx binary"
if [ ! -x "$BIN" ]; then
    say "building tokenim"
    (cd "$ROOT" && cargo build -p tokenim)
fi

ports=("$NODE_BASE_PORT" "$((NODE_BASE_PORT + 1))" "$((NODE_BASE_PORT + 2))")
for p in "$NGINX_PORT" "${ports[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        fail "port $p is already in use (set NGINX_PORT / NODE_BASE_PORT)"
    fi
done

TMP=$(mktemp -d /tmp/nginx-check.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    if [ -s "$TMP/nginx/nginx.pid" ]; then
        local npid
        npid=$(cat "$TMP/nginx/nginx.pid")
        kill -QUIT "$npid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$npid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ $rc -ne 0 ]; then
        for f in "$TMP"/node*.log "$TMP"/nginx/error.log; do
            [ -f "$f" ] && { echo "--- tail of $f" >&2; tail -n 20 "$f" >&2; }
        done
    fi
    if [ -n "${KEEP:-}" ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT

cluster=
case " $NODE_ARGS " in *" --redis-url"*) cluster=1 ;; esac

# --- three nodes -------------------------------------------------------------
node_urls=()
node_spec=()
for i in 0 1 2; do
    port=${ports[$i]}
    extra=()
    if [ -n "$cluster" ]; then
        case " $NODE_ARGS " in *" --node-id"*) ;; *) extra+=(--node-id "nginx-check-$((i + 1))") ;; esac
    fi
    # shellcheck disable=SC2086
    "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$TMP/node$i" \
        --argon2-memory-kib 8 --argon2-iterations 1 "${extra[@]}" $NODE_ARGS \
        >"$TMP/node$i.log" 2>&1 &
    PIDS+=($!)
    node_urls+=("http://127.0.0.1:$port")
    node_spec+=("http://127.0.0.1:$port=$!")
done
for i in 0 1 2; do
    for _ in $(seq 150); do
        curl -fsS "${node_urls[$i]}/readyz" >/dev/null 2>&1 && break
        kill -0 "${PIDS[$i]}" 2>/dev/null || fail "node $((i + 1)) exited (see its log above)"
        sleep 0.1
    done
    curl -fsS "${node_urls[$i]}/readyz" >/dev/null || fail "node $((i + 1)) is not ready"
done
say "3 nodes ready on ${ports[*]}$([ -n "$cluster" ] && echo " (cluster: $NODE_ARGS)" || echo " (embedded, independent)")"

# --- nginx: the deploy config, only the ports changed --------------------------
mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
sed -e "s/listen 8080;/listen 127.0.0.1:$NGINX_PORT;/" \
    -e "s/127\.0\.0\.1:8081/127.0.0.1:${ports[0]}/" \
    -e "s/127\.0\.0\.1:8082/127.0.0.1:${ports[1]}/" \
    -e "s/127\.0\.0\.1:8083/127.0.0.1:${ports[2]}/" \
    "$CONF" >"$TMP/nginx/tokenim.conf"
user_line=
if [ "$(id -u)" = 0 ]; then
    # workers drop to nobody; let them use the temp dirs
    chmod 755 "$TMP" "$TMP/nginx"
    chown -R nobody "$TMP/nginx/tmp"
    user_line="user nobody nogroup;"
fi
cat >"$TMP/nginx/nginx.conf" <<EOF
$user_line
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log info;
events { worker_connections 1024; }
http {
    log_format check '\$request \$status upstream=\$upstream_addr';
    access_log $TMP/nginx/access.log check;
    client_body_temp_path $TMP/nginx/tmp/body;
    proxy_temp_path $TMP/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
    scgi_temp_path $TMP/nginx/tmp/scgi;
    include $TMP/nginx/tokenim.conf;
}
EOF
"$NGINX" -t -q -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" ||
    fail "nginx -t rejects the config"
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g "daemon on;" ||
    fail "nginx did not start"
URL="http://127.0.0.1:$NGINX_PORT"
for _ in $(seq 50); do
    curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
say "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') on $URL"

# --- HTTP is balanced ------------------------------------------------------------
for _ in $(seq 30); do
    curl -fsS "$URL/healthz" >/dev/null || fail "GET /healthz through nginx"
done
used=$(grep -c '^GET /healthz' "$TMP/nginx/access.log" || true)
spread=$(grep '^GET /healthz' "$TMP/nginx/access.log" | sed 's/.*upstream=//' | sort | uniq -c |
    awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')
nodes_hit=$(grep '^GET /healthz' "$TMP/nginx/access.log" | sed 's/.*upstream=//' | sort -u | wc -l)
[ "$nodes_hit" = 3 ] || fail "HTTP went to $nodes_hit node(s), not 3: $spread"
say "ok   HTTP balanced over 3 nodes ($used requests: $spread)"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/metrics")
[ "$code" = 404 ] || fail "/metrics through nginx answered $code, not 404"
say "ok   /metrics not exposed through the balancer (scrape nodes directly)"

# --- without a shared store, keep one node --------------------------------------
if [ -z "$cluster" ]; then
    kill "${PIDS[1]}" "${PIDS[2]}"
    wait "${PIDS[1]}" "${PIDS[2]}" 2>/dev/null || true
    node_spec=("${node_spec[0]}")
    for _ in $(seq 12); do
        curl -fsS "$URL/readyz" >/dev/null || fail "GET /readyz with two nodes down"
    done
    say "ok   two nodes stopped: nginx skips them (12 requests answered)"
fi

# --- one-shot CLI commands through the balancer --------------------------------------
export TOKENIM_HOME=$TMP/home
mkdir -p "$TOKENIM_HOME"
pw=nginx-check-pw
u=nck$(date +%s)$$
a=${u}a
b=${u}b
"$BIN" register --url "$URL" -u "$a" -p "$pw" >/dev/null || fail "tokenim register $a"
"$BIN" register --url "$URL" -u "$b" -p "$pw" >/dev/null || fail "tokenim register $b"
say "ok   tokenim register (2 accounts)"
json() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
tok_a=$("$BIN" login --url "$URL" -u "$a" -p "$pw" --device ws --json | json token) ||
    fail "tokenim login $a"
tok_b=$("$BIN" login --url "$URL" -u "$b" -p "$pw" --device ws --json | json token) ||
    fail "tokenim login $b"
say "ok   tokenim login (2 sessions)"
conv=$("$BIN" send --url "$URL" -u "$a" -p "$pw" --device cli --to "$b" --json \
    "hello over http" | json conv_id) || fail "tokenim send"
say "ok   tokenim send (direct conversation $conv)"

# --- WebSocket through the balancer --------------------------------------------------
restart=()
[ -n "$cluster" ] && restart=(--restart)
python3 "$ROOT/scripts/nginx-check.py" --url "$URL" --token-a "$tok_a" --token-b "$tok_b" \
    --conv "$conv" --nodes "$(IFS=,; echo "${node_spec[*]}")" "${restart[@]}" |
    sed 's/^/nginx-check: /' || fail "WebSocket checks"

hist=$("$BIN" history --url "$URL" -u "$b" -p "$pw" --device cli --with "$a" --json) ||
    fail "tokenim history"
n=$(echo "$hist" | python3 -c "import json,sys; v=json.load(sys.stdin); print(len(v['events'] if isinstance(v, dict) else v))")
want=2
[ -n "$cluster" ] && want=3
[ "$n" -ge "$want" ] || fail "history has $n events, expected $want"
say "ok   tokenim history shows the $n messages"
ws_lines=$(grep -c '^GET /v1/ws' "$TMP/nginx/access.log" || true)
say "nginx access log: $(wc -l <"$TMP/nginx/access.log") requests, $ws_lines WebSocket sessions"
say "all checks passed"
