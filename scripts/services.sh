#!/usr/bin/env bash
# Make the test prerequisites available: RabbitMQ on 127.0.0.1:5672, Redis on
# 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432, the Python interop venv (.venv) and staticcheck.
# Idempotent and fast when everything is already there: each step first checks
# whether its thing answers/exists and only then installs or starts it.
# Needs root (or an already-provisioned machine) for the apt-get/start steps.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

WAIT_SECONDS=${SERVICES_WAIT_SECONDS:-90}
STATICCHECK_VERSION=v0.7.0

log() { echo "services: $*"; }
die() { echo "services: ERROR: $*" >&2; exit 1; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port
    local i
    for ((i = 0; i < WAIT_SECONDS; i++)); do
        port_open "$2" && return 0
        sleep 1
    done
    return 1
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
    [ "$(id -u)" = 0 ] || die "need root to apt-get install $*"
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
    if port_open 6379; then log "redis: up on 6379"; return; fi
    command -v redis-server >/dev/null || apt_install redis-server
    log "redis: starting"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_port redis 6379 || die "redis did not open 127.0.0.1:6379 within ${WAIT_SECONDS}s"
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping)" = PONG ] || die "redis-cli ping did not answer PONG"
    log "redis: up (PONG)"
}

ensure_rabbitmq() {
    if port_open 5672; then log "rabbitmq: up on 5672"; return; fi
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    # Erlang distribution needs the node's host name to resolve; containers
    # sometimes lack an /etc/hosts entry for it. Pin the node to localhost via
    # the env file so rabbitmq-server and rabbitmqctl agree on the name.
    if ! getent hosts "$(hostname -s)" >/dev/null 2>&1 &&
        ! grep -q '^NODENAME=' /etc/rabbitmq/rabbitmq-env.conf 2>/dev/null; then
        log "rabbitmq: host name does not resolve, using NODENAME=rabbit@localhost"
        echo 'NODENAME=rabbit@localhost' >>/etc/rabbitmq/rabbitmq-env.conf
    fi
    # Without systemd we start the node by hand. As root, Debian's wrapper
    # re-executes itself as the rabbitmq user (su), so HOME and the Erlang
    # cookie in /var/lib/rabbitmq are right; default config = no plugins,
    # guest/guest allowed from loopback only.
    log "rabbitmq: starting (rabbitmq-server -detached)"
    (cd /tmp && rabbitmq-server -detached)
    if ! wait_port rabbitmq 5672; then
        tail -n 30 /var/log/rabbitmq/*.log 2>/dev/null >&2 || true
        die "rabbitmq did not open 127.0.0.1:5672 within ${WAIT_SECONDS}s"
    fi
    timeout "$WAIT_SECONDS" rabbitmqctl -q await_startup >/dev/null ||
        die "rabbitmqctl await_startup failed"
    log "rabbitmq: up"
}

# PostgreSQL for the beat store's tests: Debian's cluster started with
# pg_ctlcluster (no systemd), a login role gocelery/gocelery that may create
# databases (each test makes its own) and the database gocelery_test.
PG_ROLE=gocelery
PG_DB=gocelery_test
pg_ready() {
    PGPASSWORD=$PG_ROLE PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -p 5432 -U "$PG_ROLE" -d "$PG_DB" \
        -Atqc 'select 1' >/dev/null 2>&1
}
as_postgres() { su -s /bin/sh postgres -c "$*"; }
ensure_postgres() {
    if port_open 5432 && pg_ready; then log "postgres: up on 5432"; return; fi
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    [ "$(id -u)" = 0 ] || die "need root to start PostgreSQL"
    local ver name port status
    if ! pg_lsclusters -h | grep -q .; then
        ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
        log "postgres: creating cluster $ver/main"
        pg_createcluster "$ver" main >/dev/null
    fi
    read -r ver name port status _ < <(pg_lsclusters -h | head -1)
    [ "$port" = 5432 ] || die "PostgreSQL cluster $ver/$name listens on $port, want 5432"
    if [ "$status" != online ]; then
        log "postgres: starting cluster $ver/$name"
        pg_ctlcluster "$ver" "$name" start
    fi
    wait_port postgres 5432 || die "postgres did not open 127.0.0.1:5432 within ${WAIT_SECONDS}s"
    as_postgres "psql -v ON_ERROR_STOP=1 -q" <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_ROLE';
  END IF;
END \$\$;
SQL
    if [ -z "$(as_postgres "psql -Atqc \"SELECT 1 FROM pg_database WHERE datname = '$PG_DB'\"")" ]; then
        as_postgres "createdb -O $PG_ROLE $PG_DB"
    fi
    pg_ready || die "cannot log in to PostgreSQL as $PG_ROLE on 127.0.0.1:5432/$PG_DB"
    log "postgres: up (postgres://$PG_ROLE:$PG_ROLE@127.0.0.1:5432/$PG_DB)"
}

ensure_venv() {
    local req=interop/python/requirements.txt stamp=.venv/.requirements.sha256 want
    want=$( (sha256sum "$req"; python3 --version) | sha256sum | cut -d' ' -f1)
    if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        log "venv: up to date"
        return
    fi
    # Rebuild from scratch so removed pins do not linger.
    log "venv: creating .venv from $req"
    rm -rf .venv
    # Debian's own python3 ships venv/ensurepip in a separate package.
    python3 -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv; python3 -m venv .venv; }
    .venv/bin/pip install -q --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
    log "venv: ready"
}

ensure_staticcheck() {
    local gobin
    gobin="$(go env GOPATH)/bin"
    export PATH="$gobin:$PATH"
    if command -v staticcheck >/dev/null; then log "staticcheck: $(command -v staticcheck)"; return; fi
    log "staticcheck: go install honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
    GOBIN="$gobin" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
    log "staticcheck: installed in $gobin (add it to PATH)"
}

# The failover rigs, started and stopped by the tests that need them.
case "${1:-}" in
sentinel-* | cluster-*) exec "$ROOT/scripts/ha.sh" "$@" ;;
esac

ensure_redis
ensure_rabbitmq
ensure_postgres
ensure_venv
ensure_staticcheck
log "all ready (root: $ROOT)"
