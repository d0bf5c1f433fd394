#!/usr/bin/env bash
# DiLoCo outer-step overhead, sync vs async (docs/diloco.md; figures in docs/benchmarks.md).
# Release build; `peernode bench diloco` runs the same local cluster (the demo's worker processes
# on 127.0.0.1, MoE on digits) once per mode, modes interleaved over ROUNDS, first on loopback as
# it is, then with every pseudo-gradient all-reduce made SLOW_MS longer (a slower link, emulated).
# Prints per run and per mode: overhead % (wall time outside inner steps / wall time; min, median,
# max over steps 2..T), median step wall time, final accuracy, digest parity.
#   scripts/bench-diloco-overhead.sh [ROUNDS] [SLOW_MS] [extra `peernode bench diloco` options...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"; shift || true
SLOW_MS="${1:-50}"; shift || true
swift build -c release --product peernode >&2
BIN="$(swift build -c release --show-bin-path)/peernode"
export OPENBLAS_NUM_THREADS=1
for ms in 0 "$SLOW_MS"; do
    "$BIN" bench diloco --peers 2 --model moe --outer-steps 30 --inner-steps 20 \
        --modes sync async async-restart --rounds "$ROUNDS" --emulate-allreduce-ms "$ms" "$@"
done
