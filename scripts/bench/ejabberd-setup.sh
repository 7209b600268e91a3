#!/usr/bin/env bash
# Installs Debian's ejabberd and runs a private instance of it for the peer
# comparison of `tokenim bench` (see docs/benchmarks.md):
#   - c2s on 127.0.0.1:5222 only, plain TCP (no STARTTLS, like tokenim's
#     plain ws:// bench listener), SASL PLAIN, passwords stored plain (the
#     cheapest login, as tokenim's bench server uses Argon2 at 8 KiB x 1);
#   - mod_mam with `default: always`, so every message is archived (stored)
#     as tokenim stores every message; the archive and rosters are in SQLite
#     (EJ_DB=sqlite, the default: ejabberd's recommended MAM backend for a
#     small server, one fsync'd transaction per write) or in Mnesia
#     (EJ_DB=mnesia, no fsync per write; ejabberd warns it is limited to 2 GB);
#   - mod_stream_mgmt, whose <a h='N'/> acks are the bench's send_ack;
#   - in-band registration (XEP-0077) open to loopback without a rate limit,
#     which the bench uses to create its accounts in bulk (ejabberdctl
#     starts an Erlang node per call, about a second each).
# Its own config, spool and logs live under $EJ_BASE; the distro's
# /etc/ejabberd is left alone. The node is named ejbench@localhost.
#
# usage: ejabberd-setup.sh [start|stop|status|pid|register USER PASSWORD]
set -euo pipefail

BASE=${EJ_BASE:-/var/lib/tokenim-bench/ejabberd}
DOMAIN=${EJ_DOMAIN:-localhost}
PORT=${EJ_PORT:-5222}
DB=${EJ_DB:-sqlite}
NODE=${EJ_NODE:-ejbench@localhost}
cmd=${1:-start}

ctl() {
    ejabberdctl --node "$NODE" --config "$BASE/ejabberd.yml" \
        --ctl-config "$BASE/ejabberdctl.cfg" --spool "$BASE/spool" \
        --logs "$BASE/log" "$@"
}

install() {
    local pkgs=()
    command -v ejabberdctl >/dev/null || pkgs+=(ejabberd)
    if [ "$DB" = sqlite ] && ! dpkg -s erlang-p1-sqlite3 >/dev/null 2>&1; then
        pkgs+=(erlang-p1-sqlite3)
    fi
    if [ ${#pkgs[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
    fi
    # the package may start its own instance on 5222: ours replaces it
    if command -v service >/dev/null && service ejabberd status >/dev/null 2>&1; then
        service ejabberd stop || true
    fi
}

configure() {
    mkdir -p "$BASE/spool" "$BASE/log"
    local dbconf="default_db: mnesia"
    if [ "$DB" = sqlite ]; then
        dbconf="default_db: sql
sql_type: sqlite
sql_database: \"$BASE/spool/ejabberd.db\""
    fi
    cat >"$BASE/ejabberd.yml" <<YML
# written by scripts/bench/ejabberd-setup.sh: a loopback-only benchmark peer
loglevel: warning
log_rotate_count: 0
hosts:
  - $DOMAIN
$dbconf
auth_method: internal
auth_password_format: plain
registration_timeout: infinity
listen:
  -
    port: $PORT
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    access: c2s
    starttls: false
    backlog: 4096
acl:
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  register:
    allow: all
  trusted_network:
    allow: loopback
shaper_rules:
  max_user_sessions: 10
modules:
  mod_admin_extra: {}
  mod_disco: {}
  mod_mam:
    default: always
  mod_ping: {}
  mod_register:
    access: register
    ip_access: trusted_network
    welcome_message:
      subject: ""
      body: ""
  mod_roster: {}
  mod_stream_mgmt: {}
YML
    cat >"$BASE/ejabberdctl.cfg" <<CFG
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_CONFIG_PATH=$BASE/ejabberd.yml
ERL_MAX_PORTS=65536
CFG
    chown -R ejabberd:ejabberd "$BASE"
}

case "$cmd" in
start)
    install
    if ctl status >/dev/null 2>&1; then
        echo "ejabberd ($NODE) is already running"
    else
        configure
        # ejabberdctl starts the node through su, whose pam_limits would leave
        # it the soft limit of 1024 descriptors: allow the hard limit instead
        echo "ejabberd - nofile $(ulimit -Hn)" >/etc/security/limits.d/tokenim-bench-ejabberd.conf
        ctl start
        ctl started
    fi
    ctl status
    ctl register bench-smoke "$DOMAIN" bench-password >/dev/null 2>&1 || true
    # wait for the SQL pool: the first requests after start can fail on it
    for _ in $(seq 60); do
        ctl get_roster bench-smoke "$DOMAIN" >/dev/null 2>&1 && break
        sleep 0.5
    done
    ctl registered_users "$DOMAIN" | grep -q '^bench-smoke$' \
        || { echo "ejabberdctl register failed" >&2; exit 1; }
    echo "ejabberd ready on 127.0.0.1:$PORT (domain $DOMAIN, db $DB, mod_mam on), pid $("$0" pid)"
    ;;
stop)
    ctl stop >/dev/null 2>&1 || true
    ctl stopped >/dev/null 2>&1 || true
    ;;
status)
    ctl status
    ;;
pid)
    # the beam.smp of our node
    pgrep -f "beam.smp.*-sname $NODE|beam.smp.*-name $NODE" | head -1
    ;;
register)
    ctl register "$2" "$DOMAIN" "$3"
    ;;
wipe)
    "$0" stop
    rm -rf "$BASE"
    ;;
*)
    echo "usage: $0 [start|stop|status|pid|register USER PASSWORD|wipe]" >&2
    exit 2
    ;;
esac
