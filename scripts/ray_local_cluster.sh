#!/usr/bin/env bash
# A two-node Ray cluster on loopback: a head and a second node, each its own raylet with its own
# resources (custom resources `node_head` and `node_second` tell them apart). Good for trying
# `ray job submit` and actor placement across nodes on one machine.
#
#   scripts/ray_local_cluster.sh start [CPUS_PER_NODE]   (default 1 CPU each)
#   scripts/ray_local_cluster.sh status
#   scripts/ray_local_cluster.sh stop    (this cluster only: the processes of the session its head runs on
#                                         RAY_HEAD_PORT, and their children; not `ray stop`, which would stop
#                                         every Ray process of this user on this host)
#
# Then, e.g.:
#   RAY_AUTH_MODE=token RAY_ADDRESS=http://127.0.0.1:8265 .venv/bin/ray job submit -- bash -c "cd $PWD && \
#       .venv/bin/vla-rl train --config configs/tabletop_grpo.yaml --ray-address auto --set rollout.num_workers=2"
# (no --working-dir: both nodes share this checkout, and it would upload .venv and runs/; docs/cluster.md)
# The rollout workers' node ids are printed at start ("rollout workers on nodes: [...]").
#
# Both raylets share this host, so every port of the second node is given explicitly (the head's
# defaults would collide). A real multi-node cluster: docs/cluster.md.
set -euo pipefail

RAY="${RAY:-$(dirname "$0")/../.venv/bin/ray}"
[ -x "$RAY" ] || RAY=ray
HEAD_PORT="${RAY_HEAD_PORT:-6390}"
DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
CPUS="${2:-1}"
# Ray >= 2.5x authenticates every RPC with a token; both nodes and every client (ray job submit,
# `vla-rl train --ray-address auto`) read it from ~/.ray/auth_token.
export RAY_AUTH_MODE=token
# The Ray session this script's head started (both nodes' daemons name its directory on their command lines).
STATE_FILE="${RAY_CLUSTER_STATE:-$HOME/.ray/vla_rl_local_cluster_$HEAD_PORT}"
# The file a bare ray.init() reads to find "the running cluster" (Ray's default temp dir).
ADDRESS_FILE="${RAY_TMPDIR:-${TMPDIR:-/tmp}}/ray/ray_current_cluster"

head_session() {  # the session name of the GCS server listening on $HEAD_PORT, if one runs
    local pid
    for pid in $(pgrep -u "$(id -u)" -f -- "--gcs_server_port=$HEAD_PORT( |\$)" || true); do
        tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 's/^--session-name=//p'
    done | head -n 1
}

descendants() {  # the given PIDs and every process below them (a raylet's workers and agents, a job's driver)
    local table pid child
    table=$(ps -e -o pid= -o ppid=)
    local -a queue=("$@")
    while ((${#queue[@]})); do
        pid=${queue[0]}
        queue=("${queue[@]:1}")
        echo "$pid"
        for child in $(awk -v parent="$pid" '$2 == parent {print $1}' <<<"$table"); do
            queue+=("$child")
        done
    done
}

running() {  # whether process $1 exists and is no zombie (an exited process its parent has not reaped yet)
    local state
    state=$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null || true)
    [ -n "$state" ] && [ "$state" != Z ]
}

stop_cluster() {
    # Only this cluster: its daemons pass its session directory as an option (--session-dir=, --log_dir=,
    # --raylet_socket_name=, ...); `ray stop` would stop every Ray process of this user, other sessions too.
    local session pids pid alive
    session=$(head_session)  # the live head first: the file may name a session stopped some other way
    [ -n "$session" ] || session=$(cat "$STATE_FILE" 2>/dev/null || true)
    if [ -z "$session" ]; then
        echo "no cluster of this script found (no GCS server on port $HEAD_PORT, no $STATE_FILE)"
        return 0
    fi
    mapfile -t pids < <(pgrep -u "$(id -u)" -f -- "--[A-Za-z_-]+=[^ ]*/$session(/| |\$)" || true)
    if ((${#pids[@]})); then
        mapfile -t pids < <(descendants "${pids[@]}")
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for _ in $(seq 50); do  # 10 s to exit cleanly
            alive=()
            for pid in "${pids[@]}"; do
                running "$pid" && alive+=("$pid")
            done
            ((${#alive[@]})) || break
            sleep 0.2
        done
        ((${#alive[@]})) && kill -KILL "${alive[@]}" 2>/dev/null || true
    fi
    echo "stopped $session (${#pids[@]} processes)"
    rm -f "$STATE_FILE"
    if grep -qs ":$HEAD_PORT\$" "$ADDRESS_FILE"; then  # it names this cluster: ray.init() must not look for it
        rm -f "$ADDRESS_FILE"
    fi
}

start() {
    "$RAY" get-auth-token --generate >/dev/null
    "$RAY" start --head --node-ip-address=127.0.0.1 --port="$HEAD_PORT" --num-cpus="$CPUS" --num-gpus=0 \
        --resources='{"node_head": 1}' --include-dashboard=true --dashboard-host=127.0.0.1 \
        --dashboard-port="$DASHBOARD_PORT" --disable-usage-stats
    mkdir -p "$(dirname "$STATE_FILE")"
    head_session >"$STATE_FILE"
    # if the second node fails to start, do not leave the head running
    trap 'stop_cluster >/dev/null 2>&1' ERR
    "$RAY" start --address="127.0.0.1:$HEAD_PORT" --node-ip-address=127.0.0.1 --num-cpus="$CPUS" --num-gpus=0 \
        --resources='{"node_second": 1}' --node-manager-port=6391 --object-manager-port=6392 \
        --min-worker-port=21000 --max-worker-port=21999 --dashboard-agent-listen-port=6393 \
        --dashboard-agent-grpc-port=6394 --metrics-export-port=6395 --runtime-env-agent-port=6396 \
        --disable-usage-stats
    trap - ERR
    sleep 2  # the second raylet registers with the head a moment after `ray start` returns
    "$RAY" status --address="127.0.0.1:$HEAD_PORT"
}

case "${1:-}" in
    start) start ;;
    status) "$RAY" status --address="127.0.0.1:$HEAD_PORT" ;;
    stop) stop_cluster ;;
    *) echo "usage: $0 start [CPUS_PER_NODE] | status | stop" >&2; exit 2 ;;
esac
