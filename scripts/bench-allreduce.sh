#!/usr/bin/env bash
# usage: scripts/bench-allreduce.sh N "SIZES_MIB" REPS [QUANT]
# The hook for the reference benchmark kit's run_all.sh (CMD_peernode), printing its line format;
# the kit's folder is yours to name (scripts/bench-sweep.sh takes it as $PEERNODE_BENCH_KIT):
#   STEPS="mpi-tcp:2 gloo:2 peernode:2" CMD_peernode="$PWD/scripts/bench-allreduce.sh {N} \"{SIZES}\" {REPS}" \
#     "$PEERNODE_BENCH_KIT/run_all.sh" 3 10 "1 16 64 256" 6
# Builds the release binary first if it is missing (build output goes to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:?peers}; SIZES=${2:?sizes}; REPS=${3:?reps}; QUANT=${4:-none}
BIN=.build/release/peernode
if [[ ! -x $BIN ]]; then
  ./scripts/install-deps.sh >&2
  swift build -c release --product peernode >&2
fi
# shellcheck disable=SC2086
exec "$BIN" bench allreduce --peers "$N" --size-mib $SIZES --reps "$REPS" --quant "$QUANT" \
  --impl "peernode$([[ $QUANT == none ]] || echo "-$QUANT")"
