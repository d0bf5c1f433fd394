#!/usr/bin/env bash
# Starts a local cluster of N `peernode run` peers on 127.0.0.1 and waits for them.
# usage: deploy/local-cluster.sh N [extra `peernode run` options...]
#   e.g. deploy/local-cluster.sh 4 --model moe --outer-steps 20 --inner-steps 40
# Logs: $PEERNODE_LOG_DIR (default ./local-cluster-logs)/peerI.{out,err}. Ctrl-C stops all peers
# gracefully (SIGTERM: each leaves the cluster and writes its checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:?number of peers}; shift
BIN=${PEERNODE_BIN:-.build/release/peernode}
if [[ ! -x $BIN ]]; then ./scripts/install-deps.sh; swift build -c release --product peernode; fi
LOGS=${PEERNODE_LOG_DIR:-local-cluster-logs}; mkdir -p "$LOGS"
export PEERNODE_CLUSTER_KEY=${PEERNODE_CLUSTER_KEY:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM
"$BIN" run --min-peers "$N" --shard-index 0 --shard-count "$N" --checkpoint "$LOGS/peer0.ckpt" "$@" \
  >"$LOGS/peer0.out" 2>"$LOGS/peer0.err" &
pids+=($!)
for _ in $(seq 1 300); do grep -q control_port "$LOGS/peer0.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(grep -o 'control_port=[0-9]*' "$LOGS/peer0.out" | cut -d= -f2)
[[ -n $PORT ]] || { echo "the first peer did not start; see $LOGS/peer0.err" >&2; kill "${pids[@]}"; exit 1; }
for i in $(seq 1 $((N - 1))); do
  "$BIN" run --seed "127.0.0.1:$PORT" --min-peers "$N" --shard-index "$i" --shard-count "$N" \
    --checkpoint "$LOGS/peer$i.ckpt" "$@" >"$LOGS/peer$i.out" 2>"$LOGS/peer$i.err" &
  pids+=($!)
done
echo "cluster of $N peers: seed 127.0.0.1:$PORT, logs in $LOGS (tail -f $LOGS/peer0.out)"
wait
