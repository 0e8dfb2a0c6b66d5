#!/usr/bin/env bash
# A two-node Ray cluster on loopback: a head and a second node, each its own raylet with its own
# resources (custom resources `node_head` and `node_second` tell them apart). Good for trying
# `ray job submit` and actor placement across nodes on one machine.
#
#   scripts/ray_local_cluster.sh start [CPUS_PER_NODE]   (default 1 CPU each)
#   scripts/ray_local_cluster.sh status
#   scripts/ray_local_cluster.sh stop    (ray stop --force: every Ray process of this user on this host,
#                                         a local-Ray `vla-rl train` included)
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

start() {
    "$RAY" get-auth-token --generate >/dev/null
    "$RAY" start --head --node-ip-address=127.0.0.1 --port="$HEAD_PORT" --num-cpus="$CPUS" --num-gpus=0 \
        --resources='{"node_head": 1}' --include-dashboard=true --dashboard-host=127.0.0.1 \
        --dashboard-port="$DASHBOARD_PORT" --disable-usage-stats
    # if the second node fails to start, do not leave the head running
    trap '"$RAY" stop --force >/dev/null 2>&1' ERR
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
    stop) "$RAY" stop --force ;;
    *) echo "usage: $0 start [CPUS_PER_NODE] | status | stop" >&2; exit 2 ;;
esac
