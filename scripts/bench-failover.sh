#!/usr/bin/env bash
# usage: scripts/bench-failover.sh VICTIM SIGNAL   e.g. 2 KILL, 0 KILL (the coordinator), 1 STOP
# Three `peernode run` processes on 127.0.0.1 (heartbeat 0.5 s, timeout 3 s); once the victim (rank
# VICTIM) finished revision 5 it gets SIGNAL; prints the seconds until a survivor completes its next
# outer step (detection, new view, new ring, retried sync or all-reduce). Bounded: 40 steps at most.
B=${B:-$(cd "$(dirname "$0")/.." && pwd)/.build/release/peernode}
[[ -x $B ]] || { echo "build first: swift build -c release --product peernode" >&2; exit 1; }
export PEERNODE_CLUSTER_KEY=${PEERNODE_CLUSTER_KEY:-failover-bench-key-0123456789abcdef}
V=${1:?victim rank 0-2}; SIG=${2:?signal, e.g. KILL or STOP}; D=$(mktemp -d)
PIDS=()
give_up() { echo "bench-failover: timed out" >&2; kill -9 "${PIDS[@]}" 2>/dev/null; rm -rf "$D"; exit 1; }
tick() { sleep "$1"; (( SECONDS < 180 )) || give_up; }
C="--min-peers 3 --outer-steps 40 --inner-steps 2 --shard-count 3 --heartbeat-ms 500 --heartbeat-timeout-ms 3000 --log-level error"
$B run $C --shard-index 0 > $D/0 2>/dev/null & P0=$!; PIDS=($P0)
while ! grep -q control_port $D/0 2>/dev/null; do tick 0.02; done
P=$(grep -o "control_port=[0-9]*" $D/0 | cut -d= -f2)
$B run $C --seed 127.0.0.1:$P --shard-index 1 > $D/1 2>/dev/null & P1=$!
$B run $C --seed 127.0.0.1:$P --shard-index 2 > $D/2 2>/dev/null & P2=$!
PIDS=($P0 $P1 $P2)
while ! grep -q "revision=5 " $D/$V 2>/dev/null; do tick 0.01; done
S=$(( (V + 1) % 3 ))
n=$(grep -c "^outer" $D/$S)
t0=$(date +%s.%N); kill -$SIG ${PIDS[$V]}
while [ "$(grep -c "^outer" $D/$S)" -le "$n" ]; do tick 0.005; done
t1=$(date +%s.%N)
echo "victim=$V signal=$SIG seconds_to_next_step=$(echo "$t1 - $t0" | bc)"
kill -9 ${PIDS[@]} 2>/dev/null; wait 2>/dev/null; rm -rf $D
