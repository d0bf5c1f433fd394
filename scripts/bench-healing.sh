#!/usr/bin/env bash
# usage: scripts/bench-healing.sh VICTIM PAUSE_S [ROUNDS=5]   e.g. 2 5 (a member), 0 6 (the coordinator)
# Three `peernode run` processes on 127.0.0.1 (heartbeat 0.5 s, timeout 3 s, the defaults). Once the
# victim (rank VICTIM) finished revision 5 it is paused with SIGSTOP for PAUSE_S seconds (longer
# than the timeout: it is removed, or replaced as coordinator), then resumed with SIGCONT. Prints,
# per round, the seconds from SIGCONT to the victim's first outer step back in the cluster (an
# outer line at a revision past what the others had reached when it resumed), then min/median/max.
# Bounded: each round gives up after 120 s. LOGS=DIR keeps each process's stderr (info level) there.
set -u
B=${B:-$(cd "$(dirname "$0")/.." && pwd)/.build/release/peernode}
[[ -x $B ]] || { echo "build first: swift build -c release --product peernode" >&2; exit 1; }
export PEERNODE_CLUSTER_KEY=${PEERNODE_CLUSTER_KEY:-healing-bench-key-0123456789abcdef}
V=${1:?victim rank 0-2}; PAUSE=${2:?pause seconds}; ROUNDS=${3:-5}
LEVEL=error; [[ -n ${LOGS:-} ]] && LEVEL=info
C="--min-peers 3 --inner-steps 4 --shard-count 3 --log-level $LEVEL"
err() { if [[ -n ${LOGS:-} ]]; then mkdir -p "$LOGS"; echo "$LOGS/round$round-$1.log"; else echo /dev/null; fi; }
last_revision() { grep -o "^outer revision=[0-9]*" "$1" 2>/dev/null | tail -1 | cut -d= -f2; }
times=()
for round in $(seq 1 "$ROUNDS"); do
    D=$(mktemp -d); PIDS=(); start=$SECONDS
    cleanup() { kill -CONT "${PIDS[@]}" 2>/dev/null; kill -9 "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$D"; }
    wait_for() { while ! eval "$1"; do sleep 0.005; (( SECONDS - start < 120 )) || { echo "round $round: timed out" >&2; cleanup; exit 1; }; done; }
    $B run $C --shard-index 0 > $D/0 2>"$(err 0)" & PIDS=($!)
    wait_for 'grep -q control_port $D/0 2>/dev/null'
    P=$(grep -o "control_port=[0-9]*" $D/0 | cut -d= -f2)
    $B run $C --seed 127.0.0.1:$P --shard-index 1 > $D/1 2>"$(err 1)" & PIDS+=($!)
    $B run $C --seed 127.0.0.1:$P --shard-index 2 > $D/2 2>"$(err 2)" & PIDS+=($!)
    wait_for 'grep -q "revision=5 " $D/$V 2>/dev/null'
    kill -STOP ${PIDS[$V]}; sleep "$PAUSE"
    others=0; for i in 0 1 2; do [[ $i == $V ]] && continue; r=$(last_revision $D/$i); (( ${r:-0} > others )) && others=$r; done
    t0=$(date +%s.%N); kill -CONT ${PIDS[$V]}
    wait_for '(( $(last_revision $D/$V) > others ))'
    t1=$(date +%s.%N)
    s=$(echo "$t1 - $t0" | bc); times+=($s)
    echo "round=$round victim=$V pause_s=$PAUSE others_at=$others seconds_to_first_step_back=$s"
    cleanup
done
printf "%s\n" "${times[@]}" | sort -g | awk -v v="$V" -v p="$PAUSE" '{ t[NR] = $1 }
    END { m = NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
          printf "healing victim=%s pause_s=%s rounds=%d min=%.3f median=%.3f max=%.3f\n", v, p, NR, t[1], m, t[NR] }'
