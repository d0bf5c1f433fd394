#!/usr/bin/env bash
# usage: scripts/bench-int8-links.sh ["RATES_MBPS"] ["PEERS"] [SIZE_MIB] [REPS] [ROUNDS]
# int8 all-reduce time over fp32 time on links of a given speed: each ring link is capped at
# RATE Mbit/s per direction by kernel TCP pacing (--stream-rate-mbps, one stream), 0 = plain
# loopback. fp32 and int8 runs alternate, ROUNDS times; prints one line per (N, rate) with the
# medians and the ratio's min/median/max over the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${1:-"1000 2500 10000 0"}; PEERS=${2:-"2 4"}; SIZE=${3:-64}; REPS=${4:-3}; ROUNDS=${5:-3}
BIN=.build/release/peernode
if [[ ! -x $BIN ]]; then
  ./scripts/install-deps.sh >&2
  swift build -c release --product peernode >&2
fi
median_ms() { sed -n 's/.* median_ms=\([0-9.]*\) .*/\1/p'; }
echo "# int8 / fp32 all-reduce time, ${SIZE} MiB f32, reps=${REPS}, rounds=${ROUNDS}, $(date -u +%FT%TZ)"
for n in $PEERS; do
  for rate in $RATES; do
    fp=(); q=(); ratios=()
    for ((r = 0; r < ROUNDS; r++)); do
      a=$("$BIN" bench allreduce --peers "$n" --size-mib "$SIZE" --reps "$REPS" --quant none \
            --stream-rate-mbps "$rate" | grep '^impl=' | median_ms)
      b=$("$BIN" bench allreduce --peers "$n" --size-mib "$SIZE" --reps "$REPS" --quant int8 \
            --stream-rate-mbps "$rate" | grep '^impl=' | median_ms)
      fp+=("$a"); q+=("$b"); ratios+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')")
    done
    printf '%s\n' "${ratios[@]}" | sort -g | awk -v n="$n" -v rate="$rate" -v fp="${fp[*]}" -v q="${q[*]}" '
      { v[NR] = $1 }
      END {
        med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "N=%s link_mbps=%s fp32_ms=[%s] int8_ms=[%s] ratio_min=%.3f ratio_median=%.3f ratio_max=%.3f\n",
          n, (rate == 0 ? "loopback" : rate), fp, q, v[1], med, v[NR]
      }'
  done
done
