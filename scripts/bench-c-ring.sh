#!/usr/bin/env bash
# usage: scripts/bench-c-ring.sh ["PEERS"] [SIZE_MIB] [REPS] [ROUNDS]
# peernode's all-reduce beside bench/memory-floor/ring.c, a minimal C ring of the same wire
# scheme over TCP loopback (no framing, checks or membership): how far below fp32 can int8 go
# on this machine at all? Per round and N: peernode fp32, peernode int8, then the C ring's fp32
# and int8 (the C ring alternates them itself). Prints each run's median time and CPU, then per
# N the int8/fp32 ratio's min/median/max over the rounds for both implementations.
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${1:-"2 4"}; SIZE=${2:-64}; REPS=${3:-8}; ROUNDS=${4:-3}
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then echo "ROUNDS must be a positive number" >&2; exit 2; fi
BIN=.build/release/peernode
if [[ ! -x $BIN ]]; then
  ./scripts/install-deps.sh >&2
  swift build -c release --product peernode >&2
fi
RING=$(mktemp -d)/ring
trap 'rm -rf "$(dirname "$RING")"' EXIT
cc -O2 -mavx2 -pthread bench/memory-floor/ring.c -o "$RING"
field() {  # name, line: the number after "name=", or an error
  local v
  v=$(sed -n "s/.* $1=\([0-9.][0-9.]*\)\( .*\)*$/\1/p" <<<"$2")
  [[ -n $v ]] || { echo "no $1 in: $2" >&2; exit 1; }
  echo "$v"
}
verified() {  # line: fails unless the run's results were checked and equal on every rank
  if [[ $1 == *CHECK=FAIL* || $1 == *check=FAIL* || $1 != *parity=equal* ]]; then
    echo "results failed their check: $1" >&2; exit 1
  fi
}
c_median() { sed -n 's/.*median \([0-9.]*\) ms.*/\1/p' <<<"$1"; }  # a line of the C ring
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b / a }'; }
summary() {  # label, ratios...
  local label=$1; shift
  printf '%s\n' "$@" | sort -g | awk -v label="$label" '
    { v[NR] = $1 }
    END {
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%s int8/fp32 ratio_min=%.3f ratio_median=%.3f ratio_max=%.3f\n", label, v[1], med, v[NR]
    }'
}
echo "# peernode beside the C ring, ${SIZE} MiB f32, reps=${REPS}, rounds=${ROUNDS}, $(date -u +%FT%TZ)"
for n in $PEERS; do
  ours=(); theirs=()
  for ((r = 0; r < ROUNDS; r++)); do
    a=$("$BIN" bench allreduce --peers "$n" --size-mib "$SIZE" --reps "$REPS" --quant none | grep '^impl=')
    b=$("$BIN" bench allreduce --peers "$n" --size-mib "$SIZE" --reps "$REPS" --quant int8 | grep '^impl=')
    c=$("$RING" "$n" "$SIZE" "$REPS" 1)
    c1=$(sed -n 1p <<<"$c"); c2=$(sed -n 2p <<<"$c")
    for line in "$a" "$b" "$c1" "$c2"; do verified "$line"; done
    fa=$(field median_ms "$a"); fb=$(field median_ms "$b")
    echo "peernode N=$n fp32 median_ms=$fa cpu_ms=$(field cpu_ms "$a") parity=equal"
    echo "peernode N=$n int8 median_ms=$fb cpu_ms=$(field cpu_ms "$b") parity=equal"
    echo "$c"
    ours+=("$(ratio "$fa" "$fb")")
    theirs+=("$(ratio "$(c_median "$c1")" "$(c_median "$c2")")")
  done
  summary "N=$n size_mib=$SIZE peernode" "${ours[@]}"
  summary "N=$n size_mib=$SIZE c-ring" "${theirs[@]}"
done
