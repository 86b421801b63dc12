#!/usr/bin/env bash
# Test rigs for the failover tests, started only for them and torn down
# after (scripts/services.sh sentinel-up|sentinel-down|sentinel-revive|
# cluster-up|cluster-down|cluster-revive NODE calls this). Loopback ports only.
#
# sentinel: a Redis master on 26390, a replica on 26391 and three sentinels on
#   26479-26481 watching master "gocelery-ha" (quorum 2, down after 1 s). The
#   data nodes keep nothing on disk and refuse writes without a replica
#   (min-replicas-to-write 1), so a demoted master cannot take writes that
#   the resync would throw away. The price: after a switch the new master
#   takes writes again once the sentinels turned the old one into its
#   replica (about 10 s: their fixed INFO cadence).
# cluster: RabbitMQ nodes rabbit-1@localhost .. rabbit-3@localhost on AMQP
#   ports 5681-5683 (distribution 25681-25683, management off), one Erlang
#   cookie, joined to rabbit-1. The shared node rabbit@localhost on 5672 is
#   never touched.
set -euo pipefail

HA_DIR=${HA_DIR:-/tmp/gocelery-ha}
MASTER_NAME=gocelery-ha
REDIS_PORTS=(26390 26391)
SENTINEL_PORTS=(26479 26480 26481)
RABBIT_PORTS=(5681 5682 5683)
WAIT=${HA_WAIT_SECONDS:-60}
# RabbitMQ's own scripts, not Debian's wrappers: those switch to the
# rabbitmq user and write the shared node's startup log.
RABBIT_BIN=/usr/lib/rabbitmq/bin
[ -x "$RABBIT_BIN/rabbitmq-server" ] || RABBIT_BIN=$(dirname "$(command -v rabbitmq-server || echo /usr/sbin/x)")

log() { echo "ha: $*"; }
die() { echo "ha: ERROR: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
    local i
    for ((i = 0; i < WAIT * 10; i++)); do
        port_open "$1" && return 0
        sleep 0.1
    done
    return 1
}

# --- Redis + Sentinel -------------------------------------------------------

redis_node() { # port [replicaof-port]
    local port=$1 dir=$HA_DIR/redis-$1
    mkdir -p "$dir"
    local args=(--port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no
        --daemonize yes --pidfile "$dir/pid" --logfile "$dir/log"
        --min-replicas-to-write 1 --min-replicas-max-lag 10 --maxmemory 256mb
        --repl-diskless-sync yes --repl-diskless-sync-delay 0)
    [ -n "${2:-}" ] && args+=(--replicaof 127.0.0.1 "$2")
    redis-server "${args[@]}"
    wait_port "$port" || die "redis $port did not start"
}

sentinel_master_port() {
    local p
    for p in "${SENTINEL_PORTS[@]}"; do
        if out=$(redis-cli -p "$p" sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null) && [ -n "$out" ]; then
            echo "$out" | sed -n 2p
            return 0
        fi
    done
    return 1
}

sentinel_up() {
    command -v redis-server >/dev/null || die "redis-server missing (scripts/services.sh installs it)"
    if port_open "${SENTINEL_PORTS[0]}"; then log "sentinel: already up"; return; fi
    rm -rf "$HA_DIR"/redis-* "$HA_DIR"/sentinel-*
    redis_node "${REDIS_PORTS[0]}"
    redis_node "${REDIS_PORTS[1]}" "${REDIS_PORTS[0]}"
    local p dir
    for p in "${SENTINEL_PORTS[@]}"; do
        dir=$HA_DIR/sentinel-$p
        mkdir -p "$dir"
        cat >"$dir/sentinel.conf" <<EOF
port $p
bind 127.0.0.1
daemonize yes
pidfile $dir/pid
logfile $dir/log
dir $dir
sentinel monitor $MASTER_NAME 127.0.0.1 ${REDIS_PORTS[0]} 2
sentinel down-after-milliseconds $MASTER_NAME 1000
sentinel failover-timeout $MASTER_NAME 10000
sentinel parallel-syncs $MASTER_NAME 1
EOF
        redis-server "$dir/sentinel.conf" --sentinel
    done
    for p in "${SENTINEL_PORTS[@]}"; do wait_port "$p" || die "sentinel $p did not start"; done
    # Ready when the replica is in sync and every sentinel knows the others.
    local i
    for ((i = 0; i < WAIT * 10; i++)); do
        if redis-cli -p "${REDIS_PORTS[1]}" info replication | grep -q 'master_link_status:up' &&
            [ "$(redis-cli -p "${REDIS_PORTS[0]}" set gocelery-ha-probe 1)" = OK ] &&
            [ "$(redis-cli -p "${SENTINEL_PORTS[0]}" sentinel master "$MASTER_NAME" | grep -A1 -x num-other-sentinels | tail -1)" = 2 ]; then
            log "sentinel: up (master ${REDIS_PORTS[0]}, replica ${REDIS_PORTS[1]}, sentinels ${SENTINEL_PORTS[*]})"
            return
        fi
        sleep 0.1
    done
    die "sentinel rig not ready within ${WAIT}s"
}

# Restart a data node that is down as a replica of the current master, as
# a supervisor would after a crash.
sentinel_revive() {
    local m p
    m=$(sentinel_master_port) || die "no sentinel knows the master"
    for p in "${REDIS_PORTS[@]}"; do
        if ! port_open "$p"; then
            redis_node "$p" "$m"
            log "sentinel: revived $p as replica of $m"
        fi
    done
}

stop_pidfile() {
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    # Nothing on disk to keep: kill -9, and wait until it is gone.
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

sentinel_down() {
    local p
    for p in "${SENTINEL_PORTS[@]}"; do stop_pidfile "$HA_DIR/sentinel-$p/pid"; done
    for p in "${REDIS_PORTS[@]}"; do stop_pidfile "$HA_DIR/redis-$p/pid"; done
    rm -rf "$HA_DIR"/redis-* "$HA_DIR"/sentinel-*
    log "sentinel: down"
}

# --- RabbitMQ cluster --------------------------------------------------------

rabbit_env() { # n
    local n=$1 dir=$HA_DIR/rabbit-$1
    echo RABBITMQ_NODENAME="rabbit-$n@localhost" RABBITMQ_NODE_PORT="${RABBIT_PORTS[n - 1]}" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT="$((RABBIT_PORTS[n - 1] + 20000))" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq" RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        HOME="$HA_DIR/home"
}

# ctl n args...: rabbitmqctl against node n, with the rig's cookie.
ctl() {
    local n=$1
    shift
    env HOME="$HA_DIR/home" "$RABBIT_BIN/rabbitmqctl" -n "rabbit-$n@localhost" "$@"
}

# wait_node n: until node n has booted (await_startup fails at once while
# the node is not registered yet).
wait_node() {
    local i
    for ((i = 0; i < WAIT; i++)); do
        ctl "$1" -q await_startup --timeout 5 >/dev/null 2>&1 && return 0
        sleep 1
    done
    tail -20 "$HA_DIR/rabbit-$1/stdout" >&2
    return 1
}

rabbit_start() { # n
    local n=$1 dir=$HA_DIR/rabbit-$1
    mkdir -p "$dir/mnesia" "$dir/log"
    echo '[].' >"$dir/enabled_plugins"
    # Small and quiet: 2 cores are shared by everything else on the machine.
    cat >"$dir/rabbitmq.conf" <<EOF
loopback_users = none
vm_memory_high_watermark.absolute = 512MiB
disk_free_limit.absolute = 50MB
log.file.level = warning
EOF
    echo '[].' >"$dir/advanced.config"
    # +S 1:1 one scheduler per node; the cluster shares 2 cores with the rest.
    (cd "$dir" && env $(rabbit_env "$n") RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}" \
        setsid "$RABBIT_BIN/rabbitmq-server" >"$dir/stdout" 2>&1 </dev/null &)
}

cluster_up() {
    command -v rabbitmq-server >/dev/null || die "rabbitmq-server missing (scripts/services.sh installs it)"
    local up=0 port
    for port in "${RABBIT_PORTS[@]}"; do port_open "$port" && up=$((up + 1)); done
    if [ "$up" -eq 3 ]; then log "cluster: already up"; return; fi
    # Part of a cluster (a run that died before its cleanup): start afresh.
    [ "$up" -eq 0 ] || cluster_down
    rm -rf "$HA_DIR"/rabbit-* "$HA_DIR/home"
    mkdir -p "$HA_DIR/home"
    echo "gocelery-ha-cookie" >"$HA_DIR/home/.erlang.cookie"
    chmod 400 "$HA_DIR/home/.erlang.cookie"
    local n
    for n in 1 2 3; do rabbit_start "$n"; done
    for n in 1 2 3; do wait_node "$n" || die "rabbit-$n did not start"; done
    for n in 2 3; do
        ctl "$n" -q stop_app
        ctl "$n" -q join_cluster rabbit-1@localhost
        ctl "$n" -q start_app
    done
    log "cluster: up (rabbit-1..3@localhost on ${RABBIT_PORTS[*]})"
}

# Start a node that was killed again; it rejoins the cluster by itself.
cluster_revive() { # n
    local n=$1
    port_open "${RABBIT_PORTS[n - 1]}" && return 0
    rabbit_start "$n"
    wait_node "$n" || die "rabbit-$n did not start again"
    log "cluster: revived rabbit-$n"
}

cluster_down() {
    local n
    # Nothing to keep: kill -9 (a graceful stop of a node whose peer was
    # killed can wait a long time on its quorum queues).
    for n in 3 2 1; do stop_pidfile "$HA_DIR/rabbit-$n/pid"; done
    # A node whose directory is gone (an interrupted run): by its port.
    local pid
    for pid in $(ss -ltnpH 2>/dev/null | grep -E "127\.0\.0\.1:(${RABBIT_PORTS[0]}|${RABBIT_PORTS[1]}|${RABBIT_PORTS[2]}) " |
        grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$HA_DIR"/rabbit-* "$HA_DIR/home"
    log "cluster: down"
}

case "${1:-}" in
sentinel-up) sentinel_up ;;
sentinel-down) sentinel_down ;;
sentinel-revive) sentinel_revive ;;
cluster-up) cluster_up ;;
cluster-down) cluster_down ;;
cluster-revive) cluster_revive "${2:?node number}" ;;
*) die "usage: $0 sentinel-up|sentinel-down|sentinel-revive|cluster-up|cluster-down|cluster-revive N" ;;
esac
