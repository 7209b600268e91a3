#!/usr/bin/env bash
# Makes sure the local services the tests use answer on loopback:
# PostgreSQL (127.0.0.1:5432, user postgres, trust auth), MariaDB
# (127.0.0.1:3306, root without a password), Redis (127.0.0.1:6379) and
# NATS (127.0.0.1:4222); nginx is only installed (the deployment check runs
# its own). Each service that does not answer is started with the machine's
# usual command (its Debian package installed first when its program is
# missing), then waited for, up to SERVICES_WAIT seconds (default 60) each;
# the script fails with a message naming the service otherwise. The test
# databases are created by the tests themselves, one per test server, and
# dropped afterwards (crates/tokenim-testkit/src/db.rs).
#
# Usage: scripts/services.sh [postgres|mariadb|redis|nats]...
set -euo pipefail

WAIT_SECS=${SERVICES_WAIT:-60}
apt_updated=0

log() { echo "==> services: $*"; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  apt-get install -y -qq "$@" >/dev/null
}

# The Debian package of a program, installed when the program is missing.
need() {
  local prog=$1 pkg=$2
  if ! command -v "$prog" >/dev/null 2>&1 && [ ! -x "$prog" ]; then
    apt_install "$pkg"
  fi
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pg_ok() { pg_isready -q -h 127.0.0.1 -p 5432 && psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; }
my_ok() { mysqladmin -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 ping >/dev/null 2>&1 && mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; }
redis_ok() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
nats_ok() { tcp_open 4222; }

# wait_for NAME CHECK: polls CHECK until it succeeds or WAIT_SECS pass.
wait_for() {
  local name=$1 check=$2 deadline=$((SECONDS + WAIT_SECS))
  until "$check"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: $name did not answer within ${WAIT_SECS}s after being started" >&2
      return 1
    fi
    sleep 0.5
  done
  log "$name is up"
}

start_postgres() {
  need pg_ctlcluster postgresql
  need pg_isready postgresql-client
  need psql postgresql-client
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  if ! pg_ok; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    # A fresh install asks TCP clients for a password: trust loopback, as
    # the tests expect.
    local deadline=$((SECONDS + WAIT_SECS)) hba="/etc/postgresql/$version/main/pg_hba.conf"
    until pg_isready -q -h 127.0.0.1 -p 5432 || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.5; done
    if ! pg_ok && [ -f "$hba" ] && ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      log "trusting loopback logins in $hba"
      sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
      pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
    fi
  fi
  wait_for PostgreSQL pg_ok
}

start_mariadb() {
  need /usr/sbin/mariadbd mariadb-server
  need mysqladmin mariadb-client
  need mariadb mariadb-client
  if ! my_ok; then
    log "starting MariaDB"
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    # A fresh install lets root in only through the socket: allow the
    # passwordless TCP login the tests use.
    local deadline=$((SECONDS + WAIT_SECS))
    until mariadb -u root -e 'SELECT 1' >/dev/null 2>&1 || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.5; done
    if ! my_ok; then
      mariadb -u root -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
        FLUSH PRIVILEGES;" 2>/dev/null || true
    fi
  fi
  wait_for MariaDB my_ok
}

start_redis() {
  need redis-server redis-server
  need redis-cli redis-tools
  if ! redis_ok; then
    log "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
  wait_for Redis redis_ok
}

start_nats() {
  need /usr/sbin/nats-server nats-server
  if ! nats_ok; then
    log "starting NATS"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  fi
  wait_for NATS nats_ok
}

# Arguments name the services to check (default: all of them).
services=("$@")
[ $# -gt 0 ] || services=(postgres mariadb redis nats)
for s in "${services[@]}"; do
  case $s in
    postgres) start_postgres ;;
    mariadb | mysql) start_mariadb ;;
    redis) start_redis ;;
    nats) start_nats ;;
    *)
      echo "error: unknown service $s (postgres, mariadb, redis, nats)" >&2
      exit 2
      ;;
  esac
done
[ $# -eq 0 ] || exit 0
# Not a service the tests talk to: the deployment check runs nginx itself
# (with its own configuration); only make sure it is installed.
need /usr/sbin/nginx nginx
