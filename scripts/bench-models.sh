#!/usr/bin/env bash
# Per-model step time (ms/step median/min/max, first step excluded) and final test metric of
# `peernode train`, release build, 1 OpenBLAS thread by default, reference hyper-parameters.
# Compare with the reference kit's model_ref.sh in the same session (see docs/models.md): with
# PEERNODE_BENCH_KIT=DIR (the kit's folder, holding model_ref.sh; no default) each model's
# reference runs right after it, with the same epochs and threads, so both see the same load.
#   [PEERNODE_BENCH_KIT=DIR] scripts/bench-models.sh [THREADS] [MODELS...]
#   MODELS: gcn moe-digits moe-mnist5k gin (default: all)
set -euo pipefail
KIT=${PEERNODE_BENCH_KIT:-}
if [[ -n $KIT ]]; then
    KIT=$(cd "$KIT" && pwd) && [[ -x $KIT/model_ref.sh ]] || {
        echo "no executable model_ref.sh in ${PEERNODE_BENCH_KIT} (PEERNODE_BENCH_KIT)" >&2; exit 1; }
fi
cd "$(dirname "$0")/.."
THREADS="${1:-1}"; shift || true
MODELS=("$@"); [ ${#MODELS[@]} -gt 0 ] || MODELS=(gcn moe-digits moe-mnist5k gin)
swift build -c release --product peernode >&2
BIN="$(swift build -c release --show-bin-path)/peernode"
export OPENBLAS_NUM_THREADS="$THREADS"
for m in "${MODELS[@]}"; do
    case "$m" in
        gcn)         args=(--model gcn --data cora --steps 200)            # 200 epochs, full graph
                     ref=(gcn --sparse-x --backend jax --seeds 1) ;;
        moe-digits)  args=(--model moe --data digits --steps 440)          # 40 epochs x 11 batches of 128
                     ref=(moe --backend jax --seeds 1) ;;
        moe-mnist5k) args=(--model moe --data mnist5k --steps 620)         # 20 epochs x 31 batches of 128
                     ref=(moe --backend jax --seeds 1 --dataset mnist5k --epochs 20) ;;
        gin)         args=(--model gin --data esol --steps 1500)           # 100 epochs x 15 batches of 64
                     ref=(gin --seeds 1) ;;
        *) echo "unknown model $m" >&2; exit 2 ;;
    esac
    "$BIN" train "${args[@]}" --threads "$THREADS" --log-every 100000 --bench | grep '^impl='
    if [[ -n $KIT ]]; then "$KIT/model_ref.sh" "${ref[@]}" --threads "$THREADS"; fi
done
