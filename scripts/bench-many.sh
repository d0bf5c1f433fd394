#!/usr/bin/env bash
# Many peers on one machine (docs/benchmarks.md, "Many peers"): for N = 2, 4, 8, 16 `peernode run`
# daemons on 127.0.0.1 (DiLoCo, the default model, --inner-steps 5), how long until all N are in
# one view, the outer steps' communication time, and `bench allreduce` of 16 MiB against N.
# Needs a release build (built here if missing). Environment: SIZES (default "2 4 8 16"),
# STEPS (outer steps per run, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${PEERNODE_BIN:-.build/release/peernode}
[[ -x $BIN ]] || swift build -c release -j 1 --product peernode
SIZES=${SIZES:-2 4 8 16} STEPS=${STEPS:-10}
LOG=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$LOG"; }
trap cleanup EXIT
export PEERNODE_CLUSTER_KEY=bench-many-$$-0123456789abcdef
now() { date +%s.%N; }
for n in $SIZES; do
  rm -f "$LOG"/*
  pids=()
  t0=$(now)
  for ((i = 1; i <= n; i++)); do
    seed=()
    if (( i > 1 )); then
      port=$(grep -o "control_port=[0-9]*" "$LOG/h1.out" | cut -d= -f2)
      seed=(--seed "127.0.0.1:$port")
    fi
    $BIN run --min-peers "$n" --inner-steps 5 --outer-steps "$STEPS" --shard-count "$n" --shard-index $((i - 1)) --no-status \
      "${seed[@]}" >"$LOG/h$i.out" 2>"$LOG/h$i.err" &
    pids+=($!)
    until grep -q "ready id=" "$LOG/h$i.out" 2>/dev/null; do sleep 0.02; done
  done
  t_started=$(now)
  deadline=$(( $(date +%s) + 600 ))
  # All n in one view: host 1 logged a committed view of n ids.
  until grep -a "view committed" "$LOG/h1.err" | grep -o "\[[^]]*\]" | awk -F, -v n="$n" 'NF == n { found = 1 } END { exit !found }'; do
    (( $(date +%s) < deadline )) || { echo "N=$n: no view of $n within 600 s" >&2; exit 1; }
    sleep 0.05
  done
  t_view=$(now)
  for p in "${pids[@]}"; do wait "$p" || true; done
  stats=$(grep "^outer" "$LOG/h1.out" | grep " peers=$n " | sed -E 's/.* comm_s=([0-9.e+-]+) .*/\1/' | sort -g \
    | awk '{ v[NR] = $1 } END { if (NR) printf "steps=%d comm_s_median=%.3f comm_s_max=%.3f", NR, v[int((NR + 1) / 2)], v[NR]; else printf "steps=0" }')
  inner=$(grep "^outer" "$LOG/h1.out" | grep " peers=$n " | sed -E 's/.* inner_s=([0-9.e+-]+) .*/\1/' | sort -g \
    | awk '{ v[NR] = $1 } END { if (NR) printf "inner_s_median=%.3f", v[int((NR + 1) / 2)] }')
  epochs=$(grep -ac "view committed" "$LOG/h1.err")
  echo "many N=$n start_all_s=$(echo "$t_started - $t0" | bc) all_in_view_s=$(echo "$t_view - $t0" | bc) after_last_start_s=$(echo "$t_view - $t_started" | bc) views=$epochs $stats $inner"
done
for n in $SIZES; do
  $BIN bench allreduce --peers "$n" --size-mib 16 --reps 3 | grep "^impl"
done
