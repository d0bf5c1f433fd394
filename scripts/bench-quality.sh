#!/usr/bin/env bash
# Learning quality of DiLoCo against one peer: the same model trained on one peer for the same
# total number of inner steps (peers × outer × H), side by side, on the shipped data.
# Prints, per task, the single-peer test metric, the DiLoCo one (4 peers, int8, no churn), their
# ratio, and the bytes DiLoCo sent against per-step data-parallel fp32 all-reduce.
#   [H=inner] [OUTER=outer] [SEEDS="1 2 3"] [OUTER_LR=0.7] [OUTER_MOMENTUM=0.9] \
#     scripts/bench-quality.sh [PEERS] [TASKS...]     TASKS: gin-esol moe-digits (default: both)
# One line per task and seed (the same seed for the single peer and the cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS="${1:-4}"; shift || true
TASKS=("$@"); [ ${#TASKS[@]} -gt 0 ] || TASKS=(gin-esol moe-digits)
./scripts/install-deps.sh >&2
swift build -c release --product peernode >&2
BIN="$(swift build -c release --show-bin-path)/peernode"
export OPENBLAS_NUM_THREADS=1
for SEED in ${SEEDS:-1 2 3}; do
for t in "${TASKS[@]}"; do
    case "$t" in
        gin-esol)   model=gin; data=esol;   H=${H:-40}; OUTER=${OUTER:-10} ;;
        moe-digits) model=moe; data=digits; H=${H:-40}; OUTER=${OUTER:-20} ;;
        *) echo "unknown task $t" >&2; exit 2 ;;
    esac
    total=$((PEERS * OUTER * H))
    single=$("$BIN" train --model "$model" --data "$data" --steps "$total" --seed "$SEED" --log-every 1000000 --bench | grep '^impl=')
    single_metric=$(sed -E 's/.* test_([a-zA-Z]+)=([0-9.]+).*/\1 \2/' <<<"$single")
    demo=$("$BIN" demo --no-churn --peers "$PEERS" --model "$model" --data "$data" --outer-steps "$OUTER" --inner-steps "$H" \
           --seed "$SEED" --outer-lr "${OUTER_LR:-0.7}" --outer-momentum "${OUTER_MOMENTUM:-0.9}")
    echo "$demo" >"${QUALITY_LOG_DIR:-/tmp}/peernode-quality-$t-$SEED.txt"
    final=$(grep -m1 -E '^  final [a-zA-Z_ ]+: [0-9]' <<<"$demo" | sed -E 's/^  final ([a-zA-Z_ ]+): ([0-9.]+).*/\1 \2/')
    bytes=$(grep -E 'bytes sent by all peers' <<<"$demo" | sed -E 's/.*peers: ([0-9.]+) MB; per-step data-parallel fp32 would send ([0-9.]+) MB \(([0-9]+)× more\).*/sent_mb=\1 data_parallel_mb=\2 ratio=\3/')
    overhead=$(grep -E 'wall time outside inner steps' <<<"$demo" | sed -E 's/.*: ([0-9.]+)%/\1/')
    digests=$(grep -c 'all equal at every step' <<<"$demo" || true)
    read -r sname svalue <<<"$single_metric"
    dvalue=${final##* }
    ratio=$(python3 -c "print(f'{$dvalue/$svalue:.4f}')")
    echo "task=$t seed=$SEED peers=$PEERS H=$H outer_lr=${OUTER_LR:-0.7} outer_momentum=${OUTER_MOMENTUM:-0.9} outer=$OUTER total_inner_steps=$total single_${sname}=$svalue diloco_${sname}=$dvalue diloco/single=$ratio $bytes overhead_pct=$overhead digests_equal=$digests"
done
done
